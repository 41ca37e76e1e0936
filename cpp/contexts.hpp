// Top activating contexts: for each neuron, the k best (activation, unit)
// candidates seen so far, kept as a stream (docs/recording.md).
//
// Candidates are ordered by activation, highest first, and equal activations
// by unit, lowest first: a total order, so the top k of a stream does not
// depend on the order candidates arrive in, and the top k of two merged
// parts is exactly the top k of the whole. Each neuron keeps a heap of its k
// candidates with the worst on top, and a threshold (the worst kept
// activation, -inf while fewer than k are kept): a candidate below it costs
// one compare, which is what almost every candidate of a long corpus costs.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace txray {

// The kept candidates, neuron-major and best first within a neuron (rank 1
// is a neuron's highest activation); the layout of a profile's contexts table.
struct ContextTable {
  std::vector<int32_t> neuron;
  std::vector<int32_t> rank;
  std::vector<double> activation;
  std::vector<int64_t> unit;
};

class Contexts {
 public:
  Contexts(int64_t n_neurons, int k);

  int k() const { return k_; }
  // threshold()[n]: a candidate of neuron n with a lower activation is never kept.
  const float* threshold() const { return threshold_.data(); }

  // Offers one candidate; the inline test rejects almost all of them.
  void offer(int32_t neuron, float activation, int64_t unit) {
    if (activation < threshold_[size_t(neuron)]) return;
    insert(neuron, activation, unit);
  }

  // Offers every candidate of another stream (same neurons and k).
  void merge(const Contexts& other);
  ContextTable table() const;
  // Starts a batch of offers (an update): units() can then tell what it added.
  void next_batch() { ++batch_; }
  // The distinct units held by any neuron, ascending; with latest_batch, only
  // those that entered in the latest batch (a scan, no sort of every unit).
  std::vector<int64_t> units(bool latest_batch = false) const;
  // Sets mark[u - lo] for each unit u of [lo, lo + n) that some neuron holds
  // since the latest batch: a scan with no sort and no list, so that a caller
  // can OR the marks of several streams over a batch's span of units. Returns
  // how many such candidates (one per neuron holding it) fell outside [lo, lo + n),
  // unmarked.
  int64_t mark_latest(int64_t lo, int64_t n, uint8_t* mark) const;
  size_t bytes() const;

 private:
  struct Candidate {
    float activation;
    uint32_t batch;  // when it entered (wraps after 2^32 batches: harmless, see units())
    int64_t unit;
  };
  // The order of candidates: `a` ranks before `b`.
  static bool before(const Candidate& a, const Candidate& b) {
    return a.activation > b.activation || (a.activation == b.activation && a.unit < b.unit);
  }
  void insert(int32_t neuron, float activation, int64_t unit);

  int64_t n_neurons_;
  int k_;
  std::vector<Candidate> heap_;  // k per neuron; a neuron's first size_[n] are a heap, worst on top
  std::vector<int32_t> size_;
  std::vector<float> threshold_;
  uint32_t batch_ = 0;
};

}  // namespace txray
