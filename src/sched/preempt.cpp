// Asynchronous preemption: no process can keep a scheduler, not even one
// spinning in a loop that never calls the runtime.
//
// Three mechanisms, from cheapest to last resort:
//   reductions  every runtime call costs some (process.cpp); a process
//               that spends runtime_options::reductions yields at that call.
//               Free for code that calls the runtime; useless for code
//               that does not.
//   signal      a monitor thread ("sysmon", as in Go) watches every
//               scheduler's turn counter. A turn that lasts longer than
//               runtime_options::time_slice gets SIGURG sent to its thread
//               (tgkill). If the process is at a safe point, the handler
//               makes it call a trampoline that saves every register and
//               yields through the normal path; the process resumes later
//               exactly where it was.
//   spare       a turn that lasts longer than runtime_options::blocked_after
//               (a blocking system call, a long call into libc, code that
//               cannot be preempted) marks its scheduler blocked; a spare
//               scheduler thread wakes and takes its runnable processes by
//               stealing, so everyone else keeps running (scheduler.cpp).
//
// Why injection, not thread hand-off. Two designs were on the table. Go's
// (1.14): the handler does not switch; it rewrites the interrupted context
// so that, on return from the handler, the thread calls a trampoline as if
// the interrupted instruction had made a call; the trampoline saves all
// registers and yields through the ordinary switch, outside any signal
// handler. Thread hand-off (Shiina et al., PPoPP'21): the handler parks the
// interrupted thread, process and all, and another OS thread takes over the
// scheduler. Measured on the 2-vCPU development VM with
// bench/preempt_cost.cpp: a signal reaches a spinning thread in 6.7 µs
// (p50; p99 8.9) and costs it about 4.8 µs of CPU; handing a CPU from one
// thread to a parked one costs 7.0 µs (p50; p99 21). So the latency is a
// wash on this machine, and the rest decided: hand-off needs an OS thread
// per preempted process (a hundred hogs, a hundred parked threads) and a
// scheduler whose owner thread changes in the middle of a turn (every
// owner-only structure, run queue and caches, would need a hand-over
// protocol); its handler never returns until the process is resumed, which
// ThreadSanitizer's signal machinery does not survive repeatedly. Injection
// keeps one thread per scheduler and the ordinary switch, and costs nothing
// until a process overstays its slice; its price is the safe-point rules
// below.
//
// Who sends the signal. The monitor thread wakes every time slice while
// any scheduler runs, and signals a turn it has seen running for a slice
// (tgkill). On this VM a sleeping thread is now and then woken milliseconds
// late, which showed as 4 ms stalls in W6; so a scheduler that has just
// preempted a process (it runs a CPU hog) arms its own tick, a kernel timer
// signalling its own thread every time slice (timer_create with
// SIGEV_THREAD_ID), which needs no other thread to be scheduled. The tick
// preempts a turn that was running at the previous tick too, and is
// disarmed after 64 ticks without a preemption or when the scheduler goes
// idle: programs without hogs never get it.
//
// Safe points. The handler preempts only if all of these hold:
//   - the thread is running a process, in the very turn the monitor flagged
//     (turn counters: a late signal for an earlier turn is ignored);
//   - the process runs its own code: process::preempt_off == 0. Every
//     runtime entry point raises it (core/preempt.hpp), as do locked slow
//     paths of the heap, the envelope caches, the switch itself, the stack's
//     base code, and no_preempt guards; spawn_options::preemptible = false
//     opts a process out entirely;
//   - the interrupted instruction is in the main executable's code. Shared
//     objects are never interrupted: libc (malloc's locks, stdio's), libstdc++,
//     libgcc's unwinder, the dynamic loader, the vDSO, sanitizer runtimes,
//     and any other library (its locks are unknown to us);
//   - the stack pointer is inside the process's stack with room for the
//     trampoline's frame (the saved registers and the yield's frames).
// Otherwise the handler sets process::preempt_pending and the process
// yields when its runtime call (or the last no_preempt guard) ends; the
// monitor also signals again, backing off (1, 2, 4... slices), until the turn
// ends or the scheduler is declared blocked.
//
// The rules the switch keeps (x86-64; other architectures get reductions
// and the spare only):
//   signal mask   the handler returns normally, so the kernel restores the
//                 interrupted mask before the trampoline runs: the switch
//                 happens with the process's own mask, never inside a handler.
//   red zone      the System V ABI lets leaf code use 128 bytes below the
//                 stack pointer; the handler pushes the return address below
//                 them, and the trampoline returns with `ret $128`.
//   registers     the trampoline saves the caller-saved integer registers,
//                 flags, and the full extended state with XSAVE (x87, SSE,
//                 AVX, AVX-512: the size comes from CPUID), clears DF, aligns
//                 the stack and calls ember_preempt_yield; the callee-saved
//                 ones are kept by the C calling convention and the switch.
//   errno         saved and restored around the yield: the interrupted code
//                 may be between a system call and reading errno. So is
//                 libstdc++'s call_once state (two thread-locals set before
//                 pthread_once and read by its callback; std::promise goes
//                 through it): another process of the thread may run a
//                 call_once while this one is preempted inside its own.
//                 Other thread-locals are the program's: they belong to the
//                 thread, so every process of the thread shares them, and a
//                 preempted process may find one changed when it resumes.
//   TLS           the compiler may keep a thread-local's address in a register
//                 anywhere, so a preempted process is pinned: it goes to its
//                 scheduler's owner-only pinned queue, is never stolen, and
//                 resumes on the same thread; it becomes movable again at its
//                 next ordinary suspension (receive, yield...), where the
//                 same rules as for any cooperative switch apply. One
//                 exception, to break a deadlock: when the thread is blocked
//                 (found stuck for blocked_after, outside the program's code)
//                 its pinned processes are unpinned and handed to spares,
//                 since one of them may hold the OS mutex the thread waits
//                 for (a std::mutex taken in process code is the usual case;
//                 glibc's default mutex may be unlocked by another thread).
//                 Such a process may then use the old thread's TLS through a
//                 register; guard mutex-holding sections with no_preempt.
//   exceptions    the C++ exception globals are per process already (they are
//                 swapped at every switch).
//   exit signals  a preempted process is resumed with no landing pad at the
//                 interrupted instruction, so it cannot unwind there. If an
//                 exit signal that ends it arrived meanwhile, it gets one
//                 time slice to reach a runtime call (its next charge yields
//                 at once and takes the signal in: it unwinds, destructors
//                 run); if it is preempted again first, it ends then without
//                 unwinding, as after a heap-limit or stack-overflow exit:
//                 its heap is reclaimed whole, its frames' destructors never
//                 run. Messages are not taken in at a preemption (that would
//                 run their copy constructors at an arbitrary point).
//   allocator     the process heap's code is one linker section
//                 (ember_heap_text) the handler never interrupts: taking in
//                 an exit signal allocates from the same heap.
//   EINTR         SIGURG is installed with SA_RESTART, so restartable system
//                 calls resume; the others (nanosleep, poll, epoll_wait,
//                 select, ...) return EINTR to the code that made them, as in
//                 Go since 1.14. ember's own waits retry. The monitor stops
//                 signalling a turn once its scheduler is declared blocked.
//   sanitizers    AddressSanitizer: the handler and trampoline are not
//                 instrumented; the yield switches fibers as usual.
//                 ThreadSanitizer defers signals to its next interceptor,
//                 which a spinning loop never reaches, and hands the handler
//                 a copy of the context: in TSan builds the handler is
//                 installed with the raw rt_sigaction system call, bypassing
//                 the interceptor, and refuses to act while the thread is
//                 inside the TSan runtime (a shared object).
//   other SIGURG  a SIGURG that is not ours (not sent with tgkill to a
//                 scheduler in a flagged turn) goes to the handler installed
//                 before ember's.
#include <dlfcn.h>
#include <link.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/preempt.hpp"
#include "sched/scheduler.hpp"

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#define EMBER_PREEMPT_X86_64 1
#endif

extern "C" {
void ember_preempt_trampoline();  // preempt_x86_64.S
// The allocator's code (core/heap.cpp), never interrupted.
extern char __start_ember_heap_text[] __attribute__((weak));
extern char __stop_ember_heap_text[] __attribute__((weak));
// Bytes the trampoline reserves for XSAVE (read by the trampoline).
std::uint64_t ember_xsave_bytes = 0;
}

namespace ember::detail {

namespace {

constexpr int preempt_signal = SIGURG;

struct code_range {
  std::uintptr_t lo = 0, hi = 0;
};
constexpr int max_ranges = 16;
code_range main_text[max_ranges];
int main_text_count = 0;

struct sigaction previous_urg;
bool injection_ready = false;  // set once, before any scheduler thread exists

int collect_main_text(dl_phdr_info* info, std::size_t, void*) {
  // The first object is the program itself.
  for (int i = 0; i < info->dlpi_phnum && main_text_count < max_ranges; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
    main_text[main_text_count++] = {lo, lo + ph.p_memsz};
  }
  return 1;  // stop after the first
}

// Whether libc's code is in a shared object (a statically linked libc would
// be inside the main text, and malloc's locks with it).
bool libc_is_shared() {
  Dl_info info{};
  if (!::dladdr(reinterpret_cast<void*>(&::memcpy), &info) || !info.dli_fbase) return false;
  auto base = reinterpret_cast<std::uintptr_t>(info.dli_fbase);
  for (int i = 0; i < main_text_count; ++i)
    if (base >= main_text[i].lo && base < main_text[i].hi) return false;
  return true;
}

// The sanitizer runtime (a shared object under GCC), which instrumented code
// the handler calls must not re-enter.
code_range sanitizer_text;

__attribute__((always_inline, no_sanitize("address", "thread", "undefined"))) inline bool in_sanitizer_runtime(std::uintptr_t pc) {
  return pc >= sanitizer_text.lo && pc < sanitizer_text.hi;
}

#if defined(EMBER_TSAN)
extern "C" void __tsan_func_entry(void*);
int find_object_of(dl_phdr_info* info, std::size_t, void* data) {
  auto* want = static_cast<std::uintptr_t*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
    if (*want >= lo && *want < hi) {
      sanitizer_text = {lo, hi};
      return 1;
    }
  }
  return 0;
}
#endif

__attribute__((always_inline, no_sanitize("address", "thread", "undefined"))) inline bool in_main_text(std::uintptr_t pc) {
  for (int i = 0; i < main_text_count; ++i)
    if (pc >= main_text[i].lo && pc < main_text[i].hi) return true;
  return false;
}

#if defined(EMBER_PREEMPT_X86_64)
std::uint64_t xsave_area_bytes() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  if (!(c & (1u << 27))) return 0;  // OSXSAVE: the OS manages extended state with XSAVE
  __cpuid_count(0xD, 0, a, b, c, d);
  return b;  // bytes for every feature enabled in XCR0
}
#endif

// Room the trampoline needs below the interrupted stack pointer: red zone,
// saved registers, the XSAVE area and alignment, and the yield's own frames.
__attribute__((always_inline, no_sanitize("address", "thread", "undefined"))) inline std::uintptr_t trampoline_room() {
  return 128 + 16 * 8 + ember_xsave_bytes + 64 + 8192;
}

__attribute__((no_sanitize("address", "thread", "undefined"))) void chain_urg(int sig, siginfo_t* info, void* uctx) {
  const struct sigaction& old = previous_urg;
  if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction) {
    old.sa_sigaction(sig, info, uctx);
  } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN && old.sa_handler) {
    old.sa_handler(sig);
  }
  // SIGURG's default action is to ignore it.
}

// What the handler reads and writes, without calling anything: under
// ThreadSanitizer an out-of-line std::atomic member (or a lambda) would be an
// instrumented call, and the handler may have interrupted the TSan runtime.
#define EMBER_SIGNAL_SAFE __attribute__((always_inline, no_sanitize("address", "thread", "undefined"))) inline
template <class T>
EMBER_SIGNAL_SAFE T load_relaxed(const std::atomic<T>& a) {
  return __atomic_load_n(reinterpret_cast<const T*>(&a), __ATOMIC_RELAXED);
}
template <class T>
EMBER_SIGNAL_SAFE void store_relaxed(std::atomic<T>& a, T v) {
  __atomic_store_n(reinterpret_cast<T*>(&a), v, __ATOMIC_RELAXED);
}
EMBER_SIGNAL_SAFE void defer_preemption(scheduler* s, process* p) {
  store_relaxed(p->preempt_pending, true);
  store_relaxed(s->preempt_deferred, load_relaxed(s->preempt_deferred) + 1);
}

// Runs on the interrupted thread, on its alternate signal stack. Touches
// only that thread's scheduler and process (plain loads and stores), and is
// not instrumented: under ThreadSanitizer it may interrupt anything. The
// one call it makes into instrumented code (hand_off_next) happens only
// outside the sanitizer's runtime.
__attribute__((no_sanitize("address", "thread", "undefined"))) void on_preempt_signal(int sig, siginfo_t* info,
                                                                                        void* uctx) {
  scheduler* s = tl_scheduler;
  const bool tick = s && info->si_code == SI_TIMER && info->si_value.sival_ptr == s;
  if (!s || (!tick && (info->si_code != SI_TKILL || info->si_pid != s->rt.os_pid))) {
    chain_urg(sig, info, uctx);
    return;
  }
  process* p = tl_process;
  const std::uint64_t turn = load_relaxed(s->turn);
  if (tick) {
    // The tick: preempt a turn that was already running at the last tick.
    if (!p || !(turn & 1) || load_relaxed(s->tick_turn) != turn) {
      store_relaxed(s->tick_turn, turn);
      store_relaxed(s->ticks_idle, load_relaxed(s->ticks_idle) + 1);
      return;
    }
  } else if (!p || !(turn & 1) || load_relaxed(s->preempt_turn) != turn) {
    return;
  }
#if defined(EMBER_PREEMPT_X86_64)
  auto* uc = static_cast<ucontext_t*>(uctx);
  const auto pc = std::uintptr_t(uc->uc_mcontext.gregs[REG_RIP]);
  const auto sp = std::uintptr_t(uc->uc_mcontext.gregs[REG_RSP]);
  const bool in_program = in_main_text(pc);
  // A blocked scheduler: the process in its `next` slot goes to the ring,
  // where spare schedulers steal from. Only while the thread is outside
  // the program's code (in a system call or a library): every update of
  // the run queue is inline code of the program, so none is half done.
  if (load_relaxed(s->blocked) && !in_program && !in_sanitizer_runtime(pc)) s->hand_off_next();
  if (tick && load_relaxed(s->blocked)) {
    // A blocked thread needs no tick (it would only interrupt its system
    // call every slice); the monitor keeps watching it.
    itimerspec off{};
    ::timer_settime(static_cast<timer_t>(s->tick_timer), 0, &off, nullptr);
    store_relaxed(s->tick_armed, false);
  }
  if (!p->preemptible) return;
  if (p->preempt_off != 0 || load_relaxed(p->preempting) || !p->stk || !injection_ready) {
    defer_preemption(s, p);
    return;
  }
  const auto lo = std::uintptr_t(p->stk->base) + 4096;  // above the guard page
  const auto hi = reinterpret_cast<std::uintptr_t>(p->stk);  // stack::top(): the header sits at the top
  const bool in_allocator =
      pc >= std::uintptr_t(__start_ember_heap_text) && pc < std::uintptr_t(__stop_ember_heap_text);
  if (sp > hi || sp < lo + trampoline_room() || !in_program || in_allocator) {
    defer_preemption(s, p);
    return;
  }
  // As if the interrupted instruction had called the trampoline, below the
  // red zone.
  const std::uintptr_t nsp = sp - 128 - 8;
  *reinterpret_cast<std::uintptr_t*>(nsp) = pc;
  uc->uc_mcontext.gregs[REG_RSP] = greg_t(nsp);
  uc->uc_mcontext.gregs[REG_RIP] = greg_t(reinterpret_cast<std::uintptr_t>(&ember_preempt_trampoline));
  store_relaxed(p->preempting, true);
#else
  (void)uctx;
  if (p->preemptible) defer_preemption(s, p);
#endif
}

#if defined(EMBER_TSAN)
// Installing through libc would go through ThreadSanitizer's sigaction
// interceptor, which defers the handler to the thread's next interceptor
// call and hands it a copy of the context. The kernel's own interface takes
// a restorer; this is libc's (rt_sigreturn).
extern "C" void ember_sigreturn_restorer();
asm(".text\n"
    ".globl ember_sigreturn_restorer\n"
    ".type ember_sigreturn_restorer,@function\n"
    "ember_sigreturn_restorer:\n"
    "  movq $15, %rax\n"  // __NR_rt_sigreturn
    "  syscall\n"
    ".size ember_sigreturn_restorer, .-ember_sigreturn_restorer\n");
struct kernel_sigaction {
  void* handler;
  unsigned long flags;
  void (*restorer)();
  std::uint64_t mask;
};
bool install_raw(void (*h)(int, siginfo_t*, void*)) {
  constexpr unsigned long sa_restorer_flag = 0x04000000;
  kernel_sigaction ka{};
  ka.handler = reinterpret_cast<void*>(h);
  ka.flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART | sa_restorer_flag;
  ka.restorer = ember_sigreturn_restorer;
  ka.mask = 0;
  kernel_sigaction old{};
  if (::syscall(SYS_rt_sigaction, preempt_signal, &ka, &old, sizeof(std::uint64_t)) != 0) return false;
  // Keep what was there for chaining (handler and flags are enough).
  std::memset(&previous_urg, 0, sizeof previous_urg);
  if (old.flags & SA_SIGINFO) {
    previous_urg.sa_sigaction = reinterpret_cast<void (*)(int, siginfo_t*, void*)>(old.handler);
    previous_urg.sa_flags = SA_SIGINFO;
  } else {
    previous_urg.sa_handler = reinterpret_cast<void (*)(int)>(old.handler);  // SIG_DFL / SIG_IGN / a handler
  }
  return true;
}
#endif

}  // namespace

bool install_preempt_handler() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    ::dl_iterate_phdr(collect_main_text, nullptr);
#if defined(EMBER_TSAN)
    auto tsan_entry = reinterpret_cast<std::uintptr_t>(&__tsan_func_entry);
    ::dl_iterate_phdr(find_object_of, &tsan_entry);
#endif
#if defined(EMBER_PREEMPT_X86_64)
    ember_xsave_bytes = xsave_area_bytes();
    injection_ready = ember_xsave_bytes != 0 && main_text_count > 0 && libc_is_shared();
#endif
#if defined(EMBER_TSAN) && defined(EMBER_PREEMPT_X86_64)
    ok = install_raw(on_preempt_signal);
#else
    struct sigaction sa {};
    sa.sa_sigaction = on_preempt_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ok = ::sigaction(preempt_signal, &sa, &previous_urg) == 0;
#endif
  });
  return ok;
}

bool async_preemption_supported() noexcept { return injection_ready; }

// ------------------------------------------------------------- sysmon

void runtime_node::monitor_loop() {
  ::prctl(PR_SET_NAME, "ember-sysmon", 0, 0, 0);
  ::prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0);  // wake on time: the tick is microseconds
  using clock = std::chrono::steady_clock;
  const auto slice = std::chrono::duration_cast<clock::duration>(options.time_slice);
  const auto blocked_after = std::chrono::duration_cast<clock::duration>(options.blocked_after);
  const bool signals = slice.count() != 0 && preempt_handler_installed;
  // Signals to one long turn back off to this period: a process that is
  // back from a long system call, spinning in its own code, is still
  // preempted soon, and one blocked in a call is not interrupted often.
  const clock::duration max_backoff =
      std::max<clock::duration>(slice, std::min<clock::duration>(std::chrono::milliseconds(10),
                                                                   blocked_after.count() ? blocked_after
                                                                                         : std::chrono::milliseconds(10)));
  clock::duration tick = std::chrono::milliseconds(1);
  if (signals) tick = std::min(tick, slice);
  if (blocked_after.count() != 0) tick = std::min(tick, blocked_after / 2);

  struct observed {
    std::uint64_t turn = 0;
    clock::time_point since{};
    clock::time_point next_signal{};
    clock::duration backoff{};
    bool blocked = false;
  };
  std::vector<observed> seen(scheds.size());
  const pid_t self_pid = os_pid;

  auto last_look = clock::now();
  while (!monitor_stop_.load(std::memory_order_acquire)) {
    const auto now = clock::now();
    // Utilization and run time, by sampling: the time since the last look
    // goes to the schedulers found in a turn and to their processes.
    const auto since_last = std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_look).count());
    last_look = now;
    bool running = false;
    for (std::size_t i = 0; i < scheds.size(); ++i) {
      scheduler& s = *scheds[i];
      const std::uint64_t turn = s.turn.load(std::memory_order_acquire);
      observed& o = seen[i];
      if (!(turn & 1)) {  // between turns
        o.turn = turn;
        continue;
      }
      running = true;
      s.busy_ns.store(s.busy_ns.load(std::memory_order_relaxed) + since_last, std::memory_order_relaxed);
      if (process* p = s.running.load(std::memory_order_relaxed))
        p->obs_run_ns.fetch_add(since_last, std::memory_order_relaxed);
      if (turn != o.turn) {
        o = {turn, now, now + slice, slice, false};
        continue;
      }
      // A scheduler running CPU hogs has its own tick (tick_arm): the
      // monitor only backs it up.
      if (s.tick_armed.load(std::memory_order_relaxed) && now < o.since + 4 * slice) continue;
      if (signals && now >= o.next_signal) {
        s.preempt_turn.store(turn, std::memory_order_release);
        ::syscall(SYS_tgkill, self_pid, s.tid.load(std::memory_order_relaxed), preempt_signal);
        preempt_signals_.fetch_add(1, std::memory_order_relaxed);
        o.backoff = std::min(o.backoff * 2, max_backoff);
        o.next_signal = now + o.backoff;
      }
      // Work queued on a blocked scheduler (the handler moved its `next`
      // process to the ring; another thread spawned onto it) wakes a thief.
      if (o.blocked && (s.rq.size() != 0 || !s.inbox.empty())) wake_if_needed();
      if (blocked_after.count() != 0 && !o.blocked && now - o.since >= blocked_after) {
        o.blocked = true;
        scheduler_blocked(s);
        // One more signal, so that its handler hands the `next` process over.
        s.preempt_turn.store(turn, std::memory_order_release);
        ::syscall(SYS_tgkill, self_pid, s.tid.load(std::memory_order_relaxed), preempt_signal);
      }
    }
    if (running || spinning.load(std::memory_order_relaxed) != 0 ||
        idle.load(std::memory_order_relaxed) < active.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(tick);
      continue;
    }
    // Every scheduler is parked: nothing can start a turn until one is
    // woken, and waking one wakes us (wake_monitor).
    std::uint32_t word = monitor_word_.load(std::memory_order_acquire);
    if (idle.load(std::memory_order_seq_cst) >= active.load(std::memory_order_seq_cst) && spinning.load(std::memory_order_seq_cst) == 0 &&
        !monitor_stop_.load(std::memory_order_acquire))
      monitor_word_.wait(word, std::memory_order_acquire);
    last_look = clock::now();  // the parked time was nobody's
  }
}

void runtime_node::wake_monitor() noexcept {
  monitor_word_.fetch_add(1, std::memory_order_release);
  monitor_word_.notify_one();
}

}  // namespace ember::detail
