// The recording engine: one fused pass per batch over a (tokens x neurons)
// activation matrix, accumulating per-(neuron, feature) counts and sums for
// every feature kind (docs/method.md).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "activations.hpp"
#include "cells.hpp"
#include "contexts.hpp"
#include "select.hpp"
#include "shape.hpp"

namespace txray {

// Not synchronised itself: whoever shares one Recorder between threads holds
// mutex() around every call (the Python bindings do, with the GIL released).
class Recorder {
 public:
  // contexts_k: the top activating contexts kept per neuron (cpp/contexts.hpp); 0: none.
  Recorder(int64_t n_neurons, std::vector<std::string> kind_names, std::vector<int64_t> vocab_sizes, Mode mode, int k,
           int64_t dense_limit_bytes, int contexts_k = 0);

  // features[i] holds acts.rows contiguous ids of kind i; mask (may be null)
  // holds acts.rows bytes, 0 for tokens to skip. units (may be null) holds
  // acts.rows unit numbers for the contexts, a negative one for a row that is
  // no context; without it the recorded rows are numbered on from tokens().
  // Either the whole batch is recorded or, on an input error, nothing is.
  void update(const ActivationView& acts, const uint8_t* mask, const std::vector<const int64_t*>& features,
              const int64_t* units = nullptr);
  void merge(const Recorder& other);

  Cells cells(size_t kind) const;
  const std::vector<int64_t>& frequencies(size_t kind) const { return freq_.at(kind); }
  std::vector<double> mass() const;
  int64_t tokens() const { return tokens_; }
  int64_t n_neurons() const { return n_neurons_; }
  size_t n_kinds() const { return kind_names_.size(); }
  bool dense(size_t kind) const;
  const Contexts* contexts() const { return contexts_.get(); }  // null when not kept
  size_t bytes() const;
  std::mutex& mutex() const { return mutex_; }

 private:
  // The rows of a batch to record: every row, or the ones a mask keeps.
  struct Rows {
    std::vector<int64_t> kept;  // unused when every row is recorded
    int64_t size = 0;
    bool all = true;
    int64_t operator[](int64_t i) const { return all ? i : kept[size_t(i)]; }
  };
  static Rows rows_to_record(int64_t rows, const uint8_t* mask);
  void check_features(const Rows& rows, const std::vector<const int64_t*>& features) const;
  // Throws on the first row holding a non-finite value. Mode all with
  // contexts: candidate[i] = whether row i reaches some neuron's threshold.
  void check_finite(const ActivationView& acts, const Rows& rows, std::vector<uint8_t>* candidate = nullptr) const;
  void record_winners(const ActivationView& acts, const Rows& rows, const std::vector<const int64_t*>& features,
                      const int64_t* units);
  void select_winners(const ActivationView& acts, const Rows& rows, int64_t begin, int64_t end);
  void add_winners(const Rows& rows, int64_t begin, int64_t end, const std::vector<const int64_t*>& features,
                   const int64_t* units);
  void offer_winners(const Rows& rows, int64_t begin, int64_t end, const int64_t* units);
  static std::vector<int64_t> group_by_feature(const Rows& rows, const int64_t* ids, int64_t vocab);
  void record_all(const ActivationView& acts, const Rows& rows, const std::vector<const int64_t*>& features,
                  const int64_t* units, const std::vector<uint8_t>& candidate);
  // The unit of recorded row i (an index into rows) of this update.
  int64_t unit_of(const Rows& rows, int64_t i, const int64_t* units) const {
    return units ? units[rows[i]] : tokens_ + i;
  }

  int64_t n_neurons_;
  std::vector<std::string> kind_names_;
  std::vector<int64_t> vocab_sizes_;
  Mode mode_;
  int k_;
  std::vector<CellTable> cells_;   // max1, topk
  std::vector<FeatureRows> rows_;  // all
  std::vector<std::vector<int64_t>> freq_;
  std::vector<double> mass_;  // max1, topk
  int64_t tokens_ = 0;
  std::unique_ptr<Contexts> contexts_;
  // Scratch of record_winners, kept between batches (its size is bounded).
  std::vector<Winner> winners_;
  std::vector<CellTable::Add> adds_;
  std::vector<int64_t> offsets_;
  std::vector<double> mass_parts_;
  mutable std::mutex mutex_;
};

}  // namespace txray
