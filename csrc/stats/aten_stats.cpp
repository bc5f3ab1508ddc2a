#include "stats/aten_stats.h"

#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/view_as_real.h>
#include <ATen/ops/zeros_like.h>

namespace torchwalk {

at::Tensor aten_partials(const at::Tensor& tensor) {
  auto as_double = [](const at::Tensor& value) { return value.to(at::kDouble); };
  // Widened first: ATen has no isinf for float8, nor most ops for complex32.
  at::Tensor values = tensor.to(tensor.is_complex() ? at::kComplexDouble : at::kDouble);
  at::Tensor count =
      at::scalar_tensor(static_cast<double>(tensor.numel()), values.options().dtype(at::kDouble));
  at::Tensor zeros = as_double(values.eq(0).sum());
  at::Tensor nans = as_double(values.isnan().sum());
  at::Tensor infs = as_double(values.isinf().sum());
  if (tensor.is_complex()) {
    at::Tensor none = at::zeros_like(count);
    return at::stack({count, none, none, at::view_as_real(values).square().sum(), none, none, none,
                      zeros, nans, infs});
  }
  return at::stack({count, values.sum(), values.var(/*unbiased=*/false).mul(count),
                    values.square().sum(), values.min(), values.max(), values.abs().max(), zeros,
                    nans, infs});
}

}  // namespace torchwalk
