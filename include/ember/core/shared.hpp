// ember::shared<T>: an immutable, reference-counted value that lives outside
// every process heap (Erlang's refc binaries). Sending one copies a pointer,
// not the payload; the payload is freed when the last holder drops it,
// whichever process or thread that is.
//
//   auto frame = ember::shared<std::vector<std::byte>>::make(1 << 20);
//   ember::send(encoder, frame);  // no copy of the megabyte
//
// The value is built in the global heap (its own allocations too), so it
// is never reclaimed with the process that made it. A holder that ends
// without unwinding (heap limit, stack overflow) never drops its reference.
#pragma once

#include <atomic>
#include <type_traits>
#include <utility>

#include "ember/core/heap.hpp"

namespace ember {

template <class T>
class shared {
  static_assert(!std::is_reference_v<T> && !std::is_array_v<T>, "ember::shared<T>: T must be an object type");

 public:
  shared() noexcept = default;  // holds nothing

  // Builds the value in the global heap, from constructor arguments. A T
  // passed whole is copied, even from an rvalue: moving it would keep memory
  // of the caller's heap (a move-only T is moved: build it in place instead).
  template <class... A>
  static shared make(A&&... args) {
    global_heap_scope global;
    shared s;
    if constexpr (sizeof...(A) == 1 && (std::is_same_v<std::remove_cvref_t<A>, T> && ...) &&
                  std::is_copy_constructible_v<T>) {
      s.block_ = new block(std::as_const(args)...);
    } else {
      s.block_ = new block(std::forward<A>(args)...);
    }
    return s;
  }

  shared(const shared& o) noexcept : block_(o.block_) {
    if (block_) block_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  shared(shared&& o) noexcept : block_(std::exchange(o.block_, nullptr)) {}
  shared& operator=(shared o) noexcept {
    std::swap(block_, o.block_);
    return *this;
  }
  ~shared() { reset(); }

  void reset() noexcept {
    block* b = std::exchange(block_, nullptr);
    if (b && b->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      global_heap_scope global;
      delete b;
    }
  }

  const T& operator*() const noexcept { return block_->value; }
  const T* operator->() const noexcept { return &block_->value; }
  const T* get() const noexcept { return block_ ? &block_->value : nullptr; }
  explicit operator bool() const noexcept { return block_ != nullptr; }
  // Holders right now (0 if empty); racy by nature, for tests and stats.
  long use_count() const noexcept { return block_ ? block_->refs.load(std::memory_order_relaxed) : 0; }

  friend bool operator==(const shared& a, const shared& b) noexcept { return a.block_ == b.block_; }

 private:
  struct block {
    template <class... A>
    explicit block(A&&... args) : value(std::forward<A>(args)...) {}
    std::atomic<long> refs{1};
    const T value;
  };
  block* block_ = nullptr;
};

// shared<V> holding a copy of value, in the global heap.
template <class T>
shared<std::decay_t<T>> share(T&& value) {
  return shared<std::decay_t<T>>::make(std::forward<T>(value));
}

}  // namespace ember
