// The recording engine on a CUDA device: txray::cuda::DeviceRecorder (see
// device_recorder.hpp for the semantics).
//
// Per update, on the caller's stream, with no host synchronisation:
//   max1 / topk:  select_kernel (select.cuh: one warp per token: finiteness
//                 and id checks, then the winners) -> a (tokens x k) winner
//                 list, then accumulate_winners (accumulate.cuh: one thread
//                 per winner: atomics into the dense cells or the device hash
//                 table, mass, frequencies, token count).
//   all:          select_kernel with k = 0 (checks only), bookkeep_all
//                 (frequencies, tokens, row assignment for sparse kinds),
//                 accumulate_all (threads along the neuron axis, float64
//                 atomics into the feature's row).
// The check runs before anything is added, so an update is all-or-nothing;
// the first error is kept in device memory (errors.cuh) and every later
// update is skipped until take_error() clears it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>

#include "accumulate.cuh"
#include "cells.cuh"
#include "device_recorder.hpp"
#include "errors.cuh"
#include "memory.cuh"
#include "select.cuh"

namespace txray {
namespace cuda {

using namespace detail;

namespace {

constexpr int kStagingSlots = 8;

struct PinnedSlot {
  PinnedBuffer buffer;
  Event ready;  // recorded after the copy out of this slot
  bool used = false;
};

// The driver must support the runtime linked in (CUDA 13 needs a driver of
// the 580 series or newer); otherwise every call fails as if there were no
// device. "" when it does.
std::string driver_problem() {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  if (driver == 0) return "no NVIDIA driver is loaded";
  if (driver >= CUDART_VERSION) return "";
  auto text = [](int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); };
  return "the NVIDIA driver supports CUDA up to " + text(driver) + ", but txray's kernels were built with CUDA " +
         text(CUDART_VERSION) + (CUDART_VERSION >= 13000 ? " (it needs a driver of the 580 series or newer)" : "") +
         ": update the driver, or rebuild txray with an older CUDA toolkit (its nvcc first on PATH, or CUDACXX)";
}

}  // namespace

int device_count() {
  if (!driver_problem().empty()) return 0;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string status() {
  const std::string problem = driver_problem();
  if (!problem.empty()) return problem;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  }
  if (n == 0) return "no CUDA device is visible";
  return "";
}

int pointer_device(uintptr_t ptr) {
  cudaPointerAttributes attr;
  const cudaError_t e = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
  if (e != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  if (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) return attr.device;
  return -1;
}

void order_after(uintptr_t consumer, uintptr_t producer) {
  if (consumer == producer) return;
  Event e;  // destroyed at once: the runtime keeps it until the wait is done
  e.record(reinterpret_cast<cudaStream_t>(producer));
  e.order(reinterpret_cast<cudaStream_t>(consumer));
}

struct DeviceRecorder::Impl {
  // Restores the caller's current device after the members are freed (it is
  // destroyed last; ~Impl makes the recorder's device current first).
  struct RestoreDevice {
    int prev = -1;
    ~RestoreDevice() {
      if (prev >= 0) cudaSetDevice(prev);
      cudaGetLastError();
    }
  } restore;

  mutable std::recursive_mutex mutex;
  int device = 0;
  int64_t n_neurons = 0;
  std::vector<std::string> kind_names;
  std::vector<int64_t> vocab_sizes;
  Mode mode = Mode::Max1;
  int k = 1;
  int sm_count = 1;
  std::vector<KindStore> kinds;
  Buffer mass;     // f64 [N] (max1/topk)
  Buffer scalars;  // uint64 tokens, then uint64 size per kind
  Buffer error;    // ErrorState
  Buffer winners;
  Buffer staging;  // host ids / mask copied here
  PinnedSlot pinned[kStagingSlots];
  int next_slot = 0;
  PinnedBuffer pinned_sizes;  // uint64 per kind: the table sizes, read back after each sparse update
  Event done, sizes_ready;
  std::deque<std::pair<int64_t, Event>> inflight;  // (update, event recorded after it), oldest first
  std::vector<Event> spare_events;
  Stream own;  // the recorder's own work
  bool have_work = false, sizes_pending = false;
  int64_t updates = 0, finished = 0;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    // Nothing may still read or write what the members free.
    if (cudaGetDevice(&restore.prev) != cudaSuccess) restore.prev = -1;
    cudaSetDevice(device);
    if (have_work) cudaEventSynchronize(done.e);
    cudaGetLastError();
  }

  unsigned long long* tokens_ptr() const { return scalars.as<unsigned long long>(); }
  unsigned long long* size_ptr(size_t i) const { return scalars.as<unsigned long long>() + 1 + i; }
  bool any_sparse() const {
    for (const auto& s : kinds)
      if (s.sparse()) return true;
    return false;
  }

  // Orders work on stream s after everything enqueued before, whatever
  // stream it ran on (always: a stream handle may be reused after its stream
  // was destroyed, so equal handles prove nothing).
  void begin(cudaStream_t s) {
    if (have_work) done.order(s);
  }
  void end(cudaStream_t s) {
    done.record(s);
    have_work = true;
  }
  void wait() { done.wait(); }

  // Records that update `n` was enqueued on s; waits for the oldest when
  // kMaxInFlight are still running.
  void track(int64_t n, cudaStream_t s) {
    poll();
    if (inflight.size() >= size_t(kMaxInFlight)) {
      inflight.front().second.wait();
      finished = inflight.front().first;
      spare_events.push_back(std::move(inflight.front().second));
      inflight.pop_front();
    }
    if (spare_events.empty()) spare_events.emplace_back();
    Event e = std::move(spare_events.back());
    spare_events.pop_back();
    e.record(s);
    inflight.emplace_back(n, std::move(e));
  }
  // Retires the finished updates at the front.
  void poll() {
    while (!inflight.empty() && inflight.front().second.query()) {
      finished = inflight.front().first;
      spare_events.push_back(std::move(inflight.front().second));
      inflight.pop_front();
    }
  }

  // Exact sizes of the sparse tables (synchronises).
  void read_sizes() {
    wait();
    std::vector<unsigned long long> sizes(kinds.size());
    check(cudaMemcpy(sizes.data(), size_ptr(0), sizes.size() * 8, cudaMemcpyDeviceToHost), "reading table sizes");
    for (size_t i = 0; i < kinds.size(); ++i) kinds[i].upper = sizes[i];
    sizes_pending = false;
  }

  // Makes room for `cells` new hash cells / `rows` new feature rows per
  // kind. Uses the sizes read back after the last update when they have
  // landed; otherwise an upper bound; synchronises only when that bound
  // says a table might overflow.
  void reserve(uint64_t cells, uint64_t rows, cudaStream_t s) {
    if (!any_sparse()) return;
    if (sizes_pending && sizes_ready.query()) {
      for (size_t i = 0; i < kinds.size(); ++i) kinds[i].upper = pinned_sizes.as<unsigned long long>()[i];
      sizes_pending = false;
    }
    bool refreshed = false;
    for (auto& st : kinds) {
      if (!st.overflows(cells, rows)) continue;
      if (!refreshed) {
        read_sizes();
        refreshed = true;
      }
      if (st.overflows(cells, rows)) st.grow(cells, rows, s, sm_count);
    }
  }

  void after_sparse_update(uint64_t cells, uint64_t rows, cudaStream_t s) {
    if (!any_sparse()) return;
    for (auto& st : kinds) {
      if (st.storage == kHashCells) st.upper += cells;
      if (st.storage == kSparseRows) st.upper = std::min<uint64_t>(st.upper + rows, uint64_t(st.vocab));
    }
    check(cudaMemcpyAsync(pinned_sizes.ptr, size_ptr(0), kinds.size() * 8, cudaMemcpyDeviceToHost, s),
          "cudaMemcpyAsync");
    sizes_ready.record(s);
    sizes_pending = true;
  }

  // Copies host bytes to `dst` on the device through a pinned slot.
  void stage(const void* src, size_t bytes, void* dst, cudaStream_t s) {
    PinnedSlot& slot = pinned[next_slot];
    next_slot = (next_slot + 1) % kStagingSlots;
    if (slot.used) slot.ready.wait();
    slot.buffer.reserve(std::max(bytes, size_t(1) << 16), "cudaMallocHost");
    std::memcpy(slot.buffer.ptr, src, bytes);
    check(cudaMemcpyAsync(dst, slot.buffer.ptr, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
    slot.ready.record(s);
    slot.used = true;
  }

  template <class T>
  std::vector<T> download(const Buffer& b, size_t n) const {
    std::vector<T> out(n);
    if (n) check(cudaMemcpy(out.data(), b.ptr, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return out;
  }
};

DeviceRecorder::DeviceRecorder(int device, int64_t n_neurons, std::vector<std::string> kind_names,
                               std::vector<int64_t> vocab_sizes, Mode mode, int k, int64_t dense_limit_bytes) {
  validate_shape(n_neurons, kind_names, vocab_sizes, mode, k);
  if (kind_names.size() > size_t(kMaxKinds))
    throw InputError("a CUDA recorder takes at most " + std::to_string(kMaxKinds) + " feature kinds");
  const int count = device_count();
  if (count == 0) throw DeviceError("no usable CUDA device: " + status());
  if (device < 0 || device >= count)
    throw InputError("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                     " visible)");
  DeviceGuard guard(device);
  // Every resource is owned by a member of Impl: a throw below frees what
  // was made so far (impl_'s destructor runs).
  impl_ = std::make_unique<Impl>();
  Impl& m = *impl_;
  m.device = device;
  m.n_neurons = n_neurons;
  m.kind_names = std::move(kind_names);
  m.vocab_sizes = std::move(vocab_sizes);
  m.mode = mode;
  m.k = mode == Mode::Max1 ? 1 : (mode == Mode::All ? 0 : k);
  check(cudaDeviceGetAttribute(&m.sm_count, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  const cudaStream_t s = m.own.s;
  m.scalars.allocate((1 + m.vocab_sizes.size()) * 8, "counters");
  check(cudaMemsetAsync(m.scalars.ptr, 0, m.scalars.bytes, s), "cudaMemsetAsync");
  m.kinds.resize(m.vocab_sizes.size());
  for (size_t i = 0; i < m.kinds.size(); ++i) {
    KindStore& st = m.kinds[i];
    const int64_t f = m.vocab_sizes[i];
    st.vocab = f;
    st.n_neurons = n_neurons;
    st.size = m.size_ptr(i);
    st.freq.allocate(size_t(f) * 8, "feature frequencies");
    check(cudaMemsetAsync(st.freq.ptr, 0, st.freq.bytes, s), "cudaMemsetAsync");
    const size_t cells = size_t(n_neurons) * size_t(f);
    const bool dense = fits_dense(n_neurons, f, mode, dense_limit_bytes);
    if (mode == Mode::All) {
      if (dense) {
        st.storage = kDenseRows;
        st.sum.allocate(cells * 8, "dense feature rows (lower dense_limit_bytes to use sparse rows)");
        check(cudaMemsetAsync(st.sum.ptr, 0, st.sum.bytes, s), "cudaMemsetAsync");
      } else {
        st.storage = kSparseRows;
        st.row_of.allocate(size_t(f) * 4, "the feature row index");
        check(cudaMemsetAsync(st.row_of.ptr, 0xff, st.row_of.bytes, s), "cudaMemsetAsync");
      }
    } else if (dense) {
      st.storage = kDenseCells;
      st.count.allocate(cells * 8, "dense cells (lower dense_limit_bytes to use a sparse table)");
      st.sum.allocate(cells * 8, "dense cells (lower dense_limit_bytes to use a sparse table)");
      check(cudaMemsetAsync(st.count.ptr, 0, st.count.bytes, s), "cudaMemsetAsync");
      check(cudaMemsetAsync(st.sum.ptr, 0, st.sum.bytes, s), "cudaMemsetAsync");
    } else {
      st.storage = kHashCells;
    }
  }
  m.mass.allocate(size_t(n_neurons) * 8, "activation mass");
  check(cudaMemsetAsync(m.mass.ptr, 0, m.mass.bytes, s), "cudaMemsetAsync");
  m.error.allocate(sizeof(ErrorState), "the error flag");
  check(cudaMemsetAsync(m.error.ptr, 0xff, sizeof(ErrorState), s), "cudaMemsetAsync");
  m.pinned_sizes.reserve(m.kinds.size() * 8, "cudaMallocHost");
  // Sparse tables start small; they grow before the update that could fill them.
  for (auto& st : m.kinds)
    if (st.storage == kHashCells) st.grow_hash(256, s, m.sm_count);
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}

DeviceRecorder::~DeviceRecorder() = default;  // Impl's members free everything (see ~Impl)

int64_t DeviceRecorder::update(const DeviceBatch& in) {
  Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  if (in.cols != m.n_neurons)
    throw InputError("activations have " + std::to_string(in.cols) + " neurons, the recorder " +
                     std::to_string(m.n_neurons));
  if (in.ids.size() != m.kinds.size() || in.host_ids.size() != m.kinds.size())
    throw InputError("one feature array per feature kind is needed");
  if (in.rows < 0 || in.rows >= (int64_t(1) << 31)) throw InputError("a CUDA update takes fewer than 2^31 tokens");
  if (in.rows == 0) return 0;
  if (!in.data) throw InputError("activations have a null device pointer");
  DeviceGuard guard(m.device);
  // Before any other CUDA call: under a global capture some of them would invalidate it.
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(in.stream);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  const cudaError_t e = cudaStreamIsCapturing(s, &capture);
  if (e != cudaSuccess) cudaGetLastError();  // the legacy stream beside a global capture, among others
  if (e != cudaSuccess || capture != cudaStreamCaptureStatusNone)
    throw InputError(
        "txray cannot record while a CUDA graph is being captured (an update allocates and may synchronise): record "
        "outside the captured region, e.g. on the outputs of the graph's replay");
  const int on = pointer_device(in.data);
  if (on != m.device)
    throw InputError(on < 0 ? "activations are not in device memory"
                            : "activations are on CUDA device " + std::to_string(on) + ", the recorder on device " +
                                  std::to_string(m.device));
  for (size_t i = 0; i < m.kinds.size(); ++i) {
    if (!in.ids[i] && !in.host_ids[i]) throw InputError("feature ids of kind '" + m.kind_names[i] + "' are missing");
    if (in.ids[i] && pointer_device(in.ids[i]) != m.device)
      throw InputError("feature ids of kind '" + m.kind_names[i] + "' are not in this device's memory");
  }
  if (in.mask && pointer_device(in.mask) != m.device) throw InputError("the mask is not in this device's memory");

  // From the first enqueued operation on, `done` is recorded whatever
  // happens, so that the next call waits for all of it.
  struct Finish {
    Impl& m;
    cudaStream_t s;
    bool armed = false;
    ~Finish() {
      if (armed && cudaEventRecord(m.done.e, s) == cudaSuccess) m.have_work = true;
      cudaGetLastError();
    }
  } finish{m, s};
  m.begin(s);
  finish.armed = true;
  const int64_t rows = in.rows;
  const int64_t elem = dtype_bytes(in.dtype);

  // Scratch: winners, then staged host ids and mask.
  size_t n_host = 0;
  for (const auto* p : in.host_ids) n_host += p != nullptr;
  const size_t winner_bytes = size_t(rows) * size_t(m.k) * sizeof(Winner);
  if (winner_bytes > m.winners.bytes) {
    if (m.have_work) m.wait();
    m.winners.reserve(winner_bytes, "the winner list");
  }
  const size_t stage_bytes = n_host * size_t(rows) * 8 + (in.host_mask ? size_t(rows) : 0);
  if (stage_bytes > m.staging.bytes) {
    if (m.have_work) m.wait();
    m.staging.reserve(stage_bytes, "staged feature ids");
  }
  const long long* ids[kMaxKinds] = {};
  size_t at = 0;
  for (size_t i = 0; i < m.kinds.size(); ++i) {
    if (in.ids[i]) {
      ids[i] = reinterpret_cast<const long long*>(in.ids[i]);
    } else {
      char* dst = m.staging.as<char>() + at;
      m.stage(in.host_ids[i], size_t(rows) * 8, dst, s);
      ids[i] = reinterpret_cast<const long long*>(dst);
      at += size_t(rows) * 8;
    }
  }
  const unsigned char* mask = reinterpret_cast<const unsigned char*>(in.mask);
  if (in.host_mask) {
    char* dst = m.staging.as<char>() + at;
    m.stage(in.host_mask, size_t(rows), dst, s);
    mask = reinterpret_cast<const unsigned char*>(dst);
  }

  const uint64_t new_cells = uint64_t(rows) * uint64_t(std::max(m.k, 1));
  m.reserve(new_cells, uint64_t(rows), s);

  Batch b{};
  b.data = reinterpret_cast<const void*>(in.data);
  b.rows = rows;
  b.cols = in.cols;
  b.row_stride = in.row_stride;
  b.col_stride = in.col_stride;
  b.dtype = static_cast<int>(in.dtype);
  b.mask = mask;
  b.n_kinds = static_cast<int>(m.kinds.size());
  b.k = m.k;
  b.update = m.updates + 1;
  b.err = m.error.as<ErrorState>();
  b.winners = m.winners.as<Winner>();
  b.mass = m.mass.as<double>();
  b.tokens = m.tokens_ptr();
  for (size_t i = 0; i < m.kinds.size(); ++i) b.kind[i] = m.kinds[i].args(ids[i]);

  // The update number is taken from the first launch on: the error slots
  // alternate by its parity, so a failure after it must still count it.
  ++m.updates;
  // 16-byte loads when rows are contiguous and 16-byte aligned.
  const bool vec = in.col_stride == 1 && in.data % 16 == 0 && (in.row_stride * elem) % 16 == 0;
  const unsigned select_blocks = blocks_for(rows, 8, m.sm_count * 16);
  auto launch_select = [&](auto loader) {
    using L = decltype(loader);
    if (vec)
      select_kernel<L, true><<<select_blocks, 256, 0, s>>>(b);
    else
      select_kernel<L, false><<<select_blocks, 256, 0, s>>>(b);
  };
  switch (in.dtype) {
    case DType::Float16:
      launch_select(LF16{});
      break;
    case DType::BFloat16:
      launch_select(LBF16{});
      break;
    default:
      launch_select(LF32{});
  }
  check_launch("select_kernel");
  if (m.mode == Mode::All) {
    bookkeep_all<<<blocks_for(rows, 256, m.sm_count * 32), 256, 0, s>>>(b);
    check_launch("bookkeep_all");
    const dim3 grid(static_cast<unsigned>((in.cols + 127) / 128),
                    static_cast<unsigned>(std::min<int64_t>((rows + kAllRows - 1) / kAllRows, 65535)));
    switch (in.dtype) {
      case DType::Float16:
        accumulate_all<LF16><<<grid, 128, 0, s>>>(b);
        break;
      case DType::BFloat16:
        accumulate_all<LBF16><<<grid, 128, 0, s>>>(b);
        break;
      default:
        accumulate_all<LF32><<<grid, 128, 0, s>>>(b);
    }
    check_launch("accumulate_all");
  } else {
    accumulate_winners<<<blocks_for(rows * m.k, 256, m.sm_count * 32), 256, 0, s>>>(b);
    check_launch("accumulate_winners");
  }
  m.after_sparse_update(new_cells, uint64_t(rows), s);
  m.track(m.updates, s);
  return m.updates;
}

bool DeviceRecorder::idle() {
  Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  if (!m.have_work) return true;
  DeviceGuard guard(m.device);
  return m.done.query();
}

int64_t DeviceRecorder::completed() {
  Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  DeviceGuard guard(m.device);
  m.poll();
  return m.inflight.empty() ? m.updates : m.finished;
}

void DeviceRecorder::synchronize() {
  Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  if (!m.have_work) return;
  DeviceGuard guard(m.device);
  m.wait();
  m.poll();
}

PendingError DeviceRecorder::take_error() {
  Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  DeviceGuard guard(m.device);
  synchronize();
  ErrorState e;
  check(cudaMemcpy(&e, m.error.ptr, sizeof e, cudaMemcpyDeviceToHost), "reading the error flag");
  if (e.update < 0) return {};
  // On the recorder's stream, and every later update waits for it (done).
  check(cudaMemsetAsync(m.error.ptr, 0xff, sizeof(ErrorState), m.own.s), "cudaMemsetAsync");
  m.end(m.own.s);
  const InputError err = describe(e, m.kind_names, m.vocab_sizes);
  return {e.update, err.token, err.templ};
}

void DeviceRecorder::merge(DeviceRecorder& other) {
  Impl& m = *impl_;
  Impl& o = *other.impl_;
  if (&other == this) throw InputError("cannot merge a recorder into itself");
  std::scoped_lock lock(m.mutex, o.mutex);
  if (o.n_neurons != m.n_neurons || o.vocab_sizes != m.vocab_sizes || o.kind_names != m.kind_names ||
      o.mode != m.mode || o.k != m.k)
    throw InputError("cannot merge recorders with different neurons, feature kinds, vocabularies or modes");
  if (o.device != m.device)
    throw InputError("cannot merge recorders on different CUDA devices (" + std::to_string(o.device) + " and " +
                     std::to_string(m.device) + "); merge their profiles instead");
  other.synchronize();
  synchronize();
  DeviceGuard guard(m.device);
  // Both recorders are idle now; the recorder's own stream orders the rest.
  const cudaStream_t s = m.own.s;
  for (size_t i = 0; i < m.kinds.size(); ++i) {
    const Cells c = other.cells(i);
    const std::vector<int64_t> freq = other.frequencies(i);
    const size_t n = c.count.size();
    Buffer neuron, feature, count, sum, f;
    neuron.allocate(n * 4, "merging");
    feature.allocate(n * 4, "merging");
    count.allocate(n * 8, "merging");
    sum.allocate(n * 8, "merging");
    f.allocate(freq.size() * 8, "merging");
    if (n) {
      check(cudaMemcpy(neuron.ptr, c.neuron.data(), n * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      check(cudaMemcpy(feature.ptr, c.feature.data(), n * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      check(cudaMemcpy(count.ptr, c.count.data(), n * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
      check(cudaMemcpy(sum.ptr, c.sum.data(), n * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    check(cudaMemcpy(f.ptr, freq.data(), freq.size() * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
    KindStore& st = m.kinds[i];
    if (st.sparse()) {
      m.read_sizes();
      if (st.storage == kHashCells && (st.upper + n) * 2 > st.capacity) st.grow_hash(st.upper + n, s, m.sm_count);
      if (st.storage == kSparseRows) {
        const uint64_t need = std::min<uint64_t>(st.upper + n / uint64_t(m.n_neurons), uint64_t(st.vocab));
        if (need > st.capacity) st.grow_rows(need, s);
        if (n)
          assign_rows<<<blocks_for(int64_t(n), 256, m.sm_count * 32), 256, 0, s>>>(st.args(nullptr), feature.as<int>(),
                                                                                   int64_t(n));
        check_launch("assign_rows");
      }
    }
    if (n)
      add_cells<<<blocks_for(int64_t(n), 256, m.sm_count * 32), 256, 0, s>>>(
          st.args(nullptr), m.n_neurons, neuron.as<int>(), feature.as<int>(), count.as<long long>(), sum.as<double>(),
          int64_t(n));
    check_launch("add_cells");
    add_u64<<<blocks_for(int64_t(freq.size()), 256, m.sm_count * 32), 256, 0, s>>>(
        st.freq.as<unsigned long long>(), f.as<long long>(), int64_t(freq.size()));
    check_launch("add_u64");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");  // before the temporaries are freed
  }
  if (m.mode != Mode::All) {
    const std::vector<double> mass = other.mass();
    Buffer tmp;
    tmp.allocate(mass.size() * 8, "merging");
    check(cudaMemcpy(tmp.ptr, mass.data(), mass.size() * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
    add_f64<<<blocks_for(int64_t(mass.size()), 256, m.sm_count * 32), 256, 0, s>>>(
        m.mass.as<double>(), tmp.as<double>(), int64_t(mass.size()));
    check_launch("add_f64");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  }
  const long long tokens = other.tokens();
  Buffer tmp;
  tmp.allocate(8, "merging");
  check(cudaMemcpy(tmp.ptr, &tokens, 8, cudaMemcpyHostToDevice), "cudaMemcpy");
  add_u64<<<1, 32, 0, s>>>(m.tokens_ptr(), tmp.as<long long>(), 1);
  check_launch("add_u64");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  m.end(s);
  m.read_sizes();
}

Cells DeviceRecorder::cells(size_t kind) {
  Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  if (kind >= m.kinds.size()) throw InputError("no such feature kind");
  DeviceGuard guard(m.device);
  synchronize();
  const KindStore& st = m.kinds[kind];
  const int64_t n = m.n_neurons;
  const size_t total = size_t(st.vocab) * size_t(n);
  if (st.storage == kDenseCells || st.storage == kHashCells) {
    std::vector<uint64_t> keys;
    std::vector<int64_t> count;
    std::vector<double> sum;
    if (st.storage == kDenseCells) {
      const auto c = m.download<int64_t>(st.count, total);
      const auto s = m.download<double>(st.sum, total);
      for (size_t key = 0; key < total; ++key) {
        if (c[key] == 0) continue;
        keys.push_back(key);
        count.push_back(c[key]);
        sum.push_back(s[key]);
      }
    } else {
      const auto kk = m.download<uint64_t>(st.keys, st.capacity);
      const auto c = m.download<int64_t>(st.count, st.capacity);
      const auto s = m.download<double>(st.sum, st.capacity);
      std::vector<size_t> order;
      for (size_t i = 0; i < kk.size(); ++i)
        if (kk[i] != kEmpty) order.push_back(i);
      std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return kk[a] < kk[b]; });
      for (size_t i : order) {
        keys.push_back(kk[i]);
        count.push_back(c[i]);
        sum.push_back(s[i]);
      }
    }
    return bucket_by_neuron(n, std::move(keys), count, sum);
  }
  // Mode all: every neuron of every seen feature, count = its frequency.
  const auto freq = m.download<int64_t>(st.freq, size_t(st.vocab));
  std::vector<int64_t> seen;
  for (int64_t f = 0; f < st.vocab; ++f)
    if (freq[f] > 0) seen.push_back(f);
  std::vector<double> rows;
  std::vector<int32_t> row_of;
  if (st.storage == kDenseRows) {
    rows = m.download<double>(st.sum, total);
  } else {
    row_of = m.download<int32_t>(st.row_of, size_t(st.vocab));
    rows = m.download<double>(st.sum, st.capacity * size_t(n));
  }
  const size_t nf = seen.size();
  Cells out;
  out.neuron.resize(nf * n);
  out.feature.resize(nf * n);
  out.count.resize(nf * n);
  out.sum.resize(nf * n);
  for (int64_t nn = 0; nn < n; ++nn) {
    for (size_t j = 0; j < nf; ++j) {
      const int64_t f = seen[j];
      const int64_t r = st.storage == kDenseRows ? f : row_of[f];
      const size_t at = size_t(nn) * nf + j;
      out.neuron[at] = int32_t(nn);
      out.feature[at] = int32_t(f);
      out.count[at] = freq[f];
      out.sum[at] = rows[size_t(r) * n + nn];
    }
  }
  return out;
}

std::vector<int64_t> DeviceRecorder::frequencies(size_t kind) {
  Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  if (kind >= m.kinds.size()) throw InputError("no such feature kind");
  DeviceGuard guard(m.device);
  synchronize();
  return m.download<int64_t>(m.kinds[kind].freq, size_t(m.kinds[kind].vocab));
}

std::vector<double> DeviceRecorder::mass() {
  Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  DeviceGuard guard(m.device);
  synchronize();
  if (m.mode != Mode::All) return m.download<double>(m.mass, size_t(m.n_neurons));
  // Mode all: the sum of every row of the first kind, as on the CPU.
  const Cells c = cells(0);
  std::vector<double> mass(size_t(m.n_neurons), 0.0);
  for (size_t i = 0; i < c.sum.size(); ++i) mass[c.neuron[i]] += c.sum[i];
  return mass;
}

int64_t DeviceRecorder::tokens() {
  Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  DeviceGuard guard(m.device);
  synchronize();
  int64_t t = 0;
  check(cudaMemcpy(&t, m.tokens_ptr(), 8, cudaMemcpyDeviceToHost), "cudaMemcpy");
  return t;
}

bool DeviceRecorder::dense(size_t kind) const {
  return impl_->kinds.at(kind).dense();
}

size_t DeviceRecorder::bytes() const {
  const Impl& m = *impl_;
  std::lock_guard<std::recursive_mutex> lock(m.mutex);
  size_t total = m.mass.bytes + m.scalars.bytes + m.error.bytes + m.winners.bytes + m.staging.bytes;
  for (const auto& st : m.kinds) total += st.bytes();
  return total;
}

int DeviceRecorder::device() const {
  return impl_->device;
}
int64_t DeviceRecorder::n_neurons() const {
  return impl_->n_neurons;
}

}  // namespace cuda
}  // namespace txray
