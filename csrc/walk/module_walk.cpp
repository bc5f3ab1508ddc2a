#include "walk/module_walk.h"

#include <cstddef>
#include <cstring>
#include <memory_resource>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/gc_pause.h"
#include "common/pointer_set.h"
#include "walk/dotted_name.h"
#include "walk/hand_back.h"
#include "walk/handover_iterator.h"
#include "walk/instance_dict.h"
#include "walk/position_walk.h"
#include "walk/pytorch_steps.h"
#include "walk/walk_size.h"

namespace torchwalk {
namespace {

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

// What never ends when a walk of every position meets a cycle.
constexpr char kEveryPositionWalk[] = "walking it with remove_duplicate=False";

// The sizes of recent walks, by root (read and written with the GIL held).
WalkSizeHints member_walk_sizes;
WalkSizeHints module_walk_sizes;

// The parameters (or buffers) of every module named_modules reaches, as
// `_named_members` yields them.
struct MemberCollector {
  const MemberQuery& query;
  DottedName& name;
  ModuleMemo module_memo;
  PointerSet* member_memo;  // null without remove_duplicate
  Results& results;

  py::object enter(PyObject* module, const Position& at) {
    ReachedModule reached;
    if (!reach_module(module, at, query.root_keeps, module_memo, reached)) {
      return {};
    }
    collect(reached.instance_dict.ptr(), at.remember);
    return std::move(reached.children);
  }

  // The module's own members.
  void collect(PyObject* instance_dict, bool remember) {
    InstanceEntry entry =
        query.leaves == Leaves::parameters ? InstanceEntry::parameters : InstanceEntry::buffers;
    for_each_member(instance_dict, entry, remember, member_memo,
                    [&](PyObject* key, PyObject* member) {
                      if (results.with_names()) {
                        results.add(name.joined_with(key), member);
                      } else {
                        name.check_joinable(key);
                        results.add(nullptr, member);
                      }
                    });
  }
};

// The modules named_modules yields, each under its dotted name.
struct ModuleCollector {
  const ModuleQuery& query;
  DottedName& name;
  ModuleMemo memo;
  Results& results;

  py::object enter(PyObject* module, const Position& at) {
    ReachedModule reached;
    if (!reach_module(module, at, query.root_keeps, memo, reached)) {
      return {};
    }
    PyObject* module_name = nullptr;
    if (query.with_names) {
      // The root is yielded under the prefix object itself.
      module_name = at.depth == 0 ? Py_NewRef(query.prefix.ptr()) : name.to_str();
    }
    results.add(module_name, module);
    return std::move(reached.children);
  }
};

}  // namespace

std::optional<py::object> walk_members(py::handle root, const MemberQuery& query) {
  try {
    DottedName name(query.prefix.ptr(), DottedName::Style::path);
    PointerSet member_memo;
    Scratch scratch;
    Results results(query.with_names, scratch);
    PointerSet module_memo;
    MemberCollector collector{query, name, ModuleMemo{&module_memo, query.remove_duplicate},
                              query.remove_duplicate ? &member_memo : nullptr, results};
    if (!query.recurse) {
      // `_named_members` uses [(prefix, self)]: no named_modules call.
      py::object dict = checked_instance_dict(root.ptr(), query.root_keeps | kReadsDicts);
      collector.collect(dict.ptr(), true);
      return results.to_iterator();
    }
    WalkSize expected = member_walk_sizes.last(root.ptr());
    module_memo.reserve(expected.modules);
    member_memo.reserve(expected.items);
    results.reserve(expected.items);
    walk_positions(
        root.ptr(),
        WalkOptions{&name, query.remove_duplicate ? nullptr : kEveryPositionWalk, scratch.memory()},
        collector);
    member_walk_sizes.remember(root.ptr(), WalkSize{module_memo.size(), results.size()});
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
    DottedName name(query.prefix.ptr(), DottedName::Style::path);
    Scratch scratch;
    Results results(query.with_names, scratch);
    results.reserve(expected.items);
    ModuleCollector collector{query, name, ModuleMemo{&memo, query.remove_duplicate}, results};
    walk_positions(
        root.ptr(),
        WalkOptions{&name, query.remove_duplicate ? nullptr : kEveryPositionWalk, scratch.memory()},
        collector);
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

// One loop over the root's `_modules`, as PyTorch's named_children: no walk.
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
      // `module not in memo` hashes the child.
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
