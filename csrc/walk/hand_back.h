#pragma once

// Shared by the walkers: how they give a question back to PyTorch.

namespace torchwalk {

// Thrown where the fast path cannot promise PyTorch's answer (an overriding
// class, a non-str name, a dict subclass, ...). The entry points catch it and
// return std::nullopt so that Python calls PyTorch itself, which then gives
// its own result or its own error.
struct HandBack {};

[[noreturn]] inline void hand_back() { throw HandBack{}; }

}  // namespace torchwalk
