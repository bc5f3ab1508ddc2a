#pragma once

// Bulk value statistics: every figure of every tensor in one pass
// over memory. A plain header: callers need no ATen or CUDA headers.
//
// The CPU kernel (cpu/) and the CUDA kernel (cuda/, built only against a CUDA
// torch) both produce Moments for fixed pieces of the tensors (see
// segments.h), which are then merged in a fixed order: the result does not
// depend on the number of threads.

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace at {
class Tensor;
}

namespace torchwalk {

// What a run of elements sums up to, in float64. Two runs merge exactly as
// if their elements had been read in one run.
struct Moments {
  int64_t count = 0;
  double sum = 0;
  double m2 = 0;  // the sum of squared deviations from the mean
  double sum_squares = 0;
  // NaN-free extremes: a run's NaNs are counted in `nans`, and the finished
  // figures are NaN whenever that count is not zero, as torch's are.
  double min = 0;
  double max = 0;
  double absmax = 0;
  int64_t zeros = 0;
  int64_t nans = 0;
  int64_t infs = 0;

  // Adds `other`'s elements to these (Chan et al.'s pairwise update for m2).
  void merge(const Moments& other);
};

// Which figures a tensor has: all; counts and l2 (complex); numel alone (meta).
enum class StatsKind : uint8_t { values, counts_and_l2, numel_only };

// What the magnitudes of the finite non-zero values are, when asked for
// (MagnitudeRequest): the figures that tell whether a tensor fits a narrower
// floating-point format.
struct Magnitudes {
  // (e, the number of values with 2^e <= |x| < 2^(e+1)), by increasing e,
  // only the e that occur.
  std::vector<std::pair<int32_t, int64_t>> exponents;
  // For each of the request's edges, the number of values with |x| >= edge,
  // x rounded to float32 first (as torch's casts to narrower formats do).
  std::vector<int64_t> at_least;

  void merge(const Magnitudes& other);
};

struct MagnitudeRequest {
  bool exponents = false;
  std::vector<float> edges;  // at most kMaxEdges, each positive

  bool any() const { return exponents || !edges.empty(); }
};
constexpr size_t kMaxEdges = 32;

// The binary exponents of the finite non-zero values of each element type:
// float64 (and the integers, read as float64) from -1074 to 1023, every
// narrower floating type (read as float32) from -149 to 127.
struct ExponentRange {
  int32_t lowest;
  int32_t count;
};
constexpr ExponentRange kFloat64Exponents{-1074, 2098};
constexpr ExponentRange kFloat32Exponents{-149, 277};

constexpr ExponentRange exponent_range(bool read_as_float64) {
  return read_as_float64 ? kFloat64Exponents : kFloat32Exponents;
}

struct TensorStats {
  int64_t numel = 0;
  StatsKind kind = StatsKind::values;
  Moments moments;
  Magnitudes magnitudes;  // empty unless requested, and for complex tensors
};

// Which code reads the tensors: the kernels (the fastest the machine and the
// build offer), one build of the CPU kernel for CPU tensors (AVX-512, AVX2 or
// any x86-64), or ATen reductions alone (as tensors on devices without a
// kernel are read). All but the first are for tests and benchmarks.
enum class StatsPath : uint8_t { kernels, avx512_cpu, avx2_cpu, portable_cpu, aten };

// False for a build of the CPU kernel that this CPU cannot run.
bool runs_here(StatsPath path);

// Raises std::invalid_argument for a tensor that tensor_stats cannot read:
// not strided (sparse, nested), or without storage. Not a c10::Error: raising
// one (TORCH_CHECK) from here crashed the process under a CUDA build of torch
// (2.11, on an H200), cause not found.
void check_readable(const at::Tensor& tensor, std::size_t row);

// The statistics of each tensor, in order, each checked by check_readable
// first, with the magnitudes `request` asks for (of real tensors). Call
// without the GIL: nothing here touches Python.
std::vector<TensorStats> tensor_stats(const std::vector<at::Tensor>& tensors, StatsPath path,
                                      const MagnitudeRequest& request = {});

// Adds `row`'s tensor to `total`, as if concatenated.
void merge_into(TensorStats& total, const TensorStats& row);

// The statistics of all of `rows` as if their tensors were concatenated.
TensorStats merge_stats(const std::vector<TensorStats>& rows);

}  // namespace torchwalk
