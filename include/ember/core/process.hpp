// What a running process can do to itself and to others: self, send, link,
// monitor, exit, trap_exit, names, its mailbox. Inside a process only, except
// where a function says otherwise; outside processes use ember::runtime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "ember/core/exit_reason.hpp"
#include "ember/core/message.hpp"
#include "ember/core/pid.hpp"

namespace ember {

namespace detail {
struct node;  // the runtime core that owns processes (opaque)
// node == nullptr means "the node of the calling process".
void send_envelope(node* n, pid to, envelope* e);
void send_envelope(node* n, std::string_view name, envelope* e);
}  // namespace detail

namespace detail {
struct process_body;
// What the calling process runs (its spawn body); nullptr outside processes.
process_body* current_body() noexcept;
// True once the calling handler process has called stop().
bool stop_requested() noexcept;
}  // namespace detail

// True when the calling code runs inside an ember process.
bool in_process() noexcept;

// The pid of the calling process. Throws error(not_in_process) outside one.
pid self();

// Sends a copy of `value` (or moves it) to `to`. Never blocks. Sending to a
// pid that is not alive does nothing, as in Erlang.
template <class T>
void send(pid to, T&& value) {
  detail::send_envelope(nullptr, to, detail::make_envelope(std::forward<T>(value)));
}

// Sends to a registered name; throws error(no_such_name) if nobody has it.
template <class T>
void send(std::string_view name, T&& value) {
  detail::send_envelope(nullptr, name, detail::make_envelope(std::forward<T>(value)));
}

// Links the caller and `other`: when either exits with a reason other than
// normal, the other gets an exit signal. Linking to a pid that is not alive
// sends the caller an exit signal with reason noproc.
void link(pid other);
void unlink(pid other);

// Monitors `target`: when it exits, the caller gets down{ref, target, reason}.
// A target that is not alive gives down with noproc at once.
monitor_ref monitor(pid target);
// Removes a monitor. With flush, also removes its down message if it already
// arrived. Returns false if the monitor had already fired (or was unknown).
bool demonitor(monitor_ref ref, bool flush = false);

// While on, exit signals (except kill) become exit_signal messages instead
// of ending the process. Returns the previous setting.
bool trap_exit(bool on);

// Sends `target` an exit signal. kill cannot be trapped and ends the target
// with reason killed; normal is ignored by a target unless it is the caller.
void exit(pid target, exit_reason reason);
// Ends the calling process with `reason`, unwinding its stack (by a C++
// exception: microseconds).
[[noreturn]] void exit(exit_reason reason);
// In a handler process: ends it with `reason` when the current handler call
// returns, without unwinding anything (as gen_server's {stop, Reason}); the
// cheap way to stop. In a function process: the same as exit(reason).
void stop(exit_reason reason = exit_reason::normal());

// True if `p` names a live process on this node.
bool is_alive(pid p);

// A snapshot of one process, safe to take from any process or thread (the
// figures may have moved by the time they are read).
struct process_snapshot {
  std::size_t heap_bytes = 0;        // live bytes in its heap, counted by size class
  std::size_t heap_peak_bytes = 0;   // the most its heap held at once
  std::size_t heap_limit_bytes = 0;  // spawn_options::max_heap_bytes (0: none)
  std::uint64_t reductions = 0;      // spent in its completed turns (see check())
};
// nullopt if p is not alive. Outside processes: runtime::process_info.
std::optional<process_snapshot> process_info(pid p);
namespace detail {
std::optional<process_snapshot> process_info_on(node& n, pid p);
}

// Gives the scheduler to other runnable processes, then continues.
void yield();

// A cheap point where a long computation lets others run: it costs one
// reduction, and once the process has spent its budget
// (runtime_options::reductions) it yields, and an exit signal sent to it
// takes effect. Outside processes it does nothing. Every runtime call
// (send, receive, spawn, link, monitor, timers) costs reductions the same
// way; allocating in the process heap costs them too (one per refill of a
// size class, one per 4 KiB of a large block), the yield then happening at
// the next runtime call.
void check();

// The number of messages waiting in the caller's mailbox.
std::size_t message_queue_len();
// Drops every message in the caller's mailbox; returns how many.
std::size_t flush();

// Names: register_name fails with error(name_taken) if the name is in use,
// error(already_registered) if the process has a name, error(not_alive) if
// `p` is dead. A name is freed when its process exits.
void register_name(std::string name, pid p);
// The pid registered under `name`, or the null pid.
pid whereis(std::string_view name);
// Removes a name; returns false if nobody had it.
bool unregister(std::string_view name);

}  // namespace ember
