#pragma once

#include <cstddef>
#include <vector>

#include "common/address_slot.h"

namespace torchwalk {

// A set of object addresses: the identity memo of a walk (`v in memo` for
// objects that hash by id). Open addressing with linear probing over a
// power-of-two table, held inline until it outgrows it (most walks are of
// small models, where a heap allocation per set shows); `erase` shifts later
// entries back instead of leaving tombstones, because the cycle guard inserts
// and erases once per module.
class PointerSet {
 public:
  PointerSet() = default;
  PointerSet(const PointerSet&) = delete;  // `slots_` may point into the object itself
  PointerSet& operator=(const PointerSet&) = delete;

  // Adds `address`; returns false when it was already there.
  bool insert(const void* address) {
    if (2 * (count_ + 1) > capacity_) {
      rehash(2 * capacity_);
    }
    size_t slot = home_slot(address);
    while (slots_[slot] != nullptr) {
      if (slots_[slot] == address) {
        return false;
      }
      slot = (slot + 1) & mask_;
    }
    slots_[slot] = address;
    ++count_;
    return true;
  }

  bool contains(const void* address) const {
    for (size_t slot = home_slot(address); slots_[slot] != nullptr; slot = (slot + 1) & mask_) {
      if (slots_[slot] == address) {
        return true;
      }
    }
    return false;
  }

  void erase(const void* address) {
    size_t hole = home_slot(address);
    while (slots_[hole] != address) {
      if (slots_[hole] == nullptr) {
        return;
      }
      hole = (hole + 1) & mask_;
    }
    // Move back every later entry of the probe run whose home slot does not
    // lie strictly between the hole and its own position.
    for (size_t next = (hole + 1) & mask_; slots_[next] != nullptr; next = (next + 1) & mask_) {
      size_t home = home_slot(slots_[next]);
      bool stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
      if (!stays) {
        slots_[hole] = slots_[next];
        hole = next;
      }
    }
    slots_[hole] = nullptr;
    --count_;
  }

  size_t size() const { return count_; }

  // Makes room for `count` entries without growing again.
  void reserve(size_t count) {
    size_t capacity = capacity_;
    while (2 * count > capacity) {
      capacity *= 2;
    }
    if (capacity != capacity_) {
      rehash(capacity);
    }
  }

 private:
  size_t home_slot(const void* address) const { return address_slot(address, bits_); }

  void rehash(size_t capacity) {
    std::vector<const void*> entries(slots_, slots_ + capacity_);
    heap_slots_.assign(capacity, nullptr);
    slots_ = heap_slots_.data();
    capacity_ = capacity;
    mask_ = capacity - 1;
    bits_ = static_cast<unsigned>(__builtin_ctzll(capacity));
    count_ = 0;
    for (const void* address : entries) {
      if (address != nullptr) {
        insert(address);
      }
    }
  }

  static constexpr size_t kInlineCapacity = 32;
  static constexpr unsigned kInlineBits = 5;  // log2(kInlineCapacity)

  const void* inline_slots_[kInlineCapacity] = {};
  std::vector<const void*> heap_slots_;
  const void** slots_ = inline_slots_;
  size_t capacity_ = kInlineCapacity;
  size_t mask_ = kInlineCapacity - 1;
  unsigned bits_ = kInlineBits;
  size_t count_ = 0;
};

}  // namespace torchwalk
