#include "stats/cpu/cpu_stats.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e4m3fnuz.h>
#include <c10/util/Float8_e5m2.h>
#include <c10/util/Float8_e5m2fnuz.h>
#include <c10/util/Float8_e8m0fnu.h>

#include <algorithm>
#include <array>
#include <vector>

#include "stats/cpu/strided_view.h"
#include "stats/segments.h"

namespace torchwalk::cpu {
namespace {

// Chunks of at least 64 Ki elements (a few hundred kB: each thread's start-up
// cost is paid back), and at most 16 Ki of them, so that the plan stays small.
constexpr int64_t kMinChunkElements = int64_t{1} << 16;
constexpr int64_t kMaxChunks = int64_t{1} << 14;

// The 256 values of a one-byte float type, decoded by c10 itself.
template <typename ByteFloatType>
const float* byte_float_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> values{};
    for (int bits = 0; bits < 256; ++bits) {
      values[static_cast<size_t>(bits)] =
          static_cast<float>(ByteFloatType(static_cast<uint8_t>(bits), ByteFloatType::from_bits()));
    }
    return values;
  }();
  return table.data();
}

// A tensor's dimensions as the kernel reads them: size-1 dimensions dropped,
// the rest ordered by decreasing stride (statistics do not depend on the
// order, memory traffic does), and neighbours that are contiguous with each
// other merged into one. Appended to `sizes` and `strides`, which hold every
// tensor's (vectors of its own for each tensor were a fifth of a call on
// 10,000 small tensors); returns how many dimensions it appended.
int64_t append_layout(const at::Tensor& tensor, std::vector<int64_t>& sizes,
                      std::vector<int64_t>& strides) {
  const c10::IntArrayRef tensor_sizes = tensor.sizes();
  const c10::IntArrayRef tensor_strides = tensor.strides();
  // The dimensions that are not 1 by decreasing stride, equal strides in
  // their order (an insertion sort: torch allows at most 64 dimensions).
  size_t order[64];
  size_t kept = 0;
  for (size_t dim = 0; dim < tensor_sizes.size(); ++dim) {
    if (tensor_sizes[dim] == 1) {
      continue;
    }
    size_t at = kept++;
    for (; at > 0 && tensor_strides[order[at - 1]] < tensor_strides[dim]; --at) {
      order[at] = order[at - 1];
    }
    order[at] = dim;
  }
  const size_t first = sizes.size();
  for (size_t index = 0; index < kept; ++index) {
    int64_t size = tensor_sizes[order[index]];
    int64_t stride = tensor_strides[order[index]];
    if (sizes.size() > first && strides.back() == stride * size) {
      sizes.back() *= size;
      strides.back() = stride;
    } else {
      sizes.push_back(size);
      strides.push_back(stride);
    }
  }
  if (sizes.size() == first) {  // a 0-dim tensor, or all sizes 1
    sizes.push_back(1);
    strides.push_back(1);
  }
  return static_cast<int64_t>(sizes.size() - first);
}

bool is_complex(ElementType type) {
  return type == ElementType::complex32 || type == ElementType::complex64 ||
         type == ElementType::complex128;
}

// One thread's counters for the kernel's magnitudes, reset for each segment,
// and what a segment counted, as Magnitudes.
class MagnitudeScratch {
 public:
  explicit MagnitudeScratch(const MagnitudeRequest& request)
      : bins_(request.exponents ? static_cast<size_t>(kFloat64Exponents.count) : 0),
        at_least_(request.edges.size()) {
    counters_.exponent_bins = bins_.empty() ? nullptr : bins_.data();
    counters_.edges = request.edges.data();
    counters_.edge_count = static_cast<int64_t>(request.edges.size());
    counters_.at_least = at_least_.data();
  }

  MagnitudeCounters* reset() {
    // Only the bins the last segment touched are non-zero.
    for (int32_t bin = counters_.lowest_touched; bin <= counters_.highest_touched; ++bin) {
      bins_[static_cast<size_t>(bin)] = 0;
    }
    counters_.lowest_touched = kFloat64Exponents.count;
    counters_.highest_touched = -1;
    std::fill(at_least_.begin(), at_least_.end(), 0);
    return &counters_;
  }

  Magnitudes counted() const {
    Magnitudes counted;
    for (int32_t bin = counters_.lowest_touched; bin <= counters_.highest_touched; ++bin) {
      if (int64_t count = bins_[static_cast<size_t>(bin)]; count != 0) {
        counted.exponents.emplace_back(bin + kFloat64Exponents.lowest, count);
      }
    }
    counted.at_least = at_least_;
    return counted;
  }

 private:
  std::vector<int64_t> bins_;
  std::vector<int64_t> at_least_;
  MagnitudeCounters counters_;
};

}  // namespace

ElementType element_type(c10::ScalarType dtype, const float** table) {
  switch (dtype) {
    case c10::kDouble:
      return ElementType::float64;
    case c10::kFloat:
      return ElementType::float32;
    case c10::kHalf:
      return ElementType::float16;
    case c10::kBFloat16:
      return ElementType::bfloat16;
    case c10::kFloat8_e4m3fn:
      *table = byte_float_table<c10::Float8_e4m3fn>();
      return ElementType::byte_float;
    case c10::kFloat8_e4m3fnuz:
      *table = byte_float_table<c10::Float8_e4m3fnuz>();
      return ElementType::byte_float;
    case c10::kFloat8_e5m2:
      *table = byte_float_table<c10::Float8_e5m2>();
      return ElementType::byte_float;
    case c10::kFloat8_e5m2fnuz:
      *table = byte_float_table<c10::Float8_e5m2fnuz>();
      return ElementType::byte_float;
    case c10::kFloat8_e8m0fnu:
      *table = byte_float_table<c10::Float8_e8m0fnu>();
      return ElementType::byte_float;
    case c10::kChar:
      return ElementType::int8;
    case c10::kByte:
      return ElementType::uint8;
    case c10::kShort:
      return ElementType::int16;
    case c10::kUInt16:
      return ElementType::uint16;
    case c10::kInt:
      return ElementType::int32;
    case c10::kUInt32:
      return ElementType::uint32;
    case c10::kLong:
      return ElementType::int64;
    case c10::kUInt64:
      return ElementType::uint64;
    case c10::kBool:
      return ElementType::boolean;
    case c10::kComplexHalf:
      return ElementType::complex32;
    case c10::kComplexFloat:
      return ElementType::complex64;
    case c10::kComplexDouble:
      return ElementType::complex128;
    default:
      TORCH_CHECK(false, "torchwalk.stats: unsupported dtype ", dtype);
  }
}

bool cpu_runs(KernelBuild build) {
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                               __builtin_cpu_supports("f16c");
  static const bool has_avx512 =
      has_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  switch (build) {
    case KernelBuild::avx512:
      return has_avx512;
    case KernelBuild::avx2:
      return has_avx2;
    case KernelBuild::portable:
      return true;
  }
  return false;
}

KernelBuild build_for(StatsPath path) {
  switch (path) {
    case StatsPath::avx512_cpu:
      return KernelBuild::avx512;
    case StatsPath::avx2_cpu:
      return KernelBuild::avx2;
    case StatsPath::portable_cpu:
      return KernelBuild::portable;
    default:
      for (KernelBuild build : {KernelBuild::avx512, KernelBuild::avx2}) {
        if (cpu_runs(build)) {
          return build;
        }
      }
      return KernelBuild::portable;
  }
}

// What a call needs for each tensor and piece, kept by the calling thread
// from call to call: freed and allocated anew, these megabytes (for 10,000
// tensors) came back from the system as fresh pages, and faulting them in
// took a third of a call on small tensors.
struct CallBuffers {
  std::vector<StridedView> views;
  std::vector<int64_t> sizes;  // of every view, one after the other
  std::vector<int64_t> strides;
  std::vector<int64_t> numels;
  std::vector<Moments> segment_moments;
  std::vector<Magnitudes> segment_magnitudes;

  void clear() {
    views.clear();
    sizes.clear();
    strides.clear();
    numels.clear();
    segment_moments.clear();
    segment_magnitudes.clear();
  }
};

void cpu_stats(const std::vector<const at::Tensor*>& tensors, const std::vector<size_t>& rows,
               KernelBuild build, const MagnitudeRequest& request,
               std::vector<TensorStats>& results) {
  thread_local CallBuffers buffers;
  buffers.clear();
  std::vector<StridedView>& views = buffers.views;
  views.resize(tensors.size());
  for (size_t index = 0; index < tensors.size(); ++index) {
    const at::Tensor& tensor = *tensors[index];
    StridedView& view = views[index];
    view.data = static_cast<const char*>(tensor.const_data_ptr());
    view.type = element_type(tensor.scalar_type(), &view.byte_float_table);
    view.element_size = static_cast<int64_t>(tensor.element_size());
    view.dims = append_layout(tensor, buffers.sizes, buffers.strides);
    buffers.numels.push_back(tensor.numel());
  }
  // Pointed to only now that `sizes` and `strides` have stopped growing.
  int64_t offset = 0;
  for (StridedView& view : views) {
    view.sizes = buffers.sizes.data() + offset;
    view.strides = buffers.strides.data() + offset;
    offset += view.dims;
  }

  SegmentPlan plan = plan_segments(buffers.numels, kMinChunkElements, kMaxChunks);
  auto accumulate = build == KernelBuild::avx512 ? accumulate_avx512
                    : build == KernelBuild::avx2 ? accumulate_avx2
                                                 : accumulate_portable;
  std::vector<Moments>& segment_moments = buffers.segment_moments;
  segment_moments.resize(plan.segments.size());
  std::vector<Magnitudes>& segment_magnitudes = buffers.segment_magnitudes;
  segment_magnitudes.resize(request.any() ? plan.segments.size() : 0);
  at::parallel_for(0, plan.chunk_count(), 1, [&](int64_t first_chunk, int64_t end_chunk) {
    MagnitudeScratch scratch(request);
    for (int64_t segment = plan.chunk_starts[static_cast<size_t>(first_chunk)];
         segment < plan.chunk_starts[static_cast<size_t>(end_chunk)]; ++segment) {
      const Segment& piece = plan.segments[static_cast<size_t>(segment)];
      const StridedView& view = views[static_cast<size_t>(piece.tensor)];
      const bool counting = request.any() && !is_complex(view.type);
      segment_moments[static_cast<size_t>(segment)] =
          accumulate(view, piece.begin, piece.end, counting ? scratch.reset() : nullptr);
      if (counting) {
        segment_magnitudes[static_cast<size_t>(segment)] = scratch.counted();
      }
    }
  });

  // In segment order, whatever thread computed which: the same sums every time.
  for (size_t segment = 0; segment < plan.segments.size(); ++segment) {
    TensorStats& result = results[rows[static_cast<size_t>(plan.segments[segment].tensor)]];
    result.moments.merge(segment_moments[segment]);
    if (!segment_magnitudes.empty() &&
        !is_complex(views[static_cast<size_t>(plan.segments[segment].tensor)].type)) {
      result.magnitudes.merge(segment_magnitudes[segment]);
    }
  }
}

}  // namespace torchwalk::cpu
