// The blocking pool (design in blocking_pool.hpp).
#include "sched/blocking_pool.hpp"

#include "core/node.hpp"
#include "core/preempt.hpp"
#include "core/process.hpp"
#include "ember/core/error.hpp"
#include "ember/core/process.hpp"
#include "ember/core/receive.hpp"
#include "sched/scheduler.hpp"

namespace ember::detail {

namespace {
// Pool -> waiting process: its job has run.
struct blocking_done {
  std::uint64_t tag;
};
}  // namespace

void blocking_pool::submit(std::shared_ptr<blocking_job> job, pid waiter, std::uint64_t tag) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) throw error(errc::runtime_stopped, "blocking: the runtime is shutting down");
    queue_.push_back({std::move(job), waiter, tag});
    if (idle_ != 0 || threads_.size() >= max_) {
      cv_.notify_one();
      return;
    }
    threads_.emplace_back([this] { work(); });
  }
}

void blocking_pool::work() noexcept {
  for (;;) {
    entry e;
    {
      std::unique_lock lock(mu_);
      ++idle_;
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      --idle_;
      if (stopping_ || queue_.empty()) return;
      e = std::move(queue_.front());
      queue_.pop_front();
    }
    e.job->run();
    // Dropped before the waiter is told, so that a waiter still waiting is
    // the last owner and frees the result (and an exception: its reference
    // count lives in uninstrumented libstdc++, so a free on this thread
    // after the waiter read it would look like a race to ThreadSanitizer).
    // If the waiter has gone, the job ends here.
    e.job.reset();
    try {
      send_envelope(&node_, e.waiter, make_envelope(blocking_done{e.tag}));
    } catch (...) {
      // Out of memory for the envelope: the waiter cannot be told; it stays
      // waiting as it would for a call that never returns.
    }
  }
}

void blocking_pool::stop() noexcept {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
    queue_.clear();  // not started: their processes are gone
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (auto& t : threads) t.join();
}

unsigned blocking_pool::threads() const {
  std::lock_guard lock(mu_);
  return unsigned(threads_.size());
}

blocking_pool::usage_figures blocking_pool::usage() const {
  std::lock_guard lock(mu_);
  usage_figures u;
  u.threads = threads_.size();
  u.busy = threads_.size() >= idle_ ? threads_.size() - idle_ : 0;
  u.queued = queue_.size();
  return u;
}

void blocking_run(const std::shared_ptr<blocking_job>& job) {
  if (!in_process()) throw error(errc::not_in_process, "blocking: called outside a process");
  std::uint64_t tag;
  {
    runtime_call in_runtime;  // the pool's lock is held briefly: not while preempted
    global_heap_scope runtime_owned;  // the queue and the threads are the runtime's
    auto& rt = static_cast<runtime_node&>(*current_node());
    tag = rt.new_ref();
    rt.blocking().submit(job, self(), tag);
  }
  // Observed as blocking (not waiting) meanwhile, by observe's tables.
  struct blocking_mark {
    process* p = current_process();
    blocking_mark() { p->obs_blocking.store(true, std::memory_order_relaxed); }
    ~blocking_mark() { p->obs_blocking.store(false, std::memory_order_relaxed); }
  } mark;
  receive(when([tag](const blocking_done& d) { return d.tag == tag; }, [](const blocking_done&) {}));
}

}  // namespace ember::detail
