#pragma once

// The CPU kernel: all CPU tensors in one parallel pass.

#include <vector>

#include "stats/tensor_stats.h"

namespace torchwalk::cpu {

// The Moments of each tensor (strided, on the CPU, real, complex or bool).
// `portable`: use the build of the kernel that runs on any x86-64.
std::vector<Moments> cpu_stats(const std::vector<const at::Tensor*>& tensors, bool portable);

}  // namespace torchwalk::cpu
