#pragma once

// torchwalk._C.DropIn: a Python function with a C++ walker in front of it.
//
// `DropIn(walker, function)` is called like `function` (same parameters,
// defaults, name, docs and signature, through `__wrapped__`) and binds like a
// function when put on a class. When the arguments are plain (no more
// positional arguments than parameters, known keywords, nothing missing), it
// calls the walker, one of _C's METH_FASTCALL functions, with every parameter
// in order, and returns its answer; when the walker answers None (PyTorch
// must answer), or the arguments are anything else, it calls `function` with
// the arguments as given, so that Python binds them and raises its own errors.
//
// This saves the drop-ins a Python frame per call, a sizeable share of a
// walk of a small model.

#include <Python.h>

namespace torchwalk {

// Adds the type to `module` as `DropIn`.
void add_drop_in_type(PyObject* module);

}  // namespace torchwalk
