// ember::error — the one exception type ember's API throws.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "ember/core/exit_reason.hpp"

namespace ember {

enum class errc : std::uint8_t {
  not_in_process,     // a process-only call made from a thread that runs no process
  name_taken,         // register_name: the name is registered already
  no_such_name,       // send/whereis by a name that nobody registered
  not_alive,          // the operation needs a live process and the pid names none
  already_registered, // register_name: the process has a name already
  system_limit,       // a system resource ran out (stack mappings, process slots)
  invalid_argument,   // bad configuration or argument
  bad_message_type,   // message::get<T> on a message of another type
  runtime_stopped,    // the runtime is shut down
  call_failed,        // a gen_server call or stop: the server exited, never existed or timed out
  start_failed,       // starting a gen_server or supervisor child: init failed or timed out
  not_found,          // supervisor: no child with that id (or pid)
  already_present,    // supervisor: a child with that id exists
  running,            // supervisor: the child is running (terminate it first)
  io_failed,          // a socket or file operation failed (net::net_error: errno and address)
  timed_out,          // a socket operation's timeout passed
  closed,             // the peer closed the connection (read_exact, read_line), or the socket is closed
  child_failed,       // a child of an ember::scope ended abnormally (scope_error)
  bad_message,        // a message from the wire is malformed (distribution)
  not_serializable,   // a value sent to another node is not a wire message (ember::wire<S>)
  redis_error,        // Redis answered with an error, or spoke no protocol we know
  unavailable,        // a node or Redis is unreachable, or a bounded send queue is full
};

class error : public std::runtime_error {
 public:
  error(errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

// An operation that depended on another process failed because that
// process exited, did not exist, or did not answer in time. reason() says
// which, as a value to match on: noproc, timeout, or the process's own exit
// reason. Thrown by gen_server::call / stop / start and the supervisor API;
// uncaught, it ends the calling process (as a failed call exits the caller
// in Erlang).
class exit_error : public error {
 public:
  exit_error(errc code, const std::string& what, exit_reason reason)
      : error(code, what), reason_(std::move(reason)) {}
  const exit_reason& reason() const noexcept { return reason_; }

 private:
  exit_reason reason_;
};

}  // namespace ember
