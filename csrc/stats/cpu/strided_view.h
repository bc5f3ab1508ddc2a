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

// The Moments of elements [begin, end) of `view` in its iteration order; one
// function per build of the kernel.
Moments accumulate_portable(const StridedView& view, int64_t begin, int64_t end);
Moments accumulate_avx2(const StridedView& view, int64_t begin, int64_t end);
Moments accumulate_avx512(const StridedView& view, int64_t begin, int64_t end);

}  // namespace torchwalk::cpu
