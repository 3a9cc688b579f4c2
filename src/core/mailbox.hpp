// Mailbox: how messages and signals reach a process, and how the decision
// "who wakes a waiting process" is made with one atomic word.
//
// Vocabulary
//   incoming   a lock-free LIFO stack of envelopes that any thread pushes to
//              (one CAS). Its head word also carries the WAITING bit.
//   private    the owner's FIFO: the incoming stack is taken whole (one
//              exchange), reversed and appended here. Selective receive scans
//              only this list, so scanning needs no synchronisation.
//
// Protocol between threads
//   push (any thread):   CAS head from h to e (e->next = h without the bit).
//                        If h had WAITING, the pusher has just woken the
//                        owner and must make it runnable; exactly one pusher
//                        sees the bit, because the CAS clears it.
//   take_all (owner):    exchange(head, 0).
//   try_wait (scheduler, after the process switched out): CAS 0 -> WAITING.
//                        Fails if anything arrived; then the process runs on.
//   The CASes are acq_rel: a pusher that sees WAITING synchronises with the
//   scheduler that set it, so it sees the process's saved context.
//
// Sends take no reference on the receiver (see deliver() in process.cpp):
// a send racing with the receiver's death may land after the slot was
// freed, or even reused. Every envelope carries the generation it was sent
// to; the owner drops envelopes of another generation when it drains, and a
// new owner discards the slot's leftovers (reset).
//
// Order: each push is atomic and reversal restores push order, so messages
// from one sender arrive in the order sent (Erlang's guarantee), and a signal
// (exit, link, down) stays in order with the messages of its sender.
//
// Rejected: Vyukov's intrusive MPSC queue (needs a stub node per mailbox and
// a separate wake flag, so two atomics per send); a mutex-protected deque
// (a lock on every send, contended under fan-in).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ember/core/message.hpp"

namespace ember::detail {

class mailbox {
 public:
  static constexpr std::uintptr_t waiting_bit = 1;

  // True if the owner was waiting: the caller must make it runnable.
  [[nodiscard]] bool push(envelope* e) noexcept {
    std::uintptr_t h = head_.load(std::memory_order_relaxed);
    do {
      e->next = reinterpret_cast<envelope*>(h & ~waiting_bit);
    } while (!head_.compare_exchange_weak(h, reinterpret_cast<std::uintptr_t>(e),
                                          std::memory_order_acq_rel, std::memory_order_relaxed));
    return (h & waiting_bit) != 0;
  }

  // Owner: takes everything pushed so far, oldest first (a FIFO chain).
  envelope* take_all() noexcept {
    if (head_.load(std::memory_order_relaxed) == 0) return nullptr;
    std::uintptr_t h = head_.exchange(0, std::memory_order_acquire);
    auto* e = reinterpret_cast<envelope*>(h & ~waiting_bit);
    envelope* fifo = nullptr;
    while (e) {
      envelope* next = e->next;
      e->next = fifo;
      fifo = e;
      e = next;
    }
    return fifo;
  }

  enum class wait_outcome : std::uint8_t { waiting, has_messages };
  // Scheduler, once the owner switched out: park it unless something arrived.
  [[nodiscard]] wait_outcome try_wait() noexcept {
    std::uintptr_t expected = 0;
    return head_.compare_exchange_strong(expected, waiting_bit, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)
               ? wait_outcome::waiting
               : wait_outcome::has_messages;
  }

  // A slot taken by a new process: drop what late senders pushed to its
  // previous owner, then start waiting (a handler process with no init) or
  // not. A CAS, not a store: a late push may land at any moment.
  void reset(bool waiting) noexcept {
    for (;;) {
      discard_incoming();
      std::uintptr_t expected = 0;
      if (head_.compare_exchange_strong(expected, waiting ? waiting_bit : 0, std::memory_order_acq_rel,
                                        std::memory_order_relaxed))
        return;
    }
  }
  void discard_incoming() noexcept {
    envelope* e = take_all();
    while (e) {
      envelope* next = e->next;
      e->destroy(e);
      e = next;
    }
  }
  // Owner: whether an envelope of this signal kind is among the incoming
  // (pushed envelopes never change until the owner takes them).
  bool incoming_has(unsigned char signal) const noexcept {
    auto* e = reinterpret_cast<envelope*>(head_.load(std::memory_order_acquire) & ~waiting_bit);
    for (; e; e = e->next)
      if (e->signal == signal) return true;
    return false;
  }
    bool incoming_empty() const noexcept {
    return (head_.load(std::memory_order_relaxed) & ~waiting_bit) == 0;
  }

  // --- the private FIFO: owner only ---
  envelope* first = nullptr;
  envelope* last = nullptr;
  std::size_t private_count = 0;

  // private_count for other threads (observe): as of the owner's last
  // change, so messages still in `incoming` are not counted.
  std::atomic<std::uint32_t> published_count{0};

  void append(envelope* e) noexcept {
    e->next = nullptr;
    if (last) last->next = e; else first = e;
    last = e;
    ++private_count;
    published_count.store(std::uint32_t(private_count), std::memory_order_relaxed);
  }
  // Unlinks e, whose predecessor is prev (nullptr if e is first).
  void unlink(envelope* prev, envelope* e) noexcept {
    if (prev) prev->next = e->next; else first = e->next;
    if (last == e) last = prev;
    e->next = nullptr;
    --private_count;
    published_count.store(std::uint32_t(private_count), std::memory_order_relaxed);
  }

 private:
  std::atomic<std::uintptr_t> head_{0};
};

}  // namespace ember::detail
