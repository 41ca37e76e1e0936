#include "cells.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace txray {

// Small to start: a recorder has 64 of these per hashed kind.
HashCells::HashCells() : slots_(64 + 1, Slot{kEmpty, 0, 0.0}), mask_(63), shift_(64 - 6) {}

void HashCells::reserve(std::size_t more) {
  unsigned doublings = 1;
  while ((size_ + more) * 2 > (mask_ + 1) << doublings) ++doublings;
  rehash(doublings);
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
    : n_neurons_(n_neurons), dense_(dense), bucket_scale_((uint64_t(kBuckets) << 26) / uint64_t(n_features)) {
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
    const size_t size_before = shard.size();
    for (int64_t i = 0; i < n; ++i) {
      // A shard that must grow makes room at once for the new cells the
      // rest of the bucket should bring at the rate seen so far, up to 4x
      // its size in one step (an early rate is a guess): a young table
      // grows a few times per bucket instead of once per doubling, and
      // memory still follows the cells, not the adds.
      if (shard.full()) {
        const size_t expected = (shard.size() - size_before) * size_t(n - i) / size_t(std::max<int64_t>(i, 1));
        shard.reserve(std::max<size_t>(1, std::min(expected, 3 * shard.size())));
      }
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
  for (size_t i = 0; i < cells.count.size(); ++i) add(cells.neuron[i], cells.feature[i], cells.count[i], cells.sum[i]);
}

// Radix sorts (counting sorts on a feature's digits, then on the neuron):
// several times faster than a comparison sort of a large table's keys.
Cells bucket_by_neuron(int64_t n_neurons, const std::vector<uint64_t>& keys, const std::vector<int64_t>& count,
                       const std::vector<double>& sum) {
  const int64_t n_cells = int64_t(keys.size());
  const bool parallel = n_cells >= (1 << 16);
  std::vector<int32_t> neuron(static_cast<size_t>(n_cells)), feature(static_cast<size_t>(n_cells));
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t i = 0; i < n_cells; ++i) {  // divisions are slow: one per key, on all threads
    const uint64_t f = keys[size_t(i)] / uint64_t(n_neurons);
    feature[size_t(i)] = int32_t(f);
    neuron[size_t(i)] = int32_t(keys[size_t(i)] - f * uint64_t(n_neurons));
  }
  // Stable counting sorts, least significant digit first: by feature in
  // 16-bit digits (a vocabulary may have 2^31 words), then by neuron.
  std::vector<int64_t> order(static_cast<size_t>(n_cells));
  std::iota(order.begin(), order.end(), int64_t(0));
  auto stable_by = [&](int64_t n_digits, auto digit) {
    std::vector<int64_t> at(size_t(n_digits) + 1, 0);
    for (int64_t i = 0; i < n_cells; ++i) ++at[size_t(digit(i)) + 1];
    std::partial_sum(at.begin(), at.end(), at.begin());
    std::vector<int64_t> sorted(order.size());
    for (int64_t i : order) sorted[size_t(at[size_t(digit(i))]++)] = i;
    order.swap(sorted);
  };
  const int32_t top = n_cells ? *std::max_element(feature.begin(), feature.end()) : 0;
  if (top < (1 << 16)) {
    stable_by(top + 1, [&](int64_t i) { return feature[size_t(i)]; });
  } else {
    stable_by(1 << 16, [&](int64_t i) { return feature[size_t(i)] & 0xffff; });
    stable_by((top >> 16) + 1, [&](int64_t i) { return feature[size_t(i)] >> 16; });
  }
  stable_by(n_neurons, [&](int64_t i) { return neuron[size_t(i)]; });
  Cells out;
  out.neuron.resize(size_t(n_cells));
  out.feature.resize(size_t(n_cells));
  out.count.resize(size_t(n_cells));
  out.sum.resize(size_t(n_cells));
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t j = 0; j < n_cells; ++j) {
    const size_t i = size_t(order[size_t(j)]);
    out.neuron[size_t(j)] = neuron[i];
    out.feature[size_t(j)] = feature[i];
    out.count[size_t(j)] = count[i];
    out.sum[size_t(j)] = sum[i];
  }
  return out;
}

Cells CellTable::sorted() const {
  std::vector<uint64_t> keys;
  std::vector<int64_t> count;
  std::vector<double> sum;
  if (dense_) {
    for (size_t key = 0; key < dense_cells_.size(); ++key) {
      if (dense_cells_[key].count == 0) continue;
      keys.push_back(key);
      count.push_back(dense_cells_[key].count);
      sum.push_back(dense_cells_[key].sum);
    }
  } else {  // the shards side by side, on all threads
    std::vector<size_t> first(shards_.size() + 1, 0);
    for (size_t b = 0; b < shards_.size(); ++b) first[b + 1] = first[b] + shards_[b].size();
    keys.resize(first.back());
    count.resize(first.back());
    sum.resize(first.back());
#pragma omp parallel for schedule(dynamic, 1) if (first.back() >= (1 << 16))
    for (size_t b = 0; b < shards_.size(); ++b) {
      size_t at = first[b];
      shards_[b].for_each([&](uint64_t key, int64_t c, double s) {
        keys[at] = key;
        count[at] = c;
        sum[at++] = s;
      });
    }
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
    if (size_t(r) % kBlockRows == 0) blocks_.emplace_back(kBlockRows * size_t(stride_), 0.0);
  }
  return r;
}

void FeatureRows::merge(const FeatureRows& other) {
  for (size_t r = 0; r < other.feature_of_.size(); ++r) {
    const double* src = other.row(int32_t(r));
    double* dst = row(row_for(other.feature_of_[r]));
    for (int64_t n = 0; n < n_neurons_; ++n) dst[n] += src[n];
  }
}

void FeatureRows::add_rows_to(double* out) const {
  for (size_t r = 0; r < feature_of_.size(); ++r) {
    const double* src = row(int32_t(r));
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
      const double* src = row(row_of_[features[j]]);
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
