// The CPU comparison kernel's inner loops: one read of each pair of
// elements, every figure.
//
// Compiled three times, as the statistics kernel is (stats/cpu/accumulate.cpp
// explains how and why), with TORCHWALK_KERNEL_NAME naming the entry point
// (compare_portable, compare_avx2, compare_avx512). Each side is read kLanes
// elements at a time and widened to float64; every figure has kLanes
// independent accumulators, lane i taking element i of each group.

#include <cstring>
#include <limits>

#include "compare/cpu/pair_view.h"
#include "stats/cpu/element_groups.h"

#ifndef TORCHWALK_KERNEL_NAME
#error "compile with -DTORCHWALK_KERNEL_NAME=compare_portable (or _avx2, _avx512)"
#endif

namespace torchwalk::cpu {
namespace {

constexpr int kWideParts = kParts<double>;
using Wide = Vec<double>;
using WideMask = decltype(Wide{} == Wide{});  // 0 or -1 per lane, 64 bits each

// kLanes elements of one side, `first`, `first + step`, ... (step 1 when
// Contiguous), as float64. One switch per group, not per element: each
// side's dtype is one of many, and a kernel per pair of dtypes would be
// hundreds.
template <bool Contiguous>
inline Group<double> load_wide(const PairSide& side, const char* first, int64_t step) {
  const float* table = side.byte_float_table;
  switch (side.type) {
    case ElementType::float64:
      return load_group<double, Contiguous>(reinterpret_cast<const double*>(first), step, table);
    case ElementType::float32:
      return widen(
          load_group<float, Contiguous>(reinterpret_cast<const float*>(first), step, table));
    case ElementType::float16:
      return widen(
          load_group<_Float16, Contiguous>(reinterpret_cast<const _Float16*>(first), step, table));
    case ElementType::bfloat16:
      return widen(load_group<BFloat16Bits, Contiguous>(
          reinterpret_cast<const BFloat16Bits*>(first), step, table));
    case ElementType::byte_float:
      return widen(load_group<ByteFloat, Contiguous>(reinterpret_cast<const ByteFloat*>(first),
                                                     step, table));
    case ElementType::int8:
      return load_group<int8_t, Contiguous>(reinterpret_cast<const int8_t*>(first), step, table);
    case ElementType::uint8:
    case ElementType::boolean:  // torch's bool is one byte, 0 or 1
      return load_group<uint8_t, Contiguous>(reinterpret_cast<const uint8_t*>(first), step, table);
    case ElementType::int16:
      return load_group<int16_t, Contiguous>(reinterpret_cast<const int16_t*>(first), step, table);
    case ElementType::uint16:
      return load_group<uint16_t, Contiguous>(reinterpret_cast<const uint16_t*>(first), step,
                                              table);
    case ElementType::int32:
      return load_group<int32_t, Contiguous>(reinterpret_cast<const int32_t*>(first), step, table);
    case ElementType::uint32:
      return load_group<uint32_t, Contiguous>(reinterpret_cast<const uint32_t*>(first), step,
                                              table);
    case ElementType::int64:
      return load_group<int64_t, Contiguous>(reinterpret_cast<const int64_t*>(first), step, table);
    case ElementType::uint64:
      return load_group<uint64_t, Contiguous>(reinterpret_cast<const uint64_t*>(first), step,
                                              table);
    default:  // complex: refused before the kernel
      return Group<double>{};
  }
}

// How a run reads its sides: one dtype known when compiled (pairs of the
// same dtype, the common case, read without a switch per group), or any.
template <typename Element>
struct OfType {
  template <bool Contiguous>
  static Group<double> load(const PairSide& side, const char* first, int64_t step) {
    return widen(load_group<Element, Contiguous>(reinterpret_cast<const Element*>(first), step,
                                                 side.byte_float_table));
  }
};

struct OfAnyType {
  template <bool Contiguous>
  static Group<double> load(const PairSide& side, const char* first, int64_t step) {
    return load_wide<Contiguous>(side, first, step);
  }
};

// One element of one side as float64.
inline double decode_one(const PairSide& side, const char* element) {
  const float* table = side.byte_float_table;
  switch (side.type) {
    case ElementType::float64:
      return *reinterpret_cast<const double*>(element);
    case ElementType::float32:
      return Reader<float>::decode(reinterpret_cast<const float*>(element), table);
    case ElementType::float16:
      return Reader<_Float16>::decode(reinterpret_cast<const _Float16*>(element), table);
    case ElementType::bfloat16:
      return Reader<BFloat16Bits>::decode(reinterpret_cast<const BFloat16Bits*>(element), table);
    case ElementType::byte_float:
      return Reader<ByteFloat>::decode(reinterpret_cast<const ByteFloat*>(element), table);
    case ElementType::int8:
      return *reinterpret_cast<const int8_t*>(element);
    case ElementType::uint8:
    case ElementType::boolean:
      return *reinterpret_cast<const uint8_t*>(element);
    case ElementType::int16:
      return *reinterpret_cast<const int16_t*>(element);
    case ElementType::uint16:
      return *reinterpret_cast<const uint16_t*>(element);
    case ElementType::int32:
      return *reinterpret_cast<const int32_t*>(element);
    case ElementType::uint32:
      return *reinterpret_cast<const uint32_t*>(element);
    case ElementType::int64:
      return static_cast<double>(*reinterpret_cast<const int64_t*>(element));
    case ElementType::uint64:
      return static_cast<double>(*reinterpret_cast<const uint64_t*>(element));
    default:
      return 0;
  }
}

// |v|, clearing the sign bits: one instruction where v < 0 ? -v : v took
// three.
inline Wide magnitude_of(const Wide& v) {
  const WideMask no_sign = WideMask{} + static_cast<int64_t>(~(uint64_t{1} << 63));
  return reinterpret_cast<Wide>(reinterpret_cast<WideMask>(v) & no_sign);
}

// Accumulators per figure: one per float64 vector of a group with AVX-512's
// 32 registers; one for all of them with AVX2's and SSE2's 16, which
// seven figures of two vectors each (and the constants) would overflow,
// spilling to memory on every group (three times slower). Either way each
// lane adds its elements in a fixed order.
constexpr int kAccumulators = kVectorBytes >= 64 ? kWideParts : 1;

struct PairLanes {
  Wide max_abs[kAccumulators] = {};
  Wide sum_abs[kAccumulators] = {};
  Wide squared_differences[kAccumulators] = {};
  Wide aa[kAccumulators] = {};
  Wide bb[kAccumulators] = {};
  Wide ab[kAccumulators] = {};
  // Pairs found close, counted down (a true comparison is -1): the
  // mismatches are the rest.
  WideMask closes[kAccumulators] = {};

  // The one place pairs are looked at. isclose as torch computes it, with
  // equal_nan: equal, or both NaN, or a finite |a - b| within the tolerance.
  // A NaN |a - b| never replaces the maximum (it shows in sum_abs).
  inline void add(const Group<double>& a, const Group<double>& b, const Wide& rtol,
                  const Wide& atol) {
    const Wide largest = Wide{} + std::numeric_limits<double>::max();
    for (int part = 0; part < kWideParts; ++part) {
      const Wide x = a.part[part], y = b.part[part];
      const int into = part % kAccumulators;
      const Wide difference = x - y;
      const Wide magnitude = magnitude_of(difference);
      max_abs[into] = magnitude > max_abs[into] ? magnitude : max_abs[into];
      sum_abs[into] += magnitude;
      squared_differences[into] += difference * difference;
      aa[into] += x * x;
      bb[into] += y * y;
      ab[into] += x * y;
      const Wide allowed = atol + magnitude_of(rtol * y);
      const Wide limit = allowed < largest ? allowed : largest;  // a finite |a - b| only
      closes[into] += (x == y) | ((x != x) & (y != y)) | (magnitude <= limit);
    }
  }

  // The same for one pair, in one lane (a run's last few elements).
  inline void add_one(int lane, double x, double y, double rtol, double atol) {
    const int part = lane / kPerVector<double> % kAccumulators, at = lane % kPerVector<double>;
    const double difference = x - y;
    const double magnitude = difference < 0 ? -difference : difference;
    max_abs[part][at] = magnitude > max_abs[part][at] ? magnitude : max_abs[part][at];
    sum_abs[part][at] += magnitude;
    squared_differences[part][at] += difference * difference;
    aa[part][at] += x * x;
    bb[part][at] += y * y;
    ab[part][at] += x * y;
    const double scaled = rtol * y;
    double limit = atol + (scaled < 0 ? -scaled : scaled);
    limit = limit < std::numeric_limits<double>::max() ? limit : std::numeric_limits<double>::max();
    const bool close = x == y || (x != x && y != y) || magnitude <= limit;
    closes[part][at] -= close;
  }

  // Adds the lanes to `moments`, whose count is the pairs they read.
  void finish(PairMoments& moments) const {
    moments.mismatches += moments.count;
    for (int part = 0; part < kAccumulators; ++part) {
      for (int at = 0; at < kPerVector<double>; ++at) {
        moments.max_abs = max_abs[part][at] > moments.max_abs ? max_abs[part][at] : moments.max_abs;
        moments.sum_abs += sum_abs[part][at];
        moments.sum_squared_differences += squared_differences[part][at];
        moments.sum_aa += aa[part][at];
        moments.sum_bb += bb[part][at];
        moments.sum_ab += ab[part][at];
        moments.mismatches += closes[part][at];  // -1 per close pair
      }
    }
  }
};

// Pairs are read in blocks of this many, the bytes of a block compared (when
// the dtypes are the same) right after its values: still in cache.
constexpr int64_t kBlockElements = 2048;

// Adds `count` pairs, a's `a_stride` and b's `b_stride` elements apart (both
// 1 when Contiguous).
template <typename Sides, bool Contiguous>
void add_run(PairLanes& lanes, PairMoments& moments, const PairView& view, const char* a,
             const char* b, int64_t count, int64_t a_stride, int64_t b_stride,
             Tolerance tolerance) {
  const int64_t a_step = (Contiguous ? 1 : a_stride) * view.a.element_size;
  const int64_t b_step = (Contiguous ? 1 : b_stride) * view.b.element_size;
  const Wide rtol = Wide{} + tolerance.rtol;
  const Wide atol = Wide{} + tolerance.atol;
  // A local copy, so that the accumulators live in registers.
  PairLanes local = lanes;
  int64_t index = 0;
  for (; index + kLanes <= count; index += kLanes) {
    local.add(Sides::template load<Contiguous>(view.a, a + index * a_step, a_stride),
              Sides::template load<Contiguous>(view.b, b + index * b_step, b_stride), rtol, atol);
  }
  lanes = local;
  for (int lane = 0; index < count; ++index, ++lane) {
    lanes.add_one(lane, decode_one(view.a, a + index * a_step),
                  decode_one(view.b, b + index * b_step), tolerance.rtol, tolerance.atol);
  }
  if (view.same_type && moments.identical) {
    const int64_t size = view.a.element_size;
    if (Contiguous) {
      moments.identical = std::memcmp(a, b, static_cast<size_t>(count * size)) == 0;
    } else {
      for (index = 0; index < count && moments.identical; ++index) {
        moments.identical =
            std::memcmp(a + index * a_step, b + index * b_step, static_cast<size_t>(size)) == 0;
      }
    }
  }
}

// Calls `visit(a_first, b_first, count, a_stride, b_stride)` for each
// innermost row of pairs [begin, end) of `view`, in order.
template <typename Visit>
void for_each_pair_row(const PairView& view, int64_t begin, int64_t end, Visit visit) {
  const int64_t inner = view.dims - 1;
  int64_t index[64];  // torch allows at most 64 dimensions
  int64_t linear = begin;
  for (int64_t dim = inner; dim >= 0; --dim) {
    index[dim] = linear % view.sizes[dim];
    linear /= view.sizes[dim];
  }
  for (int64_t remaining = end - begin; remaining > 0;) {
    int64_t a_offset = 0, b_offset = 0;
    for (int64_t dim = 0; dim <= inner; ++dim) {
      a_offset += index[dim] * view.a.strides[dim];
      b_offset += index[dim] * view.b.strides[dim];
    }
    int64_t count = smaller(view.sizes[inner] - index[inner], remaining);
    visit(view.a.data + a_offset * view.a.element_size,
          view.b.data + b_offset * view.b.element_size, count, view.a.strides[inner],
          view.b.strides[inner]);
    remaining -= count;
    index[inner] = 0;
    for (int64_t dim = inner - 1; dim >= 0 && ++index[dim] == view.sizes[dim]; --dim) {
      index[dim] = 0;
    }
  }
}

// The pairs [begin, end) of `view`, read through Sides.
template <typename Sides>
PairMoments compare_pairs(const PairView& view, int64_t begin, int64_t end, Tolerance tolerance) {
  PairMoments moments;
  moments.count = end - begin;
  moments.identical = view.same_type;
  PairLanes lanes;
  for_each_pair_row(
      view, begin, end,
      [&](const char* a, const char* b, int64_t count, int64_t a_stride, int64_t b_stride) {
        const bool contiguous = a_stride == 1 && b_stride == 1;
        for (int64_t done = 0; done < count; done += kBlockElements) {
          const int64_t block = smaller(kBlockElements, count - done);
          const char* a_block = a + done * a_stride * view.a.element_size;
          const char* b_block = b + done * b_stride * view.b.element_size;
          if (contiguous) {
            add_run<Sides, true>(lanes, moments, view, a_block, b_block, block, 1, 1, tolerance);
          } else {
            add_run<Sides, false>(lanes, moments, view, a_block, b_block, block, a_stride, b_stride,
                                  tolerance);
          }
        }
      });
  lanes.finish(moments);
  return moments;
}

}  // namespace

PairMoments TORCHWALK_KERNEL_NAME(const PairView& view, int64_t begin, int64_t end,
                                  Tolerance tolerance) {
  if (!view.same_type) {
    return compare_pairs<OfAnyType>(view, begin, end, tolerance);
  }
  switch (view.a.type) {
    case ElementType::float64:
      return compare_pairs<OfType<double>>(view, begin, end, tolerance);
    case ElementType::float32:
      return compare_pairs<OfType<float>>(view, begin, end, tolerance);
    case ElementType::float16:
      return compare_pairs<OfType<_Float16>>(view, begin, end, tolerance);
    case ElementType::bfloat16:
      return compare_pairs<OfType<BFloat16Bits>>(view, begin, end, tolerance);
    default:  // the rarer dtypes: one switch per group
      return compare_pairs<OfAnyType>(view, begin, end, tolerance);
  }
}

}  // namespace torchwalk::cpu
