#include "walk/state_dict.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bridge/python_tensors.h"
#include "common/gc_pause.h"
#include "common/python_error.h"
#include "walk/dotted_name.h"
#include "walk/hand_back.h"
#include "walk/instance_dict.h"
#include "walk/position_walk.h"

namespace torchwalk {
namespace {

struct Names {
  PyObject* version = PyUnicode_InternFromString("_version");
  PyObject* version_key = PyUnicode_InternFromString("version");
  PyObject* metadata = PyUnicode_InternFromString("_metadata");
  // The keywords of PyTorch's call on a child: state_dict(destination=,
  // prefix=, keep_vars=).
  PyObject* child_call_keywords = Py_BuildValue("(sss)", "destination", "prefix", "keep_vars");
};

// Made on first use (with the GIL held) and kept for the extension's lifetime.
const Names& names() {
  static const Names interned;
  return interned;
}

constexpr char kExtraStateSuffix[] = "_extra_state";

// What a module's class must resolve to nn.Module's own for the fast path:
// the three dicts read as attribute access would, `state_dict` (PyTorch's
// parent calls it on each child), `_save_to_state_dict`, and a plain
// `getattr(cls, "get_extra_state")`.
constexpr AttributeMask kSavesAsPyTorch =
    kReadsDicts | mask_of(kStateDict, kSaveToStateDict) | kExtraStateLookupIsMro;

// `hasattr(destination, "_metadata")`: the attribute (new reference) or null
// when reading it raises AttributeError.
PyObject* optional_attribute(PyObject* object, PyObject* name) {
  PyObject* found = nullptr;
#if PY_VERSION_HEX >= 0x030D0000
  int status = PyObject_GetOptionalAttr(object, name, &found);
#else
  int status = _PyObject_LookupAttr(object, name, &found);
#endif
  if (status < 0) {
    raise_python_error();
  }
  return found;
}

// A module's state as the fast path reads it, all owned: Python code (extra
// state, a tensor subclass's detach, a handed-back child) runs between reads.
struct ModuleState {
  py::object module;
  py::object parameters;      // `_parameters`, an exact dict
  py::object buffers;         // `_buffers`, an exact dict
  py::object children;        // `_modules`, an exact dict
  py::object non_persistent;  // `_non_persistent_buffers_set`; unset if no buffer is saved
  py::object version;         // `_version`
  bool saves_extra_state = false;
};

// A hook dict that PyTorch's `for hook in hooks.values()` finds empty.
bool is_empty_hook_dict(PyObject* hooks) {
  return hooks != nullptr && (PyDict_CheckExact(hooks) || PyODict_CheckExact(hooks)) &&
         PyDict_GET_SIZE(hooks) == 0;
}

// Hands back unless every key of a non-None entry is a name the fast path can
// join (PyTorch joins only those: `prefix + name`).
size_t check_names(PyObject* members) {
  size_t present = 0;
  Py_ssize_t cursor = 0;
  PyObject* name = nullptr;
  PyObject* member = nullptr;
  while (PyDict_Next(members, &cursor, &name, &member)) {
    if (member != Py_None) {
      Py_ssize_t size = 0;
      utf8_of(name, &size);
      ++present;
    }
  }
  return present;
}

// The instance-dict entries the fast path reads.
struct InstanceEntries {
  py::object parameters;
  py::object buffers;
  py::object children;
  bool has_version = false;
  bool has_hooks = false;       // a state-dict hook dict that is not empty, or not a dict
  bool shadows_method = false;  // `state_dict` or `_save_to_state_dict` is set on the instance
};

// The entries, by one lookup each, stopping at the first that hands back.
// (Not one pass over the whole instance dict: a module's dict holds about 25
// entries, so such a pass does more work than these few lookups.)
void look_up_instance_dict(PyObject* dict, bool remember, InstanceEntries& entries) {
  if (!instance_keeps(dict, mask_of(kStateDict, kSaveToStateDict), remember)) {
    entries.shadows_method = true;
    return;
  }
  for (InstanceEntry hooks :
       {InstanceEntry::state_dict_pre_hooks, InstanceEntry::state_dict_hooks}) {
    if (!is_empty_hook_dict(instance_entry(dict, hooks, remember).ptr())) {
      entries.has_hooks = true;
      return;
    }
  }
  entries.parameters = instance_entry(dict, InstanceEntry::parameters, remember);
  entries.buffers = instance_entry(dict, InstanceEntry::buffers, remember);
  entries.children = instance_entry(dict, InstanceEntry::modules, remember);
  entries.has_version = static_cast<bool>(instance_entry(dict, InstanceEntry::version, remember));
}

// `module._version`: read from the class when the instance dict has no such
// entry and the class attribute is no descriptor (attribute access then gives
// the class attribute itself), else by attribute access.
py::object version_of(PyObject* module, bool instance_has_version) {
  if (!instance_has_version) {
    PyObject* found = _PyType_Lookup(Py_TYPE(module), names().version);
    if (found != nullptr && Py_TYPE(found)->tp_descr_get == nullptr) {
      return py::reinterpret_borrow<py::object>(found);
    }
  }
  return py::reinterpret_steal<py::object>(checked(PyObject_GetAttr(module, names().version)));
}

// The module's state when PyTorch's state_dict on it would be exactly what
// the fast path does (no hooks, no overrides, plain dicts and names), else
// std::nullopt. Reads only: nothing has been written when it declines.
// `remember`: whether the walk is small enough to read through the memo.
std::optional<ModuleState> read_module(PyObject* module, AttributeMask keeps,
                                       bool module_class_keeps_extra_state, bool remember) {
  try {
    ModuleState state;
    state.module = py::reinterpret_borrow<py::object>(module);
    ClassFacts facts = facts_of(Py_TYPE(module));
    AttributeMask class_keeps = keeps | kSavesAsPyTorch;
    if (!facts.is_module || !facts.keeps(class_keeps)) {
      return std::nullopt;
    }
    py::object dict = instance_dict(module);
    if (!instance_keeps(dict.ptr(), keeps, remember)) {  // the root's extra methods
      return std::nullopt;
    }
    InstanceEntries entries;
    look_up_instance_dict(dict.ptr(), remember, entries);
    if (entries.shadows_method || entries.has_hooks) {
      return std::nullopt;
    }
    for (const py::object& members : {entries.parameters, entries.buffers, entries.children}) {
      if (!members || !PyDict_CheckExact(members.ptr())) {
        return std::nullopt;
      }
    }
    state.parameters = std::move(entries.parameters);
    state.buffers = std::move(entries.buffers);
    state.children = std::move(entries.children);
    check_names(state.parameters.ptr());
    check_names(state.children.ptr());
    if (check_names(state.buffers.ptr()) > 0) {
      py::object non_persistent =
          instance_entry(dict.ptr(), InstanceEntry::non_persistent_buffers, remember);
      if (!non_persistent || !(PySet_CheckExact(non_persistent.ptr()) ||
                               PyFrozenSet_CheckExact(non_persistent.ptr()))) {
        return std::nullopt;
      }
      state.non_persistent = std::move(non_persistent);
    }
    // PyTorch asks `getattr(cls, "get_extra_state", Module.get_extra_state) is
    // not Module.get_extra_state`: only answerable here while nn.Module still
    // has the function it had at import.
    if (!facts.keeps(mask_of(kGetExtraState))) {
      if (!module_class_keeps_extra_state) {
        return std::nullopt;
      }
      state.saves_extra_state = true;
    }
    // Last: attribute access can run a descriptor, which must not run when
    // the module is handed back (PyTorch then reads `_version` itself).
    state.version = version_of(module, entries.has_version);
    return state;
  } catch (const HandBack&) {
    return std::nullopt;
  }
}

// What Python's dict iteration raises when the loop body changed the dict.
void check_unchanged(PyObject* dict, Py_ssize_t size) {
  if (PyDict_GET_SIZE(dict) != size) {
    PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
    raise_python_error();
  }
}

// The visitor of the walk (position_walk.h): saves each module as PyTorch's
// state_dict would, and hands each module that PyTorch must save itself to
// its own `state_dict` method, which then saves everything below it.
class StateDictSaver {
 public:
  StateDictSaver(py::object destination, PyObject* root_prefix, PyObject* keep_vars,
                 bool module_class_keeps_extra_state, ModuleState root_state)
      : destination_(std::move(destination)),
        prefix_(root_prefix, DottedName::Style::key_prefix),
        keep_vars_(keep_vars),
        module_class_keeps_extra_state_(module_class_keeps_extra_state),
        root_prefix_(root_prefix),
        root_state_(std::move(root_state)) {}

  const py::object& destination() const { return destination_; }

  DottedName& prefix() { return prefix_; }

  py::object enter(PyObject* module, const Position& at) {
    if (at.depth == 0) {
      // `prefix[:-1]` of the root's prefix, which need not end with ".".
      auto metadata_key = py::reinterpret_steal<py::object>(checked(PyUnicode_Substring(
          root_prefix_, 0, std::max<Py_ssize_t>(PyUnicode_GET_LENGTH(root_prefix_) - 1, 0))));
      save(root_state_, metadata_key.ptr());
      return root_state_.children;
    }
    std::optional<ModuleState> state =
        read_module(module, 0, module_class_keeps_extra_state_, at.remember);
    if (!state) {
      hand_to_pytorch(module);
      return {};
    }
    auto metadata_key = py::reinterpret_steal<py::object>(prefix_.without_trailing_dot());
    save(*state, metadata_key.ptr());
    return std::move(state->children);
  }

 private:
  // `child.state_dict(destination=..., prefix=..., keep_vars=...)`, as
  // PyTorch's parent calls it (its result is not used there either).
  void hand_to_pytorch(PyObject* child) {
    auto method = py::reinterpret_steal<py::object>(
        checked(PyObject_GetAttr(child, attribute_name(kStateDict))));
    auto child_prefix = py::reinterpret_steal<py::object>(prefix_.to_str());
    PyObject* arguments[] = {destination_.ptr(), child_prefix.ptr(), keep_vars_};
    Py_DECREF(
        checked(PyObject_Vectorcall(method.ptr(), arguments, 0, names().child_call_keywords)));
  }

  // PyTorch's state_dict on one module up to its children: the metadata,
  // then `_save_to_state_dict`.
  void save(const ModuleState& state, PyObject* metadata_key) {
    PyObject* module = state.module.ptr();
    auto local_metadata = py::reinterpret_steal<py::object>(checked(PyDict_New()));
    if (PyDict_SetItem(local_metadata.ptr(), names().version_key, state.version.ptr()) != 0) {
      raise_python_error();
    }
    record_metadata(metadata_key, local_metadata.ptr());
    save_tensors(state.parameters.ptr(), nullptr);
    save_tensors(state.buffers.ptr(), state.non_persistent.ptr());
    if (state.saves_extra_state) {
      auto key = py::reinterpret_steal<py::object>(prefix_.joined_with(kExtraStateSuffix));
      auto extra_state = py::reinterpret_steal<py::object>(
          checked(PyObject_CallMethodNoArgs(module, attribute_name(kGetExtraState))));
      set_item(key.ptr(), extra_state.ptr());
    }
  }

  // `if hasattr(destination, "_metadata"): destination._metadata[key] = local_metadata`.
  void record_metadata(PyObject* key, PyObject* local_metadata) {
    PyObject* destination = destination_.ptr();
    if (PyDict_CheckExact(destination)) {
      return;  // a plain dict has no attributes
    }
    py::object metadata;
    if (PyODict_CheckExact(destination)) {
      // OrderedDict's class has no `_metadata`, and its attribute access is
      // the generic one: the attribute is the instance dict's entry, if any.
      PyObject** dict = _PyObject_GetDictPtr(destination);
      if (dict == nullptr || *dict == nullptr) {
        return;
      }
      PyObject* found = PyDict_GetItemWithError(*dict, names().metadata);
      if (found == nullptr) {
        if (PyErr_Occurred()) {
          raise_python_error();
        }
        return;
      }
      metadata = py::reinterpret_borrow<py::object>(found);
    } else {
      metadata =
          py::reinterpret_steal<py::object>(optional_attribute(destination, names().metadata));
      if (!metadata) {
        return;
      }
      // PyTorch reads the attribute a second time; only an OrderedDict's
      // instance dict is known to give the same object again.
      metadata = py::reinterpret_steal<py::object>(
          checked(PyObject_GetAttr(destination, names().metadata)));
    }
    if (PyObject_SetItem(metadata.ptr(), key, local_metadata) != 0) {
      raise_python_error();
    }
  }

  // The non-None entries of `_parameters` (no `non_persistent` set) or of
  // `_buffers` (those not in `non_persistent`), detached unless keep_vars.
  void save_tensors(PyObject* members, PyObject* non_persistent) {
    Py_ssize_t size = PyDict_GET_SIZE(members);
    Py_ssize_t cursor = 0;
    PyObject* name = nullptr;
    PyObject* member = nullptr;
    while (PyDict_Next(members, &cursor, &name, &member)) {
      if (member == Py_None) {
        continue;
      }
      auto owned_name = py::reinterpret_borrow<py::object>(name);
      auto owned_member = py::reinterpret_borrow<py::object>(member);
      if (non_persistent != nullptr) {
        int skipped = PySet_Contains(non_persistent, name);
        if (skipped < 0) {
          raise_python_error();
        }
        if (skipped) {
          continue;
        }
      }
      auto key = py::reinterpret_steal<py::object>(prefix_.joined_with(name));
      auto value = py::reinterpret_steal<py::object>(
          keep_vars_ == Py_True ? Py_NewRef(member) : checked(detached(member, parameter_class())));
      set_item(key.ptr(), value.ptr());
      check_unchanged(members, size);
    }
  }

  void set_item(PyObject* key, PyObject* value) {
    if (PyObject_SetItem(destination_.ptr(), key, value) != 0) {
      raise_python_error();
    }
  }

  py::object destination_;
  DottedName prefix_;
  PyObject* keep_vars_;  // Py_True or Py_False
  bool module_class_keeps_extra_state_;
  PyObject* root_prefix_;  // an exact str, alive for the whole call
  ModuleState root_state_;
};

py::object new_destination() {
  auto destination = py::reinterpret_steal<py::object>(checked(PyODict_New()));
  auto metadata = py::reinterpret_steal<py::object>(checked(PyODict_New()));
  if (PyObject_SetAttr(destination.ptr(), names().metadata, metadata.ptr()) != 0) {
    raise_python_error();
  }
  return destination;
}

}  // namespace

std::optional<py::object> walk_state_dict(py::handle root, const StateDictQuery& query) {
  PyObject* prefix = query.prefix.ptr();
  if (!PyUnicode_CheckExact(prefix) || !PyBool_Check(query.keep_vars.ptr())) {
    return std::nullopt;
  }
  bool module_class_keeps_extra_state = facts_of(module_class()).keeps(mask_of(kGetExtraState));
  std::optional<ModuleState> root_state =
      read_module(root.ptr(), query.root_keeps, module_class_keeps_extra_state, true);
  if (!root_state) {
    return std::nullopt;
  }
  std::optional<StateDictSaver> saver;
  try {
    py::object destination = query.destination.is_none()
                                 ? new_destination()
                                 : py::reinterpret_borrow<py::object>(query.destination);
    saver.emplace(destination, prefix, query.keep_vars.ptr(), module_class_keeps_extra_state,
                  std::move(*root_state));
  } catch (const HandBack&) {  // a prefix without a UTF-8 form
    return std::nullopt;
  }
  try {
    // Tens of thousands of new tensors would trigger dozens of collections,
    // each traversing the whole model; paused, it runs once afterwards.
    GarbageCollectorPause pause;
    walk_positions(root.ptr(), WalkOptions{&saver->prefix(), "its state_dict"}, *saver);
  } catch (const HandBack&) {
    // Names are checked before a module is saved; only code run during the
    // walk (extra state, a handed-back child) can have put others there.
    raise_error(PyExc_RuntimeError, "dictionary keys changed during iteration");
  }
  return saver->destination();
}

}  // namespace torchwalk
