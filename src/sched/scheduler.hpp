// Schedulers and the node that owns them (see scheduler.cpp for the design).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/node.hpp"
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
  bool empty() const noexcept { return size_.load(std::memory_order_acquire) == 0; }

 private:
  std::mutex mu_;
  process* head_ = nullptr;
  process* tail_ = nullptr;
  std::atomic<std::size_t> size_{0};
};

class scheduler {
 public:
  scheduler(runtime_node& rt, unsigned index);
  void start();
  void join();

  // The calling thread's scheduler, or nullptr (non-inlined: see process.hpp).
  static scheduler* current() noexcept;

  // Owner-thread operations.
  void push_next(process* p) noexcept;
  void push_back(process* p) noexcept;

  runtime_node& rt;
  const unsigned index;
  run_queue rq;
  shared_queue inbox;  // processes sent here by other threads (spawn hints)
  process_table::slot_cache slots;
  stack_pool::cache stacks;
  std::atomic<std::uint64_t> steals{0};
  std::atomic<std::uint64_t> spawned{0};  // written by the owner only

  // Parking: guarded by runtime_node::idle_mu_.
  bool parked = false;
  bool woken = false;
  std::atomic<std::uint32_t> wake_word{0};

 private:
  void loop();
  process* find_work() noexcept;
  process* local_work() noexcept;
  process* take_next() noexcept;
  process* steal_work() noexcept;
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
};

class runtime_node final : public node {
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

  void wait();
  bool wait_for(std::chrono::nanoseconds limit);
  void shutdown();
  runtime_stats stats() const;

  // Wakes a parked scheduler if work was queued and nobody is spinning.
  void wake_if_needed() noexcept;
  void wake(scheduler& s) noexcept;
  // Parks the calling scheduler unless work shows up; false if stopping.
  bool park(scheduler& s) noexcept;
  bool work_visible() const noexcept;

  std::vector<std::unique_ptr<scheduler>> scheds;
  shared_queue global;
  std::atomic<int> spinning{0};
  std::atomic<int> idle{0};
  std::atomic<bool> sched_stop{false};

 private:
  std::mutex idle_mu_;
  std::vector<scheduler*> idle_list_;
  timer_service timers_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  std::atomic<bool> shut_down_{false};
};

}  // namespace ember::detail
