// W1 spawn: a driver process spawns N processes that each block waiting for
// a message; when all of them are waiting it reads RSS, then sends each a
// `stop` and the program waits until every process has exited.
//
//   ember_bench_w1 [N=1000000] [handler|function]
//
// Two kinds, each run in its own child process (fresh heap, fresh RSS) unless
// one is named:
//   kind=handler   ember::spawn(ember::handler(state)): idle, a control block;
//                  on `stop` it calls ember::stop() (no unwinding).
//   kind=function  ember::spawn(fn) blocked in receive: idle, a guarded stack
//                  (two kernel mappings), so n = min(N, (max_map_count-10000)/2).
//
// "All alive" means spawned AND waiting: each process bumps a shared counter
// when it reaches its wait (handler: in init(); function: just before
// receive) and the last one tells the driver. Spawn time runs from the first
// spawn to that message.
#include <ember/ember.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <string>
#include <vector>

#include "bench_util.hpp"

namespace {

struct stop {};
struct all_ready {};

// Global, so that process bodies capture nothing and cost what an empty
// process costs.
struct shared_state {
  std::atomic<std::int64_t> ready{0};
  std::atomic<std::int64_t> stopped{0};
  std::int64_t n = 0;
  ember::pid driver;
} g;

void reached_wait() {
  if (g.ready.fetch_add(1, std::memory_order_acq_rel) + 1 == g.n) ember::send(g.driver, all_ready{});
}

struct idle_handler {
  void init() { reached_wait(); }
  void operator()(ember::message& m) {
    if (m.is<stop>()) {
      g.stopped.fetch_add(1, std::memory_order_relaxed);
      ember::stop();
    }
  }
};

void idle_function() {
  reached_wait();
  ember::receive([](stop) { g.stopped.fetch_add(1, std::memory_order_relaxed); });
}

struct measurement {
  double spawn_ns = 0;
  std::int64_t rss_before = 0;
  std::int64_t rss_alive = 0;
  bench::clock::time_point teardown_start;
  std::string error;
};

int run(const std::string& kind, std::int64_t n) {
  const std::string tag = "W1 kind=" + kind + " n=" + std::to_string(n);
  bench::watchdog dog(tag);
  const bool handler = kind == "handler";
  g.n = n;

  ember::runtime rt(bench::runtime_options());
  std::promise<measurement> promise;
  auto measured = promise.get_future();
  rt.spawn([&] {
    measurement m;
    try {
      g.driver = ember::self();
      std::vector<ember::pid> pids(std::size_t(n), ember::pid{});  // touched before the baseline
      m.rss_before = bench::rss_bytes();
      auto t0 = bench::clock::now();
      if (handler) {
        for (auto& p : pids) p = ember::spawn(ember::handler(idle_handler{}));
      } else {
        for (auto& p : pids) p = ember::spawn(idle_function);
      }
      ember::receive([](all_ready) {});
      auto t1 = bench::clock::now();
      m.rss_alive = bench::rss_bytes();
      m.spawn_ns = bench::ns_between(t0, t1);
      m.teardown_start = bench::clock::now();
      for (auto p : pids) ember::send(p, stop{});
    } catch (const ember::error& e) {
      m.error = e.what();
    }
    promise.set_value(std::move(m));
  });

  measurement m = measured.get();
  if (!m.error.empty()) {
    std::fprintf(stderr, "ember_bench_w1 %s: error: %s\n", tag.c_str(), m.error.c_str());
    return 1;
  }
  rt.wait();
  auto t_end = bench::clock::now();

  const std::int64_t ready = g.ready.load(), stopped = g.stopped.load();
  const std::size_t alive = rt.process_count();
  if (ready != n || stopped != n || alive != 0) {
    std::fprintf(stderr,
                 "ember_bench_w1 %s: error: verification failed: %lld reached their wait, %lld "
                 "handled stop, %zu still alive (expected %lld, %lld, 0)\n",
                 tag.c_str(), (long long)ready, (long long)stopped, alive, (long long)n, (long long)n);
    return 1;
  }
  BENCH_PRINT("RESULT W1 kind=%s n=%lld spawn_us_per_proc=%.3f bytes_per_proc=%.0f teardown_ms=%.1f\n",
              kind.c_str(), (long long)n, m.spawn_ns / 1e3 / double(n),
              double(m.rss_alive - m.rss_before) / double(n),
              bench::ns_between(m.teardown_start, t_end) / 1e6);
  dog.disarm();
  return 0;
}

std::int64_t function_limit(std::int64_t n) {
  const unsigned per_stack = ember::runtime::mappings_per_stack();
  if (per_stack == 0) return n;  // kernel guard regions: no mapping limit
  return std::min<std::int64_t>(n, (bench::max_map_count() - 10000) / per_stack);
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t n = bench::arg_int(argc, argv, 1, 1000000);
  const std::string only = argc > 2 ? argv[2] : "";
  if (!only.empty() && only != "handler" && only != "function") {
    std::fprintf(stderr, "usage: %s [N] [handler|function]\n", argv[0]);
    return 64;
  }
  const std::int64_t n_function = function_limit(n);
  if (only == "handler") return run("handler", n);
  if (only == "function") {
    if (n_function <= 0) {
      std::fprintf(stderr, "ember_bench_w1: vm.max_map_count is too low for any function process\n");
      return 1;
    }
    return run("function", n_function);
  }
  int a = bench::run_in_child(argv[0], "kind=handler", [&] { return run("handler", n); });
  int b = 1;
  if (n_function > 0) {
    b = bench::run_in_child(argv[0], "kind=function", [&] { return run("function", n_function); });
  } else {
    std::fprintf(stderr, "ember_bench_w1: vm.max_map_count is too low for any function process\n");
  }
  return a != 0 ? a : b;
}
