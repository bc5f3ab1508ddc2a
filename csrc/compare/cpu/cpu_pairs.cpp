#include "compare/cpu/cpu_pairs.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include "compare/cpu/pair_view.h"
#include "stats/segments.h"

namespace torchwalk::cpu {
namespace {

// As for the statistics (cpu_stats.cpp): chunks of at least 64 Ki pairs,
// at most 16 Ki chunks.
constexpr int64_t kMinChunkElements = int64_t{1} << 16;
constexpr int64_t kMaxChunks = int64_t{1} << 14;

// The pair's dimensions in logical order, size-1 ones dropped, neighbours
// merged where both sides are contiguous across them; appended to `sizes`
// and to each side's strides. Returns how many it appended.
int64_t append_pair_layout(const at::Tensor& a, const at::Tensor& b, std::vector<int64_t>& sizes,
                           std::vector<int64_t>& a_strides, std::vector<int64_t>& b_strides) {
  const size_t first = sizes.size();
  for (int64_t dim = 0; dim < a.dim(); ++dim) {
    const int64_t size = a.size(dim);
    if (size == 1) {
      continue;
    }
    const int64_t a_stride = a.stride(dim);
    const int64_t b_stride = b.stride(dim);
    if (sizes.size() > first && a_strides.back() == a_stride * size &&
        b_strides.back() == b_stride * size) {
      sizes.back() *= size;
      a_strides.back() = a_stride;
      b_strides.back() = b_stride;
    } else {
      sizes.push_back(size);
      a_strides.push_back(a_stride);
      b_strides.push_back(b_stride);
    }
  }
  if (sizes.size() == first) {  // a 0-dim pair, or all sizes 1
    sizes.push_back(1);
    a_strides.push_back(1);
    b_strides.push_back(1);
  }
  return static_cast<int64_t>(sizes.size() - first);
}

PairSide side_of(const at::Tensor& tensor) {
  PairSide side;
  side.data = static_cast<const char*>(tensor.const_data_ptr());
  side.type = element_type(tensor.scalar_type(), &side.byte_float_table);
  side.element_size = static_cast<int64_t>(tensor.element_size());
  return side;
}

}  // namespace

std::vector<PairMoments> cpu_pairs(const std::vector<const at::Tensor*>& a,
                                   const std::vector<const at::Tensor*>& b, Tolerance tolerance,
                                   KernelBuild build) {
  std::vector<PairView> views(a.size());
  std::vector<int64_t> sizes;  // of every pair, one after the other
  std::vector<int64_t> a_strides;
  std::vector<int64_t> b_strides;
  std::vector<int64_t> numels;
  std::vector<PairMoments> moments(a.size());
  for (size_t index = 0; index < a.size(); ++index) {
    PairView& view = views[index];
    view.a = side_of(*a[index]);
    view.b = side_of(*b[index]);
    view.same_type = a[index]->scalar_type() == b[index]->scalar_type();
    view.dims = append_pair_layout(*a[index], *b[index], sizes, a_strides, b_strides);
    numels.push_back(a[index]->numel());
    moments[index].identical = view.same_type;  // an empty pair's
  }
  // Pointed to only now that the layouts have stopped growing.
  int64_t offset = 0;
  for (PairView& view : views) {
    view.sizes = sizes.data() + offset;
    view.a.strides = a_strides.data() + offset;
    view.b.strides = b_strides.data() + offset;
    offset += view.dims;
  }

  SegmentPlan plan = plan_segments(numels, kMinChunkElements, kMaxChunks);
  auto compare = build == KernelBuild::avx512 ? compare_avx512
                 : build == KernelBuild::avx2 ? compare_avx2
                                              : compare_portable;
  std::vector<PairMoments> segment_moments(plan.segments.size());
  at::parallel_for(0, plan.chunk_count(), 1, [&](int64_t first_chunk, int64_t end_chunk) {
    for (int64_t segment = plan.chunk_starts[static_cast<size_t>(first_chunk)];
         segment < plan.chunk_starts[static_cast<size_t>(end_chunk)]; ++segment) {
      const Segment& piece = plan.segments[static_cast<size_t>(segment)];
      segment_moments[static_cast<size_t>(segment)] =
          compare(views[static_cast<size_t>(piece.tensor)], piece.begin, piece.end, tolerance);
    }
  });
  // In segment order, whatever thread computed which: the same sums every time.
  for (size_t segment = 0; segment < plan.segments.size(); ++segment) {
    moments[static_cast<size_t>(plan.segments[segment].tensor)].merge(segment_moments[segment]);
  }
  return moments;
}

}  // namespace torchwalk::cpu
