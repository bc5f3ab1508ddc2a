#pragma once

// How the elements of many tensors are cut into pieces of about equal size,
// so that 10,000 small tensors keep every core as busy as one large one.
//
// The tensors' elements are laid end to end and cut into chunks of
// `chunk_elements`; a segment is the part of one tensor inside one chunk.
// Threads (or CUDA blocks) take whole chunks, each segment gives one Moments,
// and the segments of a tensor are merged in order afterwards. The cut
// depends only on the tensors' sizes, never on the number of threads.

#include <algorithm>
#include <cstdint>
#include <vector>

namespace torchwalk {

struct Segment {
  int64_t tensor = 0;  // index into the tensors planned
  int64_t begin = 0;   // element range, in the tensor's iteration order
  int64_t end = 0;
};

struct SegmentPlan {
  std::vector<Segment> segments;
  // Chunk c is segments [chunk_starts[c], chunk_starts[c + 1]).
  std::vector<int64_t> chunk_starts;

  int64_t chunk_count() const { return static_cast<int64_t>(chunk_starts.size()) - 1; }
};

// At least `min_chunk_elements` per chunk, and at most about `max_chunks`
// chunks, so that the plan stays small (a constant, not the model's size).
inline SegmentPlan plan_segments(const std::vector<int64_t>& numels, int64_t min_chunk_elements,
                                 int64_t max_chunks) {
  int64_t total = 0;
  for (int64_t numel : numels) {
    total += numel;
  }
  int64_t chunk_elements = std::max(min_chunk_elements, (total + max_chunks - 1) / max_chunks);
  SegmentPlan plan;
  plan.chunk_starts.push_back(0);
  int64_t room = chunk_elements;  // left in the current chunk
  for (size_t tensor = 0; tensor < numels.size(); ++tensor) {
    for (int64_t begin = 0; begin < numels[tensor];) {
      int64_t end = std::min(numels[tensor], begin + room);
      plan.segments.push_back(Segment{static_cast<int64_t>(tensor), begin, end});
      room -= end - begin;
      begin = end;
      if (room == 0) {
        plan.chunk_starts.push_back(static_cast<int64_t>(plan.segments.size()));
        room = chunk_elements;
      }
    }
  }
  if (plan.chunk_starts.back() != static_cast<int64_t>(plan.segments.size())) {
    plan.chunk_starts.push_back(static_cast<int64_t>(plan.segments.size()));
  }
  return plan;
}

}  // namespace torchwalk
