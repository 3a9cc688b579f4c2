// ember::scope — structured concurrency inside a process (Eio's Switch,
// ZIO's scoped, Trio's nursery).
//
//   ember::scoped([&](ember::scope& s) {
//     s.spawn([&] { fetch(a); });
//     s.spawn([&] { fetch(b); });
//     s.join();                     // both done, or the first failure thrown
//   });                             // whatever still runs is stopped here
//
// A scope is opened by the process that constructs it and ends when it is
// destroyed (nested scopes end innermost first). Processes spawned through
// it are its children:
//   - when the scope ends, the children still running are killed, and the
//     end waits until they are gone (their sockets closed, their exits
//     reported): nothing started in a scope outlives it;
//   - if a child ends abnormally (an exception, a crash, a kill from
//     elsewhere), the scope's other children are killed at once and the
//     failure propagates to the scope's process: its next runtime call
//     inside the scope (a receive, a socket wait, join) throws scope_error,
//     whose reason() is the child's exit reason. A normal exit is not a
//     failure;
//   - if the scope's process dies however it dies (kill, heap limit, stack
//     overflow: even without unwinding), the children are killed.
// Sockets and other resources the process acquires while the scope is its
// innermost are released when the scope ends (unless they were moved to
// another process meanwhile).
//
// Children are watched by the runtime, not by the process's mailbox: no
// down message from a child ever appears in a receive.
#pragma once

#include <cstddef>
#include <utility>

#include "ember/core/error.hpp"
#include "ember/core/pid.hpp"
#include "ember/core/spawn.hpp"

namespace ember {

// A child of a scope failed; reason() is its exit reason.
class scope_error : public exit_error {
 public:
  scope_error(const std::string& what, exit_reason reason, pid child)
      : exit_error(errc::child_failed, what, std::move(reason)), child_(child) {}
  pid child() const noexcept { return child_; }

 private:
  pid child_;
};

namespace detail {
struct scope_state;
scope_state* scope_open();
void scope_close(scope_state* s) noexcept;
pid scope_spawn(scope_state* s, process_body* body, const spawn_options& opts);
void scope_join(scope_state* s);
std::size_t scope_running(const scope_state* s) noexcept;
}  // namespace detail

class scope {
 public:
  // Opens a scope in the calling process (error(not_in_process) outside).
  scope() : s_(detail::scope_open()) {}
  // Ends it: kills the children still running and waits for their exits,
  // then releases the resources acquired in it.
  ~scope() { detail::scope_close(s_); }
  scope(const scope&) = delete;
  scope& operator=(const scope&) = delete;

  // Spawns a child of this scope (from the scope's own process only).
  template <class F>
  pid spawn(F&& f, const spawn_options& opts = {}) {
    return detail::scope_spawn(s_, detail::make_body(std::forward<F>(f)), opts);
  }
  // Waits until every child has ended. Throws scope_error if one failed
  // (the others are killed first).
  void join() { detail::scope_join(s_); }
  // Children not yet ended.
  std::size_t running() const noexcept { return detail::scope_running(s_); }

 private:
  detail::scope_state* s_;
};

// Runs body(scope&) in a new scope, which ends when body returns or throws.
template <class F>
auto scoped(F&& body) -> decltype(body(std::declval<scope&>())) {
  scope s;
  return body(s);
}

}  // namespace ember
