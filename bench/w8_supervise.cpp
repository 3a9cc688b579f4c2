// W8 supervise: a one_for_one supervisor with N permanent gen_server
// workers; a killer process kills a random worker every 1 ms for D seconds
// while a client calls random workers continuously.
//
//   ember_bench_w8 [D=5 seconds] [N=1000]
//
// Worker i is a gen_server registered as "w<i>" (gen_server::options::name)
// whose state is its index; it answers `ping` with it. The supervisor
// (supervisor::start_link, intensity 1,000,000 per 1 s: restarts never
// exhaust it) starts the N workers as supervisor::worker<worker>("w<i>",
// {.name = "w<i>"}, i).
//
// The killer kills D*1000 times, at t0 + 1 ms, t0 + 2 ms, ... (absolute
// times: a late kill is not made up by delaying the following ones; how
// many kills were more than 1 ms late, and the largest lateness, go to
// stderr). Each kill picks a random worker whose
// previous kill (if any) has been answered by its replacement, looks its
// pid up by name (whereis), records the time and sends exit(pid, kill),
// then spawns a prober for that kill: the prober polls the name (whereis,
// then yield) until it names a pid other than the killed one, calls that
// pid with `ping` and reports the time of the answer to the killer. Restart
// latency = answer time - kill time, in the fixed-storage histogram of
// bench/latency_hist.hpp (recorded by the killer). Probing runs in its own
// process, so the killer keeps its 1 ms cadence however long a restart takes.
//
// The client calls gen_server::call<int>("w<i>", ping{}) for random i from
// the first kill until the killer has made its last one, catching
// ember::exit_error; it counts calls_ok (answered with i) and calls_failed,
// and records each failure's worker, start and end times and reason.
//
// Verification (exit 1 otherwise): every kill found a live named worker and
// was followed by a replacement (another pid under the name) answering the
// prober with the right index, so restarts == kills == D*1000 and the
// histogram holds them all; every answer the client got was the right
// index; every failed call failed with `killed` or `noproc` and overlapped a
// kill of the same worker (killed at or before the call's end, replacement
// answering at or after its start: a failure on a worker that was not being
// killed is an error); at the end all N names are registered to distinct
// live workers, each answers `ping` with its index and count_children
// reports N active workers. Then the supervisor is stopped (gen_server::stop).
//
// RESULT W8 restarts restart_p99_us calls_ok calls_failed restart_p50_us restart_max_us
#include <ember/ember.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "bench_util.hpp"
#include "latency_hist.hpp"

namespace {

using namespace std::chrono_literals;

struct ping {};

// A worker's state: its index, which is its answer to ping.
struct worker {
  int index;
  explicit worker(int i) : index(i) {}
  void handle_call(ember::message& request, ember::from from) {
    ember::dispatch(request, [&](ping) { ember::reply(from, index); });
  }
};

struct kill_record {
  int worker = 0;
  ember::pid old{};                       // the pid killed
  bench::clock::time_point killed{};      // just before exit(old, kill)
  bench::clock::time_point restored{};    // the replacement answered the prober
  ember::pid replacement{};
  bool answered = false;
};

struct failure_record {
  int worker = 0;
  bench::clock::time_point start{}, end{};
  ember::exit_reason::kind why{};
};

struct go {};
// Prober -> killer.
struct restored {
  std::int64_t kill;
  ember::pid replacement;
  bench::clock::time_point at;
  bool right_answer;  // the replacement answered with the worker's index
  bool call_failed;
};
struct killer_done {
  std::int64_t kills;
  std::int64_t restored;
  std::int64_t unnamed;      // picked workers whose name was not registered
  std::int64_t bad_probes;   // replacement answered wrongly or its call failed
  std::int64_t max_lag_ns;   // latest kill behind its 1 ms slot
  std::int64_t late_kills;   // kills more than 1 ms behind their slot
  bool all_restored;         // every kill's replacement answered in time
};
struct client_done {
  std::int64_t ok;
  std::int64_t failed;
  std::int64_t wrong;        // answered with another index
};

// Built by main before the runtime starts (global heap).
std::vector<std::string> names;           // "w<i>"
std::vector<kill_record> kills;           // the killer's (capacity reserved)
std::vector<failure_record> failures;     // the client's (appended in a global_heap_scope)
bench::latency_hist restart_hist;         // the killer's
std::atomic<bool> killing_done{false};

void prober(std::int64_t k, int i, ember::pid old, ember::pid killer) {
  const std::string& name = names[std::size_t(i)];
  for (;;) {
    const ember::pid p = ember::whereis(name);
    if (p && p != old) {
      try {
        const int v = ember::gen_server::call<int>(p, ping{});
        ember::send(killer, restored{k, p, bench::clock::now(), v == i, false});
      } catch (const ember::exit_error&) {
        ember::send(killer, restored{k, p, bench::clock::now(), false, true});
      }
      return;
    }
    ember::yield();
  }
}

void killer(std::int64_t n_kills, int n, ember::pid driver) {
  ember::receive([](go) {});
  const ember::pid me = ember::self();
  std::mt19937_64 rng(0x5eed0008);
  std::vector<char> pending(std::size_t(n), 0);  // killed, replacement not yet answered
  killer_done d{0, 0, 0, 0, 0, 0, true};
  std::int64_t outstanding = 0;
  auto on_restored = [&](const restored& r) {
    kill_record& k = kills[std::size_t(r.kill)];
    k.restored = r.at;
    k.replacement = r.replacement;
    k.answered = true;
    restart_hist.record(std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(r.at - k.killed).count()));
    pending[std::size_t(k.worker)] = 0;
    --outstanding;
    ++d.restored;
    if (!r.right_answer || r.call_failed) ++d.bad_probes;
  };
  auto next = bench::clock::now() + 1ms;
  for (std::int64_t j = 0; j < n_kills; ++j) {
    for (;;) {
      auto now = bench::clock::now();
      if (now >= next) {
        const std::int64_t lag = std::chrono::duration_cast<std::chrono::nanoseconds>(now - next).count();
        d.max_lag_ns = std::max(d.max_lag_ns, lag);
        if (lag > 1000000) ++d.late_kills;
        break;
      }
      ember::receive(on_restored, ember::after(next - now, [] {}));
    }
    next += 1ms;
    while (outstanding >= n) ember::receive(on_restored);  // every worker awaits its replacement
    int i;
    do {
      i = int(rng() % std::uint64_t(n));
    } while (pending[std::size_t(i)]);
    const ember::pid p = ember::whereis(names[std::size_t(i)]);
    if (!p) {  // cannot happen: a worker not pending has an answering replacement
      ++d.unnamed;
      continue;
    }
    kills.push_back(kill_record{i, p, bench::clock::now()});
    ember::exit(p, ember::exit_reason::kill());
    pending[std::size_t(i)] = 1;
    ++outstanding;
    ++d.kills;
    const std::int64_t k = std::int64_t(kills.size()) - 1;
    ember::spawn([k, i, p, me] { prober(k, i, p, me); });
  }
  killing_done.store(true, std::memory_order_relaxed);
  while (outstanding > 0) {
    bool got = ember::receive([&](const restored& r) { on_restored(r); return true; },
                              ember::after(10s, [] { return false; }));
    if (!got) {
      d.all_restored = false;
      break;
    }
  }
  ember::send(driver, d);
}

void client(int n, ember::pid driver) {
  ember::receive([](go) {});
  std::mt19937_64 rng(0xc11e0008);
  client_done d{0, 0, 0};
  while (!killing_done.load(std::memory_order_relaxed)) {
    const int i = int(rng() % std::uint64_t(n));
    const auto start = bench::clock::now();
    try {
      const int v = ember::gen_server::call<int>(names[std::size_t(i)], ping{});
      if (v == i) ++d.ok; else ++d.wrong;
    } catch (const ember::exit_error& e) {
      const auto end = bench::clock::now();
      ++d.failed;
      ember::global_heap_scope outlives_me;  // failures is read by main after this process exits
      failures.push_back(failure_record{i, start, end, e.reason().what_kind()});
    }
  }
  ember::send(driver, d);
}

const char* kind_name(ember::exit_reason::kind k) {
  using kind = ember::exit_reason::kind;
  switch (k) {
    case kind::killed: return "killed";
    case kind::noproc: return "noproc";
    case kind::timeout: return "timeout";
    default: return "another reason";
  }
}

struct measurement {
  killer_done killer{};
  client_done client{};
  int final_wrong = 0;           // workers that did not answer ping with their index at the end
  std::size_t distinct_pids = 0; // distinct pids under the N names at the end
  std::size_t active = 0;        // count_children(sup).active at the end
  std::string error;
};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t seconds = bench::arg_int(argc, argv, 1, 5);
  const int n = int(bench::arg_int(argc, argv, 2, 1000));
  const char* me = "ember_bench_w8";
  bench::watchdog dog("W8", std::chrono::seconds(std::max<std::int64_t>(60, 2 * seconds + 30)));
  const std::int64_t n_kills = seconds * 1000;
  names.reserve(std::size_t(n));
  for (int i = 0; i < n; ++i) names.push_back("w" + std::to_string(i));
  kills.reserve(std::size_t(n_kills));
  restart_hist.clear();

  ember::runtime rt(bench::runtime_options());
  measurement m = bench::run_driver<measurement>(rt, [&](measurement& m) {
    const ember::pid driver = ember::self();
    ember::supervisor::spec s;
    s.flags = {.strategy = ember::supervisor::strategy::one_for_one, .intensity = 1000000, .period = 1s};
    s.children.reserve(std::size_t(n));
    for (int i = 0; i < n; ++i) {
      ember::gen_server::options o;
      o.name = names[std::size_t(i)];
      s.children.push_back(ember::supervisor::worker<worker>(names[std::size_t(i)], o, i));
    }
    const ember::pid sup = ember::supervisor::start_link(std::move(s));
    const ember::pid k = ember::spawn([n_kills, n, driver] { killer(n_kills, n, driver); });
    const ember::pid c = ember::spawn([n, driver] { client(n, driver); });
    ember::send(c, go{});
    ember::send(k, go{});
    m.killer = ember::receive([](const killer_done& d) { return d; });
    m.client = ember::receive([](const client_done& d) { return d; });
    std::unordered_set<ember::pid> pids;
    for (int i = 0; i < n; ++i) {
      const std::string& name = names[std::size_t(i)];
      if (ember::pid p = ember::whereis(name)) pids.insert(p);
      try {
        if (ember::gen_server::call<int>(name, ping{}) != i) ++m.final_wrong;
      } catch (const ember::exit_error&) {
        ++m.final_wrong;
      }
    }
    m.distinct_pids = pids.size();
    m.active = ember::supervisor::count_children(sup).active;
    ember::gen_server::stop(sup);
  });
  if (!m.error.empty()) {  // the runtime's destructor ends what is left
    std::fprintf(stderr, "%s: error: the driver failed: %s\n", me, m.error.c_str());
    return 1;
  }
  rt.wait();

  bool ok = true;
  const killer_done& kd = m.killer;
  if (kd.kills != n_kills || kd.restored != kd.kills || !kd.all_restored || kd.unnamed != 0 ||
      kd.bad_probes != 0 || std::int64_t(restart_hist.total()) != kd.kills ||
      std::int64_t(kills.size()) != kd.kills) {
    std::fprintf(stderr,
                 "%s: error: verification failed: %lld kills (expected %lld), %lld replacements answered "
                 "(%s), %lld picked workers had no registered name, %lld probes got a wrong answer or "
                 "failed, %llu restart samples\n",
                 me, (long long)kd.kills, (long long)n_kills, (long long)kd.restored,
                 kd.all_restored ? "all in time" : "some never did, 10 s after the last kill",
                 (long long)kd.unnamed, (long long)kd.bad_probes, (unsigned long long)restart_hist.total());
    ok = false;
  }
  for (const kill_record& k : kills) {
    if (k.answered && (k.replacement == k.old || !k.replacement)) {
      std::fprintf(stderr, "%s: error: kill of %s (%s): the 'replacement' %s is not a new process\n", me,
                   names[std::size_t(k.worker)].c_str(), k.old.to_string().c_str(),
                   k.replacement.to_string().c_str());
      ok = false;
      break;
    }
  }
  if (m.client.wrong != 0 || m.client.ok <= 0) {
    std::fprintf(stderr, "%s: error: the client got %lld wrong answers and %lld right ones\n", me,
                 (long long)m.client.wrong, (long long)m.client.ok);
    ok = false;
  }
  if (std::int64_t(failures.size()) != m.client.failed) {
    std::fprintf(stderr, "%s: error: %zu failures recorded, the client counted %lld\n", me, failures.size(),
                 (long long)m.client.failed);
    ok = false;
  }
  // Every failed call overlapped a kill of its worker.
  std::vector<std::vector<std::size_t>> kills_of(static_cast<std::size_t>(n));
  for (std::size_t j = 0; j < kills.size(); ++j) kills_of[std::size_t(kills[j].worker)].push_back(j);
  std::int64_t unexplained = 0;
  for (const failure_record& f : failures) {
    const bool reason_ok = f.why == ember::exit_reason::kind::killed || f.why == ember::exit_reason::kind::noproc;
    bool overlapped = false;
    for (std::size_t j : kills_of[std::size_t(f.worker)]) {
      const kill_record& k = kills[j];
      if (k.killed <= f.end && (!k.answered || k.restored >= f.start)) {
        overlapped = true;
        break;
      }
    }
    if (!reason_ok || !overlapped) {
      if (unexplained++ < 5) {
        std::fprintf(stderr, "%s: error: a call to %s failed (%s) %s\n", me, names[std::size_t(f.worker)].c_str(),
                     kind_name(f.why), overlapped ? "with an unexpected reason" : "while that worker was not being killed");
      }
    }
  }
  if (unexplained) {
    std::fprintf(stderr, "%s: error: %lld of %zu failed calls are not explained by a kill\n", me,
                 (long long)unexplained, failures.size());
    ok = false;
  }
  if (m.final_wrong != 0 || m.distinct_pids != std::size_t(n) || m.active != std::size_t(n)) {
    std::fprintf(stderr,
                 "%s: error: at the end %d workers did not answer ping rightly, %zu distinct pids under the "
                 "%d names, %zu active children\n",
                 me, m.final_wrong, m.distinct_pids, n, m.active);
    ok = false;
  }
  if (!ok) return 1;
  std::fprintf(stderr, "%s: %lld of %lld kills were more than 1 ms behind their slot, the latest by %.1f us\n", me,
               (long long)kd.late_kills, (long long)kd.kills, double(kd.max_lag_ns) / 1e3);
  BENCH_PRINT("RESULT W8 restarts=%lld restart_p99_us=%.3f calls_ok=%lld calls_failed=%lld restart_p50_us=%.3f "
              "restart_max_us=%.1f\n",
              (long long)kd.restored, restart_hist.quantile_ns(0.99) / 1e3, (long long)m.client.ok,
              (long long)m.client.failed, restart_hist.quantile_ns(0.5) / 1e3, double(restart_hist.max_ns()) / 1e3);
  dog.disarm();
  return 0;
}
