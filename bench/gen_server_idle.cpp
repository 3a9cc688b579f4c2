// gen_server_idle: what an idle gen_server costs. N gen_servers whose state
// is one small counter are started under one dynamic_supervisor, by
// dynamic_supervisor::start_child called in a loop from one process (each a
// call to the supervisor, which starts the child with gen_server::start_link
// and keeps it in its table).
//
//   ember_bench_gen_server_idle [N=1000000] [kill|stop]
//
// The driver process starts the supervisor, reads RSS (VmRSS), starts the N
// servers (timed), reads RSS again: bytes_per_server = (RSS after - RSS
// before) / N, which includes the supervisor's per-child bookkeeping.
// start_us_per_server = the start loop's wall time / N. The driver keeps the
// pids of 100 servers at random positions (chosen before the loop).
//
// Verification (exit 1 otherwise): every start_child returned a pid;
// count_children reports N active workers; each of the 100 kept servers
// answers an `incr` call with 1 (its fresh counter, incremented). Then the
// servers are torn down and the program waits until every process has
// exited (teardown_ms: from the teardown's start until the last process is
// gone). The teardown (second argument):
//   kill   exit(sup, kill): the supervisor dies without stopping its
//          children, and its links end them all (they do not trap exits).
//          The default: OTP's supervisor stops a million
//          simple_one_for_one children one by one and does not finish
//          within the 60 s limit, so the BEAM peer cannot do `stop`.
//   stop   gen_server::stop(sup): the supervisor stops its children in its
//          terminate (exit shutdown to each, then waits for every down), as
//          OTP's does (ember: about 3.4 s for a million here).
//
// RESULT gen_server_idle servers bytes_per_server start_us_per_server teardown_ms
#include <ember/ember.hpp>

#include <algorithm>
#include <future>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"

namespace {

struct incr {};

// The state of each server: one small counter.
struct idle_server {
  std::int32_t n = 0;
  void handle_call(ember::message& request, ember::from from) {
    ember::dispatch(request, [&](incr) { ember::reply(from, ++n); });
  }
};

struct measurement {
  double start_ns = 0;
  bench::clock::time_point teardown_start{};
  std::int64_t rss_before = 0;
  std::int64_t rss_after = 0;
  std::int64_t null_pids = 0;   // start_child returned the null pid
  std::size_t active = 0;       // count_children(sup).active
  int wrong_answers = 0;        // kept servers that did not answer incr with 1
  std::string error;
};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t n = bench::arg_int(argc, argv, 1, 1000000);
  const char* me = "ember_bench_gen_server_idle";
  const std::string how = argc > 2 ? argv[2] : "kill";
  if (how != "kill" && how != "stop") {
    std::fprintf(stderr, "usage: %s [N] [kill|stop]\n", argv[0]);
    return 64;
  }
  const bool orderly = how == "stop";
  bench::watchdog dog("gen_server_idle");

  // The positions of the servers whose pids the driver keeps (sorted).
  std::vector<std::int64_t> sample;
  {
    std::mt19937_64 rng(0x1d1e);
    const std::int64_t k = std::min<std::int64_t>(n, 100);
    for (std::int64_t i = 0; i < k; ++i) sample.push_back(std::int64_t(rng() % std::uint64_t(n)));
    std::sort(sample.begin(), sample.end());
    sample.erase(std::unique(sample.begin(), sample.end()), sample.end());
  }

  ember::runtime rt(bench::runtime_options());
  measurement m = bench::run_driver<measurement>(rt, [&](measurement& m) {
    ember::dynamic_supervisor::spec s;
    s.flags = {.strategy = ember::supervisor::strategy::one_for_one, .intensity = 1, .period = std::chrono::seconds(5)};
    s.child = ember::supervisor::worker<idle_server>("idle_server");
    const ember::pid sup = ember::dynamic_supervisor::start_link(std::move(s));
    std::vector<ember::pid> kept(sample.size());
    std::size_t next = 0;
    m.rss_before = bench::rss_bytes();
    const auto t0 = bench::clock::now();
    for (std::int64_t i = 0; i < n; ++i) {
      const ember::pid p = ember::dynamic_supervisor::start_child(sup);
      if (!p) ++m.null_pids;
      while (next < sample.size() && sample[next] == i) kept[next++] = p;
    }
    const auto t1 = bench::clock::now();
    m.rss_after = bench::rss_bytes();
    m.start_ns = bench::ns_between(t0, t1);
    m.active = ember::supervisor::count_children(sup).active;
    for (ember::pid p : kept) {
      try {
        if (ember::gen_server::call<std::int32_t>(p, incr{}) != 1) ++m.wrong_answers;
      } catch (const ember::exit_error&) {
        ++m.wrong_answers;
      }
    }
    m.teardown_start = bench::clock::now();
    if (orderly) {
      ember::gen_server::stop(sup);
    } else {
      ember::unlink(sup);  // the driver lives on (it is linked to the supervisor by start_link)
      ember::exit(sup, ember::exit_reason::kill());
    }
  });
  if (!m.error.empty()) {  // the runtime's destructor ends what is left
    std::fprintf(stderr, "%s: error: the driver failed: %s\n", me, m.error.c_str());
    return 1;
  }
  rt.wait();
  const auto t_end = bench::clock::now();
  const std::size_t alive = rt.process_count();
  if (m.null_pids != 0 || m.active != std::size_t(n) || m.wrong_answers != 0 || alive != 0) {
    std::fprintf(stderr,
                 "%s: error: verification failed: %lld starts returned no pid, %zu active children (expected "
                 "%lld), %d of %zu sampled servers did not answer incr with 1, %zu processes alive at the end\n",
                 me, (long long)m.null_pids, m.active, (long long)n, m.wrong_answers, sample.size(), alive);
    return 1;
  }
  BENCH_PRINT("RESULT gen_server_idle servers=%lld bytes_per_server=%.0f start_us_per_server=%.3f teardown_ms=%.1f\n",
              (long long)n, double(m.rss_after - m.rss_before) / double(n), m.start_ns / 1e3 / double(n),
              bench::ns_between(m.teardown_start, t_end) / 1e6);
  dog.disarm();
  return 0;
}
