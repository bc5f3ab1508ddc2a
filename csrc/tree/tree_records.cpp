#include "tree/tree_records.h"

#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "bridge/python_tensors.h"
#include "common/address_index.h"
#include "common/pointer_set.h"
#include "common/python_error.h"
#include "storage/tie_groups.h"
#include "walk/class_check.h"
#include "walk/dotted_name.h"
#include "walk/hand_back.h"
#include "walk/position_walk.h"
#include "walk/pytorch_steps.h"

namespace torchwalk {
namespace {

// The UTF-8 text of a str (of a subclass too), NULs included; owned by the str.
const char* checked_utf8(PyObject* str, Py_ssize_t* size) {
  const char* text = PyUnicode_AsUTF8AndSize(str, size);
  if (text == nullptr) {
    raise_python_error();
  }
  return text;
}

void add_leaf_figures(SubtreeFigures& figures, const LeafRecord& leaf) {
  if (leaf.is_lazy) {
    figures.uninitialized += leaf.is_buffer ? 0 : 1;
  } else if (leaf.is_buffer) {
    figures.buffers += leaf.facts.numel;
    figures.buffer_bytes += leaf.facts.nbytes;
  } else {
    figures.params += leaf.facts.numel;
    (leaf.facts.requires_grad ? figures.trainable : figures.frozen) += leaf.facts.numel;
    figures.bytes += leaf.facts.nbytes;
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

// The records' visitor of the walk (walk/position_walk.h): a position per
// module, with its parameters (then buffers) as leaves, by the drop-ins'
// rules, so that the records hold what named_modules, named_parameters and
// named_buffers (remove_duplicate=False) yield.
class RecordCollector {
 public:
  RecordCollector(std::vector<ModuleRecord>& modules, std::vector<LeafRecord>& leaves,
                  AttributeMask root_keeps, bool buffers, const TensorClasses& classes)
      : modules_(modules),
        leaves_(leaves),
        root_keeps_(root_keeps),
        buffers_(buffers),
        classes_(classes) {}

  py::object enter(PyObject* module, const Position& at) {
    ReachedModule reached;
    reach_module(module, at, root_keeps_, ModuleMemo{}, reached);  // no memo: never skips
    auto position = static_cast<int64_t>(modules_.size());
    ModuleRecord record;
    record.module = py::reinterpret_borrow<py::object>(module);
    record.name = at.key == nullptr ? py::str("") : py::reinterpret_borrow<py::object>(at.key);
    record.depth = static_cast<int64_t>(at.depth);
    record.first_leaf = static_cast<int64_t>(leaves_.size());
    if (at.depth > 0) {
      Open& parent = open_[at.depth - 1];
      record.parent = parent.position;
      if (parent.last_child < 0) {
        modules_[static_cast<size_t>(parent.position)].first_child = position;
      } else {
        modules_[static_cast<size_t>(parent.last_child)].next_sibling = position;
      }
      parent.last_child = position;
    }
    modules_.push_back(std::move(record));
    open_.resize(at.depth);
    open_.push_back(Open{position, -1});
    add_leaves(reached.instance_dict.ptr(), InstanceEntry::parameters, position, at.remember);
    if (buffers_) {
      add_leaves(reached.instance_dict.ptr(), InstanceEntry::buffers, position, at.remember);
    }
    ModuleRecord& entered = modules_.back();
    entered.leaf_count = static_cast<int64_t>(leaves_.size()) - entered.first_leaf;
    return std::move(reached.children);
  }

 private:
  // A module whose children are being walked, and its last child so far.
  struct Open {
    int64_t position;
    int64_t last_child;
  };

  void add_leaves(PyObject* instance_dict, InstanceEntry entry, int64_t position, bool remember) {
    for_each_member(instance_dict, entry, remember, nullptr, [&](PyObject* key, PyObject* member) {
      DottedName::check_joinable(key);
      if (!is_tensor(member)) {
        hand_back();  // PyTorch yields it; the records built from its lists then say what it is
      }
      LeafRecord leaf;
      leaf.name = py::reinterpret_borrow<py::object>(key);
      leaf.module = position;
      leaf.is_buffer = entry == InstanceEntry::buffers;
      leaf.describe(member, classes_);
      leaves_.push_back(std::move(leaf));
    });
  }

  std::vector<ModuleRecord>& modules_;
  std::vector<LeafRecord>& leaves_;
  AttributeMask root_keeps_;
  bool buffers_;
  const TensorClasses& classes_;
  std::vector<Open> open_;  // indexed by depth
};

}  // namespace

std::optional<TreeRecords> TreeRecords::from_module(py::handle root, bool buffers,
                                                    const TensorClasses& classes) {
  if (!facts_of(Py_TYPE(root.ptr())).is_module) {
    raise_error(PyExc_TypeError,
                std::string("torchwalk.walk() expects an nn.Module or a mapping of names to "
                            "tensors, got ") +
                    Py_TYPE(root.ptr())->tp_name);
  }
  // The root's methods the views stand for.
  AttributeMask root_keeps =
      mask_of(kNamedModules, kModules, kNamedParameters, kParameters, kNamedMembers);
  if (buffers) {
    root_keeps |= mask_of(kNamedBuffers, kBuffers);
  }
  TreeRecords records;
  try {
    py::str no_prefix("");
    DottedName name(no_prefix.ptr(), DottedName::Style::path);
    RecordCollector collector(records.modules_, records.leaves_, root_keeps, buffers, classes);
    walk_positions(root.ptr(), WalkOptions{&name, "walking every position"}, collector);
  } catch (const HandBack&) {
    return std::nullopt;
  }
  records.finish();
  return records;
}

TreeRecords TreeRecords::from_named(py::handle modules, py::handle parameters, py::handle buffers,
                                    const TensorClasses& classes) {
  // The hierarchy the dots imply, children and leaves in order of first
  // appearance (the modules' names first); positions are then given in
  // pre-order.
  // Text is viewed, not copied, in the names' own UTF-8 buffers: the lists
  // hold the names for the whole call (a checkpoint has tens of thousands).
  struct Node {
    std::string_view name;
    py::object module = py::none();  // the first module at this path, if any
    std::vector<size_t> children;
    std::unordered_map<std::string_view, size_t> child_by_name;
    // Parameters, then buffers: (name, tensor, place in the source's listing).
    std::vector<std::tuple<std::string_view, PyObject*, size_t>> leaves[2];
  };
  std::vector<Node> nodes(1);
  // The node of a dotted name (made with its ancestors where missing), and
  // the leaf name after its last dot; a module's name is all node.
  auto place = [&](std::string_view dotted, bool is_module) {
    size_t node = 0;
    auto descend = [&](std::string_view part) {
      auto [found, added] = nodes[node].child_by_name.emplace(part, nodes.size());
      size_t child = found->second;
      if (added) {
        nodes[node].children.push_back(child);
        nodes.push_back(Node{part});
      }
      node = child;
    };
    size_t start = 0;
    for (size_t dot = dotted.find('.'); dot != std::string_view::npos;
         dot = dotted.find('.', start)) {
      descend(dotted.substr(start, dot - start));
      start = dot + 1;
    }
    std::string_view last = dotted.substr(start);
    if (is_module && !dotted.empty()) {
      descend(last);
      last = {};
    }
    return std::pair{node, last};
  };
  // The (name, object) pairs of a list (borrowed), names checked.
  auto pairs_of = [](py::handle list, const char* what) {
    if (!PyList_Check(list.ptr())) {
      raise_error(PyExc_TypeError, std::string(what) + "s must come as a list of pairs");
    }
    std::vector<std::pair<std::string_view, PyObject*>> found;
    found.reserve(static_cast<size_t>(PyList_GET_SIZE(list.ptr())));
    for (Py_ssize_t index = 0; index < PyList_GET_SIZE(list.ptr()); ++index) {
      PyObject* pair = PyList_GET_ITEM(list.ptr(), index);
      if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        raise_error(PyExc_TypeError, std::string(what) + "s must come as (name, object) pairs");
      }
      PyObject* name = PyTuple_GET_ITEM(pair, 0);
      if (!PyUnicode_Check(name)) {
        raise_error(PyExc_TypeError,
                    std::string(what) + " names must be str, got " + Py_TYPE(name)->tp_name);
      }
      Py_ssize_t size = 0;
      const char* text = checked_utf8(name, &size);
      found.emplace_back(std::string_view(text, static_cast<size_t>(size)),
                         PyTuple_GET_ITEM(pair, 1));
    }
    return found;
  };
  std::vector<size_t> listed_nodes;  // the node of each module pair, in order
  for (auto [path, module] : pairs_of(modules, "module")) {
    listed_nodes.push_back(place(path, true).first);
    Node& node = nodes[listed_nodes.back()];
    if (node.module.is_none()) {
      node.module = py::reinterpret_borrow<py::object>(module);
    }
  }
  size_t listed_leaves = 0;
  for (int kind : {0, 1}) {
    for (auto [dotted, tensor] : pairs_of(kind == 0 ? parameters : buffers, "tensor")) {
      if (!PyTuple_Check(tensor) && !is_tensor(tensor)) {
        raise_error(PyExc_TypeError, "expected a tensor at '" + std::string(dotted) + "', got " +
                                         Py_TYPE(tensor)->tp_name);
      }
      auto [node, name] = place(dotted, false);
      nodes[node].leaves[kind].emplace_back(name, tensor, listed_leaves++);
    }
  }

  TreeRecords records;
  records.listed_leaves_.resize(listed_leaves);
  std::vector<int64_t> position_of_node(nodes.size());
  // One str per distinct name ("weight", "0", "mlp" recur thousands of times).
  std::unordered_map<std::string_view, py::object> strs;
  auto make_str = [&](std::string_view text) {
    auto [found, added] = strs.try_emplace(text);
    if (added) {
      found->second = py::reinterpret_steal<py::object>(checked(
          PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "strict")));
    }
    return found->second;
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
    position_of_node[node] = position;
    ModuleRecord record;
    record.module = nodes[node].module;
    record.name = make_str(nodes[node].name);
    record.parent = parent;
    record.first_leaf = records.leaf_count();
    if (parent >= 0) {
      ModuleRecord& parent_record = records.modules_[static_cast<size_t>(parent)];
      record.depth = parent_record.depth + 1;
      int64_t& previous = last_child[static_cast<size_t>(parent)];
      if (previous < 0) {
        parent_record.first_child = position;
      } else {
        records.modules_[static_cast<size_t>(previous)].next_sibling = position;
      }
      previous = position;
    }
    records.modules_.push_back(std::move(record));
    last_child.push_back(-1);
    for (int kind : {0, 1}) {
      for (const auto& [name, tensor, listed] : nodes[node].leaves[kind]) {
        records.listed_leaves_[listed] = records.leaf_count();
        LeafRecord leaf;
        leaf.name = make_str(name);
        leaf.module = position;
        leaf.is_buffer = kind == 1;
        leaf.describe(tensor, classes);
        records.leaves_.push_back(std::move(leaf));
      }
    }
    ModuleRecord& entered = records.modules_.back();
    entered.leaf_count = records.leaf_count() - entered.first_leaf;
    for (auto child = nodes[node].children.rbegin(); child != nodes[node].children.rend();
         ++child) {
      stack.push_back(Frame{*child, position});
    }
  }
  for (size_t node : listed_nodes) {
    records.listed_modules_.push_back(position_of_node[node]);
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
      // A lazy tensor has no shape yet: it is never like a real one of shape (0,).
      hash = hash_combine(hash, leaf.facts.shape_hash * 8 + leaf.is_lazy * 4 + leaf.is_buffer * 2 +
                                    leaf.facts.requires_grad);
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

// Every name in the records is an exact str with a UTF-8 form (the walk
// checked each; names made from a mapping's are decoded from UTF-8), so
// building a path never hands back.
DottedName TreeRecords::path_to(int64_t position) const {
  std::vector<PyObject*> names;  // from `position` up to the root, whose name is no part of paths
  for (const ModuleRecord* record = &module(position); record->parent >= 0;
       record = &modules_[static_cast<size_t>(record->parent)]) {
    names.push_back(record->name.ptr());
  }
  static PyObject* const no_prefix = PyUnicode_InternFromString("");
  DottedName path(no_prefix, DottedName::Style::path);
  for (auto name = names.rbegin(); name != names.rend(); ++name) {
    path.descend(*name);
  }
  return path;
}

std::string TreeRecords::module_path(int64_t position) const { return path_to(position).text(); }

std::string TreeRecords::leaf_path(int64_t index) const {
  const LeafRecord& record = leaf(index);
  DottedName path = path_to(record.module);
  path.descend(record.name.ptr());
  return path.text();
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

// Calls `take(index)` for each index of `listed`, or of 0 .. count-1 when
// `listed` is empty (the records' own order).
template <typename Take>
void in_listed_order(const std::vector<int64_t>& listed, int64_t count, Take&& take) {
  if (listed.empty()) {
    for (int64_t index = 0; index < count; ++index) {
      take(index);
    }
  } else {
    for (int64_t index : listed) {
      take(index);
    }
  }
}

}  // namespace

// The views list each object once, at its first name in the order the
// source listed them (pre-order for a walked module).
py::list TreeRecords::named_leaves(bool buffers) const {
  py::list found;
  PointerSet seen;
  in_listed_order(listed_leaves_, leaf_count(), [&](int64_t index) {
    const LeafRecord& record = leaves_[static_cast<size_t>(index)];
    if (record.is_buffer == buffers && seen.insert(record.tensor.ptr())) {
      found.append(py::make_tuple(to_str(leaf_path(index)), record.tensor));
    }
  });
  return found;
}

py::list TreeRecords::named_modules() const {
  py::list found;
  PointerSet seen;
  in_listed_order(listed_modules_, module_count(), [&](int64_t position) {
    const ModuleRecord& record = modules_[static_cast<size_t>(position)];
    if (!record.module.is_none() && seen.insert(record.module.ptr())) {
      found.append(py::make_tuple(to_str(module_path(position)), record.module));
    }
  });
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
  // By dtype name, in order of first appearance (a few dtypes: a linear search).
  std::vector<std::pair<py::object, int64_t>> bytes_by_dtype;
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
      buffer_bytes += facts.nbytes;
    } else {
      params += facts.numel;
      (facts.requires_grad ? trainable : frozen) += facts.numel;
      bytes += facts.nbytes;
      local_params += record.local_numel;
      local_bytes += record.local_nbytes;
    }
    auto same_dtype = [&](const auto& entry) { return entry.first.equal(record.dtype); };
    auto dtype_entry = std::find_if(bytes_by_dtype.begin(), bytes_by_dtype.end(), same_dtype);
    if (dtype_entry == bytes_by_dtype.end()) {
      dtype_entry = bytes_by_dtype.emplace(bytes_by_dtype.end(), record.dtype, 0);
    }
    dtype_entry->second += facts.nbytes;
    if (facts.device_code >= 0) {  // entries of a file are on no device
      bytes_by_device[facts.device_code] += facts.nbytes;
    }
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
  for (const auto& [name, dtype_bytes] : bytes_by_dtype) {
    by_dtype[name] = dtype_bytes;
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
