// The Python module torchwalk._C: every binding in one place.
//
// The drop-in walkers return an iterator over a list, or None when PyTorch
// itself must answer (the drop-in, a DropIn of python/torchwalk/dropin.py,
// then runs its Python body, which calls the module's own method). Each one
// names the root's methods that the PyTorch call it replaces goes through.
//
// They run at every optimizer step and gradient clip, often on small models,
// where a pybind11 dispatch would cost more than the walk itself: so they are
// plain METH_FASTCALL functions. Everything else uses pybind11.

#include <pybind11/pybind11.h>

#include <cmath>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bindings/drop_in.h"
#include "bindings/tensor_unpack.h"
#include "common/gc_pause.h"
#include "stats/tensor_stats.h"
#include "storage/tie_groups.h"
#include "tree/tree_records.h"
#include "walk/attribute_path.h"
#include "walk/class_check.h"
#include "walk/module_walk.h"
#include "walk/state_dict.h"

namespace py = pybind11;
using namespace torchwalk;

namespace {

PyObject* empty_str() {
  static PyObject* empty = PyUnicode_InternFromString("");
  return empty;
}

// Python truthiness, as PyTorch's `if recurse:` reads it.
bool truth(py::handle flag) {
  int value = PyObject_IsTrue(flag.ptr());
  if (value < 0) {
    throw py::error_already_set();
  }
  return value != 0;
}

std::optional<py::object> members(py::handle module, Leaves leaves, py::handle prefix,
                                  py::handle recurse, py::handle remove_duplicate, bool with_names,
                                  AttributeMask root_keeps) {
  return walk_members(module, MemberQuery{leaves, prefix, truth(recurse), truth(remove_duplicate),
                                          with_names, root_keeps | mask_of(kNamedMembers)});
}

using Arguments = PyObject* const*;

// Runs `walk` on the positional arguments and turns its answer into a Python
// object: the result, None for a hand-back, or nullptr with the exception set.
template <Py_ssize_t Arity, typename Walk>
PyObject* fast_call(const char* function, Arguments args, Py_ssize_t nargs, Walk walk) {
  if (nargs != Arity) {
    PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments but %zd were given",
                 function, Arity, nargs);
    return nullptr;
  }
  // A first argument that is no module: Python answers, as `module.method()`
  // would (an AttributeError, for most objects).
  if (!facts_of(Py_TYPE(args[0])).is_module) {
    Py_RETURN_NONE;
  }
  try {
    auto found = walk(args);
    if (!found) {
      Py_RETURN_NONE;
    }
    return found->release().ptr();
  } catch (py::error_already_set& error) {
    error.restore();
  } catch (py::builtin_exception& error) {
    error.set_error();
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_RuntimeError, error.what());
  }
  return nullptr;
}

PyObject* named_parameters(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<4>("named_parameters", args, nargs, [](Arguments a) {
    return members(a[0], Leaves::parameters, a[1], a[2], a[3], true, mask_of(kNamedParameters));
  });
}

PyObject* parameters(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("parameters", args, nargs, [](Arguments a) {
    return members(a[0], Leaves::parameters, empty_str(), a[1], Py_True, false,
                   mask_of(kParameters, kNamedParameters));
  });
}

PyObject* named_buffers(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<4>("named_buffers", args, nargs, [](Arguments a) {
    return members(a[0], Leaves::buffers, a[1], a[2], a[3], true, mask_of(kNamedBuffers));
  });
}

PyObject* buffers(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("buffers", args, nargs, [](Arguments a) {
    return members(a[0], Leaves::buffers, empty_str(), a[1], Py_True, false,
                   mask_of(kBuffers, kNamedBuffers));
  });
}

PyObject* named_modules(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<4>("named_modules", args, nargs, [](Arguments a) {
    return walk_modules(a[0], ModuleQuery{a[1], a[2], truth(a[3]), true, mask_of(kNamedModules)});
  });
}

PyObject* modules(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("modules", args, nargs, [](Arguments a) {
    return walk_modules(a[0], ModuleQuery{Py_None, empty_str(), truth(a[1]), false,
                                          mask_of(kModules, kNamedModules)});
  });
}

PyObject* named_children(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<1>("named_children", args, nargs, [](Arguments a) {
    return walk_children(a[0], true, mask_of(kNamedChildren));
  });
}

PyObject* children(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<1>("children", args, nargs, [](Arguments a) {
    return walk_children(a[0], false, mask_of(kChildren, kNamedChildren));
  });
}

PyObject* get_submodule(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("get_submodule", args, nargs, [](Arguments a) {
    return find_submodule(a[0], a[1], mask_of(kGetSubmodule));
  });
}

PyObject* get_parameter(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("get_parameter", args, nargs, [](Arguments a) {
    return find_parameter(a[0], a[1], mask_of(kGetParameter));
  });
}

PyObject* get_buffer(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<2>("get_buffer", args, nargs,
                      [](Arguments a) { return find_buffer(a[0], a[1], mask_of(kGetBuffer)); });
}

PyObject* state_dict(PyObject*, Arguments args, Py_ssize_t nargs) {
  return fast_call<4>("state_dict", args, nargs, [](Arguments a) {
    return walk_state_dict(a[0], StateDictQuery{a[1], a[2], a[3], mask_of(kStateDict)});
  });
}

#define TORCHWALK_FAST_FUNCTION(name, doc) \
  {#name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(name)), METH_FASTCALL, doc}

PyMethodDef fast_functions[] = {
    TORCHWALK_FAST_FUNCTION(named_parameters,
                            "(module, prefix, recurse, remove_duplicate) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(parameters, "(module, recurse) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(named_buffers,
                            "(module, prefix, recurse, remove_duplicate) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(buffers, "(module, recurse) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(named_modules,
                            "(module, memo, prefix, remove_duplicate) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(modules, "(module, remove_duplicate) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(named_children, "(module) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(children, "(module) -> iterator | None"),
    TORCHWALK_FAST_FUNCTION(get_submodule, "(module, target) -> Module | None"),
    TORCHWALK_FAST_FUNCTION(get_parameter, "(module, target) -> Parameter | None"),
    TORCHWALK_FAST_FUNCTION(get_buffer, "(module, target) -> Tensor | None"),
    TORCHWALK_FAST_FUNCTION(state_dict,
                            "(module, destination, prefix, keep_vars) -> destination | None"),
    {nullptr, nullptr, 0, nullptr},
};

#undef TORCHWALK_FAST_FUNCTION

// torch.nn.parameter.UninitializedTensorMixin: lazy tensors are its instances.
// Owned for the extension's lifetime (never released, as in class_check.cpp).
PyObject* lazy_tensor_class = nullptr;

const char* kind_name(TieKind kind) {
  switch (kind) {
    case TieKind::shared:
      return "shared";
    case TieKind::alias:
      return "alias";
    case TieKind::overlap:
      return "overlap";
    case TieKind::packed:
      return "packed";
  }
  return "packed";
}

void bind_tree_records(py::module_& m) {
  using Records = TreeRecords;
  py::class_<Records>(m, "TreeRecords",
                      "Flat records of one walk: module positions and the tensors at each.")
      .def("module_count", &Records::module_count)
      .def("module_path", &Records::module_path)
      .def("module_name", [](const Records& r, int64_t p) { return r.module(p).name; })
      .def("module_type",
           [](const Records& r, int64_t p) -> std::string {
             const ModuleRecord& record = r.module(p);
             return record.module.is_none() ? "" : Py_TYPE(record.module.ptr())->tp_name;
           })
      .def("module_object", [](const Records& r, int64_t p) { return r.module(p).module; })
      .def("module_parent", [](const Records& r, int64_t p) { return r.module(p).parent; })
      .def("module_depth", [](const Records& r, int64_t p) { return r.module(p).depth; })
      .def("module_children",
           [](const Records& r, int64_t p) {
             py::list children;
             for (int64_t child : r.module_children(p)) {
               children.append(child);
             }
             return children;
           })
      .def("module_leaves",
           [](const Records& r, int64_t p) {
             const ModuleRecord& record = r.module(p);
             py::list leaves;
             for (int64_t leaf = record.first_leaf; leaf < record.first_leaf + record.leaf_count;
                  ++leaf) {
               leaves.append(leaf);
             }
             return leaves;
           })
      .def("module_first", [](const Records& r, int64_t p) { return r.module(p).first; })
      .def("module_shape_hash", [](const Records& r, int64_t p) { return r.module(p).shape_hash; })
      .def("module_totals",
           [](const Records& r, int64_t p) {
             const SubtreeFigures& f = r.module(p).figures;
             return py::make_tuple(f.params, f.trainable, f.frozen, f.bytes, f.buffers,
                                   f.buffer_bytes, f.uninitialized);
           })
      .def("leaf_count", &Records::leaf_count)
      .def("unique_leaf_count", &Records::unique_leaf_count)
      .def("leaf_path", &Records::leaf_path)
      .def("leaf_name", [](const Records& r, int64_t i) { return r.leaf(i).name; })
      .def("leaf_module", [](const Records& r, int64_t i) { return r.leaf(i).module; })
      .def("leaf_is_buffer", [](const Records& r, int64_t i) { return r.leaf(i).is_buffer; })
      .def("leaf_tensor", [](const Records& r, int64_t i) { return r.leaf(i).tensor; })
      .def("leaf_first", [](const Records& r, int64_t i) { return r.leaf(i).first; })
      .def("leaf_is_lazy", [](const Records& r, int64_t i) { return r.leaf(i).is_lazy; })
      .def("leaf_tied_to", &Records::leaf_tied_to)
      .def("named_parameters", &Records::named_parameters)
      .def("named_buffers", &Records::named_buffers)
      .def("named_modules", &Records::named_modules)
      .def("tie_groups",
           [](Records& r) {
             py::list groups;
             for (const TieGroup& group : r.tie_groups()) {
               py::list names;
               for (int64_t leaf : group.leaves) {
                 names.append(r.leaf_path(leaf));
               }
               groups.append(py::make_tuple(names, kind_name(group.kind), group.nbytes,
                                            group.overcount_nbytes));
             }
             return groups;
           })
      .def("totals", &Records::totals);

  m.def(
      "walk_module",
      [](py::handle module, bool buffers, py::handle sharded_class) -> py::object {
        TensorClasses classes{lazy_tensor_class, sharded_class};
        std::optional<Records> records = Records::from_module(module, buffers, classes);
        if (!records) {
          return py::none();
        }
        return py::cast(std::move(*records));
      },
      py::arg("module"), py::arg("buffers"), py::arg("sharded_class") = py::none(),
      "Walks an nn.Module once into TreeRecords, or None where PyTorch's own methods must "
      "answer.");
  m.def(
      "walk_named",
      [](py::list modules, py::list parameters, py::list buffers, py::handle sharded_class) {
        TensorClasses classes{lazy_tensor_class, sharded_class};
        return std::make_unique<Records>(
            Records::from_named(modules, parameters, buffers, classes));
      },
      py::arg("modules"), py::arg("parameters"), py::arg("buffers"),
      py::arg("sharded_class") = py::none(),
      "Builds TreeRecords from lists of (dotted name, module or tensor) pairs.");
}

// The kind names of `StatsTable.partials()` rows; see _C.pyi.
constexpr const char* kStatsKindNames[] = {"values", "counts_and_l2", "numel_only"};

// A tuple of new references, built with CPython's own calls (pybind11's
// make_tuple costs several times as much). Releases them all when one is
// null.
py::tuple new_tuple(std::initializer_list<PyObject*> items) {
  auto tuple = py::reinterpret_steal<py::tuple>(PyTuple_New(static_cast<Py_ssize_t>(items.size())));
  bool made = static_cast<bool>(tuple);
  for (PyObject* item : items) {
    made = made && item != nullptr;
  }
  if (!made) {
    for (PyObject* item : items) {
      Py_XDECREF(item);
    }
    throw py::error_already_set();
  }
  Py_ssize_t index = 0;
  for (PyObject* item : items) {
    PyTuple_SET_ITEM(tuple.ptr(), index++, item);
  }
  return tuple;
}

// (numel, kind, count, sum, m2, sum_squares, min, max, absmax, zeros, nans, infs)
py::tuple partials_of(const TensorStats& stats) {
  static PyObject* const kind_names[] = {
      PyUnicode_InternFromString(kStatsKindNames[0]),
      PyUnicode_InternFromString(kStatsKindNames[1]),
      PyUnicode_InternFromString(kStatsKindNames[2]),
  };
  const Moments& m = stats.moments;
  return new_tuple(
      {PyLong_FromLongLong(stats.numel), Py_NewRef(kind_names[static_cast<int>(stats.kind)]),
       PyLong_FromLongLong(m.count), PyFloat_FromDouble(m.sum), PyFloat_FromDouble(m.m2),
       PyFloat_FromDouble(m.sum_squares), PyFloat_FromDouble(m.min), PyFloat_FromDouble(m.max),
       PyFloat_FromDouble(m.absmax), PyLong_FromLongLong(m.zeros), PyLong_FromLongLong(m.nans),
       PyLong_FromLongLong(m.infs)});
}

// The figures of one row as torchwalk.TensorStats holds them after its name:
// (numel, mean, std, min, max, absmax, l2, zeros, nans, infs). None where the
// tensor has no such figure: all but numel for meta and empty tensors, all
// but the counts and l2 for complex ones. The kernels keep NaN-free extremes
// and count the NaNs; torch's extremes are NaN then, and so are these.
py::tuple figures_of(const TensorStats& stats) {
  const Moments& m = stats.moments;
  auto none = [] { return Py_NewRef(Py_None); };
  if (stats.kind == StatsKind::numel_only || m.count == 0) {
    return new_tuple({PyLong_FromLongLong(stats.numel), none(), none(), none(), none(), none(),
                      none(), none(), none(), none()});
  }
  PyObject* l2 = PyFloat_FromDouble(std::sqrt(m.sum_squares));
  if (stats.kind == StatsKind::counts_and_l2) {
    return new_tuple({PyLong_FromLongLong(stats.numel), none(), none(), none(), none(), none(), l2,
                      PyLong_FromLongLong(m.zeros), PyLong_FromLongLong(m.nans),
                      PyLong_FromLongLong(m.infs)});
  }
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  double count = static_cast<double>(m.count);
  double std = m.count > 1 ? std::sqrt(m.m2 / static_cast<double>(m.count - 1)) : kNaN;
  bool has_nan = m.nans > 0;
  return new_tuple({PyLong_FromLongLong(stats.numel), PyFloat_FromDouble(m.sum / count),
                    PyFloat_FromDouble(std), PyFloat_FromDouble(has_nan ? kNaN : m.min),
                    PyFloat_FromDouble(has_nan ? kNaN : m.max),
                    PyFloat_FromDouble(has_nan ? kNaN : m.absmax), l2, PyLong_FromLongLong(m.zeros),
                    PyLong_FromLongLong(m.nans), PyLong_FromLongLong(m.infs)});
}

// Holds a NaN, an Inf, or nothing but zeros.
bool is_anomalous(const TensorStats& stats) {
  const Moments& m = stats.moments;
  if (stats.kind == StatsKind::numel_only || m.count == 0) {
    return false;
  }
  return m.nans > 0 || m.infs > 0 || (stats.numel > 0 && m.zeros == stats.numel);
}

// The statistics of many tensors, a row each, kept in C++: Python objects are
// made only for the rows that are read (ten thousand rows of twelve objects
// each cost more than reading ten thousand small tensors).
struct StatsTable {
  std::vector<TensorStats> rows;

  const TensorStats& at(py::handle index) const {
    Py_ssize_t position = PyNumber_AsSsize_t(index.ptr(), PyExc_IndexError);
    if (position == -1 && PyErr_Occurred()) {
      throw py::error_already_set();
    }
    if (position < 0 || static_cast<size_t>(position) >= rows.size()) {
      throw py::index_error("row " + std::to_string(position) + " of a table of " +
                            std::to_string(rows.size()));
    }
    return rows[static_cast<size_t>(position)];
  }

  // The rows at `positions`, merged as if their tensors were concatenated.
  TensorStats merged(py::iterable positions) const {
    std::vector<TensorStats> parts;
    for (py::handle position : positions) {
      parts.push_back(at(position));
    }
    return merge_stats(parts);
  }
};

Moments moments_from_python(py::handle partial) {
  auto fields = py::reinterpret_borrow<py::sequence>(partial);
  if (fields.size() != 10) {
    throw py::value_error(
        "a partial has 10 fields (count, sum, m2, sum_squares, min, max, "
        "absmax, zeros, nans, infs), got " +
        std::to_string(fields.size()));
  }
  // All read as floats: they come as float64 from a collective.
  auto value = [&](size_t index) { return fields[index].cast<double>(); };
  Moments m;
  m.count = static_cast<int64_t>(value(0));
  m.sum = value(1);
  m.m2 = value(2);
  m.sum_squares = value(3);
  m.min = value(4);
  m.max = value(5);
  m.absmax = value(6);
  m.zeros = static_cast<int64_t>(value(7));
  m.nans = static_cast<int64_t>(value(8));
  m.infs = static_cast<int64_t>(value(9));
  return m;
}

struct NamedStatsPath {
  const char* name;
  StatsPath path;
};
constexpr NamedStatsPath kStatsPaths[] = {{"kernels", StatsPath::kernels},
                                          {"avx512_cpu", StatsPath::avx512_cpu},
                                          {"avx2_cpu", StatsPath::avx2_cpu},
                                          {"portable_cpu", StatsPath::portable_cpu},
                                          {"aten", StatsPath::aten}};

StatsPath stats_path(const std::string& name) {
  for (const NamedStatsPath& known : kStatsPaths) {
    if (name == known.name) {
      if (!runs_here(known.path)) {
        throw py::value_error("this CPU cannot run the '" + name + "' statistics path");
      }
      return known.path;
    }
  }
  throw py::value_error(
      "path must be 'kernels', 'avx512_cpu', 'avx2_cpu', 'portable_cpu' or 'aten', got '" + name +
      "'");
}

void bind_stats(py::module_& m) {
  py::class_<StatsTable>(m, "StatsTable", "The statistics of many tensors, a row each.")
      .def("__len__", [](const StatsTable& table) { return table.rows.size(); })
      .def_static(
          "concatenated",
          [](py::iterable tables) {
            StatsTable joined;
            for (py::handle table : tables) {
              const auto& rows = table.cast<const StatsTable&>().rows;
              joined.rows.insert(joined.rows.end(), rows.begin(), rows.end());
            }
            return joined;
          },
          "The rows of several tables, in order.")
      .def(
          "figures",
          [](const StatsTable& table, py::handle row) { return figures_of(table.at(row)); },
          "(numel, mean, std, min, max, absmax, l2, zeros, nans, infs) of a row.")
      .def(
          "merged_figures",
          [](const StatsTable& table, py::iterable rows) { return figures_of(table.merged(rows)); },
          "The figures of several rows' tensors as if concatenated.")
      .def(
          "total_figures",
          [](const StatsTable& table) { return figures_of(merge_stats(table.rows)); },
          "The figures of all rows' tensors as if concatenated.")
      .def(
          "anomalous",
          [](const StatsTable& table) {
            py::list found;
            for (size_t row = 0; row < table.rows.size(); ++row) {
              if (is_anomalous(table.rows[row])) {
                found.append(row);
              }
            }
            return found;
          },
          "The rows holding a NaN, an Inf, or nothing but zeros.")
      .def(
          "partials",
          [](const StatsTable& table) {
            GarbageCollectorPause pause;  // see gc_pause.h
            py::list found;
            for (const TensorStats& stats : table.rows) {
              found.append(partials_of(stats));
            }
            return found;
          },
          "Every row as (numel, kind, count, sum, m2, sum_squares, min, max, absmax, zeros, "
          "nans, infs).")
      .def(
          "moments",
          [](const StatsTable& table, py::iterable rows) {
            py::list found;
            for (py::handle row : rows) {
              const Moments& m = table.at(row).moments;
              found.append(py::make_tuple(m.count, m.sum, m.m2, m.sum_squares, m.min, m.max,
                                          m.absmax, m.zeros, m.nans, m.infs));
            }
            return found;
          },
          "(count, sum, m2, sum_squares, min, max, absmax, zeros, nans, infs) of each of `rows`: "
          "what merged_across_ranks merges.")
      .def(
          "merged_across_ranks",
          [](const StatsTable& table, py::iterable rows, py::sequence per_rank,
             py::iterable numels) {
            StatsTable merged = table;
            auto numel = numels.begin();
            size_t index = 0;
            for (py::handle row : rows) {
              if (numel == numels.end()) {
                throw py::value_error("one global numel per row");
              }
              TensorStats stats = table.at(row);
              stats.numel = numel->cast<int64_t>();
              stats.moments = Moments{};
              for (py::handle rank : per_rank) {  // in rank order: the same on every rank
                auto partials = py::reinterpret_borrow<py::sequence>(rank);
                stats.moments.merge(moments_from_python(partials[index]));
              }
              merged.rows[static_cast<size_t>(row.cast<Py_ssize_t>())] = stats;
              ++numel;
              ++index;
            }
            return merged;
          },
          py::arg("rows"), py::arg("per_rank"), py::arg("numels"),
          "A copy whose `rows` are merged from every rank's partials of them, "
          "`per_rank[rank][i]` = (count, sum, m2, sum_squares, min, max, absmax, zeros, nans, "
          "infs) of rows[i], with the global tensors' numels.");
  m.def(
      "tensor_stats",
      [](py::list tensors, const std::string& path) {
        return StatsTable{stats_of_tensor_list(tensors.ptr(), stats_path(path))};
      },
      py::arg("tensors"), py::arg("path") = "kernels",
      "Statistics of each tensor in one pass, a row each of a StatsTable.");
  m.def(
      "stats_paths",
      [] {
        py::list names;
        for (const NamedStatsPath& known : kStatsPaths) {
          if (runs_here(known.path)) {
            names.append(known.name);
          }
        }
        return names;
      },
      "The names tensor_stats takes for `path` on this machine.");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "torchwalk's C++ core: module-tree walks, storage keys and statistics";
  m.attr("TORCH_VERSION") = TORCHWALK_TORCH_VERSION;

  m.def(
      "configure",
      [](py::handle module_class, py::handle parameter_class, py::handle tensor_hash,
         py::handle identity_torch_functions, py::handle lazy_class) {
        configure_classes(module_class.ptr(), parameter_class.ptr(), tensor_hash.ptr(),
                          identity_torch_functions.ptr());
        lazy_tensor_class = Py_NewRef(lazy_class.ptr());
      },
      "Tells the walkers nn.Module, nn.Parameter, how tensors hash and which tensors are lazy "
      "(called once, at import).");
  m.def(
      "set_replacements", [](py::dict replacements) { set_replacements(replacements.ptr()); },
      "Tells the walkers which functions torchwalk.install() put on nn.Module, by attribute "
      "name (an empty dict: none).");
  bind_tree_records(m);
  bind_stats(m);

  if (PyModule_AddFunctions(m.ptr(), fast_functions) != 0) {
    throw py::error_already_set();
  }
  add_drop_in_type(m.ptr());
}
