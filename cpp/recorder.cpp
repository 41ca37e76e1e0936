#include "recorder.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels.hpp"
#include "select.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace txray {

namespace {

// Winners (and their adds) of at most this many bytes are buffered between
// the selection and the accumulation phase; larger batches go in chunks.
constexpr int64_t kScratchBytes = 64 << 20;
constexpr size_t kKeptScratchBytes = 16 << 20;

// A dense table of at most this many bytes stays in cache while a batch's
// adds are made to it one after another, so they need no sorting.
constexpr int64_t kSmallTableBytes = 4 << 20;

// Below this many activation values a pass runs on the calling thread: a
// batch from one forward pass of a small model takes about a millisecond,
// less than waking a thread team costs, and idle OpenMP threads spinning
// beside PyTorch's own pool slow the forward pass down.
constexpr int64_t kParallelValues = int64_t(1) << 22;

template <class E>
const typename E::storage* row_ptr(const ActivationView& a, int64_t t) {
  return static_cast<const typename E::storage*>(a.data) + t * a.row_stride;
}

// The calling thread's contiguous share [lo, hi) of n items (inside an
// OpenMP parallel region; the whole range outside one), as schedule(static).
struct Share {
  int64_t lo, hi;
};
Share my_share(int64_t n) {
#ifdef _OPENMP
  const int64_t n_threads = omp_get_num_threads(), me = omp_get_thread_num();
#else
  const int64_t n_threads = 1, me = 0;
#endif
  return Share{n * me / n_threads, n * (me + 1) / n_threads};
}

InputError nonfinite(const ActivationView& a, int64_t t) {
  return dispatch_dtype(a.dtype, [&](auto e) {
    using E = decltype(e);
    const int64_t n = first_nonfinite<E>(row_ptr<E>(a, t), a.cols, a.col_stride);
    const float x = E::load(row_ptr<E>(a, t)[n * a.col_stride]);
    return nonfinite_error(t, n, std::isnan(x));
  });
}

}  // namespace

Recorder::Recorder(int64_t n_neurons, std::vector<std::string> kind_names, std::vector<int64_t> vocab_sizes, Mode mode,
                   int k, int64_t dense_limit_bytes, int contexts_k)
    : n_neurons_(n_neurons),
      kind_names_(std::move(kind_names)),
      vocab_sizes_(std::move(vocab_sizes)),
      mode_(mode),
      k_(mode == Mode::Max1 ? 1 : k),
      mass_(size_t(n_neurons), 0.0) {
  validate_shape(n_neurons, kind_names_, vocab_sizes_, mode_, k_);
  if (contexts_k < 0) throw InputError("contexts must be 0 (none) or a positive number per neuron");
  if (contexts_k > 0) contexts_ = std::make_unique<Contexts>(n_neurons, contexts_k);
  for (size_t i = 0; i < vocab_sizes_.size(); ++i) {
    const int64_t f = vocab_sizes_[i];
    freq_.emplace_back(size_t(f), 0);
    if (mode_ == Mode::All) {
      rows_.emplace_back(n_neurons, f);
    } else {
      cells_.emplace_back(n_neurons, f, fits_dense(n_neurons, f, mode_, dense_limit_bytes));
    }
  }
}

Recorder::Rows Recorder::rows_to_record(int64_t rows, const uint8_t* mask) {
  Rows out;
  out.size = rows;
  if (!mask) return out;
  out.all = false;
  out.kept.reserve(size_t(rows));
  for (int64_t t = 0; t < rows; ++t)
    if (mask[t]) out.kept.push_back(t);
  out.size = int64_t(out.kept.size());
  return out;
}

void Recorder::check_features(const Rows& rows, const std::vector<const int64_t*>& features) const {
  const int64_t n = rows.size;
  int64_t first_bad = n;
#pragma omp parallel for schedule(static) \
    reduction(min : first_bad) if (n * int64_t(features.size()) >= kParallelValues / 64)
  for (int64_t i = 0; i < n; ++i) {
    for (size_t kind = 0; kind < features.size(); ++kind)  // negative ids wrap to huge values
      if (uint64_t(features[kind][rows[i]]) >= uint64_t(vocab_sizes_[kind]) && i < first_bad) first_bad = i;
  }
  if (first_bad == n) return;
  const int64_t t = rows[first_bad];
  for (size_t kind = 0; kind < features.size(); ++kind) {
    const int64_t id = features[kind][t];
    if (uint64_t(id) >= uint64_t(vocab_sizes_[kind])) throw bad_id_error(kind_names_[kind], t, id, vocab_sizes_[kind]);
  }
}

void Recorder::check_finite(const ActivationView& acts, const Rows& rows, std::vector<uint8_t>* candidate) const {
  const int64_t n = rows.size;
  const kernels::Kernels& kern = kernels::active();
  const int64_t* kept = rows.all ? nullptr : rows.kept.data();
  const float* threshold = candidate && contexts_ ? contexts_->threshold() : nullptr;
  if (threshold) candidate->resize(size_t(n));
  int64_t first_bad = n;
#pragma omp parallel reduction(min : first_bad) if (n * acts.cols >= kParallelValues)
  {
    const Share share = my_share(n);
    const int64_t bad = mode_ == Mode::All ? kern.check_all(acts, kept, share.lo, share.hi, threshold,
                                                            threshold ? candidate->data() + share.lo : nullptr)
                                           : kern.first_nonfinite_row(acts, kept, share.lo, share.hi);
    if (bad >= 0) first_bad = bad;
  }
  if (first_bad < n) throw nonfinite(acts, rows[first_bad]);
}

void Recorder::update(const ActivationView& acts, const uint8_t* mask, const std::vector<const int64_t*>& features,
                      const int64_t* units) {
  if (acts.cols != n_neurons_) {
    throw InputError("activations have " + std::to_string(acts.cols) + " neurons, the recorder " +
                     std::to_string(n_neurons_));
  }
  if (features.size() != vocab_sizes_.size()) throw InputError("one feature array per feature kind is needed");
  const Rows rows = rows_to_record(acts.rows, mask);
  if (contexts_) contexts_->next_batch();
  if (rows.size == 0) return;
  if (mode_ == Mode::All) {
    check_features(rows, features);
    std::vector<uint8_t> candidate;  // with contexts: whether row i can be a context of any neuron
    check_finite(acts, rows, &candidate);
    record_all(acts, rows, features, units, candidate);
    for (size_t kind = 0; kind < features.size(); ++kind)
      for (int64_t i = 0; i < rows.size; ++i) ++freq_[kind][features[kind][rows[i]]];
  } else {
    record_winners(acts, rows, features, units);  // checks and counts the features too
  }
  tokens_ += rows.size;
}

// Modes max1 and topk, in two phases per chunk of tokens: select every
// token's winners (a pure stream over the activations, at memory speed),
// then add them to the cells. Nothing is added before the whole chunk is
// checked, and with several chunks every row is checked up front. With one
// chunk the features are checked after the selection: the adds read them
// next, from cache (a check before it would read them from memory twice).
void Recorder::record_winners(const ActivationView& acts, const Rows& rows, const std::vector<const int64_t*>& features,
                              const int64_t* units) {
  const int64_t per_token = k_ * int64_t(sizeof(Winner) + cells_.size() * sizeof(CellTable::Add));
  const int64_t chunk = std::max<int64_t>(1, kScratchBytes / per_token);
  const bool chunked = rows.size > chunk;
  if (chunked) {
    check_features(rows, features);
    check_finite(acts, rows);
  }
  for (int64_t begin = 0; begin < rows.size; begin += chunk) {
    const int64_t end = std::min(rows.size, begin + chunk);
    select_winners(acts, rows, begin, end);
    if (!chunked) check_features(rows, features);
    add_winners(rows, begin, end, features, units);
  }
  // Scratch is kept for the next batch, unless it is large: a model
  // recorded layer by layer holds one recorder per layer.
  if (winners_.capacity() * sizeof(Winner) + adds_.capacity() * sizeof(CellTable::Add) > kKeptScratchBytes) {
    std::vector<Winner>().swap(winners_);
    std::vector<CellTable::Add>().swap(adds_);
  }
}

void Recorder::select_winners(const ActivationView& acts, const Rows& rows, int64_t begin, int64_t end) {
  winners_.resize(size_t((end - begin) * k_));
  const kernels::Kernels& kern = kernels::active();  // one indirect call per thread, not per row
  const int64_t* kept = rows.all ? nullptr : rows.kept.data();
  int64_t first_bad = end;
#pragma omp parallel reduction(min : first_bad) if ((end - begin) * n_neurons_ >= kParallelValues)
  {
    std::vector<float> buffer(static_cast<size_t>(n_neurons_));
    std::vector<int32_t> scratch;
    const Share share = my_share(end - begin);
    const int64_t lo = begin + share.lo, hi = begin + share.hi;
    const int64_t bad =
        kern.select(acts, kept, lo, hi, k_, winners_.data() + (lo - begin) * k_, buffer.data(), scratch);
    if (bad >= 0) first_bad = bad;
  }
  if (first_bad < end) throw nonfinite(acts, rows[first_bad]);
}

// Adds the winners of tokens [begin, end) to every kind's cells. A small
// dense table (it stays in cache) takes its adds straight from the winners,
// on one thread. Any other table gets them sorted by bucket first (a
// counting sort: each thread counts, then places, the adds of its share of
// the tokens, so that a bucket keeps token order), then threads take whole
// buckets: no two threads touch the same memory, and a hashed bucket's
// table stays in cache while it is filled. Feature counts and the neurons'
// mass are kept alongside, and the winners are offered to the contexts (a
// task of its own, first, as it is the longest).
void Recorder::add_winners(const Rows& rows, int64_t begin, int64_t end, const std::vector<const int64_t*>& features,
                           const int64_t* units) {
  constexpr int64_t B = CellTable::kBuckets;
  const int64_t n_kinds = int64_t(cells_.size()), k = k_;
  const int64_t n_tokens = end - begin, n_winners = n_tokens * k;
  const bool parallel = n_winners >= kParallelValues / 64;
#ifdef _OPENMP
  const int64_t max_threads = parallel ? omp_get_max_threads() : 1;
#else
  const int64_t max_threads = 1;
#endif
  std::vector<int64_t> small, sorted;  // kinds
  for (int64_t kind = 0; kind < n_kinds; ++kind) {
    const CellTable& table = cells_[size_t(kind)];
    (table.dense() && table.bytes() <= kSmallTableBytes ? small : sorted).push_back(kind);
  }
  const int64_t n_small = int64_t(small.size()), n_sorted = int64_t(sorted.size());
  adds_.resize(size_t(n_sorted * n_winners));
  offsets_.assign(size_t(max_threads * n_sorted * B), 0);
  mass_parts_.assign(size_t(max_threads * n_neurons_), 0.0);
  const Winner* winners = winners_.data();
  CellTable::Add* adds = adds_.data();
  int64_t* offsets = offsets_.data();

#pragma omp parallel if (parallel)
  {
#ifdef _OPENMP
    const int64_t n_threads = omp_get_num_threads(), me = omp_get_thread_num();
#else
    const int64_t n_threads = 1, me = 0;
#endif
    const int64_t lo = n_tokens * me / n_threads, hi = n_tokens * (me + 1) / n_threads;
    // Calls visit(offsets of this thread's buckets, bucket, winner, feature)
    // for every winner of this thread's tokens, kind by kind.
    auto for_each_winner = [&](auto&& visit) {
      for (int64_t s = 0; s < n_sorted; ++s) {
        const CellTable::Buckets bucket = cells_[size_t(sorted[s])].buckets();
        const int64_t* ids = features[size_t(sorted[s])];
        int64_t* mine = offsets + (me * n_sorted + s) * B;
        for (int64_t i = lo; i < hi; ++i) {
          const int64_t f = ids[rows[begin + i]];
          for (int64_t j = i * k; j < (i + 1) * k; ++j) visit(mine, bucket(winners[j].neuron, f), winners[j], f);
        }
      }
    };
    double* mass = &mass_parts_[size_t(me * n_neurons_)];
    for (int64_t j = lo * k; j < hi * k; ++j) mass[winners[j].neuron] += double(winners[j].value);
    for_each_winner([](int64_t* count, int b, const Winner&, int64_t) { ++count[b]; });
#pragma omp barrier
#pragma omp single
    {  // counts become where each thread's share of each bucket starts
      for (int64_t s = 0; s < n_sorted; ++s) {
        int64_t at = s * n_winners;
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t th = 0; th < n_threads; ++th) {
            int64_t& slot = offsets[(th * n_sorted + s) * B + b];
            const int64_t count = slot;
            slot = at;
            at += count;
          }
        }
      }
    }  // (implicit barrier)
    for_each_winner([adds](int64_t* at, int b, const Winner& w, int64_t f) {
      adds[at[b]++] = CellTable::Add{w.neuron, int32_t(f), w.value};
    });
#pragma omp barrier
    // Now the last thread's offset of a bucket is where the bucket ends.
    const int64_t* ends = offsets + (n_threads - 1) * n_sorted * B;
    // Tasks: the contexts, each small table whole, each kind's feature counts
    // (one task: hashed buckets share features), then the buckets.
    const int64_t first_task = contexts_ ? -1 : 0;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = first_task; task < n_small + n_kinds + n_sorted * B; ++task) {
      if (task < 0) {
        offer_winners(rows, begin, end, units);
      } else if (task < n_small) {
        CellTable& table = cells_[size_t(small[task])];
        const int64_t* ids = features[size_t(small[task])];
        constexpr int64_t kAhead = 32;  // tokens between a prefetch and its use
        for (int64_t i = begin; i < end; ++i) {
          if (i + kAhead < end) table.prefetch(winners[(i + kAhead - begin) * k].neuron, ids[rows[i + kAhead]]);
          const int64_t f = ids[rows[i]];
          for (int64_t j = (i - begin) * k; j < (i - begin + 1) * k; ++j)
            table.add(winners[j].neuron, f, 1, double(winners[j].value));
        }
      } else if (task < n_small + n_kinds) {
        const int64_t kind = task - n_small;
        int64_t* freq = freq_[size_t(kind)].data();
        const int64_t* ids = features[size_t(kind)];
        for (int64_t i = begin; i < end; ++i) ++freq[ids[rows[i]]];
      } else {
        const int64_t s = (task - n_small - n_kinds) / B, b = (task - n_small - n_kinds) % B;
        const int64_t first = b == 0 ? s * n_winners : ends[s * B + b - 1];
        cells_[size_t(sorted[s])].add_bucket(int(b), adds + first, ends[s * B + b] - first);
      }
    }
  }
  for (int64_t th = 0; th < max_threads; ++th)
    for (int64_t n = 0; n < n_neurons_; ++n) mass_[size_t(n)] += mass_parts_[size_t(th * n_neurons_ + n)];
}

// A winner is a candidate context of its neuron. Almost every offer ends at
// the neuron's threshold, one compare.
void Recorder::offer_winners(const Rows& rows, int64_t begin, int64_t end, const int64_t* units) {
  Contexts& contexts = *contexts_;
  const int64_t k = k_;
  const Winner* winners = winners_.data();
  for (int64_t i = begin; i < end; ++i) {
    const int64_t unit = unit_of(rows, i, units);
    if (unit < 0) continue;
    for (int64_t j = (i - begin) * k; j < (i - begin + 1) * k; ++j)
      contexts.offer(winners[j].neuron, winners[j].value, unit);
  }
}

// The indices [0, n) of rows grouped by their feature (ids[rows[i]]), in
// increasing feature order and, within a feature, in increasing index: a
// counting sort when the vocabulary is not much larger than the batch (the
// counts then cost less than a comparison sort of the batch), else a sort.
std::vector<int64_t> Recorder::group_by_feature(const Rows& rows, const int64_t* ids, int64_t vocab) {
  const int64_t n = rows.size;
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (vocab <= 4 * n + 4096) {
    std::vector<int64_t> at(size_t(vocab) + 1, 0);
    for (int64_t i = 0; i < n; ++i) ++at[size_t(ids[rows[i]]) + 1];
    for (int64_t f = 0; f < vocab; ++f) at[size_t(f) + 1] += at[size_t(f)];
    for (int64_t i = 0; i < n; ++i) out[size_t(at[size_t(ids[rows[i]])]++)] = i;
    return out;
  }
  std::vector<uint64_t> keyed(static_cast<size_t>(n));  // feature, then index: both below 2^32
  for (int64_t i = 0; i < n; ++i) keyed[size_t(i)] = (uint64_t(ids[rows[i]]) << 32) | uint64_t(i);
  std::sort(keyed.begin(), keyed.end());
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = int64_t(keyed[size_t(i)] & 0xffffffffu);
  return out;
}

// Mode all: every neuron records every token. Threads split the neuron axis,
// so each owns a disjoint slice of every sum row. (The mass is not kept: it
// is the sum of any one kind's rows, see mass().) Tokens are
// visited grouped by their feature of the largest vocabulary: a run of one
// feature then updates a row that stays in cache, instead of one random row
// of a large table per token. Within a group tokens keep corpus order.
// Every row is a candidate context of every neuron: each thread offers its
// neurons' values of the rows it loads anyway (the top k does not depend on
// the order of the offers), of the rows that the check found reaching some
// neuron's threshold (`candidate`): the others cannot be kept.
void Recorder::record_all(const ActivationView& acts, const Rows& tokens, const std::vector<const int64_t*>& features,
                          const int64_t* units, const std::vector<uint8_t>& candidate) {
  const size_t n_kinds = rows_.size();
  const size_t widest = size_t(std::max_element(vocab_sizes_.begin(), vocab_sizes_.end()) - vocab_sizes_.begin());
  const int64_t n_tokens = tokens.size;
  const std::vector<int64_t> grouped = group_by_feature(tokens, features[widest], vocab_sizes_[widest]);

  std::vector<int64_t> order(static_cast<size_t>(n_tokens));
  std::vector<std::vector<int32_t>> row_of(n_kinds, std::vector<int32_t>(static_cast<size_t>(n_tokens)));
  std::vector<int64_t> unit_of_order(contexts_ ? size_t(n_tokens) : 0);
  for (int64_t i = 0; i < n_tokens; ++i) {
    const int64_t kept = grouped[size_t(i)];
    order[i] = tokens[kept];
    for (size_t kind = 0; kind < n_kinds; ++kind) row_of[kind][i] = rows_[kind].row_for(features[kind][order[i]]);
    if (contexts_) unit_of_order[i] = candidate[size_t(kept)] ? unit_of(tokens, kept, units) : -1;
  }

  const kernels::Kernels& kern = kernels::active();
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
    if (lo < hi)
      kern.add_all(acts, order.data(), n_tokens, lo, hi, rows_.data(), row_of.data(), n_kinds, x.data(),
                   contexts_.get(), unit_of_order.data());
  }
}

void Recorder::merge(const Recorder& other) {
  if (other.n_neurons_ != n_neurons_ || other.vocab_sizes_ != vocab_sizes_ || other.kind_names_ != kind_names_ ||
      other.mode_ != mode_ || other.k_ != k_)
    throw InputError("cannot merge recorders with different neurons, feature kinds, vocabularies or modes");
  if ((contexts_ ? contexts_->k() : 0) != (other.contexts_ ? other.contexts_->k() : 0))
    throw InputError("cannot merge recorders that keep different numbers of contexts");
  // Every count is at most the token count, so this one check keeps them all from wrapping
  // (merging two recorders into each other in turn doubles it each time).
  if (other.tokens_ > std::numeric_limits<int64_t>::max() - tokens_)
    throw InputError("cannot merge: the token count would overflow int64 (" + std::to_string(tokens_) + " + " +
                     std::to_string(other.tokens_) + ")");
  for (size_t i = 0; i < cells_.size(); ++i) cells_[i].merge(other.cells_[i]);
  for (size_t i = 0; i < rows_.size(); ++i) rows_[i].merge(other.rows_[i]);
  for (size_t i = 0; i < freq_.size(); ++i)
    for (size_t f = 0; f < freq_[i].size(); ++f) freq_[i][f] += other.freq_[i][f];
  for (size_t n = 0; n < mass_.size(); ++n) mass_[n] += other.mass_[n];  // zero in mode all
  if (contexts_) contexts_->merge(*other.contexts_);
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

bool Recorder::dense(size_t kind) const {
  return mode_ == Mode::All || cells_.at(kind).dense();
}

size_t Recorder::bytes() const {
  size_t total = mass_.size() * sizeof(double);
  for (const auto& c : cells_) total += c.bytes();
  for (const auto& r : rows_) total += r.bytes();
  for (const auto& f : freq_) total += f.size() * sizeof(int64_t);
  if (contexts_) total += contexts_->bytes();
  return total;
}

}  // namespace txray
