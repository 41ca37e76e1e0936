// Python bindings of the CUDA engine (txray._native.DeviceRecorder and the
// device queries); compiled only with CUDA (TXRAY_HAS_CUDA). Every call that
// may wait for the device or for the recorder's mutex releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../py_arrays.hpp"
#include "device_recorder.hpp"

namespace py = pybind11;

namespace txray {
namespace cuda {

namespace {

using py_arrays::to_numpy;

// features: per kind either an int (device pointer to contiguous int64 ids)
// or a contiguous int64 NumPy array; mask: None, an int (device pointer to
// one byte per token) or a contiguous bool/uint8 NumPy array.
int64_t device_update(DeviceRecorder& rec, uintptr_t data, int64_t rows, int64_t cols, int64_t row_stride,
                      int64_t col_stride, const std::string& dtype, const py::object& mask,
                      const std::vector<py::object>& features, uintptr_t stream) {
  DeviceBatch b;
  b.data = data;
  b.rows = rows;
  b.cols = cols;
  b.row_stride = row_stride;
  b.col_stride = col_stride;
  b.dtype = parse_dtype(dtype);
  b.stream = stream;
  std::vector<py::array> keep;
  for (const py::object& f : features) {
    if (py::isinstance<py::int_>(f)) {
      b.ids.push_back(f.cast<uintptr_t>());
      b.host_ids.push_back(nullptr);
      continue;
    }
    py::array a = py::array::ensure(f);
    if (!a || !a.dtype().is(py::dtype::of<int64_t>()) || a.ndim() != 1 || a.shape(0) != rows ||
        !(a.flags() & py::array::c_style))
      throw InputError("feature ids must be contiguous 1-D int64 arrays, one id per token");
    b.ids.push_back(0);
    b.host_ids.push_back(static_cast<const int64_t*>(a.data()));
    keep.push_back(a);
  }
  if (py::isinstance<py::int_>(mask)) {
    b.mask = mask.cast<uintptr_t>();
  } else if (!mask.is_none()) {
    py::array a = py::array::ensure(mask);
    if (!a || a.itemsize() != 1 || a.ndim() != 1 || a.shape(0) != rows || !(a.flags() & py::array::c_style))
      throw InputError("mask must be a contiguous 1-D bool array, one entry per token");
    b.host_mask = static_cast<const uint8_t*>(a.data());
    keep.push_back(a);
  }
  py::gil_scoped_release release;
  return rec.update(b);
}

template <class F>
auto unlocked(F&& f) {
  py::gil_scoped_release release;
  return f();
}

}  // namespace

void bind(py::module_& m) {
  // has_cuda: the CUDA kernels were compiled. Whether a device can be used
  // is cuda_device_count() > 0 (the runtime is linked statically; without a
  // driver, or with one too old for the runtime, these report 0 and the
  // reason, and nothing else touches CUDA until a DeviceRecorder is made).
  m.attr("has_cuda") = true;
  py::register_exception<DeviceError>(m, "DeviceError", PyExc_RuntimeError);
  m.def("cuda_device_count", &device_count);
  m.def("cuda_status", &status, "'' when a CUDA device is usable, otherwise the reason");
  m.def("cuda_pointer_device", [](uintptr_t p) { return pointer_device(p); });
  m.def("cuda_order_after", &order_after, py::arg("consumer"), py::arg("producer"),
        "order work enqueued on stream `consumer` from now on after the work enqueued so far on `producer`");
  const auto release = py::call_guard<py::gil_scoped_release>();
  py::class_<DeviceRecorder>(m, "DeviceRecorder")
      .def(py::init([](int device, int64_t n_neurons, std::vector<std::string> kinds, std::vector<int64_t> sizes,
                       const std::string& mode, int k, int64_t dense_limit_bytes) {
             return new DeviceRecorder(device, n_neurons, std::move(kinds), std::move(sizes), parse_mode(mode), k,
                                       dense_limit_bytes);
           }),
           py::arg("device"), py::arg("n_neurons"), py::arg("kinds"), py::arg("vocab_sizes"), py::arg("mode"),
           py::arg("k"), py::arg("dense_limit_bytes"))
      .def("update", &device_update, py::arg("data"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
           py::arg("col_stride"), py::arg("dtype"), py::arg("mask"), py::arg("features"), py::arg("stream"),
           "enqueue one batch; returns its update number (0: no rows)")
      .def("merge", &DeviceRecorder::merge, release)
      .def("idle", &DeviceRecorder::idle, release)
      .def("completed", &DeviceRecorder::completed, release,
           "the highest n such that updates 1..n have finished on the device (never blocks)")
      .def("synchronize", &DeviceRecorder::synchronize, release)
      .def(
          "take_error",
          [](DeviceRecorder& r) {
            const PendingError e = unlocked([&] { return r.take_error(); });
            return py::make_tuple(e.update, e.token, e.templ);
          },
          "(update, token, message with '{token}') of the first input error found on the device; update 0: none")
      .def("cells",
           [](DeviceRecorder& r, size_t kind) {
             Cells c = unlocked([&] { return r.cells(kind); });
             return py::make_tuple(to_numpy(std::move(c.neuron)), to_numpy(std::move(c.feature)),
                                   to_numpy(std::move(c.count)), to_numpy(std::move(c.sum)));
           })
      .def("frequencies",
           [](DeviceRecorder& r, size_t kind) { return to_numpy(unlocked([&] { return r.frequencies(kind); })); })
      .def("mass", [](DeviceRecorder& r) { return to_numpy(unlocked([&] { return r.mass(); })); })
      .def("dense", &DeviceRecorder::dense)
      .def_property_readonly("tokens", [](DeviceRecorder& r) { return unlocked([&] { return r.tokens(); }); })
      .def_property_readonly("nbytes", [](DeviceRecorder& r) { return unlocked([&] { return r.bytes(); }); })
      .def_property_readonly("device", &DeviceRecorder::device);
}

}  // namespace cuda
}  // namespace txray
