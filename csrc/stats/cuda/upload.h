#pragma once

// Handing plain records (views, segments) to a CUDA kernel.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstring>
#include <vector>

namespace torchwalk::cuda {

// Copies the records to the device through pinned memory, without waiting:
// the caching host allocator keeps the pinned block until the copy on the
// current stream is done.
template <typename Record>
at::Tensor upload(const std::vector<Record>& records, c10::Device device) {
  int64_t bytes = static_cast<int64_t>(records.size() * sizeof(Record));
  at::Tensor pinned = at::empty({bytes}, at::TensorOptions(at::kByte).pinned_memory(true));
  std::memcpy(pinned.mutable_data_ptr(), records.data(), static_cast<size_t>(bytes));
  return pinned.to(device, /*non_blocking=*/true);
}

}  // namespace torchwalk::cuda
