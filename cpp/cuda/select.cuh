// Selection on the device (the counterpart of cpp/select.hpp): one warp per
// token checks its ids and the finiteness of its row, then picks the winners
// (argmax, or k rounds of "largest after the previous winner"; ties to the
// lowest neuron index), reading the row once from device memory (later
// rounds hit L1/L2). Also the per-update kernel arguments (Batch).
#pragma once

#include <cuda_fp16.h>

#include <climits>

#include "cells.cuh"
#include "errors.cuh"

namespace txray {
namespace cuda {
namespace detail {

constexpr int kMaxKinds = 16;

struct Winner {
  int neuron;  // -1: masked token
  float value;
};

// The kernels' arguments for one update, by value.
struct Batch {
  const void* data;
  long long rows, cols, row_stride, col_stride;
  int dtype;
  const unsigned char* mask;
  int n_kinds;
  int k;  // winners per token; 0: check only (mode all)
  long long update;
  ErrorState* err;
  Winner* winners;
  double* mass;
  unsigned long long* tokens;
  KindArgs kind[kMaxKinds];
};

// Loaders: one element, or a 16-byte vector of them, as float.
struct LF32 {
  using T = float;
  static constexpr int kVec = 4;
  static __device__ __forceinline__ float load(T x) { return x; }
  static __device__ __forceinline__ void unpack(uint4 v, float* out) {
    out[0] = __uint_as_float(v.x);
    out[1] = __uint_as_float(v.y);
    out[2] = __uint_as_float(v.z);
    out[3] = __uint_as_float(v.w);
  }
};
struct LF16 {
  using T = unsigned short;
  static constexpr int kVec = 8;
  static __device__ __forceinline__ float load(T x) { return __half2float(__ushort_as_half(x)); }
  static __device__ __forceinline__ void unpack(uint4 v, float* out) {
    const unsigned int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = load(static_cast<T>(w[i] & 0xffffu));
      out[2 * i + 1] = load(static_cast<T>(w[i] >> 16));
    }
  }
};
struct LBF16 {
  using T = unsigned short;
  static constexpr int kVec = 8;
  static __device__ __forceinline__ float load(T x) { return __uint_as_float(static_cast<unsigned int>(x) << 16); }
  static __device__ __forceinline__ void unpack(uint4 v, float* out) {
    const unsigned int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __uint_as_float(w[i] << 16);
      out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};

__device__ __forceinline__ float load_any(const void* data, int dtype, long long at) {
  if (dtype == static_cast<int>(DType::Float32)) return static_cast<const float*>(data)[at];
  const unsigned short h = static_cast<const unsigned short*>(data)[at];
  return dtype == static_cast<int>(DType::Float16) ? LF16::load(h) : LBF16::load(h);
}

__device__ __forceinline__ bool is_finite_f(float x) {
  return x - x == 0.0f;
}

// (v, i) before (bv, bi): larger value, or equal value and lower index.
__device__ __forceinline__ bool before(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

struct Scan {
  float v;
  int i;
  int first_bad;
};

// One lane's share of a row: the first entry in (value desc, index asc)
// order that comes strictly after (pv, pi) (every entry when kFirst), and
// with kFirst the lowest non-finite index.
template <class L, bool kVec, bool kFirst>
__device__ __forceinline__ Scan scan_row(const typename L::T* row, long long n, long long cs, float pv, int pi) {
  Scan s{-INFINITY, INT_MAX, INT_MAX};
  auto visit = [&](float x, int i) {
    if (kFirst) {
      if (!is_finite_f(x) && i < s.first_bad) s.first_bad = i;
    } else if (!(x < pv || (x == pv && i > pi))) {
      return;
    }
    if (before(x, i, s.v, s.i)) {
      s.v = x;
      s.i = i;
    }
  };
  const int lane = threadIdx.x & 31;
  long long tail = 0;
  if (kVec) {
    constexpr int V = L::kVec;
    const long long n_vec = n / V;
    const uint4* vrow = reinterpret_cast<const uint4*>(row);
#pragma unroll 4
    for (long long c = lane; c < n_vec; c += 32) {
      float x[V];
      L::unpack(__ldg(vrow + c), x);
#pragma unroll
      for (int j = 0; j < V; ++j) visit(x[j], static_cast<int>(c * V + j));
    }
    tail = n_vec * V;
  }
  for (long long i = tail + lane; i < n; i += 32) visit(L::load(row[i * cs]), static_cast<int>(i));
  return s;
}

__device__ __forceinline__ Scan warp_reduce(Scan s) {
#pragma unroll
  for (int off = 16; off; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, s.v, off);
    const int oi = __shfl_xor_sync(0xffffffffu, s.i, off);
    const int ob = __shfl_xor_sync(0xffffffffu, s.first_bad, off);
    if (before(ov, oi, s.v, s.i)) {
      s.v = ov;
      s.i = oi;
    }
    s.first_bad = min(s.first_bad, ob);
  }
  return s;
}

// One warp per token: ids and finiteness checks, then the winners.
template <class L, bool kVec>
__global__ void __launch_bounds__(256) select_kernel(Batch b) {
  if (b.err->update >= 0) return;  // an earlier update failed: skip until the error is taken
  const int slot = static_cast<int>(b.update & 1);
  const int lane = threadIdx.x & 31;
  const long long warp = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const long long n_warps = (static_cast<long long>(gridDim.x) * blockDim.x) >> 5;
  for (long long t = warp; t < b.rows; t += n_warps) {
    Winner* out = b.winners + t * b.k;
    if (b.mask && !b.mask[t]) {
      for (int j = lane; j < b.k; j += 32) out[j] = Winner{-1, 0.0f};
      continue;
    }
    if (lane < b.n_kinds) {
      const KindArgs& kd = b.kind[lane];
      const unsigned long long f = static_cast<unsigned long long>(kd.ids[t]);
      if (f >= static_cast<unsigned long long>(kd.vocab)) atomicMin(&b.err->key[slot], id_error_key(lane, t));
    }
    const auto* row = static_cast<const typename L::T*>(b.data) + t * b.row_stride;
    Scan s = warp_reduce(scan_row<L, kVec, true>(row, b.cols, b.col_stride, 0.0f, 0));
    if (s.first_bad != INT_MAX) {
      if (lane == 0) atomicMin(&b.err->key[slot], nan_error_key(t, s.first_bad));
      continue;
    }
    if (b.k == 0) continue;
    if (lane == 0) out[0] = Winner{s.i, s.v};
    for (int j = 1; j < b.k; ++j) {
      s = warp_reduce(scan_row<L, kVec, false>(row, b.cols, b.col_stride, s.v, s.i));
      if (lane == 0) out[j] = Winner{s.i, s.v};
    }
  }
}

// Called by every thread of the first kernel after the checks; thread (0, 0)
// arms the next update's error slot and keeps the details of a new first
// error. Returns whether this update must not be recorded.
__device__ __forceinline__ bool update_failed(const Batch& b) {
  const int slot = static_cast<int>(b.update & 1);
  const unsigned long long key = b.err->key[slot];
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) {
    b.err->key[slot ^ 1] = kNoError;
    if (key != kNoError && b.err->update < 0) {
      b.err->first_key = key;
      const long long row = key_row(key);
      if (is_nan_key(key))
        b.err->act_value = load_any(b.data, b.dtype, row * b.row_stride + key_neuron(key) * b.col_stride);
      else
        b.err->id_value = b.kind[key_kind(key)].ids[row];
      b.err->update = b.update;
    }
  }
  // Other threads may see update written above, but only when key is set.
  return key != kNoError || b.err->update >= 0;
}

}  // namespace detail
}  // namespace cuda
}  // namespace txray
