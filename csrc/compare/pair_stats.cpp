// Which code compares which pair, and the merging of what they return.

#include "compare/pair_stats.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/isclose.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/stack.h>

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "compare/cpu/cpu_pairs.h"
#include "stats/segments.h"
#ifdef TORCHWALK_WITH_CUDA
#include "compare/cuda/cuda_pairs.h"
#endif

namespace torchwalk {

void PairMoments::merge(const PairMoments& other) {
  count += other.count;
  max_abs = std::fmax(max_abs, other.max_abs);
  sum_abs += other.sum_abs;
  sum_squared_differences += other.sum_squared_differences;
  sum_aa += other.sum_aa;
  sum_bb += other.sum_bb;
  sum_ab += other.sum_ab;
  mismatches += other.mismatches;
  identical = identical && other.identical;
}

namespace {

PairMoments pair_moments_from(const double* fields) {
  PairMoments moments;
  moments.count = static_cast<int64_t>(fields[0]);
  moments.max_abs = fields[1];
  moments.sum_abs = fields[2];
  moments.sum_squared_differences = fields[3];
  moments.sum_aa = fields[4];
  moments.sum_bb = fields[5];
  moments.sum_ab = fields[6];
  moments.mismatches = static_cast<int64_t>(fields[7]);
  moments.identical = fields[8] != 0;
  return moments;
}

// A pair through ATen's own operations, in float64, on its device.
at::Tensor aten_pair_partials(const at::Tensor& a, const at::Tensor& b, Tolerance tolerance) {
  const at::Tensor x = a.to(at::kDouble);
  const at::Tensor y = b.to(at::kDouble);
  const at::Tensor difference = x.sub(y);
  const at::Tensor magnitude = difference.abs();
  const auto options = x.options();
  bool identical = a.scalar_type() == b.scalar_type();
  if (identical && a.numel() > 0) {
    // The bytes, as one byte tensor each (a bool view of the comparison).
    const at::Tensor a_bytes = a.contiguous().view({-1}).view(at::kByte);
    const at::Tensor b_bytes = b.contiguous().view({-1}).view(at::kByte);
    identical = a_bytes.eq(b_bytes).all().item<bool>();
  }
  const at::Tensor close = at::isclose(x, y, tolerance.rtol, tolerance.atol, /*equal_nan=*/true);
  auto scalar = [&](double value) { return at::scalar_tensor(value, options); };
  if (a.numel() == 0) {
    return at::stack({scalar(0), scalar(0), scalar(0), scalar(0), scalar(0), scalar(0), scalar(0),
                      scalar(0), scalar(identical ? 1 : 0)});
  }
  return at::stack({scalar(static_cast<double>(a.numel())),
                    magnitude.masked_fill(magnitude.isnan(), 0).max(), magnitude.sum(),
                    difference.square().sum(), x.square().sum(), y.square().sum(), x.mul(y).sum(),
                    close.logical_not().sum().to(at::kDouble), scalar(identical ? 1 : 0)});
}

struct DevicePairs {
  c10::Device device = c10::kCPU;
  std::vector<const at::Tensor*> a;
  std::vector<const at::Tensor*> b;
  std::vector<size_t> rows;
};

DevicePairs& group_of(std::vector<DevicePairs>& groups, c10::Device device) {
  for (DevicePairs& group : groups) {
    if (group.device == device) {
      return group;
    }
  }
  groups.push_back(DevicePairs{device, {}, {}, {}});
  return groups.back();
}

}  // namespace

void check_comparable(const at::Tensor& a, const at::Tensor& b, size_t row) {
  std::ostringstream problem;
  if (a.numel() != b.numel()) {
    problem << "pair " << row << " has " << a.numel() << " and " << b.numel() << " elements";
  } else if (a.device() != b.device()) {
    problem << "pair " << row << " is on " << a.device() << " and " << b.device();
  } else if (a.is_complex() || b.is_complex()) {
    problem << "pair " << row << " is complex; only real and bool tensors are compared";
  } else if (a.layout() != c10::kStrided || b.layout() != c10::kStrided) {
    problem << "pair " << row << " has a tensor that is not strided (sparse, nested)";
  } else if (a.is_meta() || b.is_meta()) {
    problem << "pair " << row << " has a meta tensor: no values to compare";
  } else if (a.numel() > 0 && (!a.has_storage() || !b.has_storage())) {
    problem << "pair " << row << " has a tensor without storage (a wrapper tensor subclass?)";
  } else if (a.dim() != b.dim() || a.sizes() != b.sizes()) {
    problem << "pair " << row << " has shapes " << a.sizes() << " and " << b.sizes();
  } else {
    return;
  }
  throw std::invalid_argument("torchwalk.diff: " + problem.str());
}

std::vector<PairMoments> pair_stats(const std::vector<at::Tensor>& a,
                                    const std::vector<at::Tensor>& b, Tolerance tolerance,
                                    StatsPath path) {
  if (a.size() != b.size()) {
    throw std::invalid_argument("torchwalk.diff: " + std::to_string(a.size()) + " and " +
                                std::to_string(b.size()) + " tensors: pairs need as many");
  }
  std::vector<PairMoments> results(a.size());
  DevicePairs on_cpu;
  std::vector<DevicePairs> by_kernel;  // CUDA devices, when built with CUDA
  std::vector<DevicePairs> by_aten;
  for (size_t row = 0; row < a.size(); ++row) {
    check_comparable(a[row], b[row], row);
    DevicePairs* group = nullptr;
    if (path != StatsPath::aten && a[row].is_cpu()) {
      group = &on_cpu;
    }
#ifdef TORCHWALK_WITH_CUDA
    if (path == StatsPath::kernels && a[row].is_cuda()) {
      group = &group_of(by_kernel, a[row].device());
    }
#endif
    if (group == nullptr) {
      group = &group_of(by_aten, a[row].device());
    }
    group->a.push_back(&a[row]);
    group->b.push_back(&b[row]);
    group->rows.push_back(row);
  }

  // Devices first, so that their work overlaps the CPU pass; each device's
  // results come back in one copy, after everything has been started.
  std::vector<std::pair<at::Tensor, std::vector<Segment>>> pending;
  std::vector<const DevicePairs*> pending_groups;
#ifdef TORCHWALK_WITH_CUDA
  for (const DevicePairs& group : by_kernel) {
    cuda::PendingPairs launched = cuda::launch_pairs(group.a, group.b, tolerance);
    pending.emplace_back(std::move(launched.partials), std::move(launched.segments));
    pending_groups.push_back(&group);
  }
#endif
  for (const DevicePairs& group : by_aten) {
    std::vector<at::Tensor> partials;
    std::vector<Segment> segments;
    for (size_t index = 0; index < group.a.size(); ++index) {
      partials.push_back(aten_pair_partials(*group.a[index], *group.b[index], tolerance));
      segments.push_back(Segment{static_cast<int64_t>(index), 0, group.a[index]->numel()});
    }
    pending.emplace_back(at::stack(partials), std::move(segments));
    pending_groups.push_back(&group);
  }

  if (!on_cpu.a.empty()) {
    const cpu::KernelBuild build = cpu::build_for(path);
    std::vector<PairMoments> moments = cpu::cpu_pairs(on_cpu.a, on_cpu.b, tolerance, build);
    for (size_t index = 0; index < moments.size(); ++index) {
      results[on_cpu.rows[index]] = moments[index];
    }
  }
  for (size_t device = 0; device < pending.size(); ++device) {
    const at::Tensor on_host = pending[device].first.to(at::kCPU).contiguous();
    const double* fields = on_host.const_data_ptr<double>();
    const DevicePairs& group = *pending_groups[device];
    for (size_t index = 0; index < group.a.size(); ++index) {
      results[group.rows[index]].identical =
          group.a[index]->scalar_type() == group.b[index]->scalar_type();  // an empty pair's
    }
    const std::vector<Segment>& segments = pending[device].second;
    for (size_t piece = 0; piece < segments.size(); ++piece) {
      results[group.rows[static_cast<size_t>(segments[piece].tensor)]].merge(
          pair_moments_from(fields + piece * kPairFields));
    }
  }
  return results;
}

}  // namespace torchwalk
