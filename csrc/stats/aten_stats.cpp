#include "stats/aten_stats.h"

#include <ATen/ops/bincount.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/frexp.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/view_as_real.h>
#include <ATen/ops/zeros_like.h>

#include <vector>

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

at::Tensor aten_counts(const at::Tensor& tensor, const MagnitudeRequest& request,
                       ExponentRange range) {
  at::Tensor values = tensor.to(at::kDouble);
  at::Tensor counted = values.isfinite().logical_and(values.ne(0));
  std::vector<at::Tensor> blocks;
  if (range.count > 0) {
    // frexp's mantissa lies in [0.5, 1): the exponent e of 2^e <= |x| is one less.
    at::Tensor exponents = std::get<1>(at::frexp(values.masked_select(counted)));
    at::Tensor bins = exponents.to(at::kLong).sub(1 + range.lowest);
    blocks.push_back(at::bincount(bins, {}, range.count).to(at::kDouble));
  }
  // Rounded to float32 first, as torch casts float64 to narrower formats.
  at::Tensor magnitudes = values.masked_select(counted).abs().to(at::kFloat);
  for (float edge : request.edges) {
    blocks.push_back(magnitudes.ge(edge).sum().to(at::kDouble).reshape({1}));
  }
  return at::cat(blocks);
}

}  // namespace torchwalk
