// Python bindings of the native core (module txray._native). Arrays arrive
// as NumPy buffers; txray.recorder validates them and converts torch tensors
// before they get here, so these checks are a last line of defence.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "recorder.hpp"

namespace py = pybind11;
using txray::ActivationView;
using txray::DType;
using txray::Mode;

namespace {

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({py::ssize_t(heap->size())}, {py::ssize_t(sizeof(T))}, heap->data(), owner);
}

Mode parse_mode(const std::string& mode) {
  if (mode == "max1") return Mode::Max1;
  if (mode == "topk") return Mode::TopK;
  if (mode == "all") return Mode::All;
  throw txray::InputError("mode must be 'max1', 'topk' or 'all', not '" + mode + "'");
}

DType parse_dtype(const std::string& dtype) {
  if (dtype == "float32") return DType::Float32;
  if (dtype == "float16") return DType::Float16;
  if (dtype == "bfloat16") return DType::BFloat16;
  throw txray::InputError("unsupported activation dtype '" + dtype + "'");
}

// `dtype` names the logical type: bfloat16 arrives as a uint16 view.
ActivationView view_of(const py::array& acts, const std::string& dtype) {
  if (acts.ndim() != 2) throw txray::InputError("activations must be 2-D (tokens, neurons)");
  const DType d = parse_dtype(dtype);
  const py::ssize_t item = d == DType::Float32 ? 4 : 2;
  if (acts.itemsize() != item) throw txray::InputError("activation buffer itemsize does not match dtype " + dtype);
  if (acts.strides(0) % item || acts.strides(1) % item) throw txray::InputError("activation strides are not aligned");
  ActivationView v;
  v.data = acts.data();
  v.rows = acts.shape(0);
  v.cols = acts.shape(1);
  v.row_stride = acts.strides(0) / item;
  v.col_stride = acts.strides(1) / item;
  v.dtype = d;
  return v;
}

void update(txray::Recorder& rec, const py::array& acts, const std::string& dtype, const py::object& mask,
            const std::vector<py::array>& features) {
  const ActivationView view = view_of(acts, dtype);
  std::vector<const int64_t*> ids;
  for (const py::array& f : features) {
    if (!f.dtype().is(py::dtype::of<int64_t>()) || f.ndim() != 1 || f.shape(0) != view.rows ||
        !(f.flags() & py::array::c_style))
      throw txray::InputError("feature ids must be contiguous 1-D int64 arrays, one id per token");
    ids.push_back(static_cast<const int64_t*>(f.data()));
  }
  const uint8_t* mask_ptr = nullptr;
  py::array mask_array;
  if (!mask.is_none()) {
    mask_array = py::array::ensure(mask);
    if (!mask_array || mask_array.itemsize() != 1 || mask_array.ndim() != 1 || mask_array.shape(0) != view.rows ||
        !(mask_array.flags() & py::array::c_style))
      throw txray::InputError("mask must be a contiguous 1-D bool array, one entry per token");
    mask_ptr = static_cast<const uint8_t*>(mask_array.data());
  }
  py::gil_scoped_release release;
  rec.update(view, mask_ptr, ids);
}

py::tuple cells(const txray::Recorder& rec, size_t kind) {
  txray::Cells c;
  {
    py::gil_scoped_release release;
    c = rec.cells(kind);
  }
  return py::make_tuple(to_numpy(std::move(c.neuron)), to_numpy(std::move(c.feature)), to_numpy(std::move(c.count)),
                        to_numpy(std::move(c.sum)));
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "txray native core: fused recording of neuron feature preferences";
  py::register_exception<txray::InputError>(m, "InputError", PyExc_ValueError);

  py::class_<txray::Recorder>(m, "Recorder")
      .def(py::init([](int64_t n_neurons, std::vector<std::string> kinds, std::vector<int64_t> sizes,
                       const std::string& mode, int k, int64_t dense_limit_bytes) {
             return new txray::Recorder(n_neurons, std::move(kinds), std::move(sizes), parse_mode(mode), k,
                                        dense_limit_bytes);
           }),
           py::arg("n_neurons"), py::arg("kinds"), py::arg("vocab_sizes"), py::arg("mode"), py::arg("k"),
           py::arg("dense_limit_bytes"))
      .def("update", &update, py::arg("acts"), py::arg("dtype"), py::arg("mask"), py::arg("features"))
      .def("merge", &txray::Recorder::merge, py::call_guard<py::gil_scoped_release>())
      .def("cells", &cells, py::arg("kind"),
           "(neuron int32, feature int32, count int64, sum float64) of one kind, sorted by neuron then feature")
      .def("frequencies", [](const txray::Recorder& r, size_t kind) {
        auto f = r.frequencies(kind);
        return to_numpy(std::move(f));
      })
      .def("mass", [](const txray::Recorder& r) {
        return to_numpy(r.mass());
      })
      .def("dense", &txray::Recorder::dense)
      .def_property_readonly("tokens", &txray::Recorder::tokens)
      .def_property_readonly("nbytes", &txray::Recorder::bytes);

  m.def("set_num_threads", [](int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
  });
  m.def("get_num_threads", []() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
  m.def("has_openmp", []() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
  m.attr("has_cuda") = false;
}
