// A read-only view of a (tokens x neurons) activation matrix in any of the
// supported storage types, and the scalar conversions to float32.
#pragma once

#include <cstdint>
#include <cstring>

namespace txray {

enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2 };

// Strides are in elements, not bytes, and may be anything (transposed views,
// slices of a larger hidden-state tensor).
struct ActivationView {
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  int64_t col_stride = 1;
  DType dtype = DType::Float32;
};

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// IEEE half -> float without branches, so loops over rows vectorise.
// Shifting the exponent+mantissa into float position and scaling by 2^112
// rebias the exponent exactly, subnormals included; inf/nan get their
// all-ones exponent back afterwards.
inline float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t(h) & 0x8000u) << 16;
  const uint32_t em = uint32_t(h) & 0x7fffu;
  uint32_t bits = float_to_bits(bits_to_float(em << 13) * 0x1p112f);
  bits |= (em >= 0x7c00u) ? 0x7f800000u : 0u;
  return bits_to_float(bits | sign);
}

inline float bfloat16_to_float(uint16_t h) {
  return bits_to_float(uint32_t(h) << 16);
}

// Element types as stored; `load` turns one into float.
struct F32 {
  using storage = float;
  static float load(float x) { return x; }
};
struct F16 {
  using storage = uint16_t;
  static float load(uint16_t x) { return half_to_float(x); }
};
struct BF16 {
  using storage = uint16_t;
  static float load(uint16_t x) { return bfloat16_to_float(x); }
};

// x - x is 0 for every finite x and NaN for NaN and +-inf.
inline bool is_finite(float x) {
  return x - x == 0.0f;
}

// Calls f with the element-type tag that matches the view's dtype.
template <class F>
decltype(auto) dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float16:
      return f(F16{});
    case DType::BFloat16:
      return f(BF16{});
    default:
      return f(F32{});
  }
}

}  // namespace txray
