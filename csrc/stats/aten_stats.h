#pragma once

// Statistics through ATen's own reductions, in float64, on the tensor's
// device: how tensors on a device without a kernel of ours are read.

#include <ATen/core/Tensor.h>

namespace torchwalk {

// kPartialFields float64 values (see partials.h) on the tensor's device; the
// tensor has at least one element.
at::Tensor aten_partials(const at::Tensor& tensor);

}  // namespace torchwalk
