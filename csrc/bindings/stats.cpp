// The statistics as torchwalk._C calls: tensor_stats, and StatsTable, the
// result that keeps its rows in C++ until they are read.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bridge/python_tensors.h"
#include "common/python_error.h"
#include "stats/tensor_stats.h"
#include "walk/class_check.h"

namespace torchwalk {

namespace py = pybind11;

namespace {

constexpr size_t kMomentFields = 10;  // a partial's fields before its edge counts

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

// The exponents of a row as TensorStats.exponents holds them: a list of
// (e, count) pairs; None where the row has no values (meta, complex).
PyObject* exponents_of(const TensorStats& stats) {
  if (stats.kind != StatsKind::values) {
    return Py_NewRef(Py_None);
  }
  PyObject* pairs = PyList_New(static_cast<Py_ssize_t>(stats.magnitudes.exponents.size()));
  if (pairs == nullptr) {
    return nullptr;
  }
  Py_ssize_t index = 0;
  for (auto [exponent, count] : stats.magnitudes.exponents) {
    PyObject* pair = Py_BuildValue("(iL)", exponent, static_cast<long long>(count));
    if (pair == nullptr) {
      Py_DECREF(pairs);
      return nullptr;
    }
    PyList_SET_ITEM(pairs, index++, pair);
  }
  return pairs;
}

// The figures of one row as torchwalk.TensorStats holds them after its name:
// (numel, mean, std, min, max, absmax, l2, zeros, nans, infs, exponents).
// None where the tensor has no such figure: all but numel for meta and empty
// tensors, all but the counts and l2 for complex ones; exponents unless
// `exponents` (the table counted them). The kernels keep NaN-free extremes
// and count the NaNs; torch's extremes are NaN then, and so are these.
// The figures finished from a row's moments as torch gives them: the
// kernels keep NaN-free extremes and count the NaNs; torch's extremes are NaN
// then, and so are these; std uses correction=1 (NaN for one element).
struct Finished {
  double mean, std, min, max, absmax, l2;
};

Finished finish(const Moments& m) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  const bool has_nan = m.nans > 0;
  return Finished{m.sum / static_cast<double>(m.count),
                  m.count > 1 ? std::sqrt(m.m2 / static_cast<double>(m.count - 1)) : kNaN,
                  has_nan ? kNaN : m.min,
                  has_nan ? kNaN : m.max,
                  has_nan ? kNaN : m.absmax,
                  std::sqrt(m.sum_squares)};
}

py::tuple figures_of(const TensorStats& stats, bool exponents) {
  const Moments& m = stats.moments;
  auto none = [] { return Py_NewRef(Py_None); };
  PyObject* exponent_pairs = exponents ? exponents_of(stats) : none();
  if (stats.kind == StatsKind::numel_only || m.count == 0) {
    return new_tuple({PyLong_FromLongLong(stats.numel), none(), none(), none(), none(), none(),
                      none(), none(), none(), none(), exponent_pairs});
  }
  const Finished f = finish(m);
  PyObject* l2 = PyFloat_FromDouble(f.l2);
  if (stats.kind == StatsKind::counts_and_l2) {
    return new_tuple({PyLong_FromLongLong(stats.numel), none(), none(), none(), none(), none(), l2,
                      PyLong_FromLongLong(m.zeros), PyLong_FromLongLong(m.nans),
                      PyLong_FromLongLong(m.infs), exponent_pairs});
  }
  return new_tuple({PyLong_FromLongLong(stats.numel), PyFloat_FromDouble(f.mean),
                    PyFloat_FromDouble(f.std), PyFloat_FromDouble(f.min), PyFloat_FromDouble(f.max),
                    PyFloat_FromDouble(f.absmax), l2, PyLong_FromLongLong(m.zeros),
                    PyLong_FromLongLong(m.nans), PyLong_FromLongLong(m.infs), exponent_pairs});
}

// Sets into[key + "/" + field] = value, as a float.
void set_field(PyObject* into, const std::string& key, const char* field, double value) {
  std::string name = key + "/" + field;
  PyObject* number = PyFloat_FromDouble(value);
  int failed = number == nullptr ? -1 : PyDict_SetItemString(into, name.c_str(), number);
  Py_XDECREF(number);
  if (failed != 0) {
    throw py::error_already_set();
  }
}

// What tw.Monitor logs of a row, under `key`: l2, absmax, mean, std, zeros
// (a fraction), nonfinite (a count), and for each format (its edges counted
// in pairs: underflow, overflow) the fractions underflow:{name} and
// overflow:{name}. Fields torch has no answer for are left out.
void add_logged_fields(PyObject* into, const std::string& key, const TensorStats& stats,
                       const std::vector<std::string>& formats) {
  const Moments& m = stats.moments;
  if (stats.kind == StatsKind::numel_only || m.count == 0) {
    return;
  }
  const Finished f = finish(m);
  const auto numel = static_cast<double>(stats.numel);
  set_field(into, key, "l2", f.l2);
  if (stats.kind == StatsKind::values) {
    set_field(into, key, "absmax", f.absmax);
    set_field(into, key, "mean", f.mean);
    set_field(into, key, "std", f.std);
  }
  set_field(into, key, "zeros", static_cast<double>(m.zeros) / numel);
  set_field(into, key, "nonfinite", static_cast<double>(m.nans + m.infs));
  if (stats.kind != StatsKind::values) {
    return;
  }
  const std::vector<int64_t>& reached = stats.magnitudes.at_least;
  if (reached.size() != 2 * formats.size()) {
    throw py::value_error("two edges per format: " + std::to_string(reached.size()) +
                          " edges for " + std::to_string(formats.size()) + " formats");
  }
  const int64_t nonzero_finite = stats.numel - m.zeros - m.nans - m.infs;
  for (size_t format = 0; format < formats.size(); ++format) {
    set_field(into, key, ("underflow:" + formats[format]).c_str(),
              static_cast<double>(nonzero_finite - reached[2 * format]) / numel);
    set_field(into, key, ("overflow:" + formats[format]).c_str(),
              static_cast<double>(reached[2 * format + 1]) / numel);
  }
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
  MagnitudeRequest request;  // what the rows' magnitudes hold

  const TensorStats& at(py::handle index) const { return rows[row_position(index, rows.size())]; }

  // The rows at `positions`, merged as if their tensors were concatenated.
  TensorStats merged(py::iterable positions) const {
    TensorStats total;
    for (py::handle position : positions) {
      merge_into(total, at(position));
    }
    return total;
  }
};

// Groups of row indices, converted from Python once: the monitor merges the
// same groups at every logging step.
struct RowGroups {
  std::vector<std::vector<size_t>> groups;
  size_t end = 0;  // one past the largest index

  explicit RowGroups(py::iterable from) {
    for (py::handle group : from) {
      std::vector<size_t>& rows = groups.emplace_back();
      for (py::handle row : py::reinterpret_borrow<py::iterable>(group)) {
        Py_ssize_t index = PyNumber_AsSsize_t(row.ptr(), PyExc_IndexError);
        if (index == -1 && PyErr_Occurred()) {
          throw py::error_already_set();
        }
        if (index < 0) {
          throw py::index_error("row " + std::to_string(index));
        }
        rows.push_back(static_cast<size_t>(index));
        end = std::max(end, rows.back() + 1);
      }
    }
  }
};

// A row's partial as ranks exchange it to merge a sharded tensor's statistics
// (_C.pyi's Partial): its Moments, then how many values reached each edge.
py::tuple partial_to_python(const TensorStats& stats) {
  const Moments& m = stats.moments;
  py::tuple partial(kMomentFields + stats.magnitudes.at_least.size());
  size_t field = 0;
  for (double value :
       {static_cast<double>(m.count), m.sum, m.m2, m.sum_squares, m.min, m.max, m.absmax,
        static_cast<double>(m.zeros), static_cast<double>(m.nans), static_cast<double>(m.infs)}) {
    partial[field++] = value;
  }
  for (int64_t reached : stats.magnitudes.at_least) {
    partial[field++] = static_cast<double>(reached);
  }
  return partial;
}

// Adds a partial from Python to `stats`, which has `edges` edges.
void merge_partial(py::handle partial, size_t edges, TensorStats& stats) {
  auto fields = py::reinterpret_borrow<py::sequence>(partial);
  if (fields.size() != kMomentFields + edges) {
    throw py::value_error("a partial has " + std::to_string(kMomentFields + edges) +
                          " fields (count, sum, m2, sum_squares, min, max, absmax, zeros, nans, "
                          "infs, then one per edge), got " +
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
  stats.moments.merge(m);
  Magnitudes reached;
  for (size_t edge = 0; edge < edges; ++edge) {
    reached.at_least.push_back(static_cast<int64_t>(value(kMomentFields + edge)));
  }
  stats.magnitudes.merge(reached);
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

}  // namespace

size_t row_position(py::handle index, size_t rows) {
  Py_ssize_t position = PyNumber_AsSsize_t(index.ptr(), PyExc_IndexError);
  if (position == -1 && PyErr_Occurred()) {
    throw py::error_already_set();
  }
  if (position < 0 || static_cast<size_t>(position) >= rows) {
    throw py::index_error("row " + std::to_string(position) + " of a table of " +
                          std::to_string(rows));
  }
  return static_cast<size_t>(position);
}

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
  py::class_<RowGroups>(m, "RowGroups", "Groups of row indices, for StatsTable.grouped.")
      .def(py::init<py::iterable>(), py::arg("groups"))
      .def("__len__", [](const RowGroups& groups) { return groups.groups.size(); });
  py::class_<StatsTable>(m, "StatsTable", "The statistics of many tensors, a row each.")
      .def("__len__", [](const StatsTable& table) { return table.rows.size(); })
      .def_static(
          "concatenated",
          [](py::iterable tables) {
            StatsTable joined;
            for (py::handle table : tables) {
              const auto& part = table.cast<const StatsTable&>();
              joined.rows.insert(joined.rows.end(), part.rows.begin(), part.rows.end());
              joined.request = part.request;
            }
            return joined;
          },
          "The rows of several tables (of the same request), in order.")
      .def(
          "figures",
          [](const StatsTable& table, py::handle row) {
            return figures_of(table.at(row), table.request.exponents);
          },
          "(numel, mean, std, min, max, absmax, l2, zeros, nans, infs, exponents) of a row.")
      .def(
          "reached",
          [](const StatsTable& table, py::handle row) { return table.at(row).magnitudes.at_least; },
          "For each edge asked for, how many finite values of a row have |x| >= edge (x as "
          "float32).")
      .def(
          "merged_figures",
          [](const StatsTable& table, py::iterable rows) {
            return figures_of(table.merged(rows), table.request.exponents);
          },
          "The figures of several rows' tensors as if concatenated.")
      .def(
          "grouped",
          [](const StatsTable& table, const RowGroups& groups) {
            if (groups.end > table.rows.size()) {
              throw py::index_error("row " + std::to_string(groups.end - 1) + " of a table of " +
                                    std::to_string(table.rows.size()));
            }
            StatsTable grouped{{}, table.request};
            for (const std::vector<size_t>& rows : groups.groups) {
              TensorStats& total = grouped.rows.emplace_back();
              for (size_t row : rows) {
                merge_into(total, table.rows[row]);
              }
            }
            return grouped;
          },
          "A table with a row per group of `groups`, merged as if their tensors were "
          "concatenated.")
      .def(
          "grouped",
          [](const StatsTable& table, py::iterable groups) {
            StatsTable grouped{{}, table.request};
            for (py::handle group : groups) {
              grouped.rows.push_back(table.merged(py::reinterpret_borrow<py::iterable>(group)));
            }
            return grouped;
          },
          "A table with a row per group of rows (a list of row indices), merged as if their "
          "tensors were concatenated.")
      .def(
          "total_figures",
          [](const StatsTable& table) {
            return figures_of(merge_stats(table.rows), table.request.exponents);
          },
          "The figures of all rows' tensors as if concatenated.")
      .def(
          "add_logged_fields",
          [](const StatsTable& table, py::dict into, const std::vector<std::string>& keys,
             const std::vector<std::string>& formats) {
            if (keys.size() != table.rows.size()) {
              throw py::value_error("one key per row: " + std::to_string(keys.size()) +
                                    " keys for " + std::to_string(table.rows.size()) + " rows");
            }
            for (size_t row = 0; row < keys.size(); ++row) {
              add_logged_fields(into.ptr(), keys[row], table.rows[row], formats);
            }
          },
          py::arg("into"), py::arg("keys"), py::arg("formats"),
          "Adds what tw.Monitor logs of each row to `into`: '{keys[row]}/{field}' for l2, "
          "absmax, mean, std, zeros (a fraction), nonfinite (a count), and underflow:{name} and "
          "overflow:{name} for each of `formats` (whose two edges each, underflow then "
          "overflow, the table counted).")
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
          [](const StatsTable& table, py::iterable rows) {
            py::list found;
            for (py::handle row : rows) {
              found.append(partial_to_python(table.at(row)));
            }
            return found;
          },
          "(count, sum, m2, sum_squares, min, max, absmax, zeros, nans, infs, then the count "
          "of each edge) of each of `rows`: what merged_across_ranks merges.")
      .def(
          "exponent_lists",
          [](const StatsTable& table, py::iterable rows) {
            py::list found;
            for (py::handle row : rows) {
              found.append(table.at(row).magnitudes.exponents);
            }
            return found;
          },
          "The (e, count) pairs of each of `rows` (empty unless the table counted exponents).")
      .def(
          "merged_across_ranks",
          [](const StatsTable& table, py::iterable rows, py::sequence per_rank, py::iterable numels,
             std::optional<py::sequence> exponents_per_rank) {
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
              stats.magnitudes = Magnitudes{};
              for (py::handle rank : per_rank) {  // in rank order: the same on every rank
                merge_partial(py::reinterpret_borrow<py::sequence>(rank)[index],
                              table.request.edges.size(), stats);
              }
              if (exponents_per_rank) {
                for (py::handle rank : *exponents_per_rank) {
                  Magnitudes counted;
                  counted.exponents = py::reinterpret_borrow<py::sequence>(rank)[index]
                                          .cast<std::vector<std::pair<int32_t, int64_t>>>();
                  stats.magnitudes.merge(counted);
                }
              }
              merged.rows[static_cast<size_t>(row.cast<Py_ssize_t>())] = stats;
              ++numel;
              ++index;
            }
            return merged;
          },
          py::arg("rows"), py::arg("per_rank"), py::arg("numels"),
          py::arg("exponents_per_rank") = py::none(),
          "A copy whose `rows` are merged from every rank's partials of them, "
          "`per_rank[rank][i]` = partials(rows)[i] on that rank, and, if given, "
          "`exponents_per_rank[rank][i]` = exponent_lists(rows)[i] there, with the global "
          "tensors' numels.")
      .def_property_readonly(
          "counts_exponents", [](const StatsTable& table) { return table.request.exponents; },
          "Whether the rows hold exponent counts.");
  m.def(
      "tensor_stats",
      [](py::list tensors, const std::string& path, bool exponents, std::vector<float> edges) {
        MagnitudeRequest request{exponents, std::move(edges)};
        for (float edge : request.edges) {
          if (!(edge > 0)) {
            throw py::value_error("edges must be positive, got " + std::to_string(edge));
          }
        }
        std::vector<TensorStats> rows =
            stats_of_tensor_list(tensors.ptr(), stats_path(path), request);
        return StatsTable{std::move(rows), std::move(request)};
      },
      py::arg("tensors"), py::arg("path") = "kernels", py::arg("exponents") = false,
      py::arg("edges") = std::vector<float>{},
      "Statistics of each tensor in one pass, a row each of a StatsTable; with `exponents`, "
      "each real tensor's exponent counts, and for each of `edges` how many of its finite "
      "values have |x| >= edge (x as float32).");
  m.def(
      "readable_tensors",
      [](py::list items, bool grads) {
        return py::reinterpret_steal<py::tuple>(
            checked(readable_tensors(items.ptr(), grads, parameter_class())));
      },
      py::arg("items"), py::arg("grads") = false,
      "(the tensors with values among items, or their .grad, a bytes mask of which gave one).");
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

}  // namespace torchwalk
