// Input errors found on the device (an id out of range, a non-finite
// activation). The kernels of an update atomicMin an error key into a slot of
// ErrorState; the first kernel after the checks turns a set key into the
// recorder's first error, and from then on every update is skipped until the
// host takes the error (DeviceRecorder::take_error).
#pragma once

#include <cmath>

#include "../shape.hpp"
#include "memory.cuh"

namespace txray {
namespace cuda {
namespace detail {

constexpr unsigned long long kNoError = ~0ull;

// Device layout of the first input error. Reset to all-ones bytes (key:
// none, update: -1).
struct ErrorState {
  unsigned long long key[2];  // per update parity: atomicMin of the error key of that update
  long long update;           // first failing update, -1 if none
  unsigned long long first_key;
  long long id_value;
  float act_value;
  float pad;
};

// Error keys order errors as the CPU engine reports them (cpp/shape.hpp): a
// bad id before a non-finite value; bad ids by token, then kind; non-finite
// values by token, then neuron. Tokens are below 2^31, kinds below 256.
__host__ __device__ inline unsigned long long id_error_key(int kind, long long row) {
  return (static_cast<unsigned long long>(row) << 8) | static_cast<unsigned long long>(kind);
}
__host__ __device__ inline unsigned long long nan_error_key(long long row, int neuron) {
  return (1ull << 63) | (static_cast<unsigned long long>(row) << 32) | static_cast<unsigned int>(neuron);
}
__host__ __device__ inline bool is_nan_key(unsigned long long key) {
  return key >> 63;
}
__host__ __device__ inline long long key_row(unsigned long long key) {
  return is_nan_key(key) ? static_cast<long long>((key >> 32) & 0x7fffffffull) : static_cast<long long>(key >> 8);
}
__host__ __device__ inline int key_kind(unsigned long long key) {
  return static_cast<int>(key & 0xffull);
}
__host__ __device__ inline int key_neuron(unsigned long long key) {
  return static_cast<int>(key & 0xffffffffull);
}

// The InputError of a recorded error state (its token is data, cpp/shape.hpp).
inline InputError describe(const ErrorState& e, const std::vector<std::string>& kind_names,
                           const std::vector<int64_t>& vocab_sizes) {
  const int64_t row = key_row(e.first_key);
  if (is_nan_key(e.first_key)) return nonfinite_error(row, key_neuron(e.first_key), std::isnan(e.act_value));
  const size_t kind = size_t(key_kind(e.first_key));
  return bad_id_error(kind_names.at(kind), row, e.id_value, vocab_sizes.at(kind));
}

}  // namespace detail
}  // namespace cuda
}  // namespace txray
