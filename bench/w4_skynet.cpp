// W4 skynet: a tree of processes, 10 children per node, down to L leaves
// (L = 1,000,000: 6 levels below the root). Leaf i replies with its number
// i; every node sums its 10 children's replies and sends the sum to its
// parent; the driver checks the root's sum is L*(L-1)/2.
//
//   ember_bench_w4 [L=1000000] [handler|function]     (L a power of 10)
//
// Two variants, each run in its own child process unless one is named:
//   variant=handler   nodes are handler processes: init() spawns the 10
//                     children (a leaf replies and stops in init), the
//                     handler sums replies and stops after the 10th
//                     (ember::stop: ends when the handler returns).
//   variant=function  nodes are function processes (spawn, receive 10,
//                     reply, return). They may all be alive at once, each
//                     with a guarded stack (two kernel mappings): if
//                     vm.max_map_count cannot hold 2 per node the variant
//                     prints `skipped=max_map_count`.
#include <ember/ember.hpp>

#include <atomic>
#include <cstdint>
#include <future>
#include <string>

#include "bench_util.hpp"

namespace {

constexpr int fan_out = 10;

struct spawn_failed {
  std::string what;
};

ember::pid driver;  // where a function node reports a failed spawn

struct handler_node {
  ember::pid parent;
  std::int64_t num;
  std::int64_t size;
  int replies = 0;
  std::int64_t sum = 0;

  void init() {
    if (size == 1) {
      ember::send(parent, std::int64_t{num});
      ember::stop();
      return;
    }
    const ember::pid me = ember::self();
    const std::int64_t sub = size / fan_out;
    for (int i = 0; i < fan_out; ++i) ember::spawn(ember::handler(handler_node{me, num + i * sub, sub}));
  }
  void operator()(ember::message& m) {
    sum += m.get<std::int64_t>();
    if (++replies == fan_out) {
      ember::send(parent, std::int64_t{sum});
      ember::stop();
    }
  }
};

void function_node(ember::pid parent, std::int64_t num, std::int64_t size) {
  if (size == 1) {
    ember::send(parent, std::int64_t{num});
    return;
  }
  const ember::pid me = ember::self();
  const std::int64_t sub = size / fan_out;
  try {
    for (int i = 0; i < fan_out; ++i) {
      const std::int64_t child = num + i * sub;
      ember::spawn([me, child, sub] { function_node(me, child, sub); });
    }
  } catch (const ember::error& e) {
    ember::send(driver, spawn_failed{e.what()});
    return;
  }
  std::int64_t sum = 0;
  for (int i = 0; i < fan_out; ++i) sum += ember::receive([](std::int64_t v) { return v; });
  ember::send(parent, std::int64_t{sum});
}

struct measurement {
  double ns = 0;
  std::int64_t sum = 0;
  std::string failed;  // a spawn failed: why
};

int run(const std::string& variant, std::int64_t leaves, std::int64_t nodes) {
  const std::string tag = "W4 variant=" + variant;
  const bool handler = variant == "handler";
  if (!handler && ember::runtime::mappings_per_stack() * nodes + 10000 > bench::max_map_count()) {
    BENCH_PRINT("RESULT W4 variant=function skipped=max_map_count\n");
    std::fprintf(stderr,
                 "ember_bench_w4: the function variant needs up to %lld stacks at once (2 mappings "
                 "each) but vm.max_map_count is %lld\n",
                 (long long)nodes, (long long)bench::max_map_count());
    return 0;
  }
  bench::watchdog dog(tag);
  ember::runtime rt(bench::runtime_options());
  std::promise<measurement> promise;
  auto measured = promise.get_future();
  rt.spawn([&] {
    driver = ember::self();
    const ember::pid me = driver;
    measurement m;
    auto t0 = bench::clock::now();
    if (handler) {
      ember::spawn(ember::handler(handler_node{me, 0, leaves}));
    } else {
      ember::spawn([me, leaves] { function_node(me, 0, leaves); });
    }
    ember::receive([&](std::int64_t sum) { m.sum = sum; },
                   [&](spawn_failed& f) { m.failed = std::move(f.what); });
    auto t1 = bench::clock::now();
    m.ns = bench::ns_between(t0, t1);
    promise.set_value(std::move(m));
  });
  measurement m = measured.get();
  if (!m.failed.empty()) {
    BENCH_PRINT("RESULT W4 variant=%s skipped=system_limit\n", variant.c_str());
    std::fprintf(stderr, "ember_bench_w4 %s: a spawn failed: %s\n", tag.c_str(), m.failed.c_str());
    dog.disarm();
    return 0;
  }
  rt.wait();
  const std::int64_t expected = leaves * (leaves - 1) / 2;
  if (m.sum != expected) {
    std::fprintf(stderr, "ember_bench_w4 %s: error: verification failed: sum %lld, expected %lld\n",
                 tag.c_str(), (long long)m.sum, (long long)expected);
    return 1;
  }
  BENCH_PRINT("RESULT W4 variant=%s ms=%.1f\n", variant.c_str(), m.ns / 1e6);
  dog.disarm();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t leaves = bench::arg_int(argc, argv, 1, 1000000);
  std::int64_t level = 1, nodes = 1;
  while (level < leaves && level <= INT64_MAX / (100 * fan_out)) {
    level *= fan_out;
    nodes += level;
  }
  if (leaves < fan_out || level != leaves) {
    std::fprintf(stderr, "%s: the number of leaves must be a power of 10 (at least 10), got %lld\n",
                 argv[0], (long long)leaves);
    return 64;
  }
  const std::string only = argc > 2 ? argv[2] : "";
  if (!only.empty() && only != "handler" && only != "function") {
    std::fprintf(stderr, "usage: %s [leaves] [handler|function]\n", argv[0]);
    return 64;
  }
  if (!only.empty()) return run(only, leaves, nodes);
  int a = bench::run_in_child(argv[0], "variant=handler", [&] { return run("handler", leaves, nodes); });
  int b = bench::run_in_child(argv[0], "variant=function", [&] { return run("function", leaves, nodes); });
  return a != 0 ? a : b;
}
