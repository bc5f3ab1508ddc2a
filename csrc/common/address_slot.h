#pragma once

#include <cstddef>
#include <cstdint>

namespace torchwalk {

// The slot of `address` in a table of 2^bits slots, by Fibonacci hashing:
// objects are 16-byte aligned, and the high bits of the product mix all of
// the address's bits. Every address-keyed table here uses it.
inline size_t address_slot(const void* address, unsigned bits) {
  return (reinterpret_cast<uintptr_t>(address) * 0x9E3779B97F4A7C15ull) >> (64 - bits);
}

}  // namespace torchwalk
