#include "walk/instance_dict.h"

#include <cstdint>

#include "common/address_slot.h"

namespace torchwalk {
namespace {

constexpr unsigned kEntryCount = static_cast<unsigned>(InstanceEntry::count);

PyObject* entry_name(InstanceEntry entry) {
  static PyObject* const names[kEntryCount] = {
      PyUnicode_InternFromString("_parameters"),
      PyUnicode_InternFromString("_buffers"),
      PyUnicode_InternFromString("_modules"),
      PyUnicode_InternFromString("_state_dict_pre_hooks"),
      PyUnicode_InternFromString("_state_dict_hooks"),
      PyUnicode_InternFromString("_version"),
      PyUnicode_InternFromString("_non_persistent_buffers_set"),
  };
  return names[static_cast<unsigned>(entry)];
}

// Attributes an instance dict can shadow: methods, not the dunders (looked up
// on the class) nor the three dicts (which live in the instance dict).
constexpr AttributeMask kEveryAttribute = (AttributeMask{1} << kModuleAttributeCount) - 1;
constexpr AttributeMask kShadowable =
    kEveryAttribute &
    ~mask_of(kGetattribute, kGetattr, kParametersDict, kBuffersDict, kModulesDict);

// `dict[name]`, borrowed, or null when absent; a hand-back when the lookup
// raised (a key with a raising __eq__: PyTorch then meets the error itself).
PyObject* look_up(PyObject* dict, PyObject* name) {
  PyObject* found = PyDict_GetItemWithError(dict, name);
  if (found == nullptr && PyErr_Occurred()) {
    PyErr_Clear();
    hand_back();
  }
  return found;
}

// The plain reads, one lookup per question.
bool shadows_directly(PyObject* dict, AttributeMask methods) {
  for (; methods != 0; methods &= methods - 1) {
    auto attribute = static_cast<ModuleAttribute>(__builtin_ctz(methods));
    if (look_up(dict, attribute_name(attribute)) != nullptr) {
      return true;
    }
  }
  return false;
}

PyObject* entry_directly(PyObject* dict, InstanceEntry entry) {
  return look_up(dict, entry_name(entry));
}

#if PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
#define TORCHWALK_DICTS_HAVE_VERSIONS 1

// What was read from one dict at one version. The pointers are borrowed from
// the dict, which holds them for as long as it keeps that version; `dict` is
// an identity, compared and never dereferenced.
struct Reading {
  PyObject* dict = nullptr;
  uint64_t version = 0;
  AttributeMask methods_read = 0;
  AttributeMask methods_present = 0;
  uint32_t entries_read = 0;
  PyObject* entries[kEntryCount] = {};  // null: absent
};

// Direct-mapped by dict address; a walk of a large model overwrites it as it
// goes, which costs little next to that walk's cache misses.
constexpr unsigned kMemoBits = 12;
Reading memo[size_t{1} << kMemoBits];

uint64_t version_of(PyObject* dict) {
  _Pragma("GCC diagnostic push");
  _Pragma("GCC diagnostic ignored \"-Wdeprecated-declarations\"");
  return reinterpret_cast<PyDictObject*>(dict)->ma_version_tag;
  _Pragma("GCC diagnostic pop");
}

Reading& slot_of(PyObject* dict) { return memo[address_slot(dict, kMemoBits)]; }

// The reading of `dict` as it is now: the remembered one, or a blank one.
Reading& reading_of(PyObject* dict) {
  Reading& reading = slot_of(dict);
  uint64_t version = version_of(dict);
  if (reading.dict != dict || reading.version != version) {
    reading = Reading{dict, version};
  }
  return reading;
}

// The slot still holding `dict` at `version` after a lookup, which can run a
// key's __eq__ (and that code can change the dict or walk another model), or
// null: then the answer is used but not remembered.
Reading* unchanged_reading(PyObject* dict, uint64_t version) {
  Reading& reading = slot_of(dict);
  if (reading.dict != dict || reading.version != version || version_of(dict) != version) {
    return nullptr;
  }
  return &reading;
}

bool remembered_shadows(PyObject* dict, AttributeMask methods) {
  Reading& reading = reading_of(dict);
  AttributeMask unread = methods & ~reading.methods_read;
  if (unread == 0) {
    return (reading.methods_present & methods) != 0;
  }
  uint64_t version = reading.version;
  AttributeMask present = 0;
  for (AttributeMask left = unread; left != 0; left &= left - 1) {
    unsigned attribute = __builtin_ctz(left);
    if (look_up(dict, attribute_name(static_cast<ModuleAttribute>(attribute))) != nullptr) {
      present |= AttributeMask{1} << attribute;
    }
  }
  Reading* still = unchanged_reading(dict, version);
  if (still == nullptr) {
    return true;  // the dict changed under the lookups: let PyTorch answer
  }
  still->methods_read |= unread;
  still->methods_present |= present;
  return (still->methods_present & methods) != 0;
}

PyObject* remembered_entry(PyObject* dict, InstanceEntry entry) {
  Reading& reading = reading_of(dict);
  auto index = static_cast<unsigned>(entry);
  if (reading.entries_read & (uint32_t{1} << index)) {
    return reading.entries[index];
  }
  uint64_t version = reading.version;
  PyObject* found = look_up(dict, entry_name(entry));
  if (Reading* still = unchanged_reading(dict, version)) {
    still->entries_read |= uint32_t{1} << index;
    still->entries[index] = found;
  }
  return found;
}

#endif

bool shadows(PyObject* dict, AttributeMask methods, bool remember) {
#ifdef TORCHWALK_DICTS_HAVE_VERSIONS
  if (remember) {
    return remembered_shadows(dict, methods);
  }
#endif
  return shadows_directly(dict, methods);
}

PyObject* entry_of(PyObject* dict, InstanceEntry entry, bool remember) {
#ifdef TORCHWALK_DICTS_HAVE_VERSIONS
  if (remember) {
    return remembered_entry(dict, entry);
  }
#endif
  return entry_directly(dict, entry);
}

}  // namespace

py::object instance_dict(PyObject* object) {
  PyObject* dict = PyObject_GenericGetDict(object, nullptr);
  if (dict == nullptr) {
    PyErr_Clear();
    hand_back();
  }
  return py::reinterpret_steal<py::object>(dict);
}

bool instance_keeps(PyObject* dict, AttributeMask mask, bool remember) {
  try {
    return (mask & kShadowable) == 0 || !shadows(dict, mask & kShadowable, remember);
  } catch (const HandBack&) {
    return false;
  }
}

py::object instance_entry(PyObject* dict, InstanceEntry entry, bool remember) {
  return py::reinterpret_borrow<py::object>(entry_of(dict, entry, remember));
}

py::object exact_dict_entry(PyObject* dict, InstanceEntry entry, bool remember) {
  py::object found = instance_entry(dict, entry, remember);
  if (!found || !PyDict_CheckExact(found.ptr())) {
    hand_back();
  }
  return found;
}

py::object checked_instance_dict(PyObject* module, AttributeMask mask, bool remember) {
  ClassFacts facts = facts_of(Py_TYPE(module));
  if (!facts.is_module || !facts.keeps(mask)) {
    hand_back();
  }
  py::object dict = instance_dict(module);
  if (!instance_keeps(dict.ptr(), mask, remember)) {
    hand_back();
  }
  return dict;
}

}  // namespace torchwalk
