// spawn: start a process. Two kinds share everything but the stack:
//   spawn(fn)               a function process: fn runs on its own stack for
//                           its whole life and may receive anywhere.
//   spawn(handler(state))   a handler process: state(message&) is called per
//                           message on a borrowed stack; idle, it holds no
//                           stack, only a control block and a mailbox.
#pragma once

#include <cstddef>
#include <concepts>
#include <type_traits>
#include <utility>

#include "ember/core/heap.hpp"
#include "ember/core/message.hpp"
#include "ember/core/pid.hpp"

namespace ember {

struct spawn_options {
  // Stack size in bytes for a function process (0: the runtime's default).
  // Memory is committed lazily; only touched pages cost RAM.
  std::size_t stack_size = 0;
  // The scheduler the process starts on (-1: the spawner's own; from a
  // thread that is not a scheduler, whichever is free).
  int scheduler = -1;
  // Cap on the process's heap, in bytes (0: none). An allocation that takes
  // its live bytes past the cap ends the process with exit reason
  // heap_limit, without unwinding; its heap is reclaimed whole.
  std::size_t max_heap_bytes = 0;
  // false: the process is never preempted asynchronously (by the time-slice
  // signal); it still yields when it spends its reductions in runtime calls.
  // For code that must not be interrupted at arbitrary instructions.
  bool preemptible = true;
};

namespace detail {
struct node;

// What a process runs. Function processes override run(); handler processes
// override handle() (and init() if the state has one).
struct process_body {
  virtual ~process_body() = default;
  virtual void run() {}
  virtual void init() {}
  virtual void handle(envelope* e) { (void)e; }
  // A handler process ending by stop(), by an exception from init or
  // handle, or by exit(reason) on itself (not by an exit signal: as
  // gen_server's terminate) calls this before its links and monitors fire.
  virtual void terminate(const exit_reason& reason) { (void)reason; }
  bool is_handler = false;
  bool has_init = false;
  bool has_terminate = false;
};

template <class F>
struct function_body final : process_body {
  F fn;
  explicit function_body(F f) : fn(std::move(f)) {}
  void run() override { fn(); }
};

template <class H>
struct handler_body final : process_body {
  H state;
  explicit handler_body(H h) : state(std::move(h)) {
    is_handler = true;
    has_init = requires(H& s) { s.init(); };
  }
  void init() override {
    if constexpr (requires(H& s) { s.init(); }) state.init();
  }
  void handle(envelope* e) override {
    message m(e);
    state(m);
  }
};

enum class spawn_link_mode : unsigned char { none, link, monitor, link_monitor };
struct spawned {
  pid id;
  monitor_ref ref;
};
// Takes ownership of body (deletes it if spawning fails).
spawned spawn_body(node* n, process_body* body, const spawn_options& opts, spawn_link_mode mode);

template <class F>
process_body* make_body(F&& f) {
  using D = std::decay_t<F>;
  static_assert(std::is_invocable_v<D&>, "ember::spawn: a function process takes no arguments "
                                         "(capture what it needs in a lambda)");
  // The body belongs to the child, not to the caller's heap: it is copied
  // (a move would keep what the captures own in the caller's heap, which
  // goes when the caller exits). Move-only captures are moved: make them in
  // a global_heap_scope if the caller may exit first.
  global_heap_scope runtime_owned;
  if constexpr (std::is_copy_constructible_v<D>) {
    return new function_body<D>(static_cast<const D&>(f));
  } else {
    return new function_body<D>(std::forward<F>(f));
  }
}
}  // namespace detail

// Wraps a state object for spawn: `state(message&)` is called for every
// message; an optional `state.init()` runs first, as soon as it is spawned.
template <class H>
struct handler_spec {
  H state;
};
template <class H>
handler_spec<std::decay_t<H>> handler(H&& state) {
  static_assert(std::is_invocable_v<std::decay_t<H>&, message&>,
                "ember::handler: the state must be callable as state(ember::message&)");
  return {std::forward<H>(state)};
}

namespace detail {
template <class F>
process_body* make_body(handler_spec<F>&& h) {
  global_heap_scope runtime_owned;  // copied, as a function body is
  if constexpr (std::is_copy_constructible_v<F>) {
    return new handler_body<F>(static_cast<const F&>(h.state));
  } else {
    return new handler_body<F>(std::move(h.state));
  }
}
template <class F>
process_body* make_body(handler_spec<F>& h) {
  global_heap_scope runtime_owned;
  return new handler_body<F>(h.state);
}
}  // namespace detail

// Starts a process on the caller's scheduler (inside a process; outside,
// use runtime::spawn). Throws error(system_limit) if no stack can be mapped,
// error(invalid_argument) for a stack_size outside [16 KiB, 1 GiB] (0 is the
// default) or a scheduler index out of range, error(runtime_stopped) once
// the runtime shuts down.
template <class F>
pid spawn(F&& f, const spawn_options& opts = {}) {
  return detail::spawn_body(nullptr, detail::make_body(std::forward<F>(f)), opts,
                            detail::spawn_link_mode::none).id;
}
// Spawns and links atomically: the child can never exit unlinked.
template <class F>
pid spawn_link(F&& f, const spawn_options& opts = {}) {
  return detail::spawn_body(nullptr, detail::make_body(std::forward<F>(f)), opts,
                            detail::spawn_link_mode::link).id;
}
// Spawns and monitors atomically.
template <class F>
std::pair<pid, monitor_ref> spawn_monitor(F&& f, const spawn_options& opts = {}) {
  auto s = detail::spawn_body(nullptr, detail::make_body(std::forward<F>(f)), opts,
                              detail::spawn_link_mode::monitor);
  return {s.id, s.ref};
}

}  // namespace ember
