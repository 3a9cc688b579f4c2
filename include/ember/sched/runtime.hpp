// ember::runtime — the schedulers, the process table and the timers of one
// node. Create one per program; processes run until they exit or until the
// runtime shuts down.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "ember/core/exit_reason.hpp"
#include "ember/core/message.hpp"
#include "ember/core/pid.hpp"
#include "ember/core/process.hpp"
#include "ember/core/spawn.hpp"
#include "ember/sched/timer.hpp"

namespace ember {

// How the runtime waits for sockets (see src/sched/io_poller.hpp).
enum class io_backend {
  automatic,  // epoll; the environment variable EMBER_IO=epoll|io_uring overrides
              // (io_uring where the kernel lacks it: epoll, said on stderr)
  epoll,
  io_uring,   // multishot poll requests; slower than epoll on W11 (see the
              // README); refused (invalid_argument) where the build or the
              // kernel lacks it
};

struct runtime_options {
  // Scheduler threads; 0 means one per core.
  unsigned schedulers = 0;
  // Default stack size of a function process, in bytes: 16 KiB to 1 GiB
  // (rounded up to pages). Virtual: the kernel commits pages only when touched.
  std::size_t stack_size = 256 * 1024;
  // Messages a handler process handles per turn before letting others run.
  unsigned handler_batch = 64;
  // Reductions a process may spend before it yields to the next runnable
  // one (BEAM's budget is 4,000 of its finer-grained reductions). 1 to
  // 100,000,000.
  std::uint32_t reductions = 2000;
  // Node number carried in pids (distribution sets it).
  std::uint32_t node_id = 0;
  // A synchronous fault (SIGSEGV outside a stack guard, SIGBUS, SIGFPE,
  // SIGILL) in process code ends the whole node by default, after a report
  // naming the process. true: it ends only that process, with exit reason
  // `fault`. A last resort: the fault may have corrupted memory others use.
  // (A stack overflow always ends only the process: `stack_overflow`.)
  bool isolate_faults = false;
  // Debugging use-after-exit: the memory of a dead process's heap is made
  // inaccessible and never reused (up to 4 GiB of it), so a later use of it
  // by anyone faults and is reported with the dead process's pid. Costs
  // memory and a system call per 64 KiB segment; applies to every runtime of
  // the OS process from the moment one runtime enables it.
  bool quarantine_dead_heaps = false;
  // Asynchronous preemption: a process that has run this long without
  // yielding (a loop that never calls the runtime) is interrupted by a
  // signal and put at the back of its scheduler's queue, if it is at a safe
  // point (see "What preemption guarantees" in the README). 0 turns it off
  // (reductions still apply). 0, or 10 µs to 1 s.
  std::chrono::microseconds time_slice{100};
  // A scheduler thread stuck in one turn this long (a blocking system call,
  // a long call into a C library, code that cannot be preempted) has its
  // runnable processes taken over by a spare scheduler thread, so the
  // others keep running. 0 turns it off. 0, or 100 µs to 1 h.
  std::chrono::microseconds blocked_after{2000};
  // Threads of the blocking pool (ember::blocking), started on demand up
  // to this many; more concurrent calls wait their turn. 1 to 4096.
  unsigned blocking_threads = 64;
  // The I/O poller; stats().io_backend says which one runs.
  ember::io_backend io_backend = ember::io_backend::automatic;
};

struct runtime_stats {
  std::size_t processes = 0;         // alive now
  std::uint64_t spawned = 0;         // since start
  std::uint64_t exited = 0;          // since start
  std::size_t stacks_in_use = 0;     // stacks held by processes
  std::size_t stacks_pooled = 0;     // mapped stacks waiting for reuse
  std::size_t timers_pending = 0;    // armed and not fired or cancelled
  std::uint64_t steals = 0;          // processes moved by work stealing
  std::size_t names = 0;             // registered names
  // Process heaps (shared by every runtime of the OS process): 64 KiB
  // segments held by heaps, and free ones kept for reuse.
  std::size_t heap_segments_in_use = 0;
  std::size_t heap_segments_free = 0;
  // Preemption (since start): turns ended by the reductions budget
  // (cooperative), turns ended by the preemption signal (asynchronous),
  // signals sent, and signals that found the process at an unsafe point
  // (it then yields at its next runtime call or end of ember::no_preempt).
  std::uint64_t reduction_yields = 0;
  std::uint64_t preemptions = 0;
  std::uint64_t preempt_signals = 0;
  std::uint64_t preempt_deferred = 0;
  // Times a scheduler was found stuck in one turn for blocked_after,
  // spare scheduler threads started to take over (see blocked_after), and
  // spares gone back to sleep once no scheduler was blocked.
  std::uint64_t schedulers_blocked = 0;
  std::uint64_t spare_activations = 0;
  std::uint64_t spare_retirements = 0;
  // Sockets open (owned by processes or on their way to one), and the
  // I/O poller's kind ("epoll").
  std::size_t sockets_open = 0;
  const char* io_backend = "";
};

namespace detail {
struct runtime_access;  // the node behind a runtime, for the layers above (src/)
}

class runtime {
 public:
  // Starts the schedulers. Throws error(invalid_argument) for a bad option.
  explicit runtime(runtime_options opts = {});
  // Shuts down: kills the processes still alive and stops the schedulers.
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  // The process API for code outside processes (main, tests, other threads).
  template <class F>
  pid spawn(F&& f, const spawn_options& opts = {}) {
    return detail::spawn_body(node_, detail::make_body(std::forward<F>(f)), opts,
                              detail::spawn_link_mode::none).id;
  }
  template <class T>
  void send(pid to, T&& value) {
    send_envelope(to, detail::make_envelope(std::forward<T>(value)));
  }
  template <class T>
  void send(std::string_view name, T&& value) {
    send_envelope(name, detail::make_envelope(std::forward<T>(value)));
  }
  template <class Rep, class Period, class T>
  timer_ref send_after(std::chrono::duration<Rep, Period> delay, pid to, T&& msg) {
    return detail::arm_send_after(node_, std::chrono::duration_cast<std::chrono::nanoseconds>(delay),
                                  to, detail::make_envelope(std::forward<T>(msg)));
  }
  bool cancel_timer(timer_ref ref);
  // An exit signal from outside any process: a trapping target sees
  // exit_signal{pid(), reason} (the null pid as sender).
  void exit(pid target, exit_reason reason);
  pid whereis(std::string_view name) const;
  void register_name(std::string name, pid p);
  bool is_alive(pid p) const;
  std::optional<process_snapshot> process_info(pid p) const;

  // Blocks the calling thread until every process has exited.
  void wait();
  // As wait, with a limit; false if processes were still alive at the end.
  bool wait_for(std::chrono::nanoseconds limit);
  // Kills every process (kill: untrappable), waits for them to finish
  // unwinding (destructors run) and stops the schedulers. Idempotent. A
  // process computing without ever calling the runtime delays it.
  void shutdown();

  // Kernel mappings that one function-process stack costs against
  // vm.max_map_count: 0 where the kernel has guard regions (Linux >= 6.13:
  // adjacent stacks merge into one mapping), else 2 (stack and guard page).
  static unsigned mappings_per_stack();

  unsigned schedulers() const noexcept;
  std::size_t process_count() const noexcept;
  runtime_stats stats() const;

 private:
  friend struct detail::runtime_access;
  void send_envelope(pid to, detail::envelope* e);
  void send_envelope(std::string_view name, detail::envelope* e);
  detail::node* node_;
};

}  // namespace ember
