// What the two designs for asynchronous preemption cost on this machine
// (the choice is explained in src/sched/preempt.cpp).
//
//   ember_bench_preempt_cost [rounds=20000]
//
// signal: a thread spins; another sends it SIGURG with tgkill and waits for
//   the handler to run (the handler only stores a flag, as ember's handler
//   does before it redirects the thread). Reports the latency from tgkill to
//   the handler (p50/p99, µs) and the CPU the spinner loses per signal (ns,
//   from its loop rate with and without signals). Injection adds to this one
//   ordinary process switch (~10 ns) and an XSAVE/XRSTOR pair.
// handoff: the cost thread hand-off pays per preemption: the interrupted
//   thread wakes a parked thread to run the scheduler (futex wake) and parks
//   itself; measured as half a futex ping-pong between two threads (µs,
//   p50/p99).
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

std::atomic<std::uint64_t> handled{0};
void on_signal(int) { handled.fetch_add(1, std::memory_order_relaxed); }

double percentile(std::vector<double>& v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, std::size_t(q * double(v.size())))];
}

long futex(std::atomic<std::uint32_t>* addr, int op, std::uint32_t val) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(addr), op, val, nullptr, nullptr, 0);
}

struct spin_result {
  double iterations_per_ns;
};

// Spins for `ms`, counting loop iterations; returns the rate.
double spin_rate(std::atomic<bool>& stop, std::atomic<std::uint64_t>& count) {
  std::uint64_t n = 0, x = 1;
  auto t0 = clock_type::now();
  while (!stop.load(std::memory_order_relaxed)) {
    for (int i = 0; i < 256; ++i) x = x * 31 + 7;
    ++n;
  }
  auto ns = std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
  count.store(n + (x == 0), std::memory_order_relaxed);
  return double(n) / ns;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 20000;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGURG, &sa, nullptr);

  // --- signal latency and the spinner's loss --------------------------------
  double base_rate, signalled_rate;
  {
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> count{0};
    std::thread t([&] { base_rate = spin_rate(stop, count); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop = true;
    t.join();
  }
  std::vector<double> latency;
  latency.reserve(std::size_t(rounds));
  double seconds_signalled;
  {
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> count{0};
    std::atomic<pid_t> tid{0};
    std::thread t([&] {
      tid = pid_t(::gettid());
      signalled_rate = spin_rate(stop, count);
    });
    while (!tid.load()) std::this_thread::yield();
    auto t0 = clock_type::now();
    for (int i = 0; i < rounds; ++i) {
      std::uint64_t before = handled.load();
      auto s = clock_type::now();
      ::syscall(SYS_tgkill, ::getpid(), tid.load(), SIGURG);
      while (handled.load(std::memory_order_relaxed) == before) {
      }
      latency.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - s).count());
    }
    seconds_signalled = std::chrono::duration<double>(clock_type::now() - t0).count();
    stop = true;
    t.join();
  }
  // Loss per signal: the spinner's missing iterations, in time.
  double lost_fraction = 1.0 - signalled_rate / base_rate;
  double cpu_ns_per_signal = std::max(0.0, lost_fraction) * seconds_signalled * 1e9 / rounds;

  // --- thread hand-off --------------------------------------------------------
  std::vector<double> handoff;
  handoff.reserve(std::size_t(rounds));
  {
    std::atomic<std::uint32_t> a{0}, b{0};
    std::thread other([&] {
      for (int i = 0; i < rounds; ++i) {
        while (b.load(std::memory_order_acquire) == 0) futex(&b, FUTEX_WAIT_PRIVATE, 0);
        b.store(0, std::memory_order_relaxed);
        a.store(1, std::memory_order_release);
        futex(&a, FUTEX_WAKE_PRIVATE, 1);
      }
    });
    for (int i = 0; i < rounds; ++i) {
      auto s = clock_type::now();
      b.store(1, std::memory_order_release);
      futex(&b, FUTEX_WAKE_PRIVATE, 1);
      while (a.load(std::memory_order_acquire) == 0) futex(&a, FUTEX_WAIT_PRIVATE, 0);
      a.store(0, std::memory_order_relaxed);
      handoff.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - s).count() / 2);
    }
    other.join();
  }

  std::printf("RESULT preempt_cost signal_p50_us=%.2f signal_p99_us=%.2f signal_cpu_ns=%.0f "
              "handoff_p50_us=%.2f handoff_p99_us=%.2f rounds=%d\n",
              percentile(latency, 0.5), percentile(latency, 0.99), cpu_ns_per_signal, percentile(handoff, 0.5),
              percentile(handoff, 0.99), rounds);
  return 0;
}
