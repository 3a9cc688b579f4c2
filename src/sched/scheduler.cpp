// Process scheduler.
//
// Vocabulary
//   scheduler   one OS thread per core (configurable), running processes M:N.
//   run queue   per scheduler: a `next` slot and a 512-entry ring
//               (run_queue.hpp). Only the owner pushes; anyone may steal.
//   inbox       per scheduler, a locked FIFO for processes placed there by
//               other threads (spawn with a scheduler hint). Not stolen: a
//               hinted process starts on its scheduler (it may be stolen
//               later, once it has yielded to the ring).
//   global      a locked FIFO for processes made runnable by threads that
//               are not schedulers (main, timer thread) and for ring overflow.
//
// Where a runnable process goes
//   - woken by a send from a process: the sender's `next` slot (Go's
//     runnext). The receiver runs as soon as the sender waits or yields, on
//     the same core: ping-pong and rings never cross cores. The process it
//     displaces from `next` goes to the tail of the ring.
//   - spawned: the spawner's `next` slot too (the child usually runs as soon
//     as the parent waits, while its data is hot), or the hinted scheduler.
//   - yielded (reductions spent): the tail of its scheduler's ring.
//   - from a non-scheduler thread: the global queue.
//
// Finding work (find_work), in order: every 61st turn the global queue
// and the inbox first (so a busy ring cannot starve them); `next` (but after 256 runs in a row through
// `next`, that process goes to the ring's tail, so a pair of processes
// talking to each other cannot starve the ring); the ring; the inbox; the global
// queue; then spinning: stealing half of another scheduler's ring, oldest
// first (the victim keeps its hot, recent work). `next` is never stolen: it
// is about to run where its data is.
//
// Parking: a scheduler that found nothing while spinning for ~50 µs parks
// on a futex (an idle runtime uses no CPU), after handing its cached free
// process slots and stacks to the shared pools. Spinning first matters on these
// machines, where waking a parked core costs tens of µs. Wake-ups follow
// Go: whoever queues work a thief could take (ring, inbox, global) checks
// `idle > 0 && spinning == 0` and wakes one parked scheduler, which counts
// as spinning until it finds work; a spinner that finds work wakes another
// if it was the last spinner. Pushes to `next` wake nobody (that process
// runs here next). No lost wake-up: a parker registers as idle, then
// re-checks every queue; a pusher queues, then reads `idle`; both sides put
// a full barrier between their write and their read, so at least one of
// them sees the other.
//
// Running a process (execute): switch to its context on its stack; the
// process switches back with a suspend_reason and the scheduler acts off
// the process's stack: requeue (yield), park it in its mailbox (wait: the
// mailbox CAS decides, see mailbox.hpp), take its stack back (idle handler
// process), release its stack, heap and self-reference (exited), or run
// the exit path here for a process ended without unwinding (abandoned:
// heap limit, stack overflow, isolated fault; see fault.cpp). A handler
// process is given a stack only for a turn, from the scheduler's LIFO stack
// cache, so consecutive handler turns reuse the same warm pages.
//
// Preemption (preempt.cpp): `turn` is odd while a process runs, so the
// monitor thread can tell a long turn. A process preempted by the signal
// comes back as suspend_reason::preempted and goes to the owner-only pinned
// queue (never stolen: it must resume on this thread), which takes every
// other turn with the ring. Spare schedulers (one per scheduler, after the
// primaries in `scheds`) sleep until the monitor finds a scheduler blocked
// in one turn; an active spare works like any scheduler (and may also pop a
// blocked scheduler's inbox), and retires once no scheduler is blocked and
// it holds no pinned process, handing its queue to the global queue.
//
// Numbers that decided it (2-vCPU VM): an fcontext switch pair ~9 ns; a
// cross-core wake-up through a parked thread 20-60 µs; through a spinning
// one ~1 µs.
#include "sched/scheduler.hpp"

#include <cxxabi.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "core/sanitizers.hpp"

namespace ember::detail {

constinit __attribute__((tls_model("initial-exec"))) thread_local scheduler* tl_scheduler = nullptr;

namespace {

constexpr std::chrono::microseconds spin_time{50};

// The C++ runtime's per-thread exception state (libstdc++/libsupc++
// layout). Swapped on every switch so that a process suspended inside a
// catch block keeps its own exception chain.
struct eh_globals {
  void* caught;
  unsigned int uncaught;
};
eh_globals* thread_eh() noexcept {
  return reinterpret_cast<eh_globals*>(abi::__cxa_get_globals());
}

// A full (store-load) barrier. A seq_cst read-modify-write rather than
// atomic_thread_fence, which ThreadSanitizer does not model.
__attribute__((tls_model("initial-exec"))) thread_local std::atomic<int> barrier_word{0};  // per thread: no shared line
inline void full_barrier() noexcept { barrier_word.fetch_add(0, std::memory_order_seq_cst); }

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}
}  // namespace

// ---------------------------------------------------------------- queues

void shared_queue::push(process* p) noexcept {
  p->run_link = nullptr;
  std::lock_guard lock(mu_);
  if (tail_) tail_->run_link = p; else head_ = p;
  tail_ = p;
  size_.fetch_add(1, std::memory_order_release);
}

void shared_queue::push_batch(process** ps, std::uint32_t n) noexcept {
  if (n == 0) return;
  for (std::uint32_t i = 0; i + 1 < n; ++i) ps[i]->run_link = ps[i + 1];
  ps[n - 1]->run_link = nullptr;
  std::lock_guard lock(mu_);
  if (tail_) tail_->run_link = ps[0]; else head_ = ps[0];
  tail_ = ps[n - 1];
  size_.fetch_add(n, std::memory_order_release);
}

process* shared_queue::pop() noexcept {
  if (empty()) return nullptr;
  std::lock_guard lock(mu_);
  process* p = head_;
  if (!p) return nullptr;
  head_ = p->run_link;
  if (!head_) tail_ = nullptr;
  size_.fetch_sub(1, std::memory_order_relaxed);
  p->run_link = nullptr;
  return p;
}

process* shared_queue::pop_batch(run_queue& into, std::uint32_t max) noexcept {
  if (empty()) return nullptr;
  std::lock_guard lock(mu_);
  process* first = head_;
  if (!first) return nullptr;
  head_ = first->run_link;
  std::uint32_t n = 1;
  while (head_ && n < max) {
    process* p = head_;
    process* next = p->run_link;
    // Unlinked before the push: once in the ring it may be stolen and run.
    p->run_link = nullptr;
    if (!into.push(p)) {
      p->run_link = next;  // full: it stays here
      break;
    }
    head_ = next;
    ++n;
  }
  if (!head_) tail_ = nullptr;
  size_.fetch_sub(n, std::memory_order_relaxed);
  first->run_link = nullptr;
  return first;
}

// ------------------------------------------------------------- scheduler

scheduler::scheduler(runtime_node& r, unsigned i, bool is_spare)
    : rt(r), index(i), spare(is_spare), rng_(0x9E3779B97F4A7C15ull * (i + 1)) {}

__attribute__((noinline)) scheduler* scheduler::current() noexcept { return tl_scheduler; }

void scheduler::start() { thread_ = std::thread([this] { loop(); }); }

void scheduler::join() {
  if (thread_.joinable()) thread_.join();
}

void scheduler::push_back(process* p) noexcept {
  if (!rq.push(p)) {
    // Ring full: move half of it, and p, to the global queue (Go's
    // runqputslow), in pieces: this may run on a process's small stack.
    constexpr std::uint32_t piece = 64;
    process* batch[piece + 1];
    for (std::uint32_t moved = 0; moved < run_queue::capacity / 2;) {
      std::uint32_t n = rq.take_oldest(batch, piece);
      if (n == 0) break;
      moved += n;
      rt.global.push_batch(batch, n);
    }
    batch[0] = p;
    rt.global.push_batch(batch, 1);
  }
  rt.wake_if_needed();
}

void scheduler::tick_create() noexcept {
  if (rt.options.time_slice.count() == 0 || !rt.preempt_handler_installed || !async_preemption_supported()) return;
  sigevent ev{};
  ev.sigev_notify = SIGEV_THREAD_ID;
  ev.sigev_signo = SIGURG;
  ev.sigev_value.sival_ptr = this;
  ev._sigev_un._tid = pid_t(::gettid());
  timer_t t;
  if (::timer_create(CLOCK_MONOTONIC, &ev, &t) == 0) {
    tick_timer = t;
    has_tick_ = true;
  }
}

void scheduler::tick_arm(bool on) noexcept {
  if (!has_tick_) return;
  itimerspec spec{};
  if (on) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(rt.options.time_slice).count();
    spec.it_interval.tv_sec = time_t(ns / 1'000'000'000);
    spec.it_interval.tv_nsec = long(ns % 1'000'000'000);
    spec.it_value = spec.it_interval;
  }
  ::timer_settime(static_cast<timer_t>(tick_timer), 0, &spec, nullptr);
  tick_armed.store(on, std::memory_order_relaxed);
}

void scheduler::hand_off_next() noexcept {
  process* p = rq.take_next();
  if (p && !rq.push(p)) {
    rq.put_next(p);  // ring full: it stays (no lock may be taken here)
    return;
  }
  // Pinned processes too: one of them may hold the very lock this thread
  // is blocked on (a std::mutex taken in process code, then preempted).
  // Unpinned, it may resume on another thread (see preempt.cpp on TLS).
  while (pinned_head_) {
    process* q = pinned_head_;
    process* rest = q->run_link;
    // Unpinned before it is published: once in the ring another thread may
    // steal and run it at once (ThreadSanitizer saw that race).
    q->run_link = nullptr;
    q->pinned = false;
    if (!rq.push(q)) {
      q->pinned = true;  // ring full: it stays pinned, unseen by others
      q->run_link = rest;
      return;
    }
    pinned_head_ = rest;
    if (!pinned_head_) pinned_tail_ = nullptr;
  }
}

void scheduler::push_next(process* p) noexcept {
  if (process* displaced = rq.put_next(p)) push_back(displaced);
}

void scheduler::loop() {
  tl_scheduler = this;
  tid.store(pid_t(::gettid()), std::memory_order_relaxed);
  set_current_node(&rt);
  home_.tsan_fiber = sanitizers::current_fiber();
  eh_ = thread_eh();  // per thread, fixed: look it up once
  signal_stack alt = make_signal_stack();  // where the signal handlers run
  tick_create();
  if (!spare) {
    while (process* p = find_work()) execute(p);
  } else {
    // Asleep until the monitor finds a scheduler blocked; back to sleep
    // once none is (retire_spare).
    for (;;) {
      spare_word.wait(0, std::memory_order_acquire);
      spare_word.store(0, std::memory_order_relaxed);
      if (rt.sched_stop.load(std::memory_order_acquire)) break;
      spinning_ = true;  // the activation counted us as spinning
      while (process* p = find_work()) execute(p);
      if (rt.sched_stop.load(std::memory_order_acquire)) break;
    }
  }
  if (has_tick_) {
    tick_arm(false);
    ::timer_delete(static_cast<timer_t>(tick_timer));
  }
  drop_signal_stack(alt);
  rt.stacks.drain(stacks);
  rt.table.drain(slots);
  envelope_cache_release();
  set_current_node(nullptr);
  tl_scheduler = nullptr;
}

process* scheduler::take_next() noexcept {
  process* p = rq.take_next();
  if (!p) return nullptr;
  if (++next_streak_ <= max_next_streak) return p;
  // Processes handing the core to each other through `next` would starve
  // the ring for ever (their reductions restart at every switch); after a
  // streak, the woken one goes to the tail like everybody else (Go has the
  // run-next process inherit the time slice for the same reason).
  next_streak_ = 0;
  push_back(p);
  return nullptr;
}

process* scheduler::take_global() noexcept {
  // Go's globrunqget: one turn a batch, a share of the queue (half of an
  // even split, so that other idle schedulers find some; at most half a
  // ring). One process per 61 turns left a ring that overflowed
  // under many sockets starving what it had spilled there (W11's tail).
  std::size_t share = rt.global.size() / (2 * rt.primaries()) + 1;
  std::uint32_t max = std::uint32_t(std::min<std::size_t>(share, run_queue::capacity / 2));
  return rt.global.pop_batch(rq, max);
}

process* scheduler::local_work() noexcept {
  // Every 61st turn the queues nobody else drains come first, so that a
  // busy ring cannot starve them: the global queue, and the inbox of
  // processes spawned onto this scheduler.
  if (++tick_ % 61 == 0) {
    rt.poll_io();  // sockets that became ready (see io_poller.hpp)
    if (process* p = take_global()) return p;
    if (process* p = inbox.pop()) return p;
  }
  if (process* p = take_next()) return p;
  next_streak_ = 0;
  // Preempted processes take every other turn with the ring.
  if (pinned_head_ && (pinned_first_ = !pinned_first_)) return pop_pinned();
  if (process* p = rq.pop()) return p;
  if (pinned_head_) return pop_pinned();
  if (process* p = inbox.pop()) return p;
  return take_global();
}

void scheduler::push_pinned(process* p) noexcept {
  p->run_link = nullptr;
  if (pinned_tail_) pinned_tail_->run_link = p; else pinned_head_ = p;
  pinned_tail_ = p;
}

process* scheduler::pop_pinned() noexcept {
  process* p = pinned_head_;
  pinned_head_ = p->run_link;
  if (!pinned_head_) pinned_tail_ = nullptr;
  p->run_link = nullptr;
  return p;
}

bool scheduler::spare_should_retire() const noexcept {
  return spare && !pinned_head_ && rt.blocked_count.load(std::memory_order_acquire) == 0;
}

void scheduler::retire_spare() noexcept {
  // What it holds goes to the global queue, for the primaries.
  process* batch[run_queue::capacity + 1];
  std::uint32_t n = 0;
  if (process* p = rq.take_next()) batch[n++] = p;
  while (process* p = rq.pop()) batch[n++] = p;
  rt.global.push_batch(batch, n);
  // So do the free slots and stacks it kept from processes that ended
  // here: asleep, it would hold them until the runtime stops (a dead
  // process's slot never reused, up to 4096 per spare).
  if (!slots.free.empty()) rt.table.drain(slots);
  if (stacks.head) rt.stacks.drain(stacks);
  stop_spinning();
  {
    std::lock_guard lock(rt.idle_mu_);
    spare_active = false;
    rt.active.fetch_sub(1, std::memory_order_seq_cst);
  }
  rt.spare_retirements_.fetch_add(1, std::memory_order_relaxed);
  rt.wake_if_needed();
}

process* scheduler::steal_work() noexcept {
  // Primaries and the spares started so far (they start in index order; the
  // rest have never held a process).
  std::size_t n = rt.primaries_ + rt.spares_started.load(std::memory_order_acquire);
  if (n < 2) return nullptr;
  // xorshift: a random starting victim spreads thieves out.
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  std::size_t start = rng_ % n;
  for (std::size_t k = 0; k < n; ++k) {
    scheduler& victim = *rt.scheds[(start + k) % n];
    if (&victim == this) continue;
    if (process* p = rq.steal_from(victim.rq)) {
      steals.fetch_add(1, std::memory_order_relaxed);
      return p;
    }
    // A blocked scheduler's inbox is nobody's until its turn ends.
    if (victim.blocked.load(std::memory_order_relaxed))
      if (process* p = victim.inbox.pop()) return p;
  }
  return nullptr;
}

void scheduler::stop_spinning() noexcept {
  if (!spinning_) return;
  spinning_ = false;
  // The last spinner to find work wakes another, so that a burst of work
  // is spread while it lasts.
  if (rt.spinning.fetch_sub(1, std::memory_order_seq_cst) == 1) rt.wake_if_needed();
}

process* scheduler::find_work() noexcept {
  for (;;) {
    if (rt.sched_stop.load(std::memory_order_acquire)) {
      stop_spinning();
      return nullptr;
    }
    if (spare && spare_should_retire()) {
      retire_spare();
      return nullptr;
    }
    if (process* p = local_work()) {
      stop_spinning();
      return p;
    }
    if (rt.poll_io()) continue;
    if (!spinning_) {
      spinning_ = true;
      rt.spinning.fetch_add(1, std::memory_order_seq_cst);
    }
    auto until = std::chrono::steady_clock::now() + spin_time;
    do {
      if (process* p = steal_work()) {
        stop_spinning();
        return p;
      }
      if (process* p = inbox.pop()) {
        stop_spinning();
        return p;
      }
      if (process* p = take_global()) {
        stop_spinning();
        return p;
      }
      if (rt.poll_io()) break;
      for (int i = 0; i < 32; ++i) cpu_relax();
    } while (std::chrono::steady_clock::now() < until && !rt.sched_stop.load(std::memory_order_relaxed));
    if (!rq.empty() || pinned_head_) continue;
    if (tick_armed.load(std::memory_order_relaxed)) tick_arm(false);
    if (spare && spare_should_retire()) continue;
    spinning_ = false;
    rt.spinning.fetch_sub(1, std::memory_order_seq_cst);
    if (rt.park(*this)) {
      spinning_ = true;  // the waker counted us as spinning
    }
  }
}

void scheduler::resume(process* p) noexcept {
  eh_globals* eh = static_cast<eh_globals*>(eh_);
  eh_globals saved = *eh;
  eh->caught = p->eh_caught;
  eh->uncaught = p->eh_uncaught;
  set_current_process(p);
  sanitizers::start_switch(&home_.asan_fake, p->stk->bottom(), p->stk->usable(), p->stk->tsan_fiber);
  p->obs_state.store(obs_running, std::memory_order_relaxed);
  running.store(p, std::memory_order_relaxed);
  turn.store(turn.load(std::memory_order_relaxed) + 1, std::memory_order_release);  // odd: running
  transfer_t t = boost::context::detail::jump_fcontext(p->ctx, &home_);
  turn.store(turn.load(std::memory_order_relaxed) + 1, std::memory_order_release);  // even: between turns
  sanitizers::finish_switch(home_.asan_fake, nullptr, nullptr);
  p->ctx = t.fctx;
  set_current_process(nullptr);
  p->obs_stack_bytes.store(std::uint32_t(static_cast<const char*>(p->stk->top()) - static_cast<const char*>(t.fctx)),
                           std::memory_order_relaxed);
  p->obs_state.store(p->why == suspend_reason::yield || p->why == suspend_reason::preempted ? obs_runnable
                     : p->why == suspend_reason::exited || p->why == suspend_reason::abandoned ? obs_exiting
                                                                                               : obs_waiting,
                     std::memory_order_relaxed);
  if (blocked.load(std::memory_order_relaxed)) rt.scheduler_unblocked(*this);
  p->eh_caught = eh->caught;
  p->eh_uncaught = eh->uncaught;
  *eh = saved;
}

void scheduler::execute(process* p) noexcept {
  for (;;) {
    if (!p->ctx) {
      if (!p->stk) {
        try {
          p->stk = rt.stacks.get(stacks, p->stack_request);
        } catch (const std::exception& e) {
          // No stack for a handler turn: the process ends, visibly.
          set_current_process(p);
          exit_without_stack(rt, p, exit_reason::system_limit(e.what()));
          set_current_process(nullptr);
          release_ref(rt, p);
          rt.process_exited();
          return;
        }
      }
      p->ctx = boost::context::detail::make_fcontext(p->stk->top(), p->stk->usable(),
                                                     p->body->is_handler ? handler_entry : function_entry);
    }
    resume(p);
    if (p->why == suspend_reason::preempted) {
      p->pinned = true;
      push_pinned(p);
      preemptions.store(preemptions.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      ticks_idle.store(0, std::memory_order_relaxed);
      if (!tick_armed.load(std::memory_order_relaxed)) tick_arm(true);
      return;
    }
    // No preemption for 64 ticks: the hog is gone, so is the tick.
    if (tick_armed.load(std::memory_order_relaxed) && ticks_idle.load(std::memory_order_relaxed) > 64)
      tick_arm(false);
    p->pinned = false;
    switch (p->why) {
      case suspend_reason::preempted:
        break;  // above
      case suspend_reason::yield:
        push_back(p);
        return;
      case suspend_reason::wait:
        if (p->mbox.try_wait() == mailbox::wait_outcome::waiting) {
          // The process it woke, if any, runs now (the common case of two
          // processes talking), without going round find_work.
          if (process* next = take_next()) {
            p = next;
            continue;
          }
          return;
        }
        continue;  // a message arrived meanwhile: run on
      case suspend_reason::idle: {
        stack* s = p->stk;
        p->stk = nullptr;
        p->ctx = nullptr;
        p->obs_stack_bytes.store(0, std::memory_order_relaxed);
        if (p->mbox.try_wait() == mailbox::wait_outcome::waiting) {
          rt.stacks.put(stacks, s);
          return;
        }
        p->stk = s;
        continue;  // new messages: a fresh turn on the same stack
      }
      case suspend_reason::exited: {
        stack* s = p->stk;
        p->stk = nullptr;
        p->ctx = nullptr;
        rt.stacks.put(stacks, s);
        release_heap(p);
        release_ref(rt, p);
        rt.process_exited();
        return;
      }
      case suspend_reason::abandoned: {
        // Its frames are dropped, not unwound: the exit path runs here.
        stack* s = p->stk;
        fault_info fault{s->fault_signal, s->fault_address, s->fault_overflow};
        s->fault_signal = 0;
        s->fault_address = nullptr;
        s->fault_overflow = false;
        p->stk = nullptr;
        p->ctx = nullptr;
        sanitizers::forget_stack(s->bottom(), s->usable());
        // ThreadSanitizer's shadow call stack of that fiber still holds the
        // dropped frames: the next process on this stack gets a fresh fiber.
        sanitizers::destroy_fiber(s->tsan_fiber);
        s->tsan_fiber = sanitizers::create_fiber();
        rt.stacks.put(stacks, s);
        set_current_process(p);
        end_abandoned(rt, p, fault);
        set_current_process(nullptr);
        release_ref(rt, p);
        rt.process_exited();
        return;
      }
    }
  }
}

// ------------------------------------------------------------------ node

runtime_node::runtime_node(const runtime_options& o)
    : node(o), os_pid(::getpid()), timers_(*this), blocking_(*this, o.blocking_threads), poller_(*this, int(o.io_backend)) {
  install_fault_handlers();
  if (o.time_slice.count() != 0) preempt_handler_installed = install_preempt_handler();
  if (o.quarantine_dead_heaps) heap_quarantine_enable();
  primaries_ = options.schedulers;
  // Spares, if blocked schedulers are handed off: their threads start on
  // first use. As many as 64 (with primaries), since a spare can block too:
  // processes contending for an OS mutex held by a preempted one each take
  // a thread until one runs the holder.
  unsigned spares = o.blocked_after.count() != 0 ? std::max(64u, primaries_) : 0;
  for (unsigned i = 0; i < primaries_ + spares; ++i)
    scheds.push_back(std::make_unique<scheduler>(*this, i, i >= primaries_));
  active.store(int(primaries_), std::memory_order_relaxed);
  for (auto& s : scheds)
    if (!s->spare) s->start();
  if (o.time_slice.count() != 0 || o.blocked_after.count() != 0) monitor_ = std::thread([this] { monitor_loop(); });
}

runtime_node::~runtime_node() { shutdown(); }

process_table::slot_cache* runtime_node::local_slots() noexcept {
  scheduler* s = scheduler::current();
  return (s && &s->rt == this) ? &s->slots : nullptr;
}

stack_pool::cache* runtime_node::local_stacks() noexcept {
  scheduler* s = scheduler::current();
  return (s && &s->rt == this) ? &s->stacks : nullptr;
}

void runtime_node::make_runnable(process* p, int hint) noexcept {
  p->obs_state.store(obs_runnable, std::memory_order_relaxed);
  scheduler* s = scheduler::current();
  if (s && &s->rt != this) s = nullptr;
  if (hint >= 0) {
    // Through the inbox even when it is our own: the ring can be stolen from.
    scheduler& target = *scheds[hint];
    target.inbox.push(p);
    wake(target);
    return;
  }
  if (s) {
    s->push_next(p);
    return;
  }
  global.push(p);
  wake_if_needed();
}

void runtime_node::wake_if_needed() noexcept {
  full_barrier();
  if (idle.load(std::memory_order_relaxed) == 0 || spinning.load(std::memory_order_relaxed) != 0) return;
  scheduler* s = nullptr;
  bool in_poll = false;
  {
    std::lock_guard lock(idle_mu_);
    if (idle_list_.empty()) return;
    s = idle_list_.back();
    idle_list_.pop_back();
    idle.fetch_sub(1, std::memory_order_relaxed);
    spinning.fetch_add(1, std::memory_order_seq_cst);
    s->parked = false;
    s->woken = true;
    in_poll = s->in_poll;
  }
  unpark(*s, in_poll);
}

void runtime_node::unpark(scheduler& s, bool in_poll) noexcept {
  if (in_poll) {
    poller_.interrupt();
  } else {
    s.wake_word.store(1, std::memory_order_release);
    s.wake_word.notify_one();
  }
  wake_monitor();
}

void runtime_node::wake(scheduler& s) noexcept {
  bool in_poll;
  {
    std::lock_guard lock(idle_mu_);
    if (!s.parked) return;  // running or spinning: it will look at its inbox
    idle_list_.erase(std::find(idle_list_.begin(), idle_list_.end(), &s));
    idle.fetch_sub(1, std::memory_order_relaxed);
    spinning.fetch_add(1, std::memory_order_seq_cst);
    s.parked = false;
    s.woken = true;
    in_poll = s.in_poll;
  }
  unpark(s, in_poll);
}

bool runtime_node::work_visible() const noexcept {
  if (!global.empty()) return true;
  for (auto& s : scheds)
    if (s->rq.size() != 0 || !s->inbox.empty()) return true;
  return false;
}

bool runtime_node::park(scheduler& s) noexcept {
  // An idle scheduler spawns nothing: its free slots and stacks are better
  // off where busy schedulers (and other threads) can take them.
  if (!s.slots.free.empty()) table.drain(s.slots);
  if (s.stacks.head) stacks.drain(s.stacks);
  // One parked scheduler waits in epoll_wait when sockets are open, so that
  // I/O wakes an idle runtime (io_poller.hpp); the others on their futex.
  bool poll = false;
  if (poller_.registered() != 0) {
    bool taken = false;
    poll = poller_.blocker_taken.compare_exchange_strong(taken, true, std::memory_order_acq_rel);
  }
  {
    std::lock_guard lock(idle_mu_);
    s.parked = true;
    s.woken = false;
    s.in_poll = poll;
    idle_list_.push_back(&s);
    idle.fetch_add(1, std::memory_order_relaxed);
  }
  full_barrier();
  if (work_visible() || sched_stop.load(std::memory_order_acquire)) {
    std::lock_guard lock(idle_mu_);
    s.in_poll = false;
    if (poll) poller_.blocker_taken.store(false, std::memory_order_release);
    if (s.parked) {
      idle_list_.erase(std::find(idle_list_.begin(), idle_list_.end(), &s));
      idle.fetch_sub(1, std::memory_order_relaxed);
      s.parked = false;
      return false;
    }
    s.woken = false;
    s.wake_word.store(0, std::memory_order_relaxed);
    return true;  // a waker got to us first and counted us as spinning
  }
  if (poll) {
    // Until an event or an interrupt (a waker). The processes the events
    // wake are queued here; then this scheduler goes looking for work,
    // counted as a spinner (a waker may have counted it already).
    poller_.poll(-1);
    std::lock_guard lock(idle_mu_);
    s.in_poll = false;
    poller_.blocker_taken.store(false, std::memory_order_release);
    if (s.parked) {
      idle_list_.erase(std::find(idle_list_.begin(), idle_list_.end(), &s));
      idle.fetch_sub(1, std::memory_order_relaxed);
      s.parked = false;
      spinning.fetch_add(1, std::memory_order_seq_cst);
    } else {
      s.woken = false;
    }
    return true;
  }
  for (;;) {
    s.wake_word.wait(0, std::memory_order_acquire);
    std::lock_guard lock(idle_mu_);
    if (s.woken) {
      s.woken = false;
      s.wake_word.store(0, std::memory_order_relaxed);
      return true;
    }
    s.wake_word.store(0, std::memory_order_relaxed);
  }
}

std::uint64_t runtime_node::arm_timer(std::chrono::nanoseconds delay, pid to, envelope* e) {
  return timers_.arm(delay, to, e);
}

bool runtime_node::cancel_timer(std::uint64_t id) noexcept { return timers_.cancel(id); }

void runtime_node::cancel_timers_for(pid p) noexcept { timers_.cancel_for(p); }

void runtime_node::count_spawn() noexcept {
  scheduler* s = scheduler::current();
  if (s && &s->rt == this) {
    s->spawned.store(s->spawned.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  } else {
    spawned_outside.fetch_add(1, std::memory_order_relaxed);
  }
}

void runtime_node::process_exited() noexcept {
  if (live.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard lock(done_mu_);
    done_cv_.notify_all();
  }
}

void runtime_node::wait() {
  std::unique_lock lock(done_mu_);
  done_cv_.wait(lock, [&] { return live.load(std::memory_order_acquire) == 0; });
}

bool runtime_node::wait_for(std::chrono::nanoseconds limit) {
  std::unique_lock lock(done_mu_);
  return done_cv_.wait_for(lock, limit, [&] { return live.load(std::memory_order_acquire) == 0; });
}

void runtime_node::shutdown() {
  if (shut_down_.exchange(true)) return;
  stopping.store(true, std::memory_order_seq_cst);
  // Kill everything alive; repeat, in case a spawn raced with the scan.
  while (live.load(std::memory_order_acquire) != 0) {
    std::uint32_t hw = table.high_water();
    for (std::uint32_t slot = 0; slot < hw; ++slot) {
      process* p = table.at(slot);
      std::uint64_t l = p->life.load(std::memory_order_acquire);
      if (!(l & process::alive_bit)) continue;
      pid id(table.node_id(), slot, std::uint32_t(l >> 32) & process_table::gen_mask);
      deliver(*this, id, make_signal(sig_exit, {pid(), {}, exit_reason::kill(), false, 0}));
    }
    wait_for(std::chrono::milliseconds(100));
  }
  sched_stop.store(true, std::memory_order_seq_cst);
  {
    std::lock_guard lock(idle_mu_);
    for (scheduler* s : idle_list_) {
      s->parked = false;
      s->woken = true;
      if (s->in_poll) poller_.interrupt();
      s->wake_word.store(1, std::memory_order_release);
      s->wake_word.notify_one();
    }
    idle_list_.clear();
    idle.store(0, std::memory_order_relaxed);
  }
  for (auto& s : scheds) {
    if (!s->spare) continue;
    s->spare_word.store(1, std::memory_order_release);
    s->spare_word.notify_one();
  }
  {
    std::lock_guard lock(idle_mu_);  // no spare starts from now on (scheduler_blocked)
    spares_closed_ = true;
  }
  for (auto& s : scheds) s->join();
  monitor_stop_.store(true, std::memory_order_release);
  wake_monitor();
  if (monitor_.joinable()) monitor_.join();
  timers_.stop();
  blocking_.stop();  // waits for the calls that are running
}

void runtime_node::count_reduction_yield() noexcept {
  scheduler* s = scheduler::current();
  if (s && &s->rt == this)
    s->reduction_yields.store(s->reduction_yields.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void runtime_node::scheduler_blocked(scheduler& s) noexcept {
  s.blocked.store(true, std::memory_order_seq_cst);
  blocked_count.fetch_add(1, std::memory_order_seq_cst);
  schedulers_blocked_.fetch_add(1, std::memory_order_relaxed);
  scheduler* spare = nullptr;
  {
    std::lock_guard lock(idle_mu_);
    for (auto& c : scheds) {
      if (c->spare && !c->spare_active && !spares_closed_) {
        if (!c->started()) {
          try {
            c->start();
          } catch (const std::exception&) {
            return;  // no thread to be had: the blocked scheduler's work waits for it
          }
          spares_started.fetch_add(1, std::memory_order_release);
        }
        spare = c.get();
        spare->spare_active = true;
        active.fetch_add(1, std::memory_order_seq_cst);
        spinning.fetch_add(1, std::memory_order_seq_cst);  // it starts as a spinner
        break;
      }
    }
  }
  if (!spare) return;  // every spare is already at work
  spare_activations_.fetch_add(1, std::memory_order_relaxed);
  spare->spare_word.store(1, std::memory_order_release);
  spare->spare_word.notify_one();
}

void runtime_node::scheduler_unblocked(scheduler& s) noexcept {
  if (!s.blocked.exchange(false, std::memory_order_seq_cst)) return;
  if (blocked_count.fetch_sub(1, std::memory_order_seq_cst) != 1) return;
  // The last blocked scheduler is back: parked spares wake up to retire.
  std::vector<scheduler*> to_wake;
  {
    std::lock_guard lock(idle_mu_);
    for (auto& c : scheds)
      if (c->spare && c->spare_active && c->parked) to_wake.push_back(c.get());
  }
  for (scheduler* c : to_wake) wake(*c);
}

runtime_stats runtime_node::stats() const {
  runtime_stats st;
  st.processes = std::size_t(std::max<std::int64_t>(0, live.load(std::memory_order_acquire)));
  st.spawned = spawned_outside.load(std::memory_order_relaxed);
  for (auto& s : scheds) st.spawned += s->spawned.load(std::memory_order_relaxed);
  st.exited = st.spawned >= st.processes ? st.spawned - st.processes : 0;
  std::size_t pooled = stacks.pooled_shared();
  for (auto& s : scheds) pooled += s->stacks.count.load(std::memory_order_relaxed);
  std::size_t mapped = stacks.mapped();
  st.stacks_pooled = pooled;
  st.stacks_in_use = mapped >= pooled ? mapped - pooled : 0;
  st.timers_pending = timers_.pending();
  for (auto& s : scheds) {
    st.steals += s->steals.load(std::memory_order_relaxed);
    st.preemptions += s->preemptions.load(std::memory_order_relaxed);
    st.preempt_deferred += s->preempt_deferred.load(std::memory_order_relaxed);
    st.reduction_yields += s->reduction_yields.load(std::memory_order_relaxed);
  }
  st.preempt_signals = preempt_signals_.load(std::memory_order_relaxed);
  st.schedulers_blocked = schedulers_blocked_.load(std::memory_order_relaxed);
  st.spare_activations = spare_activations_.load(std::memory_order_relaxed);
  st.spare_retirements = spare_retirements_.load(std::memory_order_relaxed);
  st.names = names.size();
  st.sockets_open = poller_.registered();
  st.io_backend = poller_.backend();
  heap_pool_stats hp = heap_pool_statistics();
  st.heap_segments_free = hp.segments_free;
  st.heap_segments_in_use = hp.segments_mapped - hp.segments_free;
  return st;
}

}  // namespace ember::detail
