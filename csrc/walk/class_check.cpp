#include "walk/class_check.h"

#include <stdexcept>
#include <vector>

#include "common/address_slot.h"

namespace torchwalk {
namespace {

constexpr const char* kAttributeNames[kModuleAttributeCount] = {
    "named_modules",    "modules",       "named_parameters",    "parameters",
    "named_buffers",    "buffers",       "_named_members",      "named_children",
    "children",         "get_submodule", "get_parameter",       "get_buffer",
    "__getattribute__", "__getattr__",   "_parameters",         "_buffers",
    "_modules",         "state_dict",    "_save_to_state_dict", "get_extra_state",
};

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
  // What torchwalk.install() put in their place, or null.
  PyObject* replacements[kModuleAttributeCount] = {};
  PyObject* hash_name = nullptr;
  PyObject* torch_function_name = nullptr;
};

// Owned references that live as long as the extension (never released: the
// interpreter may already be finalising when static destructors run).
Configuration config;

// A cache of answers by class: a walk meets few classes, but calls facts_of
// for every module, so a hit must be cheap and two classes of one walk must
// not keep evicting each other (with a direct-mapped table, two of a model's
// classes landing in one slot made every call recompute both answers). So
// each class has kWays neighbouring slots to be cached in. An entry is valid
// while the class keeps the version tag it had: CPython gives a class a new
// tag when it (or a base) is modified, and never reuses a tag for another
// class, so a dead class's entry can never match a new class at its address.
struct CacheSlot {
  PyTypeObject* cls = nullptr;
  unsigned int version_tag = 0;
  ClassFacts facts{};
};

constexpr unsigned kCacheBits = 9;
constexpr size_t kCacheMask = (size_t{1} << kCacheBits) - 1;
constexpr unsigned kWays = 4;
CacheSlot facts_cache[size_t{1} << kCacheBits];
unsigned next_eviction = 0;  // which of a full set's slots to reuse next

size_t home_slot(PyTypeObject* cls) { return address_slot(cls, kCacheBits); }

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

void forget_facts() {
  for (CacheSlot& slot : facts_cache) {
    slot = CacheSlot{};
  }
}

ClassFacts compute_facts(PyTypeObject* cls) {
  ClassFacts facts{};
  facts.is_module = PyType_IsSubtype(cls, config.module_class) != 0;
  if (is_identity_hash(cls)) {
    facts.kept |= kHashesByIdentity;
  }
  PyTypeObject* metaclass = Py_TYPE(reinterpret_cast<PyObject*>(cls));
  if (metaclass->tp_getattro == PyType_Type.tp_getattro &&
      _PyType_Lookup(metaclass, config.names[kGetExtraState]) == nullptr) {
    facts.kept |= kExtraStateLookupIsMro;
  }
  if (facts.is_module) {
    for (unsigned attribute = 0; attribute < kModuleAttributeCount; ++attribute) {
      PyObject* found = _PyType_Lookup(cls, config.names[attribute]);
      if (found == config.originals[attribute] ||
          (found != nullptr && found == config.replacements[attribute])) {
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
  forget_facts();
}

PyObject* parameter_class() { return config.parameter_class; }

PyTypeObject* module_class() { return config.module_class; }

void set_replacements(PyObject* replacements) {
  if (!PyDict_Check(replacements)) {
    throw std::invalid_argument("set_replacements expects a dict");
  }
  for (unsigned attribute = 0; attribute < kModuleAttributeCount; ++attribute) {
    PyObject* replacement = PyDict_GetItemWithError(replacements, config.names[attribute]);
    if (replacement == nullptr && PyErr_Occurred()) {
      throw std::invalid_argument("set_replacements: unhashable key");
    }
    Py_XSETREF(config.replacements[attribute], Py_XNewRef(replacement));
  }
  // The cached answers were given under the previous replacements.
  forget_facts();
}

PyObject* attribute_name(ModuleAttribute attribute) { return config.names[attribute]; }

ClassFacts facts_of(PyTypeObject* cls) {
  size_t home = home_slot(cls);
  for (unsigned way = 0; way < kWays; ++way) {
    const CacheSlot& slot = facts_cache[(home + way) & kCacheMask];
    if (slot.cls == cls && slot.version_tag != 0 && slot.version_tag == cls->tp_version_tag) {
      return slot.facts;
    }
  }
  ClassFacts facts = compute_facts(cls);
  // The class's own stale slot, else a free one, else one in turn.
  CacheSlot* target = nullptr;
  for (unsigned way = 0; way < kWays && target == nullptr; ++way) {
    CacheSlot& slot = facts_cache[(home + way) & kCacheMask];
    if (slot.cls == cls || slot.cls == nullptr) {
      target = &slot;
    }
  }
  if (target == nullptr) {
    target = &facts_cache[(home + next_eviction++ % kWays) & kCacheMask];
  }
  // _PyType_Lookup gave the class a version tag if it could; without one
  // (tag 0) the slot never matches and the answer is recomputed next time.
  *target = CacheSlot{cls, cls->tp_version_tag, facts};
  return facts;
}

}  // namespace torchwalk
