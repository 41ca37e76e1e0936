// The recording engine: one fused pass per batch over a (tokens x neurons)
// activation matrix, accumulating per-(neuron, feature) counts and sums for
// every feature kind (DESIGN.md section 1).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "activations.hpp"
#include "cells.hpp"

namespace txray {

enum class Mode { Max1, TopK, All };

// Raised for anything the caller must fix; the bindings turn it into ValueError.
struct InputError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

class Recorder {
 public:
  Recorder(int64_t n_neurons, std::vector<std::string> kind_names, std::vector<int64_t> vocab_sizes,
           Mode mode, int k, int64_t dense_limit_bytes);

  // features[i] holds acts.rows contiguous ids of kind i; mask (may be null)
  // holds acts.rows bytes, 0 for tokens to skip. Either the whole batch is
  // recorded or, on an input error, nothing is.
  void update(const ActivationView& acts, const uint8_t* mask, const std::vector<const int64_t*>& features);
  void merge(const Recorder& other);

  Cells cells(size_t kind) const;
  const std::vector<int64_t>& frequencies(size_t kind) const { return freq_.at(kind); }
  std::vector<double> mass() const;
  int64_t tokens() const { return tokens_; }
  int64_t n_neurons() const { return n_neurons_; }
  bool dense(size_t kind) const;
  size_t bytes() const;

 private:
  std::vector<int64_t> valid_tokens(int64_t rows, const uint8_t* mask) const;
  void check_features(const std::vector<int64_t>& tokens, const std::vector<const int64_t*>& features) const;
  void check_finite(const ActivationView& acts, const std::vector<int64_t>& tokens) const;
  void record_winners(const ActivationView& acts, const std::vector<int64_t>& tokens,
                      const std::vector<const int64_t*>& features);
  void record_all(const ActivationView& acts, const std::vector<int64_t>& tokens,
                  const std::vector<const int64_t*>& features);

  int64_t n_neurons_;
  std::vector<std::string> kind_names_;
  std::vector<int64_t> vocab_sizes_;
  Mode mode_;
  int k_;
  std::vector<CellTable> cells_;     // max1, topk
  std::vector<FeatureRows> rows_;    // all
  std::vector<std::vector<int64_t>> freq_;
  std::vector<double> mass_;         // max1, topk
  int64_t tokens_ = 0;
};

}  // namespace txray
