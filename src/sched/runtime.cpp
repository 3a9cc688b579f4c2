// ember::runtime: option checks and the outside-process API over the node.
#include "ember/sched/runtime.hpp"

#include <thread>

#include "ember/core/error.hpp"
#include "ember/core/process.hpp"
#include "core/process.hpp"
#include "sched/scheduler.hpp"

namespace ember {

namespace {
runtime_options checked(runtime_options o) {
  if (o.schedulers == 0) o.schedulers = std::max(1u, std::thread::hardware_concurrency());
  if (o.schedulers > 1024)
    throw error(errc::invalid_argument, "runtime: " + std::to_string(o.schedulers) +
                                            " schedulers is more than the 1024 allowed (0 means one per core)");
  if (o.stack_size < 16 * 1024 || o.stack_size > (std::size_t(1) << 30))
    throw error(errc::invalid_argument, "runtime: stack_size " + std::to_string(o.stack_size) +
                                            " is outside [16 KiB, 1 GiB]");
  if (o.handler_batch == 0)
    throw error(errc::invalid_argument, "runtime: handler_batch must be at least 1");
  if (o.reductions == 0 || o.reductions > 100'000'000)
    throw error(errc::invalid_argument, "runtime: reductions " + std::to_string(o.reductions) +
                                            " is outside [1, 100000000]");
  using std::chrono::microseconds;
  if (o.time_slice.count() != 0 && (o.time_slice < microseconds(10) || o.time_slice > microseconds(1'000'000)))
    throw error(errc::invalid_argument, "runtime: time_slice " + std::to_string(o.time_slice.count()) +
                                            " us is outside [10 us, 1 s] (0 turns asynchronous preemption off)");
  if (o.blocked_after.count() != 0 &&
      (o.blocked_after < microseconds(100) || o.blocked_after > microseconds(3'600'000'000LL)))
    throw error(errc::invalid_argument, "runtime: blocked_after " + std::to_string(o.blocked_after.count()) +
                                            " us is outside [100 us, 1 h] (0 turns the hand-off off)");
  if (o.blocking_threads == 0 || o.blocking_threads > 4096)
    throw error(errc::invalid_argument, "runtime: blocking_threads " + std::to_string(o.blocking_threads) +
                                            " is outside [1, 4096]");
  if (o.node_id >= (1u << pid::node_bits))
    throw error(errc::invalid_argument, "runtime: node_id " + std::to_string(o.node_id) + " does not fit in " +
                                            std::to_string(pid::node_bits) + " bits");
  return o;
}

detail::runtime_node& impl(detail::node* n) { return *static_cast<detail::runtime_node*>(n); }

// wait and shutdown block the calling thread until processes exit: from
// inside a process of the same runtime that would wait for itself.
void refuse_inside(detail::node* n, const char* call) {
  if (detail::current_process() && detail::current_node() == n)
    throw error(errc::invalid_argument, std::string("runtime::") + call +
                                            ": called from one of the runtime's own processes, "
                                            "which would wait for itself");
}
}  // namespace

namespace detail {
runtime_node& runtime_access::of(ember::runtime& rt) noexcept { return impl(rt.node_); }
}  // namespace detail

runtime::runtime(runtime_options opts) : node_(new detail::runtime_node(checked(opts))) {}

runtime::~runtime() {
  impl(node_).shutdown();
  delete node_;
}

void runtime::send_envelope(pid to, detail::envelope* e) { detail::send_envelope(node_, to, e); }

void runtime::send_envelope(std::string_view name, detail::envelope* e) {
  detail::send_envelope(node_, name, e);
}

bool runtime::cancel_timer(timer_ref ref) { return node_->cancel_timer(ref.id); }

void runtime::exit(pid target, exit_reason reason) {
  detail::deliver(*node_, target, detail::make_signal(detail::sig_exit, {pid(), {}, std::move(reason), false, 0}));
}

pid runtime::whereis(std::string_view name) const { return node_->names.find(name); }

void runtime::register_name(std::string name, pid p) { detail::register_name_on(*node_, std::move(name), p); }

bool runtime::is_alive(pid p) const {
  detail::process* t = node_->table.acquire(p);
  if (!t) return false;
  detail::release_ref(*node_, t);
  return true;
}

std::optional<process_snapshot> runtime::process_info(pid p) const {
  return detail::process_info_on(*node_, p);
}

void runtime::wait() {
  refuse_inside(node_, "wait");
  impl(node_).wait();
}

bool runtime::wait_for(std::chrono::nanoseconds limit) {
  refuse_inside(node_, "wait_for");
  return impl(node_).wait_for(limit);
}

void runtime::shutdown() {
  refuse_inside(node_, "shutdown");
  impl(node_).shutdown();
}

unsigned runtime::mappings_per_stack() { return detail::stack_pool::guard_regions() ? 0 : 2; }

unsigned runtime::schedulers() const noexcept { return node_->options.schedulers; }

std::size_t runtime::process_count() const noexcept {
  return std::size_t(std::max<std::int64_t>(0, node_->live.load(std::memory_order_acquire)));
}

runtime_stats runtime::stats() const { return impl(node_).stats(); }

}  // namespace ember
