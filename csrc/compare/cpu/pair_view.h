#pragma once

// The CPU comparison kernel's view of a pair of tensors, without ATen:
// pair_accumulate.cpp is compiled three times, as the statistics kernel is
// (see stats/cpu/strided_view.h for why this header holds plain data only).

#include <cstdint>

#include "compare/pair_stats.h"
#include "stats/cpu/strided_view.h"

namespace torchwalk::cpu {

// One side of a pair. Strides in elements, one per dimension of the pair.
struct PairSide {
  const char* data = nullptr;
  ElementType type = ElementType::float32;
  int64_t element_size = 0;
  const float* byte_float_table = nullptr;  // the 256 values of a float8 type
  const int64_t* strides = nullptr;
};

// Both sides have the same shape, read in its logical (row-major) order;
// dimensions of size 1 are dropped and neighbours merged where both sides
// are contiguous across them. At least one dimension.
struct PairView {
  PairSide a;
  PairSide b;
  bool same_type = false;  // then the bytes are compared too
  int64_t dims = 0;
  const int64_t* sizes = nullptr;
};

// The PairMoments of element pairs [begin, end) of `view`; one function per
// build of the kernel.
PairMoments compare_portable(const PairView& view, int64_t begin, int64_t end, Tolerance tolerance);
PairMoments compare_avx2(const PairView& view, int64_t begin, int64_t end, Tolerance tolerance);
PairMoments compare_avx512(const PairView& view, int64_t begin, int64_t end, Tolerance tolerance);

}  // namespace torchwalk::cpu
