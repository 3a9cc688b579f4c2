// Processes: spawning, the switch between a process and its scheduler,
// signals (link, monitor, exit), selective receive, and the exit path.
//
// Signals ride in the mailbox with messages and are applied by the process
// itself when it drains its incoming stack (drain()): link and monitor
// tables are therefore touched by one thread only and need no lock, and a
// signal keeps its order with the messages of its sender, as in Erlang. A
// signal that ends the process throws exit_unwind on the process's own
// stack, so a process killed while suspended in receive unwinds and its
// destructors run. A process that catches that exception and carries on
// is ended at its next runtime call without further unwinding: kill cannot
// be swallowed by catch (...). Exit signals act on the next runtime call (receive,
// send, yield...) of a process that is computing; one that never calls the
// runtime is reached through asynchronous preemption (ember_preempt_yield,
// at the end of this file; design in sched/preempt.cpp).
//
// A process switches out by jumping to its scheduler's switch_point with a
// suspend_reason; the scheduler, now off the process's stack, decides what
// to do (see scheduler.cpp). A process never parks itself: parking on its
// own stack would let another thread resume it before the switch finished.
#include <cxxabi.h>

#include <cerrno>

#include <algorithm>
#include <exception>
#include <memory>
#include <mutex>
#include <typeinfo>

#include "core/node.hpp"
#include "core/preempt.hpp"
#include "core/process.hpp"
#include "core/resource.hpp"
#include "core/sanitizers.hpp"
#include "ember/core/error.hpp"
#include "ember/core/preempt.hpp"
#include "ember/core/process.hpp"
#include "ember/core/receive.hpp"
#include "ember/core/request.hpp"
#include "ember/core/scope.hpp"
#include "ember/core/spawn.hpp"

#if defined(EMBER_TSAN)
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace ember::detail {

constinit __attribute__((tls_model("initial-exec"))) thread_local process* tl_process = nullptr;

namespace {
__attribute__((tls_model("initial-exec"))) thread_local node* tl_node = nullptr;

constexpr std::size_t min_stack = 16 * 1024;
constexpr std::size_t max_stack = std::size_t(1) << 30;
}  // namespace

__attribute__((noinline)) process* current_process() noexcept { return tl_process; }
__attribute__((noinline)) void set_current_process(process* p) noexcept {
  tl_process = p;
  // Its heap follows it from thread to thread (heap_enter, inlined here:
  // this runs twice per switch).
  const bool own_heap = p && p->heap_scope_depth == 0;
  tl_heap = own_heap ? p->heap.load(std::memory_order_relaxed) : nullptr;
  tl_heap_process = own_heap ? p : nullptr;
}
__attribute__((noinline)) node* current_node() noexcept { return tl_node; }
__attribute__((noinline)) void set_current_node(node* n) noexcept { tl_node = n; }

namespace {

process& self_or_throw(const char* call) {
  process* p = current_process();
  if (!p)
    throw error(errc::not_in_process, std::string(call) +
                                          ": called outside a process (use ember::runtime from other threads)");
  return *p;
}

node& node_or_throw(node* n, const char* call) {
  if (n) return *n;
  if (node* cur = current_node(); cur && current_process()) return *cur;
  throw error(errc::not_in_process,
              std::string(call) + ": called outside a process (use ember::runtime from other threads)");
}

pid self_pid(node& n, const process& p) { return n.table.pid_of(&p); }

// Switches to the scheduler. Returns when the scheduler resumes us,
// possibly on another thread.
inline void bank_reductions(process& p) {
  p.reductions_done.store(p.reductions_done.load(std::memory_order_relaxed) + p.reductions,
                          std::memory_order_relaxed);
  if (switch_point* home = p.home)
    home->reductions.store(home->reductions.load(std::memory_order_relaxed) + p.reductions, std::memory_order_relaxed);
}

void suspend(process& p, suspend_reason why) {
  ++p.preempt_off;  // (callers have it raised already, but the switch must never be interrupted)
  p.preempt_pending.store(false, std::memory_order_relaxed);  // this is the yield it asked for
  bank_reductions(p);
  p.why = why;
  switch_point* home = p.home;
#if defined(EMBER_ASAN)
  sanitizers::start_switch(&p.asan_fake, home->stack_bottom, home->stack_size, home->tsan_fiber);
#else
  sanitizers::start_switch(nullptr, home->stack_bottom, home->stack_size, home->tsan_fiber);
#endif
  transfer_t t = boost::context::detail::jump_fcontext(home->ctx, nullptr);
  home = static_cast<switch_point*>(t.data);
  home->ctx = t.fctx;
  p.home = home;
#if defined(EMBER_ASAN)
  sanitizers::finish_switch(p.asan_fake, &home->stack_bottom, &home->stack_size);
#else
  sanitizers::finish_switch(nullptr, &home->stack_bottom, &home->stack_size);
#endif
  p.reductions = 0;
  --p.preempt_off;
}

// The last switch of a context that will never be resumed.
[[noreturn]] void leave(process& p, suspend_reason why) {
  ++p.preempt_off;
  bank_reductions(p);
  p.why = why;
  switch_point* home = p.home;
  sanitizers::start_switch(nullptr, home->stack_bottom, home->stack_size, home->tsan_fiber);
  boost::context::detail::jump_fcontext(home->ctx, nullptr);
  __builtin_unreachable();
}

// First thing on a fresh context.
process& arrive(transfer_t t) {
  auto* home = static_cast<switch_point*>(t.data);
  home->ctx = t.fctx;
  process* p = current_process();
  p->home = home;
  sanitizers::finish_switch(nullptr, &home->stack_bottom, &home->stack_size);
  p->reductions = 0;
  p->preempt_off = 1;  // the stack's base code; user_code lowers it (a handler's earlier turn left it raised)
  return *p;
}

bool dying(const process& p) { return p.rel && p.rel->dying; }

void lift_heap_limit(process& p) noexcept {
  p.heap_unlimited = true;
  if (process_heap* h = p.heap.load(std::memory_order_relaxed)) {
    h->limit = SIZE_MAX;
    h->limit_hit = true;
  }
}

void mark_dying(process& p, exit_reason reason) {
  auto& r = p.relations();
  r.dying = true;
  p.obs_state.store(obs_exiting, std::memory_order_relaxed);
  r.pending_exit = std::move(reason);
}

[[noreturn]] void die(process& p, exit_reason reason) {
  mark_dying(p, reason);
  throw exit_unwind{std::move(reason)};
}

void do_exit(node& n, process& p, exit_reason reason) noexcept;
[[noreturn]] void leave(process& p, suspend_reason why);

void exit_with_pending_reason(process& p) noexcept {
  exit_reason reason = p.rel->pending_exit;
  do_exit(*current_node(), p, std::move(reason));
}

// A process that caught its exit_unwind (catch (...) without rethrow) and
// called the runtime again is not given another chance: it exits here,
// without unwinding further; the frames left on its stack are abandoned.
// While it is still unwinding (a destructor calling send) it carries on.
void rethrow_if_dying(process& p) {
  if (!dying(p) || std::uncaught_exceptions() != 0) return;
  exit_with_pending_reason(p);
  leave(p, suspend_reason::exited);
}

template <class V>
void erase_first(std::vector<V>& v, const V& x) {
  auto it = std::find(v.begin(), v.end(), x);
  if (it != v.end()) {
    *it = v.back();
    v.pop_back();
  }
}

// Link and monitor bookkeeping, the same for a live process and for the
// exit path. Returns false for any other signal.
bool apply_relation_signal(process& p, const signal_envelope& s) {
  switch (s.signal) {
    case sig_link: {
      p.relations().links.insert(s.s.from);
      return true;
    }
    case sig_unlink:
      if (p.rel) p.rel->links.erase(s.s.from);
      return true;
    case sig_monitor:
      p.relations().monitored_by.add(s.s.ref, s.s.from);
      return true;
    case sig_demonitor:
      if (p.rel) p.rel->monitored_by.remove(s.s.ref);
      return true;
    default:
      return false;
  }
}

// The exit path's view of a chain of envelopes: link and monitor changes
// still count (whoever linked or monitored hears the real reason), the
// rest is dropped.
void absorb_for_exit(process& p, envelope* e) noexcept {
  while (e) {
    envelope* next = e->next;
    if (e->signal != sig_none && e->signal != sig_adopt && e->signal != sig_inspect) {
      apply_relation_signal(p, *static_cast<signal_envelope*>(e));
    } else if (e->flavor == flavor_call) {
      p.relations().monitored_by.add(monitor_ref{e->alias}, e->caller);
    }
    e->destroy(e);
    e = next;
  }
}

// ember::scope (at the end of this file): a child's down, taken by its
// scope (true) rather than turned into a message; a failure to throw.
}  // namespace
bool scope_down(node& n, process& p, signal_payload& sig);
void throw_scope_failure(process& p);
namespace {

// Applies one signal to a live process. May mark it dying.
void apply_signal(node& n, process& p, signal_envelope* s) {
  std::unique_ptr<envelope, envelope_deleter> owned(s);
  if (apply_relation_signal(p, *s)) return;
  signal_payload& sig = s->s;
  switch (s->signal) {
    case sig_down:
      if (p.rel && !p.rel->scopes.empty() && scope_down(n, p, sig)) return;
      // Only monitors still held produce a message (demonitor wins).
      if (p.rel && p.rel->monitors.remove(sig.ref))
        p.mbox.append(make_envelope(down{sig.ref, sig.from, std::move(sig.reason)}));
      return;
    case sig_timeout:
      if (sig.seq == p.receive_seq) {
        p.receive_timer = 0;
        // Armed for this receive's deadline: it has passed. Armed for an
        // earlier one (a receive before): the receive arms another.
        if (p.awaiting_timeout && p.receive_timer_due >= p.receive_deadline) p.timed_out = true;
      }
      return;
    case sig_wake:
      if (sig.seq == p.wake_expect) p.woken = true;
      return;
    case sig_exit: {
      if (sig.linked) {
        if (!p.rel) return;
        if (!p.rel->links.erase(sig.from)) return;  // unlinked meanwhile: the signal is void
      }
      if (sig.reason.is(exit_reason::kind::kill) && !sig.linked) return mark_dying(p, exit_reason::killed());
      if (p.trap_exit) {
        p.mbox.append(make_envelope(exit_signal{sig.from, std::move(sig.reason)}));
        return;
      }
      if (sig.reason.is_normal()) {
        if (sig.from == self_pid(n, p)) mark_dying(p, exit_reason::normal());
        return;
      }
      return mark_dying(p, std::move(sig.reason));
    }
    default:
      return;
  }
}

// The copy into the receiver's heap. If the message's copy constructor
// throws, the message stays as it came: delivered, only not moved.
envelope* materialize(envelope* e) noexcept {
  try {
    return e->materialize(e);
  } catch (...) {
    return e;
  }
}

enum class on_exit_signal : std::uint8_t { unwind, report };

// A resource on its way to a new owner (give_resource). Destroyed unadopted
// (the receiver died first, or never existed), it releases the resource,
// unless its ownership has moved on meanwhile.
struct resource_envelope final : envelope {
  resource* r;
  std::uint32_t gen;
  pid to;
  bool adopted = false;
  resource_envelope(resource* res, std::uint32_t g, pid target) : r(res), gen(g), to(target) {
    signal = sig_adopt;
    key = nullptr;
    type = &typeid(resource_envelope);
    destroy = [](envelope* e) noexcept {
      auto* self = static_cast<resource_envelope*>(e);
      if (!self->adopted && self->r->held_by(self->gen, self->to)) self->r->release(self->gen);
      delete self;
    };
  }
};

void adopt(process& p, envelope* e) noexcept {
  auto* re = static_cast<resource_envelope*>(e);
  try {
    process_relations& rel = p.relations();
    global_heap_scope runtime_owned;  // as the relations themselves
    rel.resources.push_back({re->r, re->gen, std::uint32_t(rel.scopes.size())});
    re->adopted = true;
  } catch (...) {
    // No memory to hold it: released (by destroy) rather than leaked.
  }
  e->destroy(e);
}

// observe::process_info asking a process for its relations: answered by
// the process itself as it drains its mailbox (its relations are its own
// thread's), or, destroyed unanswered (it died first), answered "unknown".
struct inspect_envelope final : envelope {
  std::shared_ptr<inspect_request> req;
  explicit inspect_envelope(std::shared_ptr<inspect_request> r) : req(std::move(r)) {
    signal = sig_inspect;
    key = nullptr;
    type = &typeid(inspect_envelope);
    destroy = [](envelope* e) noexcept {
      auto* self = static_cast<inspect_envelope*>(e);
      self->req->finish();
      delete self;
    };
  }
};

void answer_inspect(process& p, envelope* e) noexcept {
  auto* ie = static_cast<inspect_envelope*>(e);
  inspect_request& r = *ie->req;
  try {
    global_heap_scope runtime_owned;  // read and freed by the asking thread
    std::lock_guard lock(r.mu);
    if (p.rel) {
      r.links = p.rel->links.all();
      p.rel->monitors.for_each([&](monitor_ref, pid who) { r.monitors.push_back(who); });
      p.rel->monitored_by.for_each([&](monitor_ref, pid who) { r.monitored_by.push_back(who); });
    }
    r.trap_exit = p.trap_exit;
    r.known = true;
  } catch (...) {
  }
  r.finish();
  delete ie;
}

bool alias_active(const process& p, std::uint64_t alias) noexcept {
  if (!p.rel) return false;
  for (std::uint64_t a : p.rel->aliases)
    if (a == alias) return true;
  return false;
}

// Moves what arrived into the private queue, applying signals. Returns true
// if anything arrived. A signal that ends the process either throws
// exit_unwind (user frames are on the stack: unwind them) or, for a handler
// process between messages, just leaves it marked dying (no exception).
bool drain_slow(node& n, process& p, on_exit_signal mode = on_exit_signal::unwind) {
  rethrow_if_dying(p);
  envelope* e = p.mbox.take_all();
  if (!e) return false;
  // Copying messages in may pass the heap limit. The process is not ended
  // in the middle of the chain (what is left of it would be lost with the
  // stack) but once every envelope is queued, where its exit path finds it.
  struct deferred_limit {
    process& p;
    bool on;
    explicit deferred_limit(process& proc) : p(proc), on(proc.heap_limit != 0) {
      if (on) p.heap_limit_deferred = true;
    }
    ~deferred_limit() {
      if (!on) return;
      p.heap_limit_deferred = false;
      if (p.heap_limit_passed) {
        p.heap_limit_passed = false;
        heap_limit_exceeded(p.heap.load(std::memory_order_relaxed));  // does not return
      }
    }
  } defer{p};
  const std::uint32_t generation = p.generation() & process_table::gen_mask;
  while (e) {
    envelope* next = e->next;
    if (e->to_generation != generation) {
      e->destroy(e);  // sent to an earlier process of this slot
    } else if (e->signal == sig_none) {
      if (e->flavor >= flavor_call) {
        if (e->flavor == flavor_call) {
          // A call monitors its server from the moment it arrives (see
          // request_send): the caller hears of this process's exit.
          p.relations().monitored_by.add(monitor_ref{e->alias}, e->caller);
        } else if (e->flavor == flavor_reply && !alias_active(p, e->alias)) {
          e->destroy(e);  // a late reply: its call has ended
          e = next;
          continue;
        }
      }
      // A message built in transit (global heap) is copied into this
      // process's heap now, while its heap is current.
      if (e->materialize) e = materialize(e);
      p.mbox.append(e);
      if (switch_point* home = p.home)
        home->messages_in.store(home->messages_in.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    } else if (e->signal == sig_adopt) {
      adopt(p, e);
    } else if (e->signal == sig_inspect) {
      answer_inspect(p, e);
    } else {
      apply_signal(n, p, static_cast<signal_envelope*>(e));
      if (dying(p)) {
        absorb_for_exit(p, next);  // what is left: for the exit path to answer
        if (mode == on_exit_signal::unwind) throw exit_unwind{p.rel->pending_exit};
        return true;
      }
    }
    e = next;
  }
  if (mode == on_exit_signal::unwind && p.rel && !p.rel->scopes.empty()) throw_scope_failure(p);
  return true;
}

inline bool drain(node& n, process& p) {
  if (p.rel && p.rel->dying) rethrow_if_dying(p);
  if (p.mbox.incoming_empty()) return false;
  return drain_slow(n, p);
}

__attribute__((noinline)) void yield_for_reductions(node& n, process& p) {
  if (dying(p)) return;
  n.count_reduction_yield();
  suspend(p, suspend_reason::yield);
  drain(n, p);
}

inline void charge(node& n, process& p, std::uint32_t cost) {
  p.reductions += cost;
  if (__builtin_expect(p.reductions >= n.options.reductions, 0)) yield_for_reductions(n, p);
}

void destroy_chain(envelope* e) noexcept {
  while (e) {
    envelope* next = e->next;
    e->destroy(e);
    e = next;
  }
}

// The exit path, on the process's own stack. After it, nothing may send to
// the process (the alive bit is gone) and everyone who should hear of its
// death has been told.
void do_exit(node& n, process& p, exit_reason reason) noexcept {
  lift_heap_limit(p);  // the exit path may allocate, whatever the cap
  pid me = self_pid(n, p);
  p.life.fetch_and(~process::alive_bit, std::memory_order_seq_cst);
  if (p.registered.load(std::memory_order_seq_cst)) {
    std::lock_guard lock(n.names.mutex());
    n.names.remove_pid(me);
  }
  // Signals that arrived before the alive bit went: apply the relation
  // changes so every watcher hears the real reason; drop the rest.
  absorb_for_exit(p, p.mbox.take_all());
  destroy_chain(p.mbox.first);
  p.mbox.first = p.mbox.last = nullptr;
  p.mbox.private_count = 0;
  p.mbox.published_count.store(0, std::memory_order_relaxed);

  if (p.rel) {
    // Its sockets and files, newest first (see resource.hpp), before anyone
    // hears of the exit: a supervisor restarting a listener finds its port
    // free.
    auto& owned = p.rel->resources;
    for (auto it = owned.rbegin(); it != owned.rend(); ++it)
      if (it->r->held_by(it->gen, me)) it->r->release(it->gen);
    owned.clear();
    for (pid l : p.rel->links.all())
      deliver(n, l, make_signal(sig_exit, {me, {}, reason, true, 0}));
    p.rel->monitored_by.for_each([&](monitor_ref ref, pid watcher) {
      deliver(n, watcher, make_signal(sig_down, {me, ref, reason, false, 0}));
    });
    p.rel->monitors.for_each([&](monitor_ref ref, pid target) {
      deliver(n, target, make_signal(sig_demonitor, {me, ref, {}, false, 0}));
    });
    delete p.rel;
    p.rel = nullptr;
  }
  if (p.timer_target.load(std::memory_order_relaxed)) n.cancel_timers_for(me);
  try {
    delete p.body;
  } catch (...) {
  }
  p.body = nullptr;
}

exit_reason reason_of_current_exception() {
  try {
    throw;
  } catch (exit_unwind& e) {
    return std::move(e.reason);
  } catch (const std::exception& e) {
    return exit_reason::exception(demangle(typeid(e)), e.what());
  } catch (...) {
    const std::type_info* t = abi::__cxa_current_exception_type();
    return exit_reason::exception(t ? demangle(*t) : "unknown", "");
  }
}

// Runs a function process's body; returns its exit reason.
exit_reason run_function(process& p) {
  try {
    {
      user_code user(p);
      p.body->run();
    }
    if (dying(p)) return p.rel->pending_exit;  // swallowed its own kill
    return exit_reason::normal();
  } catch (...) {
    return reason_of_current_exception();
  }
}

enum class turn_outcome : std::uint8_t { idle, exited };

// One turn of a handler process: init if it has not run, then messages
// until the mailbox is empty.
turn_outcome run_handler_turn(node& n, process& p) {
  exit_reason reason;
  bool ended_itself = false;  // stop(), an exception, exit(reason) on itself: terminate runs
  try {
    if (!p.started) {
      p.started = true;
      if (p.body->has_init) {
        user_code user(p);
        p.body->init();
      }
    }
    unsigned handled = 0;
    while (!p.stop_requested) {
      if (!p.mbox.incoming_empty()) {
        drain_slow(n, p, on_exit_signal::report);
        if (dying(p)) break;  // an exit signal: no user frame to unwind
      }
      envelope* e = p.mbox.first;
      if (!e) return turn_outcome::idle;
      if (handled >= n.options.handler_batch) {
        suspend(p, suspend_reason::yield);
        handled = 0;
        continue;
      }
      p.mbox.unlink(nullptr, e);
      {
        // Held in the control block too, so that an abandoned turn (heap
        // limit, stack overflow) still frees it.
        struct in_hand {
          process& p;
          envelope* e;
          ~in_hand() {
            p.in_hand = e->next;
            e->destroy(e);
          }
        } held{p, e};
        e->next = p.in_hand;
        p.in_hand = e;
        user_code user(p);
        p.body->handle(e);
      }
      if (p.stop_requested) break;
      ++handled;
      charge(n, p, 1);
    }
    if (p.rel) reason = p.rel->pending_exit;  // stop(reason) or an exit signal
    ended_itself = p.stop_requested;
  } catch (...) {
    reason = reason_of_current_exception();
    ended_itself = !dying(p) || p.rel->exit_self;
  }
  if (ended_itself && p.body->has_terminate) {
    // terminate may call the runtime (a supervisor stops its children
    // there): exit(reason) on itself must not end it at the first call.
    if (p.rel) p.rel->dying = p.rel->exit_self = false;
    try {
      user_code user(p);
      p.body->terminate(reason);
    } catch (...) {
      // As gen_server: a terminate that fails replaces the reason; an exit
      // signal that arrives meanwhile ends it with the signal's reason.
      exit_reason failed = reason_of_current_exception();
      reason = dying(p) ? p.rel->pending_exit : std::move(failed);
    }
  }
  do_exit(n, p, std::move(reason));
  return turn_outcome::exited;
}

}  // namespace

// A send takes no reference on the receiver: it checks the receiver is
// alive and pushes. If the receiver dies in between, the envelope lands in a
// dead or reused slot and is dropped there (its generation does not match),
// which is what a send to a dead process does anyway. A push that sees
// WAITING owns the wake-up, and a waiting process cannot die before it runs,
// so making it runnable is safe without a reference. Link and monitor
// requests, which must be answered even if the receiver dies, go through
// push_referenced() instead.
void deliver(node& n, pid to, envelope* e) noexcept {
  process* p = n.table.find_alive(to);
  if (!p) {
    if (!n.is_local(to)) {
      if (remote_router* r = n.remote.load(std::memory_order_acquire)) return r->route(to, e);
    } else if (pid c = n.canonical(to); c != to) {
      return deliver(n, c, e);  // a local pid in its cluster form
    }
    e->destroy(e);
    return;
  }
  e->to_generation = to.generation();
  if (p->mbox.push(e)) n.make_runnable(p, -1);
}

void deliver_from_remote(node& n, pid to, envelope* e) noexcept {
  to = n.canonical(to);
  bool answered = e->signal == sig_link || e->signal == sig_monitor || (e->signal == sig_none && e->flavor == flavor_call);
  if (!answered) return deliver(n, to, e);
  process* t = n.table.acquire(to);
  if (t) {
    push_referenced(n, t, to, e);
    release_ref(n, t);
    return;
  }
  if (e->signal == sig_link) {
    pid from = static_cast<signal_envelope*>(e)->s.from;
    deliver(n, from, make_signal(sig_exit, {to, {}, exit_reason::noproc(), true, 0}));
  } else if (e->signal == sig_monitor) {
    auto* s = static_cast<signal_envelope*>(e);
    deliver(n, s->s.from, make_signal(sig_down, {to, s->s.ref, exit_reason::noproc(), false, 0}));
  } else {
    deliver(n, e->caller, make_signal(sig_down, {to, monitor_ref{e->alias}, exit_reason::noproc(), false, 0}));
  }
  e->destroy(e);
}

void push_referenced(node& n, process* p, pid to, envelope* e) noexcept {
  e->to_generation = to.generation();
  if (p->mbox.push(e)) n.make_runnable(p, -1);
}

void release_ref(node& n, process* p) noexcept {
  if (process_table::release(p) == process_table::release_outcome::last_reference_of_dead) finalize(n, p);
}

void finalize(node& n, process* p) noexcept {
  pid me = n.table.pid_of(p);
  envelope* e = p->mbox.take_all();
  while (e) {
    envelope* next = e->next;
    if (e->signal == sig_link) {
      auto* s = static_cast<signal_envelope*>(e);
      deliver(n, s->s.from, make_signal(sig_exit, {me, {}, exit_reason::noproc(), true, 0}));
    } else if (e->signal == sig_monitor) {
      auto* s = static_cast<signal_envelope*>(e);
      deliver(n, s->s.from, make_signal(sig_down, {me, s->s.ref, exit_reason::noproc(), false, 0}));
    } else if (e->signal == sig_none && e->flavor == flavor_call) {
      deliver(n, e->caller, make_signal(sig_down, {me, monitor_ref{e->alias}, exit_reason::noproc(), false, 0}));
    }
    e->destroy(e);
    e = next;
  }
  p->ctx = nullptr;
  p->stk = nullptr;
  p->trap_exit = false;
  p->obs_trap_exit.store(false, std::memory_order_relaxed);
  p->obs_blocking.store(false, std::memory_order_relaxed);
  p->obs_stack_bytes.store(0, std::memory_order_relaxed);
  p->obs_run_ns.store(0, std::memory_order_relaxed);
  p->obs_label.store(nullptr, std::memory_order_relaxed);
  p->obs_initial.store(nullptr, std::memory_order_relaxed);
  p->obs_parent.store(0, std::memory_order_relaxed);
  p->mbox.published_count.store(0, std::memory_order_relaxed);
  p->started = false;
  p->stop_requested = false;
  p->timed_out = false;
  p->awaiting_timeout = false;
  p->receive_timer = 0;
  p->wake_expect = 0;
  p->woken = false;
  p->reductions = 0;
  p->reductions_done.store(0, std::memory_order_relaxed);
  p->heap_limit = 0;
  p->heap_unlimited = false;
  p->heap_limit_deferred = false;
  p->heap_limit_passed = false;
  p->heap_scope_depth = 0;
  p->preempt_off = 1;
  p->preemptible = true;
  p->pinned = false;
  p->exit_grace = false;
  p->preempt_pending.store(false, std::memory_order_relaxed);
  p->preempting.store(false, std::memory_order_relaxed);
  p->in_hand = nullptr;
  p->timer_target.store(false, std::memory_order_relaxed);
  p->registered.store(false, std::memory_order_relaxed);
  std::uint32_t gen = p->generation() + 1;
  if ((gen & process_table::gen_mask) == 0) ++gen;  // generation 0 is never used
  p->life.store(std::uint64_t(gen) << 32, std::memory_order_release);
  n.table.free_slot(p, n.local_slots());
}

void exit_without_stack(node& n, process* p, exit_reason reason) noexcept {
  do_exit(n, *p, std::move(reason));
  release_heap(p);
}

// Envelopes in a handler's hands, innermost first, chained through `next`
// (unused once an envelope is off the queue).
void hold_message(envelope* e) noexcept {
  process* p = current_process();
  runtime_call in_runtime(p);
  e->next = p->in_hand;
  p->in_hand = e;
}

void drop_message(envelope* e) noexcept {
  process* p = current_process();
  runtime_call in_runtime(p);
  p->in_hand = e->next;
  e->destroy(e);
}

void release_heap(process* p) noexcept {
  process_heap* h = p->heap.load(std::memory_order_relaxed);
  p->heap.store(nullptr, std::memory_order_relaxed);
  if (tl_heap == h) tl_heap = nullptr;
  if (!h) return;
  node* n = current_node();
  heap_reclaim(h, {n ? n->table.node_id() : 0, p->slot, p->generation() & process_table::gen_mask});
}

[[noreturn]] void abandon_on_fault(process& p) noexcept { leave(p, suspend_reason::abandoned); }

namespace {
std::string hex(const void* a) {
  static const char digits[] = "0123456789abcdef";
  auto v = reinterpret_cast<std::uintptr_t>(a);
  std::string s;
  do {
    s.insert(s.begin(), digits[v & 15]);
    v >>= 4;
  } while (v);
  return "0x" + s;
}
}  // namespace

void end_abandoned(node& n, process* p, const fault_info& fault) noexcept {
  lift_heap_limit(*p);
  p->eh_caught = nullptr;  // its frames are gone with its stack
  p->eh_uncaught = 0;
  for (envelope* e = p->in_hand; e;) {  // messages its handlers were working on
    envelope* outer = e->next;
    e->destroy(e);
    e = outer;
  }
  p->in_hand = nullptr;
  exit_reason reason;
  try {
    if (fault.overflow) {
      reason = exit_reason::stack_overflow("fault at " + hex(fault.address));
    } else if (fault.signal) {
      reason = exit_reason::fault(std::string(fault_signal_name(fault.signal)) + " at address " + hex(fault.address));
    } else {
      reason = p->rel ? p->rel->pending_exit : exit_reason::killed();
    }
  } catch (...) {
    reason = exit_reason::killed();  // no memory even for the text
  }
  do_exit(n, *p, std::move(reason));
  release_heap(p);
}

void heap_limit_exceeded(process_heap* h) noexcept {
  process* p = current_process();
  // Only a process running its own code on its own stack is ended here;
  // exit paths lift the limit before they run.
  if (!p || p->heap.load(std::memory_order_relaxed) != h || !p->stk) return;
  runtime_call in_runtime(p);
  if (p->heap_limit_deferred) {  // taking in messages: ended once they are queued
    p->heap_limit_passed = true;
    return;
  }
  std::size_t live = h->live.load(std::memory_order_relaxed);
  std::size_t limit = h->limit;
  if (!dying(*p))
    mark_dying(*p, exit_reason::heap_limit(std::to_string(live) + " bytes live, max_heap_bytes " +
                                            std::to_string(limit)));
  leave(*p, suspend_reason::abandoned);
}

void function_entry(transfer_t t) noexcept {
  process& p = arrive(t);
  node& n = *current_node();
  do_exit(n, p, run_function(p));
  leave(p, suspend_reason::exited);
}

void handler_entry(transfer_t t) noexcept {
  process& p = arrive(t);
  node& n = *current_node();
  turn_outcome out = run_handler_turn(n, p);
  leave(p, out == turn_outcome::idle ? suspend_reason::idle : suspend_reason::exited);
}

spawned spawn_body(node* n, process_body* body, const spawn_options& opts, spawn_link_mode mode) {
  runtime_call in_runtime;
  std::unique_ptr<process_body> owned(body);
  node& nd = node_or_throw(n, "spawn");
  if (nd.stopping.load(std::memory_order_relaxed))
    throw error(errc::runtime_stopped, "spawn: the runtime is shutting down");
  if (opts.stack_size != 0 && (opts.stack_size < min_stack || opts.stack_size > max_stack))
    throw error(errc::invalid_argument, "spawn: stack_size " + std::to_string(opts.stack_size) +
                                            " is outside [16 KiB, 1 GiB] (0 means the runtime default)");
  if (opts.scheduler < -1 || opts.scheduler >= int(nd.options.schedulers))
    throw error(errc::invalid_argument, "spawn: scheduler hint " + std::to_string(opts.scheduler) +
                                            " is not -1 or a scheduler index below " +
                                            std::to_string(nd.options.schedulers));
  process* parent = n ? nullptr : current_process();
  if (mode != spawn_link_mode::none && !parent)
    throw error(errc::not_in_process, "spawn_link/spawn_monitor: called outside a process");

  // The child's control block, stack, body and relations are the runtime's,
  // not the parent heap's: they outlive the parent.
  process* p;
  spawned out;
  {
    runtime_alloc_scope global;
    p = nd.table.allocate(nd.local_slots());
    if (!body->is_handler) {
      try {
        stack_pool::cache* c = nd.local_stacks();
        p->stk = c ? nd.stacks.get(*c, opts.stack_size) : nd.stacks.get(opts.stack_size);
      } catch (...) {
        nd.table.free_slot(p, nd.local_slots());
        throw;
      }
    }
    p->obs_initial.store(&typeid(*owned), std::memory_order_relaxed);
    p->obs_parent.store(parent ? self_pid(nd, *parent).bits() : 0, std::memory_order_relaxed);
    // A handler process with nothing to do first waits for its first message.
    p->obs_state.store(!owned->is_handler || owned->has_init ? obs_runnable : obs_waiting,
                       std::memory_order_relaxed);
    p->body = owned.release();
    p->stack_request = opts.stack_size;
    p->heap_limit = opts.max_heap_bytes;
    p->preemptible = opts.preemptible;
    pid child = nd.table.pid_of(p);
    out = spawned{child, {}};
    if (mode == spawn_link_mode::link || mode == spawn_link_mode::link_monitor) {
      pid me = self_pid(nd, *parent);
      p->relations().links.insert_new(me);
      parent->relations().links.insert_new(child);
    }
    if (mode == spawn_link_mode::monitor || mode == spawn_link_mode::link_monitor) {
      pid me = self_pid(nd, *parent);
      out.ref = monitor_ref{nd.new_ref()};
      p->relations().monitored_by.add(out.ref, me);
      parent->relations().monitors.add(out.ref, child);
    }
  }
  nd.live.fetch_add(1, std::memory_order_relaxed);
  nd.count_spawn();
  bool run_now = !body->is_handler || body->has_init;
  p->mbox.reset(!run_now);
  std::uint64_t gen = p->life.load(std::memory_order_relaxed) >> 32;
  p->life.store((gen << 32) | process::alive_bit | 1, std::memory_order_release);
  if (run_now) nd.make_runnable(p, opts.scheduler);
  if (parent) charge(nd, *parent, 1);
  return out;
}

std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace {
// Keeps a receive timer that fires no later than p.receive_deadline (its
// signal wakes the process to arm the rest); replaces one that fires later.
void arm_receive_timer(node& n, process& p, std::int64_t now) {
  if (p.receive_timer && p.receive_timer_due <= p.receive_deadline) return;
  if (p.receive_timer) n.cancel_timer(p.receive_timer);
  ++p.receive_seq;
  p.receive_timer_due = p.receive_deadline;
  p.receive_timer = n.arm_timer(std::chrono::nanoseconds(std::max<std::int64_t>(0, p.receive_deadline - now)),
                                self_pid(n, p), make_signal(sig_timeout, {{}, {}, {}, false, p.receive_seq}));
}
}  // namespace

receive_outcome receive_match(match_fn match, std::int64_t timeout_ns) {
  process& p = self_or_throw("receive");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  // Charged first: a yield here may end the process (an exit signal), which
  // must not happen while it holds an envelope taken off its queue.
  charge(n, p, 1);
  // Messages already in the private queue arrived before anything still
  // incoming, so a match there is the first match: scan it before touching
  // the incoming head, a cache line that senders keep writing. Drain first
  // when the private queue is empty, and every 64th receive so that signals
  // (kill) are not held back behind a long backlog.
  if (!p.mbox.first || (++p.receive_tick & 63) == 0) drain(n, p);
  envelope* prev = nullptr;
  envelope* cur = p.mbox.first;
  bool deadline_set = false;
  p.timed_out = false;
  for (;;) {
    for (; cur; prev = cur, cur = cur->next) {
      int index = match.fn(match.ctx, cur);
      if (index >= 0) {
        p.mbox.unlink(prev, cur);
        p.awaiting_timeout = false;  // the timer stays armed for a later receive
        return {cur, index};
      }
    }
    if (drain(n, p)) {
      cur = prev ? prev->next : p.mbox.first;
      continue;
    }
    if (p.timed_out || timeout_ns == 0) {
      p.awaiting_timeout = false;
      p.timed_out = false;
      return {nullptr, -1};
    }
    if (timeout_ns > 0) {
      std::int64_t now = steady_now_ns();
      if (!deadline_set) {
        deadline_set = true;
        p.receive_deadline = timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
        p.awaiting_timeout = true;
      }
      arm_receive_timer(n, p, now);
    }
    suspend(p, suspend_reason::wait);
    if (drain(n, p)) cur = prev ? prev->next : p.mbox.first;
  }
}

bool await_wake(std::uint64_t token, std::int64_t deadline_ns) {
  process& p = self_or_throw("await_wake");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  charge(n, p, 1);
  p.wake_expect = token;
  p.woken = false;
  p.timed_out = false;
  bool deadline_set = false;
  struct reset_on_exit {
    process& p;
    ~reset_on_exit() {
      p.wake_expect = 0;
      p.woken = false;
      p.awaiting_timeout = false;
      p.timed_out = false;
    }
  } reset{p};
  for (;;) {
    drain(n, p);
    if (p.woken) return true;
    if (p.timed_out) return false;
    if (deadline_ns != no_deadline) {
      std::int64_t now = steady_now_ns();
      if (now >= deadline_ns) return false;
      if (!deadline_set) {
        deadline_set = true;
        p.receive_deadline = deadline_ns;
        p.awaiting_timeout = true;
      }
      arm_receive_timer(n, p, now);
    }
    suspend(p, suspend_reason::wait);
  }
}

void post_wake(node& n, pid to, std::uint64_t token) noexcept {
  envelope* e;
  try {
    e = make_signal(sig_wake, {{}, {}, {}, false, token});
  } catch (...) {
    return;  // no memory: the waiter's deadline (if any) ends its wait
  }
  deliver(n, to, e);
}

void own_resource(resource* r, std::uint32_t gen) {
  process& p = self_or_throw("own_resource");
  runtime_call in_runtime(&p);
  process_relations& rel = p.relations();
  global_heap_scope runtime_owned;  // as the relations themselves
  rel.resources.push_back({r, gen, std::uint32_t(rel.scopes.size())});
  if (rel.resources.size() >= rel.resources_prune_at) {
    pid me = self_pid(*current_node(), p);
    std::erase_if(rel.resources, [me](const resource_entry& e) { return !e.r->held_by(e.gen, me); });
    rel.resources_prune_at = std::max<std::size_t>(16, rel.resources.size() * 2);
  }
}

void disown_resource(resource* r, std::uint32_t gen) noexcept {
  process* p = current_process();
  if (!p || !p->rel) return;
  runtime_call in_runtime(p);
  auto& v = p->rel->resources;
  for (auto it = v.rbegin(); it != v.rend(); ++it) {
    if (it->r == r && it->gen == gen) {
      v.erase(std::next(it).base());
      return;
    }
  }
}

void give_resource(resource* r, std::uint32_t gen, pid to) {
  node& n = node_or_throw(current_node(), "give_resource");
  disown_resource(r, gen);
  runtime_call in_runtime;
  deliver(n, to, new resource_envelope(r, gen, to));
}

bool send_inspect(node& n, pid target, std::shared_ptr<inspect_request> req) {
  if (!n.table.find_alive(target)) return false;
  envelope* e;
  {
    global_heap_scope runtime_owned;  // destroyed by the target, or at its death
    e = new inspect_envelope(std::move(req));
  }
  runtime_call in_runtime;
  deliver(n, target, e);
  return true;
}

namespace {
// A user message for another node: throws send's clear error if it could
// never be carried there.
void check_remote_sendable(node& n, pid to, const envelope& e) {
  if (n.is_local(to)) return;
  remote_router* r = n.remote.load(std::memory_order_acquire);
  if (!r)
    throw error(errc::unavailable, "send to " + to.to_string() + ": the pid is of node " + std::to_string(to.node()) +
                                       " and this node has joined no cluster (ember::node)");
  r->check_sendable(to, e);
}
// The same for send, which owns the envelope: freed if it cannot go.
void check_remote_send(node& n, pid to, envelope* e) {
  if (n.is_local(to)) return;
  try {
    check_remote_sendable(n, to, *e);
  } catch (...) {
    e->destroy(e);
    throw;
  }
}
}  // namespace

void send_envelope(node* n, pid to, envelope* e) {
  runtime_call in_runtime;
  if (n) {
    check_remote_send(*n, to, e);
    deliver(*n, to, e);
    return;
  }
  process* p = in_runtime.process_or_null();
  if (!p) {
    e->destroy(e);
    throw error(errc::not_in_process, "send: called outside a process (use ember::runtime::send)");
  }
  node& nd = *current_node();
  check_remote_send(nd, to, e);
  deliver(nd, to, e);
  charge(nd, *p, 1);
}

void send_envelope(node* n, std::string_view name, envelope* e) {
  runtime_call in_runtime;
  node* nd = n ? n : (current_process() ? current_node() : nullptr);
  if (!nd) {
    e->destroy(e);
    throw error(errc::not_in_process, "send: called outside a process (use ember::runtime::send)");
  }
  pid to = nd->names.find(name);
  if (!to) {
    e->destroy(e);
    throw error(errc::no_such_name, "send: no process is registered as '" + std::string(name) + "'");
  }
  send_envelope(n, to, e);
}

monitor_ref request_send(pid server, envelope* request) {
  std::unique_ptr<envelope, envelope_deleter> owned(request);
  process& p = self_or_throw("call");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  server = n.canonical(server);
  monitor_ref ref{n.new_ref()};
  auto& rel = p.relations();
  rel.aliases.push_back(ref.id);
  process* t = n.table.acquire(server);
  if (!t && !n.is_local(server)) {
    // A server on another node: the router carries the request, and its
    // node registers the monitor (or answers noproc) as here.
    check_remote_sendable(n, server, *owned);
    rel.monitors.add(ref, server);
    request->flavor = flavor_call;
    request->caller = self_pid(n, p);
    request->alias = ref.id;
    deliver(n, server, owned.release());
  } else if (!t) {
    p.mbox.append(make_envelope(down{ref, server, exit_reason::noproc()}));
  } else {
    // One envelope is the request and the monitor request: the server
    // registers the monitor when it takes the request in (drain_slow), its
    // exit path does if the request is still queued, and finalize()
    // answers noproc if it never ran again. A reference is held for the
    // push, as for monitor(), so that one of the three always sees it.
    rel.monitors.add(ref, server);
    request->flavor = flavor_call;
    request->caller = self_pid(n, p);
    request->alias = ref.id;
    push_referenced(n, t, server, owned.release());
    release_ref(n, t);
  }
  charge(n, p, 1);
  return ref;
}

namespace {
void end_alias(process& p, std::uint64_t alias) noexcept {
  if (!p.rel) return;
  erase_first(p.rel->aliases, alias);
}
}  // namespace

request_outcome request_wait(monitor_ref alias, std::int64_t timeout_ns) {
  struct ctx_t {
    std::uint64_t alias;
  } ctx{alias.id};
  match_fn match{[](void* c, envelope* e) -> int {
                   std::uint64_t a = static_cast<ctx_t*>(c)->alias;
                   if (e->alias == a && e->flavor == flavor_reply) return 0;
                   if (e->key == key_of<down>() && static_cast<value_envelope<down>*>(e)->value.ref.id == a)
                     return 1;
                   return -1;
                 },
                 &ctx};
  process& p = self_or_throw("call");
  receive_outcome got;
  try {
    got = receive_match(match, timeout_ns);
  } catch (...) {
    // Ended while waiting (an exit signal): the exit path drops the monitor.
    end_alias(p, alias.id);
    throw;
  }
  runtime_call in_runtime(&p);
  end_alias(p, alias.id);
  if (got.index == 1) {
    std::unique_ptr<envelope, envelope_deleter> d(got.env);
    return {request_status::down, nullptr, std::move(static_cast<value_envelope<down>*>(got.env)->value.reason)};
  }
  node& n = *current_node();
  pid server;
  // A reply with no caller set came from the server itself, which ended
  // its side of the monitor when it replied: no demonitor to send.
  bool server_side_open = !(got.env && got.env->caller == pid{});
  if (p.rel && p.rel->monitors.remove(alias, &server) && server_side_open)
    deliver(n, server, make_signal(sig_demonitor, {self_pid(n, p), alias, {}, false, 0}));
  if (server_side_open) {
    // A down may have arrived before the monitor went (a deferred reply
    // from another process, or a timeout): flush it.
    drain(n, p);
    envelope* prev = nullptr;
    for (envelope* e = p.mbox.first; e;) {
      envelope* next = e->next;
      if (e->key == key_of<down>() && static_cast<value_envelope<down>*>(e)->value.ref == alias) {
        p.mbox.unlink(prev, e);
        e->destroy(e);
        break;
      }
      prev = e;
      e = next;
    }
  }
  if (!got.env) return {request_status::timeout, nullptr, exit_reason::timeout()};
  return {request_status::replied, got.env, {}};
}

void reply_send(pid caller, std::uint64_t alias, envelope* reply) {
  std::unique_ptr<envelope, envelope_deleter> owned(reply);
  process& p = self_or_throw("reply");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  reply->flavor = flavor_reply;
  reply->alias = alias;
  // The server answering its own call ends its side of the call's monitor
  // here and says so by leaving `caller` unset; the caller then sends no
  // demonitor (one envelope each way per call).
  reply->caller = self_pid(n, p);
  check_remote_sendable(n, caller, *reply);  // before the monitor goes: a failed reply changes nothing
  if (p.rel && p.rel->monitored_by.remove(monitor_ref{alias})) reply->caller = pid{};
  deliver(n, caller, owned.release());
  charge(n, p, 1);
}

}  // namespace ember::detail

namespace ember {

using namespace detail;

bool in_process() noexcept { return current_process() != nullptr; }

bool detail::stop_requested() noexcept {
  process* p = current_process();
  return p && p->stop_requested;
}

process_body* detail::current_body() noexcept {
  process* p = current_process();
  return p ? p->body : nullptr;
}

pid self() {
  process& p = self_or_throw("self");
  return current_node()->table.pid_of(&p);
}

void link(pid other) {
  process& p = self_or_throw("link");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  other = n.canonical(other);
  pid me = self_pid(n, p);
  if (other == me) return;
  bool had = !p.relations().links.insert(other);
  process* t = n.table.acquire(other);
  if (!t && !n.is_local(other)) {
    // On another node: its node answers noproc, or the router noconnection.
    if (!had) deliver(n, other, make_signal(sig_link, {me, {}, {}, false, 0}));
  } else if (!t) {
    // As in Erlang: linking to a process that does not exist is answered by
    // an exit signal with reason noproc.
    deliver(n, me, make_signal(sig_exit, {other, {}, exit_reason::noproc(), true, 0}));
  } else {
    if (!had) push_referenced(n, t, other, make_signal(sig_link, {me, {}, {}, false, 0}));
    release_ref(n, t);
  }
  charge(n, p, 1);
}

void unlink(pid other) {
  process& p = self_or_throw("unlink");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  other = n.canonical(other);
  if (!p.rel) return;
  if (!p.rel->links.erase(other)) return;
  deliver(n, other, make_signal(sig_unlink, {self_pid(n, p), {}, {}, false, 0}));
  charge(n, p, 1);
}

monitor_ref monitor(pid target) {
  process& p = self_or_throw("monitor");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  target = n.canonical(target);
  monitor_ref ref{n.new_ref()};
  process* t = n.table.acquire(target);
  if (!t && !n.is_local(target)) {
    // On another node: its node answers noproc if the process is gone, the
    // router noproc for an unknown node and noconnection for a lost one.
    p.relations().monitors.add(ref, target);
    deliver(n, target, make_signal(sig_monitor, {self_pid(n, p), ref, {}, false, 0}));
  } else if (!t) {
    p.mbox.append(make_envelope(down{ref, target, exit_reason::noproc()}));
  } else {
    p.relations().monitors.add(ref, target);
    push_referenced(n, t, target, make_signal(sig_monitor, {self_pid(n, p), ref, {}, false, 0}));
    release_ref(n, t);
  }
  charge(n, p, 1);
  return ref;
}

bool demonitor(monitor_ref ref, bool flush) {
  process& p = self_or_throw("demonitor");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  pid target;
  bool found = p.rel && p.rel->monitors.remove(ref, &target);
  if (found) deliver(n, target, make_signal(sig_demonitor, {self_pid(n, p), ref, {}, false, 0}));
  if (flush) {
    drain(n, p);
    envelope* prev = nullptr;
    for (envelope* e = p.mbox.first; e;) {
      envelope* next = e->next;
      if (e->key == key_of<down>() && static_cast<value_envelope<down>*>(e)->value.ref == ref) {
        p.mbox.unlink(prev, e);
        e->destroy(e);
      } else {
        prev = e;
      }
      e = next;
    }
  }
  return found;
}

bool trap_exit(bool on) {
  process& p = self_or_throw("trap_exit");
  runtime_call in_runtime(&p);
  bool old = p.trap_exit;
  p.trap_exit = on;
  p.obs_trap_exit.store(on, std::memory_order_relaxed);
  return old;
}

void exit(pid target, exit_reason reason) {
  process& p = self_or_throw("exit");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  target = n.canonical(target);
  pid me = self_pid(n, p);
  deliver(n, target, make_signal(sig_exit, {me, {}, std::move(reason), false, 0}));
  if (target == me) drain(n, p);  // a signal to oneself takes effect now
  charge(n, p, 1);
}

void exit(exit_reason reason) {
  process& p = self_or_throw("exit");
  runtime_call in_runtime(&p);
  if (!dying(p)) p.relations().exit_self = true;
  die(p, std::move(reason));
}

void stop(exit_reason reason) {
  process& p = self_or_throw("stop");
  runtime_call in_runtime(&p);
  if (!p.body->is_handler) die(p, std::move(reason));
  if (!p.stop_requested) {
    p.stop_requested = true;
    if (!reason.is_normal()) p.relations().pending_exit = std::move(reason);
  }
}

bool is_alive(pid id) {
  runtime_call in_runtime;
  node* n = current_node();
  if (!n || !current_process()) throw error(errc::not_in_process, "is_alive: called outside a process");
  id = n->canonical(id);
  if (!n->is_local(id))  // as Erlang's is_process_alive/1 (badarg)
    throw error(errc::invalid_argument, "is_alive: " + id.to_string() + " is a process of another node");
  process* t = n->table.acquire(id);
  if (!t) return false;
  release_ref(*n, t);
  return true;
}

namespace detail {
std::optional<process_snapshot> process_info_on(node& n, pid id) {
  process* t = n.table.acquire(id);  // a reference: the slot cannot be reused meanwhile
  if (!t) return std::nullopt;
  process_snapshot s;
  if (process_heap* h = t->heap.load(std::memory_order_acquire)) {
    s.heap_bytes = h->live.load(std::memory_order_relaxed);
    s.heap_peak_bytes = h->peak.load(std::memory_order_relaxed);
  }
  s.heap_limit_bytes = t->heap_limit;
  s.reductions = t->reductions_done.load(std::memory_order_relaxed);
  release_ref(n, t);
  return s;
}
}  // namespace detail

std::optional<process_snapshot> process_info(pid p) {
  self_or_throw("process_info");
  runtime_call in_runtime;
  return process_info_on(*current_node(), p);
}

void check() {
  runtime_call in_runtime;
  process* p = in_runtime.process_or_null();
  if (!p) return;
  charge(*current_node(), *p, 1);
}

void yield() {
  process& p = self_or_throw("yield");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  rethrow_if_dying(p);
  suspend(p, suspend_reason::yield);
  drain(n, p);
}

std::size_t message_queue_len() {
  process& p = self_or_throw("message_queue_len");
  runtime_call in_runtime(&p);
  drain(*current_node(), p);
  return p.mbox.private_count;
}

std::size_t flush() {
  process& p = self_or_throw("flush");
  runtime_call in_runtime(&p);
  drain(*current_node(), p);
  std::size_t count = p.mbox.private_count;
  destroy_chain(p.mbox.first);
  p.mbox.first = p.mbox.last = nullptr;
  p.mbox.private_count = 0;
  p.mbox.published_count.store(0, std::memory_order_relaxed);
  return count;
}

namespace detail {
void register_name_on(node& n, std::string name, pid id) {
  if (name.empty()) throw error(errc::invalid_argument, "register_name: the name is empty");
  std::lock_guard lock(n.names.mutex());
  process* t = n.table.acquire(id);
  if (!t) throw error(errc::not_alive, "register_name: " + id.to_string() + " is not alive");
  // Set the flag before re-checking alive; do_exit clears alive before
  // reading the flag: one of the two sees the other (both seq_cst).
  t->registered.store(true, std::memory_order_seq_cst);
  bool alive = t->life.load(std::memory_order_seq_cst) & process::alive_bit;
  registry::add_outcome out = alive ? n.names.add(name, id) : registry::add_outcome::added;
  release_ref(n, t);
  if (!alive) throw error(errc::not_alive, "register_name: " + id.to_string() + " is not alive");
  if (out == registry::add_outcome::name_taken)
    throw error(errc::name_taken, "register_name: '" + name + "' is already registered");
  if (out == registry::add_outcome::already_registered)
    throw error(errc::already_registered, "register_name: " + id.to_string() + " already has a name");
}
}  // namespace detail

void register_name(std::string name, pid id) {
  self_or_throw("register_name");
  runtime_call in_runtime;
  register_name_on(*current_node(), std::move(name), id);
}

pid whereis(std::string_view name) {
  self_or_throw("whereis");
  runtime_call in_runtime;
  return current_node()->names.find(name);
}

bool unregister(std::string_view name) {
  self_or_throw("unregister");
  runtime_call in_runtime;
  return current_node()->names.remove(name);
}

}  // namespace ember

// ------------------------------------------------------------ preemption

namespace ember::detail {

void preempt_hold_enter() noexcept {
  if (process* p = tl_process) preempt_off_enter(p);
}

void preempt_hold_leave() noexcept {
  if (process* p = tl_process) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    --p->preempt_off;
  }
}

void preempt_pending_yield(process& p) noexcept {
  // Not while unwinding or dying (the exit path must run), and only on the
  // process's own stack (exit paths of abandoned processes run on the
  // scheduler's, with the process current).
  if (std::uncaught_exceptions() != 0 || dying(p) || !p.stk || !p.home) return;
  char probe;
  if (static_cast<void*>(&probe) < p.stk->bottom() || static_cast<void*>(&probe) >= p.stk->top()) return;
  suspend(p, suspend_reason::yield);
}

}  // namespace ember::detail

// Called by the trampoline (sched/preempt_x86_64.S) that the preemption
// signal's handler made the interrupted process call. Every register of
// the interrupted code is saved below us; we only yield, on the normal path.
extern "C" void ember_preempt_yield() noexcept {
  using namespace ember::detail;
  process& p = *tl_process;
  // Thread-local state the interrupted code may be in the middle of using,
  // which other processes of this thread could change meanwhile: errno
  // (between a system call and its check) and libstdc++'s call_once state
  // (set before pthread_once, read by the callback: std::promise uses it).
#if defined(EMBER_TSAN)
  // See the restore below: the save is as much this process's business.
  __tsan_ignore_thread_begin();
  const int saved_errno = errno;
  __tsan_ignore_thread_end();
#else
  const int saved_errno = errno;
#endif
#if defined(__GLIBCXX__) && defined(_GLIBCXX_HAVE_TLS)
  void* const saved_once_callable = std::__once_callable;
  void (*const saved_once_call)() = std::__once_call;
#endif
  preempt_off_enter(&p);
  p.preempting.store(false, std::memory_order_relaxed);
  suspend(p, suspend_reason::preempted);
  // Resumed, on the same thread (a preempted process is pinned). Messages
  // wait for its next receive: taking them in here would run their copy
  // constructors in the middle of whatever the process was doing. An exit
  // signal that ends it is different: the process gets one time slice to
  // reach a runtime call (there it unwinds, destructors run: its next
  // runtime call yields at once and takes the signal in); if it is still
  // computing when it is preempted again, it ends here without unwinding
  // (the interrupted frames have no landing pad).
  // A process unwinding (its exit_unwind, or any exception) is left to
  // finish: its exit path runs at the end of it.
  if (std::uncaught_exceptions() == 0 &&
      (dying(p) || (!p.trap_exit && p.mbox.incoming_has(sig_exit)))) {
    if (!p.exit_grace) {
      p.exit_grace = true;
      p.reductions = current_node()->options.reductions;  // the next charge yields and drains
    } else {
      if (!dying(p)) {
        try {
          drain_slow(*current_node(), p, on_exit_signal::report);
        } catch (...) {
          if (!dying(p)) mark_dying(p, reason_of_current_exception());
        }
      }
      if (dying(p)) leave(p, suspend_reason::abandoned);
    }
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  --p.preempt_off;
#if defined(__GLIBCXX__) && defined(_GLIBCXX_HAVE_TLS)
  std::__once_callable = saved_once_callable;
  std::__once_call = saved_once_call;
#endif
#if defined(EMBER_TSAN)
  // errno is the thread's, and every process of the thread uses it between
  // its own system call and its check: restoring it here is this process's
  // business. ThreadSanitizer, which sees each process as a thread of its
  // own, would call it a race with the next process's read.
  __tsan_ignore_thread_begin();
  errno = saved_errno;
  __tsan_ignore_thread_end();
#else
  errno = saved_errno;
#endif
}

namespace ember {

no_preempt::no_preempt() noexcept : process_(detail::tl_process) {
  if (process_) detail::preempt_off_enter(static_cast<detail::process*>(process_));
}

no_preempt::~no_preempt() {
  if (process_) detail::preempt_off_leave(static_cast<detail::process*>(process_));
}

bool preemptible() noexcept {
  detail::process* p = detail::current_process();
  if (!p || !p->preemptible || p->preempt_off != 0) return false;
  detail::node* n = detail::current_node();
  return n && n->options.time_slice.count() != 0;
}

}  // namespace ember

// ------------------------------------------------------------------ scopes
//
// ember::scope (include/ember/core/scope.hpp). A scope is a resource of
// its process (so a process that dies without unwinding still kills the
// children: do_exit releases it) and an entry on the process's scope
// stack, which apply_signal consults for every down: a child's down is
// taken by its scope and never becomes a message. Children are spawned
// with spawn_monitor semantics; the scope kills them (exit kill) when it
// ends or when one of them fails, and then waits for their downs, so a
// scope that has ended has no child left.
namespace ember::detail {

struct scope_state final : resource {
  struct child {
    monitor_ref ref;
    pid id;
  };
  process* owner = nullptr;
  pid owner_pid;
  std::uint32_t depth = 0;     // 1: the process's outermost scope
  std::vector<child> running;  // watched
  std::vector<child> stopping; // killed by the scope; their downs awaited
  exit_reason failure;
  pid failed_child;
  bool failed = false;
  bool thrown = false;         // the failure was thrown to the process once
  bool open = true;

  // The owner exits with the scope still open (its destructor never ran).
  void release(std::uint32_t) noexcept override {
    if (node* n = current_node()) kill_all(*n);
  }
  bool held_by(std::uint32_t, pid p) const noexcept override { return open && p == owner_pid; }

  void kill_all(node& n) noexcept {
    for (const child& c : running) {
      deliver(n, c.id, make_signal(sig_exit, {owner_pid, {}, exit_reason::kill(), false, 0}));
      try {
        stopping.push_back(c);
      } catch (...) {
        // No memory: its down will not be awaited (it is killed all the same).
      }
    }
    running.clear();
  }
};

namespace {

bool remove_child(std::vector<scope_state::child>& v, monitor_ref ref, pid* who) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i].ref == ref) {
      if (who) *who = v[i].id;
      v[i] = v.back();
      v.pop_back();
      return true;
    }
  }
  return false;
}

[[noreturn]] void throw_failure(scope_state& st) {
  st.thrown = true;
  throw scope_error("scope: child " + st.failed_child.to_string() + " failed: " + st.failure.to_string(), st.failure,
                    st.failed_child);
}

scope_state& check_scope(scope_state* st, process& p, const char* call) {
  if (!st || st->owner != &p || !st->open)
    throw error(errc::invalid_argument, std::string("scope: ") + call + " from a process that does not own the scope");
  return *st;
}

}  // namespace

bool scope_down(node& n, process& p, signal_payload& sig) {
  for (auto it = p.rel->scopes.rbegin(); it != p.rel->scopes.rend(); ++it) {
    scope_state& st = **it;
    pid who;
    if (remove_child(st.stopping, sig.ref, &who)) {
      p.rel->monitors.remove(sig.ref);
      return true;
    }
    if (remove_child(st.running, sig.ref, &who)) {
      p.rel->monitors.remove(sig.ref);
      if (!sig.reason.is_normal() && !st.failed) {
        st.failed = true;
        st.failed_child = who;
        st.failure = std::move(sig.reason);
        st.kill_all(n);  // the others are cancelled at once
      }
      return true;
    }
  }
  return false;
}

void throw_scope_failure(process& p) {
  // The outermost failed scope: its failure unwinds the inner ones too.
  for (scope_state* st : p.rel->scopes)
    if (st->failed && !st->thrown) throw_failure(*st);
}

scope_state* scope_open() {
  process& p = self_or_throw("ember::scope");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  process_relations& rel = p.relations();
  auto* st = new scope_state();
  st->owner = &p;
  st->owner_pid = self_pid(n, p);
  st->depth = std::uint32_t(rel.scopes.size() + 1);
  try {
    rel.resources.push_back({st, 0, std::uint32_t(rel.scopes.size())});
    rel.scopes.push_back(st);
  } catch (...) {
    if (!rel.resources.empty() && rel.resources.back().r == st) rel.resources.pop_back();
    delete st;
    throw;
  }
  return st;
}

pid scope_spawn(scope_state* st, process_body* body, const spawn_options& opts) {
  std::unique_ptr<process_body> owned(body);
  process& p = self_or_throw("scope::spawn");
  check_scope(st, p, "spawn");
  runtime_call in_runtime(&p);
  if (st->failed) throw_failure(*st);
  // No yield between the spawn and the record below (a yield drains the
  // mailbox, where the child's down may already be).
  p.reductions = 0;
  st->running.reserve(st->running.size() + 1);
  spawned s = spawn_body(nullptr, owned.release(), opts, spawn_link_mode::monitor);
  st->running.push_back({s.ref, s.id});
  return s.id;
}

void scope_join(scope_state* st) {
  process& p = self_or_throw("scope::join");
  check_scope(st, p, "join");
  runtime_call in_runtime(&p);
  node& n = *current_node();
  for (;;) {
    if (st->failed) throw_failure(*st);
    if (st->running.empty() && st->stopping.empty()) return;
    if (!drain(n, p)) suspend(p, suspend_reason::wait);
  }
}

std::size_t scope_running(const scope_state* st) noexcept { return st ? st->running.size() : 0; }

void scope_close(scope_state* st) noexcept {
  process* pp = current_process();
  if (!st || !pp || st->owner != pp) return;  // not on its process: cannot happen for a stack object
  process& p = *pp;
  runtime_call in_runtime(&p);
  node& n = *current_node();
  st->kill_all(n);
  // Wait for the children's downs. Never throws: exit signals are left
  // pending (report mode), and a dying process stops waiting.
  while (!st->stopping.empty() && !dying(p)) {
    if (p.mbox.incoming_empty()) {
      suspend(p, suspend_reason::wait);
      continue;
    }
    try {
      drain_slow(n, p, on_exit_signal::report);
    } catch (...) {
      break;  // cannot happen in report mode; never leave a destructor by throwing
    }
  }
  st->open = false;
  process_relations& rel = *p.rel;
  pid me = st->owner_pid;
  // What was acquired in this scope (and is still ours), newest first.
  while (!rel.resources.empty() && rel.resources.back().depth >= st->depth) {
    resource_entry e = rel.resources.back();
    rel.resources.pop_back();
    if (e.r->held_by(e.gen, me)) e.r->release(e.gen);
  }
  std::erase_if(rel.resources, [st](const resource_entry& e) { return e.r == st; });
  if (!rel.scopes.empty() && rel.scopes.back() == st) rel.scopes.pop_back();
  else std::erase(rel.scopes, st);
  delete st;
}

}  // namespace ember::detail
