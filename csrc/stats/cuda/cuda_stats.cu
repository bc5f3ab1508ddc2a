// The CUDA kernel: one launch per dtype over all tensors of a device.
//
// The tensors' elements are cut into segments as on the CPU (segments.h);
// each thread block reads one segment, in place (strided views included),
// and writes its partials to a device buffer (device_results.h) that the
// caller copies back once, after every device has been started. Blocks
// reduce in shared memory in a fixed tree, so results do not vary from run
// to run. Magnitudes, when asked for, are counted in shared memory and added
// to their tensor's counters with atomics: integer counts, so the order of
// the additions does not change them.

#include <ATen/Dispatch_v2.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "stats/cuda/cuda_stats.h"
#include "stats/cuda/upload.h"

namespace torchwalk::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxDims = 8;  // more (after merging) is read by the ATen path
constexpr int64_t kMinChunkElements = int64_t{1} << 16;
constexpr int64_t kMaxChunks = int64_t{1} << 16;

// A tensor as the kernel reads it: dimensions merged as on the CPU.
struct DeviceView {
  const void* data;
  int64_t dims;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];
  int64_t counts_start;     // of its magnitude counts in the buffer
  int32_t lowest_exponent;  // of its exponent range
  int32_t exponent_bins;    // 0 when exponents are not counted
};

// The request's edges, passed by value to the kernel.
struct EdgeList {
  float values[kMaxEdges];
  int32_t count;
};

struct DeviceSegment {
  int64_t view;  // index into the launch's views
  int64_t begin;
  int64_t end;
  int64_t partial;  // row of the device's partials buffer
};

// Merges dimensions that are contiguous with each other; false if more than
// kMaxDims remain.
bool describe(const at::Tensor& tensor, DeviceView& view) {
  view.data = tensor.const_data_ptr();
  view.dims = 0;
  for (int64_t dim = 0; dim < tensor.dim(); ++dim) {
    int64_t size = tensor.size(dim);
    int64_t stride = tensor.stride(dim);
    if (size == 1) {
      continue;
    }
    if (view.dims > 0 && view.strides[view.dims - 1] == stride * size) {
      view.sizes[view.dims - 1] *= size;
      view.strides[view.dims - 1] = stride;
      continue;
    }
    if (view.dims == kMaxDims) {
      return false;
    }
    view.sizes[view.dims] = size;
    view.strides[view.dims] = stride;
    ++view.dims;
  }
  if (view.dims == 0) {
    view.sizes[0] = 1;
    view.strides[0] = 1;
    view.dims = 1;
  }
  return true;
}

__device__ __forceinline__ int64_t element_offset(const DeviceView& view, int64_t linear) {
  if (view.dims == 1) {
    return linear * view.strides[0];
  }
  int64_t offset = 0;
  for (int64_t dim = view.dims - 1; dim >= 0; --dim) {
    offset += (linear % view.sizes[dim]) * view.strides[dim];
    linear /= view.sizes[dim];
  }
  return offset;
}

// An element as float64: built-in types directly (int64 keeps its value as
// x.double() does), torch's half, bfloat16 and float8 types through float.
template <typename Element>
__device__ __forceinline__ double widen(Element element) {
  if constexpr (std::is_arithmetic_v<Element>) {
    return static_cast<double>(element);
  } else {
    return static_cast<double>(static_cast<float>(element));
  }
}

// Counts a value's magnitude in the block's shared counters (nothing for
// zero, NaN and Inf), as the CPU kernel does.
__device__ __forceinline__ void count_magnitude(double value, const DeviceView& view,
                                                const EdgeList& edges, unsigned int* bins,
                                                unsigned int* reached) {
  const double magnitude = fabs(value);
  if (!(magnitude > 0 && magnitude < INFINITY)) {
    return;
  }
  if (view.exponent_bins > 0) {
    atomicAdd(&bins[ilogb(magnitude) - view.lowest_exponent], 1u);
  }
  // Rounded to float32 first, as torch casts float64 to narrower formats.
  const float rounded = static_cast<float>(magnitude);
  for (int32_t edge = 0; edge < edges.count; ++edge) {
    if (rounded >= edges.values[edge]) {
      atomicAdd(&reached[edge], 1u);
    }
  }
}

// Same accumulators as one CPU lane (csrc/stats/cpu/accumulate.cpp).
struct Accumulators {
  double shifted_sum;
  double shifted_squares;
  double squares;
  double min;
  double max;
  double absmax;
  unsigned long long zeros;
  unsigned long long nans;
  unsigned long long infs;
};

template <typename Element, bool Counting>
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const DeviceView* views, const DeviceSegment* segments, double* results,
                 EdgeList edges) {
  const DeviceSegment segment = segments[blockIdx.x];
  const DeviceView& view = views[segment.view];
  const auto* data = static_cast<const Element*>(view.data);

  __shared__ unsigned int bins[Counting ? kFloat64Exponents.count : 1];
  __shared__ unsigned int reached[Counting ? kMaxEdges : 1];
  if constexpr (Counting) {
    for (int32_t bin = threadIdx.x; bin < view.exponent_bins; bin += kThreads) {
      bins[bin] = 0;
    }
    for (int32_t edge = threadIdx.x; edge < edges.count; edge += kThreads) {
      reached[edge] = 0;
    }
    __syncthreads();
  }

  const double first = widen(data[element_offset(view, segment.begin)]);
  const double shift = isfinite(first) ? first : 0.0;

  Accumulators mine{0, 0, 0, INFINITY, -INFINITY, 0, 0, 0, 0};
  for (int64_t index = segment.begin + threadIdx.x; index < segment.end; index += kThreads) {
    const double value = widen(data[element_offset(view, index)]);
    double shifted = value - shift;
    mine.shifted_sum += shifted;
    mine.shifted_squares += shifted * shifted;
    mine.squares += value * value;
    double magnitude = fabs(value);
    mine.min = value < mine.min ? value : mine.min;  // a NaN never replaces an extreme
    mine.max = value > mine.max ? value : mine.max;
    mine.absmax = magnitude > mine.absmax ? magnitude : mine.absmax;
    mine.zeros += value == 0;
    mine.nans += value != value;
    mine.infs += magnitude == INFINITY;
    if constexpr (Counting) {
      count_magnitude(value, view, edges, bins, reached);
    }
  }

  __shared__ Accumulators block[kThreads];
  block[threadIdx.x] = mine;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      Accumulators& into = block[threadIdx.x];
      const Accumulators& other = block[threadIdx.x + half];
      into.shifted_sum += other.shifted_sum;
      into.shifted_squares += other.shifted_squares;
      into.squares += other.squares;
      into.min = other.min < into.min ? other.min : into.min;
      into.max = other.max > into.max ? other.max : into.max;
      into.absmax = other.absmax > into.absmax ? other.absmax : into.absmax;
      into.zeros += other.zeros;
      into.nans += other.nans;
      into.infs += other.infs;
    }
    __syncthreads();
  }
  if constexpr (Counting) {  // every count is in (the reduction synchronised the block)
    double* counts = results + view.counts_start;
    for (int32_t bin = threadIdx.x; bin < view.exponent_bins; bin += kThreads) {
      if (bins[bin] != 0) {
        atomicAdd(&counts[bin], static_cast<double>(bins[bin]));
      }
    }
    for (int32_t edge = threadIdx.x; edge < edges.count; edge += kThreads) {
      if (reached[edge] != 0) {
        atomicAdd(&counts[view.exponent_bins + edge], static_cast<double>(reached[edge]));
      }
    }
  }
  if (threadIdx.x == 0) {
    const Accumulators& total = block[0];
    double count = static_cast<double>(segment.end - segment.begin);
    double m2 = total.shifted_squares - total.shifted_sum * total.shifted_sum / count;
    if (isnan(m2) && total.nans == 0 && total.infs == 0) {
      m2 = INFINITY;  // Inf - Inf from squares that overflowed
    }
    double* out = results + segment.partial * kPartialFields;
    out[0] = count;
    out[1] = shift * count + total.shifted_sum;
    out[2] = m2 < 0 ? 0.0 : m2;
    out[3] = total.squares;
    out[4] = total.min;
    out[5] = total.max;
    out[6] = total.absmax;
    out[7] = static_cast<double>(total.zeros);
    out[8] = static_cast<double>(total.nans);
    out[9] = static_cast<double>(total.infs);
  }
}

}  // namespace

PendingStats launch_stats(const std::vector<const at::Tensor*>& tensors,
                          const MagnitudeRequest& request) {
  TORCH_CHECK(!tensors.empty(), "torchwalk.stats: no tensors to launch");
  c10::Device device = tensors.front()->device();
  c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();

  std::vector<int64_t> numels;
  for (const at::Tensor* tensor : tensors) {
    numels.push_back(tensor->numel());
  }
  PendingStats pending;
  SegmentPlan plan = plan_segments(numels, kMinChunkElements, kMaxChunks);
  pending.segments = plan.segments;

  // One launch per dtype: its views, and its segments in plan order.
  struct Launch {
    std::vector<DeviceView> views;
    std::vector<int64_t> view_of_tensor;
    std::vector<DeviceSegment> segments;
  };
  std::map<c10::ScalarType, Launch> launches;
  std::vector<c10::ScalarType> dtypes;
  for (const at::Tensor* tensor : tensors) {
    dtypes.push_back(tensor->scalar_type());
  }
  const int64_t partials_end = static_cast<int64_t>(plan.segments.size()) * kPartialFields;
  pending.counts = plan_counts(dtypes, request, partials_end);
  std::vector<DeviceView> views(tensors.size());
  for (size_t index = 0; index < tensors.size(); ++index) {
    TORCH_CHECK(describe(*tensors[index], views[index]),
                "torchwalk.stats: a CUDA view with more "
                "than ",
                kMaxDims, " non-contiguous dimensions is not supported");
    views[index].counts_start = pending.counts.starts[index];
    views[index].lowest_exponent = pending.counts.ranges[index].lowest;
    views[index].exponent_bins = pending.counts.ranges[index].count;
  }
  EdgeList edges{};
  edges.count = static_cast<int32_t>(request.edges.size());
  std::copy(request.edges.begin(), request.edges.end(), edges.values);
  std::vector<int64_t> view_in_launch(tensors.size(), -1);
  for (size_t piece = 0; piece < plan.segments.size(); ++piece) {
    const Segment& segment = plan.segments[piece];
    const at::Tensor& tensor = *tensors[static_cast<size_t>(segment.tensor)];
    Launch& launch = launches[tensor.scalar_type()];
    int64_t& view = view_in_launch[static_cast<size_t>(segment.tensor)];
    if (view < 0) {
      view = static_cast<int64_t>(launch.views.size());
      launch.views.push_back(views[static_cast<size_t>(segment.tensor)]);
    }
    launch.segments.push_back(
        DeviceSegment{view, segment.begin, segment.end, static_cast<int64_t>(piece)});
  }

  pending.buffer = at::empty({pending.counts.end}, at::TensorOptions(at::kDouble).device(device));
  double* results = pending.buffer.mutable_data_ptr<double>();
  // The counters are added into, so they start at zero (the partials are
  // written): a memset on the stream, not a kernel.
  if (pending.counts.end > partials_end) {
    C10_CUDA_CHECK(cudaMemsetAsync(
        results + partials_end, 0,
        static_cast<size_t>(pending.counts.end - partials_end) * sizeof(double), stream));
  }
  for (auto& [dtype, launch] : launches) {
    at::Tensor device_views = upload(launch.views, device);
    at::Tensor device_segments = upload(launch.segments, device);
    auto blocks = static_cast<unsigned int>(launch.segments.size());
    const auto* view_records = reinterpret_cast<const DeviceView*>(device_views.const_data_ptr());
    const auto* segment_records =
        reinterpret_cast<const DeviceSegment*>(device_segments.const_data_ptr());
    AT_DISPATCH_V2(dtype, "torchwalk_stats", AT_WRAP([&] {
                     if (request.any()) {
                       stats_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(
                           view_records, segment_records, results, edges);
                     } else {
                       stats_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(
                           view_records, segment_records, results, edges);
                     }
                   }),
                   AT_EXPAND(AT_ALL_TYPES), at::kHalf, at::kBFloat16, at::kBool,
                   AT_EXPAND(AT_FLOAT8_TYPES), AT_EXPAND(AT_BAREBONES_UNSIGNED_TYPES));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return pending;
}

}  // namespace torchwalk::cuda
