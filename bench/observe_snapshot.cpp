// observe_snapshot: what the observer costs. N idle handler processes (a
// small counter each, spawned from outside), then observe::processes() is
// taken K times from the main thread — the process table the dashboard's
// /api/processes sorts — while one more process keeps a ping-pong pair
// busy, to show what a snapshot takes from the schedulers: nothing is
// stopped, so the pair's round trips go on meanwhile.
//
//   ember_bench_observe_snapshot [N=1000000] [K=5]
//
// snapshot_ms: the median wall time of one processes() call over all N;
// ns_per_process = snapshot_ms / N; sample_us: the median of observe::sample
// (the dashboard's once-a-second runtime figures); pingpong_during and
// pingpong_before: the pair's round trips per second during the snapshots
// and in the same span before them.
//
// Verification (exit 1 otherwise): every snapshot holds at least N rows and
// finds each of 100 pids picked before it; the pair kept running.
//
// RESULT observe_snapshot processes snapshot_ms ns_per_process sample_us pingpong_before pingpong_during
#include <ember/ember.hpp>
#include <ember/observe/introspect.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <thread>
#include <memory>
#include <unordered_set>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

struct counter {
  std::int32_t n = 0;
  void handle_cast(int v) { n += v; }
};

struct ping {
  ember::pid from;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  const int k = argc > 2 ? std::atoi(argv[2]) : 5;
  if (n == 0 || k <= 0) {
    std::fprintf(stderr, "usage: ember_bench_observe_snapshot [N>0] [K>0]\n");
    return 64;
  }
  ember::runtime rt;
  // Started by a driver process (gen_server::start is a process's call).
  auto started = std::make_shared<std::promise<std::vector<ember::pid>>>();
  rt.spawn([n, started] {
    std::vector<ember::pid> picked;
    for (std::size_t i = 0; i < n; ++i) {
      ember::pid p = ember::gen_server::start<counter>();
      if (i % (n / 100 + 1) == 0) picked.push_back(p);
    }
    ember::global_heap_scope global;  // read by main
    started->set_value(std::vector<ember::pid>(picked));
  });
  std::vector<ember::pid> picked = started->get_future().get();
  // The ping-pong pair: counts its round trips.
  auto rounds = std::make_shared<std::atomic<std::uint64_t>>(0);
  auto stop = std::make_shared<std::atomic<bool>>(false);
  ember::pid echo = rt.spawn([] {
    for (;;) {
      bool more = ember::receive([](const ping& p) { ember::send(p.from, 0); return true; },
                                 [](bool) { return false; });
      if (!more) return;
    }
  });
  rt.spawn([echo, rounds, stop] {
    while (!stop->load(std::memory_order_relaxed)) {
      ember::send(echo, ping{ember::self()});
      ember::receive([](int) {});
      rounds->fetch_add(1, std::memory_order_relaxed);
    }
    ember::send(echo, false);
  });

  std::unordered_set<ember::pid> want(picked.begin(), picked.end());
  std::vector<double> snapshot_ms;
  auto before_start = clock_type::now();
  std::uint64_t r0 = rounds->load();
  bool ok = true;
  // The same span without snapshots first, for the pair's own rate.
  std::vector<ember::observe::process_row> rows = ember::observe::processes(rt);  // warm-up
  auto t_warm = clock_type::now() - before_start;
  r0 = rounds->load();
  before_start = clock_type::now();
  std::this_thread::sleep_for(t_warm * k);
  double before_s = std::chrono::duration<double>(clock_type::now() - before_start).count();
  std::uint64_t r1 = rounds->load();
  auto during_start = clock_type::now();
  for (int i = 0; i < k; ++i) {
    auto t0 = clock_type::now();
    rows = ember::observe::processes(rt);
    snapshot_ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
    if (rows.size() < n) ok = false;
    std::size_t found = 0;
    for (auto& r : rows) found += want.count(r.id);
    if (found != want.size()) ok = false;
  }
  double during_s = std::chrono::duration<double>(clock_type::now() - during_start).count();
  std::uint64_t r2 = rounds->load();
  std::vector<double> sample_us;
  for (int i = 0; i < 20; ++i) {
    auto t0 = clock_type::now();
    auto s = ember::observe::sample(rt);
    sample_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
    if (s.stats.processes < n) ok = false;
  }
  stop->store(true);
  double before_rate = double(r1 - r0) / before_s, during_rate = double(r2 - r1) / during_s;
  if (r2 == r1) ok = false;
  double ms = median(snapshot_ms);
  std::printf("RESULT observe_snapshot processes=%zu snapshot_ms=%.1f ns_per_process=%.1f sample_us=%.1f "
              "pingpong_before=%.0f pingpong_during=%.0f\n",
              rows.size(), ms, ms * 1e6 / double(n), median(sample_us), before_rate, during_rate);
  rt.shutdown();
  if (!ok) {
    std::fprintf(stderr, "observe_snapshot: verification failed\n");
    return 1;
  }
  return 0;
}
