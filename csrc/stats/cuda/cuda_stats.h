#pragma once

// The CUDA kernel (built only against a CUDA torch): all tensors of one
// device in one launch per dtype, results left on the device until the
// caller copies them back, once per device, after everything is launched.

#include <ATen/core/Tensor.h>

#include <vector>

#include "stats/device_results.h"
#include "stats/segments.h"

namespace torchwalk::cuda {

struct PendingStats {
  at::Tensor buffer;              // float64, on the device (see device_results.h)
  std::vector<Segment> segments;  // `tensor` indexes the tensors launched
  CountsLayout counts;
};

// Launches the statistics of `tensors` (real or bool, all on one CUDA device,
// each with at least one element), with the magnitudes `request` asks for,
// on the device's current stream.
PendingStats launch_stats(const std::vector<const at::Tensor*>& tensors,
                          const MagnitudeRequest& request);

}  // namespace torchwalk::cuda
