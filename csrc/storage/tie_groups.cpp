#include "storage/tie_groups.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "bridge/python_tensors.h"

namespace torchwalk {
namespace {

using Span = std::pair<int64_t, int64_t>;  // [begin, end) in bytes of the storage

// The size of the union of the spans (reordered in place).
int64_t union_size(std::vector<Span>& spans) {
  std::sort(spans.begin(), spans.end());
  int64_t covered = 0;
  int64_t reached = 0;  // the end of the union so far
  bool started = false;
  for (const auto& [begin, end] : spans) {
    if (begin == end) {
      continue;  // an empty view touches no byte
    }
    if (!started || begin >= reached) {
      covered += end - begin;
      reached = end;
      started = true;
    } else if (end > reached) {
      covered += end - reached;
      reached = end;
    }
  }
  return covered;
}

// Leaves of one storage (indices into `leaves`, in walk order), one per
// tensor object: the first leaf of each.
std::vector<int64_t> distinct_tensors(const std::vector<LeafRecord>& leaves,
                                      const std::vector<int64_t>& group) {
  std::vector<int64_t> distinct(group);
  std::stable_sort(distinct.begin(), distinct.end(), [&](int64_t a, int64_t b) {
    return leaves[static_cast<size_t>(a)].tensor.ptr() <
           leaves[static_cast<size_t>(b)].tensor.ptr();
  });
  distinct.erase(std::unique(distinct.begin(), distinct.end(),
                             [&](int64_t a, int64_t b) {
                               return leaves[static_cast<size_t>(a)].tensor.ptr() ==
                                      leaves[static_cast<size_t>(b)].tensor.ptr();
                             }),
                 distinct.end());
  return distinct;
}

TieKind kind_of(const std::vector<LeafRecord>& leaves, const std::vector<int64_t>& group,
                std::vector<int64_t> distinct) {
  if (distinct.size() < group.size()) {
    return TieKind::shared;  // one tensor object at several names
  }
  auto facts = [&](int64_t leaf) -> const TensorFacts& {
    return leaves[static_cast<size_t>(leaf)].facts;
  };
  // Identical views have equal view hashes; equal hashes are then confirmed.
  std::sort(distinct.begin(), distinct.end(),
            [&](int64_t a, int64_t b) { return facts(a).view_hash < facts(b).view_hash; });
  for (size_t i = 0; i < distinct.size(); ++i) {
    for (size_t j = i + 1;
         j < distinct.size() && facts(distinct[j]).view_hash == facts(distinct[i]).view_hash; ++j) {
      if (same_view(leaves[static_cast<size_t>(distinct[i])].local.ptr(),
                    leaves[static_cast<size_t>(distinct[j])].local.ptr())) {
        return TieKind::alias;
      }
    }
  }
  std::sort(distinct.begin(), distinct.end(),
            [&](int64_t a, int64_t b) { return facts(a).span_begin < facts(b).span_begin; });
  int64_t reached = 0;
  bool started = false;
  for (int64_t leaf : distinct) {
    const TensorFacts& view = facts(leaf);
    if (view.span_begin == view.span_end) {
      continue;
    }
    if (started && view.span_begin < reached) {
      return TieKind::overlap;
    }
    reached = std::max(reached, view.span_end);
    started = true;
  }
  return TieKind::packed;
}

// Indices of the leaves that have a storage, grouped by storage key (walk
// order inside each run).
std::vector<int64_t> by_storage(const std::vector<LeafRecord>& leaves, bool first_only) {
  std::vector<int64_t> order;
  for (size_t index = 0; index < leaves.size(); ++index) {
    const LeafRecord& leaf = leaves[index];
    if (first_only && (leaf.first != static_cast<int64_t>(index) || leaf.is_lazy)) {
      continue;
    }
    order.push_back(static_cast<int64_t>(index));
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return leaves[static_cast<size_t>(a)].facts.storage_key <
           leaves[static_cast<size_t>(b)].facts.storage_key;
  });
  return order;
}

// Calls `visit(run)` for each run of leaves with one storage key; leaves
// without storage (key 0) are each a run of their own.
template <typename Visit>
void for_each_storage(const std::vector<LeafRecord>& leaves, const std::vector<int64_t>& order,
                      Visit&& visit) {
  std::vector<int64_t> run;
  for (size_t begin = 0, end = 0; begin < order.size(); begin = end) {
    uintptr_t key = leaves[static_cast<size_t>(order[begin])].facts.storage_key;
    end = begin + 1;
    while (key != 0 && end < order.size() &&
           leaves[static_cast<size_t>(order[end])].facts.storage_key == key) {
      ++end;
    }
    run.assign(order.begin() + static_cast<std::ptrdiff_t>(begin),
               order.begin() + static_cast<std::ptrdiff_t>(end));
    visit(run);
  }
}

std::vector<Span> spans_of(const std::vector<LeafRecord>& leaves,
                           const std::vector<int64_t>& group) {
  std::vector<Span> spans;
  for (int64_t leaf : group) {
    const TensorFacts& facts = leaves[static_cast<size_t>(leaf)].facts;
    spans.emplace_back(facts.span_begin, facts.span_end);
  }
  return spans;
}

}  // namespace

std::vector<TieGroup> group_ties(const std::vector<LeafRecord>& leaves) {
  std::vector<TieGroup> groups;
  for_each_storage(leaves, by_storage(leaves, false), [&](const std::vector<int64_t>& run) {
    if (run.size() < 2) {
      return;
    }
    TieGroup group;
    group.leaves = run;
    // Parameters first, each part in walk order: the first name is then the
    // one named_parameters() keeps.
    std::stable_partition(group.leaves.begin(), group.leaves.end(), [&](int64_t leaf) {
      return !leaves[static_cast<size_t>(leaf)].is_buffer;
    });
    std::vector<int64_t> distinct = distinct_tensors(leaves, run);
    group.kind = kind_of(leaves, run, distinct);
    std::vector<Span> spans = spans_of(leaves, distinct);
    group.nbytes = union_size(spans);
    int64_t counted_separately = 0;
    for (int64_t leaf : run) {
      counted_separately += leaves[static_cast<size_t>(leaf)].facts.nbytes;
    }
    group.overcount_nbytes = std::max<int64_t>(0, counted_separately - group.nbytes);
    groups.push_back(std::move(group));
  });
  std::sort(groups.begin(), groups.end(), [](const TieGroup& a, const TieGroup& b) {
    return a.leaves.front() < b.leaves.front();
  });
  return groups;
}

StorageFigures unique_storage_figures(const std::vector<LeafRecord>& leaves) {
  StorageFigures figures;
  std::vector<int64_t> parameters;
  for (int64_t leaf : by_storage(leaves, true)) {
    if (!leaves[static_cast<size_t>(leaf)].is_buffer) {
      parameters.push_back(leaf);
    }
  }
  auto facts = [&](int64_t leaf) -> const TensorFacts& {
    return leaves[static_cast<size_t>(leaf)].facts;
  };
  for_each_storage(leaves, parameters, [&](const std::vector<int64_t>& run) {
    // Chains of views whose spans overlap count their union once; a view
    // alone (or repeated identically) counts its elements.
    std::vector<int64_t> views(run);
    std::sort(views.begin(), views.end(), [&](int64_t a, int64_t b) {
      return std::tie(facts(a).span_begin, facts(a).span_end, facts(a).view_hash) <
             std::tie(facts(b).span_begin, facts(b).span_end, facts(b).view_hash);
    });
    std::vector<int64_t> chain;
    auto count_chain = [&]() {
      if (chain.size() == 1) {
        figures.params += facts(chain.front()).numel;
        figures.bytes += facts(chain.front()).nbytes;
      } else if (!chain.empty()) {
        std::vector<Span> spans = spans_of(leaves, chain);
        int64_t covered = union_size(spans);
        figures.params += covered / std::max<int64_t>(1, facts(chain.front()).itemsize);
        figures.bytes += covered;
      }
      chain.clear();
    };
    int64_t reached = 0;
    for (int64_t view : views) {
      const TensorFacts& view_facts = facts(view);
      bool empty = view_facts.span_begin == view_facts.span_end;
      if (!chain.empty() && (empty || view_facts.span_begin >= reached)) {
        count_chain();
      }
      if (!chain.empty() && facts(chain.back()).view_hash == view_facts.view_hash &&
          same_view(leaves[static_cast<size_t>(chain.back())].local.ptr(),
                    leaves[static_cast<size_t>(view)].local.ptr())) {
        continue;  // the same view again: its elements are counted once
      }
      chain.push_back(view);
      reached = chain.size() == 1 ? view_facts.span_end : std::max(reached, view_facts.span_end);
      if (empty) {
        count_chain();
      }
    }
    count_chain();
  });
  return figures;
}

}  // namespace torchwalk
