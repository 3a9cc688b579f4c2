// The process control block and its states.
//
// A process is a control block in the node's process table (type-stable
// memory: a slot is reused, never freed, so a stale pointer is always safe to
// read), a mailbox, a body (what it runs) and, only while it runs or is
// suspended mid-run, a stack.
//
// States, and who owns what in each:
//   runnable   on exactly one run queue. Nobody touches stack or private
//              queue; senders only push to the incoming stack.
//   running    on one scheduler thread, which alone touches the control
//              block's non-atomic fields, the stack and the private queue,
//              and allocates from and frees into its heap (tl_heap is it).
//              Other threads only push blocks they free on its heap's
//              remote stack, and read its counters.
//   waiting    switched out, its mailbox head carries WAITING. The first
//              pusher to see WAITING owns the process and makes it runnable.
//              A handler process waiting between messages holds no stack.
//   exiting    alive bit cleared: no new references can be taken, sends to it
//              are no-ops; it still runs its exit code on its own stack (or,
//              abandoned after a heap limit or a fault, on its scheduler's),
//              its heap still current; the scheduler then reclaims the heap.
//   dead       the last reference dropped: finalize() drains what was pushed
//              meanwhile (answering link/monitor requests with noproc), bumps
//              the generation and frees the slot.
//
// References: `life` packs generation (32 bits), an alive bit and a count of
// references. Plain sends take none (see deliver() in process.cpp). Link
// and monitor requests, and name registration, acquire one (only while the
// generation matches and the alive bit is set), so that a request reaches
// either the live process or finalize(), which answers it with noproc. The
// process holds one reference on itself while alive. The holder that drops
// the count to zero after the alive bit is gone runs finalize(), once.
#pragma once

#include <boost/context/detail/fcontext.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <typeinfo>
#include <unordered_map>
#include <vector>

#include "core/heap.hpp"
#include "core/mailbox.hpp"
#include "core/stack_pool.hpp"
#include "ember/core/exit_reason.hpp"
#include "ember/core/pid.hpp"
#include "ember/core/spawn.hpp"

namespace ember::detail {

using boost::context::detail::fcontext_t;
using boost::context::detail::transfer_t;

struct node;

// Something a process owns that must be released when it exits by any path
// (a socket, a file): see resource.hpp. `gen` names one use of a reusable
// object, so a release that comes late finds it reused and does nothing.
struct resource {
  virtual void release(std::uint32_t gen) noexcept = 0;
  // Whether process p still owns this use of it (ownership can move).
  virtual bool held_by(std::uint32_t gen, pid p) const noexcept = 0;

 protected:
  ~resource() = default;
};
struct resource_entry {
  resource* r;
  std::uint32_t gen;
  std::uint32_t depth;  // how many scopes were open when it was acquired
};
struct scope_state;

// The scheduler's side of every switch: where a suspending process returns.
struct switch_point {
  fcontext_t ctx = nullptr;
  const void* stack_bottom = nullptr;  // ASan: the scheduler thread's stack
  std::size_t stack_size = 0;
  void* asan_fake = nullptr;
  void* tsan_fiber = nullptr;          // TSan: the scheduler thread's fiber
  // Counted by the processes it runs (owner thread, relaxed): messages
  // taken into mailboxes and reductions spent (observe::sample).
  std::atomic<std::uint64_t> messages_in{0};
  std::atomic<std::uint64_t> reductions{0};
};

// observe::process_status values of process::obs_state.
enum obs_state_value : std::uint8_t { obs_runnable = 0, obs_running, obs_waiting, obs_blocking_call, obs_exiting };

// Why a process switched back to its scheduler.
enum class suspend_reason : std::uint8_t {
  yield,    // still runnable: requeue at the tail
  wait,     // wants to wait for a message: park unless one arrived
  idle,     // handler process between messages: park and give the stack back
  exited,   // done: release its stack and its self-reference
  abandoned,  // ended without unwinding (heap limit, stack overflow): the
              // scheduler runs its exit path off its stack, which is dropped
  preempted,  // interrupted by the time-slice signal: requeue, pinned to
              // this scheduler until it yields normally (see preempt.cpp)
};

// Monitors, by reference: the ones a process holds, and the ones held on
// it. Both are mostly removed in the order they were added (a server
// answers its oldest call first; a supervisor stopping a million children
// hears their downs in the order it monitored them), so a removal leaves a
// hole and scans start at the first live entry: removing the oldest is
// O(1). Holes are compacted away once they outnumber the live entries.
class monitor_list {
 public:
  using entry = std::pair<monitor_ref, pid>;
  void add(monitor_ref ref, pid who) { v_.emplace_back(ref, who); }
  // Removes the monitor `ref` (its pid to *who); false if it is not here.
  bool remove(monitor_ref ref, pid* who = nullptr) noexcept {
    for (std::size_t i = first_; i < v_.size(); ++i) {
      if (v_[i].first == ref) {
        if (who) *who = v_[i].second;
        make_hole(i);
        return true;
      }
    }
    return false;
  }
  template <class F>
  void for_each(F f) const {
    for (std::size_t i = first_; i < v_.size(); ++i)
      if (v_[i].first) f(v_[i].first, v_[i].second);
  }

 private:
  void make_hole(std::size_t i) noexcept {
    v_[i].first = {};
    ++holes_;
    while (first_ < v_.size() && !v_[first_].first) ++first_;
    if (first_ == v_.size()) {
      v_.clear();
      first_ = holes_ = 0;
    } else if (holes_ > 16 && holes_ * 2 > v_.size()) {
      std::erase_if(v_, [](const entry& e) { return !e.first; });
      first_ = holes_ = 0;
    }
  }
  std::vector<entry> v_;
  std::size_t first_ = 0;  // entries before it are holes
  std::size_t holes_ = 0;
};

// A process's links. Most processes have a few: a vector. A supervisor
// may have a million: past 32 links an index (pid -> position) keeps
// insert, erase and lookup O(1).
class link_set {
 public:
  link_set() = default;
  link_set(const link_set&) = delete;
  link_set& operator=(const link_set&) = delete;
  ~link_set() { delete index_; }

  bool contains(pid p) const {
    if (index_) return index_->count(p) != 0;
    return std::find(v_.begin(), v_.end(), p) != v_.end();
  }
  // False if p was linked already.
  bool insert(pid p) {
    if (contains(p)) return false;
    v_.push_back(p);
    if (index_) {
      index_->emplace(p, v_.size() - 1);
    } else if (v_.size() > 32) {
      insert_index_all();
    }
    return true;
  }
  // Appends a pid known not to be linked yet (a child being spawned).
  void insert_new(pid p) {
    v_.push_back(p);
    if (index_) index_->emplace(p, v_.size() - 1);
    else if (v_.size() > 32) insert_index_all();
  }
  // False if p was not linked.
  bool erase(pid p) {
    std::size_t i;
    if (index_) {
      auto it = index_->find(p);
      if (it == index_->end()) return false;
      i = it->second;
      index_->erase(it);
    } else {
      auto it = std::find(v_.begin(), v_.end(), p);
      if (it == v_.end()) return false;
      i = std::size_t(it - v_.begin());
    }
    if (i + 1 != v_.size()) {
      v_[i] = v_.back();
      if (index_) (*index_)[v_[i]] = i;
    }
    v_.pop_back();
    return true;
  }
  const std::vector<pid>& all() const noexcept { return v_; }

 private:
  void insert_index_all() {
    index_ = new std::unordered_map<pid, std::size_t>();
    index_->reserve(v_.size() * 2);
    for (std::size_t i = 0; i < v_.size(); ++i) index_->emplace(v_[i], i);
  }
  std::vector<pid> v_;
  std::unordered_map<pid, std::size_t>* index_ = nullptr;
};

// Links and monitors; allocated on first use. Touched only by the process
// itself (signals are applied by the process when it drains its mailbox).
struct process_relations {
  link_set links;
  monitor_list monitors;                                  // monitors I hold
  monitor_list monitored_by;                              // who watches me
  std::string name;                                       // registered name
  // Aliases of the calls this process waits for (monitor refs): a reply
  // whose alias is not here is dropped on arrival (a late reply).
  std::vector<std::uint64_t> aliases;
  exit_reason pending_exit;                               // set once dying
  bool dying = false;
  bool exit_self = false;  // the process called exit(reason) on itself
  // Sockets, files and other resources it owns or owned (resource.hpp),
  // oldest first; those it still owns are released in reverse order when
  // it exits by any path. Entries whose ownership moved on are pruned
  // when the list doubles.
  std::vector<resource_entry> resources;
  std::size_t resources_prune_at = 16;
  // Open ember::scopes, innermost last (scope.hpp; implemented in process.cpp).
  std::vector<scope_state*> scopes;
};

struct process {
  static constexpr std::uint64_t alive_bit = 1ull << 31;
  static constexpr std::uint64_t ref_mask = alive_bit - 1;

  std::atomic<std::uint64_t> life{0};  // generation:32 | alive:1 | refs:31
  mailbox mbox;

  // --- owned by the thread running the process ---
  fcontext_t ctx = nullptr;       // saved context while switched out
  switch_point* home = nullptr;   // the scheduler it runs on now
  stack* stk = nullptr;
  process_body* body = nullptr;
  process_relations* rel = nullptr;
  process* run_link = nullptr;    // intrusive link for shared run queues
  void* eh_caught = nullptr;      // C++ exception state of this stack
  unsigned eh_uncaught = 0;
  std::uint32_t slot = 0;
  std::uint32_t reductions = 0;   // spent in this turn
  // Spent in earlier turns: the owner adds each turn's when it switches
  // out (relaxed); process_info reads it from anywhere.
  std::atomic<std::uint64_t> reductions_done{0};
  // Receive timeouts. The receive timer outlives the receive that armed
  // it: a later receive whose deadline is not earlier keeps it, and when it
  // fires for an earlier deadline the waiting receive arms another. So a
  // process making calls with the default 5 s timeout arms about one timer
  // per 5 s, not one per call (see receive_match).
  std::uint32_t receive_seq = 0;       // names the armed timer's signal
  std::uint64_t receive_timer = 0;     // the armed timer (0: none)
  std::int64_t receive_timer_due = 0;  // when it fires, steady clock ns
  std::int64_t receive_deadline = 0;   // the waiting receive's deadline
  // await_wake (resource.hpp): the token it waits for, and whether a
  // sig_wake carrying it arrived.
  std::uint64_t wake_expect = 0;
  bool woken = false;
  std::size_t stack_request = 0;  // spawn option
  // Made by its first allocation, reclaimed at exit. Written by the thread
  // running the process; read by process_info from anywhere (relaxed).
  std::atomic<process_heap*> heap{nullptr};
  std::size_t heap_limit = 0;     // spawn option max_heap_bytes (0: none); set at spawn only
  bool heap_unlimited = false;    // exiting: its exit path may allocate past the limit
  bool heap_limit_deferred = false;  // taking in messages: a passed limit ends it after
  bool heap_limit_passed = false;    //   (and this says it was passed)
  envelope* in_hand = nullptr;    // messages handlers are working on (chained by next)
  std::uint32_t heap_scope_depth = 0;  // open global_heap_scopes
  // Asynchronous preemption (sched/preempt.cpp). The process runs its own
  // code iff preempt_off is 0: runtime calls, the stack's base code and
  // no_preempt guards raise it. The signal handler (same thread) reads it
  // and sets preempt_pending when it finds the process at an unsafe point;
  // `preempting` covers the trampoline until preempt_off is raised.
  std::uint32_t preempt_off = 1;
  bool preemptible = true;        // spawn option
  bool pinned = false;            // preempted: stays on its scheduler until it yields normally
  bool exit_grace = false;        // preempted with an exit signal pending: one slice to reach the runtime
  std::atomic<bool> preempt_pending{false};
  std::atomic<bool> preempting{false};
  suspend_reason why = suspend_reason::yield;
  bool trap_exit = false;
  bool timed_out = false;
  bool started = false;           // a handler process ran its init
  bool awaiting_timeout = false;  // the current receive armed a timer
  std::uint8_t receive_tick = 0;  // counts receives between forced drains
  bool stop_requested = false;    // handler process: stop() was called
                                  // (reason in rel->pending_exit unless normal)
  std::atomic<bool> timer_target{false};  // some timer may target it
  std::atomic<bool> registered{false};    // the registry may hold a name for it
  // Observed (observe/introspect.cpp): relaxed stores by whoever changes
  // them, relaxed loads by a snapshot on any thread.
  std::atomic<std::uint8_t> obs_state{0};        // observe::process_status
  std::atomic<bool> obs_blocking{false};         // waiting in ember::blocking
  std::atomic<bool> obs_trap_exit{false};        // mirrors trap_exit
  std::atomic<std::uint32_t> obs_stack_bytes{0};  // stack in use at its last switch
  std::atomic<std::uint64_t> obs_run_ns{0};      // sampled by the monitor thread
  std::atomic<const char*> obs_label{nullptr};   // interned (set_label)
  std::atomic<const std::type_info*> obs_initial{nullptr};  // its body's type
  std::atomic<std::uint64_t> obs_parent{0};      // pid bits of its spawner
#if defined(EMBER_ASAN)
  void* asan_fake = nullptr;
#endif

  std::uint32_t generation() const noexcept {
    return std::uint32_t(life.load(std::memory_order_relaxed) >> 32);
  }
  process_relations& relations() {
    if (!rel) rel = new process_relations();
    return *rel;
  }
};

// observe::process_info's question to a process about its relations
// (sig_inspect): filled by the process, waited for by the asker.
struct inspect_request {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  bool known = false;  // answered by the process (not dropped at its death)
  bool trap_exit = false;
  std::vector<pid> links, monitors, monitored_by;
  void finish() noexcept {
    std::lock_guard lock(mu);
    done = true;
    cv.notify_all();
  }
};
// Sends the question (false if the process is not alive).
bool send_inspect(node& n, pid target, std::shared_ptr<inspect_request> req);

// Signals: runtime envelopes that share the mailbox with messages.
enum signal_kind : unsigned char {
  sig_none = 0,
  sig_link,
  sig_unlink,
  sig_exit,
  sig_monitor,
  sig_demonitor,
  sig_down,
  sig_timeout,
  sig_wake,   // await_wake's token (I/O readiness)
  sig_adopt,  // a resource given to this process (resource_envelope)
  sig_inspect,  // observe::process_info asks for its relations (inspect_envelope)
};

struct signal_payload {
  pid from;
  monitor_ref ref;
  exit_reason reason;
  bool linked = false;       // sig_exit: caused by a link
  std::uint64_t seq = 0;     // sig_timeout, sig_wake
};

struct signal_envelope final : envelope {
  signal_payload s;
  signal_envelope(signal_kind k, signal_payload p) : s(std::move(p)) {
    signal = k;
    key = nullptr;
    type = &typeid(signal_payload);
    destroy = [](envelope* e) noexcept { delete static_cast<signal_envelope*>(e); };
  }
};
inline signal_envelope* make_signal(signal_kind k, signal_payload p) {
  return new signal_envelope(k, std::move(p));
}

// Thrown on a process's own stack to end it (exit(reason), kill, a linked
// crash); caught at the base of the stack.
struct exit_unwind {
  exit_reason reason;
};

// The calling thread's running process (nullptr outside processes). Read
// through a non-inlined function: a process may resume on another thread,
// and the compiler must not cache a thread_local's address across that.
process* current_process() noexcept;
// The same, for code that reads it once before it could be suspended
// (inline; never cache it across a suspension).
extern constinit __attribute__((tls_model("initial-exec"))) thread_local process* tl_process;
void set_current_process(process* p) noexcept;
node* current_node() noexcept;
void set_current_node(node* n) noexcept;

}  // namespace ember::detail
