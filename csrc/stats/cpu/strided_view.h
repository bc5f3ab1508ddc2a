#pragma once

// The CPU kernel's view of a tensor, without ATen: accumulate.cpp is compiled
// three times (portable, AVX2 and AVX-512, see CMakeLists.txt), and any
// inline function of a header shared with other files could be linked in its
// AVX-512 build and then run on a machine without AVX-512. So this header
// holds plain data only.

#include <cstdint>

#include "stats/tensor_stats.h"

namespace torchwalk::cpu {

enum class ElementType : uint8_t {
  float64,
  float32,
  float16,
  bfloat16,
  byte_float,  // float8 variants: decoded through ByteFloatView::table
  int8,
  uint8,
  int16,
  uint16,
  int32,
  uint32,
  int64,
  uint64,
  boolean,
  complex32,
  complex64,
  complex128,
};

// Strides in elements. Dimensions are ordered so that the last one has the
// smallest stride (a transposed view is read in memory order) and merged
// where they are contiguous with each other; at least one dimension.
struct StridedView {
  const char* data = nullptr;
  ElementType type = ElementType::float32;
  int64_t element_size = 0;
  const float* byte_float_table = nullptr;  // the 256 values of a float8 type
  int64_t dims = 0;
  const int64_t* sizes = nullptr;
  const int64_t* strides = nullptr;
};

// Where the kernel counts magnitudes (see Magnitudes in tensor_stats.h), in
// plain arrays the caller owns and zeroes.
struct MagnitudeCounters {
  // kFloat64Exponents.count counters, one per binary exponent e at
  // e - kFloat64Exponents.lowest; null when exponents are not counted. The
  // kernel widens [lowest_touched, highest_touched] to cover what it counted
  // (the caller sets them to an empty range, lowest above highest).
  int64_t* exponent_bins = nullptr;
  int32_t lowest_touched = 0;
  int32_t highest_touched = -1;
  const float* edges = nullptr;
  int64_t edge_count = 0;
  int64_t* at_least = nullptr;  // edge_count counters
};

// The Moments of elements [begin, end) of `view` in its iteration order, and,
// when `magnitudes` is not null, their magnitudes added to its counters; one
// function per build of the kernel.
Moments accumulate_portable(const StridedView& view, int64_t begin, int64_t end,
                            MagnitudeCounters* magnitudes);
Moments accumulate_avx2(const StridedView& view, int64_t begin, int64_t end,
                        MagnitudeCounters* magnitudes);
Moments accumulate_avx512(const StridedView& view, int64_t begin, int64_t end,
                          MagnitudeCounters* magnitudes);

}  // namespace torchwalk::cpu
