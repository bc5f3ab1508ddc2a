// The CUDA comparison kernel: one launch over all pairs of a device.
//
// The pairs' elements are cut into segments as on the CPU (segments.h); each
// thread block reads one segment of both tensors, in place (strided views
// included), and writes its kPairFields partials to a device buffer that the
// caller copies back once. Each side's dtype is read at run time (one branch
// per element, the same for a whole warp), so that one kernel serves every
// pair of dtypes. Blocks reduce in shared memory in a fixed tree: results do
// not vary from run to run.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e4m3fnuz.h>
#include <c10/util/Float8_e5m2.h>
#include <c10/util/Float8_e5m2fnuz.h>
#include <c10/util/Float8_e8m0fnu.h>
#include <c10/util/Half.h>

#include <cfloat>
#include <vector>

#include "compare/cuda/cuda_pairs.h"
#include "stats/cuda/upload.h"

namespace torchwalk::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxDims = 8;
constexpr int64_t kMinChunkElements = int64_t{1} << 16;
constexpr int64_t kMaxChunks = int64_t{1} << 16;

// A pair as the kernel reads it: the shared shape in logical order, merged
// where both sides are contiguous across dimensions, as on the CPU.
struct PairRecord {
  const char* a;
  const char* b;
  c10::ScalarType a_type;
  c10::ScalarType b_type;
  int64_t a_element_size;
  int64_t b_element_size;
  bool same_type;
  int64_t dims;
  int64_t sizes[kMaxDims];
  int64_t a_strides[kMaxDims];
  int64_t b_strides[kMaxDims];
};

struct DeviceSegment {
  int64_t pair;
  int64_t begin;
  int64_t end;
};

bool describe(const at::Tensor& a, const at::Tensor& b, PairRecord& record) {
  record.a = static_cast<const char*>(a.const_data_ptr());
  record.b = static_cast<const char*>(b.const_data_ptr());
  record.a_type = a.scalar_type();
  record.b_type = b.scalar_type();
  record.a_element_size = static_cast<int64_t>(a.element_size());
  record.b_element_size = static_cast<int64_t>(b.element_size());
  record.same_type = record.a_type == record.b_type;
  record.dims = 0;
  for (int64_t dim = 0; dim < a.dim(); ++dim) {
    const int64_t size = a.size(dim);
    if (size == 1) {
      continue;
    }
    const int64_t a_stride = a.stride(dim);
    const int64_t b_stride = b.stride(dim);
    const int64_t last = record.dims - 1;
    if (record.dims > 0 && record.a_strides[last] == a_stride * size &&
        record.b_strides[last] == b_stride * size) {
      record.sizes[last] *= size;
      record.a_strides[last] = a_stride;
      record.b_strides[last] = b_stride;
      continue;
    }
    if (record.dims == kMaxDims) {
      return false;
    }
    record.sizes[record.dims] = size;
    record.a_strides[record.dims] = a_stride;
    record.b_strides[record.dims] = b_stride;
    ++record.dims;
  }
  if (record.dims == 0) {
    record.sizes[0] = 1;
    record.a_strides[0] = 1;
    record.b_strides[0] = 1;
    record.dims = 1;
  }
  return true;
}

// An element as float64, by its dtype.
__device__ __forceinline__ double read_as_double(const char* element, c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Double:
      return *reinterpret_cast<const double*>(element);
    case c10::ScalarType::Float:
      return *reinterpret_cast<const float*>(element);
    case c10::ScalarType::Half:
      return static_cast<float>(*reinterpret_cast<const c10::Half*>(element));
    case c10::ScalarType::BFloat16:
      return static_cast<float>(*reinterpret_cast<const c10::BFloat16*>(element));
    case c10::ScalarType::Float8_e4m3fn:
      return static_cast<float>(*reinterpret_cast<const c10::Float8_e4m3fn*>(element));
    case c10::ScalarType::Float8_e4m3fnuz:
      return static_cast<float>(*reinterpret_cast<const c10::Float8_e4m3fnuz*>(element));
    case c10::ScalarType::Float8_e5m2:
      return static_cast<float>(*reinterpret_cast<const c10::Float8_e5m2*>(element));
    case c10::ScalarType::Float8_e5m2fnuz:
      return static_cast<float>(*reinterpret_cast<const c10::Float8_e5m2fnuz*>(element));
    case c10::ScalarType::Float8_e8m0fnu:
      return static_cast<float>(*reinterpret_cast<const c10::Float8_e8m0fnu*>(element));
    case c10::ScalarType::Char:
      return *reinterpret_cast<const int8_t*>(element);
    case c10::ScalarType::Byte:
    case c10::ScalarType::Bool:
      return *reinterpret_cast<const uint8_t*>(element);
    case c10::ScalarType::Short:
      return *reinterpret_cast<const int16_t*>(element);
    case c10::ScalarType::UInt16:
      return *reinterpret_cast<const uint16_t*>(element);
    case c10::ScalarType::Int:
      return *reinterpret_cast<const int32_t*>(element);
    case c10::ScalarType::UInt32:
      return *reinterpret_cast<const uint32_t*>(element);
    case c10::ScalarType::Long:
      return static_cast<double>(*reinterpret_cast<const int64_t*>(element));
    case c10::ScalarType::UInt64:
      return static_cast<double>(*reinterpret_cast<const uint64_t*>(element));
    default:
      return 0;
  }
}

__device__ __forceinline__ bool same_bytes(const char* a, const char* b, int64_t size) {
  switch (size) {
    case 1:
      return *reinterpret_cast<const uint8_t*>(a) == *reinterpret_cast<const uint8_t*>(b);
    case 2:
      return *reinterpret_cast<const uint16_t*>(a) == *reinterpret_cast<const uint16_t*>(b);
    case 4:
      return *reinterpret_cast<const uint32_t*>(a) == *reinterpret_cast<const uint32_t*>(b);
    default:
      return *reinterpret_cast<const uint64_t*>(a) == *reinterpret_cast<const uint64_t*>(b);
  }
}

// One thread's accumulators, as one CPU lane's (cpu/pair_accumulate.cpp).
struct Accumulators {
  double max_abs;
  double sum_abs;
  double squared_differences;
  double aa;
  double bb;
  double ab;
  unsigned long long mismatches;
};

__global__ void __launch_bounds__(kThreads)
    pairs_kernel(const PairRecord* pairs, const DeviceSegment* segments, double* partials,
                 double rtol, double atol) {
  const DeviceSegment segment = segments[blockIdx.x];
  const PairRecord& pair = pairs[segment.pair];

  Accumulators mine{0, 0, 0, 0, 0, 0, 0};
  bool identical = pair.same_type;
  for (int64_t index = segment.begin + threadIdx.x; index < segment.end; index += kThreads) {
    int64_t a_offset = 0, b_offset = 0;
    for (int64_t dim = pair.dims - 1, linear = index; dim >= 0; --dim) {
      const int64_t at = linear % pair.sizes[dim];
      a_offset += at * pair.a_strides[dim];
      b_offset += at * pair.b_strides[dim];
      linear /= pair.sizes[dim];
    }
    const char* a = pair.a + a_offset * pair.a_element_size;
    const char* b = pair.b + b_offset * pair.b_element_size;
    const double x = read_as_double(a, pair.a_type);
    const double y = read_as_double(b, pair.b_type);
    const double difference = x - y;
    const double magnitude = fabs(difference);
    mine.max_abs = magnitude > mine.max_abs ? magnitude : mine.max_abs;  // never NaN
    mine.sum_abs += magnitude;
    mine.squared_differences += difference * difference;
    mine.aa += x * x;
    mine.bb += y * y;
    mine.ab += x * y;
    const double limit = fmin(atol + fabs(rtol * y), DBL_MAX);  // a finite |a - b| only
    const bool close = x == y || (x != x && y != y) || magnitude <= limit;
    mine.mismatches += !close;
    if (identical) {
      identical = same_bytes(a, b, pair.a_element_size);
    }
  }
  const bool all_identical = __syncthreads_and(identical);

  __shared__ Accumulators block[kThreads];
  block[threadIdx.x] = mine;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      Accumulators& into = block[threadIdx.x];
      const Accumulators& other = block[threadIdx.x + half];
      into.max_abs = other.max_abs > into.max_abs ? other.max_abs : into.max_abs;
      into.sum_abs += other.sum_abs;
      into.squared_differences += other.squared_differences;
      into.aa += other.aa;
      into.bb += other.bb;
      into.ab += other.ab;
      into.mismatches += other.mismatches;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const Accumulators& total = block[0];
    double* out = partials + blockIdx.x * kPairFields;
    out[0] = static_cast<double>(segment.end - segment.begin);
    out[1] = total.max_abs;
    out[2] = total.sum_abs;
    out[3] = total.squared_differences;
    out[4] = total.aa;
    out[5] = total.bb;
    out[6] = total.ab;
    out[7] = static_cast<double>(total.mismatches);
    out[8] = all_identical ? 1.0 : 0.0;
  }
}

}  // namespace

PendingPairs launch_pairs(const std::vector<const at::Tensor*>& a,
                          const std::vector<const at::Tensor*>& b, Tolerance tolerance) {
  TORCH_CHECK(!a.empty(), "torchwalk.diff: no pairs to launch");
  c10::Device device = a.front()->device();
  c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();

  std::vector<PairRecord> records(a.size());
  std::vector<int64_t> numels;
  for (size_t index = 0; index < a.size(); ++index) {
    TORCH_CHECK(describe(*a[index], *b[index], records[index]),
                "torchwalk.diff: a CUDA pair with more than ", kMaxDims,
                " dimensions that are not contiguous across each other is not supported");
    numels.push_back(a[index]->numel());
  }
  PendingPairs pending;
  SegmentPlan plan = plan_segments(numels, kMinChunkElements, kMaxChunks);
  pending.segments = plan.segments;
  std::vector<DeviceSegment> segments;
  for (const Segment& segment : plan.segments) {
    segments.push_back(DeviceSegment{segment.tensor, segment.begin, segment.end});
  }
  pending.partials = at::empty({static_cast<int64_t>(segments.size()), kPairFields},
                               at::TensorOptions(at::kDouble).device(device));
  if (segments.empty()) {
    return pending;  // every pair is empty
  }
  at::Tensor device_pairs = upload(records, device);
  at::Tensor device_segments = upload(segments, device);
  pairs_kernel<<<static_cast<unsigned int>(segments.size()), kThreads, 0, stream>>>(
      reinterpret_cast<const PairRecord*>(device_pairs.const_data_ptr()),
      reinterpret_cast<const DeviceSegment*>(device_segments.const_data_ptr()),
      pending.partials.mutable_data_ptr<double>(), tolerance.rtol, tolerance.atol);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return pending;
}

}  // namespace torchwalk::cuda
