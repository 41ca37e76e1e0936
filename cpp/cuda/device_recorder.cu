// CUDA implementation of txray::cuda::DeviceRecorder (see device_recorder.hpp).
//
// Per update, on the caller's stream, with no host synchronisation:
//   max1 / topk:  select_kernel (one warp per token: finiteness + id checks,
//                 argmax or k rounds of "largest after the previous winner",
//                 reading the row once from device memory; later rounds hit
//                 L1/L2) -> a (tokens x k) winner list, then
//                 accumulate_winners (one thread per winner: atomics into the
//                 dense cells or the device hash table, mass, frequencies,
//                 token count).
//   all:          select_kernel with k = 0 (checks only), bookkeep_all
//                 (frequencies, tokens, row assignment for sparse kinds),
//                 accumulate_all (threads along the neuron axis, float64
//                 atomics into the feature's row).
// The check runs before anything is added, so an update is all-or-nothing;
// the first error is kept in device memory (ErrorState) and every later
// update is skipped until take_error() clears it.
#include "device_recorder.hpp"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <sstream>

namespace txray {
namespace cuda {

namespace {

constexpr int kMaxKinds = 16;
constexpr unsigned long long kNoError = ~0ull;
constexpr unsigned long long kEmpty = ~0ull;
constexpr int kStagingSlots = 4;

enum Storage : int { kDenseCells = 0, kHashCells = 1, kDenseRows = 2, kSparseRows = 3 };

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess && e != cudaErrorNotReady) {
    cudaGetLastError();  // clear a non-sticky error so that later calls start clean
    throw DeviceError(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
  }
}

void check_launch(const char* what) {
  check(cudaGetLastError(), what);
}

struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int now = -1;
    if (cudaGetDevice(&now) == cudaSuccess && now != prev && prev >= 0) cudaSetDevice(prev);
  }
};

// Device memory owned by the recorder.
struct Buffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) {
    o.ptr = nullptr;
    o.bytes = 0;
  }
  Buffer& operator=(Buffer&&) = delete;
  ~Buffer() { release(); }
  void swap(Buffer& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(bytes, o.bytes);
  }
  void release() {
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    bytes = 0;
  }
  void allocate(size_t n, const char* what) {
    release();
    if (n == 0) return;
    const cudaError_t e = cudaMalloc(&ptr, n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      ptr = nullptr;
      throw DeviceError(std::string("could not allocate ") + std::to_string(n) + " bytes of device memory for " + what +
                        ": " + cudaGetErrorString(e));
    }
    bytes = n;
  }
  // Grows (never shrinks) to at least n bytes; the contents are lost. The
  // free synchronises the device, so in-flight kernels finish first.
  void reserve(size_t n, const char* what) {
    if (n > bytes) allocate(std::max(n, bytes + bytes / 2), what);
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

struct PinnedSlot {
  void* ptr = nullptr;
  size_t bytes = 0;
  cudaEvent_t ready = nullptr;  // recorded after the copy out of this slot
  bool used = false;
};

// -- device side ------------------------------------------------------------

struct Winner {
  int neuron;  // -1: masked token
  float value;
};

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

// Error keys order errors as the CPU engine checks them: ids first (by kind,
// then token), then non-finite values (by token, then neuron).
__host__ __device__ inline unsigned long long id_error_key(int kind, long long row) {
  return (static_cast<unsigned long long>(kind) << 32) | static_cast<unsigned long long>(row);
}
__host__ __device__ inline unsigned long long nan_error_key(long long row, int neuron) {
  return (1ull << 63) | (static_cast<unsigned long long>(row) << 32) | static_cast<unsigned int>(neuron);
}

struct KindArgs {
  const long long* ids;  // per token of this update
  long long vocab;
  unsigned long long* freq;
  int storage;
  // kDenseCells: count/sum [feature * N + neuron]; kDenseRows: sum [feature * N + neuron]
  unsigned long long* count;
  double* sum;
  // kHashCells (keys, count, sum) slots
  unsigned long long* keys;
  unsigned long long slot_mask;
  unsigned int shift;
  unsigned long long* size;  // hash: occupied slots; sparse rows: rows in use
  // kSparseRows: row_of[feature] (-1 unseen), pool [row * N + neuron] in sum
  int* row_of;
};

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
  if (dtype == 0) return static_cast<const float*>(data)[at];
  const unsigned short h = static_cast<const unsigned short*>(data)[at];
  return dtype == 1 ? LF16::load(h) : LBF16::load(h);
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

// Called by thread (0, 0) of the first kernel after the checks: arms the
// next update's error slot and keeps the details of a new first error.
// Returns whether this update must not be recorded.
__device__ __forceinline__ bool update_failed(const Batch& b) {
  const int slot = static_cast<int>(b.update & 1);
  const unsigned long long key = b.err->key[slot];
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) {
    b.err->key[slot ^ 1] = kNoError;
    if (key != kNoError && b.err->update < 0) {
      b.err->first_key = key;
      if (key >> 63) {
        const long long row = static_cast<long long>((key >> 32) & 0x7fffffffull);
        const long long neuron = static_cast<long long>(key & 0xffffffffull);
        b.err->act_value = load_any(b.data, b.dtype, row * b.row_stride + neuron * b.col_stride);
      } else {
        const int kind = static_cast<int>(key >> 32);
        b.err->id_value = b.kind[kind].ids[key & 0xffffffffull];
      }
      b.err->update = b.update;
    }
  }
  // Other threads may see update written above, but only when key is set.
  return key != kNoError || b.err->update >= 0;
}

__device__ __forceinline__ unsigned long long hash_slot(unsigned long long key, unsigned int shift) {
  return (key * 0x9E3779B97F4A7C15ull) >> shift;
}

__device__ void hash_add(const KindArgs& kd, unsigned long long key, unsigned long long count, double sum) {
  unsigned long long i = hash_slot(key, kd.shift);
  for (;;) {
    unsigned long long cur = *reinterpret_cast<volatile unsigned long long*>(kd.keys + i);
    if (cur == kEmpty) {
      cur = atomicCAS(kd.keys + i, kEmpty, key);
      if (cur == kEmpty) {
        atomicAdd(kd.size, 1ull);
        cur = key;
      }
    }
    if (cur == key) {
      atomicAdd(kd.count + i, count);
      atomicAdd(kd.sum + i, sum);
      return;
    }
    i = (i + 1) & kd.slot_mask;
  }
}

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
      if (kd.storage == kSparseRows && kd.row_of[f] == -1 && atomicCAS(kd.row_of + f, -1, -2) == -1)
        kd.row_of[f] = static_cast<int>(atomicAdd(kd.size, 1ull));
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

// -- merging and growth ---------------------------------------------------------

__global__ void rehash(KindArgs dst, const unsigned long long* keys, const unsigned long long* count, const double* sum,
                       long long n_slots) {
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_slots;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    if (keys[i] != kEmpty) hash_add(dst, keys[i], count[i], sum[i]);
}

__global__ void assign_rows(KindArgs kd, const int* feature, long long n) {
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int f = feature[i];
    if (kd.row_of[f] == -1 && atomicCAS(kd.row_of + f, -1, -2) == -1)
      kd.row_of[f] = static_cast<int>(atomicAdd(kd.size, 1ull));
  }
}

__global__ void add_cells(KindArgs kd, long long n_neurons, const int* neuron, const int* feature,
                          const long long* count, const double* sum, long long n) {
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const unsigned long long key = static_cast<unsigned long long>(feature[i]) * n_neurons + neuron[i];
    switch (kd.storage) {
      case kDenseCells:
        atomicAdd(kd.count + key, static_cast<unsigned long long>(count[i]));
        atomicAdd(kd.sum + key, sum[i]);
        break;
      case kHashCells:
        hash_add(kd, key, static_cast<unsigned long long>(count[i]), sum[i]);
        break;
      case kDenseRows:
        atomicAdd(kd.sum + key, sum[i]);
        break;
      default:
        atomicAdd(kd.sum + static_cast<long long>(kd.row_of[feature[i]]) * n_neurons + neuron[i], sum[i]);
    }
  }
}

__global__ void add_u64(unsigned long long* dst, const long long* src, long long n) {
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    dst[i] += static_cast<unsigned long long>(src[i]);
}

__global__ void add_f64(double* dst, const double* src, long long n) {
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}

unsigned int blocks_for(long long items, int threads, int cap) {
  const long long b = (items + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<long long>(1, std::min<long long>(b, cap)));
}

uint64_t next_pow2(uint64_t x) {
  uint64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

int log2_exact(uint64_t p) {
  int s = 0;
  while ((uint64_t(1) << s) < p) ++s;
  return s;
}

}  // namespace

// -- host side ------------------------------------------------------------------

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string status() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  }
  if (n == 0) return "no CUDA device is visible";
  return "";
}

int pointer_device(uintptr_t ptr) {
  cudaPointerAttributes attr;
  const cudaError_t e = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
  if (e != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  if (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) return attr.device;
  return -1;
}

struct KindStore {
  Storage storage = kDenseCells;
  int64_t vocab = 0;
  Buffer freq;            // uint64 [vocab]
  Buffer count;           // dense cells: uint64 [vocab * N]; hash: uint64 [slots]
  Buffer sum;             // dense cells / dense rows: f64 [vocab * N]; hash: f64 [slots]; sparse rows: f64 [cap * N]
  Buffer keys;            // hash: uint64 [slots]
  Buffer row_of;          // sparse rows: int32 [vocab]
  uint64_t capacity = 0;  // hash slots / sparse rows
  uint64_t upper = 0;     // upper bound of occupied slots / rows in use
};

struct DeviceRecorder::Impl {
  int device = 0;
  int64_t n_neurons = 0;
  std::vector<std::string> kind_names;
  std::vector<int64_t> vocab_sizes;
  Mode mode = Mode::Max1;
  int k = 1;
  int sm_count = 1;
  std::vector<KindStore> kinds;
  Buffer mass;     // f64 [N] (max1/topk)
  Buffer scalars;  // uint64 tokens, then uint64 size per kind
  Buffer error;    // ErrorState
  Buffer winners;
  Buffer staging;  // host ids / mask copied here
  PinnedSlot pinned[kStagingSlots];
  int next_slot = 0;
  unsigned long long* pinned_sizes = nullptr;
  cudaEvent_t done = nullptr, sizes_ready = nullptr;
  cudaStream_t last_stream = nullptr;
  bool have_work = false, sizes_pending = false;
  int64_t updates = 0;

  unsigned long long* tokens_ptr() const { return scalars.as<unsigned long long>(); }
  unsigned long long* size_ptr(size_t i) const { return scalars.as<unsigned long long>() + 1 + i; }
  bool any_sparse() const {
    for (const auto& s : kinds)
      if (s.storage == kHashCells || s.storage == kSparseRows) return true;
    return false;
  }

  KindArgs args(size_t i, const long long* ids) const {
    const KindStore& s = kinds[i];
    KindArgs a{};
    a.ids = ids;
    a.vocab = s.vocab;
    a.freq = s.freq.as<unsigned long long>();
    a.storage = s.storage;
    a.count = s.count.as<unsigned long long>();
    a.sum = s.sum.as<double>();
    a.keys = s.keys.as<unsigned long long>();
    a.size = size_ptr(i);
    a.row_of = s.row_of.as<int>();
    if (s.storage == kHashCells) {
      a.slot_mask = s.capacity - 1;
      a.shift = 64u - static_cast<unsigned>(log2_exact(s.capacity));
    }
    return a;
  }

  // Orders work on stream s after everything enqueued before, whatever
  // stream it ran on.
  void begin(cudaStream_t s) {
    if (have_work && s != last_stream) check(cudaStreamWaitEvent(s, done, 0), "cudaStreamWaitEvent");
  }
  void end(cudaStream_t s) {
    check(cudaEventRecord(done, s), "cudaEventRecord");
    last_stream = s;
    have_work = true;
  }
  void wait() { check(cudaEventSynchronize(done), "cudaEventSynchronize"); }

  // Exact sizes of the sparse tables (synchronises).
  void read_sizes() {
    wait();
    std::vector<unsigned long long> sizes(kinds.size());
    check(cudaMemcpy(sizes.data(), size_ptr(0), sizes.size() * 8, cudaMemcpyDeviceToHost), "reading table sizes");
    for (size_t i = 0; i < kinds.size(); ++i) kinds[i].upper = sizes[i];
    sizes_pending = false;
  }

  void grow_hash(size_t i, uint64_t need, cudaStream_t s) {
    KindStore& st = kinds[i];
    const uint64_t slots = next_pow2(std::max<uint64_t>(1024, 4 * need));
    Buffer keys, count, sum;
    keys.allocate(slots * 8, "a sparse cell table");
    count.allocate(slots * 8, "a sparse cell table");
    sum.allocate(slots * 8, "a sparse cell table");
    check(cudaMemsetAsync(keys.ptr, 0xff, slots * 8, s), "cudaMemsetAsync");
    check(cudaMemsetAsync(count.ptr, 0, slots * 8, s), "cudaMemsetAsync");
    check(cudaMemsetAsync(sum.ptr, 0, slots * 8, s), "cudaMemsetAsync");
    check(cudaMemsetAsync(size_ptr(i), 0, 8, s), "cudaMemsetAsync");
    const uint64_t old_slots = st.capacity;
    st.keys.swap(keys);
    st.count.swap(count);
    st.sum.swap(sum);
    st.capacity = slots;
    if (old_slots) {
      rehash<<<blocks_for(int64_t(old_slots), 256, sm_count * 32), 256, 0, s>>>(
          args(i, nullptr), keys.as<unsigned long long>(), count.as<unsigned long long>(), sum.as<double>(),
          static_cast<long long>(old_slots));
      check_launch("rehash");
    }
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");  // before the old table is freed
  }

  void grow_rows(size_t i, uint64_t need, cudaStream_t s) {
    KindStore& st = kinds[i];
    const uint64_t rows = std::min<uint64_t>(uint64_t(st.vocab), std::max<uint64_t>(need, st.capacity * 2));
    Buffer pool;
    pool.allocate(rows * uint64_t(n_neurons) * 8, "feature rows of mode 'all'");
    check(cudaMemsetAsync(pool.ptr, 0, pool.bytes, s), "cudaMemsetAsync");
    if (st.capacity)
      check(cudaMemcpyAsync(pool.ptr, st.sum.ptr, st.capacity * uint64_t(n_neurons) * 8, cudaMemcpyDeviceToDevice, s),
            "cudaMemcpyAsync");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    st.sum.swap(pool);
    st.capacity = rows;
  }

  // Makes room for `cells` new hash cells / `rows` new feature rows per
  // kind. Uses the sizes read back after the last update when they have
  // landed; otherwise an upper bound; synchronises only when that bound
  // says a table might overflow.
  void reserve(uint64_t cells, uint64_t rows, cudaStream_t s) {
    if (!any_sparse()) return;
    if (sizes_pending && cudaEventQuery(sizes_ready) == cudaSuccess) {
      for (size_t i = 0; i < kinds.size(); ++i) kinds[i].upper = pinned_sizes[i];
      sizes_pending = false;
    }
    auto overflows = [&](const KindStore& st) {
      if (st.storage == kHashCells) return (st.upper + cells) * 2 > st.capacity;
      if (st.storage == kSparseRows) return std::min<uint64_t>(st.upper + rows, uint64_t(st.vocab)) > st.capacity;
      return false;
    };
    bool refreshed = false;
    for (size_t i = 0; i < kinds.size(); ++i) {
      if (!overflows(kinds[i])) continue;
      if (!refreshed) {
        read_sizes();
        refreshed = true;
      }
      if (!overflows(kinds[i])) continue;
      if (kinds[i].storage == kHashCells)
        grow_hash(i, kinds[i].upper + cells, s);
      else
        grow_rows(i, std::min<uint64_t>(kinds[i].upper + rows, uint64_t(kinds[i].vocab)), s);
    }
  }

  void after_sparse_update(uint64_t cells, uint64_t rows, cudaStream_t s) {
    if (!any_sparse()) return;
    for (auto& st : kinds) {
      if (st.storage == kHashCells) st.upper += cells;
      if (st.storage == kSparseRows) st.upper = std::min<uint64_t>(st.upper + rows, uint64_t(st.vocab));
    }
    check(cudaMemcpyAsync(pinned_sizes, size_ptr(0), kinds.size() * 8, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
    check(cudaEventRecord(sizes_ready, s), "cudaEventRecord");
    sizes_pending = true;
  }

  // Copies host bytes to `dst` on the device through a pinned slot.
  void stage(const void* src, size_t bytes, void* dst, cudaStream_t s) {
    PinnedSlot& slot = pinned[next_slot];
    next_slot = (next_slot + 1) % kStagingSlots;
    if (slot.used) check(cudaEventSynchronize(slot.ready), "cudaEventSynchronize");
    if (slot.bytes < bytes) {
      if (slot.ptr) cudaFreeHost(slot.ptr);
      slot.ptr = nullptr;
      slot.bytes = 0;
      check(cudaMallocHost(&slot.ptr, std::max(bytes, size_t(1) << 16)), "cudaMallocHost");
      slot.bytes = std::max(bytes, size_t(1) << 16);
    }
    std::memcpy(slot.ptr, src, bytes);
    check(cudaMemcpyAsync(dst, slot.ptr, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
    check(cudaEventRecord(slot.ready, s), "cudaEventRecord");
    slot.used = true;
  }

  template <class T>
  std::vector<T> download(const Buffer& b, size_t n) const {
    std::vector<T> out(n);
    if (n) check(cudaMemcpy(out.data(), b.ptr, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return out;
  }
};

DeviceRecorder::DeviceRecorder(int device, int64_t n_neurons, std::vector<std::string> kind_names,
                               std::vector<int64_t> vocab_sizes, Mode mode, int k, int64_t dense_limit_bytes)
    : impl_(new Impl) {
  Impl& m = *impl_;
  if (n_neurons < 1 || n_neurons > INT32_MAX) throw InputError("n_neurons must be between 1 and 2^31-1");
  if (kind_names.size() != vocab_sizes.size() || kind_names.empty())
    throw InputError("need at least one feature kind, each with a vocabulary size");
  if (kind_names.size() > size_t(kMaxKinds))
    throw InputError("a CUDA recorder takes at most " + std::to_string(kMaxKinds) + " feature kinds");
  if (mode == Mode::TopK && (k < 1 || k > n_neurons))
    throw InputError("k must be between 1 and n_neurons (" + std::to_string(n_neurons) + ")");
  for (size_t i = 0; i < vocab_sizes.size(); ++i)
    if (vocab_sizes[i] < 1 || vocab_sizes[i] > INT32_MAX)
      throw InputError("vocabulary size of feature kind '" + kind_names[i] + "' must be between 1 and 2^31-1");
  const int count = device_count();
  if (count == 0) throw DeviceError("no usable CUDA device: " + status());
  if (device < 0 || device >= count)
    throw InputError("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                     " visible)");
  m.device = device;
  m.n_neurons = n_neurons;
  m.kind_names = std::move(kind_names);
  m.vocab_sizes = std::move(vocab_sizes);
  m.mode = mode;
  m.k = mode == Mode::Max1 ? 1 : (mode == Mode::All ? 0 : k);
  DeviceGuard guard(device);
  check(cudaDeviceGetAttribute(&m.sm_count, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  m.kinds.resize(m.vocab_sizes.size());
  for (size_t i = 0; i < m.kinds.size(); ++i) {
    KindStore& st = m.kinds[i];
    const int64_t f = m.vocab_sizes[i];
    st.vocab = f;
    st.freq.allocate(size_t(f) * 8, "feature frequencies");
    check(cudaMemset(st.freq.ptr, 0, st.freq.bytes), "cudaMemset");
    const double cells = double(n_neurons) * double(f);
    if (mode == Mode::All) {
      if (cells * 8.0 <= double(dense_limit_bytes)) {
        st.storage = kDenseRows;
        st.sum.allocate(size_t(cells) * 8, "dense feature rows (lower dense_limit_bytes to use sparse rows)");
        check(cudaMemset(st.sum.ptr, 0, st.sum.bytes), "cudaMemset");
      } else {
        st.storage = kSparseRows;
        st.row_of.allocate(size_t(f) * 4, "the feature row index");
        check(cudaMemset(st.row_of.ptr, 0xff, st.row_of.bytes), "cudaMemset");
      }
    } else if (cells * 16.0 <= double(dense_limit_bytes)) {
      st.storage = kDenseCells;
      st.count.allocate(size_t(cells) * 8, "dense cells (lower dense_limit_bytes to use a sparse table)");
      st.sum.allocate(size_t(cells) * 8, "dense cells (lower dense_limit_bytes to use a sparse table)");
      check(cudaMemset(st.count.ptr, 0, st.count.bytes), "cudaMemset");
      check(cudaMemset(st.sum.ptr, 0, st.sum.bytes), "cudaMemset");
    } else {
      st.storage = kHashCells;
    }
  }
  m.mass.allocate(size_t(n_neurons) * 8, "activation mass");
  check(cudaMemset(m.mass.ptr, 0, m.mass.bytes), "cudaMemset");
  m.scalars.allocate((1 + m.kinds.size()) * 8, "counters");
  check(cudaMemset(m.scalars.ptr, 0, m.scalars.bytes), "cudaMemset");
  m.error.allocate(sizeof(ErrorState), "the error flag");
  check(cudaMemset(m.error.ptr, 0xff, sizeof(ErrorState)), "cudaMemset");
  check(cudaEventCreateWithFlags(&m.done, cudaEventDisableTiming), "cudaEventCreate");
  check(cudaEventCreateWithFlags(&m.sizes_ready, cudaEventDisableTiming), "cudaEventCreate");
  for (auto& slot : m.pinned) check(cudaEventCreateWithFlags(&slot.ready, cudaEventDisableTiming), "cudaEventCreate");
  check(cudaMallocHost(reinterpret_cast<void**>(&m.pinned_sizes), m.kinds.size() * 8), "cudaMallocHost");
  // Sparse tables start small; they grow before the update that could fill them.
  for (size_t i = 0; i < m.kinds.size(); ++i)
    if (m.kinds[i].storage == kHashCells) m.grow_hash(i, 256, nullptr);
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

DeviceRecorder::~DeviceRecorder() {
  if (!impl_) return;
  Impl& m = *impl_;
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(m.device);
  if (m.have_work) cudaEventSynchronize(m.done);
  for (auto& slot : m.pinned) {
    if (slot.ptr) cudaFreeHost(slot.ptr);
    if (slot.ready) cudaEventDestroy(slot.ready);
  }
  if (m.pinned_sizes) cudaFreeHost(m.pinned_sizes);
  if (m.done) cudaEventDestroy(m.done);
  if (m.sizes_ready) cudaEventDestroy(m.sizes_ready);
  impl_.reset();  // frees the device buffers while the device is current
  if (prev >= 0) cudaSetDevice(prev);
  cudaGetLastError();
}

int64_t DeviceRecorder::update(const DeviceBatch& in) {
  Impl& m = *impl_;
  if (in.cols != m.n_neurons)
    throw InputError("activations have " + std::to_string(in.cols) + " neurons, the recorder " +
                     std::to_string(m.n_neurons));
  if (in.ids.size() != m.kinds.size() || in.host_ids.size() != m.kinds.size())
    throw InputError("one feature array per feature kind is needed");
  if (in.rows < 0 || in.rows >= (int64_t(1) << 31)) throw InputError("a CUDA update takes fewer than 2^31 tokens");
  if (in.rows == 0) return 0;
  if (!in.data) throw InputError("activations have a null device pointer");
  DeviceGuard guard(m.device);
  const int on = pointer_device(in.data);
  if (on != m.device)
    throw InputError(on < 0 ? "activations are not in device memory"
                            : "activations are on CUDA device " + std::to_string(on) + ", the recorder on device " +
                                  std::to_string(m.device));
  for (size_t i = 0; i < m.kinds.size(); ++i) {
    if (!in.ids[i] && !in.host_ids[i]) throw InputError("feature ids of kind '" + m.kind_names[i] + "' are missing");
    if (in.ids[i] && pointer_device(in.ids[i]) != m.device)
      throw InputError("feature ids of kind '" + m.kind_names[i] + "' are not in this device's memory");
  }
  if (in.mask && pointer_device(in.mask) != m.device) throw InputError("the mask is not in this device's memory");

  const cudaStream_t s = reinterpret_cast<cudaStream_t>(in.stream);
  m.begin(s);
  const int64_t rows = in.rows;
  const size_t elem = in.dtype == DType::Float32 ? 4 : 2;

  // Scratch: winners, then staged host ids and mask.
  size_t n_host = 0;
  for (const auto* p : in.host_ids) n_host += p != nullptr;
  const size_t winner_bytes = size_t(rows) * size_t(m.k) * sizeof(Winner);
  if (winner_bytes > m.winners.bytes) {
    if (m.have_work) m.wait();
    m.winners.reserve(winner_bytes, "the winner list");
  }
  const size_t stage_bytes = n_host * size_t(rows) * 8 + (in.host_mask ? size_t(rows) : 0);
  if (stage_bytes > m.staging.bytes) {
    if (m.have_work) m.wait();
    m.staging.reserve(stage_bytes, "staged feature ids");
  }
  const long long* ids[kMaxKinds] = {};
  size_t at = 0;
  for (size_t i = 0; i < m.kinds.size(); ++i) {
    if (in.ids[i]) {
      ids[i] = reinterpret_cast<const long long*>(in.ids[i]);
    } else {
      char* dst = m.staging.as<char>() + at;
      m.stage(in.host_ids[i], size_t(rows) * 8, dst, s);
      ids[i] = reinterpret_cast<const long long*>(dst);
      at += size_t(rows) * 8;
    }
  }
  const unsigned char* mask = reinterpret_cast<const unsigned char*>(in.mask);
  if (in.host_mask) {
    char* dst = m.staging.as<char>() + at;
    m.stage(in.host_mask, size_t(rows), dst, s);
    mask = reinterpret_cast<const unsigned char*>(dst);
  }

  const uint64_t new_cells = uint64_t(rows) * uint64_t(std::max(m.k, 1));
  m.reserve(new_cells, uint64_t(rows), s);

  Batch b{};
  b.data = reinterpret_cast<const void*>(in.data);
  b.rows = rows;
  b.cols = in.cols;
  b.row_stride = in.row_stride;
  b.col_stride = in.col_stride;
  b.dtype = static_cast<int>(in.dtype);
  b.mask = mask;
  b.n_kinds = static_cast<int>(m.kinds.size());
  b.k = m.k;
  b.update = m.updates + 1;
  b.err = m.error.as<ErrorState>();
  b.winners = m.winners.as<Winner>();
  b.mass = m.mass.as<double>();
  b.tokens = m.tokens_ptr();
  for (size_t i = 0; i < m.kinds.size(); ++i) b.kind[i] = m.args(i, ids[i]);

  // 16-byte loads when rows are contiguous and 16-byte aligned.
  const bool vec = in.col_stride == 1 && in.data % 16 == 0 && (in.row_stride * int64_t(elem)) % 16 == 0;
  const unsigned select_blocks = blocks_for(rows, 8, m.sm_count * 16);
  auto launch_select = [&](auto loader) {
    using L = decltype(loader);
    if (vec)
      select_kernel<L, true><<<select_blocks, 256, 0, s>>>(b);
    else
      select_kernel<L, false><<<select_blocks, 256, 0, s>>>(b);
  };
  switch (in.dtype) {
    case DType::Float16:
      launch_select(LF16{});
      break;
    case DType::BFloat16:
      launch_select(LBF16{});
      break;
    default:
      launch_select(LF32{});
  }
  check_launch("select_kernel");
  if (m.mode == Mode::All) {
    bookkeep_all<<<blocks_for(rows, 256, m.sm_count * 32), 256, 0, s>>>(b);
    check_launch("bookkeep_all");
    const dim3 grid(static_cast<unsigned>((in.cols + 127) / 128),
                    static_cast<unsigned>(std::min<int64_t>((rows + kAllRows - 1) / kAllRows, 65535)));
    switch (in.dtype) {
      case DType::Float16:
        accumulate_all<LF16><<<grid, 128, 0, s>>>(b);
        break;
      case DType::BFloat16:
        accumulate_all<LBF16><<<grid, 128, 0, s>>>(b);
        break;
      default:
        accumulate_all<LF32><<<grid, 128, 0, s>>>(b);
    }
    check_launch("accumulate_all");
  } else {
    accumulate_winners<<<blocks_for(rows * m.k, 256, m.sm_count * 32), 256, 0, s>>>(b);
    check_launch("accumulate_winners");
  }
  m.after_sparse_update(new_cells, uint64_t(rows), s);
  m.end(s);
  return ++m.updates;
}

bool DeviceRecorder::idle() {
  Impl& m = *impl_;
  if (!m.have_work) return true;
  DeviceGuard guard(m.device);
  const cudaError_t e = cudaEventQuery(m.done);
  if (e == cudaErrorNotReady) return false;
  check(e, "cudaEventQuery");
  return true;
}

void DeviceRecorder::synchronize() {
  Impl& m = *impl_;
  if (!m.have_work) return;
  DeviceGuard guard(m.device);
  m.wait();
}

std::pair<int64_t, std::string> DeviceRecorder::take_error() {
  Impl& m = *impl_;
  DeviceGuard guard(m.device);
  synchronize();
  ErrorState e;
  check(cudaMemcpy(&e, m.error.ptr, sizeof e, cudaMemcpyDeviceToHost), "reading the error flag");
  if (e.update < 0) return {0, ""};
  check(cudaMemset(m.error.ptr, 0xff, sizeof(ErrorState)), "cudaMemset");
  std::ostringstream msg;
  if (e.first_key >> 63) {
    const int64_t row = int64_t((e.first_key >> 32) & 0x7fffffffull);
    const int64_t neuron = int64_t(e.first_key & 0xffffffffull);
    msg << "activation of token " << row << " at neuron " << neuron << " is "
        << (std::isnan(e.act_value) ? "NaN" : "infinite") << "; activations must be finite";
  } else {
    const size_t kind = size_t(e.first_key >> 32);
    const int64_t row = int64_t(e.first_key & 0xffffffffull);
    msg << "feature '" << m.kind_names.at(kind) << "' of token " << row << " is " << e.id_value
        << ", outside its vocabulary [0, " << m.vocab_sizes[kind] << ")";
  }
  return {e.update, msg.str()};
}

void DeviceRecorder::merge(DeviceRecorder& other) {
  Impl& m = *impl_;
  Impl& o = *other.impl_;
  if (&other == this) throw InputError("cannot merge a recorder into itself");
  if (o.n_neurons != m.n_neurons || o.vocab_sizes != m.vocab_sizes || o.kind_names != m.kind_names ||
      o.mode != m.mode || o.k != m.k)
    throw InputError("cannot merge recorders with different neurons, feature kinds, vocabularies or modes");
  if (o.device != m.device)
    throw InputError("cannot merge recorders on different CUDA devices (" + std::to_string(o.device) + " and " +
                     std::to_string(m.device) + "); merge their profiles instead");
  other.synchronize();
  synchronize();
  DeviceGuard guard(m.device);
  // Both recorders are idle now; the legacy default stream orders the rest
  // (the last caller's stream may no longer exist).
  const cudaStream_t s = nullptr;
  for (size_t i = 0; i < m.kinds.size(); ++i) {
    const Cells c = other.cells(i);
    const std::vector<int64_t> freq = other.frequencies(i);
    const size_t n = c.count.size();
    Buffer neuron, feature, count, sum, f;
    neuron.allocate(n * 4, "merging");
    feature.allocate(n * 4, "merging");
    count.allocate(n * 8, "merging");
    sum.allocate(n * 8, "merging");
    f.allocate(freq.size() * 8, "merging");
    if (n) {
      check(cudaMemcpy(neuron.ptr, c.neuron.data(), n * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      check(cudaMemcpy(feature.ptr, c.feature.data(), n * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      check(cudaMemcpy(count.ptr, c.count.data(), n * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
      check(cudaMemcpy(sum.ptr, c.sum.data(), n * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    check(cudaMemcpy(f.ptr, freq.data(), freq.size() * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
    KindStore& st = m.kinds[i];
    if (st.storage == kHashCells || st.storage == kSparseRows) {
      m.read_sizes();
      if (st.storage == kHashCells && (st.upper + n) * 2 > st.capacity) m.grow_hash(i, st.upper + n, s);
      if (st.storage == kSparseRows) {
        const uint64_t need = std::min<uint64_t>(st.upper + n / uint64_t(m.n_neurons), uint64_t(st.vocab));
        if (need > st.capacity) m.grow_rows(i, need, s);
        if (n)
          assign_rows<<<blocks_for(int64_t(n), 256, m.sm_count * 32), 256, 0, s>>>(m.args(i, nullptr),
                                                                                   feature.as<int>(), int64_t(n));
        check_launch("assign_rows");
      }
    }
    if (n)
      add_cells<<<blocks_for(int64_t(n), 256, m.sm_count * 32), 256, 0, s>>>(
          m.args(i, nullptr), m.n_neurons, neuron.as<int>(), feature.as<int>(), count.as<long long>(), sum.as<double>(),
          int64_t(n));
    check_launch("add_cells");
    add_u64<<<blocks_for(int64_t(freq.size()), 256, m.sm_count * 32), 256, 0, s>>>(
        st.freq.as<unsigned long long>(), f.as<long long>(), int64_t(freq.size()));
    check_launch("add_u64");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");  // before the temporaries are freed
  }
  if (m.mode != Mode::All) {
    const std::vector<double> mass = other.mass();
    Buffer tmp;
    tmp.allocate(mass.size() * 8, "merging");
    check(cudaMemcpy(tmp.ptr, mass.data(), mass.size() * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
    add_f64<<<blocks_for(int64_t(mass.size()), 256, m.sm_count * 32), 256, 0, s>>>(
        m.mass.as<double>(), tmp.as<double>(), int64_t(mass.size()));
    check_launch("add_f64");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  }
  const long long tokens = other.tokens();
  Buffer tmp;
  tmp.allocate(8, "merging");
  check(cudaMemcpy(tmp.ptr, &tokens, 8, cudaMemcpyHostToDevice), "cudaMemcpy");
  add_u64<<<1, 32, 0, s>>>(m.tokens_ptr(), tmp.as<long long>(), 1);
  check_launch("add_u64");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  m.read_sizes();
}

Cells DeviceRecorder::cells(size_t kind) {
  Impl& m = *impl_;
  if (kind >= m.kinds.size()) throw InputError("no such feature kind");
  DeviceGuard guard(m.device);
  synchronize();
  const KindStore& st = m.kinds[kind];
  const int64_t n = m.n_neurons;
  const size_t total = size_t(st.vocab) * size_t(n);
  if (st.storage == kDenseCells || st.storage == kHashCells) {
    std::vector<uint64_t> keys;
    std::vector<int64_t> count;
    std::vector<double> sum;
    if (st.storage == kDenseCells) {
      const auto c = m.download<int64_t>(st.count, total);
      const auto s = m.download<double>(st.sum, total);
      for (size_t key = 0; key < total; ++key) {
        if (c[key] == 0) continue;
        keys.push_back(key);
        count.push_back(c[key]);
        sum.push_back(s[key]);
      }
    } else {
      const auto kk = m.download<uint64_t>(st.keys, st.capacity);
      const auto c = m.download<int64_t>(st.count, st.capacity);
      const auto s = m.download<double>(st.sum, st.capacity);
      std::vector<size_t> order;
      for (size_t i = 0; i < kk.size(); ++i)
        if (kk[i] != kEmpty) order.push_back(i);
      std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return kk[a] < kk[b]; });
      for (size_t i : order) {
        keys.push_back(kk[i]);
        count.push_back(c[i]);
        sum.push_back(s[i]);
      }
    }
    return bucket_by_neuron(n, std::move(keys), count, sum);
  }
  // Mode all: every neuron of every seen feature, count = its frequency.
  const auto freq = m.download<int64_t>(st.freq, size_t(st.vocab));
  std::vector<int64_t> seen;
  for (int64_t f = 0; f < st.vocab; ++f)
    if (freq[f] > 0) seen.push_back(f);
  std::vector<double> rows;
  std::vector<int32_t> row_of;
  if (st.storage == kDenseRows) {
    rows = m.download<double>(st.sum, total);
  } else {
    row_of = m.download<int32_t>(st.row_of, size_t(st.vocab));
    rows = m.download<double>(st.sum, st.capacity * size_t(n));
  }
  const size_t nf = seen.size();
  Cells out;
  out.neuron.resize(nf * n);
  out.feature.resize(nf * n);
  out.count.resize(nf * n);
  out.sum.resize(nf * n);
  for (int64_t nn = 0; nn < n; ++nn) {
    for (size_t j = 0; j < nf; ++j) {
      const int64_t f = seen[j];
      const int64_t r = st.storage == kDenseRows ? f : row_of[f];
      const size_t at = size_t(nn) * nf + j;
      out.neuron[at] = int32_t(nn);
      out.feature[at] = int32_t(f);
      out.count[at] = freq[f];
      out.sum[at] = rows[size_t(r) * n + nn];
    }
  }
  return out;
}

std::vector<int64_t> DeviceRecorder::frequencies(size_t kind) {
  Impl& m = *impl_;
  if (kind >= m.kinds.size()) throw InputError("no such feature kind");
  DeviceGuard guard(m.device);
  synchronize();
  return m.download<int64_t>(m.kinds[kind].freq, size_t(m.kinds[kind].vocab));
}

std::vector<double> DeviceRecorder::mass() {
  Impl& m = *impl_;
  DeviceGuard guard(m.device);
  synchronize();
  if (m.mode != Mode::All) return m.download<double>(m.mass, size_t(m.n_neurons));
  // Mode all: the sum of every row of the first kind, as on the CPU.
  const Cells c = cells(0);
  std::vector<double> mass(size_t(m.n_neurons), 0.0);
  for (size_t i = 0; i < c.sum.size(); ++i) mass[c.neuron[i]] += c.sum[i];
  return mass;
}

int64_t DeviceRecorder::tokens() {
  Impl& m = *impl_;
  DeviceGuard guard(m.device);
  synchronize();
  int64_t t = 0;
  check(cudaMemcpy(&t, m.tokens_ptr(), 8, cudaMemcpyDeviceToHost), "cudaMemcpy");
  return t;
}

bool DeviceRecorder::dense(size_t kind) const {
  const auto s = impl_->kinds.at(kind).storage;
  return s == kDenseCells || s == kDenseRows;
}

size_t DeviceRecorder::bytes() const {
  const Impl& m = *impl_;
  size_t total = m.mass.bytes + m.scalars.bytes + m.error.bytes + m.winners.bytes + m.staging.bytes;
  for (const auto& st : m.kinds)
    total += st.freq.bytes + st.count.bytes + st.sum.bytes + st.keys.bytes + st.row_of.bytes;
  return total;
}

int DeviceRecorder::device() const {
  return impl_->device;
}
int64_t DeviceRecorder::n_neurons() const {
  return impl_->n_neurons;
}

}  // namespace cuda
}  // namespace txray
