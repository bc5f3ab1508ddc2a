#include "bridge/python_tensors.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/autograd/python_variable.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

namespace torchwalk {
namespace {

int16_t device_code_of(const c10::Device& device) {
  return static_cast<int16_t>(static_cast<int>(device.type()) * 256 + (device.index() + 1));
}

// True when `tensor.detach` is torch.Tensor.detach called without a
// __torch_function__ override: Python's method would make the same
// dispatcher call as at::Tensor::detach.
bool detaches_plainly(PyObject* tensor, PyObject* parameter_class, PyObject* detach_name) {
  auto* type = reinterpret_cast<PyObject*>(Py_TYPE(tensor));
  if ((type != THPVariableClass && type != parameter_class) ||
      at::impl::torch_function_mode_enabled()) {
    return false;
  }
  PyObject** dict = _PyObject_GetDictPtr(tensor);
  return dict == nullptr || *dict == nullptr || PyDict_GET_SIZE(*dict) == 0 ||
         PyDict_GetItemWithError(*dict, detach_name) == nullptr;
}

}  // namespace

PyObject* detached(PyObject* tensor, PyObject* parameter_class) {
  static PyObject* detach_name = PyUnicode_InternFromString("detach");
  if (!detaches_plainly(tensor, parameter_class, detach_name)) {
    if (PyErr_Occurred()) {  // a key's __eq__ raised: let the method lookup meet it again
      PyErr_Clear();
    }
    return PyObject_CallMethodNoArgs(tensor, detach_name);
  }
  HANDLE_TH_ERRORS
  return THPVariable_Wrap(THPVariable_Unpack(tensor).detach());
  END_HANDLE_TH_ERRORS
}

bool is_tensor(PyObject* object) { return THPVariable_Check(object); }

PyObject* readable_tensors(PyObject* items, bool grads, PyObject* parameter_class) {
  static PyObject* grad_name = PyUnicode_InternFromString("grad");
  if (!PyList_Check(items)) {
    PyErr_SetString(PyExc_TypeError, "readable_tensors takes a list");
    return nullptr;
  }
  Py_ssize_t count = PyList_GET_SIZE(items);
  PyObject* found = PyList_New(0);
  PyObject* mask = PyBytes_FromStringAndSize(nullptr, count);
  if (found == nullptr || mask == nullptr) {
    Py_XDECREF(found);
    Py_XDECREF(mask);
    return nullptr;
  }
  char* flags = PyBytes_AS_STRING(mask);
  HANDLE_TH_ERRORS
  for (Py_ssize_t index = 0; index < count; ++index) {
    PyObject* item = PyList_GET_ITEM(items, index);
    PyObject* tensor = nullptr;  // new reference, or null for none
    if (item != Py_None) {
      auto* type = reinterpret_cast<PyObject*>(Py_TYPE(item));
      bool plain = type == THPVariableClass || type == parameter_class;
      if (!grads) {
        tensor = THPVariable_Check(item) ? Py_NewRef(item) : nullptr;
      } else if (plain) {
        const at::Tensor& grad = THPVariable_Unpack(item).grad();
        tensor = grad.defined() ? THPVariable_Wrap(grad) : nullptr;
      } else {
        tensor = PyObject_GetAttr(item, grad_name);
        if (tensor == nullptr) {
          Py_DECREF(found);
          Py_DECREF(mask);
          return nullptr;
        }
        if (!THPVariable_Check(tensor)) {
          Py_CLEAR(tensor);
        }
      }
    }
    bool readable = tensor != nullptr && !THPVariable_Unpack(tensor).is_meta();
    flags[index] = readable ? 1 : 0;
    if (readable && PyList_Append(found, tensor) != 0) {
      Py_DECREF(tensor);
      Py_DECREF(found);
      Py_DECREF(mask);
      return nullptr;
    }
    Py_XDECREF(tensor);
  }
  PyObject* result = PyTuple_Pack(2, found, mask);
  Py_DECREF(found);
  Py_DECREF(mask);
  return result;
  END_HANDLE_TH_ERRORS
}

TensorFacts tensor_facts(PyObject* tensor) {
  const at::Tensor& view = THPVariable_Unpack(tensor);
  TensorFacts facts;
  facts.numel = view.numel();
  facts.itemsize = static_cast<int64_t>(view.itemsize());
  facts.nbytes = facts.numel * facts.itemsize;
  facts.dtype_code = static_cast<int8_t>(view.scalar_type());
  facts.device_code = device_code_of(view.device());
  facts.requires_grad = view.requires_grad();

  uint64_t shape_hash = hash_combine(view.dim(), facts.dtype_code);
  for (int64_t size : view.sizes()) {
    shape_hash = hash_combine(shape_hash, static_cast<uint64_t>(size));
  }
  facts.shape_hash = shape_hash;

  // Sparse, nested and some wrapper tensors have no strided storage to share.
  if (!view.has_storage() || view.layout() != c10::kStrided) {
    facts.view_hash = shape_hash;
    return facts;
  }
  facts.storage_key = reinterpret_cast<uintptr_t>(view.storage().unsafeGetStorageImpl());
  int64_t offset = view.storage_offset();
  uint64_t view_hash = hash_combine(shape_hash, static_cast<uint64_t>(offset));
  int64_t last_element = offset;
  for (int64_t dim = 0; dim < view.dim(); ++dim) {
    view_hash = hash_combine(view_hash, static_cast<uint64_t>(view.stride(dim)));
    last_element += (view.size(dim) - 1) * view.stride(dim);
  }
  facts.view_hash = view_hash;
  facts.span_begin = offset * facts.itemsize;
  facts.span_end = facts.numel == 0 ? facts.span_begin : (last_element + 1) * facts.itemsize;
  return facts;
}

bool same_view(PyObject* tensor, PyObject* other) {
  const at::Tensor& a = THPVariable_Unpack(tensor);
  const at::Tensor& b = THPVariable_Unpack(other);
  return a.has_storage() && b.has_storage() && a.layout() == c10::kStrided &&
         b.layout() == c10::kStrided && a.storage().is_alias_of(b.storage()) &&
         a.storage_offset() == b.storage_offset() && a.sizes().equals(b.sizes()) &&
         a.strides().equals(b.strides()) && a.scalar_type() == b.scalar_type();
}

PyObject* dtype_name(int8_t dtype_code, PyObject* tensor) {
  // Filled on first sight of each dtype from Python's own str(tensor.dtype),
  // so the names are torch's ("torch.float32") whatever the version.
  static std::array<PyObject*, 256> names{};
  PyObject*& name = names[static_cast<uint8_t>(dtype_code)];
  if (name == nullptr) {
    PyObject* dtype = PyObject_GetAttrString(tensor, "dtype");
    if (dtype == nullptr) {
      return nullptr;
    }
    name = PyObject_Str(dtype);
    Py_DECREF(dtype);
    if (name == nullptr) {
      return nullptr;
    }
  }
  return Py_NewRef(name);
}

PyObject* device_name(int16_t device_code) {
  auto type = static_cast<c10::DeviceType>(device_code / 256);
  auto index = static_cast<c10::DeviceIndex>(device_code % 256 - 1);
  std::string name = c10::Device(type, index).str();
  return PyUnicode_FromStringAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
}

namespace {

// The tensors of a Python list, owned (the list may change while the GIL is
// released); `what` names them in the error for an item that is not one.
std::vector<at::Tensor> unpacked_tensors(PyObject* tensors, const char* what) {
  std::vector<at::Tensor> unpacked;
  Py_ssize_t count = PyList_GET_SIZE(tensors);
  unpacked.reserve(static_cast<size_t>(count));
  for (Py_ssize_t index = 0; index < count; ++index) {
    PyObject* tensor = PyList_GET_ITEM(tensors, index);
    if (!THPVariable_Check(tensor)) {
      throw std::invalid_argument(std::string(what) + std::to_string(index) + " is a " +
                                  Py_TYPE(tensor)->tp_name + ", not a tensor");
    }
    unpacked.push_back(THPVariable_Unpack(tensor));
  }
  return unpacked;
}

// `read()` with the GIL released: it touches no Python object, so other
// threads run meanwhile. ATen's errors become std::invalid_argument.
template <typename Read>
auto without_gil(Read read) {
  PyThreadState* saved = PyEval_SaveThread();
  try {
    auto result = read();
    PyEval_RestoreThread(saved);
    return result;
  } catch (const c10::Error& error) {
    PyEval_RestoreThread(saved);
    throw std::invalid_argument(error.what_without_backtrace());
  } catch (...) {
    PyEval_RestoreThread(saved);
    throw;
  }
}

}  // namespace

std::vector<TensorStats> stats_of_tensor_list(PyObject* tensors, StatsPath path,
                                              const MagnitudeRequest& request) {
  std::vector<at::Tensor> unpacked = unpacked_tensors(tensors, "torchwalk.stats: item ");
  for (size_t index = 0; index < unpacked.size(); ++index) {
    check_readable(unpacked[index], index);
  }
  return without_gil([&] { return tensor_stats(unpacked, path, request); });
}

std::vector<PairMoments> pair_stats_of_tensor_lists(PyObject* a, PyObject* b, Tolerance tolerance,
                                                    StatsPath path) {
  std::vector<at::Tensor> a_tensors = unpacked_tensors(a, "torchwalk.diff: item ");
  std::vector<at::Tensor> b_tensors = unpacked_tensors(b, "torchwalk.diff: item ");
  return without_gil([&] { return pair_stats(a_tensors, b_tensors, tolerance, path); });
}

}  // namespace torchwalk
