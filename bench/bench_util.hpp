// What every workload program shares: size arguments, the 60 s watchdog,
// RSS and vm.max_map_count readers, timing, and running variants in child
// processes. See bench/README.md and /work/shared/bench/WORKLOADS.md.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <ember/core/error.hpp>
#include <ember/core/heap.hpp>
#include <ember/sched/runtime.hpp>

namespace bench {

// Runs driver(m) in a process of rt and returns m once the driver is done:
// how a workload measured inside a process reaches main. An ember::error
// the driver throws is kept in m.error (copied into the global heap: the
// process's heap goes when it exits).
template <class M, class F>
M run_driver(ember::runtime& rt, F driver) {
  std::promise<M> promise;
  auto measured = promise.get_future();
  rt.spawn([&] {
    M m;
    try {
      driver(m);
    } catch (const ember::error& e) {
      ember::global_heap_scope outlives_me;
      m.error = e.what();
    }
    promise.set_value(std::move(m));
  });
  return measured.get();
}

// The runtime options every workload uses: the defaults, except that
// EMBER_PREEMPT=off turns asynchronous preemption and the blocked-scheduler
// hand-off off (time_slice = blocked_after = 0), for measuring what they cost.
inline ember::runtime_options runtime_options() {
  ember::runtime_options o;
  if (const char* v = std::getenv("EMBER_PREEMPT"); v && std::string_view(v) == "off") {
    o.time_slice = std::chrono::microseconds(0);
    o.blocked_after = std::chrono::microseconds(0);
  }
  return o;
}

using clock = std::chrono::steady_clock;

inline double ns_between(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double, std::nano>(b - a).count();
}

// argv[i] as a positive integer, or `fallback` when absent. Exits on garbage.
inline std::int64_t arg_int(int argc, char** argv, int i, std::int64_t fallback) {
  if (argc <= i) return fallback;
  char* end = nullptr;
  long long v = std::strtoll(argv[i], &end, 10);
  if (end == argv[i] || *end != '\0' || v <= 0) {
    std::fprintf(stderr, "%s: argument %d must be a positive integer, got '%s'\n", argv[0], i,
                 argv[i]);
    std::exit(64);
  }
  return v;
}

// VmRSS of this program in bytes (0 if unreadable).
inline std::int64_t rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

// /proc/sys/vm/max_map_count (the kernel default 65530 if unreadable).
inline std::int64_t max_map_count() {
  std::ifstream in("/proc/sys/vm/max_map_count");
  std::int64_t v = 0;
  if (in >> v && v > 0) return v;
  return 65530;
}

// Prints one line to stdout and flushes it, so that a crash after it still
// leaves the line in a pipe.
#define BENCH_PRINT(...)          \
  do {                            \
    std::printf(__VA_ARGS__);     \
    std::fflush(stdout);          \
  } while (0)

// Ends the program with `RESULT <tag> timeout=1` if the work has not been
// disarmed within `limit`. After disarm() it still guards the runtime's
// shutdown: if the program has not ended `grace` later, it says so on stderr
// and exits with status 3 (a hung shutdown is a runtime bug, not a result).
class watchdog {
 public:
  explicit watchdog(std::string tag, std::chrono::seconds limit = std::chrono::seconds(60),
                    std::chrono::seconds grace = std::chrono::seconds(30))
      : tag_(std::move(tag)), grace_(grace), deadline_(clock::now() + limit) {
    thread_ = std::thread([this] { watch(); });
  }
  ~watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  // The result is printed; from now on only the shutdown is watched.
  void disarm() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      armed_ = false;
      deadline_ = clock::now() + grace_;
    }
    cv_.notify_all();
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (done_) return;
      if (clock::now() >= deadline_) break;
      cv_.wait_until(lock, deadline_);
    }
    if (armed_) {
      std::printf("RESULT %s timeout=1\n", tag_.c_str());
      std::fflush(stdout);
      std::fprintf(stderr, "ember_bench %s: did not finish within the time limit\n", tag_.c_str());
      std::fflush(stderr);
      _exit(2);
    }
    std::fprintf(stderr, "ember_bench %s: error: the runtime did not shut down within %llds "
                 "after the work was done\n", tag_.c_str(), (long long)grace_.count());
    std::fflush(stderr);
    _exit(3);
  }

  std::string tag_;
  std::chrono::seconds grace_;
  std::mutex mu_;
  std::condition_variable cv_;
  clock::time_point deadline_;
  bool armed_ = true;
  bool done_ = false;
  std::thread thread_;
};

// Runs `variant` in a child process (forked before any thread exists, so each
// variant starts from a fresh heap and a fresh RSS), waits for it and reports
// an abnormal end on stderr. Returns the child's exit status (128+signal if
// it was killed).
inline int run_in_child(const char* program, const char* name, const std::function<int()>& variant) {
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) {
    int status = variant();
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(status);
  }
  int ws = 0;
  while (waitpid(child, &ws, 0) < 0) {
  }
  if (WIFSIGNALED(ws)) {
    std::fprintf(stderr, "%s: error: variant %s crashed: signal %d (%s)\n", program, name,
                 WTERMSIG(ws), strsignal(WTERMSIG(ws)));
    return 128 + WTERMSIG(ws);
  }
  int status = WEXITSTATUS(ws);
  if (status != 0) std::fprintf(stderr, "%s: error: variant %s exited with status %d\n", program, name, status);
  return status;
}

}  // namespace bench
