#include "tree/tree_records.h"

#include <algorithm>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/address_index.h"
#include "common/cycle_error.h"
#include "common/pointer_set.h"
#include "storage/tie_groups.h"
#include "walk/class_check.h"

namespace torchwalk {
namespace {

[[noreturn]] void raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

// `instance_dict[name]` when it is a dict (`_modules`, `_parameters`,
// `_buffers`), else nullptr. Borrowed: the caller takes a reference.
PyObject* member_dict(PyObject* instance_dict, ModuleAttribute attribute) {
  PyObject* members = PyDict_GetItemWithError(instance_dict, attribute_name(attribute));
  if (members == nullptr && PyErr_Occurred()) {
    throw py::error_already_set();
  }
  return members != nullptr && PyDict_Check(members) ? members : nullptr;
}

const char* utf8(PyObject* str) {
  const char* text = PyUnicode_AsUTF8(str);
  if (text == nullptr) {
    throw py::error_already_set();
  }
  return text;
}

void add_leaf_figures(SubtreeFigures& figures, const LeafRecord& leaf) {
  if (leaf.is_lazy) {
    figures.uninitialized += leaf.is_buffer ? 0 : 1;
  } else if (leaf.is_buffer) {
    figures.buffers += leaf.facts.numel;
    figures.buffer_bytes += leaf.facts.nbytes();
  } else {
    figures.params += leaf.facts.numel;
    (leaf.facts.requires_grad ? figures.trainable : figures.frozen) += leaf.facts.numel;
    figures.bytes += leaf.facts.nbytes();
  }
}

}  // namespace

const ModuleRecord& TreeRecords::module(int64_t position) const {
  if (position < 0 || position >= module_count()) {
    throw py::index_error("module position " + std::to_string(position) + " out of range");
  }
  return modules_[static_cast<size_t>(position)];
}

const LeafRecord& TreeRecords::leaf(int64_t index) const {
  if (index < 0 || index >= leaf_count()) {
    throw py::index_error("leaf " + std::to_string(index) + " out of range");
  }
  return leaves_[static_cast<size_t>(index)];
}

namespace {

bool is_instance(PyObject* object, py::handle cls) {
  if (cls.is_none()) {
    return false;
  }
  int found = PyObject_IsInstance(object, cls.ptr());
  if (found < 0) {
    throw py::error_already_set();
  }
  return found != 0;
}

}  // namespace

void LeafRecord::describe(PyObject* described, const TensorClasses& classes) {
  tensor = py::reinterpret_borrow<py::object>(described);
  is_lazy = is_instance(described, classes.lazy);
  facts = tensor_facts(described);
  local = tensor;
  local_numel = facts.numel;
  if (is_instance(described, classes.sharded)) {
    // Ties are about memory, which a DTensor keeps in its local shard.
    local = py::reinterpret_steal<py::object>(PyObject_GetAttrString(described, "_local_tensor"));
    if (!local || !is_tensor(local.ptr())) {
      throw py::error_already_set();
    }
    TensorFacts local_facts = tensor_facts(local.ptr());
    facts.storage_key = local_facts.storage_key;
    facts.span_begin = local_facts.span_begin;
    facts.span_end = local_facts.span_end;
    facts.view_hash = local_facts.view_hash;
    local_numel = local_facts.numel;
  }
}

void TreeRecords::add_leaves(int64_t position, PyObject* members, bool are_buffers,
                             const TensorClasses& classes) {
  Py_ssize_t cursor = 0;
  PyObject* name = nullptr;
  PyObject* tensor = nullptr;
  while (PyDict_Next(members, &cursor, &name, &tensor)) {
    if (tensor == Py_None) {
      continue;
    }
    if (!PyUnicode_Check(name)) {
      raise(PyExc_TypeError, "member names must be str, got " +
                                 std::string(Py_TYPE(name)->tp_name) + " in the module at '" +
                                 module_path(position) + "'");
    }
    if (!is_tensor(tensor)) {
      raise(PyExc_TypeError, "'" + module_path(position) + "' holds a " + Py_TYPE(tensor)->tp_name +
                                 " named '" + utf8(name) + "' where a tensor belongs");
    }
    LeafRecord leaf;
    leaf.name = py::reinterpret_borrow<py::object>(name);
    leaf.module = position;
    leaf.is_buffer = are_buffers;
    leaf.describe(tensor, classes);
    leaves_.push_back(std::move(leaf));
  }
}

TreeRecords TreeRecords::from_module(py::handle root, bool buffers, const TensorClasses& classes) {
  if (!facts_of(Py_TYPE(root.ptr())).is_module) {
    throw py::type_error(std::string("torchwalk.walk() expects an nn.Module or a mapping of "
                                     "names to tensors, got ") +
                         Py_TYPE(root.ptr())->tp_name);
  }
  TreeRecords records;
  PointerSet ancestors;  // the modules on the current path: a cycle never ends

  struct Frame {
    int64_t position;
    py::object children;  // its `_modules` dict
    Py_ssize_t cursor;
    int64_t last_child;
  };
  std::vector<Frame> stack;

  auto enter = [&](PyObject* module, PyObject* name, int64_t parent) {
    auto position = records.module_count();
    ModuleRecord record;
    record.module = py::reinterpret_borrow<py::object>(module);
    record.name = py::reinterpret_borrow<py::object>(name);
    record.parent = parent;
    record.depth = parent < 0 ? 0 : records.modules_[static_cast<size_t>(parent)].depth + 1;
    record.first_leaf = records.leaf_count();
    records.modules_.push_back(std::move(record));
    auto fail = [&](PyObject* type, const std::string& problem) {
      raise(type, "the " + std::string(Py_TYPE(module)->tp_name) + " at '" +
                      records.module_path(position) + "' " + problem);
    };
    if (!facts_of(Py_TYPE(module)).is_module) {
      fail(PyExc_TypeError, "is not an nn.Module");
    }
    if (!ancestors.insert(module)) {
      raise_cycle(module, records.module_path(position), "walking every position");
    }
    PyObject* instance_dict = PyObject_GenericGetDict(module, nullptr);
    if (instance_dict == nullptr) {
      throw py::error_already_set();
    }
    auto owned_dict = py::reinterpret_steal<py::object>(instance_dict);
    // Owned: adding leaves runs Python code (isinstance checks) that could
    // replace the dicts.
    py::object parameters, module_buffers, children;
    for (auto [attribute, members] :
         {std::pair{kParametersDict, &parameters}, std::pair{kBuffersDict, &module_buffers},
          std::pair{kModulesDict, &children}}) {
      PyObject* found = member_dict(instance_dict, attribute);
      if (found == nullptr) {
        fail(PyExc_AttributeError, std::string("has no ") + utf8(attribute_name(attribute)) +
                                       " dict (was nn.Module.__init__ called?)");
      }
      *members = py::reinterpret_borrow<py::object>(found);
    }
    records.add_leaves(position, parameters.ptr(), false, classes);
    if (buffers) {
      records.add_leaves(position, module_buffers.ptr(), true, classes);
    }
    ModuleRecord& entered = records.modules_.back();
    entered.leaf_count = records.leaf_count() - entered.first_leaf;
    stack.push_back(Frame{position, std::move(children), 0, -1});
  };

  py::str root_name("");
  enter(root.ptr(), root_name.ptr(), -1);
  while (!stack.empty()) {
    Frame& top = stack.back();
    PyObject* name = nullptr;
    PyObject* child = nullptr;
    if (!PyDict_Next(top.children.ptr(), &top.cursor, &name, &child)) {
      ancestors.erase(records.modules_[static_cast<size_t>(top.position)].module.ptr());
      stack.pop_back();
      continue;
    }
    if (child == Py_None) {
      continue;
    }
    if (!PyUnicode_Check(name)) {
      raise(PyExc_TypeError, "submodule names must be str, got " +
                                 std::string(Py_TYPE(name)->tp_name) + " in the module at '" +
                                 records.module_path(top.position) + "'");
    }
    auto child_position = records.module_count();
    ModuleRecord& parent = records.modules_[static_cast<size_t>(top.position)];
    if (top.last_child < 0) {
      parent.first_child = child_position;
    } else {
      records.modules_[static_cast<size_t>(top.last_child)].next_sibling = child_position;
    }
    top.last_child = child_position;
    // Owned: the walk below can run Python code that edits the dict.
    auto owned_name = py::reinterpret_borrow<py::object>(name);
    auto owned_child = py::reinterpret_borrow<py::object>(child);
    enter(child, name, top.position);  // grows the stack: `top` is not used after this
  }
  records.finish();
  return records;
}

TreeRecords TreeRecords::from_mapping(py::handle names, py::handle tensors,
                                      const TensorClasses& classes) {
  py::list name_list = py::reinterpret_borrow<py::list>(names);
  py::list tensor_list = py::reinterpret_borrow<py::list>(tensors);
  if (name_list.size() != tensor_list.size()) {
    throw py::value_error("walk_mapping needs as many names as tensors");
  }
  // The hierarchy the dots imply, children and leaves in order of first
  // appearance; positions are then given in pre-order.
  struct Node {
    std::string name;
    std::vector<size_t> children;
    std::unordered_map<std::string, size_t> child_by_name;
    std::vector<std::pair<std::string, size_t>> leaves;  // (name, index in the mapping)
  };
  std::vector<Node> nodes(1);
  for (size_t i = 0; i < name_list.size(); ++i) {
    PyObject* name = name_list[i].ptr();
    if (!PyUnicode_Check(name)) {
      raise(PyExc_TypeError,
            std::string("mapping keys must be str, got ") + Py_TYPE(name)->tp_name);
    }
    if (!is_tensor(tensor_list[i].ptr())) {
      raise(PyExc_TypeError, std::string("'") + utf8(name) + "' maps to a " +
                                 Py_TYPE(tensor_list[i].ptr())->tp_name + ", not a tensor");
    }
    std::string dotted = utf8(name);
    size_t node = 0;
    size_t start = 0;
    for (size_t dot = dotted.find('.'); dot != std::string::npos; dot = dotted.find('.', start)) {
      std::string part = dotted.substr(start, dot - start);
      auto [found, added] = nodes[node].child_by_name.emplace(part, nodes.size());
      size_t child = found->second;
      if (added) {
        nodes[node].children.push_back(child);
        nodes.push_back(Node{part, {}, {}, {}});
      }
      node = child;
      start = dot + 1;
    }
    nodes[node].leaves.emplace_back(dotted.substr(start), i);
  }

  TreeRecords records;
  auto make_str = [](const std::string& text) {
    return py::reinterpret_steal<py::object>(
        PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "strict"));
  };
  struct Frame {
    size_t node;
    int64_t parent;
  };
  std::vector<Frame> stack{{0, -1}};
  std::vector<int64_t> last_child;
  while (!stack.empty()) {
    auto [node, parent] = stack.back();
    stack.pop_back();
    auto position = records.module_count();
    ModuleRecord record;
    record.module = py::none();
    record.name = make_str(nodes[node].name);
    record.parent = parent;
    record.first = position;
    record.first_leaf = records.leaf_count();
    record.leaf_count = static_cast<int64_t>(nodes[node].leaves.size());
    if (parent >= 0) {
      ModuleRecord& parent_record = records.modules_[static_cast<size_t>(parent)];
      record.depth = parent_record.depth + 1;
      if (last_child[static_cast<size_t>(parent)] < 0) {
        parent_record.first_child = position;
      } else {
        records.modules_[static_cast<size_t>(last_child[static_cast<size_t>(parent)])]
            .next_sibling = position;
      }
      last_child[static_cast<size_t>(parent)] = position;
    }
    records.modules_.push_back(std::move(record));
    last_child.push_back(-1);
    for (const auto& [name, index] : nodes[node].leaves) {
      PyObject* tensor = tensor_list[index].ptr();
      LeafRecord leaf;
      leaf.name = make_str(name);
      leaf.module = position;
      leaf.describe(tensor, classes);
      records.leaves_.push_back(std::move(leaf));
    }
    for (auto child = nodes[node].children.rbegin(); child != nodes[node].children.rend();
         ++child) {
      stack.push_back(Frame{*child, position});
    }
  }
  records.finish();
  return records;
}

void TreeRecords::finish() {
  // Which positions repeat a module, and which leaves repeat a tensor.
  AddressIndex first_module;
  for (size_t position = 0; position < modules_.size(); ++position) {
    ModuleRecord& record = modules_[position];
    record.first =
        record.module.is_none()
            ? static_cast<int64_t>(position)
            : first_module.find_or_insert(record.module.ptr(), static_cast<int64_t>(position));
  }
  AddressIndex first_parameter;
  AddressIndex first_buffer;
  for (size_t index = 0; index < leaves_.size(); ++index) {
    LeafRecord& leaf = leaves_[index];
    leaf.first = (leaf.is_buffer ? first_buffer : first_parameter)
                     .find_or_insert(leaf.tensor.ptr(), static_cast<int64_t>(index));
  }

  // Shape hashes bottom-up: children have later positions than parents.
  for (size_t position = modules_.size(); position-- > 0;) {
    ModuleRecord& record = modules_[position];
    uint64_t hash = hash_combine(0, reinterpret_cast<uintptr_t>(Py_TYPE(record.module.ptr())));
    for (int64_t index = record.first_leaf; index < record.first_leaf + record.leaf_count;
         ++index) {
      const LeafRecord& leaf = leaves_[static_cast<size_t>(index)];
      hash = hash_combine(hash, static_cast<uint64_t>(PyObject_Hash(leaf.name.ptr())));
      hash = hash_combine(
          hash, leaf.facts.shape_hash * 4 + leaf.is_buffer * 2 + leaf.facts.requires_grad);
    }
    for (int64_t child = record.first_child; child >= 0;
         child = modules_[static_cast<size_t>(child)].next_sibling) {
      const ModuleRecord& child_record = modules_[static_cast<size_t>(child)];
      hash = hash_combine(hash, static_cast<uint64_t>(PyObject_Hash(child_record.name.ptr())));
      hash = hash_combine(hash, child_record.shape_hash);
    }
    record.shape_hash = hash;
  }

  // Subtree figures, each tensor object once. A tensor held at one position
  // (almost all) is added to its module, and the sums then flow up from
  // children to parents. A tensor held at several positions is added to every
  // ancestor of each of them directly, stopping where it was already added
  // (that module's ancestors have it too).
  std::vector<int64_t> positions_of_tensor(leaves_.size(), 0);  // indexed by first leaf
  for (const LeafRecord& leaf : leaves_) {
    ++positions_of_tensor[static_cast<size_t>(leaf.first)];
  }
  std::vector<SubtreeFigures> own(modules_.size());
  std::vector<int64_t> repeated;  // leaves of tensors held at several positions
  for (size_t index = 0; index < leaves_.size(); ++index) {
    const LeafRecord& leaf = leaves_[index];
    if (positions_of_tensor[static_cast<size_t>(leaf.first)] == 1) {
      add_leaf_figures(own[static_cast<size_t>(leaf.module)], leaf);
    } else {
      repeated.push_back(static_cast<int64_t>(index));
    }
  }
  // One tensor's positions at a time, so that a stamp left by it is still
  // there when its next position's walk up reaches that module.
  std::stable_sort(repeated.begin(), repeated.end(), [&](int64_t a, int64_t b) {
    return leaves_[static_cast<size_t>(a)].first < leaves_[static_cast<size_t>(b)].first;
  });
  std::vector<int64_t> added_tensor(modules_.size(), -1);  // the first leaf of the last tensor
  for (int64_t index : repeated) {
    const LeafRecord& leaf = leaves_[static_cast<size_t>(index)];
    for (int64_t position = leaf.module; position >= 0;
         position = modules_[static_cast<size_t>(position)].parent) {
      int64_t& stamp = added_tensor[static_cast<size_t>(position)];
      if (stamp == leaf.first) {
        break;
      }
      stamp = leaf.first;
      add_leaf_figures(modules_[static_cast<size_t>(position)].figures, leaf);
    }
  }
  for (size_t position = modules_.size(); position-- > 0;) {
    ModuleRecord& record = modules_[position];
    record.figures += own[position];
    if (record.parent >= 0) {
      own[static_cast<size_t>(record.parent)] += own[position];
    }
  }
}

// PyTorch's `prefix + ("." if prefix else "") + name`, from the root down.
std::string TreeRecords::module_path(int64_t position) const {
  std::vector<const char*> names;  // from `position` up to the root, which has no part in paths
  for (const ModuleRecord* record = &module(position); record->parent >= 0;
       record = &modules_[static_cast<size_t>(record->parent)]) {
    names.push_back(utf8(record->name.ptr()));
  }
  std::string path;
  for (auto name = names.rbegin(); name != names.rend(); ++name) {
    if (!path.empty()) {
      path.push_back('.');
    }
    path += *name;
  }
  return path;
}

std::string TreeRecords::leaf_path(int64_t index) const {
  const LeafRecord& record = leaf(index);
  std::string path = module_path(record.module);
  if (!path.empty()) {
    path.push_back('.');
  }
  return path + utf8(record.name.ptr());
}

int64_t TreeRecords::unique_leaf_count() const {
  int64_t count = 0;
  for (size_t index = 0; index < leaves_.size(); ++index) {
    count += leaves_[index].first == static_cast<int64_t>(index);
  }
  return count;
}

std::vector<int64_t> TreeRecords::module_children(int64_t position) const {
  std::vector<int64_t> children;
  for (int64_t child = module(position).first_child; child >= 0;
       child = modules_[static_cast<size_t>(child)].next_sibling) {
    children.push_back(child);
  }
  return children;
}

namespace {

py::str to_str(const std::string& text) { return py::str(text.data(), text.size()); }

}  // namespace

py::list TreeRecords::named_leaves(bool buffers) const {
  py::list found;
  for (size_t index = 0; index < leaves_.size(); ++index) {
    const LeafRecord& record = leaves_[index];
    if (record.is_buffer == buffers && record.first == static_cast<int64_t>(index)) {
      found.append(py::make_tuple(to_str(leaf_path(static_cast<int64_t>(index))), record.tensor));
    }
  }
  return found;
}

py::list TreeRecords::named_modules() const {
  py::list found;
  for (size_t position = 0; position < modules_.size(); ++position) {
    const ModuleRecord& record = modules_[position];
    if (!record.module.is_none() && record.first == static_cast<int64_t>(position)) {
      found.append(
          py::make_tuple(to_str(module_path(static_cast<int64_t>(position))), record.module));
    }
  }
  return found;
}

const std::vector<TieGroup>& TreeRecords::tie_groups() {
  if (!ties_) {
    ties_ = group_ties(leaves_);
    tied_to_.assign(leaves_.size(), -1);
    for (const TieGroup& group : *ties_) {
      if (group.kind == TieKind::packed) {
        continue;
      }
      // Tied to the leaf met first in walk order, which is drawn in full.
      int64_t first = *std::min_element(group.leaves.begin(), group.leaves.end());
      for (int64_t leaf : group.leaves) {
        if (leaf != first) {
          tied_to_[static_cast<size_t>(leaf)] = first;
        }
      }
    }
  }
  return *ties_;
}

int64_t TreeRecords::leaf_tied_to(int64_t index) {
  leaf(index);  // checks the index
  tie_groups();
  return tied_to_[static_cast<size_t>(index)];
}

py::dict TreeRecords::totals() {
  // Each tensor object once (the first leaf holding it), lazy ones apart.
  int64_t params = 0, trainable = 0, frozen = 0, bytes = 0, buffers = 0, buffer_bytes = 0;
  int64_t uninitialized = 0;
  int64_t local_params = 0, local_bytes = 0;  // what this rank holds of sharded parameters
  std::map<int8_t, std::pair<PyObject*, int64_t>> bytes_by_dtype;  // code -> (a tensor, bytes)
  std::map<int16_t, int64_t> bytes_by_device;
  for (size_t index = 0; index < leaves_.size(); ++index) {
    const LeafRecord& record = leaves_[index];
    if (record.first != static_cast<int64_t>(index)) {
      continue;
    }
    if (record.is_lazy) {
      uninitialized += record.is_buffer ? 0 : 1;
      continue;
    }
    const TensorFacts& facts = record.facts;
    if (record.is_buffer) {
      buffers += facts.numel;
      buffer_bytes += facts.nbytes();
    } else {
      params += facts.numel;
      (facts.requires_grad ? trainable : frozen) += facts.numel;
      bytes += facts.nbytes();
      local_params += record.local_numel;
      local_bytes += record.local_numel * facts.itemsize;
    }
    auto& dtype_entry = bytes_by_dtype[facts.dtype_code];
    dtype_entry.first = record.tensor.ptr();
    dtype_entry.second += facts.nbytes();
    bytes_by_device[facts.device_code] += facts.nbytes();
  }
  StorageFigures unique = unique_storage_figures(leaves_);

  py::dict totals;
  totals["params"] = params;
  totals["params_unique"] = unique.params;
  totals["bytes_unique"] = unique.bytes;
  totals["trainable"] = trainable;
  totals["frozen"] = frozen;
  totals["uninitialized"] = uninitialized;
  totals["bytes"] = bytes;
  totals["buffers"] = buffers;
  totals["buffer_bytes"] = buffer_bytes;
  totals["local_params"] = local_params;
  totals["local_bytes"] = local_bytes;
  py::dict by_dtype;
  for (const auto& [code, entry] : bytes_by_dtype) {
    PyObject* name = dtype_name(code, entry.first);
    if (name == nullptr) {
      throw py::error_already_set();
    }
    by_dtype[py::reinterpret_steal<py::object>(name)] = entry.second;
  }
  py::dict by_device;
  for (const auto& [code, device_bytes] : bytes_by_device) {
    by_device[py::reinterpret_steal<py::object>(device_name(code))] = device_bytes;
  }
  totals["bytes_by_dtype"] = by_dtype;
  totals["bytes_by_device"] = by_device;
  return totals;
}

}  // namespace torchwalk
