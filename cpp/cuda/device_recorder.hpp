// The recording engine on a CUDA device (docs/design.md, docs/gpu.md): the same
// statistics as txray::Recorder, kept in device memory and updated by
// kernels that run on the caller's stream.
//
// This header is plain C++ (no CUDA types), so that the bindings compile
// with the host compiler. The implementation mirrors cpp/: memory.cuh
// (memory, events, streams), select.cuh (selection), cells.cuh (dense cells,
// the hash table and growth), errors.cuh (input errors found on the device),
// accumulate.cuh, and device_recorder.cu (the recorder); cpp/shape.hpp holds
// what both engines must agree on. It is only compiled when CMake finds nvcc
// (TXRAY_HAS_CUDA).
//
// Semantics and differences from the CPU engine:
// - Selection (argmax / top-k, ties to the lowest neuron index), masks,
//   feature-id checks and the finiteness check are the CPU engine's.
// - update() never waits for the device (except where noted below). Input
//   errors found on the device (an id out of range, a NaN or infinity) are
//   recorded in device memory; from the failing update on, nothing is
//   recorded (the failing update as a whole, and every later one) until the
//   error is taken by take_error(), which the Python layer calls at every
//   synchronisation point (profile(), merge(), tokens, synchronize()). So
//   the statistics hold exactly the updates before the failing one.
// - Sums are float64 atomics: the order of additions is not the CPU's, so
//   sums agree to rounding (counts, frequencies and tokens exactly).
// - The host synchronises only: when a scratch buffer or a sparse table
//   must grow (allocation), when host (NumPy) ids or masks are staged and
//   all pinned staging slots are still in flight, when kMaxInFlight updates
//   are still running (the oldest is waited for: the caller's inputs are
//   kept alive until then, so memory stays bounded), and at the sync points.
// - Every update waits (on the device, cudaStreamWaitEvent) for the one
//   before it, whatever stream either ran on; the recorder's own work
//   (resetting an error, merging) runs on a stream it owns.
// - Calls may come from several threads (the bindings release the GIL):
//   each public call holds the recorder's mutex for its whole length.
// - An update enqueued while its stream is being captured into a CUDA graph
//   is refused (InputError): it allocates and synchronises.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cells.hpp"
#include "../shape.hpp"

namespace txray {
namespace cuda {

// A CUDA runtime failure (no driver, out of memory, a kernel fault); the
// bindings turn it into RuntimeError.
struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Number of usable CUDA devices, 0 when there is no driver or no device.
// Never throws.
int device_count();
// "" when a device is usable, otherwise the runtime's reason.
std::string status();
// Device ordinal that owns a device (or managed) pointer; -1 for host memory.
int pointer_device(uintptr_t ptr);
// Orders all work enqueued on stream `consumer` from now on after all work
// enqueued so far on stream `producer` (an event between them; no host wait).
void order_after(uintptr_t consumer, uintptr_t producer);

// The first input error found on the device: the failing update (0: none),
// the token (its position in that update's flattened batch) and the message
// with kTokenPlaceholder where the token goes.
struct PendingError {
  int64_t update = 0;
  int64_t token = -1;
  std::string templ;
};

// Updates that may run at once; one more waits for the oldest.
constexpr int kMaxInFlight = 64;

// One batch. Activations are a device pointer with element strides; the mask
// and the ids of every kind are either device pointers (uint8 per token;
// contiguous int64 per token) or host pointers, which are staged through
// pinned memory.
struct DeviceBatch {
  uintptr_t data = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  int64_t col_stride = 1;
  DType dtype = DType::Float32;
  uintptr_t mask = 0;                  // device, or 0
  const uint8_t* host_mask = nullptr;  // host, or null
  std::vector<uintptr_t> ids;          // device pointer per kind, or 0 where host_ids has it
  std::vector<const int64_t*> host_ids;
  uintptr_t stream = 0;  // cudaStream_t as an integer (0: legacy default)
};

class DeviceRecorder {
 public:
  DeviceRecorder(int device, int64_t n_neurons, std::vector<std::string> kind_names, std::vector<int64_t> vocab_sizes,
                 Mode mode, int k, int64_t dense_limit_bytes);
  ~DeviceRecorder();
  DeviceRecorder(const DeviceRecorder&) = delete;
  DeviceRecorder& operator=(const DeviceRecorder&) = delete;

  // Enqueues one batch on batch.stream; returns its update number (1, 2,
  // ...), or 0 when the batch had no rows. Host-side argument errors throw
  // InputError at once and record nothing.
  int64_t update(const DeviceBatch& batch);
  // Adds another device recorder's statistics (same shape). Synchronises both.
  void merge(DeviceRecorder& other);

  // Whether all enqueued work has finished (never blocks).
  bool idle();
  // The highest update number n such that updates 1..n have finished on the
  // device (their inputs may be released); never blocks.
  int64_t completed();
  // Waits for all enqueued work.
  void synchronize();
  // Waits, then returns and clears the first recorded input error. The reset
  // is ordered (on the recorder's stream) before every later update.
  PendingError take_error();

  // Exports (each waits for the device first). Same layout as Recorder.
  Cells cells(size_t kind);
  std::vector<int64_t> frequencies(size_t kind);
  std::vector<double> mass();
  int64_t tokens();

  bool dense(size_t kind) const;
  size_t bytes() const;
  int device() const;
  int64_t n_neurons() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda
}  // namespace txray
