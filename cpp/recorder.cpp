#include "recorder.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "select.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace txray {

namespace {

// Winners of at most this many tokens are buffered between the selection
// and the accumulation phase; larger batches are recorded in chunks.
constexpr int64_t kWinnerBufferBytes = 64 << 20;

// Below this many activation values a pass runs on the calling thread: a
// batch from one forward pass of a small model takes about a millisecond,
// less than waking a thread team costs, and idle OpenMP threads spinning
// beside PyTorch's own pool slow the forward pass down.
constexpr int64_t kParallelValues = int64_t(1) << 22;

template <class E>
const typename E::storage* row_ptr(const ActivationView& a, int64_t t) {
  return static_cast<const typename E::storage*>(a.data) + t * a.row_stride;
}

std::string describe_nonfinite(const ActivationView& a, int64_t t) {
  return dispatch_dtype(a.dtype, [&](auto e) {
    using E = decltype(e);
    const int64_t n = first_nonfinite<E>(row_ptr<E>(a, t), a.cols, a.col_stride);
    const float x = E::load(row_ptr<E>(a, t)[n * a.col_stride]);
    std::ostringstream msg;
    msg << "activation of token " << t << " at neuron " << n << " is " << (std::isnan(x) ? "NaN" : "infinite")
        << "; activations must be finite";
    return msg.str();
  });
}

}  // namespace

Recorder::Recorder(int64_t n_neurons, std::vector<std::string> kind_names, std::vector<int64_t> vocab_sizes,
                   Mode mode, int k, int64_t dense_limit_bytes)
    : n_neurons_(n_neurons), kind_names_(std::move(kind_names)), vocab_sizes_(std::move(vocab_sizes)),
      mode_(mode), k_(mode == Mode::Max1 ? 1 : k), mass_(size_t(n_neurons), 0.0) {
  if (n_neurons < 1 || n_neurons > INT32_MAX) throw InputError("n_neurons must be between 1 and 2^31-1");
  if (kind_names_.size() != vocab_sizes_.size() || kind_names_.empty())
    throw InputError("need at least one feature kind, each with a vocabulary size");
  if (mode_ == Mode::TopK && (k_ < 1 || k_ > n_neurons))
    throw InputError("k must be between 1 and n_neurons (" + std::to_string(n_neurons) + ")");
  for (size_t i = 0; i < vocab_sizes_.size(); ++i) {
    const int64_t f = vocab_sizes_[i];
    if (f < 1 || f > INT32_MAX)
      throw InputError("vocabulary size of feature kind '" + kind_names_[i] + "' must be between 1 and 2^31-1");
    freq_.emplace_back(size_t(f), 0);
    if (mode_ == Mode::All) {
      rows_.emplace_back(n_neurons, f);
    } else {
      const bool dense = double(n_neurons) * double(f) * 16.0 <= double(dense_limit_bytes);
      cells_.emplace_back(n_neurons, f, dense);
    }
  }
}

std::vector<int64_t> Recorder::valid_tokens(int64_t rows, const uint8_t* mask) const {
  std::vector<int64_t> tokens;
  tokens.reserve(size_t(rows));
  for (int64_t t = 0; t < rows; ++t)
    if (!mask || mask[t]) tokens.push_back(t);
  return tokens;
}

void Recorder::check_features(const std::vector<int64_t>& tokens, const std::vector<const int64_t*>& features) const {
  for (size_t i = 0; i < features.size(); ++i) {
    const int64_t* ids = features[i];
    const uint64_t size = uint64_t(vocab_sizes_[i]);
    for (int64_t t : tokens) {
      if (uint64_t(ids[t]) >= size) {  // negative ids wrap to huge values
        std::ostringstream msg;
        msg << "feature '" << kind_names_[i] << "' of token " << t << " is " << ids[t] << ", outside its vocabulary [0, "
            << size << ")";
        throw InputError(msg.str());
      }
    }
  }
}

void Recorder::check_finite(const ActivationView& acts, const std::vector<int64_t>& tokens) const {
  const int64_t n = int64_t(tokens.size());
  const int64_t first_bad = dispatch_dtype(acts.dtype, [&](auto e) {
    using E = decltype(e);
    int64_t bad = n;
#pragma omp parallel for schedule(static) reduction(min : bad) if (n * acts.cols >= kParallelValues)
    for (int64_t i = 0; i < n; ++i)
      if (i < bad && !all_finite<E>(row_ptr<E>(acts, tokens[i]), acts.cols, acts.col_stride)) bad = i;
    return bad;
  });
  if (first_bad < n) throw InputError(describe_nonfinite(acts, tokens[first_bad]));
}

void Recorder::update(const ActivationView& acts, const uint8_t* mask, const std::vector<const int64_t*>& features) {
  if (acts.cols != n_neurons_) {
    throw InputError("activations have " + std::to_string(acts.cols) + " neurons, the recorder " +
                     std::to_string(n_neurons_));
  }
  if (features.size() != vocab_sizes_.size()) throw InputError("one feature array per feature kind is needed");
  const std::vector<int64_t> tokens = valid_tokens(acts.rows, mask);
  if (tokens.empty()) return;
  check_features(tokens, features);
  if (mode_ == Mode::All) {
    check_finite(acts, tokens);
    record_all(acts, tokens, features);
  } else {
    record_winners(acts, tokens, features);
  }
  for (size_t i = 0; i < features.size(); ++i)
    for (int64_t t : tokens) ++freq_[i][features[i][t]];
  tokens_ += int64_t(tokens.size());
}

// Modes max1 and topk: select the winners of every token in parallel, then
// add them to each kind's cells (one thread per kind).
void Recorder::record_winners(const ActivationView& acts, const std::vector<int64_t>& tokens,
                              const std::vector<const int64_t*>& features) {
  const int64_t n_tokens = int64_t(tokens.size());
  const int64_t chunk = std::max<int64_t>(1, kWinnerBufferBytes / int64_t(k_ * sizeof(Winner)));
  // With one chunk, a non-finite row is found before anything is added;
  // with several, a scan up front keeps the update all-or-nothing.
  if (n_tokens > chunk) check_finite(acts, tokens);
  std::vector<Winner> winners(size_t(std::min(chunk, n_tokens) * k_));

  for (int64_t begin = 0; begin < n_tokens; begin += chunk) {
    const int64_t end = std::min(n_tokens, begin + chunk);
    const int64_t first_bad = dispatch_dtype(acts.dtype, [&](auto e) {
      using E = decltype(e);
      int64_t bad = end;
#pragma omp parallel if ((end - begin) * n_neurons_ >= kParallelValues)
      {
        std::vector<float> buffer(static_cast<size_t>(n_neurons_));
        std::vector<int32_t> scratch;
#pragma omp for schedule(static) reduction(min : bad)
        for (int64_t i = begin; i < end; ++i) {
          const auto* src = row_ptr<E>(acts, tokens[i]);
          Winner* out = &winners[size_t((i - begin) * k_)];
          bool ok;
          if (k_ == 1 && acts.col_stride == 1) {
            ok = argmax_row<E>(src, n_neurons_, out);
          } else {
            ok = load_row<E>(src, n_neurons_, acts.col_stride, buffer.data());
            if (ok) topk_row(buffer.data(), n_neurons_, k_, out, scratch);
          }
          if (!ok && i < bad) bad = i;
        }
      }
      return bad;
    });
    if (first_bad < end) throw InputError(describe_nonfinite(acts, tokens[first_bad]));

    const int64_t n_kinds = int64_t(cells_.size());
#pragma omp parallel for schedule(dynamic, 1) if ((end - begin) * k_ >= kParallelValues / 64)
    for (int64_t kind = 0; kind < n_kinds; ++kind) {
      const int64_t* ids = features[kind];
      CellTable& table = cells_[kind];
      for (int64_t i = begin; i < end; ++i) {
        const int64_t f = ids[tokens[i]];
        const Winner* w = &winners[size_t((i - begin) * k_)];
        for (int j = 0; j < k_; ++j) table.add(w[j].neuron, f, 1, double(w[j].value));
      }
    }
    for (int64_t j = 0; j < (end - begin) * k_; ++j) mass_[winners[j].neuron] += double(winners[j].value);
  }
}

// Mode all: every neuron records every token. Threads split the neuron axis,
// so each owns a disjoint slice of every sum row. (The mass is not kept: it
// is the sum of any one kind's rows, see mass().) Tokens are
// visited grouped by their feature of the largest vocabulary: a run of one
// feature then updates a row that stays in cache, instead of one random row
// of a large table per token. Within a group tokens keep corpus order.
void Recorder::record_all(const ActivationView& acts, const std::vector<int64_t>& tokens,
                          const std::vector<const int64_t*>& features) {
  const size_t n_kinds = rows_.size();
  const size_t widest = size_t(std::max_element(vocab_sizes_.begin(), vocab_sizes_.end()) - vocab_sizes_.begin());
  std::vector<uint64_t> keyed(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) keyed[i] = (uint64_t(features[widest][tokens[i]]) << 32) | i;
  std::sort(keyed.begin(), keyed.end());

  const int64_t n_tokens = int64_t(tokens.size());
  std::vector<int64_t> order(static_cast<size_t>(n_tokens));
  std::vector<std::vector<int32_t>> row_of(n_kinds, std::vector<int32_t>(static_cast<size_t>(n_tokens)));
  for (int64_t i = 0; i < n_tokens; ++i) {
    order[i] = tokens[keyed[i] & 0xffffffffu];
    for (size_t kind = 0; kind < n_kinds; ++kind) row_of[kind][i] = rows_[kind].row_for(features[kind][order[i]]);
  }

  dispatch_dtype(acts.dtype, [&](auto e) {
    using E = decltype(e);
#pragma omp parallel if (n_tokens * n_neurons_ >= kParallelValues)
    {
#ifdef _OPENMP
      const int64_t n_threads = omp_get_num_threads(), me = omp_get_thread_num();
#else
      const int64_t n_threads = 1, me = 0;
#endif
      // Slices are multiples of 8 neurons: a cache line of doubles.
      const int64_t per = ((n_neurons_ + n_threads - 1) / n_threads + 7) / 8 * 8;
      const int64_t lo = std::min(n_neurons_, me * per), hi = std::min(n_neurons_, lo + per);
      std::vector<float> x(size_t(std::max<int64_t>(hi - lo, 0)));
      for (int64_t i = 0; i < n_tokens && lo < hi; ++i) {
        load_row<E>(row_ptr<E>(acts, order[i]) + lo * acts.col_stride, hi - lo, acts.col_stride, x.data());
        for (size_t kind = 0; kind < n_kinds; ++kind) {
          double* sum = rows_[kind].row(row_of[kind][i]);
          for (int64_t n = lo; n < hi; ++n) sum[n] += double(x[n - lo]);
        }
      }
    }
  });
}

void Recorder::merge(const Recorder& other) {
  if (other.n_neurons_ != n_neurons_ || other.vocab_sizes_ != vocab_sizes_ || other.kind_names_ != kind_names_ ||
      other.mode_ != mode_ || other.k_ != k_)
    throw InputError("cannot merge recorders with different neurons, feature kinds, vocabularies or modes");
  for (size_t i = 0; i < cells_.size(); ++i) cells_[i].merge(other.cells_[i]);
  for (size_t i = 0; i < rows_.size(); ++i) rows_[i].merge(other.rows_[i]);
  for (size_t i = 0; i < freq_.size(); ++i)
    for (size_t f = 0; f < freq_[i].size(); ++f) freq_[i][f] += other.freq_[i][f];
  for (size_t n = 0; n < mass_.size(); ++n) mass_[n] += other.mass_[n];  // zero in mode all
  tokens_ += other.tokens_;
}

std::vector<double> Recorder::mass() const {
  if (mode_ != Mode::All) return mass_;
  std::vector<double> mass(size_t(n_neurons_), 0.0);
  rows_[0].add_rows_to(mass.data());
  return mass;
}

Cells Recorder::cells(size_t kind) const {
  if (kind >= vocab_sizes_.size()) throw InputError("no such feature kind");
  return mode_ == Mode::All ? rows_[kind].sorted(freq_[kind]) : cells_[kind].sorted();
}

bool Recorder::dense(size_t kind) const { return mode_ == Mode::All || cells_.at(kind).dense(); }

size_t Recorder::bytes() const {
  size_t total = mass_.size() * sizeof(double);
  for (const auto& c : cells_) total += c.bytes();
  for (const auto& r : rows_) total += r.bytes();
  for (const auto& f : freq_) total += f.size() * sizeof(int64_t);
  return total;
}

}  // namespace txray
