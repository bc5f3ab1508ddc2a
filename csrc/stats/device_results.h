#pragma once

// How the CUDA kernel and the ATen reductions hand results back from a
// device: all in one float64 buffer, so that they come back in one copy.
// First the Moments of each piece of a tensor as kPartialFields values; then,
// when magnitudes are asked for, a dense block of counts per real tensor: one
// counter per exponent of the tensor's range (when exponents are asked for),
// then one per edge. Counts are exact in float64 up to 2^53.

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

#include "stats/tensor_stats.h"

namespace torchwalk {

// count, sum, m2, sum_squares, min, max, absmax, zeros, nans, infs
constexpr int64_t kPartialFields = 10;

inline Moments moments_from_partials(const double* fields) {
  Moments moments;
  moments.count = static_cast<int64_t>(fields[0]);
  moments.sum = fields[1];
  moments.m2 = fields[2];
  moments.sum_squares = fields[3];
  moments.min = fields[4];
  moments.max = fields[5];
  moments.absmax = fields[6];
  moments.zeros = static_cast<int64_t>(fields[7]);
  moments.nans = static_cast<int64_t>(fields[8]);
  moments.infs = static_cast<int64_t>(fields[9]);
  return moments;
}

// The exponents a dtype's values can have as the kernels read them: float64
// and the integers as float64, the narrower floating types as float32.
inline ExponentRange exponent_range_of(c10::ScalarType dtype) {
  return exponent_range(!c10::isFloatingType(dtype) || dtype == c10::kDouble);
}

// Where each tensor's block of counts lies in a device's buffer.
struct CountsLayout {
  std::vector<int64_t> starts;        // per tensor; -1 for one without (complex)
  std::vector<ExponentRange> ranges;  // per tensor; count 0 when exponents are not counted
  int64_t end = 0;                    // the buffer's size
};

// The blocks of `dtypes`' tensors, one after the other from `first` (where
// the partials end); none when `request` asks for nothing.
inline CountsLayout plan_counts(const std::vector<c10::ScalarType>& dtypes,
                                const MagnitudeRequest& request, int64_t first) {
  CountsLayout layout;
  layout.end = first;
  for (c10::ScalarType dtype : dtypes) {
    ExponentRange range = exponent_range_of(dtype);
    if (!request.exponents) {
      range.count = 0;
    }
    bool counted = request.any() && !c10::isComplexType(dtype);
    layout.starts.push_back(counted ? layout.end : -1);
    layout.ranges.push_back(range);
    if (counted) {
      layout.end += range.count + static_cast<int64_t>(request.edges.size());
    }
  }
  return layout;
}

// The magnitudes in a block of counts.
inline Magnitudes magnitudes_from_counts(const double* counts, ExponentRange range, size_t edges) {
  Magnitudes magnitudes;
  for (int32_t bin = 0; bin < range.count; ++bin) {
    if (counts[bin] != 0) {
      magnitudes.exponents.emplace_back(range.lowest + bin, static_cast<int64_t>(counts[bin]));
    }
  }
  for (size_t edge = 0; edge < edges; ++edge) {
    magnitudes.at_least.push_back(static_cast<int64_t>(counts[range.count + edge]));
  }
  return magnitudes;
}

}  // namespace torchwalk
