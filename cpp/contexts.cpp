#include "contexts.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace txray {

Contexts::Contexts(int64_t n_neurons, int k)
    : n_neurons_(n_neurons),
      k_(k),
      heap_(size_t(n_neurons) * size_t(k)),
      size_(size_t(n_neurons), 0),
      threshold_(size_t(n_neurons), -INFINITY) {
  if (k < 1) throw std::invalid_argument("contexts k must be at least 1, not " + std::to_string(k));
}

// A heap ordered by `before` has on top the candidate nothing ranks after:
// the worst. A full neuron's newcomer replaces it if it ranks before it.
void Contexts::insert(int32_t neuron, float activation, int64_t unit) {
  Candidate* heap = heap_.data() + size_t(neuron) * size_t(k_);
  int32_t& size = size_[size_t(neuron)];
  const Candidate c{activation, batch_, unit};
  if (size < k_) {
    heap[size++] = c;
    std::push_heap(heap, heap + size, before);
  } else {
    if (!before(c, heap[0])) return;  // an equal activation with a higher unit
    std::pop_heap(heap, heap + size, before);
    heap[size - 1] = c;
    std::push_heap(heap, heap + size, before);
  }
  if (size == k_) threshold_[size_t(neuron)] = heap[0].activation;
}

void Contexts::merge(const Contexts& other) {
  if (other.n_neurons_ != n_neurons_ || other.k_ != k_)
    throw std::invalid_argument("cannot merge contexts of different neurons or k");
  for (int64_t n = 0; n < n_neurons_; ++n) {
    const Candidate* theirs = other.heap_.data() + size_t(n) * size_t(k_);
    for (int32_t i = 0; i < other.size_[size_t(n)]; ++i) offer(int32_t(n), theirs[i].activation, theirs[i].unit);
  }
}

ContextTable Contexts::table() const {
  ContextTable out;
  size_t total = 0;
  for (int32_t s : size_) total += size_t(s);
  out.neuron.reserve(total);
  out.rank.reserve(total);
  out.activation.reserve(total);
  out.unit.reserve(total);
  std::vector<Candidate> sorted;
  for (int64_t n = 0; n < n_neurons_; ++n) {
    const Candidate* heap = heap_.data() + size_t(n) * size_t(k_);
    sorted.assign(heap, heap + size_[size_t(n)]);
    std::sort(sorted.begin(), sorted.end(), before);
    for (size_t i = 0; i < sorted.size(); ++i) {
      out.neuron.push_back(int32_t(n));
      out.rank.push_back(int32_t(i + 1));
      out.activation.push_back(double(sorted[i].activation));
      out.unit.push_back(sorted[i].unit);
    }
  }
  return out;
}

// After 2^32 batches a candidate from long ago may count as the latest
// batch's: its unit is then reported once more, which costs a caller nothing.
std::vector<int64_t> Contexts::units(bool latest_batch) const {
  std::vector<int64_t> out;
  for (int64_t n = 0; n < n_neurons_; ++n) {
    const Candidate* heap = heap_.data() + size_t(n) * size_t(k_);
    for (int32_t i = 0; i < size_[size_t(n)]; ++i)
      if (!latest_batch || heap[i].batch == batch_) out.push_back(heap[i].unit);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

int64_t Contexts::mark_latest(int64_t lo, int64_t n, uint8_t* mark) const {
  int64_t outside = 0;
  for (int64_t nn = 0; nn < n_neurons_; ++nn) {
    const Candidate* heap = heap_.data() + size_t(nn) * size_t(k_);
    for (int32_t i = 0; i < size_[size_t(nn)]; ++i) {
      if (heap[i].batch != batch_) continue;
      const int64_t at = heap[i].unit - lo;
      if (at >= 0 && at < n)
        mark[at] = 1;
      else
        ++outside;
    }
  }
  return outside;
}

size_t Contexts::bytes() const {
  return heap_.size() * sizeof(Candidate) + size_.size() * sizeof(int32_t) + threshold_.size() * sizeof(float);
}

}  // namespace txray
