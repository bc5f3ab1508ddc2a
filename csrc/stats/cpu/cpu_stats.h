#pragma once

// The CPU kernel: all CPU tensors in one parallel pass.

#include <c10/core/ScalarType.h>

#include <vector>

#include "stats/cpu/strided_view.h"
#include "stats/tensor_stats.h"

namespace torchwalk::cpu {

// The builds of the kernel's inner loops (accumulate.cpp, see
// CMakeLists.txt), fastest first.
enum class KernelBuild : uint8_t { avx512, avx2, portable };

// Whether this CPU has the instructions `build` uses.
bool cpu_runs(KernelBuild build);

// How the kernels read elements of `dtype` (a real, complex or bool dtype;
// TORCH_CHECK fails for others); for a float8 dtype, `table` is set to its
// 256 values.
ElementType element_type(c10::ScalarType dtype, const float** table);

// The build a statistics path names for CPU tensors: its own for the three
// CPU paths, else the fastest this CPU runs.
KernelBuild build_for(StatsPath path);

// Reads each tensor (strided, on the CPU, real, complex or bool) with
// `build` (one cpu_runs) into results[rows[i]]: its Moments, and, when
// `request` asks for any, the Magnitudes of a real tensor.
void cpu_stats(const std::vector<const at::Tensor*>& tensors, const std::vector<size_t>& rows,
               KernelBuild build, const MagnitudeRequest& request,
               std::vector<TensorStats>& results);

}  // namespace torchwalk::cpu
