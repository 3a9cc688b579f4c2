// gen_server: a process that serves calls and casts, with OTP's semantics.
//
//   struct counter {
//     int n = 0;
//     void handle_call(ember::message& request, ember::from from) {
//       ember::dispatch(request,
//           [&](const add& a) { ember::reply(from, n += a.by); },
//           [&](get) { ember::reply(from, n); });
//     }
//     void handle_cast(ember::message& m) { if (m.is<reset>()) n = 0; }
//   };
//   ember::pid c = ember::gen_server::start<counter>();
//   int v = ember::gen_server::call<int>(c, add{2});   // throws exit_error on failure
//
// The server is a handler process: an idle one holds no stack. Its state
// object is constructed by start from the arguments given, and every
// callback is optional:
//   init()                                runs in the server before start returns;
//                                         throwing (or exit(reason)) fails the start
//   handle_call(message& req, from from)  answer with reply(from, value), now or
//                                         later, from this process or another
//   handle_cast(message& m)               casts (dropped if absent)
//   handle_info(message& m)               every other message: exit_signal when
//                                         trapping exits, down, timers, sends
//   terminate(const exit_reason& reason)  on stop, on an exception from a
//                                         callback, on an exit signal from the
//                                         parent while trapping exits; not on
//                                         kill or an untrapped exit signal
// ember::stop(reason) in a callback ends the server when the callback
// returns (after terminate). A failed call, start or stop throws
// ember::exit_error, whose reason() is noproc, timeout or the server's exit
// reason; uncaught, it ends the caller.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <typeinfo>
#include <string>
#include <utility>

#include "ember/core/error.hpp"
#include "ember/core/message.hpp"
#include "ember/core/pid.hpp"
#include "ember/core/process.hpp"
#include "ember/core/receive.hpp"
#include "ember/core/request.hpp"
#include "ember/core/spawn.hpp"
#include "ember/sched/timer.hpp"
#include "ember/otp/registry.hpp"

namespace ember {

// Who made a call, and which call: where its reply goes. Copyable; keep it
// to reply later (a deferred reply), from any process.
class from {
 public:
  from() noexcept = default;
  from(pid caller, std::uint64_t alias) noexcept : caller_(caller), alias_(alias) {}
  pid caller() const noexcept { return caller_; }
  std::uint64_t alias() const noexcept { return alias_; }
  explicit operator bool() const noexcept { return alias_ != 0; }

 private:
  pid caller_{};
  std::uint64_t alias_ = 0;
};

// Answers a call. A reply to a call that has ended (timed out, its caller
// gone) is dropped, never seen by the caller. A copy of `value` is sent.
template <class T>
void reply(const from& to, T&& value) {
  detail::reply_send(to.caller(), to.alias(), detail::make_envelope(std::forward<T>(value)));
}

namespace gen_server {

inline constexpr std::chrono::milliseconds default_timeout{5000};
inline constexpr std::chrono::milliseconds infinity = std::chrono::milliseconds::max();

// Delivered to handle_info when idle_timeout(t) was asked for and no
// message came within t (gen_server's `timeout`).
struct timeout {};

// In a callback: if no message arrives within `t` after this callback
// returns, handle_info receives gen_server::timeout{} (any message cancels it).
void idle_timeout(std::chrono::milliseconds t);

struct options {
  std::string name{};                 // registered under this name ("": none)
  name_registry* registry = nullptr;  // with a name: register there, not locally
  // How long start waits for init (infinity: for ever); past it the server
  // is killed and start fails with timeout.
  std::chrono::milliseconds init_timeout = infinity;
  spawn_options spawn{};
};

}  // namespace gen_server

namespace detail {

// The behaviour's side of a server, shared by every state type (otp/gen_server.cpp).
struct server_base : process_body {
  pid parent{};           // start_link: its exit signal (when trapping) stops the server
  // What only the start needs (the starter to tell, the name to take):
  // made by start_server when there is something to wait for, dropped once
  // init is done, so that an idle server does not carry it.
  struct start_info {
    pid starter{};
    std::uint64_t ack_tag = 0;
    std::string name;
    name_registry* registry = nullptr;
  };
  start_info* starting = nullptr;
  bool init_done = false;  // terminate runs only for a server whose init completed
  // Idle timeout (gen_server::idle_timeout): requested in a callback, armed
  // after it, cancelled by the next message.
  std::int64_t idle_request_ns = -1;
  std::uint64_t idle_seq = 0;
  timer_ref idle_timer{};

  ~server_base() override { delete starting; }
  // Before init: registers the name; throws (ending the server) if taken.
  void register_own_name();
  // After init: tells the starter, and drops the start information.
  void ack_started();
  // Before a callback: whether the message is the state's to handle, the
  // behaviour's own (a system message, the parent's exit, a stale timer:
  // skip), or the idle timeout firing.
  enum class pre : std::uint8_t { handle, skip, idle_timeout };
  pre before_message(envelope* e);
  void after_message();
};

template <class S>
struct server_body final : server_base {
  S state;
  template <class... A>
  explicit server_body(A&&... args) : state(std::forward<A>(args)...) {
    is_handler = true;
    has_terminate = true;
  }
  void init() override {
    register_own_name();
    if constexpr (requires(S& s) { s.init(); }) state.init();
    if (stop_requested()) return;  // init chose to stop: the start fails with its reason
    init_done = true;
    ack_started();
    after_message();
  }
  void handle(envelope* e) override {
    pre what = before_message(e);
    if (what == pre::skip) return;
    if (what == pre::idle_timeout) {
      value_envelope<gen_server::timeout> tick{};
      message m(&tick);
      if constexpr (requires(S& s) { s.handle_info(m); }) state.handle_info(m);
      after_message();
      return;
    }
    message m(e);
    if (e->flavor == flavor_call) {
      if constexpr (requires(S& s) { s.handle_call(m, ember::from{}); }) {
        state.handle_call(m, ember::from(e->caller, e->alias));
      } else {
        throw error(errc::bad_message_type, "gen_server: a call (" + m.type_name() +
                                                ") to a server that has no handle_call");
      }
    } else if (e->flavor == flavor_cast) {
      if constexpr (requires(S& s) { s.handle_cast(m); }) state.handle_cast(m);
    } else {
      if constexpr (requires(S& s) { s.handle_info(m); }) state.handle_info(m);
    }
    after_message();
  }
  void terminate(const exit_reason& reason) override {
    if (!init_done) return;  // as OTP: a failed init is not followed by terminate
    if constexpr (requires(S& s) { s.terminate(reason); }) state.terminate(reason);
  }
};

enum class start_mode : std::uint8_t { plain, link, monitor };
struct started_server {
  pid id;
  monitor_ref ref;
};
// Spawns body and, if it has anything to do first (init, a name), waits for
// it: throws exit_error(start_failed) with the server's exit reason if it
// fails, or timeout.
started_server start_server(server_base* body, const gen_server::options& opts, start_mode mode,
                            bool has_init);

// An argument for the state's constructor, copied (in the global heap) when
// it can be: a moved value would keep the memory it owns in the caller's
// heap, which goes when the caller exits.
template <class A>
decltype(auto) owned_arg(A&& a) {
  using D = std::decay_t<A>;
  if constexpr (std::is_copy_constructible_v<D> && !std::is_trivially_copyable_v<D>) {
    return D(static_cast<const D&>(a));
  } else {
    return std::forward<A>(a);
  }
}

template <class S, class... A>
started_server start_typed(const gen_server::options& opts, start_mode mode, A&&... args) {
  server_base* body;
  {
    global_heap_scope runtime_owned;  // the state belongs to the server, not to the caller's heap
    body = new server_body<S>(owned_arg(std::forward<A>(args))...);
  }
  return start_server(body, opts, mode, requires(S & s) { s.init(); });
}

[[noreturn]] void throw_call_failed(const server_ref& server, const exit_reason& reason,
                                    std::chrono::milliseconds timeout);
[[noreturn]] void throw_bad_reply(const server_ref& server, envelope* reply, const std::type_info& expected);
std::int64_t timeout_ns(std::chrono::milliseconds t) noexcept;
void send_flavored(pid to, envelope* e, message_flavor flavor);

template <class R>
R take_reply(const server_ref& server, request_outcome&& out, std::chrono::milliseconds timeout) {
  if (out.status != request_status::replied) throw_call_failed(server, out.reason, timeout);
  std::unique_ptr<envelope, envelope_deleter> owned(out.reply);
  if constexpr (std::is_void_v<R>) {
    return;
  } else {
    if (out.reply->key != key_of<R>()) throw_bad_reply(server, owned.release(), typeid(R));
    return std::move(static_cast<value_envelope<R>*>(out.reply)->value);
  }
}

}  // namespace detail

namespace gen_server {

// Starts a server whose state is S(args...). start_link links it to the
// caller (atomically); start_monitor monitors it. Returns once init has
// run. Throws exit_error(start_failed) if init fails (the reason is its
// exception, exit or stop reason), the name is taken (reason
// "already_started", whose value<pid>() is the holder) or init_timeout passes.
template <class S, class... A>
pid start(const options& opts, A&&... args) {
  return detail::start_typed<S>(opts, detail::start_mode::plain, std::forward<A>(args)...).id;
}
template <class S, class... A>
pid start_link(const options& opts, A&&... args) {
  return detail::start_typed<S>(opts, detail::start_mode::link, std::forward<A>(args)...).id;
}
template <class S, class... A>
std::pair<pid, monitor_ref> start_monitor(const options& opts, A&&... args) {
  auto s = detail::start_typed<S>(opts, detail::start_mode::monitor, std::forward<A>(args)...);
  return {s.id, s.ref};
}
// Without options.
template <class... A>
constexpr bool first_is_options = false;
template <class F, class... A>
constexpr bool first_is_options<F, A...> = std::is_same_v<std::remove_cvref_t<F>, options>;
template <class S, class... A>
  requires(!first_is_options<A...>)
pid start(A&&... args) {
  return detail::start_typed<S>(options{}, detail::start_mode::plain, std::forward<A>(args)...).id;
}
template <class S, class... A>
  requires(!first_is_options<A...>)
pid start_link(A&&... args) {
  return detail::start_typed<S>(options{}, detail::start_mode::link, std::forward<A>(args)...).id;
}
template <class S, class... A>
  requires(!first_is_options<A...>)
std::pair<pid, monitor_ref> start_monitor(A&&... args) {
  auto s = detail::start_typed<S>(options{}, detail::start_mode::monitor, std::forward<A>(args)...);
  return {s.id, s.ref};
}

// Sends `request` to the server and waits up to `timeout` for its reply,
// which must be an R (R = void: any reply). The caller monitors the server
// for the call. Throws exit_error(call_failed) with reason noproc (no such
// server), the server's exit reason (it died before replying) or timeout; a
// reply that comes later is dropped. Throws error(bad_message_type) if the
// reply is not an R.
template <class R = void, class Req>
R call(server_ref server, Req&& request, std::chrono::milliseconds timeout = default_timeout) {
  pid to = server.resolve();
  if (!to) detail::throw_call_failed(server, exit_reason::noproc(), timeout);
  monitor_ref alias = detail::request_send(to, detail::make_envelope(std::forward<Req>(request)));
  return detail::take_reply<R>(server, detail::request_wait(alias, detail::timeout_ns(timeout)), timeout);
}

// Sends `msg` to the server's handle_cast. Never fails (a server that does
// not exist is ignored, as in OTP).
template <class M>
void cast(server_ref server, M&& msg) {
  pid to = server.resolve();
  if (to) detail::send_flavored(to, detail::make_envelope(std::forward<M>(msg)), detail::flavor_cast);
}

// Stops the server with `reason` (its terminate runs) and waits until it
// has exited. Throws exit_error(call_failed): noproc if there is no such
// server, timeout, or the reason it exited with if that is another one.
void stop(server_ref server, exit_reason reason = exit_reason::normal(),
          std::chrono::milliseconds timeout = infinity);

}  // namespace gen_server
}  // namespace ember
