// Remote spawn: a node starts, on another node, a function that node has
// registered by name (Erlang's spawn/4 with a registered function; C++
// cannot send code, so the callee names what may be started).
//
//   // on every node that serves "worker":
//   ember::register_spawnable<Job>(me, "worker", [](ember::wire<Job> job) { ... });
//   // anywhere, inside a process:
//   ember::pid w = ember::spawn_on(other_node_id, "worker", ember::wire<Job>::build(...));
//
// The argument is a wire message, copied into the new process. spawn_on
// returns the new process's pid (cluster form) once it exists; it throws
// error(not_found) if the node has no such function, error(bad_message_type)
// if the argument's type is not the one registered, and exit_error
// (call_failed: noproc, noconnection, timeout) if the node cannot answer.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>

#include "ember/core/pid.hpp"
#include "ember/dist/node.hpp"
#include "ember/dist/wire.hpp"

namespace ember {

namespace dist::detail {
using spawnable_fn = std::function<void(std::span<const std::byte>)>;
void register_spawnable(node& n, std::string name, std::uint64_t schema_id, std::string type_name, spawnable_fn fn);
pid spawn_on(std::uint32_t node_id, const std::string& name, std::uint64_t schema_id,
             std::span<const std::byte> argument, std::chrono::milliseconds timeout);
}  // namespace dist::detail

// Registers `fn` under `name` on node `n` (replacing an earlier one).
inline void register_spawnable(node& n, std::string name, std::function<void()> fn) {
  dist::detail::register_spawnable(n, std::move(name), 0, "no argument",
                                   [fn = std::move(fn)](std::span<const std::byte>) { fn(); });
}
template <class S>
void register_spawnable(node& n, std::string name, std::function<void(wire<S>)> fn) {
  dist::detail::register_spawnable(n, std::move(name), wire<S>::schema_id(), wire<S>::type_name(),
                                    [fn = std::move(fn)](std::span<const std::byte> b) { fn(wire<S>::from_bytes(b)); });
}

// Inside a process: starts `name` on node `node_id`.
inline pid spawn_on(std::uint32_t node_id, const std::string& name,
                    std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  return dist::detail::spawn_on(node_id, name, 0, {}, timeout);
}
template <class S>
pid spawn_on(std::uint32_t node_id, const std::string& name, const wire<S>& argument,
             std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  return dist::detail::spawn_on(node_id, name, wire<S>::schema_id(), argument.bytes(), timeout);
}

}  // namespace ember
