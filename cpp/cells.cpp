#include "cells.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace txray {

// Small to start: a recorder has 64 of these per hashed kind.
HashCells::HashCells() : slots_(64 + 1, Slot{kEmpty, 0, 0.0}), mask_(63), shift_(64 - 6) {}

void HashCells::reserve(std::size_t more) {
  if (size_ >= more) return;
  unsigned doublings = 0;
  while ((size_ + more) * 2 > (mask_ + 1) << doublings) ++doublings;
  if (doublings > 0) rehash(doublings);
}

void HashCells::rehash(unsigned doublings) {
  std::vector<Slot> old(((mask_ + 1) << doublings) + 1, Slot{kEmpty, 0, 0.0});
  old.swap(slots_);
  shift_ -= doublings;
  mask_ = ((mask_ + 1) << doublings) - 1;
  // Old slots taken in order have increasing homes, so the writes are
  // nearly sequential. Keys are distinct: each goes to the first empty slot
  // from its home, no compare. An empty old slot is written to the spare
  // slot instead of being skipped: a branch on it would be mispredicted.
  const uint64_t spare = mask_ + 1;
  for (const Slot& s : old) {
    const bool used = s.key != kEmpty;
    uint64_t i = used ? slot_of(s.key) : spare;
    while (used && slots_[i].key != kEmpty) i = (i + 1) & mask_;
    slots_[i] = s;
  }
}

CellTable::CellTable(int64_t n_neurons, int64_t n_features, bool dense)
    : n_neurons_(n_neurons),
      dense_(dense),
      bucket_scale_((uint64_t(kBuckets) << 26) / uint64_t(n_features)) {
  if (dense_)
    dense_cells_ = ZeroedArray<DenseCell>(size_t(n_neurons) * size_t(n_features));
  else
    shards_.resize(kBuckets);
}

void CellTable::add_bucket(int b, const Add* adds, int64_t n) {
  constexpr int64_t kAhead = 32;  // adds between a prefetch and its use
  if (dense_) {
    for (int64_t i = 0; i < n; ++i) {
      if (i + kAhead < n) prefetch(adds[i + kAhead].neuron, adds[i + kAhead].feature);
      add(adds[i].neuron, adds[i].feature, 1, double(adds[i].value));
    }
  } else {  // the shard is known: no hash of the cell per add
    HashCells& shard = shards_[size_t(b)];
    shard.reserve(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      if (i + kAhead < n) shard.prefetch(key(adds[i + kAhead].neuron, adds[i + kAhead].feature));
      shard.add(key(adds[i].neuron, adds[i].feature), 1, double(adds[i].value));
    }
  }
}

void CellTable::merge(const CellTable& other) {
  if (dense_ && other.dense_) {
    for (size_t i = 0; i < dense_cells_.size(); ++i) {
      dense_cells_[i].count += other.dense_cells_[i].count;
      dense_cells_[i].sum += other.dense_cells_[i].sum;
    }
    return;
  }
  const Cells cells = other.sorted();
  for (size_t i = 0; i < cells.count.size(); ++i)
    add(cells.neuron[i], cells.feature[i], cells.count[i], cells.sum[i]);
}

// A counting sort by neuron, then each neuron's cells sorted by feature (a
// few hundred at most in practice, sorted on all threads): far cheaper than
// sorting every key of a large table at once.
Cells bucket_by_neuron(int64_t n_neurons, const std::vector<uint64_t>& keys, const std::vector<int64_t>& count,
                       const std::vector<double>& sum) {
  const int64_t n_cells = int64_t(keys.size());
  std::vector<int64_t> start(size_t(n_neurons) + 1, 0);
  for (uint64_t key : keys) ++start[key % uint64_t(n_neurons) + 1];
  std::partial_sum(start.begin(), start.end(), start.begin());
  struct Entry {
    int32_t feature;
    int64_t index;  // into keys, count and sum
  };
  std::vector<Entry> entries(static_cast<size_t>(n_cells));
  std::vector<int64_t> at(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < n_cells; ++i) {
    const uint64_t feature = keys[size_t(i)] / uint64_t(n_neurons);
    const int64_t n = int64_t(keys[size_t(i)] - feature * uint64_t(n_neurons));
    entries[size_t(at[size_t(n)]++)] = Entry{int32_t(feature), i};
  }
  Cells out;
  out.neuron.resize(size_t(n_cells));
  out.feature.resize(size_t(n_cells));
  out.count.resize(size_t(n_cells));
  out.sum.resize(size_t(n_cells));
#pragma omp parallel for schedule(dynamic, 16) if (n_cells >= (1 << 16))
  for (int64_t n = 0; n < n_neurons; ++n) {
    const auto first = entries.begin() + start[size_t(n)], last = entries.begin() + start[size_t(n) + 1];
    std::sort(first, last, [](const Entry& a, const Entry& b) { return a.feature < b.feature; });
    for (int64_t j = start[size_t(n)]; j < start[size_t(n) + 1]; ++j) {
      const Entry& e = entries[size_t(j)];
      out.neuron[size_t(j)] = int32_t(n);
      out.feature[size_t(j)] = e.feature;
      out.count[size_t(j)] = count[size_t(e.index)];
      out.sum[size_t(j)] = sum[size_t(e.index)];
    }
  }
  return out;
}

Cells CellTable::sorted() const {
  std::vector<uint64_t> keys;
  std::vector<int64_t> count;
  std::vector<double> sum;
  auto take = [&](uint64_t key, int64_t c, double s) {
    keys.push_back(key);
    count.push_back(c);
    sum.push_back(s);
  };
  if (dense_) {
    for (size_t key = 0; key < dense_cells_.size(); ++key)
      if (dense_cells_[key].count != 0) take(key, dense_cells_[key].count, dense_cells_[key].sum);
  } else {
    size_t n = 0;
    for (const HashCells& shard : shards_) n += shard.size();
    keys.reserve(n);
    count.reserve(n);
    sum.reserve(n);
    for (const HashCells& shard : shards_) shard.for_each(take);
  }
  return bucket_by_neuron(n_neurons_, keys, count, sum);
}

size_t CellTable::bytes() const {
  if (dense_) return dense_cells_.size() * sizeof(DenseCell);
  size_t total = 0;
  for (const HashCells& shard : shards_) total += shard.bytes();
  return total;
}

FeatureRows::FeatureRows(int64_t n_neurons, int64_t n_features)
    : n_neurons_(n_neurons), stride_((n_neurons + 7) / 8 * 8), row_of_(size_t(n_features), -1) {}

int32_t FeatureRows::row_for(int64_t feature) {
  int32_t& r = row_of_[feature];
  if (r < 0) {
    r = int32_t(feature_of_.size());
    feature_of_.push_back(feature);
    sums_.resize(sums_.size() + size_t(stride_), 0.0);
  }
  return r;
}

void FeatureRows::merge(const FeatureRows& other) {
  for (size_t r = 0; r < other.feature_of_.size(); ++r) {
    const double* src = other.sums_.data() + r * other.stride_;
    double* dst = row(row_for(other.feature_of_[r]));
    for (int64_t n = 0; n < n_neurons_; ++n) dst[n] += src[n];
  }
}

void FeatureRows::add_rows_to(double* out) const {
  for (size_t r = 0; r < feature_of_.size(); ++r) {
    const double* src = sums_.data() + r * stride_;
    for (int64_t n = 0; n < n_neurons_; ++n) out[n] += src[n];
  }
}

Cells FeatureRows::sorted(const std::vector<int64_t>& freq) const {
  std::vector<int64_t> features;
  for (size_t f = 0; f < row_of_.size(); ++f)
    if (row_of_[f] >= 0) features.push_back(int64_t(f));
  const size_t nf = features.size();
  Cells out;
  out.neuron.resize(nf * n_neurons_);
  out.feature.resize(nf * n_neurons_);
  out.count.resize(nf * n_neurons_);
  out.sum.resize(nf * n_neurons_);
  // A transpose from feature rows to neuron-major cells, in tiles of 16
  // neurons so that the lines being written stay in L1.
  constexpr int64_t kTile = 16;
#pragma omp parallel for schedule(static)
  for (int64_t n0 = 0; n0 < n_neurons_; n0 += kTile) {
    const int64_t n1 = std::min(n_neurons_, n0 + kTile);
    for (size_t j = 0; j < nf; ++j) {
      const double* src = sums_.data() + size_t(row_of_[features[j]]) * stride_;
      for (int64_t n = n0; n < n1; ++n) {
        const size_t at = size_t(n) * nf + j;
        out.neuron[at] = int32_t(n);
        out.feature[at] = int32_t(features[j]);
        out.count[at] = freq[features[j]];
        out.sum[at] = src[n];
      }
    }
  }
  return out;
}

}  // namespace txray
