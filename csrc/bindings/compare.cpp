// Comparing pairs of tensors as torchwalk._C calls it: pair_stats, and
// PairTable, the result that keeps its rows in C++ until they are read.

#include <pybind11/pybind11.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bridge/python_tensors.h"
#include "compare/pair_stats.h"

namespace torchwalk {

namespace py = pybind11;

namespace {

struct PairTable {
  std::vector<PairMoments> rows;

  const PairMoments& at(py::handle index) const { return rows[row_position(index, rows.size())]; }
};

// (numel, equal, max_abs, mean_abs, rel_l2, cosine, mismatches), the fields
// of torchwalk.TensorDiff after its name, shapes and dtypes, as torch's
// float64 reductions give them: a NaN difference makes max_abs NaN (the
// kernels keep a NaN-free maximum); rel_l2 is ‖a - b‖ / ‖b‖, 0.0 when both
// are 0; cosine None when a norm is 0. The value fields of an empty pair are
// None.
py::tuple fields_of(const PairMoments& m) {
  if (m.count == 0) {
    return py::make_tuple(0, m.identical, py::none(), py::none(), py::none(), py::none(), 0);
  }
  const double difference_norm = std::sqrt(m.sum_squared_differences);
  const double a_norm = std::sqrt(m.sum_aa);
  const double b_norm = std::sqrt(m.sum_bb);
  const double max_abs =
      std::isnan(m.sum_abs) ? std::numeric_limits<double>::quiet_NaN() : m.max_abs;
  const double rel_l2 = difference_norm == 0 && b_norm == 0 ? 0.0 : difference_norm / b_norm;
  py::object cosine = py::none();
  if (a_norm != 0 && b_norm != 0) {
    cosine = py::float_(m.sum_ab / (a_norm * b_norm));
  }
  return py::make_tuple(m.count, m.identical, max_abs, m.sum_abs / static_cast<double>(m.count),
                        rel_l2, cosine, m.mismatches);
}

}  // namespace

void bind_compare(py::module_& m) {
  py::class_<PairTable>(m, "PairTable", "The comparisons of many pairs of tensors, a row each.")
      .def("__len__", [](const PairTable& table) { return table.rows.size(); })
      .def_static(
          "concatenated",
          [](py::iterable tables) {
            PairTable joined;
            for (py::handle table : tables) {
              const auto& rows = table.cast<const PairTable&>().rows;
              joined.rows.insert(joined.rows.end(), rows.begin(), rows.end());
            }
            return joined;
          },
          "The rows of several tables, in order.")
      .def(
          "fields", [](const PairTable& table, py::handle row) { return fields_of(table.at(row)); },
          "(numel, equal, max_abs, mean_abs, rel_l2, cosine, mismatches) of a row.")
      .def(
          "merged_fields",
          [](const PairTable& table, py::iterable rows) {
            PairMoments merged;
            for (py::handle row : rows) {
              merged.merge(table.at(row));
            }
            return fields_of(merged);
          },
          "The fields of several rows' pairs as if their tensors were concatenated.");
  m.def(
      "pair_stats",
      [](py::list a, py::list b, double rtol, double atol, const std::string& path) {
        if (!(rtol >= 0) || !(atol >= 0)) {
          throw py::value_error("rtol and atol must be 0 or more, got " + std::to_string(rtol) +
                                " and " + std::to_string(atol));
        }
        return PairTable{
            pair_stats_of_tensor_lists(a.ptr(), b.ptr(), Tolerance{rtol, atol}, stats_path(path))};
      },
      py::arg("a"), py::arg("b"), py::arg("rtol") = 0.0, py::arg("atol") = 0.0,
      py::arg("path") = "kernels",
      "Compares each pair (a[i], b[i]) in one pass that reads both together, a row each of a "
      "PairTable.");
}

}  // namespace torchwalk
