#pragma once

// The walk-once snapshot: flat records of every module position and every
// tensor held at it, built in one walk, then read in many ways (the views,
// the summary's per-module figures, the ties) without walking again.
//
// Positions follow `named_modules(remove_duplicate=False)`: a module held at
// two places has a position at each, with its subtree repeated, so that every
// name a tensor can be reached by is a leaf. Positions are in pre-order, so a
// parent comes before its children and each position's own leaves are
// consecutive. The records own references to every module and tensor.

#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bridge/tensor_facts.h"
#include "storage/leaf_record.h"
#include "storage/tie_groups.h"
#include "walk/dotted_name.h"

namespace torchwalk {

namespace py = pybind11;

// Figures over a subtree, each tensor object once, lazy tensors left out.
struct SubtreeFigures {
  int64_t params = 0;
  int64_t trainable = 0;
  int64_t frozen = 0;
  int64_t bytes = 0;
  int64_t buffers = 0;
  int64_t buffer_bytes = 0;
  int64_t uninitialized = 0;  // lazy parameters

  SubtreeFigures& operator+=(const SubtreeFigures& other) {
    params += other.params;
    trainable += other.trainable;
    frozen += other.frozen;
    bytes += other.bytes;
    buffers += other.buffers;
    buffer_bytes += other.buffer_bytes;
    uninitialized += other.uninitialized;
    return *this;
  }
};

struct ModuleRecord {
  py::object module;  // None for a module implied by a mapping's dotted names
  py::object name;    // its name in the parent; the root's is ""
  int64_t parent = -1;
  int64_t depth = 0;
  int64_t first = 0;  // first position of the same module object
  int64_t first_child = -1;
  int64_t next_sibling = -1;
  int64_t first_leaf = 0;
  int64_t leaf_count = 0;
  uint64_t shape_hash = 0;
  SubtreeFigures figures;
};

class TreeRecords {
 public:
  // Walks `root` (an nn.Module) by the drop-ins' rules (walk/pytorch_steps.h),
  // or std::nullopt where they hand back: a class on the way overrides the
  // traversal, or holds what PyTorch's own methods must answer for. Raises
  // TypeError for a root that is no module and RecursionError for a module
  // cycle (every position of a cycle is infinite).
  static std::optional<TreeRecords> from_module(py::handle root, bool buffers,
                                                const TensorClasses& classes);

  // Builds the records from lists of (dotted name, object) pairs: the
  // modules (e.g. named_modules(remove_duplicate=False)), the parameters and
  // the buffers. The hierarchy comes from the dots; a path no module is
  // named by gets a position without a module object.
  static TreeRecords from_named(py::handle modules, py::handle parameters, py::handle buffers,
                                const TensorClasses& classes);

  int64_t module_count() const { return static_cast<int64_t>(modules_.size()); }
  int64_t leaf_count() const { return static_cast<int64_t>(leaves_.size()); }
  // Distinct parameters plus distinct buffers: `len(tree)`.
  int64_t unique_leaf_count() const;
  const ModuleRecord& module(int64_t position) const;
  const LeafRecord& leaf(int64_t index) const;

  std::string module_path(int64_t position) const;
  std::string leaf_path(int64_t index) const;
  std::vector<int64_t> module_children(int64_t position) const;

  // The views: what the drop-ins return for the walked tree.
  py::list named_parameters() const { return named_leaves(false); }
  py::list named_buffers() const { return named_leaves(true); }
  py::list named_modules() const;

  const std::vector<TieGroup>& tie_groups();
  int64_t leaf_tied_to(int64_t index);
  py::dict totals();

 private:
  TreeRecords() = default;
  DottedName path_to(int64_t position) const;  // the dotted name of a position
  void finish();                               // first leaves, shape hashes, subtree figures
  py::list named_leaves(bool buffers) const;   // the first leaf of each tensor, by name
  void find_ties();

  std::vector<ModuleRecord> modules_;
  std::vector<LeafRecord> leaves_;
  // The order the source listed positions and leaves in, where it is not
  // pre-order (records built from lists); empty: pre-order.
  std::vector<int64_t> listed_modules_;
  std::vector<int64_t> listed_leaves_;
  std::optional<std::vector<TieGroup>> ties_;
  std::vector<int64_t> tied_to_;
};

}  // namespace torchwalk
