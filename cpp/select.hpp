// Per-row selection on the CPU: argmax, top-k, and the finiteness check.
// Ties always go to the lowest neuron index, as docs/method.md says.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <vector>

#include "activations.hpp"

// The kernels of cpp/kernels.cpp are compiled once per instruction set, as
// functions with a target attribute; everything below must inline into them
// to be compiled for that set (a call that is not inlined runs the
// baseline's code). Forced: the 32-byte vector helpers must never be called
// across the boundary, whose ABI for them differs between AVX and SSE code.
#if defined(__GNUC__) || defined(__clang__)
#define TXRAY_INLINE inline __attribute__((always_inline))
#else
#define TXRAY_INLINE inline
#endif

namespace txray {

struct Winner {
  int32_t neuron;
  float value;
};

// Index of the first non-finite value of a row, or -1.
template <class E>
int64_t first_nonfinite(const typename E::storage* row, int64_t n, int64_t stride) {
  for (int64_t i = 0; i < n; ++i)
    if (!is_finite(E::load(row[i * stride]))) return i;
  return -1;
}

// Whether every value of a row is finite; no early exit, so it vectorises.
template <class E>
TXRAY_INLINE bool all_finite(const typename E::storage* row, int64_t n, int64_t stride) {
  int ok = 1;
  if (stride == 1) {
    for (int64_t i = 0; i < n; ++i) ok &= is_finite(E::load(row[i]));
  } else {
    for (int64_t i = 0; i < n; ++i) ok &= is_finite(E::load(row[i * stride]));
  }
  return ok != 0;
}

// Converts a row to float32 into `out`; returns false if any value is not
// finite. Branch-free in the loop so that it vectorises for stride 1.
template <class E>
TXRAY_INLINE bool load_row(const typename E::storage* row, int64_t n, int64_t stride, float* out) {
  int ok = 1;
  if (stride == 1) {
    for (int64_t i = 0; i < n; ++i) {
      const float x = E::load(row[i]);
      out[i] = x;
      ok &= is_finite(x);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float x = E::load(row[i * stride]);
      out[i] = x;
      ok &= is_finite(x);
    }
  }
  return ok != 0;
}

// The helpers below take and return 32-byte vectors and are always inlined
// (as is argmax_row, which uses them), so the calling convention GCC warns
// about (-Wpsabi: it differs between AVX and SSE code) is never used.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
namespace simd {
// GCC/Clang vector extensions: portable SIMD (AVX2, SSE, NEON) without
// intrinsics. Comparisons give lane masks of -1/0 usable in `m ? a : b`.
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));

TXRAY_INLINE u32x8 widen(const uint16_t* p) {
  u16x8 h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, u32x8);
}
TXRAY_INLINE f32x8 load8(F32, const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
TXRAY_INLINE f32x8 load8(BF16, const uint16_t* p) {
  return (f32x8)(widen(p) << 16);
}
TXRAY_INLINE f32x8 load8(F16, const uint16_t* p) {  // half_to_float, 8 lanes at a time
  const u32x8 h = widen(p);
  const u32x8 em = h & 0x7fffu;
  u32x8 bits = (u32x8)((f32x8)(em << 13) * 0x1p112f);
  bits |= (u32x8)(em >= 0x7c00u) & 0x7f800000u;
  return (f32x8)(bits | ((h & 0x8000u) << 16));
}
}  // namespace simd

// argmax_row's end, shared with the AVX-512 loop of kernels.cpp: given the
// lanes' running maxima (max0, max1), where they occurred (at0, at1) and
// the lanes' sum after elements [0, i), reduces across lanes and scans the
// tail [i, n).
template <class E>
TXRAY_INLINE bool argmax_finish(const typename E::storage* row, int64_t n, int64_t i, const simd::f32x8& max0,
                                const simd::f32x8& max1, const simd::i32x8& at0, const simd::i32x8& at1,
                                const simd::f32x8& sum, Winner* out) {
  using namespace simd;
  // Across lanes without branches (their outcome is data, so they would be
  // mispredicted): the maximum, then the lowest index holding it.
  const f32x8 top = max0 > max1 ? max0 : max1;
  float best = top[0];
  for (int j = 1; j < 8; ++j) best = top[j] > best ? top[j] : best;
  const i32x8 none = at0 * 0 + INT32_MAX;
  const i32x8 c0 = max0 == best ? at0 : none, c1 = max1 == best ? at1 : none;
  const i32x8 first = c0 < c1 ? c0 : c1;
  int32_t lowest = first[0];
  for (int j = 1; j < 8; ++j) lowest = first[j] < lowest ? first[j] : lowest;
  int64_t at = lowest;
  float total = 0.0f;
  for (int j = 0; j < 8; ++j) total += sum[j];
  for (; i < n; ++i) {  // the tail has higher indices than every lane
    const float x = E::load(row[i]);
    if (x > best) {
      best = x;
      at = i;
    }
    total += x;
  }
  if (!is_finite(total) && first_nonfinite<E>(row, n, 1) >= 0) return false;
  out->neuron = static_cast<int32_t>(at);
  out->value = best;
  return true;
}

// Argmax of a contiguous row. Two 8-lane accumulators keep each lane's
// running maximum and where it first occurred (strict > keeps the earliest
// index); across lanes the lowest index holding the maximum wins.
// Non-finite values are caught by a running sum, which turns NaN or +-inf
// (and, rarely, an overflow) into a non-finite total: one add per vector
// instead of a test per value; the exact scan then confirms.
// Returns false if the row holds a non-finite value.
template <class E>
TXRAY_INLINE bool argmax_row(const typename E::storage* row, int64_t n, Winner* out) {
  using namespace simd;
  // Prefetching 4 KiB ahead (into L2) keeps the stream at the speed of a
  // plain sum; the hardware prefetcher alone leaves ~15% of the bandwidth
  // unused, and 1 KiB ahead ~10% (measured on the 2-core Xeon of the README).
  constexpr int64_t kAhead = 4096 / sizeof(typename E::storage);
  f32x8 max0, max1, sum0 = {}, sum1 = {};
  i32x8 at0, at1, idx0, idx1;
  for (int j = 0; j < 8; ++j) {
    max0[j] = max1[j] = -INFINITY;
    idx0[j] = at0[j] = j;
    idx1[j] = at1[j] = j + 8;
  }
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __builtin_prefetch(row + i + kAhead, 0, 2);
    const f32x8 x0 = load8(E{}, row + i), x1 = load8(E{}, row + i + 8);
    const i32x8 g0 = x0 > max0, g1 = x1 > max1;
    max0 = g0 ? x0 : max0;
    max1 = g1 ? x1 : max1;
    at0 = g0 ? idx0 : at0;
    at1 = g1 ? idx1 : at1;
    sum0 += x0;
    sum1 += x1;
    idx0 += 16;
    idx1 += 16;
  }
  return argmax_finish<E>(row, n, i, max0, max1, at0, at1, sum0 + sum1, out);
}

// The k largest entries of a finite float row, largest first, equal values
// in increasing neuron order. Small k keeps a sorted insertion list (one
// pass, no allocation); large k uses nth_element on an index buffer.
TXRAY_INLINE void topk_row(const float* row, int64_t n, int k, Winner* out, std::vector<int32_t>& scratch) {
  if (k <= 16) {
    int filled = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float x = row[i];
      if (filled == k && !(x > out[k - 1].value)) continue;
      // Entries equal to x stay ahead of it: they have lower indices.
      int pos = filled < k ? filled : k - 1;
      while (pos > 0 && out[pos - 1].value < x) {
        out[pos] = out[pos - 1];
        --pos;
      }
      out[pos] = Winner{static_cast<int32_t>(i), x};
      if (filled < k) ++filled;
    }
    return;
  }
  scratch.resize(n);
  for (int64_t i = 0; i < n; ++i) scratch[i] = static_cast<int32_t>(i);
  auto before = [row](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
  if (k < n) std::nth_element(scratch.begin(), scratch.begin() + k, scratch.end(), before);
  std::sort(scratch.begin(), scratch.begin() + k, before);
  for (int j = 0; j < k; ++j) out[j] = Winner{scratch[j], row[scratch[j]]};
}

}  // namespace txray

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
