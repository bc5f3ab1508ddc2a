// The CPU kernel's inner loops: one read of each element, every statistic.
//
// Compiled twice, with TORCHWALK_KERNEL_NAME naming the entry point: once
// for any x86-64 (accumulate_portable) and once with AVX2, FMA and F16C
// (accumulate_avx2), picked at run time by cpu_stats.cpp. Everything here
// stays in an anonymous namespace and includes no ATen or c10 header, so
// that no AVX2 code can be shared with the portable build (see
// strided_view.h).
//
// Vectorising without -ffast-math (which would delete the NaN tests): each
// statistic has kLanes independent accumulators, and element i of a group
// of kLanes goes to lane i. The compiler then turns the lane loop into SIMD
// instructions with no reordering of any one accumulator's additions.

#include <cmath>
#include <cstring>
#include <limits>

#include "stats/cpu/strided_view.h"

#ifndef TORCHWALK_KERNEL_NAME
#error "compile with -DTORCHWALK_KERNEL_NAME=accumulate_portable (or _avx2)"
#endif

namespace torchwalk::cpu {
namespace {

constexpr int kLanes = 8;
// Counts are kept per lane in 32 bits (twice as many fit a SIMD register)
// and moved to 64 bits at least this often.
constexpr int64_t kCountFlushElements = int64_t{kLanes} << 28;

// Not std::min: this file must not instantiate templates of shared headers.
int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

// How an element of each type is read: `Value` is what min and max are kept
// in (the element's own precision, so that they are exact), `decode` reads it.
template <typename Element>
struct Reader {
  using Value = double;  // integers: float64, as x.double() gives them
  static Value decode(const Element* element, const float*) {
    return static_cast<double>(*element);
  }
};

template <>
struct Reader<float> {
  using Value = float;
  static float decode(const float* element, const float*) { return *element; }
};

struct BFloat16Bits {
  uint16_t bits;
};

template <>
struct Reader<BFloat16Bits> {
  using Value = float;
  static float decode(const BFloat16Bits* element, const float*) {
    // bfloat16 is the upper half of a float32.
    uint32_t bits = static_cast<uint32_t>(element->bits) << 16;
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }
};

template <>
struct Reader<_Float16> {
  using Value = float;
  static float decode(const _Float16* element, const float*) {
    return static_cast<float>(*element);
  }
};

struct ByteFloat {
  uint8_t bits;
};

template <>
struct Reader<ByteFloat> {
  using Value = float;
  static float decode(const ByteFloat* element, const float* table) { return table[element->bits]; }
};

template <typename Value>
struct Lanes {
  double shifted_sum[kLanes] = {};      // of (x - shift)
  double shifted_squares[kLanes] = {};  // of (x - shift)^2
  double squares[kLanes] = {};          // of x^2
  Value min[kLanes];
  Value max[kLanes];
  Value absmax[kLanes] = {};
  int32_t zeros[kLanes] = {};
  int32_t nans[kLanes] = {};
  int32_t infs[kLanes] = {};

  Lanes() {
    for (int lane = 0; lane < kLanes; ++lane) {
      min[lane] = std::numeric_limits<Value>::infinity();
      max[lane] = -std::numeric_limits<Value>::infinity();
    }
  }

  // The one place an element is looked at. The comparisons are written so
  // that a NaN never replaces an extreme (NaNs are counted instead), which
  // is what the SIMD min/max instructions do.
  inline void add(int lane, Value value, double shift) {
    double wide = static_cast<double>(value);
    double shifted = wide - shift;
    shifted_sum[lane] += shifted;
    shifted_squares[lane] += shifted * shifted;
    squares[lane] += wide * wide;
    Value magnitude = std::abs(value);
    min[lane] = value < min[lane] ? value : min[lane];
    max[lane] = value > max[lane] ? value : max[lane];
    absmax[lane] = magnitude > absmax[lane] ? magnitude : absmax[lane];
    zeros[lane] += value == 0;
    nans[lane] += value != value;
    infs[lane] += magnitude == std::numeric_limits<Value>::infinity();
  }

  void flush_counts(Moments& moments) {
    for (int lane = 0; lane < kLanes; ++lane) {
      moments.zeros += zeros[lane];
      moments.nans += nans[lane];
      moments.infs += infs[lane];
      zeros[lane] = nans[lane] = infs[lane] = 0;
    }
  }
};

// Adds `count` elements, `stride` apart (1 when Contiguous), to `lanes`.
template <typename Element, bool Contiguous>
void add_run(Lanes<typename Reader<Element>::Value>& lanes, const Element* first, int64_t count,
             int64_t stride, double shift, const float* table) {
  const int64_t step = Contiguous ? 1 : stride;
  int64_t index = 0;
  for (; index + kLanes <= count; index += kLanes) {
    for (int lane = 0; lane < kLanes; ++lane) {
      lanes.add(lane, Reader<Element>::decode(first + (index + lane) * step, table), shift);
    }
  }
  for (int lane = 0; index < count; ++index, ++lane) {
    lanes.add(lane, Reader<Element>::decode(first + index * step, table), shift);
  }
}

// Calls `visit(first_element, count, stride)` for each innermost row of
// elements [begin, end) of `view`, in order.
template <typename Element, typename Visit>
void for_each_row(const StridedView& view, int64_t begin, int64_t end, Visit visit) {
  const int64_t inner = view.dims - 1;
  int64_t index[64];  // torch allows at most 64 dimensions
  int64_t linear = begin;
  for (int64_t dim = inner; dim >= 0; --dim) {
    index[dim] = linear % view.sizes[dim];
    linear /= view.sizes[dim];
  }
  const auto* base = reinterpret_cast<const Element*>(view.data);
  for (int64_t remaining = end - begin; remaining > 0;) {
    int64_t offset = 0;
    for (int64_t dim = 0; dim <= inner; ++dim) {
      offset += index[dim] * view.strides[dim];
    }
    int64_t count = smaller(view.sizes[inner] - index[inner], remaining);
    visit(base + offset, count, view.strides[inner]);
    remaining -= count;
    index[inner] = 0;
    for (int64_t dim = inner - 1; dim >= 0 && ++index[dim] == view.sizes[dim]; --dim) {
      index[dim] = 0;
    }
  }
}

template <typename Element>
Moments accumulate_real(const StridedView& view, int64_t begin, int64_t end) {
  using Value = typename Reader<Element>::Value;
  Moments moments;
  moments.count = end - begin;
  // Sums are taken around the segment's first element: with a shift that is
  // one of the values, m2 = Σ(x-s)² - (Σ(x-s))²/n loses at most n·ε of its
  // relative precision, unlike the textbook Σx² - (Σx)²/n.
  double shift = 0;
  for_each_row<Element>(view, begin, begin + 1, [&](const Element* first, int64_t, int64_t) {
    double value = static_cast<double>(Reader<Element>::decode(first, view.byte_float_table));
    shift = std::isfinite(value) ? value : 0.0;
  });
  Lanes<Value> lanes;
  int64_t since_flush = 0;
  for_each_row<Element>(view, begin, end, [&](const Element* first, int64_t count, int64_t stride) {
    for (int64_t done = 0; done < count;) {
      int64_t piece = smaller(count - done, kCountFlushElements - since_flush);
      if (stride == 1) {
        add_run<Element, true>(lanes, first + done, piece, 1, shift, view.byte_float_table);
      } else {
        add_run<Element, false>(lanes, first + done * stride, piece, stride, shift,
                                view.byte_float_table);
      }
      done += piece;
      since_flush += piece;
      if (since_flush == kCountFlushElements) {
        lanes.flush_counts(moments);
        since_flush = 0;
      }
    }
  });
  lanes.flush_counts(moments);

  double shifted_sum = 0, shifted_squares = 0;
  Value min = lanes.min[0], max = lanes.max[0], absmax = lanes.absmax[0];
  for (int lane = 0; lane < kLanes; ++lane) {
    shifted_sum += lanes.shifted_sum[lane];
    shifted_squares += lanes.shifted_squares[lane];
    moments.sum_squares += lanes.squares[lane];
    min = lanes.min[lane] < min ? lanes.min[lane] : min;
    max = lanes.max[lane] > max ? lanes.max[lane] : max;
    absmax = lanes.absmax[lane] > absmax ? lanes.absmax[lane] : absmax;
  }
  double count = static_cast<double>(moments.count);
  moments.sum = shift * count + shifted_sum;
  double m2 = shifted_squares - shifted_sum * shifted_sum / count;
  if (std::isnan(m2) && moments.nans == 0 && moments.infs == 0) {
    m2 = std::numeric_limits<double>::infinity();  // Inf - Inf from squares that overflowed
  }
  moments.m2 = m2 < 0 ? 0.0 : m2;  // rounding can go below 0; NaN stays NaN
  moments.min = min;
  moments.max = max;
  moments.absmax = absmax;
  return moments;
}

// Complex elements: the counts (an element is zero, NaN or infinite when
// either part is, as torch's == 0, isnan, isinf) and the sum of |z|².
template <typename Part>
Moments accumulate_complex(const StridedView& view, int64_t begin, int64_t end) {
  Moments moments;
  moments.count = end - begin;
  for_each_row<Part[2]>(view, begin, end,
                        [&](const Part(*first)[2], int64_t count, int64_t stride) {
                          for (int64_t index = 0; index < count; ++index) {
                            double real = static_cast<double>(first[index * stride][0]);
                            double imaginary = static_cast<double>(first[index * stride][1]);
                            moments.sum_squares += real * real + imaginary * imaginary;
                            moments.zeros += real == 0 && imaginary == 0;
                            moments.nans += std::isnan(real) || std::isnan(imaginary);
                            moments.infs += std::isinf(real) || std::isinf(imaginary);
                          }
                        });
  return moments;
}

}  // namespace

Moments TORCHWALK_KERNEL_NAME(const StridedView& view, int64_t begin, int64_t end) {
  switch (view.type) {
    case ElementType::float64:
      return accumulate_real<double>(view, begin, end);
    case ElementType::float32:
      return accumulate_real<float>(view, begin, end);
    case ElementType::float16:
      return accumulate_real<_Float16>(view, begin, end);
    case ElementType::bfloat16:
      return accumulate_real<BFloat16Bits>(view, begin, end);
    case ElementType::byte_float:
      return accumulate_real<ByteFloat>(view, begin, end);
    case ElementType::int8:
      return accumulate_real<int8_t>(view, begin, end);
    case ElementType::uint8:
      return accumulate_real<uint8_t>(view, begin, end);
    case ElementType::int16:
      return accumulate_real<int16_t>(view, begin, end);
    case ElementType::uint16:
      return accumulate_real<uint16_t>(view, begin, end);
    case ElementType::int32:
      return accumulate_real<int32_t>(view, begin, end);
    case ElementType::uint32:
      return accumulate_real<uint32_t>(view, begin, end);
    case ElementType::int64:
      return accumulate_real<int64_t>(view, begin, end);
    case ElementType::uint64:
      return accumulate_real<uint64_t>(view, begin, end);
    case ElementType::boolean:
      return accumulate_real<uint8_t>(view, begin, end);  // torch's bool is one byte, 0 or 1
    case ElementType::complex32:
      return accumulate_complex<_Float16>(view, begin, end);
    case ElementType::complex64:
      return accumulate_complex<float>(view, begin, end);
    case ElementType::complex128:
      return accumulate_complex<double>(view, begin, end);
  }
  return Moments{};
}

}  // namespace torchwalk::cpu
