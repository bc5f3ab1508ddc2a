// The CPU kernel's inner loops: one read of each element, every statistic.
//
// Compiled three times, with TORCHWALK_KERNEL_NAME naming the entry point:
// for any x86-64 (accumulate_portable), with AVX2, FMA and F16C
// (accumulate_avx2), and with AVX-512 as well (accumulate_avx512: vectors
// twice as wide), picked at run time by cpu_stats.cpp. Everything here stays
// in an anonymous namespace and includes no ATen or c10 header, so that no
// AVX2 or AVX-512 code can be shared with another build (see strided_view.h).
//
// Vectorising without -ffast-math (which would delete the NaN tests): each
// statistic has kLanes independent accumulators, and element i of a group
// of kLanes goes to lane i. The accumulators are GCC vector types (one
// register per 16 floats with AVX-512, per 8 with AVX2, per 4 with the
// portable build's SSE2),
// so every statistic of a group is one SIMD instruction whatever the
// auto-vectoriser decides, with no reordering of any one lane's additions.

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "stats/cpu/element_groups.h"
#include "stats/cpu/strided_view.h"

#ifndef TORCHWALK_KERNEL_NAME
#error "compile with -DTORCHWALK_KERNEL_NAME=accumulate_portable (or _avx2, _avx512)"
#endif

namespace torchwalk::cpu {
namespace {

// Counts are kept per lane in 32 bits (twice as many fit a SIMD register)
// and moved to 64 bits at least this often.
constexpr int64_t kCountFlushElements = int64_t{kLanes} << 28;

template <typename Value>
struct Lanes {
  using Values = Vec<Value>;
  // What comparing Values gives (0 or -1 per lane): 32-bit lanes for float,
  // 64-bit for double.
  using Counts = decltype(Values{} == Values{});
  static constexpr int kValueParts = kParts<Value>;
  static constexpr int kWideParts = kParts<double>;
  static constexpr Value kInfinity = std::numeric_limits<Value>::infinity();
  // Σx² is needed in its own accumulator only when the values are float64:
  // for narrower ones it is Σ(x-s)² + s(2Σ(x-s) + ns), where n·s² cannot
  // overflow (s is one of the values) and every term is at most n times Σx²
  // (a relative error of n·2⁻⁵³ at worst, for runs of up to millions).
  static constexpr bool kSquares = std::is_same_v<Value, double>;

  Vec<double> shifted_sum[kWideParts] = {};      // of (x - shift)
  Vec<double> shifted_squares[kWideParts] = {};  // of (x - shift)^2
  Vec<double> squares[kWideParts] = {};          // of x^2, when kSquares
  Values min[kValueParts];
  Values max[kValueParts];
  Counts zeros[kValueParts] = {};
  // NaNs and infinities are rare, and show in the sums (which they make NaN
  // or infinite): they are counted by a second look at the runs whose sums
  // say they may hold any (see add_run), not in the loop over every element.
  int64_t nans = 0;
  int64_t infs = 0;

  Lanes() {
    for (int part = 0; part < kValueParts; ++part) {
      min[part] = Values{} + kInfinity;
      max[part] = Values{} - kInfinity;
    }
  }

  // The one place a group of elements is looked at. The comparisons are
  // written so that a NaN never replaces an extreme, which is what the SIMD
  // min/max instructions do. (|x|'s maximum is one of the extremes: see
  // finish.)
  inline void add(const Group<Value>& group, const Vec<double>& shift) {
    Group<double> wide = widen(group);
    for (int part = 0; part < kWideParts; ++part) {
      Vec<double> shifted = wide.part[part] - shift;
      shifted_sum[part] += shifted;
      shifted_squares[part] += shifted * shifted;
      if constexpr (kSquares) {
        squares[part] += wide.part[part] * wide.part[part];
      }
    }
    for (int part = 0; part < kValueParts; ++part) {
      Values value = group.part[part];
      min[part] = value < min[part] ? value : min[part];
      max[part] = value > max[part] ? value : max[part];
      zeros[part] -= value == 0;  // a true comparison is -1
    }
  }

  // The same for one element in one lane (a run's last few elements).
  inline void add_one(int lane, Value value, double shift) {
    const int wide_part = lane / kPerVector<double>, wide_lane = lane % kPerVector<double>;
    double wide = static_cast<double>(value);
    double shifted = wide - shift;
    shifted_sum[wide_part][wide_lane] += shifted;
    shifted_squares[wide_part][wide_lane] += shifted * shifted;
    if constexpr (kSquares) {
      squares[wide_part][wide_lane] += wide * wide;
    }
    const int part = lane / kPerVector<Value>, at = lane % kPerVector<Value>;
    min[part][at] = value < min[part][at] ? value : min[part][at];
    max[part][at] = value > max[part][at] ? value : max[part][at];
    zeros[part][at] += value == 0;
  }

  // Counts the NaNs and infinities among `value`s, one at a time.
  void count_special(Value value) {
    nans += value != value;
    infs += value == kInfinity || value == -kInfinity;
  }

  // False once a NaN or an infinity has reached the sums (or they
  // overflowed, which only float64 elements can do).
  bool sums_finite() const {
    Vec<double> probe{};
    for (int part = 0; part < kWideParts; ++part) {
      // x - x is 0 for a finite x, NaN otherwise; NaN stays NaN in the sum.
      probe += shifted_sum[part] - shifted_sum[part];
      probe += shifted_squares[part] - shifted_squares[part];
      if constexpr (kSquares) {
        probe += squares[part] - squares[part];
      }
    }
    for (int at = 0; at < kPerVector<double>; ++at) {
      if (probe[at] != 0) {
        return false;
      }
    }
    return true;
  }

  void flush_counts(Moments& moments) {
    for (int part = 0; part < kValueParts; ++part) {
      for (int at = 0; at < kPerVector<Value>; ++at) {
        moments.zeros += zeros[part][at];
      }
      zeros[part] = Counts{};
    }
    moments.nans += nans;
    moments.infs += infs;
    nans = infs = 0;
  }

  // Everything but the counts, summed over the lanes into `moments`.
  void finish(Moments& moments, double shift) const {
    double shifted_total = 0, shifted_squares_total = 0, squares_total = 0;
    for (int part = 0; part < kWideParts; ++part) {
      for (int at = 0; at < kPerVector<double>; ++at) {
        shifted_total += shifted_sum[part][at];
        shifted_squares_total += shifted_squares[part][at];
        squares_total += squares[part][at];
      }
    }
    double count = static_cast<double>(moments.count);
    if constexpr (!kSquares) {
      squares_total = shifted_squares_total + shift * (2 * shifted_total + count * shift);
      if (!std::isfinite(squares_total) && moments.nans == 0) {
        squares_total =
            kInfinity;  // Inf - Inf from an infinite element (called after flush_counts)
      }
    }
    Value lowest = min[0][0], highest = max[0][0];
    for (int part = 0; part < kValueParts; ++part) {
      for (int at = 0; at < kPerVector<Value>; ++at) {
        lowest = min[part][at] < lowest ? min[part][at] : lowest;
        highest = max[part][at] > highest ? max[part][at] : highest;
      }
    }
    // The largest |x| of the values that are not NaN is |lowest| or
    // |highest| (fabs makes -0.0 0.0); 0 when there are none, as before any.
    double largest = 0;
    if (lowest <= highest) {
      double low = std::fabs(static_cast<double>(lowest));
      double high = std::fabs(static_cast<double>(highest));
      largest = low > high ? low : high;
    }
    moments.sum = shift * count + shifted_total;
    moments.sum_squares = squares_total;
    double m2 = shifted_squares_total - shifted_total * shifted_total / count;
    if (std::isnan(m2) && moments.nans == 0 && moments.infs == 0) {
      m2 = std::numeric_limits<double>::infinity();  // Inf - Inf from squares that overflowed
    }
    moments.m2 = m2 < 0 ? 0.0 : m2;  // rounding can go below 0; NaN stays NaN
    moments.min = lowest;
    moments.max = highest;
    moments.absmax = largest;
  }
};

// The binary exponent e of a finite non-zero value (2^e <= |value| < 2^(e+1)),
// read from its bits, subnormals included; false for zero, NaN and Inf.
inline bool binary_exponent(float value, int32_t* exponent) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const uint32_t biased = (bits >> 23) & 0xFFu;
  const uint32_t fraction = bits & 0x7FFFFFu;
  if (biased == 0xFFu || (biased == 0 && fraction == 0)) {
    return false;
  }
  // A subnormal is fraction * 2^-149: its exponent is that of its top bit.
  *exponent = biased != 0 ? static_cast<int32_t>(biased) - 127
                          : (31 - __builtin_clz(fraction)) + kFloat32Exponents.lowest;
  return true;
}

inline bool binary_exponent(double value, int32_t* exponent) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const uint64_t biased = (bits >> 52) & 0x7FFu;
  const uint64_t fraction = bits & ((uint64_t{1} << 52) - 1);
  if (biased == 0x7FFu || (biased == 0 && fraction == 0)) {
    return false;
  }
  *exponent = biased != 0 ? static_cast<int32_t>(biased) - 1023
                          : (63 - __builtin_clzll(fraction)) + kFloat64Exponents.lowest;
  return true;
}

// Counts one value's magnitude (nothing for zero, NaN and Inf). One value at
// a time: a histogram is a scatter, which SIMD does not speed up.
template <typename Value>
inline void count_magnitude(Value value, MagnitudeCounters& counters) {
  int32_t exponent;
  if (!binary_exponent(value, &exponent)) {
    return;
  }
  if (counters.exponent_bins != nullptr) {
    const int32_t bin = exponent - kFloat64Exponents.lowest;
    ++counters.exponent_bins[bin];
    counters.lowest_touched = bin < counters.lowest_touched ? bin : counters.lowest_touched;
    counters.highest_touched = bin > counters.highest_touched ? bin : counters.highest_touched;
  }
  // Rounded to float32 first, as torch casts float64 to narrower formats.
  const float magnitude = std::fabs(static_cast<float>(value));
  for (int64_t edge = 0; edge < counters.edge_count; ++edge) {
    counters.at_least[edge] += magnitude >= counters.edges[edge];
  }
}

template <typename Value>
inline void count_group(const Group<Value>& group, MagnitudeCounters& counters) {
  Value values[kLanes];
  std::memcpy(values, &group, sizeof values);
  for (Value value : values) {
    count_magnitude(value, counters);
  }
}

// How far ahead of the element being read a contiguous run asks for memory:
// without it the loop waits on memory; 4 KiB ahead is far enough to hide
// that wait, and larger distances gained nothing.
constexpr int64_t kPrefetchBytes = 4096;

// Adds `count` elements, `stride` apart (1 when Contiguous), to `lanes`, and
// when Counting their magnitudes to `magnitudes`.
template <typename Element, bool Contiguous, bool Counting>
void add_run(Lanes<typename Reader<Element>::Value>& lanes, const Element* first, int64_t count,
             int64_t stride, double shift, const float* table, MagnitudeCounters* magnitudes) {
  const int64_t step = Contiguous ? 1 : stride;
  // A local copy, so that the accumulators live in registers: stores into
  // `lanes` could alias the elements read, and would be kept in memory.
  Lanes<typename Reader<Element>::Value> local = lanes;
  const Vec<double> shifts = Vec<double>{} + shift;
  const bool finite_before = local.sums_finite();
  int64_t index = 0;
  for (; index + kLanes <= count; index += kLanes) {
    if constexpr (Contiguous) {
      // Ahead of the hardware prefetcher, which alone left this loop waiting
      // on memory at a third of what one core can read.
      __builtin_prefetch(reinterpret_cast<const char*>(first + index) + kPrefetchBytes);
    }
    const auto group = load_group<Element, Contiguous>(first + index * step, step, table);
    local.add(group, shifts);
    if constexpr (Counting) {
      count_group(group, *magnitudes);
    }
  }
  lanes = local;
  // Not in `local`: indexing a lane would keep all of it in memory.
  for (int lane = 0; index < count; ++index, ++lane) {
    const auto value = Reader<Element>::decode(first + index * step, table);
    lanes.add_one(lane, value, shift);
    if constexpr (Counting) {
      count_magnitude(value, *magnitudes);
    }
  }
  // The sums turned NaN or infinite here (or already were): count this run's
  // NaNs and infinities.
  if (!finite_before || !lanes.sums_finite()) {
    for (index = 0; index < count; ++index) {
      lanes.count_special(Reader<Element>::decode(first + index * step, table));
    }
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

template <typename Element, bool Counting>
Moments accumulate_real(const StridedView& view, int64_t begin, int64_t end,
                        MagnitudeCounters* magnitudes) {
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
        add_run<Element, true, Counting>(lanes, first + done, piece, 1, shift,
                                         view.byte_float_table, magnitudes);
      } else {
        add_run<Element, false, Counting>(lanes, first + done * stride, piece, stride, shift,
                                          view.byte_float_table, magnitudes);
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
  lanes.finish(moments, shift);
  return moments;
}

// The counting loops only where counts are asked for: the plain ones keep
// the registers to themselves.
template <typename Element>
Moments read_real(const StridedView& view, int64_t begin, int64_t end,
                  MagnitudeCounters* magnitudes) {
  return magnitudes != nullptr ? accumulate_real<Element, true>(view, begin, end, magnitudes)
                               : accumulate_real<Element, false>(view, begin, end, nullptr);
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

Moments TORCHWALK_KERNEL_NAME(const StridedView& view, int64_t begin, int64_t end,
                              MagnitudeCounters* magnitudes) {
  switch (view.type) {
    case ElementType::float64:
      return read_real<double>(view, begin, end, magnitudes);
    case ElementType::float32:
      return read_real<float>(view, begin, end, magnitudes);
    case ElementType::float16:
      return read_real<_Float16>(view, begin, end, magnitudes);
    case ElementType::bfloat16:
      return read_real<BFloat16Bits>(view, begin, end, magnitudes);
    case ElementType::byte_float:
      return read_real<ByteFloat>(view, begin, end, magnitudes);
    case ElementType::int8:
      return read_real<int8_t>(view, begin, end, magnitudes);
    case ElementType::uint8:
      return read_real<uint8_t>(view, begin, end, magnitudes);
    case ElementType::int16:
      return read_real<int16_t>(view, begin, end, magnitudes);
    case ElementType::uint16:
      return read_real<uint16_t>(view, begin, end, magnitudes);
    case ElementType::int32:
      return read_real<int32_t>(view, begin, end, magnitudes);
    case ElementType::uint32:
      return read_real<uint32_t>(view, begin, end, magnitudes);
    case ElementType::int64:
      return read_real<int64_t>(view, begin, end, magnitudes);
    case ElementType::uint64:
      return read_real<uint64_t>(view, begin, end, magnitudes);
    case ElementType::boolean:
      return read_real<uint8_t>(view, begin, end, magnitudes);  // torch's bool is one byte, 0 or 1
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
