// Request and reply with aliases: the runtime side of gen_server's call.
//
// A call monitors its server for exactly as long as it waits, and its
// monitor reference doubles as an alias (Erlang's monitor alias): a reply
// is addressed to (caller, alias) and dropped on arrival once the call has
// ended, so a reply that comes after a timeout never reaches the caller's
// mailbox. Used by include/ember/otp; not an API of its own.
#pragma once

#include <cstdint>

#include "ember/core/exit_reason.hpp"
#include "ember/core/message.hpp"
#include "ember/core/pid.hpp"

namespace ember::detail {

// Sends `request` to `server` as a call and starts waiting for its reply:
// the server is monitored from the moment the request reaches it (a server
// that is not alive answers with down(noproc)). Returns the call's alias.
// Takes ownership of request.
monitor_ref request_send(pid server, envelope* request);

enum class request_status : std::uint8_t { replied, down, timeout };
struct request_outcome {
  request_status status;
  envelope* reply;     // replied: the reply, owned by the caller
  exit_reason reason;  // down: the server's exit reason
};
// Waits for the reply of the call `alias` (timeout_ns < 0: for ever), then
// ends the call: the monitor and the alias are gone whatever happened.
request_outcome request_wait(monitor_ref alias, std::int64_t timeout_ns);

// Sends `reply` to the caller of a call. Takes ownership of reply. From the
// server itself, it also ends the server's side of the call's monitor.
void reply_send(pid caller, std::uint64_t alias, envelope* reply);

}  // namespace ember::detail
