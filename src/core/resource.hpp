// Resources owned by processes, and waiting for an event from another
// thread.
//
// Ownership. A socket or a file opened through ember is owned by the
// process that opened it: it is entered in the process's resource list
// (process_relations::resources), which lives in the control block, not on
// the stack. However the process ends (return, exception, exit signal,
// kill, heap limit, stack overflow: the last two drop the stack without
// unwinding, so a destructor on the stack never runs), its exit path
// (do_exit) releases every resource still listed, newest first. A process
// gives a resource to another with give_resource: it leaves the giver's
// list at once and travels as a signal (sig_adopt) in the receiver's
// mailbox; the receiver enters it in its list when it takes in its
// mailbox. If the receiver is dead, or dies before that, the signal is
// destroyed and destroying it releases the resource: a resource always has
// exactly one owner, or is being released.
//
// Waking. await_wake(token, deadline) suspends the calling process until a
// sig_wake carrying `token` reaches it (post_wake, from any thread: the I/O
// poller) or the deadline passes. Messages that arrive meanwhile are taken
// into the mailbox and stay there; exit signals end the process as usual.
// A wake that comes after its wait has ended is dropped. Tokens need not
// be unique: a stale wake that happens to match only makes the waiter
// retry its operation, which the I/O layer always does.
#pragma once

#include <cstdint>

#include "core/process.hpp"

namespace ember::detail {

// The calling process takes ownership (throws error(not_in_process)).
void own_resource(resource* r, std::uint32_t gen);
// The calling process gives it up (no-op if it does not hold it).
void disown_resource(resource* r, std::uint32_t gen) noexcept;
// Moves it from the calling process to `to` (released if `to` is dead).
void give_resource(resource* r, std::uint32_t gen, pid to);

// Steady-clock nanoseconds; never: INT64_MAX.
std::int64_t steady_now_ns() noexcept;
inline constexpr std::int64_t no_deadline = INT64_MAX;
// False when the deadline passed first.
bool await_wake(std::uint64_t token, std::int64_t deadline_ns);
void post_wake(node& n, pid to, std::uint64_t token) noexcept;

}  // namespace ember::detail
