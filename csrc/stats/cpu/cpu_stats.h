#pragma once

// The CPU kernel: all CPU tensors in one parallel pass.

#include <vector>

#include "stats/tensor_stats.h"

namespace torchwalk::cpu {

// The builds of the kernel's inner loops (accumulate.cpp, see
// CMakeLists.txt), fastest first.
enum class KernelBuild : uint8_t { avx512, avx2, portable };

// Whether this CPU has the instructions `build` uses.
bool cpu_runs(KernelBuild build);

// The fastest build this CPU runs.
KernelBuild fastest_build();

// The Moments of each tensor (strided, on the CPU, real, complex or bool),
// read by `build` (one cpu_runs). When `request` asks for any, the
// Magnitudes of each real tensor go to `magnitudes`, one per tensor.
std::vector<Moments> cpu_stats(const std::vector<const at::Tensor*>& tensors, KernelBuild build,
                               const MagnitudeRequest& request,
                               std::vector<Magnitudes>& magnitudes);

}  // namespace torchwalk::cpu
