// The blocking pool: threads outside the schedulers that run
// ember::blocking calls (include/ember/sched/blocking.hpp).
//
// A process that calls blocking() queues a job here and waits in receive
// for blocking_done{tag}; a pool thread runs the job and sends that message
// through the ordinary send path, which wakes the process. The job is
// shared (the process and the pool hold it): the pool thread drops its
// reference before it sends, so a waiting process always frees the job
// itself, and a process killed while it waits leaves the job to the pool
// thread, which frees it after the call.
// Threads start on demand (a job queued while none is idle starts one, up
// to the cap) and stay until the runtime shuts down; shutdown drops jobs
// not yet started and joins the threads, waiting for the running calls.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ember/core/pid.hpp"
#include "ember/sched/blocking.hpp"

namespace ember::detail {

struct node;

class blocking_pool {
 public:
  blocking_pool(node& n, unsigned max_threads) : node_(n), max_(max_threads) {}
  ~blocking_pool() { stop(); }
  blocking_pool(const blocking_pool&) = delete;
  blocking_pool& operator=(const blocking_pool&) = delete;

  void submit(std::shared_ptr<blocking_job> job, pid waiter, std::uint64_t tag);
  void stop() noexcept;
  unsigned threads() const;
  struct usage_figures {
    std::size_t threads = 0, busy = 0, queued = 0;
  };
  usage_figures usage() const;

 private:
  struct entry {
    std::shared_ptr<blocking_job> job;
    pid waiter;
    std::uint64_t tag = 0;
  };
  void work() noexcept;

  node& node_;
  const unsigned max_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<entry> queue_;
  std::vector<std::thread> threads_;
  unsigned idle_ = 0;
  bool stopping_ = false;
};

}  // namespace ember::detail
