// gen_server: how a call works, and the behaviour's own messages.
//
// A server is a handler process (core/spawn.hpp) whose body, server_body<S>
// (otp/gen_server.hpp), sorts each message by its envelope's flavor: call
// -> handle_call, cast -> handle_cast, system -> the behaviour (stop), the
// rest -> handle_info. An idle server holds no stack: its control block,
// its body (the state S inline) and its mailbox, about 400 bytes.
//
// The call protocol (runtime side in core/process.cpp: request_send,
// request_wait, reply_send; see core/request.hpp):
//   caller                                 server
//   request_send: new ref R; R becomes an
//     alias (p.rel->aliases) and a monitor
//     of the server (p.rel->monitors); ONE
//     envelope {flavor call, caller, R} is
//     pushed, holding a reference on the
//     server so it cannot be missed  ---->  drain: registers monitored_by(R)
//                                          handle_call(request, from{caller,R})
//                                          reply_send: finds monitored_by(R),
//                                            removes it, marks the reply
//                                            "monitor closed"  (caller = null)
//   drain: a reply whose alias is not  <---- ONE envelope {flavor reply, R}
//     active is dropped (a late reply)
//   request_wait: takes the reply (or a
//     down for R); ends the alias; erases
//     its monitor, and sends a demonitor
//     only if the server did not close it
// So a call costs two envelopes, as a bare send and reply do, where OTP's
// (monitor, request, reply, demonitor) costs four signals. A server that
// dies with the request queued answers it in its exit path (the call counts
// as a monitor there); one that is already dead when the request lands
// answers it from finalize() with noproc. A deferred reply (from another
// process, or later) is not marked: the caller then demonitors as usual.
// Timeouts: the receive timer outlives the receive that armed it (process.cpp,
// receive_match), so a client calling with the default 5 s timeout arms one
// timer per 5 s, not one per call (the timer service is a mutex and a set).
//
// Errors are exceptions (ember::exit_error, one type for call, start and
// stop), chosen over an expected-like value because a failed call in OTP
// exits the caller: an uncaught exit_error does the same here, and code that
// can handle the failure catches it where it can.
//
// Starting: a server with an init or a name is spawned monitored (and
// linked, for start_link); its init registers the name, runs S::init and
// sends server_ack; the starter waits for the ack or the down (whose reason
// is the failure) or the init timeout (then kills it). A server with neither
// is just spawned: nothing can fail after spawn returns.
#include "ember/otp/gen_server.hpp"

#include <atomic>
#include <optional>
#include <string>

#include "ember/core/heap.hpp"
#include "ember/core/process.hpp"
#include "ember/core/receive.hpp"
#include "ember/sched/timer.hpp"

namespace ember::detail {

namespace {

// Server -> starter: init is done.
struct server_ack {
  std::uint64_t tag;
};
// gen_server::stop -> server (flavor_system).
struct server_stop {
  exit_reason reason;
};
// The idle timer's message to its own server.
struct idle_tick {
  std::uint64_t seq;
};

std::atomic<std::uint64_t> next_ack_tag{1};

server_base& current_server(const char* call) {
  auto* s = dynamic_cast<server_base*>(current_body());
  if (!s) throw error(errc::invalid_argument, std::string(call) + ": not called from a gen_server");
  return *s;
}

std::string ms_text(std::chrono::milliseconds t) { return std::to_string(t.count()) + " ms"; }

}  // namespace

void server_base::register_own_name() {
  if (!starting || starting->name.empty()) return;
  const std::string& name = starting->name;
  pid me = self();
  if (starting->registry) {
    if (starting->registry->register_name(name, me)) return;
    pid holder = starting->registry->whereis_name(name);
    exit(exit_reason::user_value(holder, "already_started: '" + name + "' is " + holder.to_string()));
  }
  try {
    register_name(name, me);
  } catch (const error& e) {
    if (e.code() != errc::name_taken) throw;
    pid holder = whereis(name);
    exit(exit_reason::user_value(holder, "already_started: '" + name + "' is " + holder.to_string()));
  }
}

void server_base::ack_started() {
  if (!starting) return;
  send(starting->starter, server_ack{starting->ack_tag});
  delete starting;
  starting = nullptr;
}

server_base::pre server_base::before_message(envelope* e) {
  if (e->key == key_of<idle_tick>()) {
    auto& tick = static_cast<value_envelope<idle_tick>*>(e)->value;
    if (idle_timer && tick.seq == idle_seq) {
      idle_timer = {};
      return pre::idle_timeout;
    }
    return pre::skip;  // cancelled, or superseded
  }
  if (idle_timer) {
    cancel_timer(idle_timer);
    idle_timer = {};
  }
  if (e->flavor == flavor_system) {
    if (e->key == key_of<server_stop>()) stop(static_cast<value_envelope<server_stop>*>(e)->value.reason);
    return pre::skip;
  }
  if (parent && e->key == key_of<exit_signal>()) {
    auto& sig = static_cast<value_envelope<exit_signal>*>(e)->value;
    if (sig.from == parent) {
      // OTP: a server that traps exits ends when its parent does, with
      // the parent's reason, after terminate.
      stop(sig.reason);
      return pre::skip;
    }
  }
  return pre::handle;
}

void server_base::after_message() {
  if (idle_request_ns < 0) return;
  std::chrono::nanoseconds delay(idle_request_ns);
  idle_request_ns = -1;
  idle_timer = send_after(delay, self(), idle_tick{++idle_seq});
}

started_server start_server(server_base* body, const gen_server::options& opts, start_mode mode,
                            bool has_init) {
  std::unique_ptr<server_base> owned(body);
  pid me = self();
  bool wait = has_init || !opts.name.empty();
  body->parent = mode == start_mode::link ? me : pid{};
  body->has_init = wait;  // the behaviour's init: the name, the state's init, the ack
  body->init_done = !wait;
  spawn_link_mode how = spawn_link_mode::none;
  std::uint64_t tag = 0;
  if (wait) {
    tag = next_ack_tag.fetch_add(1, std::memory_order_relaxed);
    {
      global_heap_scope runtime_owned;  // the server's, not this (caller's) heap
      body->starting = new server_base::start_info{me, tag, opts.name, opts.registry};
    }
    how = mode == start_mode::link ? spawn_link_mode::link_monitor : spawn_link_mode::monitor;
  } else if (mode == start_mode::link) {
    how = spawn_link_mode::link;
  } else if (mode == start_mode::monitor) {
    how = spawn_link_mode::monitor;
  }
  spawned s = spawn_body(nullptr, owned.release(), opts.spawn, how);
  if (!wait) return {s.id, s.ref};

  enum class result { ok, failed, timed_out };
  exit_reason reason;
  auto got = [&] {
    auto on_ack = when([tag](const server_ack& a) { return a.tag == tag; },
                       [](const server_ack&) { return result::ok; });
    auto on_down = when([ref = s.ref](const down& d) { return d.ref == ref; },
                        [&reason](down d) {
                          reason = std::move(d.reason);
                          return result::failed;
                        });
    if (opts.init_timeout == gen_server::infinity) return receive(on_ack, on_down);
    return receive(on_ack, on_down, after(opts.init_timeout, [] { return result::timed_out; }));
  }();
  if (got == result::ok) {
    if (mode != start_mode::monitor) demonitor(s.ref, true);
    return {s.id, s.ref};
  }
  if (got == result::timed_out) {
    if (mode == start_mode::link) unlink(s.id);
    exit(s.id, exit_reason::kill());
    receive(when([ref = s.ref](const down& d) { return d.ref == ref; }, [](const down&) {}));
    reason = exit_reason::timeout();
    throw exit_error(errc::start_failed,
                     "gen_server::start: init of " + s.id.to_string() + " did not finish in " +
                         ms_text(opts.init_timeout) + " (killed)",
                     std::move(reason));
  }
  throw exit_error(errc::start_failed,
                   "gen_server::start: init of " + s.id.to_string() + " failed: " + reason.to_string(),
                   std::move(reason));
}

void throw_call_failed(const server_ref& server, const exit_reason& reason, std::chrono::milliseconds timeout) {
  std::string what = "gen_server::call to " + server.to_string() + ": ";
  if (reason.is(exit_reason::kind::timeout)) {
    what += "timeout after " + ms_text(timeout);
  } else if (reason.is(exit_reason::kind::noproc)) {
    what += "noproc (no such process)";
  } else {
    what += "the server exited: " + reason.to_string();
  }
  throw exit_error(errc::call_failed, what, reason);
}

void throw_bad_reply(const server_ref& server, envelope* reply, const std::type_info& expected) {
  std::string got = demangle(*reply->type);
  reply->destroy(reply);
  throw error(errc::bad_message_type, "gen_server::call to " + server.to_string() + ": the reply is a " + got +
                                          ", the caller expects " + demangle(expected));
}

std::int64_t timeout_ns(std::chrono::milliseconds t) noexcept {
  if (t == gen_server::infinity) return -1;
  if (t.count() <= 0) return 0;
  if (t.count() > INT64_MAX / 1000000) return -1;
  return std::int64_t(t.count()) * 1000000;
}

void send_flavored(pid to, envelope* e, message_flavor flavor) {
  e->flavor = flavor;
  send_envelope(nullptr, to, e);
}

}  // namespace ember::detail

namespace ember::gen_server {

void idle_timeout(std::chrono::milliseconds t) {
  auto& s = detail::current_server("gen_server::idle_timeout");
  if (t == infinity) {
    s.idle_request_ns = -1;
    return;
  }
  s.idle_request_ns = detail::timeout_ns(t);
}

void stop(server_ref server, exit_reason reason, std::chrono::milliseconds timeout) {
  pid to = server.resolve();
  std::string who = server.to_string();
  auto fail = [&](exit_reason why, std::string text) {
    throw exit_error(errc::call_failed, "gen_server::stop of " + who + ": " + text, std::move(why));
  };
  if (!to) fail(exit_reason::noproc(), "noproc (no such process)");
  monitor_ref ref = monitor(to);
  detail::send_flavored(to, detail::make_envelope(detail::server_stop{reason}), detail::flavor_system);
  std::optional<exit_reason> got;
  auto on_down = when([ref](const down& d) { return d.ref == ref; }, [&got](down d) { got = std::move(d.reason); });
  if (timeout == infinity) {
    receive(on_down);
  } else {
    receive(on_down, after(timeout, [] {}));
  }
  if (!got) {
    demonitor(ref, true);
    fail(exit_reason::timeout(), "timeout after " + detail::ms_text(timeout));
  }
  if (got->is(exit_reason::kind::noproc)) fail(*got, "noproc (no such process)");
  if (!(*got == reason)) fail(*got, "it exited with " + got->to_string() + ", not " + reason.to_string());
}

}  // namespace ember::gen_server
