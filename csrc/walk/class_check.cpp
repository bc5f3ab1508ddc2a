#include "walk/class_check.h"

#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace torchwalk {
namespace {

constexpr const char* kAttributeNames[kModuleAttributeCount] = {
    "named_modules",  "modules",       "named_parameters", "parameters",       "named_buffers",
    "buffers",        "_named_members", "named_children",  "children",         "get_submodule",
    "get_parameter",  "get_buffer",    "__getattribute__", "__getattr__",      "_parameters",
    "_buffers",       "_modules",
};

// Attributes an instance dict can shadow: methods, not the dunders (looked up
// on the class) nor the three dicts (which live in the instance dict).
constexpr AttributeMask kShadowable =
    ~(mask_of(kGetattribute, kGetattr) | mask_of(kParametersDict, kBuffersDict, kModulesDict));

struct Configuration {
  PyTypeObject* module_class = nullptr;
  PyObject* parameter_class = nullptr;
  PyObject* tensor_hash = nullptr;
  std::vector<PyObject*> identity_torch_functions;
  PyObject* names[kModuleAttributeCount] = {};
  // nn.Module's own attributes when torchwalk was imported: a class keeps an
  // attribute when it still resolves to this object (patching nn.Module
  // itself is an override too).
  PyObject* originals[kModuleAttributeCount] = {};
  PyObject* hash_name = nullptr;
  PyObject* torch_function_name = nullptr;
};

// Owned references that live as long as the extension (never released: the
// interpreter may already be finalising when static destructors run).
Configuration config;

struct CachedFacts {
  unsigned int version_tag;
  ClassFacts facts;
};

// Stale entries (classes that died) are harmless, their tags never match
// again; the cap only bounds memory for programs that create classes in a
// loop (torch.nn.utils.parametrize makes one per parametrized module).
constexpr size_t kCacheCapacity = 4096;
std::unordered_map<PyTypeObject*, CachedFacts> facts_cache;

bool is_identity_hash(PyTypeObject* cls) {
  if (cls->tp_hash == PyBaseObject_Type.tp_hash) {
    return true;
  }
  // torch.Tensor.__hash__ returns id(self) unless a __torch_function__ override
  // intercepts it; the known implementations that do not are configured.
  if (_PyType_Lookup(cls, config.hash_name) != config.tensor_hash) {
    return false;
  }
  PyObject* torch_function = _PyType_Lookup(cls, config.torch_function_name);
  for (PyObject* known : config.identity_torch_functions) {
    if (torch_function == known) {
      return true;
    }
  }
  return false;
}

ClassFacts compute_facts(PyTypeObject* cls) {
  ClassFacts facts{};
  facts.is_module = PyType_IsSubtype(cls, config.module_class) != 0;
  facts.hashes_by_identity = is_identity_hash(cls);
  if (facts.is_module) {
    for (unsigned attribute = 0; attribute < kModuleAttributeCount; ++attribute) {
      if (_PyType_Lookup(cls, config.names[attribute]) == config.originals[attribute]) {
        facts.kept |= mask_of(static_cast<ModuleAttribute>(attribute));
      }
    }
  }
  return facts;
}

}  // namespace

void configure_classes(PyObject* module_class, PyObject* parameter_class, PyObject* tensor_hash,
                       PyObject* identity_torch_functions) {
  if (!PyType_Check(module_class) || !PyTuple_Check(identity_torch_functions)) {
    throw std::invalid_argument("configure_classes expects nn.Module and a tuple");
  }
  config.module_class = reinterpret_cast<PyTypeObject*>(Py_NewRef(module_class));
  config.parameter_class = Py_NewRef(parameter_class);
  config.tensor_hash = Py_NewRef(tensor_hash);
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(identity_torch_functions); ++i) {
    config.identity_torch_functions.push_back(
        Py_NewRef(PyTuple_GET_ITEM(identity_torch_functions, i)));
  }
  for (unsigned attribute = 0; attribute < kModuleAttributeCount; ++attribute) {
    config.names[attribute] = PyUnicode_InternFromString(kAttributeNames[attribute]);
    PyObject* original = _PyType_Lookup(config.module_class, config.names[attribute]);
    config.originals[attribute] = original == nullptr ? nullptr : Py_NewRef(original);
  }
  config.hash_name = PyUnicode_InternFromString("__hash__");
  config.torch_function_name = PyUnicode_InternFromString("__torch_function__");
  facts_cache.clear();
}

PyObject* parameter_class() { return config.parameter_class; }

PyObject* attribute_name(ModuleAttribute attribute) { return config.names[attribute]; }

ClassFacts facts_of(PyTypeObject* cls) {
  // Classes repeat: most modules are of the class of the one before.
  static PyTypeObject* last_class = nullptr;
  static CachedFacts last_facts{};
  unsigned int tag = cls->tp_version_tag;
  if (cls == last_class && tag != 0 && tag == last_facts.version_tag) {
    return last_facts.facts;
  }
  auto found = facts_cache.find(cls);
  if (found != facts_cache.end() && tag != 0 && found->second.version_tag == tag) {
    last_class = cls;
    last_facts = found->second;
    return found->second.facts;
  }
  ClassFacts facts = compute_facts(cls);
  // _PyType_Lookup assigns the class a version tag when it can; without one
  // (tag 0) the answer is not cached and is recomputed next time.
  tag = cls->tp_version_tag;
  if (tag != 0) {
    if (facts_cache.size() >= kCacheCapacity) {
      facts_cache.clear();
    }
    facts_cache[cls] = CachedFacts{tag, facts};
    last_class = cls;
    last_facts = CachedFacts{tag, facts};
  }
  return facts;
}

bool instance_keeps(PyObject* instance_dict, AttributeMask mask) {
  mask &= kShadowable;
  for (unsigned attribute = 0; mask != 0; ++attribute, mask >>= 1) {
    if ((mask & 1) != 0 && PyDict_GetItemWithError(instance_dict, config.names[attribute]) != nullptr) {
      return false;
    }
    if (PyErr_Occurred()) {  // a key with a raising __eq__: let PyTorch meet it
      PyErr_Clear();
      return false;
    }
  }
  return true;
}

}  // namespace torchwalk
