// What both sets of bindings (cpp/bindings.cpp, cpp/cuda/bindings.cpp) share:
// vectors handed to NumPy without a copy, and txray._native.InputError, a
// ValueError that carries the failing token as data (.token, -1 for none)
// beside its message, and the message with "{token}" where the token goes
// (.template), so that Python can name the position in the caller's shape.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "shape.hpp"

namespace txray {
namespace py_arrays {

namespace py = pybind11;

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({py::ssize_t(heap->size())}, {py::ssize_t(sizeof(T))}, heap->data(), owner);
}

inline PyObject*& input_error_type() {
  static PyObject* type = nullptr;
  return type;
}

inline void register_input_error(py::module_& m) {
  py::object type = py::reinterpret_steal<py::object>(
      PyErr_NewExceptionWithDoc("txray._native.InputError",
                                "A bad input (ValueError); .token: the failing token's position in the flattened "
                                "batch (-1: none); .template: the message with '{token}' where the token goes",
                                PyExc_ValueError, nullptr));
  if (!type) throw py::error_already_set();
  m.add_object("InputError", type);
  input_error_type() = type.ptr();  // the module keeps it alive
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const InputError& e) {
      py::handle cls(input_error_type());
      py::object err = cls(e.what());
      err.attr("token") = e.token;
      err.attr("template") = e.templ;
      PyErr_SetObject(cls.ptr(), err.ptr());
    }
  });
}

}  // namespace py_arrays
}  // namespace txray
