// Python bindings of the native core (module txray._native). Arrays arrive
// as NumPy buffers; txray.recorder validates them and converts torch tensors
// before they get here, so these checks are a last line of defence.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.hpp"
#include "py_arrays.hpp"
#include "recorder.hpp"

namespace py = pybind11;

#ifdef TXRAY_HAS_CUDA
namespace txray::cuda {
void bind(py::module_& m);  // cpp/cuda/bindings.cpp
}
#endif
using txray::ActivationView;
using txray::DType;
using txray::Mode;

namespace {

// Every call that touches a CPU recorder's statistics releases the GIL and
// then takes the recorder's mutex, in that order: a thread holding the mutex
// never waits for the GIL, so concurrent calls on one recorder serialise
// (each runs whole) instead of corrupting it, and never deadlock.
template <class F>
auto locked(const txray::Recorder& rec, F&& f) {
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(rec.mutex());
  return f();
}

using txray::parse_dtype;
using txray::parse_mode;
using txray::py_arrays::to_numpy;

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
            const std::vector<py::array>& features, const py::object& units) {
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
  const int64_t* units_ptr = nullptr;
  py::array units_array;
  if (!units.is_none()) {
    units_array = py::array::ensure(units);
    if (!units_array || !units_array.dtype().is(py::dtype::of<int64_t>()) || units_array.ndim() != 1 ||
        units_array.shape(0) != view.rows || !(units_array.flags() & py::array::c_style))
      throw txray::InputError("units must be a contiguous 1-D int64 array, one unit per token");
    units_ptr = static_cast<const int64_t*>(units_array.data());
  }
  locked(rec, [&] { rec.update(view, mask_ptr, ids, units_ptr); });
}

py::tuple cells_tuple(txray::Cells&& c) {
  return py::make_tuple(to_numpy(std::move(c.neuron)), to_numpy(std::move(c.feature)), to_numpy(std::move(c.count)),
                        to_numpy(std::move(c.sum)));
}

// (neuron int32, rank int32, activation float64, unit int64), or None when
// the recorder keeps no contexts.
py::object contexts_tuple(std::unique_ptr<txray::ContextTable>&& t) {
  if (!t) return py::none();
  return py::make_tuple(to_numpy(std::move(t->neuron)), to_numpy(std::move(t->rank)),
                        to_numpy(std::move(t->activation)), to_numpy(std::move(t->unit)));
}

std::unique_ptr<txray::ContextTable> context_table(const txray::Recorder& rec) {
  const txray::Contexts* c = rec.contexts();
  return c ? std::make_unique<txray::ContextTable>(c->table()) : nullptr;
}

py::tuple cells(const txray::Recorder& rec, size_t kind) {
  return cells_tuple(locked(rec, [&] { return rec.cells(kind); }));
}

// A self-merge would read the tables it writes; two recorders are locked
// together (std::scoped_lock orders them), so a.merge(b) beside b.merge(a)
// cannot deadlock.
void merge(txray::Recorder& rec, const txray::Recorder& other) {
  if (&rec == &other) throw txray::InputError("cannot merge a recorder into itself");
  py::gil_scoped_release release;
  std::scoped_lock lock(rec.mutex(), other.mutex());
  rec.merge(other);
}

// (tokens, mass, [(cells, frequencies) per kind], contexts or None) taken
// under one lock, so that a profile made while other threads update is one
// whole state.
py::tuple snapshot(const txray::Recorder& rec) {
  struct State {
    int64_t tokens;
    std::vector<double> mass;
    std::vector<txray::Cells> cells;
    std::vector<std::vector<int64_t>> freq;
    std::unique_ptr<txray::ContextTable> contexts;
  };
  State s = locked(rec, [&] {
    State out{rec.tokens(), rec.mass(), {}, {}, context_table(rec)};
    for (size_t kind = 0; kind < rec.n_kinds(); ++kind) {
      out.cells.push_back(rec.cells(kind));
      out.freq.push_back(rec.frequencies(kind));
    }
    return out;
  });
  py::list kinds;
  for (size_t kind = 0; kind < s.cells.size(); ++kind)
    kinds.append(py::make_tuple(cells_tuple(std::move(s.cells[kind])), to_numpy(std::move(s.freq[kind]))));
  return py::make_tuple(s.tokens, to_numpy(std::move(s.mass)), kinds, contexts_tuple(std::move(s.contexts)));
}

// -- DLPack -----------------------------------------------------------------
// The DLPack ABI (dlpack.h, v0.8 and v1.x), declared here so that no header is
// needed. Only read: the capsule keeps ownership (txray never renames it to
// "used_dltensor"), so the producer frees the tensor when the capsule dies;
// the Python layer keeps the capsule alive until the device is done with it.
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion {
  uint32_t major;
  uint32_t minor;
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  uint64_t flags;
  DLTensor dl_tensor;
};

// {"ptr", "shape", "strides" (elements), "dtype" (a NumPy-style name or
// "bfloat16"), "device_type" (DLPack code: 1 CPU, 2 CUDA, 3 CUDA host,
// 13 CUDA managed), "device_id"} of an unconsumed DLPack capsule.
py::dict dlpack_info(const py::capsule& capsule) {
  const DLTensor* t = nullptr;
  const std::string name = capsule.name() ? capsule.name() : "";
  if (name == "dltensor") {
    t = &static_cast<DLManagedTensor*>(capsule.get_pointer())->dl_tensor;
  } else if (name == "dltensor_versioned") {
    const auto* v = static_cast<DLManagedTensorVersioned*>(capsule.get_pointer());
    if (v->version.major != 1)
      throw txray::InputError("unsupported DLPack major version " + std::to_string(v->version.major));
    t = &v->dl_tensor;
  } else {
    throw txray::InputError("not an unconsumed DLPack capsule (name '" + name + "')");
  }
  std::string dtype;
  const DLDataType d = t->dtype;
  if (d.lanes != 1) throw txray::InputError("vector DLPack dtypes are not supported");
  if (d.code == 2 && (d.bits == 32 || d.bits == 16 || d.bits == 64))
    dtype = "float" + std::to_string(d.bits);
  else if (d.code == 4 && d.bits == 16)
    dtype = "bfloat16";
  else if (d.code == 0 && (d.bits == 8 || d.bits == 16 || d.bits == 32 || d.bits == 64))
    dtype = "int" + std::to_string(d.bits);
  else if (d.code == 1 && (d.bits == 8 || d.bits == 16 || d.bits == 32 || d.bits == 64))
    dtype = "uint" + std::to_string(d.bits);
  else if (d.code == 6 && d.bits == 8)
    dtype = "bool";
  else
    dtype = "dlpack(code=" + std::to_string(d.code) + ",bits=" + std::to_string(d.bits) + ")";
  py::list shape, strides;
  int64_t expect = 1;
  std::vector<int64_t> contiguous(size_t(t->ndim));
  for (int i = t->ndim - 1; i >= 0; --i) {
    contiguous[size_t(i)] = expect;
    expect *= t->shape[i];
  }
  for (int i = 0; i < t->ndim; ++i) {
    shape.append(t->shape[i]);
    strides.append(t->strides ? t->strides[i] : contiguous[size_t(i)]);
  }
  py::dict out;
  out["ptr"] = reinterpret_cast<uintptr_t>(static_cast<const char*>(t->data) + t->byte_offset);
  out["shape"] = py::tuple(shape);
  out["strides"] = py::tuple(strides);
  out["dtype"] = dtype;
  out["device_type"] = t->device.device_type;
  out["device_id"] = t->device.device_id;
  return out;
}

// The benchmark's floor (bench_record.py): the sum of a 2-D activation array
// whose rows are contiguous, read on all threads with the argmax's loop
// (select.hpp's sum_row) and nothing else.
double stream_read(const py::array& acts, const std::string& dtype) {
  const ActivationView view = view_of(acts, dtype);
  if (view.col_stride != 1) throw txray::InputError("stream_read needs rows whose values are contiguous");
  const txray::kernels::Kernels& kern = txray::kernels::active();
  py::gil_scoped_release release;
  double total = 0.0;
#ifdef _OPENMP
#pragma omp parallel reduction(+ : total)
  {
    const int64_t n_threads = omp_get_num_threads(), me = omp_get_thread_num();
    total += kern.sum_rows(view, view.rows * me / n_threads, view.rows * (me + 1) / n_threads);
  }
#else
  total = kern.sum_rows(view, 0, view.rows);
#endif
  return total;
}

// The selection of modes max1 and topk alone (bench_floor.py): every row's k
// winners, read on all threads as Recorder.update reads them, with nothing
// recorded. (neuron int32, value float32), each of rows * k, row by row.
py::tuple select_winners(const py::array& acts, const std::string& dtype, int k) {
  const ActivationView view = view_of(acts, dtype);
  if (k < 1 || k > view.cols) throw txray::InputError("k must be between 1 and the number of neurons");
  const txray::kernels::Kernels& kern = txray::kernels::active();
  std::vector<txray::Winner> winners(size_t(view.rows * k));
  int64_t first_bad = view.rows;
  {
    py::gil_scoped_release release;
#pragma omp parallel reduction(min : first_bad)
    {
#ifdef _OPENMP
      const int64_t n_threads = omp_get_num_threads(), me = omp_get_thread_num();
#else
      const int64_t n_threads = 1, me = 0;
#endif
      const int64_t lo = view.rows * me / n_threads, hi = view.rows * (me + 1) / n_threads;
      std::vector<float> buffer(size_t(view.cols));
      std::vector<int32_t> scratch;
      const int64_t bad = kern.select(view, nullptr, lo, hi, k, winners.data() + lo * k, buffer.data(), scratch);
      if (bad >= 0) first_bad = bad;
    }
  }
  if (first_bad < view.rows) throw txray::InputError("row " + std::to_string(first_bad) + " holds a non-finite value");
  std::vector<int32_t> neuron(winners.size());
  std::vector<float> value(winners.size());
  for (size_t i = 0; i < winners.size(); ++i) {
    neuron[i] = winners[i].neuron;
    value[i] = winners[i].value;
  }
  return py::make_tuple(to_numpy(std::move(neuron)), to_numpy(std::move(value)));
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "txray native core: fused recording of neuron feature preferences";
  txray::py_arrays::register_input_error(m);

  py::class_<txray::Recorder>(m, "Recorder")
      .def(py::init([](int64_t n_neurons, std::vector<std::string> kinds, std::vector<int64_t> sizes,
                       const std::string& mode, int k, int64_t dense_limit_bytes, int contexts) {
             return new txray::Recorder(n_neurons, std::move(kinds), std::move(sizes), parse_mode(mode), k,
                                        dense_limit_bytes, contexts);
           }),
           py::arg("n_neurons"), py::arg("kinds"), py::arg("vocab_sizes"), py::arg("mode"), py::arg("k"),
           py::arg("dense_limit_bytes"), py::arg("contexts") = 0)
      .def("update", &update, py::arg("acts"), py::arg("dtype"), py::arg("mask"), py::arg("features"),
           py::arg("units") = py::none())
      .def("merge", &merge, py::arg("other"))
      .def("cells", &cells, py::arg("kind"),
           "(neuron int32, feature int32, count int64, sum float64) of one kind, sorted by neuron then feature")
      .def("snapshot", &snapshot, "(tokens, mass, [(cells, frequencies) per kind], contexts or None) of one moment")
      .def(
          "contexts",
          [](const txray::Recorder& r) { return contexts_tuple(locked(r, [&] { return context_table(r); })); },
          "(neuron int32, rank int32, activation float64, unit int64) of the kept contexts, sorted by neuron then "
          "rank; "
          "None when the recorder keeps none")
      .def(
          "context_units",
          [](const txray::Recorder& r, bool latest) -> py::object {
            const txray::Contexts* c = r.contexts();
            if (!c) return py::none();
            return to_numpy(locked(r, [&] { return c->units(latest); }));
          },
          py::arg("latest") = false,
          "the distinct units some neuron keeps as a context, ascending (with latest: only those that entered "
          "with the latest update); None when the recorder keeps none")
      .def(
          "mark_context_units",
          [](const txray::Recorder& r, int64_t lo, py::array mark) -> int64_t {
            const txray::Contexts* c = r.contexts();
            if (!c) throw txray::InputError("this recorder keeps no contexts");
            // Written in place: a converted copy would lose the marks.
            if (!py::isinstance<py::array_t<uint8_t>>(mark) || mark.ndim() != 1 ||
                !(mark.flags() & py::array::c_style) || !mark.writeable())
              throw txray::InputError("mark must be a writable contiguous 1-D uint8 array");
            uint8_t* out = static_cast<uint8_t*>(mark.mutable_data());
            const int64_t n = int64_t(mark.shape(0));
            return locked(r, [&] { return c->mark_latest(lo, n, out); });
          },
          py::arg("lo"), py::arg("mark"),
          "sets mark[u - lo] (uint8) for each unit u that entered some neuron's contexts with the latest update; "
          "returns how many such candidates (one per neuron holding one) fell outside the mark")
      .def("frequencies", [](const txray::Recorder& r,
                             size_t kind) { return to_numpy(locked(r, [&] { return r.frequencies(kind); })); })
      .def("mass", [](const txray::Recorder& r) { return to_numpy(locked(r, [&] { return r.mass(); })); })
      .def("dense", [](const txray::Recorder& r, size_t kind) { return locked(r, [&] { return r.dense(kind); }); })
      .def_property_readonly("tokens", [](const txray::Recorder& r) { return locked(r, [&] { return r.tokens(); }); })
      .def_property_readonly("nbytes", [](const txray::Recorder& r) { return locked(r, [&] { return r.bytes(); }); });

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
  // The instruction set of the CPU kernels (cpp/kernels.cpp): chosen at load,
  // or by the environment variable TXRAY_SIMD (a bad name fails the import).
  txray::kernels::active_name();
  m.def("simd", &txray::kernels::active_name,
        "instruction set of the CPU kernels in use: 'avx512', 'avx2', 'baseline' or 'native' (-march=native build)");
  m.def("simd_variants", &txray::kernels::available, "instruction sets this build has and this CPU runs, best first");
  m.def("set_simd", &txray::kernels::use, py::arg("name"),
        "use the kernels of this instruction set from now on (one of simd_variants(); for tests)");
  m.def("stream_read", &stream_read, py::arg("acts"), py::arg("dtype") = "float32",
        "sum of a 2-D activation array read on all threads as the argmax reads it (the benchmark's floor)");
  m.def("select_winners", &select_winners, py::arg("acts"), py::arg("dtype") = "float32", py::arg("k") = 1,
        "(neuron int32, value float32) of every row's k winners, selected on all threads as Recorder.update "
        "selects them, nothing recorded (bench_floor.py)");
  m.def("dlpack_info", &dlpack_info, py::arg("capsule"),
        "pointer, shape, element strides, dtype and device of an unconsumed DLPack capsule (not consumed)");

#ifdef TXRAY_HAS_CUDA
  txray::cuda::bind(m);
#else
  m.attr("has_cuda") = false;
  m.def("cuda_device_count", []() { return 0; });
  m.def("cuda_status", []() { return std::string("txray was built without CUDA (TXRAY_CUDA=OFF or no nvcc)"); });
#endif
}
