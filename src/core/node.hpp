// The runtime core as the process layer sees it: tables, pools, counters,
// and the scheduling hooks the sched layer implements.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include "core/process.hpp"
#include "core/process_table.hpp"
#include "core/registry.hpp"
#include "core/stack_pool.hpp"
#include "ember/sched/runtime.hpp"

namespace ember::detail {

// The distribution layer's side of the core (src/dist implements it): where
// envelopes for processes of other nodes go. Installed when the node joins
// a cluster; owned by the node from then on, so that a thread still inside
// route() never sees it freed.
struct remote_router {
  virtual ~remote_router() = default;
  // An envelope (a user message or a signal) for a process of another node.
  // Takes it; never throws (what cannot be sent is answered as Erlang does:
  // a link or monitor of an unreachable node is answered noconnection or
  // noproc, a message is dropped and counted).
  virtual void route(pid to, envelope* e) noexcept = 0;
  // Throws ember::error if a user message sent by the caller could never
  // be carried to `to` (not a wire message, no cluster): send's clear error.
  virtual void check_sendable(pid to, const envelope& e) const = 0;
};

struct node {
  explicit node(const runtime_options& o)
      : options(o), table(o.node_id), stacks(o.stack_size) {}
  virtual ~node() = default;

  runtime_options options;
  process_table table;
  stack_pool stacks;
  registry names;
  std::atomic<std::uint64_t> next_ref{1};  // refs are handed out in blocks (new_ref)
  const std::uint64_t instance = next_instance();
  std::atomic<std::int64_t> live{0};
  std::atomic<std::uint64_t> spawned_outside{0};  // spawns by non-scheduler threads
  std::atomic<bool> stopping{false};
  std::atomic<remote_router*> remote{nullptr};
  std::unique_ptr<remote_router> remote_owner;  // set once, with `remote`

  // This node's id in its cluster (0: none). Local pids carry node 0, as in
  // Erlang; the same pid with the cluster id (how other nodes name it, and
  // how it may come back inside a message) names the same process.
  std::atomic<std::uint32_t> cluster_id{0};
  bool is_local(pid p) const noexcept {
    return p.node() == table.node_id() || (p.node() == cluster_id.load(std::memory_order_relaxed) && p);
  }
  // The form local pids are kept in (links, monitors, names): node 0.
  pid canonical(pid p) const noexcept {
    return p.node() == cluster_id.load(std::memory_order_relaxed) && p.node() != 0
               ? pid(table.node_id(), p.slot(), p.generation())
               : p;
  }

  static std::uint64_t next_instance() noexcept {
    static std::atomic<std::uint64_t> count{0};
    return count.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  // A reference unique for the node's life (monitors, call aliases). Each
  // thread takes them from a block of its own: a call makes one, and one
  // counter written by every core per call would bounce between them.
  std::uint64_t new_ref() noexcept {
    struct block {
      std::uint64_t owner = 0;  // the node's instance (an address may be reused by a later node)
      std::uint64_t next = 0, end = 0;
    };
    static constexpr std::uint64_t block_size = 1024;
    static thread_local block b;
    if (b.owner != instance || b.next == b.end) {
      b.owner = instance;
      b.next = next_ref.fetch_add(block_size, std::memory_order_relaxed);
      b.end = b.next + block_size;
    }
    return b.next++;
  }

  // p became runnable: its mailbox push saw WAITING, or it was just spawned
  // (hint: preferred scheduler or -1).
  virtual void make_runnable(process* p, int hint) noexcept = 0;
  // The calling thread's caches, or nullptr if it is not one of our schedulers.
  virtual process_table::slot_cache* local_slots() noexcept = 0;
  virtual stack_pool::cache* local_stacks() noexcept = 0;
  // Timers.
  virtual std::uint64_t arm_timer(std::chrono::nanoseconds delay, pid to, envelope* e) = 0;
  virtual bool cancel_timer(std::uint64_t id) noexcept = 0;
  virtual void cancel_timers_for(pid p) noexcept = 0;
  // A process finished exiting (its stack released, its self-reference gone).
  virtual void process_exited() noexcept = 0;
  // Counts a spawn (per scheduler: no shared read-modify-write).
  virtual void count_spawn() noexcept = 0;
  // Counts a turn ended by the reductions budget.
  virtual void count_reduction_yield() noexcept = 0;
};

// Runtime-side process operations (src/core/process.cpp).
void deliver(node& n, pid to, envelope* e) noexcept;       // send, no reductions
// An envelope that came from another node for a local process: as deliver,
// but a link, monitor or call to a process that is not alive is answered
// (noproc) to its remote sender, as push_referenced's callers do locally.
void deliver_from_remote(node& n, pid to, envelope* e) noexcept;
void push_referenced(node& n, process* p, pid to, envelope* e) noexcept;  // p acquired
void finalize(node& n, process* p) noexcept;               // last reference gone
void release_ref(node& n, process* p) noexcept;            // release + finalize
void envelope_cache_release() noexcept;                     // at thread exit
void function_entry(transfer_t t) noexcept;                // base of a function process
void handler_entry(transfer_t t) noexcept;                 // base of a handler turn
// Ends a process that cannot get a stack to run on (on the caller's stack).
void exit_without_stack(node& n, process* p, exit_reason reason) noexcept;
// What ended a process from a signal handler (fault.cpp); signal 0: none.
struct fault_info {
  int signal = 0;
  void* address = nullptr;
  bool overflow = false;
};
// A process that switched out as `abandoned`: its exit path, run on the
// scheduler's stack, then its heap reclaimed.
void end_abandoned(node& n, process* p, const fault_info& fault) noexcept;
// From the fault handler: ends the current process without unwinding.
[[noreturn]] void abandon_on_fault(process& p) noexcept;
// Crash isolation (fault.cpp): handlers installed once per OS process; an
// alternate signal stack per scheduler thread.
void install_fault_handlers();
const char* fault_signal_name(int sig) noexcept;  // "SIGSEGV"...; async-signal-safe
struct signal_stack {
  void* memory = nullptr;
  std::size_t size = 0;
  void* previous = nullptr;
  std::size_t previous_size = 0;
  int previous_flags = 0;
};
signal_stack make_signal_stack() noexcept;
void drop_signal_stack(const signal_stack& s) noexcept;
// Reclaims an exited process's heap (after its last code ran).
void release_heap(process* p) noexcept;
void register_name_on(node& n, std::string name, pid id);

}  // namespace ember::detail
