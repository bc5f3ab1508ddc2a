#pragma once

// `tensor.detach()`, for the state-dict walk. A plain header: the definition
// lives in csrc/bindings/tensor_unpack.cpp, the one file that includes
// torch's (slow to parse) tensor headers.

#include <Python.h>

namespace torchwalk {

// A new reference to what `tensor.detach()` returns, or nullptr with the
// Python exception set. A torch.Tensor or nn.Parameter is detached in C++
// (the same dispatcher call the Python method makes); anything else (a
// subclass with __torch_function__, an active torch function mode, an
// instance attribute named `detach`) gets the Python method itself.
PyObject* detached(PyObject* tensor);

}  // namespace torchwalk
