// Introspection: what every process and scheduler is doing, from any thread,
// while the runtime runs (Erlang's process_info, erlang:statistics and
// observer's tables). The dashboard (observe/serve.hpp) and ember-top are
// built on these.
//
// Nothing here stops the world. A process table is read slot by slot; each
// live process is pinned by a reference for the few loads that copy its
// figures, which its own thread publishes with relaxed stores, so a row is
// a consistent-enough picture of a process that keeps running. Links and
// monitors belong to the process's own thread: process_detail asks the
// process for them (a system signal it answers at its next runtime call or
// wait, as Erlang's process_info does for another process), with a time
// limit.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ember/core/pid.hpp"
#include "ember/sched/runtime.hpp"

namespace ember::observe {

enum class process_status : std::uint8_t {
  runnable,  // in a run queue
  running,   // on a scheduler now
  waiting,   // in receive (or waiting for a socket, a timer, a reply)
  blocking,  // suspended in ember::blocking (a file call, resolve)
  exiting,   // its exit path runs
};
const char* to_string(process_status s) noexcept;

// One process, as a table of every process shows it.
struct process_row {
  pid id;
  process_status status = process_status::runnable;
  std::string name;          // registered name, or ""
  std::string label;         // observe::set_label, or ""
  std::string initial_call;  // what it was spawned to run: the function
                             // object's type, demangled (a lambda names the
                             // function it was written in) or the server's state type
  std::size_t heap_bytes = 0;       // live bytes in its heap
  std::size_t heap_peak_bytes = 0;  // the most its heap held at once
  std::size_t stack_bytes = 0;      // stack in use at its last switch (0: it holds none)
  std::size_t message_queue_len = 0;  // messages in its mailbox, as of its last look at it
  std::uint64_t reductions = 0;       // spent in its completed turns
  int scheduler = -1;                 // where it runs now, or -1
  std::chrono::microseconds run_time{0};  // time on a scheduler (sampled, ~1 ms resolution)
  pid parent;                         // who spawned it (the null pid: outside any process)
  std::size_t memory() const noexcept { return heap_bytes + stack_bytes; }
};

// One process in full: the row, and what it is linked to and monitors.
struct process_detail : process_row {
  bool trap_exit = false;
  // Answered by the process itself; false if it did not answer in time
  // (a process stuck in a long blocking call): the lists are then empty.
  bool relations_known = false;
  std::vector<pid> links;
  std::vector<pid> monitors;      // processes it monitors
  std::vector<pid> monitored_by;  // processes monitoring it
};

// Every live process (a snapshot taken slot by slot; processes spawned or
// ended meanwhile may or may not appear).
std::vector<process_row> processes(runtime& rt);
// One process, or nullopt if it is not alive. Waits up to `wait` for the
// process's answer about its relations.
std::optional<process_detail> process_info(runtime& rt, pid p,
                                           std::chrono::milliseconds wait = std::chrono::milliseconds(500));
// Labels a process for the tables (Erlang's proc_lib:set_label): the
// calling process. Labels name kinds of process ("conn 10.0.0.7:5000" is
// fine, a new string per message is not): each distinct label is kept for
// the runtime's life, up to 65,536 of them (more are cut to "…").
void set_label(std::string_view label);

struct scheduler_row {
  unsigned index = 0;
  bool spare = false;        // a spare thread (takes over from a blocked scheduler)
  bool active = true;        // spares: running now
  double utilization = 0;    // share of time in process turns since the last sample (0..1)
  std::size_t run_queue = 0; // processes in its ring and next slot
  std::uint64_t steals = 0;  // processes it stole (since start)
};

struct runtime_sample {
  runtime_stats stats;
  std::vector<scheduler_row> schedulers;  // primaries, then the active spares
  // Messages taken into mailboxes since start (signals excluded): a send
  // counts when its receiver takes it in; one to a dead process never.
  std::uint64_t messages_delivered = 0;
  std::uint64_t reductions = 0;           // since start, all processes
  // Blocking pool (ember::blocking): threads started, running a call, calls waiting.
  std::size_t blocking_threads = 0, blocking_busy = 0, blocking_queued = 0;
  // Memory, bytes: the OS process's resident set; process heaps (segments
  // held); process stacks (address space mapped for them, held or pooled:
  // a stack is resident only as far as it was used); the global heap
  // (malloc: ember::shared values, messages in transit, runtime tables).
  std::size_t memory_rss = 0, memory_heaps = 0, memory_stacks = 0, memory_off_heap = 0;
  std::chrono::steady_clock::time_point at;
  std::chrono::nanoseconds uptime{0};  // since the runtime started
  long os_pid = 0;
};
// Runtime-wide figures. Utilization is measured between two calls of
// sample() on the same runtime (the first call gives it since start).
runtime_sample sample(runtime& rt);

// The supervision tree from the running applications' top supervisors
// (ember::start), walked with which_children.
struct tree_node {
  pid id;             // null for a child that is not running
  std::string child;  // child id, or the application's name for a root
  bool supervisor = false;
  std::vector<tree_node> children;
};
std::vector<tree_node> supervision_tree(runtime& rt);

}  // namespace ember::observe
