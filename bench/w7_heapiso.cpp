// W7 heapiso: a garbage process repeatedly builds and drops a ~50 MB
// structure made of many small allocations (a std::map of std::string, a
// std::list of std::string, a std::vector of small heap nodes each holding a
// std::string), while two other processes ping-pong and record the latency
// of every round trip. The baseline runs first: the same ping-pong for the
// same time with no garbage process.
//
//   ember_bench_w7 [seconds=5] [megabytes=50]
//
// Placement. The garbage process calls the runtime (ember::yield) only
// between build/drop cycles; sharing a scheduler with it, the ping-pong would
// measure preemption (W6's subject), not the heaps. The garbage process is
// therefore placed on scheduler 0 and the ping-pong pair on scheduler 1
// (spawn_options::scheduler; the ponger is spawned by the pinger and a
// process woken by a message runs on its sender's scheduler, so the pair
// stays there). What W7 measures is then whether a process churning memory
// slows the others down through the allocator (shared locks, shared pages,
// the kernel): it should not, its heap is its own. The pinger checks every
// 1024 round trips that it is not on the garbage process's thread and says
// on stderr if it ever was.
//
// spawn_options::scheduler only says where a process starts: a process that
// yields goes to its scheduler's ring, where an idle scheduler may steal it.
// So that the garbage process stays on scheduler 0, neither scheduler is
// idle while it runs: it is spawned first and, after its calibration build,
// spins (no runtime call, so it is in no queue) until the ping-pong has
// started on scheduler 1; the pinger ping-pongs unmeasured until the garbage
// process has begun its first cycle, then measures. No message goes to the
// garbage process (a woken process moves to its waker's scheduler).
// (A process placed on a scheduler whose ring is never empty, e.g. because
// a process there keeps yielding, waits in that scheduler's inbox for as
// long as the ring stays non-empty: an earlier version of this program, in
// which the garbage process could be stolen onto scheduler 1 before the
// pinger was placed there, hung that way.)
//
// Verification: at least 10,000 round trips per phase, the ponger answered
// every ping, the garbage process completed at least one cycle (printed as
// `cycles`) and its structure reached 90% of the target (`garbage_mb`, the
// process heap's live bytes at the end of a build), and once every process
// has exited the runtime's heap_segments_in_use is back to its value before
// the first spawn (every heap reclaimed).
#include <ember/ember.hpp>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "latency_hist.hpp"
#include "pingpong.hpp"

namespace {

using bench::ping;
using bench::pong;
using bench::ponger_done;
using bench::stop_ponger;
struct pinger_done {
  std::uint64_t roundtrips;  // measured
  std::uint64_t warmup;      // before the measure
  std::int64_t colocated;  // samples taken on the garbage process's thread
};
struct garbage_done {
  std::int64_t cycles;
  std::int64_t elements;         // per structure
  std::size_t max_built_bytes;   // heap live bytes at the end of a build (the largest)
};

// Fixed storage: recording a round trip allocates nothing.
bench::latency_hist hists[2];  // 0: baseline, 1: with garbage

std::atomic<bool> garbage_stop{false};
std::atomic<bool> pair_running{false};     // the ping-pong has started
std::atomic<bool> garbage_running{false};  // the garbage process has begun its first cycle
std::atomic<std::uintptr_t> garbage_thread{0};  // the thread running the garbage process

// Progress, for a post-mortem (gdb) when a run hangs: the driver's step
// and the garbage process's completed cycles.
std::atomic<int> driver_step{0};
std::atomic<std::int64_t> garbage_cycles{0};

std::uintptr_t this_thread_id() { return std::uintptr_t(pthread_self()); }

// --- the garbage -------------------------------------------------------------

struct record {
  std::uint64_t id;
  std::string name;
  record* next;
};

// What one cycle builds: typical garbage, many small blocks.
struct structure {
  std::map<std::uint64_t, std::string> index;
  std::list<std::string> log;
  std::vector<std::unique_ptr<record>> records;
};

std::uint64_t mix(std::uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A string of `len` characters (len > 15: its characters are a heap block).
std::string text(std::uint64_t seed, std::size_t len) {
  std::string s(len, char('a' + seed % 26));
  s[0] = char('A' + (seed >> 5) % 26);
  return s;
}

void build(structure& g, std::int64_t elements, std::uint64_t cycle) {
  record* prev = nullptr;
  for (std::int64_t i = 0; i < elements; ++i) {
    std::uint64_t key = mix(cycle * 0x100000000ull + std::uint64_t(i));
    g.index.emplace(key, text(key, 16 + std::size_t(i % 48)));
    g.log.push_back(text(key >> 8, 20 + std::size_t((i * 7) % 40)));
    auto r = std::make_unique<record>();
    r->id = key;
    r->name = text(key >> 16, 16 + std::size_t((i * 13) % 24));
    r->next = prev;
    prev = r.get();
    g.records.push_back(std::move(r));
  }
}

std::size_t my_heap_bytes() {
  auto info = ember::process_info(ember::self());
  return info ? info->heap_bytes : 0;
}

void garbage_loop(ember::pid driver, std::size_t target_bytes) {
  garbage_thread.store(this_thread_id(), std::memory_order_relaxed);
  // Calibration: the heap bytes one element costs.
  constexpr std::int64_t probe = 20000;
  std::int64_t elements;
  {
    std::size_t before = my_heap_bytes();
    structure g;
    build(g, probe, 0);
    std::size_t per = std::max<std::size_t>(1, (my_heap_bytes() - before) / probe);
    elements = std::int64_t(target_bytes / per);
  }
  // Keep scheduler 0 busy (and this process in no queue) until the
  // ping-pong keeps scheduler 1 busy: then nobody can steal anybody.
  while (!pair_running.load(std::memory_order_acquire)) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  garbage_running.store(true, std::memory_order_release);
  std::int64_t cycles = 0;
  std::size_t max_built = 0;
  while (!garbage_stop.load(std::memory_order_relaxed)) {
    garbage_thread.store(this_thread_id(), std::memory_order_relaxed);
    {
      structure g;
      build(g, elements, std::uint64_t(cycles + 1));
      max_built = std::max(max_built, my_heap_bytes());
    }  // dropped: every block freed
    ++cycles;
    garbage_cycles.store(cycles, std::memory_order_relaxed);
    ember::yield();  // between cycles only
  }
  garbage_thread.store(0, std::memory_order_relaxed);
  ember::send(driver, garbage_done{cycles, elements, max_built});
}

// --- the ping-pong -----------------------------------------------------------


void pinger_loop(ember::pid driver, bench::latency_hist* h, std::int64_t seconds, bool with_garbage) {
  const ember::pid me = ember::self();
  const ember::pid ponger = ember::spawn([driver] { bench::ponger_loop(driver); });
  h->clear();
  pair_running.store(true, std::memory_order_release);
  std::uint64_t warmup = 0;  // unmeasured round trips while the garbage process gets going
  while (with_garbage && !garbage_running.load(std::memory_order_acquire)) {
    ember::send(ponger, ping{me});
    ember::receive([](pong) {});
    ++warmup;
  }
  const auto deadline = bench::clock::now() + std::chrono::seconds(seconds);
  std::uint64_t n = 0;
  std::int64_t colocated = 0;
  for (;;) {
    auto t0 = bench::clock::now();
    ember::send(ponger, ping{me});
    ember::receive([](pong) {});
    auto t1 = bench::clock::now();
    h->record(std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
    ++n;
    if ((n & 1023) == 0 && garbage_thread.load(std::memory_order_relaxed) == this_thread_id()) ++colocated;
    if (t1 >= deadline) break;
  }
  ember::send(ponger, stop_ponger{});
  ember::send(driver, pinger_done{n, warmup, colocated});
}

// --- the driver --------------------------------------------------------------

struct phase_result {
  std::uint64_t roundtrips = 0;
  std::uint64_t warmup = 0;
  std::int64_t answered = 0;
  std::int64_t colocated = 0;
  garbage_done garbage{0, 0, 0};
  bool exits_normal = true;
  std::uint64_t steals = 0;  // processes moved by work stealing during the phase
};

phase_result run_phase(ember::runtime& rt, bool with_garbage, std::int64_t seconds,
                       std::size_t target_bytes, bench::latency_hist* h) {
  const ember::pid me = ember::self();
  phase_result r;
  const std::uint64_t steals_before = rt.stats().steals;
  garbage_stop.store(false);
  garbage_thread.store(0);
  pair_running.store(false);
  garbage_running.store(false);
  int monitored = 0;
  const int step = with_garbage ? 10 : 0;  // driver_step: 1..6 baseline, 11..16 with garbage
  driver_step.store(step + 1);
  if (with_garbage) {
    ember::spawn_options o;
    o.scheduler = 0;
    ember::spawn_monitor([me, target_bytes] { garbage_loop(me, target_bytes); }, o);
    ++monitored;
  }
  driver_step.store(step + 2);
  ember::spawn_options o;
  o.scheduler = 1;
  ember::spawn_monitor([me, h, seconds, with_garbage] { pinger_loop(me, h, seconds, with_garbage); }, o);
  ++monitored;
  pinger_done pd = ember::receive([](pinger_done d) { return d; });
  driver_step.store(step + 3);
  r.roundtrips = pd.roundtrips;
  r.warmup = pd.warmup;
  r.colocated = pd.colocated;
  r.answered = ember::receive([](ponger_done d) { return d.answered; });
  driver_step.store(step + 4);
  if (with_garbage) {
    garbage_stop.store(true);
    r.garbage = ember::receive([](garbage_done d) { return d; });
  }
  driver_step.store(step + 5);
  for (int i = 0; i < monitored; ++i) {
    bool normal = ember::receive([](ember::down d) { return d.reason.is_normal(); });
    r.exits_normal = r.exits_normal && normal;
  }
  driver_step.store(step + 6);
  r.steals = rt.stats().steals - steals_before;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t seconds = bench::arg_int(argc, argv, 1, 5);
  const std::int64_t megabytes = bench::arg_int(argc, argv, 2, 50);
  const std::size_t target_bytes = std::size_t(megabytes) * 1000 * 1000;
  bench::watchdog dog("W7", std::chrono::seconds(std::max<std::int64_t>(60, 2 * seconds + 30)));
  ember::runtime rt;
  if (rt.schedulers() < 2) {
    std::fprintf(stderr, "ember_bench_w7: error: needs 2 schedulers (the garbage process and the "
                 "ping-pong run on different ones: ember has no preemption yet), the runtime has %u\n",
                 rt.schedulers());
    return 1;
  }
  const std::size_t segments_before = rt.stats().heap_segments_in_use;
  std::promise<std::pair<phase_result, phase_result>> promise;
  auto measured = promise.get_future();
  ember::spawn_options driver_opts;
  driver_opts.scheduler = 1;
  rt.spawn([&] {
    phase_result base = run_phase(rt, false, seconds, target_bytes, &hists[0]);
    phase_result garb = run_phase(rt, true, seconds, target_bytes, &hists[1]);
    promise.set_value({base, garb});
  }, driver_opts);
  const auto [base, garb] = measured.get();
  rt.wait();
  const std::size_t segments_after = rt.stats().heap_segments_in_use;

  const char* me = "ember_bench_w7";
  bool ok = true;
  for (const phase_result* r : {&base, &garb}) {
    const char* name = r == &base ? "baseline" : "garbage";
    if (r->roundtrips < 10000) {
      std::fprintf(stderr, "%s: error: %s phase made %llu round trips, fewer than 10,000\n", me, name,
                   (unsigned long long)r->roundtrips);
      ok = false;
    }
    if (std::uint64_t(r->answered) != r->roundtrips + r->warmup) {
      std::fprintf(stderr, "%s: error: %s phase: the ponger answered %lld pings, the pinger made %llu round trips\n",
                   me, name, (long long)r->answered, (unsigned long long)(r->roundtrips + r->warmup));
      ok = false;
    }
    if (!r->exits_normal) {
      std::fprintf(stderr, "%s: error: %s phase: a process did not exit normally\n", me, name);
      ok = false;
    }
    if (r->colocated) {
      std::fprintf(stderr, "%s: note: %s phase: the pinger ran on the garbage process's thread in %lld "
                   "of its 1024-round-trip samples\n", me, name, (long long)r->colocated);
    }
  }
  if (hists[0].total() != base.roundtrips || hists[1].total() != garb.roundtrips) {
    std::fprintf(stderr, "%s: error: the histograms hold %llu and %llu samples, expected %llu and %llu\n", me,
                 (unsigned long long)hists[0].total(), (unsigned long long)hists[1].total(),
                 (unsigned long long)base.roundtrips, (unsigned long long)garb.roundtrips);
    ok = false;
  }
  const double garbage_mb = double(garb.garbage.max_built_bytes) / 1e6;
  if (garb.garbage.cycles < 1) {
    std::fprintf(stderr, "%s: error: the garbage process completed no build/drop cycle\n", me);
    ok = false;
  }
  if (garb.garbage.max_built_bytes < target_bytes / 10 * 9) {
    std::fprintf(stderr, "%s: error: the garbage structure reached %.1f MB, the target is %lld MB\n", me,
                 garbage_mb, (long long)megabytes);
    ok = false;
  }
  if (segments_after != segments_before) {
    std::fprintf(stderr, "%s: error: heap_segments_in_use is %zu after every process exited, %zu before: "
                 "a heap was not reclaimed\n", me, segments_after, segments_before);
    ok = false;
  }
  std::fprintf(stderr, "%s: work stealing moved %llu processes in the baseline phase, %llu with garbage\n", me,
               (unsigned long long)base.steals, (unsigned long long)garb.steals);
  if (!ok) return 1;
  const bench::latency_hist& hb = hists[0];
  const bench::latency_hist& hg = hists[1];
  BENCH_PRINT("RESULT W7 p50_us=%.3f p99_us=%.3f p999_us=%.3f max_us=%.1f roundtrips=%llu "
              "baseline_p50_us=%.3f baseline_p99_us=%.3f baseline_p999_us=%.3f baseline_max_us=%.1f "
              "baseline_roundtrips=%llu cycles=%lld garbage_mb=%.1f\n",
              hg.quantile_ns(0.5) / 1e3, hg.quantile_ns(0.99) / 1e3, hg.quantile_ns(0.999) / 1e3,
              double(hg.max_ns()) / 1e3, (unsigned long long)hg.total(), hb.quantile_ns(0.5) / 1e3,
              hb.quantile_ns(0.99) / 1e3, hb.quantile_ns(0.999) / 1e3, double(hb.max_ns()) / 1e3,
              (unsigned long long)hb.total(), (long long)garb.garbage.cycles, garbage_mb);
  dog.disarm();
  return 0;
}
