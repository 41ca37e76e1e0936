// The kernels that add a checked update to the cells (after select_kernel):
// the winners of modes max1/topk, and every (token, neuron) of mode all.
#pragma once

#include "select.cuh"

namespace txray {
namespace cuda {
namespace detail {

__device__ __forceinline__ void add_tokens(unsigned long long* tokens, unsigned long long mine) {
#pragma unroll
  for (int off = 16; off; off >>= 1) mine += __shfl_xor_sync(0xffffffffu, mine, off);
  if ((threadIdx.x & 31) == 0 && mine) atomicAdd(tokens, mine);
}

// One thread per (token, winner).
__global__ void __launch_bounds__(256) accumulate_winners(Batch b) {
  if (update_failed(b)) return;
  const long long n_items = b.rows * b.k;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  unsigned long long counted = 0;
  for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n_items; idx += stride) {
    const Winner w = b.winners[idx];
    if (w.neuron < 0) continue;
    const long long t = idx / b.k;
    const bool first = idx - t * b.k == 0;
    const double v = static_cast<double>(w.value);
    atomicAdd(b.mass + w.neuron, v);
    for (int i = 0; i < b.n_kinds; ++i) {
      const KindArgs& kd = b.kind[i];
      const long long f = kd.ids[t];
      if (first) atomicAdd(kd.freq + f, 1ull);
      const unsigned long long key = static_cast<unsigned long long>(f) * b.cols + w.neuron;
      if (kd.storage == kDenseCells) {
        atomicAdd(kd.count + key, 1ull);
        atomicAdd(kd.sum + key, v);
      } else {
        hash_add(kd, key, 1ull, v);
      }
    }
    counted += first;
  }
  add_tokens(b.tokens, counted);
}

// Mode all, one thread per token: frequencies, tokens, rows for new features.
__global__ void __launch_bounds__(256) bookkeep_all(Batch b) {
  if (update_failed(b)) return;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  unsigned long long counted = 0;
  for (long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; t < b.rows; t += stride) {
    if (b.mask && !b.mask[t]) continue;
    for (int i = 0; i < b.n_kinds; ++i) {
      const KindArgs& kd = b.kind[i];
      const long long f = kd.ids[t];
      atomicAdd(kd.freq + f, 1ull);
      if (kd.storage == kSparseRows) claim_row(kd, f);
    }
    ++counted;
  }
  add_tokens(b.tokens, counted);
}

// Mode all: x = column block of neurons, y = chunks of tokens.
constexpr int kAllRows = 16;
template <class L>
__global__ void __launch_bounds__(128) accumulate_all(Batch b) {
  const int slot = static_cast<int>(b.update & 1);
  if (b.err->key[slot] != kNoError || b.err->update >= 0) return;
  const long long n = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= b.cols) return;
  const auto* data = static_cast<const typename L::T*>(b.data);
  for (long long t0 = static_cast<long long>(blockIdx.y) * kAllRows; t0 < b.rows;
       t0 += static_cast<long long>(gridDim.y) * kAllRows) {
    const long long t1 = min(b.rows, t0 + kAllRows);
    for (long long t = t0; t < t1; ++t) {
      if (b.mask && !b.mask[t]) continue;
      const double x = static_cast<double>(L::load(data[t * b.row_stride + n * b.col_stride]));
      for (int i = 0; i < b.n_kinds; ++i) {
        const KindArgs& kd = b.kind[i];
        const long long f = kd.ids[t];
        const long long r = kd.storage == kDenseRows ? f : kd.row_of[f];
        atomicAdd(kd.sum + r * b.cols + n, x);
      }
    }
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace txray
