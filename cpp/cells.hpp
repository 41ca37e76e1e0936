// Accumulators for one feature kind: an int64 count and a float64 sum per
// (neuron, feature) cell.
//
// CellTable (modes max1 and topk) is dense when neurons x features fits the
// memory limit and a hash table otherwise, so that memory is bounded by the
// number of distinct cells that ever won, never by corpus length.
// FeatureRows (mode all) keeps one dense row of sums per feature seen: in
// that mode every neuron records every token, so a seen feature fills its
// whole row, and its count is the feature's corpus frequency.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

namespace txray {

// Cells in neuron-major order, the layout of Profile tables.
struct Cells {
  std::vector<int32_t> neuron;
  std::vector<int32_t> feature;
  std::vector<int64_t> count;
  std::vector<double> sum;
};

// Cells from distinct keys feature * n_neurons + neuron in any order, with
// their counts and sums, regrouped neuron-major (features ascending within
// a neuron). Shared by the CPU tables and the CUDA recorder's export.
Cells bucket_by_neuron(int64_t n_neurons, const std::vector<uint64_t>& keys, const std::vector<int64_t>& count,
                       const std::vector<double>& sum);

// Open-addressing hash table keyed by feature * n_neurons + neuron.
class HashCells {
 public:
  HashCells();
  void add(uint64_t key, int64_t count, double sum) {
    if (full()) rehash(1);
    for (uint64_t i = slot_of(key);; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.key == key) {
        s.count += count;
        s.sum += sum;
        return;
      }
      if (s.key == kEmpty) {
        s = Slot{key, count, sum};
        ++size_;
        return;
      }
    }
  }
  // Whether the next new key makes the table grow (it keeps at least half
  // of its slots empty).
  bool full() const { return (size_ + 1) * 2 > mask_ + 1; }
  // Grows, in one step, to room for `more` new keys (at least one doubling).
  void reserve(std::size_t more);
  // Starts loading the slot where a key's probe begins (adds are random
  // accesses to a table that is out of cache after a batch's stream).
  void prefetch(uint64_t key) const { __builtin_prefetch(&slots_[slot_of(key)], 1, 3); }
  template <class F>
  void for_each(F&& f) const {
    for (uint64_t i = 0; i <= mask_; ++i)
      if (slots_[i].key != kEmpty) f(slots_[i].key, slots_[i].count, slots_[i].sum);
  }
  std::size_t size() const { return size_; }
  std::size_t bytes() const { return slots_.size() * sizeof(Slot); }

 private:
  struct Slot {
    uint64_t key;
    int64_t count;
    double sum;
  };
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  uint64_t slot_of(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ull) >> shift_; }
  void rehash(unsigned doublings);

  std::vector<Slot> slots_;  // a power of two of them, then a spare that stays empty
  uint64_t mask_ = 0;        // that power of two - 1
  std::size_t size_ = 0;
  unsigned shift_ = 0;
};

// A zero-filled array from calloc. Large blocks come from the OS as
// untouched zero pages, so making a dense table costs nothing up front and
// it takes memory only where cells are used (a std::vector would write every
// byte when it is made).
template <class T>
class ZeroedArray {
 public:
  ZeroedArray() = default;
  explicit ZeroedArray(std::size_t n) : data_(static_cast<T*>(std::calloc(n ? n : 1, sizeof(T)))), size_(n) {
    if (!data_) throw std::bad_alloc();
  }
  ZeroedArray(ZeroedArray&& other) noexcept : data_(other.data_), size_(other.size_) {
    other.data_ = nullptr;
    other.size_ = 0;
  }
  ZeroedArray& operator=(ZeroedArray&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ZeroedArray(const ZeroedArray&) = delete;
  ZeroedArray& operator=(const ZeroedArray&) = delete;
  ~ZeroedArray() { std::free(data_); }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  std::size_t size() const { return size_; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

// The cells of one kind, split into kBuckets buckets that share no memory:
// threads can fill different buckets at once, and a bucket of a hash table
// (its own small table) stays in cache while its adds are made, which is
// several times faster than adds spread over one large table.
class CellTable {
 public:
  static constexpr int kBuckets = 64;

  // One add of a count of 1 and a value to a cell.
  struct Add {
    int32_t neuron;
    int32_t feature;
    float value;
  };
  // Which bucket a cell falls in. Dense: a contiguous range of features.
  // Hashed: a shard picked by a hash of the cell, which spreads even the
  // most frequent feature's cells. A small value, to copy into a loop.
  struct Buckets {
    uint64_t n_neurons;
    uint64_t scale;  // feature * scale >> 26 ~ feature * kBuckets / features, below 2^63
    bool dense;
    int operator()(int32_t neuron, int64_t feature) const {
      if (dense) return int((uint64_t(feature) * scale) >> 26);
      return int(mix(uint64_t(feature) * n_neurons + uint64_t(neuron)) >> 58);
    }
  };

  CellTable(int64_t n_neurons, int64_t n_features, bool dense);
  Buckets buckets() const { return Buckets{uint64_t(n_neurons_), bucket_scale_, dense_}; }
  void add(int32_t neuron, int64_t feature, int64_t count, double sum) {
    const uint64_t k = key(neuron, feature);
    if (dense_) {
      DenseCell& cell = dense_cells_[k];
      cell.count += count;
      cell.sum += sum;
    } else {
      shards_[size_t(buckets()(neuron, feature))].add(k, count, sum);
    }
  }
  void prefetch(int32_t neuron, int64_t feature) const {
    if (dense_) __builtin_prefetch(&dense_cells_[key(neuron, feature)], 1, 3);
  }
  // Adds that all fall in bucket b. Threads may fill different buckets at
  // once: buckets share no memory.
  void add_bucket(int b, const Add* adds, int64_t n);
  void merge(const CellTable& other);
  Cells sorted() const;
  bool dense() const { return dense_; }
  std::size_t bytes() const;

 private:
  uint64_t key(int32_t neuron, int64_t feature) const {
    return uint64_t(feature) * uint64_t(n_neurons_) + uint64_t(neuron);
  }
  // MurmurHash3's finaliser: independent of the multiplicative hash that
  // places a key within its shard.
  static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
  }

  int64_t n_neurons_;
  bool dense_;
  uint64_t bucket_scale_;
  struct DenseCell {  // count and sum on one cache line: one miss per add
    int64_t count;
    double sum;
  };
  ZeroedArray<DenseCell> dense_cells_;  // dense: [feature * n_neurons + neuron]
  std::vector<HashCells> shards_;       // hashed: one table per bucket
};

// Cache-line aligned storage, so that threads owning different slices of a
// row never write to the same line.
template <class T>
struct CacheAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlign); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const {
    return true;
  }
  template <class U>
  bool operator!=(const CacheAligned<U>&) const {
    return false;
  }
};

class FeatureRows {
 public:
  FeatureRows(int64_t n_neurons, int64_t n_features);
  // Row index of a feature, allocating a zero row on first sight. Not
  // thread-safe: rows are assigned before the parallel accumulation.
  int32_t row_for(int64_t feature);
  double* row(int32_t r) { return blocks_[size_t(r) / kBlockRows].data() + int64_t(size_t(r) % kBlockRows) * stride_; }
  const double* row(int32_t r) const {
    return blocks_[size_t(r) / kBlockRows].data() + int64_t(size_t(r) % kBlockRows) * stride_;
  }
  void merge(const FeatureRows& other);
  // out[n] += sum of all rows at n.
  void add_rows_to(double* out) const;
  // Cells of every seen feature; `freq` gives their counts.
  Cells sorted(const std::vector<int64_t>& freq) const;
  std::size_t bytes() const {
    return blocks_.size() * kBlockRows * size_t(stride_) * sizeof(double) + row_of_.size() * sizeof(int32_t);
  }

 private:
  int64_t n_neurons_;
  int64_t stride_;               // n_neurons rounded up to a cache line of doubles
  std::vector<int32_t> row_of_;  // feature -> row, -1 if unseen
  std::vector<int64_t> feature_of_;
  // Rows are allocated kBlockRows at a time: a new feature never moves the
  // rows seen before (one growing array copied up to its whole size on each
  // doubling, and held up to twice the memory its rows need).
  static constexpr size_t kBlockRows = 32;
  std::vector<std::vector<double, CacheAligned<double>>> blocks_;  // row r: blocks_[r / kBlockRows], then neuron
};

}  // namespace txray
