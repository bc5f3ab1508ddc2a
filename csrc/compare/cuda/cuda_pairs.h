#pragma once

// The CUDA comparison kernel (built only against a CUDA torch): all pairs of
// one device in one launch, results left on the device until the caller
// copies them back, once per device, after everything is launched.

#include <ATen/core/Tensor.h>

#include <vector>

#include "compare/pair_stats.h"
#include "stats/segments.h"

namespace torchwalk::cuda {

struct PendingPairs {
  at::Tensor partials;            // [segments, kPairFields] float64, on the device
  std::vector<Segment> segments;  // `tensor` indexes the pairs launched
};

// Launches the comparison of each pair (a[i], b[i]) (real or bool, all on
// one CUDA device, checked by check_comparable) on the device's current
// stream; pairs without elements get no segment.
PendingPairs launch_pairs(const std::vector<const at::Tensor*>& a,
                          const std::vector<const at::Tensor*>& b, Tolerance tolerance);

}  // namespace torchwalk::cuda
