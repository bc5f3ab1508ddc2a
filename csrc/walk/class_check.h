#pragma once

// Which classes the C++ walker may walk on PyTorch's behalf.
//
// PyTorch's traversal is a chain of method calls (`named_parameters` calls
// `_named_members`, which calls `named_modules` on every module, which reads
// `_modules` and puts each module in a set). A class that overrides any link
// of that chain changes the result, so the walker asks, for every class it
// meets, whether the class still resolves those attributes to the objects
// nn.Module had when torchwalk was imported.
// The answers are cached per class and invalidated through CPython's type
// version tag, which changes when a class (or one of its bases) is modified
// and is never reused by another class.

#include <Python.h>

#include <cstdint>

namespace torchwalk {

// nn.Module attributes whose override changes what a traversal yields.
enum ModuleAttribute : unsigned {
  kNamedModules,
  kModules,
  kNamedParameters,
  kParameters,
  kNamedBuffers,
  kBuffers,
  kNamedMembers,
  kNamedChildren,
  kChildren,
  kGetSubmodule,
  kGetParameter,
  kGetBuffer,
  kGetattribute,
  kGetattr,
  kParametersDict,
  kBuffersDict,
  kModulesDict,
  kStateDict,
  kSaveToStateDict,
  kGetExtraState,
  kModuleAttributeCount,
};

using AttributeMask = uint32_t;

constexpr AttributeMask mask_of(ModuleAttribute attribute) { return AttributeMask{1} << attribute; }

template <typename... Attributes>
constexpr AttributeMask mask_of(ModuleAttribute first, Attributes... rest) {
  return mask_of(first) | mask_of(rest...);
}

// Reading a module's three dicts the way `module._parameters` would.
constexpr AttributeMask kReadsDicts =
    mask_of(kGetattribute, kParametersDict, kBuffersDict, kModulesDict);

// Called once at import with nn.Module, nn.Parameter, torch.Tensor.__hash__ and
// the `__torch_function__` implementations known to leave Tensor.__hash__ alone.
void configure_classes(PyObject* module_class, PyObject* parameter_class, PyObject* tensor_hash,
                       PyObject* identity_torch_functions);

PyObject* parameter_class();

PyTypeObject* module_class();

// Functions that torchwalk.install() puts on nn.Module: a class that resolves
// an attribute to its replacement keeps it too (the replacement gives
// PyTorch's answer). `replacements` maps attribute names to functions; an
// empty dict accepts nothing but the originals again.
void set_replacements(PyObject* replacements);

// The interned attribute name, e.g. "named_modules" for kNamedModules.
PyObject* attribute_name(ModuleAttribute attribute);

// Not an attribute: set in ClassFacts::kept when hash(x) is id-based, so an
// address set behaves like the Python set PyTorch uses as a memo.
constexpr AttributeMask kHashesByIdentity = AttributeMask{1} << kModuleAttributeCount;

// Not an attribute either: set when `getattr(cls, "get_extra_state")`, which
// PyTorch's `_save_to_state_dict` reads, finds what the class's MRO holds (the
// metaclass looks attributes up as `type` does and defines no such name).
constexpr AttributeMask kExtraStateLookupIsMro = AttributeMask{1} << (kModuleAttributeCount + 1);

struct ClassFacts {
  bool is_module;      // a subclass of nn.Module
  AttributeMask kept;  // attributes resolved to nn.Module's own, and kHashesByIdentity

  bool keeps(AttributeMask mask) const { return (kept & mask) == mask; }
};

// What `cls` does; cached until the class changes.
ClassFacts facts_of(PyTypeObject* cls);

}  // namespace torchwalk
