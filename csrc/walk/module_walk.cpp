#include "walk/module_walk.h"

#include <cstddef>
#include <cstring>
#include <memory_resource>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/cycle_error.h"
#include "common/gc_pause.h"
#include "common/pointer_set.h"
#include "common/prefetch.h"
#include "walk/hand_back.h"
#include "walk/handover_iterator.h"
#include "walk/instance_dict.h"
#include "walk/name_text.h"
#include "walk/walk_size.h"

namespace torchwalk {
namespace {

// The dotted path of the module being visited, kept as UTF-8 and grown and
// cut as the walk goes down and up, so that a name string is only made when a
// name is yielded (a 100,000-deep chain then costs memory for its frames, not
// for 100,000 paths of growing length).
class PathBuffer {
 public:
  explicit PathBuffer(PyObject* prefix) {
    Py_ssize_t size = 0;
    const char* text = utf8_of(prefix, &size);
    text_.assign(text, static_cast<size_t>(size));
    if (!PyUnicode_IS_ASCII(prefix)) {
      first_non_ascii_ = 0;
    }
  }

  size_t length() const { return text_.size(); }

  const std::string& text() const { return text_; }

  void truncate(size_t length) {
    text_.resize(length);
    if (first_non_ascii_ >= length) {
      first_non_ascii_ = std::string::npos;
    }
    if (length != text_of_whole_name_) {
      whole_name_.release().dec_ref();
    }
  }

  // PyTorch's `prefix + ("." if prefix else "") + name`.
  void append(PyObject* name) {
    Py_ssize_t size = 0;
    const char* text = utf8_of(name, &size);
    if (!PyUnicode_IS_ASCII(name) && first_non_ascii_ == std::string::npos) {
      first_non_ascii_ = text_.size();
    }
    if (text_.empty()) {
      whole_name_ = py::reinterpret_borrow<py::object>(name);
      text_of_whole_name_ = static_cast<size_t>(size);
    } else {
      whole_name_.release().dec_ref();
      text_.push_back('.');
    }
    text_.append(text, static_cast<size_t>(size));
  }

  // A new str holding the path: the name itself when the path is one name
  // appended to an empty path ("" + "" + name is name in CPython).
  PyObject* to_str() const {
    if (whole_name_) {
      return Py_NewRef(whole_name_.ptr());
    }
    return new_str(text_.data(), text_.size(), is_ascii());
  }

  // Hands back unless `joined_with(name)` would succeed.
  void check_joinable(PyObject* name) const {
    Py_ssize_t size = 0;
    utf8_of(name, &size);
  }

  // A new str holding the path joined with `name`, as `append` would.
  PyObject* joined_with(PyObject* name) {
    if (text_.empty()) {
      if (!PyUnicode_CheckExact(name)) {
        hand_back();  // "" + "" + name raises, or calls a str subclass's __radd__
      }
      return Py_NewRef(name);  // "" + "" + name is name itself in CPython
    }
    Py_ssize_t size = 0;
    const char* text = utf8_of(name, &size);
    if (!is_ascii() || !PyUnicode_IS_ASCII(name)) {
      size_t length = text_.size();
      append(name);
      PyObject* joined = new_str(text_.data(), text_.size(), false);
      truncate(length);
      return joined;
    }
    // The common case, written straight into the new str.
    PyObject* joined = PyUnicode_New(static_cast<Py_ssize_t>(text_.size()) + 1 + size, 127);
    if (joined == nullptr) {
      throw py::error_already_set();
    }
    Py_UCS1* out = PyUnicode_1BYTE_DATA(joined);
    std::memcpy(out, text_.data(), text_.size());
    out[text_.size()] = '.';
    std::memcpy(out + text_.size() + 1, text, static_cast<size_t>(size));
    return joined;
  }

 private:
  bool is_ascii() const { return first_non_ascii_ == std::string::npos; }

  std::string text_;
  size_t first_non_ascii_ = std::string::npos;
  py::object whole_name_;  // set while the path is exactly this one name
  size_t text_of_whole_name_ = 0;
};

// Working memory of one walk. The first kilobytes come from the C stack, so
// that a walk of a small model allocates nothing on the heap (where the
// walk itself is short, allocating the result and stack vectors is a large
// share of a call); larger walks continue on the heap, and everything is
// released at the end.
class Scratch {
 public:
  std::pmr::memory_resource* memory() { return &arena_; }

 private:
  alignas(std::max_align_t) std::byte buffer_[2048];
  std::pmr::monotonic_buffer_resource arena_{buffer_, sizeof buffer_};
};

// What the generator would yield, held as owned references until the end of
// the walk, when it becomes the iterator the drop-in returns. Owned, because
// Python code can run during a walk (a key's __eq__ in an instance dict
// lookup, the garbage collector when CPython creates an instance dict) and
// change the tree.
class Results {
 public:
  Results(bool with_names, Scratch& scratch) : with_names_(with_names), items_(scratch.memory()) {
    items_.reserve(kTypicalCount);
  }
  ~Results() {
    for (PyObject* item : items_) {
      Py_XDECREF(item);
    }
  }
  Results(const Results&) = delete;
  Results& operator=(const Results&) = delete;

  // Takes ownership of `name` (null without names); `value` is borrowed.
  void add(PyObject* name, PyObject* value) {
    if (with_names_) {
      items_.push_back(name);
    }
    items_.push_back(Py_NewRef(value));
  }

  bool with_names() const { return with_names_; }

  size_t size() const { return items_.size() / (with_names_ ? 2 : 1); }

  void reserve(size_t count) { items_.reserve(count * (with_names_ ? 2 : 1)); }

  // The items, as the iterator the drop-ins return (see handover_iterator.h).
  py::object to_iterator() {
    // Tens of thousands of new tuples would trigger dozens of collections,
    // each traversing the whole model; pausing the collector makes it run
    // once afterwards instead.
    GarbageCollectorPause pause;
    size_t stride = with_names_ ? 2 : 1;
    auto iterator = py::reinterpret_steal<py::object>(
        new_handover_iterator(static_cast<Py_ssize_t>(items_.size() / stride)));
    if (!iterator) {
      throw py::error_already_set();
    }
    for (size_t i = 0, j = 0; i < items_.size(); i += stride, ++j) {
      PyObject* entry = items_[i];
      if (with_names_) {
        entry = PyTuple_New(2);
        if (entry == nullptr) {
          throw py::error_already_set();
        }
        PyTuple_SET_ITEM(entry, 0, std::exchange(items_[i], nullptr));
        PyTuple_SET_ITEM(entry, 1, std::exchange(items_[i + 1], nullptr));
      } else {
        items_[i] = nullptr;
      }
      set_handover_item(iterator.ptr(), static_cast<Py_ssize_t>(j), entry);
    }
    return iterator;
  }

 private:
  static constexpr size_t kTypicalCount = 32;

  bool with_names_;
  std::pmr::vector<PyObject*> items_;  // owned; name, value, name, value, ... or values
};

// The sizes of recent walks, by root (read and written with the GIL held).
WalkSizeHints member_walk_sizes;
WalkSizeHints module_walk_sizes;

// One module whose children are being walked.
struct Frame {
  py::object module;
  py::object children;  // its `_modules` dict
  Py_ssize_t cursor;    // PyDict_Next position in `children`
  size_t path_length;   // the path buffer's length at this module
};

// Visits modules in the order of PyTorch's recursive `named_modules`, with an
// explicit stack. `memo` is the identity memo: filled when `remove_duplicate`,
// only read otherwise. `visit(module, instance_dict, remember)` is called with
// `path` holding the module's dotted path (`remember`: whether the walk is
// still small enough to read instance dicts through the memo).
template <typename Visit>
void walk_tree(PyObject* root, AttributeMask root_keeps, PathBuffer& path, PointerSet& memo,
               bool remove_duplicate, Scratch& scratch, Visit&& visit) {
  constexpr AttributeMask kEveryModuleKeeps =
      kReadsDicts | mask_of(kNamedModules) | kHashesByIdentity;
  std::optional<PointerSet> ancestors;  // the cycle guard, needed only without remove_duplicate
  if (!remove_duplicate) {
    ancestors.emplace();
  }
  std::pmr::vector<Frame> stack(scratch.memory());
  stack.reserve(16);
  size_t modules_entered = 0;

  auto enter = [&](PyObject* borrowed_module, AttributeMask keeps) {
    // Owned from here on: the instance dict lookups below can run a key's
    // __eq__, which could remove the module from its parent.
    auto owned_module = py::reinterpret_borrow<py::object>(borrowed_module);
    PyObject* module = owned_module.ptr();
    // PyTorch calls `module.named_modules(memo, ...)` (a non-module has no
    // such method), which asks `self not in memo` (hash first) and reads
    // `self._modules`.
    bool remember = modules_entered <= kLargeWalkModules;
    py::object dict = checked_instance_dict(module, keeps, remember);
    if (remove_duplicate ? !memo.insert(module) : memo.contains(module)) {
      return;
    }
    py::object children = exact_dict_entry(dict.ptr(), InstanceEntry::modules, remember);
    visit(module, dict.ptr(), remember);
    if (PyDict_GET_SIZE(children.ptr()) == 0) {
      return;  // a leaf (most modules are): no frame needed
    }
    if (ancestors && !ancestors->insert(module)) {
      raise_cycle(module, path.text(), "walking it with remove_duplicate=False");
    }
    if (++modules_entered > kLargeWalkModules) {
      prefetch_children(children.ptr());
    }
    stack.push_back(Frame{std::move(owned_module), std::move(children), 0, path.length()});
  };

  enter(root, kEveryModuleKeeps | root_keeps);
  while (!stack.empty()) {
    Frame& top = stack.back();
    PyObject* name = nullptr;
    PyObject* child = nullptr;
    if (!PyDict_Next(top.children.ptr(), &top.cursor, &name, &child)) {
      if (ancestors) {
        ancestors->erase(top.module.ptr());
      }
      stack.pop_back();
      continue;
    }
    if (child == Py_None) {
      continue;
    }
    // Owned: creating an instance dict below may run the garbage collector.
    auto owned_name = py::reinterpret_borrow<py::object>(name);
    auto owned_child = py::reinterpret_borrow<py::object>(child);
    if (modules_entered > kLargeWalkModules) {
      prefetch_next_siblings(top.children.ptr(), top.cursor);
    }
    path.truncate(top.path_length);
    path.append(name);
    enter(child, kEveryModuleKeeps);  // may grow the stack: `top` is not used after this
  }
}

// Adds the module's own parameters (or buffers) the way `_named_members` does.
void add_members(PyObject* instance_dict, bool remember, Leaves leaves, PathBuffer& path,
                 PointerSet& memo, bool remove_duplicate, Results& results) {
  py::object members = exact_dict_entry(
      instance_dict,
      leaves == Leaves::parameters ? InstanceEntry::parameters : InstanceEntry::buffers, remember);
  Py_ssize_t cursor = 0;
  PyObject* name = nullptr;
  PyObject* member = nullptr;
  while (PyDict_Next(members.ptr(), &cursor, &name, &member)) {
    if (member == Py_None) {
      continue;
    }
    // `v in memo` hashes v; only id-hashing tensors behave like an address set.
    if (!facts_of(Py_TYPE(member)).keeps(kHashesByIdentity)) {
      hand_back();
    }
    if (remove_duplicate && !memo.insert(member)) {
      continue;
    }
    if (results.with_names()) {
      results.add(path.joined_with(name), member);
    } else {
      // PyTorch builds the name for `parameters()` too: a bad name must fail
      // the same way.
      path.check_joinable(name);
      results.add(nullptr, member);
    }
  }
}

}  // namespace

std::optional<py::object> walk_members(py::handle root, const MemberQuery& query) {
  try {
    PathBuffer path(query.prefix.ptr());
    PointerSet member_memo;
    Scratch scratch;
    Results results(query.with_names, scratch);
    if (query.recurse) {
      WalkSize expected = member_walk_sizes.last(root.ptr());
      PointerSet module_memo;
      module_memo.reserve(expected.modules);
      member_memo.reserve(expected.items);
      results.reserve(expected.items);
      walk_tree(root.ptr(), query.root_keeps, path, module_memo, query.remove_duplicate, scratch,
                [&](PyObject*, PyObject* instance_dict, bool remember) {
                  add_members(instance_dict, remember, query.leaves, path, member_memo,
                              query.remove_duplicate, results);
                });
      member_walk_sizes.remember(root.ptr(), WalkSize{module_memo.size(), results.size()});
    } else {
      // `_named_members` uses [(prefix, self)]: no named_modules call.
      py::object dict = checked_instance_dict(root.ptr(), query.root_keeps | kReadsDicts);
      add_members(dict.ptr(), true, query.leaves, path, member_memo, query.remove_duplicate,
                  results);
    }
    return results.to_iterator();
  } catch (const HandBack&) {
    return std::nullopt;
  }
}

std::optional<py::object> walk_modules(py::handle root, const ModuleQuery& query) {
  try {
    PointerSet memo;
    if (!query.memo.is_none()) {
      // Only an exact set of id-hashing objects can be mirrored by addresses.
      if (!PySet_CheckExact(query.memo.ptr())) {
        hand_back();
      }
      for (py::handle seen : query.memo) {
        if (!facts_of(Py_TYPE(seen.ptr())).keeps(kHashesByIdentity)) {
          hand_back();
        }
        memo.insert(seen.ptr());
      }
    }
    WalkSize expected = module_walk_sizes.last(root.ptr());
    memo.reserve(memo.size() + expected.modules);
    PathBuffer path(query.prefix.ptr());
    Scratch scratch;
    Results results(query.with_names, scratch);
    results.reserve(expected.items);
    bool at_root = true;
    walk_tree(root.ptr(), query.root_keeps, path, memo, query.remove_duplicate, scratch,
              [&](PyObject* module, PyObject*, bool) {
                PyObject* name = nullptr;
                if (query.with_names) {
                  // The root is yielded under the prefix object itself.
                  name = at_root ? Py_NewRef(query.prefix.ptr()) : path.to_str();
                }
                at_root = false;
                results.add(name, module);
              });
    module_walk_sizes.remember(root.ptr(), WalkSize{results.size(), results.size()});
    py::object found = results.to_iterator();
    if (!query.memo.is_none() && query.remove_duplicate) {
      for (Py_ssize_t i = 0; i < handover_size(found.ptr()); ++i) {
        PyObject* item = handover_item(found.ptr(), i);
        PyObject* visited = query.with_names ? PyTuple_GET_ITEM(item, 1) : item;
        if (PySet_Add(query.memo.ptr(), visited) != 0) {
          throw py::error_already_set();
        }
      }
    }
    return found;
  } catch (const HandBack&) {
    return std::nullopt;
  }
}

std::optional<py::object> walk_children(py::handle root, bool with_names,
                                        AttributeMask root_keeps) {
  try {
    py::object dict = checked_instance_dict(root.ptr(), root_keeps | kReadsDicts);
    py::object children = exact_dict_entry(dict.ptr(), InstanceEntry::modules);
    PointerSet memo;
    Scratch scratch;
    Results results(with_names, scratch);
    Py_ssize_t cursor = 0;
    PyObject* name = nullptr;
    PyObject* child = nullptr;
    while (PyDict_Next(children.ptr(), &cursor, &name, &child)) {
      if (child == Py_None) {
        continue;
      }
      if (!facts_of(Py_TYPE(child)).keeps(kHashesByIdentity)) {
        hand_back();
      }
      if (memo.insert(child)) {
        results.add(with_names ? Py_NewRef(name) : nullptr, child);
      }
    }
    return results.to_iterator();
  } catch (const HandBack&) {
    return std::nullopt;
  }
}

}  // namespace torchwalk
