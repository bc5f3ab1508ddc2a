#pragma once

// The CPU comparison kernel: all CPU pairs in one parallel pass.

#include <vector>

#include "compare/pair_stats.h"
#include "stats/cpu/cpu_stats.h"

namespace at {
class Tensor;
}

namespace torchwalk::cpu {

// The PairMoments of each pair (a[i], b[i]): strided, on the CPU, real or
// bool, of equal numels; read by `build` (one cpu_runs).
std::vector<PairMoments> cpu_pairs(const std::vector<const at::Tensor*>& a,
                                   const std::vector<const at::Tensor*>& b, Tolerance tolerance,
                                   KernelBuild build);

}  // namespace torchwalk::cpu
