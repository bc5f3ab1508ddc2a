// Which code reads which tensor, and the merging of what they return.

#include "stats/tensor_stats.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/stack.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "stats/aten_stats.h"
#include "stats/cpu/cpu_stats.h"
#include "stats/partials.h"
#include "stats/segments.h"
#ifdef TORCHWALK_WITH_CUDA
#include "stats/cuda/cuda_stats.h"
#endif

namespace torchwalk {

void Moments::merge(const Moments& other) {
  if (other.count == 0) {
    return;
  }
  if (count == 0) {
    *this = other;
    return;
  }
  double n_this = static_cast<double>(count);
  double n_other = static_cast<double>(other.count);
  double delta = other.sum / n_other - sum / n_this;
  m2 += other.m2 + delta * delta * n_this * n_other / (n_this + n_other);
  count += other.count;
  sum += other.sum;
  sum_squares += other.sum_squares;
  min = std::fmin(min, other.min);
  max = std::fmax(max, other.max);
  absmax = std::fmax(absmax, other.absmax);
  zeros += other.zeros;
  nans += other.nans;
  infs += other.infs;
}

namespace {

// Tensors of one device read by one kind of code, and their rows.
struct DeviceGroup {
  c10::Device device = c10::kCPU;
  std::vector<const at::Tensor*> tensors;
  std::vector<size_t> rows;
};

// The group of `device` in `groups`, added if new (a call sees few devices).
DeviceGroup& group_of(std::vector<DeviceGroup>& groups, c10::Device device) {
  for (DeviceGroup& group : groups) {
    if (group.device == device) {
      return group;
    }
  }
  groups.push_back(DeviceGroup{device, {}, {}});
  return groups.back();
}

// Merges per-piece partials copied back from a device into the rows.
void merge_partials(const at::Tensor& partials_on_host, const std::vector<Segment>& segments,
                    const std::vector<size_t>& rows, std::vector<TensorStats>& results) {
  const double* fields = partials_on_host.const_data_ptr<double>();
  for (size_t piece = 0; piece < segments.size(); ++piece) {
    results[rows[static_cast<size_t>(segments[piece].tensor)]].moments.merge(
        moments_from_partials(fields + piece * kPartialFields));
  }
}

}  // namespace

void check_readable(const at::Tensor& tensor, size_t row) {
  bool strided = tensor.layout() == c10::kStrided;
  if (strided && (tensor.is_meta() || tensor.numel() == 0 || tensor.has_storage())) {
    return;  // the message below is built only when needed: a stream is costly
  }
  std::ostringstream problem;
  if (!strided) {
    problem << "torchwalk.stats: tensor " << row << " has layout " << tensor.layout()
            << "; only strided tensors have statistics";
  } else {
    problem << "torchwalk.stats: tensor " << row
            << " has no storage to read (a wrapper tensor subclass?)";
  }
  throw std::invalid_argument(problem.str());
}

bool runs_here(StatsPath path) {
  switch (path) {
    case StatsPath::avx512_cpu:
      return cpu::cpu_runs(cpu::KernelBuild::avx512);
    case StatsPath::avx2_cpu:
      return cpu::cpu_runs(cpu::KernelBuild::avx2);
    default:
      return true;
  }
}

std::vector<TensorStats> tensor_stats(const std::vector<at::Tensor>& tensors, StatsPath path) {
  std::vector<TensorStats> results(tensors.size());
  DeviceGroup on_cpu;
  std::vector<DeviceGroup> by_kernel;  // CUDA devices, when built with CUDA
  std::vector<DeviceGroup> by_aten;
  for (size_t row = 0; row < tensors.size(); ++row) {
    const at::Tensor& tensor = tensors[row];
    TensorStats& result = results[row];
    result.numel = tensor.numel();
    if (tensor.is_meta()) {
      result.kind = StatsKind::numel_only;
      continue;
    }
    if (tensor.is_complex()) {
      result.kind = StatsKind::counts_and_l2;
    }
    if (result.numel == 0) {
      continue;
    }
    DeviceGroup* group = nullptr;
    if (path != StatsPath::aten && tensor.is_cpu()) {
      group = &on_cpu;
    }
#ifdef TORCHWALK_WITH_CUDA
    if (path == StatsPath::kernels && tensor.is_cuda() && !tensor.is_complex()) {
      group = &group_of(by_kernel, tensor.device());
    }
#endif
    if (group == nullptr) {
      group = &group_of(by_aten, tensor.device());
    }
    group->tensors.push_back(&tensor);
    group->rows.push_back(row);
  }

  // Devices first, so that their work overlaps the CPU pass; each device's
  // results come back in one copy, after everything has been started.
  std::vector<std::pair<at::Tensor, std::vector<Segment>>> pending;
  std::vector<const DeviceGroup*> pending_groups;
#ifdef TORCHWALK_WITH_CUDA
  for (const DeviceGroup& group : by_kernel) {
    cuda::PendingStats launched = cuda::launch_stats(group.tensors);
    pending.emplace_back(std::move(launched.partials), std::move(launched.segments));
    pending_groups.push_back(&group);
  }
#endif
  for (const DeviceGroup& group : by_aten) {
    std::vector<at::Tensor> partials;
    std::vector<Segment> segments;
    for (size_t index = 0; index < group.tensors.size(); ++index) {
      partials.push_back(aten_partials(*group.tensors[index]));
      segments.push_back(Segment{static_cast<int64_t>(index), 0, group.tensors[index]->numel()});
    }
    pending.emplace_back(at::stack(partials), std::move(segments));
    pending_groups.push_back(&group);
  }

  if (!on_cpu.tensors.empty()) {
    std::vector<Moments> moments =
        path == StatsPath::avx512_cpu ? cpu::cpu_stats(on_cpu.tensors, cpu::KernelBuild::avx512)
        : path == StatsPath::avx2_cpu ? cpu::cpu_stats(on_cpu.tensors, cpu::KernelBuild::avx2)
        : path == StatsPath::portable_cpu
            ? cpu::cpu_stats(on_cpu.tensors, cpu::KernelBuild::portable)
            : cpu::cpu_stats(on_cpu.tensors);
    for (size_t index = 0; index < moments.size(); ++index) {
      results[on_cpu.rows[index]].moments = moments[index];
    }
  }
  for (size_t device = 0; device < pending.size(); ++device) {
    at::Tensor on_host = pending[device].first.to(at::kCPU).contiguous();
    merge_partials(on_host, pending[device].second, pending_groups[device]->rows, results);
  }
  return results;
}

TensorStats merge_stats(const std::vector<TensorStats>& rows) {
  TensorStats total;
  for (const TensorStats& row : rows) {
    total.numel += row.numel;
    total.kind = std::max(total.kind, row.kind);  // numel alone beats counts beats values
    total.moments.merge(row.moments);
  }
  return total;
}

}  // namespace torchwalk
