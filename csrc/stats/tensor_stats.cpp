// Which code reads which tensor, and the merging of what they return.

#include "stats/tensor_stats.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "stats/aten_stats.h"
#include "stats/cpu/cpu_stats.h"
#include "stats/device_results.h"
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

void Magnitudes::merge(const Magnitudes& other) {
  if (at_least.size() < other.at_least.size()) {
    at_least.resize(other.at_least.size(), 0);
  }
  for (size_t edge = 0; edge < other.at_least.size(); ++edge) {
    at_least[edge] += other.at_least[edge];
  }
  if (other.exponents.empty()) {
    return;
  }
  // Both lists are sorted by exponent: merged as such.
  std::vector<std::pair<int32_t, int64_t>> joined;
  joined.reserve(exponents.size() + other.exponents.size());
  auto mine = exponents.begin();
  auto theirs = other.exponents.begin();
  while (mine != exponents.end() || theirs != other.exponents.end()) {
    if (theirs == other.exponents.end() ||
        (mine != exponents.end() && mine->first < theirs->first)) {
      joined.push_back(*mine++);
    } else if (mine == exponents.end() || theirs->first < mine->first) {
      joined.push_back(*theirs++);
    } else {
      joined.emplace_back(mine->first, mine->second + theirs->second);
      ++mine;
      ++theirs;
    }
  }
  exponents = std::move(joined);
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

// What a device hands back (see device_results.h), and where.
struct DeviceResults {
  at::Tensor buffer;  // on the device until all devices have started
  std::vector<Segment> segments;
  CountsLayout counts;
};

// Merges a device's results, copied back, into the rows of its group.
void merge_device_results(const at::Tensor& on_host, const DeviceResults& device,
                          const std::vector<size_t>& rows, size_t edges,
                          std::vector<TensorStats>& results) {
  const double* values = on_host.const_data_ptr<double>();
  for (size_t piece = 0; piece < device.segments.size(); ++piece) {
    results[rows[static_cast<size_t>(device.segments[piece].tensor)]].moments.merge(
        moments_from_partials(values + piece * kPartialFields));
  }
  for (size_t tensor = 0; tensor < device.counts.starts.size(); ++tensor) {
    if (device.counts.starts[tensor] >= 0) {
      results[rows[tensor]].magnitudes = magnitudes_from_counts(
          values + device.counts.starts[tensor], device.counts.ranges[tensor], edges);
    }
  }
}

std::vector<c10::ScalarType> dtypes_of(const DeviceGroup& group) {
  std::vector<c10::ScalarType> dtypes;
  for (const at::Tensor* tensor : group.tensors) {
    dtypes.push_back(tensor->scalar_type());
  }
  return dtypes;
}

// A group's results through ATen's reductions.
DeviceResults aten_results(const DeviceGroup& group, const MagnitudeRequest& request) {
  DeviceResults device;
  std::vector<at::Tensor> blocks;
  for (size_t index = 0; index < group.tensors.size(); ++index) {
    blocks.push_back(aten_partials(*group.tensors[index]));
    device.segments.push_back(
        Segment{static_cast<int64_t>(index), 0, group.tensors[index]->numel()});
  }
  device.counts =
      plan_counts(dtypes_of(group), request, static_cast<int64_t>(blocks.size()) * kPartialFields);
  for (size_t index = 0; index < group.tensors.size(); ++index) {
    if (device.counts.starts[index] >= 0) {
      blocks.push_back(aten_counts(*group.tensors[index], request, device.counts.ranges[index]));
    }
  }
  device.buffer = at::cat(blocks);
  return device;
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

std::vector<TensorStats> tensor_stats(const std::vector<at::Tensor>& tensors, StatsPath path,
                                      const MagnitudeRequest& request) {
  if (request.edges.size() > kMaxEdges) {
    throw std::invalid_argument("torchwalk.stats: at most " + std::to_string(kMaxEdges) +
                                " edges, got " + std::to_string(request.edges.size()));
  }
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
    } else {
      result.magnitudes.at_least.assign(request.edges.size(), 0);  // an empty tensor's
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
  std::vector<DeviceResults> pending;
  std::vector<const DeviceGroup*> pending_groups;
#ifdef TORCHWALK_WITH_CUDA
  for (const DeviceGroup& group : by_kernel) {
    cuda::PendingStats launched = cuda::launch_stats(group.tensors, request);
    pending.push_back(DeviceResults{std::move(launched.buffer), std::move(launched.segments),
                                    std::move(launched.counts)});
    pending_groups.push_back(&group);
  }
#endif
  for (const DeviceGroup& group : by_aten) {
    pending.push_back(aten_results(group, request));
    pending_groups.push_back(&group);
  }

  if (!on_cpu.tensors.empty()) {
    const cpu::KernelBuild build = cpu::build_for(path);
    cpu::cpu_stats(on_cpu.tensors, on_cpu.rows, build, request, results);
  }
  for (size_t device = 0; device < pending.size(); ++device) {
    at::Tensor on_host = pending[device].buffer.to(at::kCPU).contiguous();
    merge_device_results(on_host, pending[device], pending_groups[device]->rows,
                         request.edges.size(), results);
  }
  return results;
}

void merge_into(TensorStats& total, const TensorStats& row) {
  total.numel += row.numel;
  total.kind = std::max(total.kind, row.kind);  // numel alone beats counts beats values
  total.moments.merge(row.moments);
  total.magnitudes.merge(row.magnitudes);
}

TensorStats merge_stats(const std::vector<TensorStats>& rows) {
  TensorStats total;
  for (const TensorStats& row : rows) {
    merge_into(total, row);
  }
  return total;
}

}  // namespace torchwalk
