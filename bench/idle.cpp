// idle: CPU used by a runtime with nothing to do. Spawns 10,000 idle handler
// processes and 100 function processes blocked in receive, lets the
// schedulers settle, then measures the process's CPU time (user + system,
// all threads) over S seconds of wall time.
//
//   ember_bench_idle [S=3]
#include <ember/ember.hpp>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "bench_util.hpp"

namespace {
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
}  // namespace

int main(int argc, char** argv) {
  const std::int64_t seconds = bench::arg_int(argc, argv, 1, 3);
  ember::runtime rt;
  std::vector<ember::pid> pids;
  for (int i = 0; i < 10000; ++i) pids.push_back(rt.spawn(ember::handler([](ember::message&) { ember::stop(); })));
  for (int i = 0; i < 100; ++i) pids.push_back(rt.spawn([] { ember::receive([](int) {}); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let schedulers park
  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  for (ember::pid p : pids) rt.send(p, 0);
  rt.wait();
  std::printf("RESULT idle cpu_pct=%.2f schedulers=%u processes=%zu\n", 100.0 * cpu / wall, rt.schedulers(),
              pids.size());
  return 0;
}
