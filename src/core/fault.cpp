// Crash isolation for synchronous faults: stack overflow, and (if asked)
// SIGSEGV, SIGBUS, SIGFPE and SIGILL in process code.
//
// How
//   A handler for those signals runs on a per-scheduler alternate signal
//   stack (the faulting stack may have no room left). If the fault hit a
//   process running its own code on its own stack:
//     - an address in the stack's guard page is a stack overflow: the
//       process ends with `stack_overflow`;
//     - any other fault ends the node (the default: memory may be corrupt),
//       after a report naming the process, or, with
//       runtime_options::isolate_faults, ends the process with `fault`.
//   Ending the process from the handler is one jump to its scheduler's
//   switch point with suspend_reason::abandoned, exactly as a heap-limit
//   exit: the stack is dropped without unwinding (an overflowed stack cannot
//   be unwound) and the scheduler runs the exit path on its own stack; the
//   process heap, reclaimed whole, is what makes dropping the frames safe.
//   The handler does nothing else: it records the signal and the address in
//   the stack's header (outside the overflowed range) and jumps. It is
//   installed with SA_NODEFER, so the signal is not left blocked on the
//   scheduler thread once the handler is abandoned.
//
//   Faults anywhere else (runtime code, threads that are not schedulers, a
//   process's exit path running on the scheduler) go to the handler that
//   was installed before ember's, or to the default action.
//
// Limits, said plainly: a frame larger than the guard page can jump over it
// into other memory (compile process code with -fstack-clash-protection,
// which ember's target adds for its users); a process that overflows while
// holding a lock (inside malloc, say) leaves it held.
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <mutex>

#include "core/node.hpp"
#include "core/process.hpp"

namespace ember::detail {

namespace {

constexpr int fault_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
struct sigaction previous[4];

int index_of(int sig) {
  for (int i = 0; i < 4; ++i)
    if (fault_signals[i] == sig) return i;
  return -1;
}

// --- async-signal-safe output ---
void put(const char* s) {
  std::size_t n = std::strlen(s);
  while (n) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= std::size_t(w);
  }
}
void put_number(std::uint64_t v, unsigned base) {
  char buf[24];
  int i = sizeof buf;
  buf[--i] = 0;
  do {
    buf[--i] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v && i > 0);
  put(buf + i);
}

// The disposition in place before ember's: called, or restored so that the
// fault, raised again when the handler returns, gets its default action.
void chain(int sig, siginfo_t* info, void* uctx) {
  int i = index_of(sig);
  const struct sigaction& old = previous[i];
  if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction) {
    old.sa_sigaction(sig, info, uctx);
    return;
  }
  if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN && old.sa_handler) {
    old.sa_handler(sig);
    return;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);  // the faulting instruction runs again and ends the node
}

std::uintptr_t stack_pointer(void* uctx) {
#if defined(__x86_64__)
  return std::uintptr_t(static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_RSP]);
#elif defined(__aarch64__)
  return std::uintptr_t(static_cast<ucontext_t*>(uctx)->uc_mcontext.sp);
#else
  (void)uctx;
  return 0;
#endif
}

// A use of a quarantined (dead) heap: reported; ends the process if faults
// are isolated and it happened in process code, else the node.
bool report_dead_heap_use(int sig, const void* address) {
  heap_owner owner;
  if ((sig != SIGSEGV && sig != SIGBUS) || !heap_quarantined(address, &owner)) return false;
  put("ember: use of memory of process <");
  put_number(owner.node, 10);
  put(".");
  put_number(owner.slot, 10);
  put(".");
  put_number(owner.generation, 10);
  put("> after it exited (its heap was reclaimed), at address 0x");
  put_number(std::uintptr_t(address), 16);
  put("\n");
  return true;
}

void on_fault(int sig, siginfo_t* info, void* uctx) {
  bool dead_heap = report_dead_heap_use(sig, info->si_addr);
  process* p = current_process();
  node* n = current_node();
  stack* s = p ? p->stk : nullptr;
  auto lo = s ? std::uintptr_t(s->base) : 0;
  auto hi = s ? std::uintptr_t(s->top()) : 0;
  std::uintptr_t sp = stack_pointer(uctx);
  auto addr = std::uintptr_t(info->si_addr);
  bool overflow = s && (sig == SIGSEGV || sig == SIGBUS) && addr >= lo && addr < std::uintptr_t(s->bottom());
  // Only a process running its own code on its own stack is ended here (a
  // frame that moved the stack pointer past the guard still counts).
  if (!p || !n || !s || !p->home || !(overflow || (sp >= lo && sp < hi))) {
    chain(sig, info, uctx);
    return;
  }
  if (overflow || n->options.isolate_faults) {
    (void)dead_heap;
    s->fault_signal = sig;
    s->fault_address = info->si_addr;
    s->fault_overflow = overflow;
    abandon_on_fault(*p);  // does not return
  }
  if (dead_heap) {
    chain(sig, info, uctx);
    return;
  }
  put("ember: process <");
  put_number(n->table.node_id(), 10);
  put(".");
  put_number(p->slot, 10);
  put(".");
  put_number(p->generation() & process_table::gen_mask, 10);
  put("> received ");
  put(fault_signal_name(sig));
  put(" at address 0x");
  put_number(addr, 16);
  put("; ending the node (runtime_options::isolate_faults ends only the process)\n");
  chain(sig, info, uctx);
}

}  // namespace

const char* fault_signal_name(int sig) noexcept {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
  }
  return "signal";
}

void install_fault_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int i = 0; i < 4; ++i) {
      struct sigaction sa {};
      sa.sa_sigaction = on_fault;
      sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
      sigemptyset(&sa.sa_mask);
      ::sigaction(fault_signals[i], &sa, &previous[i]);
    }
  });
}

signal_stack make_signal_stack() noexcept {
  std::size_t size = 64 * 1024;
  long min = ::sysconf(_SC_SIGSTKSZ);
  if (min > 0 && std::size_t(min) * 4 > size) size = std::size_t(min) * 4;
  void* mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return {};
  stack_t ss{};
  ss.ss_sp = mem;
  ss.ss_size = size;
  ss.ss_flags = 0;
  stack_t old{};
  if (::sigaltstack(&ss, &old) != 0) {
    ::munmap(mem, size);
    return {};
  }
  return {mem, size, old.ss_sp, old.ss_size, old.ss_flags};
}

void drop_signal_stack(const signal_stack& s) noexcept {
  if (!s.memory) return;
  stack_t old{};
  old.ss_sp = s.previous;
  old.ss_size = s.previous_size;
  old.ss_flags = s.previous_flags;
  if (!old.ss_sp) old.ss_flags = SS_DISABLE;
  ::sigaltstack(&old, nullptr);
  ::munmap(s.memory, s.size);
}

}  // namespace ember::detail
