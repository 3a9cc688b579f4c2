// Timers (see timer_service.hpp) and the public timer functions.
#include "sched/timer_service.hpp"

#include <vector>

#include "core/node.hpp"
#include "core/preempt.hpp"
#include "ember/core/error.hpp"
#include "ember/core/receive.hpp"
#include "ember/sched/timer.hpp"

namespace ember::detail {

timer_service::timer_service(node& n) : node_(n), thread_([this] { run(); }) {}

timer_service::~timer_service() { stop(); }

void timer_service::stop() noexcept {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  for (auto& [id, e] : by_id_) e.env->destroy(e.env);
  by_id_.clear();
  by_due_.clear();
  by_dest_.clear();
}

std::uint64_t timer_service::arm(std::chrono::nanoseconds delay, pid to, envelope* e) {
  runtime_alloc_scope global;  // the timer tables are the runtime's, not the caller heap's
  // Mark the destination so that its exit cancels what targets it.
  process* target = node_.table.acquire(to);
  std::unique_lock lock(mu_);
  std::uint64_t id = next_id_++;
  if (!target || stopping_) {
    lock.unlock();
    e->destroy(e);
    if (target) release_ref(node_, target);
    return id;  // a dead destination: nothing will ever be delivered
  }
  target->timer_target.store(true, std::memory_order_relaxed);
  clock::time_point due = clock::now() + delay;
  by_id_.emplace(id, entry{due, to, e});
  by_due_.emplace(due, id);
  by_dest_.emplace(to, id);
  bool earliest = by_due_.begin()->second == id;
  lock.unlock();
  release_ref(node_, target);
  if (earliest) cv_.notify_one();
  return id;
}

void timer_service::erase_locked(std::unordered_map<std::uint64_t, entry>::iterator it) noexcept {
  by_due_.erase({it->second.due, it->first});
  auto range = by_dest_.equal_range(it->second.to);
  for (auto d = range.first; d != range.second; ++d) {
    if (d->second == it->first) {
      by_dest_.erase(d);
      break;
    }
  }
  by_id_.erase(it);
}

bool timer_service::cancel(std::uint64_t id) noexcept {
  envelope* e = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return false;
    e = it->second.env;
    erase_locked(it);
  }
  e->destroy(e);
  return true;
}

void timer_service::cancel_for(pid to) noexcept {
  runtime_alloc_scope global;
  std::vector<envelope*> dropped;
  {
    std::lock_guard lock(mu_);
    auto range = by_dest_.equal_range(to);
    std::vector<std::uint64_t> ids;
    for (auto d = range.first; d != range.second; ++d) ids.push_back(d->second);
    for (std::uint64_t id : ids) {
      auto it = by_id_.find(id);
      if (it == by_id_.end()) continue;
      dropped.push_back(it->second.env);
      erase_locked(it);
    }
  }
  for (envelope* e : dropped) e->destroy(e);
}

std::size_t timer_service::pending() const {
  std::lock_guard lock(mu_);
  return by_id_.size();
}

void timer_service::run() {
  std::vector<std::pair<pid, envelope*>> due;
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (by_due_.empty()) {
      cv_.wait(lock);
      continue;
    }
    clock::time_point next = by_due_.begin()->first;
    if (clock::now() < next) {
      cv_.wait_until(lock, next);
      continue;
    }
    clock::time_point now = clock::now();
    while (!by_due_.empty() && by_due_.begin()->first <= now) {
      auto it = by_id_.find(by_due_.begin()->second);
      due.emplace_back(it->second.to, it->second.env);
      erase_locked(it);
    }
    lock.unlock();
    for (auto& [to, e] : due) deliver(node_, to, e);
    due.clear();
    lock.lock();
  }
  lock.unlock();
  envelope_cache_release();
}

}  // namespace ember::detail

namespace ember {

bool cancel_timer(timer_ref ref) { return detail::cancel_timer(nullptr, ref); }

void sleep_for(std::chrono::nanoseconds d) {
  receive(after(d, [] {}));
}

namespace detail {

namespace {
node& timer_node(node* n, const char* call) {
  if (n) return *n;
  if (current_process()) return *current_node();
  throw error(errc::not_in_process,
              std::string(call) + ": called outside a process (use ember::runtime from other threads)");
}
}  // namespace

timer_ref arm_send_after(node* n, std::chrono::nanoseconds delay, pid to, envelope* e) {
  runtime_call in_runtime;
  node* nd = n ? n : (current_process() ? current_node() : nullptr);
  if (!nd) {
    e->destroy(e);
    throw error(errc::not_in_process, "send_after: called outside a process (use ember::runtime::send_after)");
  }
  if (delay.count() < 0) delay = std::chrono::nanoseconds(0);
  return timer_ref{nd->arm_timer(delay, to, e)};
}

bool cancel_timer(node* n, timer_ref ref) {
  runtime_call in_runtime;
  return timer_node(n, "cancel_timer").cancel_timer(ref.id);
}

}  // namespace detail
}  // namespace ember
