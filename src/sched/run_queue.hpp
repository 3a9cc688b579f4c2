// A scheduler's local run queue: a fixed ring that only its owner pushes to
// and that other schedulers steal half of (Go's runq), plus the `next` slot
// (Go's runnext): a process woken by the running one runs next on this
// scheduler, so two processes talking to each other stay on one core and
// never pay a cross-core wake-up.
//
// Synchronisation: the owner writes slots and then tail (release); consumers
// (owner pop, thieves) read head/tail (acquire), copy slots, and claim them
// by CAS on head. A thief's copy is valid if its CAS succeeds: the owner
// cannot overwrite a slot in [head, head + n) while head has not moved.
// Slots are relaxed atomics only so that ThreadSanitizer sees the protocol.
// `next` is touched by the owner only (thieves never take it), so it costs
// no atomic operation.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/process.hpp"

namespace ember::detail {

class run_queue {
 public:
  static constexpr std::uint32_t capacity = 512;

  // Owner: false if the ring is full (the caller moves half to the shared queue).
  [[nodiscard]] bool push(process* p) noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    std::uint32_t t = tail_.load(std::memory_order_relaxed);
    if (t - h >= capacity) return false;
    slots_[t % capacity].store(p, std::memory_order_relaxed);
    tail_.store(t + 1, std::memory_order_release);
    return true;
  }

  // Owner: takes up to `max` of the oldest entries (for overflow to the
  // shared queue). Returns how many were written to out.
  std::uint32_t take_oldest(process** out, std::uint32_t max) noexcept {
    for (;;) {
      std::uint32_t h = head_.load(std::memory_order_acquire);
      std::uint32_t t = tail_.load(std::memory_order_relaxed);
      std::uint32_t n = t - h;
      if (n > max) n = max;
      for (std::uint32_t i = 0; i < n; ++i) out[i] = slots_[(h + i) % capacity].load(std::memory_order_relaxed);
      if (head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel)) return n;
    }
  }

  // Owner: the oldest entry of the ring (the `next` slot is taken apart).
  process* pop() noexcept {
    for (;;) {
      std::uint32_t h = head_.load(std::memory_order_acquire);
      std::uint32_t t = tail_.load(std::memory_order_relaxed);
      if (h == t) return nullptr;
      process* p = slots_[h % capacity].load(std::memory_order_relaxed);
      if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel)) return p;
    }
  }

  // Owner: takes the `next` slot alone.
  process* take_next() noexcept {
    process* p = next_;
    next_ = nullptr;
    return p;
  }

  // Owner: puts p in the `next` slot; returns what it displaced (or nullptr).
  process* put_next(process* p) noexcept {
    process* old = next_;
    next_ = p;
    return old;
  }

  // Thief (owner of *this, whose ring is empty): moves half of victim's
  // entries here and returns one of them to run.
  process* steal_from(run_queue& victim) noexcept {
    std::uint32_t t = tail_.load(std::memory_order_relaxed);
    std::uint32_t n;
    for (;;) {
      std::uint32_t h = victim.head_.load(std::memory_order_acquire);
      std::uint32_t vt = victim.tail_.load(std::memory_order_acquire);
      n = vt - h;
      n = n - n / 2;
      if (n == 0) return nullptr;
      if (n > capacity / 2) continue;  // inconsistent read, retry
      for (std::uint32_t i = 0; i < n; ++i)
        slots_[(t + i) % capacity].store(victim.slots_[(h + i) % capacity].load(std::memory_order_relaxed),
                                         std::memory_order_relaxed);
      if (victim.head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel)) break;
    }
    --n;
    process* p = slots_[(t + n) % capacity].load(std::memory_order_relaxed);
    if (n) tail_.store(t + n, std::memory_order_release);
    return p;
  }

  // Owner only (reads `next`).
  bool empty() const noexcept {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire) && !next_;
  }
  std::uint32_t size() const noexcept {
    return tail_.load(std::memory_order_acquire) - head_.load(std::memory_order_acquire);
  }

 private:
  alignas(64) std::atomic<std::uint32_t> head_{0};
  alignas(64) std::atomic<std::uint32_t> tail_{0};
  process* next_ = nullptr;  // owner only: never stolen
  std::atomic<process*> slots_[capacity];
};

}  // namespace ember::detail
