#pragma once

// Comparing pairs of tensors: every figure of a pair in one pass that reads
// both tensors together. A plain header: callers need no ATen or CUDA
// headers.
//
// As for the statistics (stats/tensor_stats.h), the CPU kernel (cpu/) and
// the CUDA kernel (cuda/, built only against a CUDA torch) produce
// PairMoments for fixed pieces of the pairs (stats/segments.h), merged in a
// fixed order: the result does not depend on the number of threads.

#include <cstdint>
#include <vector>

#include "stats/tensor_stats.h"

namespace at {
class Tensor;
}

namespace torchwalk {

// What a run of element pairs (a, b) sums up to, both sides widened to
// float64. Two runs merge exactly as if read in one run.
struct PairMoments {
  int64_t count = 0;
  double max_abs = 0;                  // of |a - b|, NaN-free: a NaN difference makes sum_abs NaN
  double sum_abs = 0;                  // Σ|a - b|
  double sum_squared_differences = 0;  // Σ(a - b)²
  double sum_aa = 0;
  double sum_bb = 0;
  double sum_ab = 0;
  // Elements where torch.isclose(a, b, rtol, atol, equal_nan=True) is False.
  int64_t mismatches = 0;
  bool identical = true;  // the same dtype and the same bytes

  void merge(const PairMoments& other);
};

// How devices hand back the PairMoments of a piece: kPairFields float64
// values, count, max_abs, sum_abs, sum_squared_differences, sum_aa, sum_bb,
// sum_ab, mismatches, identical (1 or 0); all of a device's in one copy.
constexpr int64_t kPairFields = 9;

// torch.isclose's tolerances: |a - b| <= atol + |rtol * b|.
struct Tolerance {
  double rtol = 0;
  double atol = 0;
};

// Raises std::invalid_argument for a pair that pair_stats cannot read:
// different numbers of elements or devices, complex or unreadable tensors.
void check_comparable(const at::Tensor& a, const at::Tensor& b, std::size_t row);

// The PairMoments of each pair (a[i], b[i]), in order, each checked by
// check_comparable first; `path` as for tensor_stats (the kernels, one CPU
// build, or ATen reductions). Call without the GIL.
std::vector<PairMoments> pair_stats(const std::vector<at::Tensor>& a,
                                    const std::vector<at::Tensor>& b, Tolerance tolerance,
                                    StatsPath path);

}  // namespace torchwalk
