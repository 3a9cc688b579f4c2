// The process side of asynchronous preemption (design: sched/preempt.cpp).
//
// A process may be interrupted only while it runs its own code. The runtime
// marks everything else by raising process::preempt_off:
//   runtime_call   at the top of every runtime function a process can call
//                  (send, receive, spawn, timers, names, the heap's locked
//                  slow paths...), so that no interrupted runtime code can
//                  leave a lock held or a per-thread cache half-updated while
//                  another process runs on the same thread;
//   user_code      lowers it around the user's code at the base of the
//                  stack (a function body, a handler's init and handle),
//                  which otherwise runs with it raised: a fresh process
//                  starts at 1.
// A signal that finds preempt_off raised sets preempt_pending; the runtime
// call (or no_preempt guard) that brings preempt_off back to 0 then yields.
#pragma once

#include <atomic>
#include <mutex>

#include "core/process.hpp"

namespace ember::detail {

// The deferred preemption: yields now (a cooperative yield; the process
// stays migratable). Only on the process's own stack, never while an
// exception is in flight.
void preempt_pending_yield(process& p) noexcept;

inline void preempt_off_enter(process* p) noexcept {
  ++p->preempt_off;
  std::atomic_signal_fence(std::memory_order_seq_cst);  // raised before anything it guards
}

inline void preempt_off_leave(process* p) noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (--p->preempt_off == 0 && __builtin_expect(p->preempt_pending.load(std::memory_order_relaxed), 0))
    preempt_pending_yield(*p);
}

// Raises preempt_off for a stretch of runtime code that must not be
// interrupted (a lock held, a per-thread cache being updated) but where a
// yield would be out of place (inside operator new, say): a preemption
// asked for meanwhile waits for the next runtime_call or guard to end.
class preempt_hold {
 public:
  preempt_hold() noexcept : p_(tl_process) {
    if (p_) preempt_off_enter(p_);
  }
  ~preempt_hold() {
    if (!p_) return;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    --p_->preempt_off;
  }
  preempt_hold(const preempt_hold&) = delete;
  preempt_hold& operator=(const preempt_hold&) = delete;

 private:
  process* p_;
};

// A lock_guard that also holds preemption off while the lock is held.
template <class Mutex>
class locked_hold {
 public:
  explicit locked_hold(Mutex& m) : lock_(m) {}

 private:
  preempt_hold hold_;  // constructed before the lock is taken, destroyed after it is released
  std::lock_guard<Mutex> lock_;
};

class runtime_call {
 public:
  runtime_call() noexcept : p_(tl_process) {
    if (p_) preempt_off_enter(p_);
  }
  explicit runtime_call(process* p) noexcept : p_(p) {
    if (p_) preempt_off_enter(p_);
  }
  ~runtime_call() {
    if (p_) preempt_off_leave(p_);
  }
  runtime_call(const runtime_call&) = delete;
  runtime_call& operator=(const runtime_call&) = delete;
  process* process_or_null() const noexcept { return p_; }

 private:
  process* p_;
};

class user_code {
 public:
  explicit user_code(process& p) noexcept : p_(p) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    --p_.preempt_off;
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  ~user_code() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    ++p_.preempt_off;
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  user_code(const user_code&) = delete;
  user_code& operator=(const user_code&) = delete;

 private:
  process& p_;
};

}  // namespace ember::detail
