#pragma once

// How the CPU kernels read elements: kLanes of them at a time, as GCC
// vector types of one register each (AVX-512's, AVX2's or SSE2's, as the
// including file is compiled), decoded from every real dtype and widened to
// float64. Included by the kernels compiled three times (accumulate.cpp,
// compare/cpu/pair_accumulate.cpp): everything here is in an anonymous
// namespace, so that each build keeps its own copy, compiled with its own
// instructions (see strided_view.h). Includes no ATen or c10 header.

#include <cstdint>
#include <cstring>
#include <type_traits>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace torchwalk::cpu {
namespace {

// The accumulators are arrays of vectors of one register each (AVX-512's,
// AVX2's or SSE2's): GCC keeps those in registers, while it spills wider
// ones to the stack on every use, and in the portable build it also took
// their comparisons one lane at a time.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif
// One lane per float32 of a vector.
constexpr int kLanes = kVectorBytes / 4;
// (GCC ignores the attribute on an alias template; a member typedef keeps it.)
template <typename T>
struct VectorOf {
  typedef T type __attribute__((vector_size(kVectorBytes)));
};
template <typename T>
using Vec = typename VectorOf<T>::type;
// How many vectors of T hold kLanes lanes, and how many lanes one holds.
template <typename T>
constexpr int kParts = kLanes * static_cast<int>(sizeof(T)) / kVectorBytes;
template <typename T>
constexpr int kPerVector = kVectorBytes / static_cast<int>(sizeof(T));

// Not std::min: this file must not instantiate templates of shared headers.
inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

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

// kLanes values, lane i in element i % kPerVector of vector i / kPerVector.
template <typename Value>
struct Group {
  Vec<Value> part[kParts<Value>];
};

// kLanes 16-bit numbers, zero-extended to 32 bits. GCC splits
// __builtin_convertvector of these in halves and joins them again (five
// instructions where one does).
typedef uint16_t HalfWords __attribute__((vector_size(kLanes * sizeof(uint16_t))));
inline Vec<uint32_t> zero_extend(HalfWords half_words) {
  Vec<uint32_t> words;
#if defined(__AVX512F__)
  __m512i extended = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(half_words));
  std::memcpy(&words, &extended, sizeof words);
#elif defined(__AVX2__)
  __m256i extended = _mm256_cvtepu16_epi32(reinterpret_cast<__m128i>(half_words));
  std::memcpy(&words, &extended, sizeof words);
#else
  words = __builtin_convertvector(half_words, Vec<uint32_t>);
#endif
  return words;
}

// The kLanes elements `first`, `first + step`, ... as values (step is 1
// when Contiguous).
template <typename Element, bool Contiguous>
inline Group<typename Reader<Element>::Value> load_group(const Element* first, int64_t step,
                                                         const float* table) {
  using Value = typename Reader<Element>::Value;
  Group<Value> group;
  if constexpr (std::is_same_v<Element, BFloat16Bits>) {
    // Widened and shifted as a vector (a per-element memcpy is not
    // vectorised): two instructions for kLanes contiguous elements.
    HalfWords bits;
    if constexpr (Contiguous) {
      std::memcpy(&bits, first, sizeof bits);
    } else {
      for (int lane = 0; lane < kLanes; ++lane) {
        bits[lane] = first[lane * step].bits;
      }
    }
    Vec<uint32_t> upper = zero_extend(bits) << 16;
    std::memcpy(&group, &upper, sizeof group);
  } else {
    Value values[kLanes];
    for (int lane = 0; lane < kLanes; ++lane) {
      values[lane] = Reader<Element>::decode(first + lane * step, table);
    }
    std::memcpy(&group, values, sizeof group);
  }
  return group;
}

// The same lanes in float64.
template <typename Value>
inline Group<double> widen(const Group<Value>& values) {
  Group<double> wide;
  if constexpr (std::is_same_v<Value, double>) {
    wide = values;
  } else {
    static_assert(kParts<Value> == 1 && kParts<double> == 2);
    // GCC 12 turns __builtin_convertvector of four floats into two
    // conversions of two, through the stack; the intrinsic is one instruction.
#if defined(__AVX512F__)
    __m512 all;
    std::memcpy(&all, &values.part[0], sizeof all);
    __m256 upper = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(all), 1));
    __m512d low = _mm512_cvtps_pd(_mm512_castps512_ps256(all));
    __m512d high = _mm512_cvtps_pd(upper);
    std::memcpy(&wide.part[0], &low, sizeof low);
    std::memcpy(&wide.part[1], &high, sizeof high);
#elif defined(__AVX__)
    __m256 all;
    std::memcpy(&all, &values.part[0], sizeof all);
    __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(all));
    __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(all, 1));
    std::memcpy(&wide.part[0], &low, sizeof low);
    std::memcpy(&wide.part[1], &high, sizeof high);
#else
    typedef Value Half __attribute__((vector_size(kVectorBytes / 2)));
    Half halves[2];
    std::memcpy(halves, &values.part[0], sizeof halves);
    wide.part[0] = __builtin_convertvector(halves[0], Vec<double>);
    wide.part[1] = __builtin_convertvector(halves[1], Vec<double>);
#endif
  }
  return wide;
}

}  // namespace
}  // namespace torchwalk::cpu
