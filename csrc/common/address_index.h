#pragma once

// A map from object addresses to the index of their first record: which
// positions of a walk hold an object seen before. Open addressing with linear
// probing, like PointerSet, but with a value per key and no erase.

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "common/address_slot.h"

namespace torchwalk {

class AddressIndex {
 public:
  // The index stored for `address`, storing `index` first if there is none.
  int64_t find_or_insert(const void* address, int64_t index) {
    if (2 * (count_ + 1) > slots_.size()) {
      grow();
    }
    size_t slot = home_slot(address);
    while (slots_[slot].first != nullptr) {
      if (slots_[slot].first == address) {
        return slots_[slot].second;
      }
      slot = (slot + 1) & (slots_.size() - 1);
    }
    slots_[slot] = {address, index};
    ++count_;
    return index;
  }

 private:
  size_t home_slot(const void* address) const { return address_slot(address, bits_); }

  void grow() {
    std::vector<std::pair<const void*, int64_t>> entries = std::move(slots_);
    size_t capacity = entries.empty() ? 64 : 2 * entries.size();
    slots_.assign(capacity, {nullptr, 0});
    bits_ = static_cast<unsigned>(__builtin_ctzll(capacity));
    count_ = 0;
    for (const auto& [address, index] : entries) {
      if (address != nullptr) {
        find_or_insert(address, index);
      }
    }
  }

  std::vector<std::pair<const void*, int64_t>> slots_;
  unsigned bits_ = 0;  // set by the first grow()
  size_t count_ = 0;
};

}  // namespace torchwalk
