#pragma once

// Statistics through ATen's own reductions, in float64, on the tensor's
// device: how tensors on a device without a kernel of ours are read.

#include <ATen/core/Tensor.h>

#include "stats/tensor_stats.h"

namespace torchwalk {

// kPartialFields float64 values (see device_results.h) on the tensor's
// device; the tensor has at least one element.
at::Tensor aten_partials(const at::Tensor& tensor);

// The tensor's block of magnitude counts (see device_results.h) as float64
// on its device: `range.count` exponent counters (none when 0), then one per
// edge of `request`. The tensor is real.
at::Tensor aten_counts(const at::Tensor& tensor, const MagnitudeRequest& request,
                       ExponentRange range);

}  // namespace torchwalk
