// Device memory, pinned host memory, events and streams, each owned by one
// RAII object, and the checks of the CUDA runtime's return codes. Included
// by device_recorder.cu only (one translation unit).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "device_recorder.hpp"

namespace txray {
namespace cuda {
namespace detail {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess && e != cudaErrorNotReady) {
    cudaGetLastError();  // clear a non-sticky error so that later calls start clean
    throw DeviceError(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
  }
}

inline void check_launch(const char* what) {
  check(cudaGetLastError(), what);
}

// Makes `device` current for a scope, and restores the previous one.
struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int now = -1;
    if (cudaGetDevice(&now) == cudaSuccess && now != prev && prev >= 0) cudaSetDevice(prev);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

// Device memory owned by the recorder.
struct Buffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) {
    o.ptr = nullptr;
    o.bytes = 0;
  }
  Buffer& operator=(Buffer&&) = delete;
  ~Buffer() { release(); }
  void swap(Buffer& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(bytes, o.bytes);
  }
  void release() noexcept {
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    bytes = 0;
  }
  void allocate(size_t n, const char* what) {
    release();
    if (n == 0) return;
    const cudaError_t e = cudaMalloc(&ptr, n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      ptr = nullptr;
      throw DeviceError(std::string("could not allocate ") + std::to_string(n) + " bytes of device memory for " + what +
                        ": " + cudaGetErrorString(e));
    }
    bytes = n;
  }
  // Grows (never shrinks) to at least n bytes; the contents are lost. The
  // free synchronises the device, so in-flight kernels finish first.
  void reserve(size_t n, const char* what) {
    if (n > bytes) allocate(std::max(n, bytes + bytes / 2), what);
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

// Page-locked host memory (the source of asynchronous host-to-device copies).
struct PinnedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { release(); }
  void release() noexcept {
    if (ptr) cudaFreeHost(ptr);
    ptr = nullptr;
    bytes = 0;
  }
  void reserve(size_t n, const char* what) {
    if (n <= bytes) return;
    release();
    check(cudaMallocHost(&ptr, n), what);
    bytes = n;
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

// An event without timing (the cheapest kind), for ordering and polling.
struct Event {
  cudaEvent_t e = nullptr;
  Event() { check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags"); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& o) noexcept : e(o.e) { o.e = nullptr; }
  Event& operator=(Event&&) = delete;
  ~Event() {
    if (e) cudaEventDestroy(e);  // safe while pending: released when it completes
  }
  void record(cudaStream_t s) { check(cudaEventRecord(e, s), "cudaEventRecord"); }
  // Whether everything before the last record() has finished (never blocks).
  bool query() const {
    const cudaError_t r = cudaEventQuery(e);
    if (r == cudaErrorNotReady) return false;
    check(r, "cudaEventQuery");
    return true;
  }
  void wait() const { check(cudaEventSynchronize(e), "cudaEventSynchronize"); }
  // Orders everything enqueued on `s` from now on after this event.
  void order(cudaStream_t s) const { check(cudaStreamWaitEvent(s, e, 0), "cudaStreamWaitEvent"); }
};

// A non-blocking stream owned by the recorder, for its own work (resetting
// the error state, merging, reading back): it never depends on a caller's
// stream staying alive.
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    if (s) cudaStreamDestroy(s);
  }
};

inline unsigned int blocks_for(long long items, int threads, int cap) {
  const long long b = (items + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<long long>(1, std::min<long long>(b, cap)));
}

inline uint64_t next_pow2(uint64_t x) {
  uint64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

inline int log2_exact(uint64_t p) {
  int s = 0;
  while ((uint64_t(1) << s) < p) ++s;
  return s;
}

}  // namespace detail
}  // namespace cuda
}  // namespace txray
