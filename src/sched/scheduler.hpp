// Schedulers and the node that owns them (see scheduler.cpp for the design).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/node.hpp"
#include "sched/blocking_pool.hpp"
#include "sched/io_poller.hpp"
#include "sched/run_queue.hpp"
#include "sched/timer_service.hpp"

namespace ember::detail {

class runtime_node;

// A FIFO of processes shared between threads, linked through run_link.
class shared_queue {
 public:
  void push(process* p) noexcept;
  void push_batch(process** ps, std::uint32_t n) noexcept;
  process* pop() noexcept;
  // Pops one and moves up to max - 1 more into `into` (its owner calls).
  process* pop_batch(run_queue& into, std::uint32_t max) noexcept;
  std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }
  bool empty() const noexcept { return size_.load(std::memory_order_acquire) == 0; }

 private:
  std::mutex mu_;
  process* head_ = nullptr;
  process* tail_ = nullptr;
  std::atomic<std::size_t> size_{0};
};

class scheduler {
 public:
  scheduler(runtime_node& rt, unsigned index, bool spare);
  void start();
  void join();
  bool started() const noexcept { return thread_.joinable(); }

  // The calling thread's scheduler, or nullptr (non-inlined: see process.hpp).
  static scheduler* current() noexcept;

  // Owner-thread operations.
  void push_next(process* p) noexcept;
  void push_back(process* p) noexcept;
  // The global queue's head, and a fair share of the rest into the ring.
  process* take_global() noexcept;
  // From the preemption signal handler of this scheduler's own thread,
  // while it is blocked outside the program's code: the `next` process and
  // the pinned ones move to the ring, where others can steal them.
  void hand_off_next() noexcept;

  runtime_node& rt;
  const unsigned index;
  run_queue rq;
  shared_queue inbox;  // processes sent here by other threads (spawn hints)
  process_table::slot_cache slots;
  stack_pool::cache stacks;
  std::atomic<std::uint64_t> steals{0};
  // Observed: the process of the current (or last) turn, and the time
  // spent in turns, both sampled by the monitor thread (observe::sample).
  std::atomic<process*> running{nullptr};
  std::atomic<std::uint64_t> busy_ns{0};
  // Messages taken into mailboxes and reductions spent by its processes.
  std::uint64_t messages_in() const noexcept { return home_.messages_in.load(std::memory_order_relaxed); }
  std::uint64_t reductions_spent() const noexcept { return home_.reductions.load(std::memory_order_relaxed); }
  std::atomic<std::uint64_t> spawned{0};  // written by the owner only

  // Preemption (preempt.cpp). turn: odd while a process runs, bumped by
  // the owner around every turn; the monitor asks for the preemption of
  // one turn by writing it to preempt_turn and signalling thread tid.
  std::atomic<std::uint64_t> turn{0};
  std::atomic<std::uint64_t> preempt_turn{0};
  std::atomic<pid_t> tid{0};
  // Counters, written by the owner thread (and its signal handler) only.
  std::atomic<std::uint64_t> preemptions{0};
  std::atomic<std::uint64_t> preempt_deferred{0};
  std::atomic<std::uint64_t> reduction_yields{0};
  // Set by the monitor when one turn has lasted blocked_after; cleared by
  // the owner when that turn ends.
  std::atomic<bool> blocked{false};
  // The preemption tick (preempt.cpp): a kernel timer that signals this
  // thread every time slice while it runs processes that needed preempting
  // (CPU hogs), so that their preemption does not wait for the monitor
  // thread to be scheduled. tick_turn and ticks_idle belong to the handler.
  std::atomic<bool> tick_armed{false};
  std::atomic<std::uint64_t> tick_turn{0};
  std::atomic<std::uint32_t> ticks_idle{0};
  const bool spare;  // a spare thread, active only while a scheduler is blocked

  // Parking: guarded by runtime_node::idle_mu_.
  bool parked = false;
  bool woken = false;
  bool in_poll = false;  // parked in epoll_wait, not on wake_word
  std::atomic<std::uint32_t> wake_word{0};

 private:
  void loop();
  process* find_work() noexcept;
  process* local_work() noexcept;
  process* take_next() noexcept;
  process* steal_work() noexcept;
  void push_pinned(process* p) noexcept;
  process* pop_pinned() noexcept;
  bool spare_should_retire() const noexcept;
  void retire_spare() noexcept;
  void tick_create() noexcept;
  void tick_arm(bool on) noexcept;
  void execute(process* p) noexcept;
  void resume(process* p) noexcept;
  void stop_spinning() noexcept;

  switch_point home_;
  void* eh_ = nullptr;  // this thread's C++ exception globals
  bool spinning_ = false;
  static constexpr unsigned max_next_streak = 256;
  unsigned next_streak_ = 0;  // consecutive runs through `next`
  std::uint64_t tick_ = 0;
  std::uint64_t rng_;
  std::thread thread_;
  // Preempted processes, pinned here (owner only; never stolen).
  process* pinned_head_ = nullptr;
  process* pinned_tail_ = nullptr;
  bool pinned_first_ = false;  // alternates the pinned queue with the ring
  bool has_tick_ = false;

 public:
  void* tick_timer = nullptr;  // timer_t (glibc: the kernel's id, 0 included); see has_tick_

 public:
  // Spare activation (guarded by runtime_node::idle_mu_ / spare_word).
  bool spare_active = false;
  std::atomic<std::uint32_t> spare_word{0};
};

// The calling thread's scheduler (nullptr elsewhere); read directly by the
// preemption signal handler.
extern constinit __attribute__((tls_model("initial-exec"))) thread_local scheduler* tl_scheduler;

// preempt.cpp: the SIGURG handler (installed once per OS process; false if
// it could not be) and whether this machine supports interrupting code.
bool install_preempt_handler();
bool async_preemption_supported() noexcept;

class runtime_node final : public node {
  friend class scheduler;

 public:
  explicit runtime_node(const runtime_options& o);
  ~runtime_node() override;

  void make_runnable(process* p, int hint) noexcept override;
  process_table::slot_cache* local_slots() noexcept override;
  stack_pool::cache* local_stacks() noexcept override;
  std::uint64_t arm_timer(std::chrono::nanoseconds delay, pid to, envelope* e) override;
  bool cancel_timer(std::uint64_t id) noexcept override;
  void cancel_timers_for(pid p) noexcept override;
  void process_exited() noexcept override;
  void count_spawn() noexcept override;
  void count_reduction_yield() noexcept override;

  void wait();
  bool wait_for(std::chrono::nanoseconds limit);
  void shutdown();
  runtime_stats stats() const;
  blocking_pool& blocking() noexcept { return blocking_; }
  io_poller& poller() noexcept { return poller_; }

  // Wakes a parked scheduler if work was queued and nobody is spinning.
  void wake_if_needed() noexcept;
  void wake(scheduler& s) noexcept;
  // Parks the calling scheduler unless work shows up; false if stopping.
  bool park(scheduler& s) noexcept;
  // Ends the park of s, chosen under idle_mu_ (futex or the poller's eventfd).
  void unpark(scheduler& s, bool in_poll) noexcept;
  // Polls I/O without blocking if any descriptor is registered; true if
  // there were events.
  bool poll_io() noexcept { return poller_.registered() != 0 && poller_.poll(0) > 0; }
  unsigned primaries() const noexcept { return primaries_; }
  bool work_visible() const noexcept;

  std::vector<std::unique_ptr<scheduler>> scheds;  // primaries, then spares
  unsigned primaries_ = 0;
  std::atomic<unsigned> spares_started{0};
  std::atomic<int> active{0};         // primaries + active spares
  std::atomic<int> blocked_count{0};  // schedulers marked blocked now
  const pid_t os_pid;
  const std::chrono::steady_clock::time_point started_at = std::chrono::steady_clock::now();
  bool preempt_handler_installed = false;

  // Monitor (preempt.cpp).
  void monitor_loop();
  void wake_monitor() noexcept;
  void scheduler_blocked(scheduler& s) noexcept;
  void scheduler_unblocked(scheduler& s) noexcept;
  shared_queue global;
  std::atomic<int> spinning{0};
  std::atomic<int> idle{0};
  std::atomic<bool> sched_stop{false};

 private:
  std::mutex idle_mu_;
  std::vector<scheduler*> idle_list_;
  timer_service timers_;
  blocking_pool blocking_;
  io_poller poller_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  std::atomic<bool> shut_down_{false};
  bool spares_closed_ = false;  // shutting down (guarded by idle_mu_)
  std::thread monitor_;
  std::atomic<bool> monitor_stop_{false};
  std::atomic<std::uint32_t> monitor_word_{0};
  std::atomic<std::uint64_t> preempt_signals_{0};
  std::atomic<std::uint64_t> schedulers_blocked_{0};
  std::atomic<std::uint64_t> spare_activations_{0};
  std::atomic<std::uint64_t> spare_retirements_{0};
};

struct runtime_access {
  static runtime_node& of(ember::runtime& rt) noexcept;
};

}  // namespace ember::detail
