// Timers of one node: send_after, receive timeouts, sleep_for.
//
// One timer thread sleeps on a condition variable until the earliest
// deadline, then delivers the due envelopes through the ordinary send path
// (a receive timeout is a signal envelope, so it wakes its process like any
// message). Entries are indexed by deadline (ordered set), by id (cancel)
// and by destination (a process's timers are cancelled when it exits).
// Arm and cancel are O(log n) under one mutex: simple and correct; a
// per-scheduler timer wheel is the known next step if calls with timeouts
// (gen_server) make the mutex hot. An idle node's timer thread sleeps.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

#include "ember/core/message.hpp"
#include "ember/core/pid.hpp"

namespace ember::detail {

struct node;

class timer_service {
 public:
  using clock = std::chrono::steady_clock;

  explicit timer_service(node& n);
  ~timer_service();  // stops the thread and drops pending timers

  std::uint64_t arm(std::chrono::nanoseconds delay, pid to, envelope* e);
  bool cancel(std::uint64_t id) noexcept;
  void cancel_for(pid to) noexcept;
  std::size_t pending() const;
  void stop() noexcept;

 private:
  struct entry {
    clock::time_point due;
    pid to;
    envelope* env;
  };
  void run();
  void erase_locked(std::unordered_map<std::uint64_t, entry>::iterator it) noexcept;

  node& node_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::pair<clock::time_point, std::uint64_t>> by_due_;
  std::unordered_map<std::uint64_t, entry> by_id_;
  std::unordered_multimap<pid, std::uint64_t> by_dest_;
  std::uint64_t next_id_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ember::detail
