#pragma once

// Which leaves share memory, and what the tree holds when each
// storage byte is counted once. Both sort the leaves by storage key, so they
// take O(P log P) for P leaves.

#include <cstdint>
#include <vector>

#include "storage/leaf_record.h"

namespace torchwalk {

enum class TieKind { packed, overlap, alias, shared };  // weakest to strongest

struct TieGroup {
  std::vector<int64_t> leaves;  // indices of the leaves, in walk order
  TieKind kind = TieKind::packed;
  int64_t nbytes = 0;
  int64_t overcount_nbytes = 0;
};

// The groups of two or more leaves on one storage, ordered by their first
// leaf, each with the strongest kind found between two of its leaves.
std::vector<TieGroup> group_ties(const std::vector<LeafRecord>& leaves);

struct StorageFigures {
  int64_t params = 0;  // parameter elements, each storage element once
  int64_t bytes = 0;   // parameter bytes, each storage byte once
};

// Over the first leaf of each parameter object, lazy ones left out: a chain
// of overlapping views on one storage counts the union of their spans once,
// a view alone its own elements.
StorageFigures unique_storage_figures(const std::vector<LeafRecord>& leaves);

}  // namespace torchwalk
