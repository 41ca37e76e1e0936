// The hot loops over activation rows, compiled once per x86 instruction set
// and chosen when the module loads (cpp/kernels.cpp), so that one portable
// build runs AVX-512 code where the CPU has it and AVX2 or baseline code
// elsewhere. Each kernel takes a whole range of rows: the choice costs one
// indirect call per thread and batch, not one per row.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "activations.hpp"
#include "cells.hpp"
#include "contexts.hpp"
#include "select.hpp"

namespace txray {
namespace kernels {

struct Kernels {
  const char* name;
  // Winners of rows [begin, end) (row i is kept[i], or i when kept is null)
  // into out[(i - begin) * k ...]: argmax for k == 1 and contiguous rows,
  // the top k straight from the row for k <= 16 and contiguous rows,
  // otherwise the top k via `buffer` (n_neurons floats) and `scratch`.
  // Returns the first row holding a non-finite value, or -1.
  int64_t (*select)(const ActivationView& acts, const int64_t* kept, int64_t begin, int64_t end, int k, Winner* out,
                    float* buffer, std::vector<int32_t>& scratch);
  // The first of rows [begin, end) holding a non-finite value, or -1.
  int64_t (*first_nonfinite_row)(const ActivationView& acts, const int64_t* kept, int64_t begin, int64_t end);
  // Mode all: for tokens i in [0, n_tokens), row order[i], neurons [lo, hi):
  // rows[kind].row(row_of[kind][i])[n] += activation, for every kind; `x`
  // holds hi - lo floats. With `contexts` (may be null), each activation is
  // also offered to its neuron as the context units[i] (none if negative).
  void (*add_all)(const ActivationView& acts, const int64_t* order, int64_t n_tokens, int64_t lo, int64_t hi,
                  FeatureRows* rows, const std::vector<int32_t>* row_of, size_t n_kinds, float* x, Contexts* contexts,
                  const int64_t* units);
  // Mode all's check before its adds: the first of rows [begin, end) holding
  // a non-finite value, or -1; with `threshold` (one per neuron, may be
  // null), candidate[i - begin] = whether any value of row i reaches its
  // neuron's threshold (whether the row can be a context of any neuron).
  int64_t (*check_all)(const ActivationView& acts, const int64_t* kept, int64_t begin, int64_t end,
                       const float* threshold, uint8_t* candidate);
  // Sum of rows [begin, end), each read as select reads it for k == 1 (the
  // benchmark's floor: a read with the argmax's prefetching and nothing else).
  double (*sum_rows)(const ActivationView& acts, int64_t begin, int64_t end);
};

// The kernels in use: the best the CPU runs, or TXRAY_SIMD's choice.
const Kernels& active();
// The name of the kernels in use: "avx512", "avx2", "baseline" (a portable
// build on x86-64), or "native" (built with -march=native: one set).
std::string active_name();
// The sets this build has and this CPU runs, best first.
std::vector<std::string> available();
// Switches to a set by name (tests compare them); throws std::invalid_argument
// for a name not in available().
void use(const std::string& name);

}  // namespace kernels
}  // namespace txray
