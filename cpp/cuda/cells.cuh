// The statistics of one feature kind on the device (the counterpart of
// cpp/cells.hpp): dense cells, or a hash table of the cells that occurred
// (open addressing, slots claimed by CAS, kept at <= 50 % load), and in mode
// all dense feature rows or rows for the features seen; the kernels that add
// to them, and their growth.
#pragma once

#include "memory.cuh"

namespace txray {
namespace cuda {
namespace detail {

constexpr unsigned long long kEmpty = ~0ull;

enum Storage : int { kDenseCells = 0, kHashCells = 1, kDenseRows = 2, kSparseRows = 3 };

// What a kernel needs of one kind, by value.
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

__device__ __forceinline__ unsigned long long hash_slot(unsigned long long key, unsigned int shift) {
  return (key * 0x9E3779B97F4A7C15ull) >> shift;
}

__device__ inline void hash_add(const KindArgs& kd, unsigned long long key, unsigned long long count, double sum) {
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

// The row of feature f in a sparse row pool, claimed on first sight.
__device__ __forceinline__ void claim_row(const KindArgs& kd, long long f) {
  if (kd.row_of[f] == -1 && atomicCAS(kd.row_of + f, -1, -2) == -1)
    kd.row_of[f] = static_cast<int>(atomicAdd(kd.size, 1ull));
}

__global__ void rehash(KindArgs dst, const unsigned long long* keys, const unsigned long long* count, const double* sum,
                       long long n_slots) {
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_slots;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    if (keys[i] != kEmpty) hash_add(dst, keys[i], count[i], sum[i]);
}

__global__ void assign_rows(KindArgs kd, const int* feature, long long n) {
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    claim_row(kd, feature[i]);
}

// Adds exported cells (another recorder's) into these.
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

// One kind's storage, on the host side.
struct KindStore {
  Storage storage = kDenseCells;
  int64_t vocab = 0;
  int64_t n_neurons = 0;
  unsigned long long* size = nullptr;  // its counter in the recorder's scalars (device)
  Buffer freq;                         // uint64 [vocab]
  Buffer count;                        // dense cells: uint64 [vocab * N]; hash: uint64 [slots]
  Buffer sum;             // dense cells / dense rows: f64 [vocab * N]; hash: f64 [slots]; sparse rows: f64 [cap * N]
  Buffer keys;            // hash: uint64 [slots]
  Buffer row_of;          // sparse rows: int32 [vocab]
  uint64_t capacity = 0;  // hash slots / sparse rows
  uint64_t upper = 0;     // upper bound of occupied slots / rows in use

  bool sparse() const { return storage == kHashCells || storage == kSparseRows; }
  bool dense() const { return !sparse(); }

  KindArgs args(const long long* ids) const {
    KindArgs a{};
    a.ids = ids;
    a.vocab = vocab;
    a.freq = freq.as<unsigned long long>();
    a.storage = storage;
    a.count = count.as<unsigned long long>();
    a.sum = sum.as<double>();
    a.keys = keys.as<unsigned long long>();
    a.size = size;
    a.row_of = row_of.as<int>();
    if (storage == kHashCells) {
      a.slot_mask = capacity - 1;
      a.shift = 64u - static_cast<unsigned>(log2_exact(capacity));
    }
    return a;
  }

  // Whether `cells` more hash cells or `rows` more feature rows might not fit.
  bool overflows(uint64_t cells, uint64_t rows) const {
    if (storage == kHashCells) return (upper + cells) * 2 > capacity;
    if (storage == kSparseRows) return std::min<uint64_t>(upper + rows, uint64_t(vocab)) > capacity;
    return false;
  }

  // A table of at least 4 * need slots, the old cells rehashed into it, on
  // stream s (waits for s before the old table is freed).
  void grow_hash(uint64_t need, cudaStream_t s, int sm_count) {
    const uint64_t slots = next_pow2(std::max<uint64_t>(1024, 4 * need));
    Buffer new_keys, new_count, new_sum;
    new_keys.allocate(slots * 8, "a sparse cell table");
    new_count.allocate(slots * 8, "a sparse cell table");
    new_sum.allocate(slots * 8, "a sparse cell table");
    check(cudaMemsetAsync(new_keys.ptr, 0xff, slots * 8, s), "cudaMemsetAsync");
    check(cudaMemsetAsync(new_count.ptr, 0, slots * 8, s), "cudaMemsetAsync");
    check(cudaMemsetAsync(new_sum.ptr, 0, slots * 8, s), "cudaMemsetAsync");
    check(cudaMemsetAsync(size, 0, 8, s), "cudaMemsetAsync");
    const uint64_t old_slots = capacity;
    keys.swap(new_keys);
    count.swap(new_count);
    sum.swap(new_sum);
    capacity = slots;
    if (old_slots) {
      rehash<<<blocks_for(int64_t(old_slots), 256, sm_count * 32), 256, 0, s>>>(
          args(nullptr), new_keys.as<unsigned long long>(), new_count.as<unsigned long long>(), new_sum.as<double>(),
          static_cast<long long>(old_slots));
      check_launch("rehash");
    }
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");  // before the old table is freed
  }

  // A row pool of at least `need` rows (at most one per feature), the old
  // rows copied, on stream s.
  void grow_rows(uint64_t need, cudaStream_t s) {
    const uint64_t rows = std::min<uint64_t>(uint64_t(vocab), std::max<uint64_t>(need, capacity * 2));
    Buffer pool;
    pool.allocate(rows * uint64_t(n_neurons) * 8, "feature rows of mode 'all'");
    check(cudaMemsetAsync(pool.ptr, 0, pool.bytes, s), "cudaMemsetAsync");
    if (capacity)
      check(cudaMemcpyAsync(pool.ptr, sum.ptr, capacity * uint64_t(n_neurons) * 8, cudaMemcpyDeviceToDevice, s),
            "cudaMemcpyAsync");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    sum.swap(pool);
    capacity = rows;
  }

  void grow(uint64_t cells, uint64_t rows, cudaStream_t s, int sm_count) {
    if (storage == kHashCells)
      grow_hash(upper + cells, s, sm_count);
    else if (storage == kSparseRows)
      grow_rows(std::min<uint64_t>(upper + rows, uint64_t(vocab)), s);
  }

  size_t bytes() const { return freq.bytes + count.bytes + sum.bytes + keys.bytes + row_of.bytes; }
};

}  // namespace detail
}  // namespace cuda
}  // namespace txray
