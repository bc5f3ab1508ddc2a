#pragma once

// The Moments of a piece of a tensor as ten float64 values: how the CUDA
// kernel and the ATen reductions hand results back from a device, so that
// all of a device's results come back in one copy.

#include <cstdint>

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

}  // namespace torchwalk
