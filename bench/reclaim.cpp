// reclaim: how long a process that holds N small blocks takes to die. A
// victim process allocates N blocks of mixed small sizes (new int[4], new
// std::array<char, 24 / 32 / 48>, chained through their first bytes, about
// 32 MB for N = 1,000,000) that it never frees, then it is ended in one of
// three ways:
//   normal      it returns;
//   kill        it waits in receive and the watcher calls
//               ember::exit(victim, exit_reason::kill());
//   heap_limit  it is spawned with max_heap_bytes one byte below what its N
//               blocks take, so its N-th allocation ends it.
// The time is from the moment it is told to end (kill: just before
// ember::exit; normal: just after its last allocation; heap_limit: just
// before the allocation that passes the limit) to the moment the watcher,
// which monitors it, has the `down` message. Baseline: the same for a victim
// holding nothing (normal and kill: no block; heap_limit: a limit of 15
// bytes, so its first allocation ends it).
//
//   ember_bench_reclaim [N=1000000] [reps=5]
//
// Each figure is the median of `reps` victims (baseline: of 2 * reps + 1).
// Prints, per way,
//   RESULT reclaim n=N way=normal|kill|heap_limit ms=.. baseline_ms=.. heap_mb=..
// (heap_mb: the victim's heap, by size class, when it ends). Verified per
// victim: the exit reason (normal, killed, heap_limit), the number of
// blocks it allocated, and that runtime::stats().heap_segments_in_use is
// back to its value before the victim was spawned (polled for up to 2 s
// after the down); and at the end that it is back to its value before the
// first spawn. The runtime uses all cores; the victim runs on the watcher's
// scheduler (a spawned process does), and so does the watcher after the
// down (a woken process runs on its waker's), so no cross-core wake-up is
// measured.
#include <ember/ember.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <future>
#include <vector>

#include "bench_util.hpp"

namespace {

enum class way { normal, kill, heap_limit };
constexpr const char* way_name[] = {"normal", "kill", "heap_limit"};
constexpr int max_reps = 101;

struct ready {};
struct never {};

// Written by the victim, read by the watcher after the down (which orders them).
std::atomic<std::int64_t> t_end_ns{0};      // steady_clock ns: told to end
std::atomic<std::int64_t> blocks_done{0};   // allocations completed
void* volatile sink = nullptr;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(bench::clock::now().time_since_epoch()).count();
}

// The size of block i.
std::size_t block_bytes(std::int64_t i) {
  switch (i & 3) {
    case 0: return sizeof(int[4]);
    case 1: return sizeof(std::array<char, 24>);
    case 2: return sizeof(std::array<char, 32>);
    default: return sizeof(std::array<char, 48>);
  }
}

// What N blocks take in a process heap (by size class).
std::size_t heap_bytes_of(std::int64_t n) {
  std::size_t total = 0;
  for (std::int64_t i = 0; i < 4 && i < n; ++i) total += ember::heap_block_size(block_bytes(i)) * std::size_t((n - i + 3) / 4);
  return total;
}

// Allocates n blocks, never freed. With `mark_last`, records the time just
// before the n-th allocation (the one that passes the heap limit).
void allocate(std::int64_t n, bool mark_last) {
  void* prev = nullptr;
  for (std::int64_t i = 0; i < n; ++i) {
    if (mark_last && i == n - 1) t_end_ns.store(now_ns(), std::memory_order_relaxed);
    void* p;
    switch (i & 3) {
      case 0: p = new int[4]; break;
      case 1: p = new std::array<char, 24>; break;
      case 2: p = new std::array<char, 32>; break;
      default: p = new std::array<char, 48>; break;
    }
    std::memcpy(p, &prev, sizeof prev);
    prev = p;
    blocks_done.store(i + 1, std::memory_order_relaxed);
  }
  sink = prev;
}

char error_text[512];  // set by the watcher on a failed check

struct outcome {
  bool ok = true;
  double ms[3] = {};
  double baseline_ms[3] = {};
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One victim, from spawn to reclaimed heap. Returns ms, or -1 (error_text set).
double measure(ember::runtime& rt, way w, std::int64_t n) {
  const std::size_t segments_before = rt.stats().heap_segments_in_use;
  t_end_ns.store(0);
  blocks_done.store(0);
  const ember::pid watcher = ember::self();
  ember::spawn_options o;
  if (w == way::heap_limit) o.max_heap_bytes = heap_bytes_of(n) - 1;
  auto [victim, ref] = ember::spawn_monitor(
      [w, n, watcher] {
        switch (w) {
          case way::normal:
            allocate(n, false);
            t_end_ns.store(now_ns(), std::memory_order_relaxed);
            return;
          case way::kill:
            allocate(n, false);
            ember::send(watcher, ready{});
            ember::receive([](never) {});
            return;
          case way::heap_limit:
            allocate(n, true);
            return;  // not reached when the limit works
        }
      },
      o);
  (void)ref;
  std::int64_t t0 = 0;
  if (w == way::kill) {
    ember::receive([](ready) {});
    t0 = now_ns();
    ember::exit(victim, ember::exit_reason::kill());
  }
  ember::exit_reason reason = ember::receive([](ember::down d) { return d.reason; });
  const std::int64_t t1 = now_ns();
  if (w != way::kill) t0 = t_end_ns.load();

  const char* label = way_name[int(w)];
  const ember::exit_reason::kind want = w == way::normal ? ember::exit_reason::kind::normal
                                        : w == way::kill ? ember::exit_reason::kind::killed
                                                         : ember::exit_reason::kind::heap_limit;
  if (!reason.is(want)) {
    std::snprintf(error_text, sizeof error_text, "way=%s n=%lld: the victim exited with '%s'", label,
                  (long long)n, reason.to_string().c_str());
    return -1;
  }
  const std::int64_t want_blocks = w == way::heap_limit ? n - 1 : n;
  if (blocks_done.load() != want_blocks || t0 == 0) {
    std::snprintf(error_text, sizeof error_text,
                  "way=%s n=%lld: the victim completed %lld allocations, expected %lld (%s)", label,
                  (long long)n, (long long)blocks_done.load(), (long long)want_blocks,
                  reason.to_string().c_str());
    return -1;
  }
  // The heap is reclaimed before the down is read (the scheduler releases
  // the victim's heap before it runs the woken watcher), but poll a little
  // in case that changes.
  std::size_t segments_after = rt.stats().heap_segments_in_use;
  for (auto until = bench::clock::now() + std::chrono::seconds(2);
       segments_after != segments_before && bench::clock::now() < until;) {
    ember::yield();
    segments_after = rt.stats().heap_segments_in_use;
  }
  if (segments_after != segments_before) {
    std::snprintf(error_text, sizeof error_text,
                  "way=%s n=%lld: heap_segments_in_use is %zu two seconds after the down, %zu before the "
                  "victim: its heap was not reclaimed",
                  label, (long long)n, segments_after, segments_before);
    return -1;
  }
  return double(t1 - t0) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t n = bench::arg_int(argc, argv, 1, 1000000);
  const std::int64_t reps = std::min<std::int64_t>(bench::arg_int(argc, argv, 2, 5), max_reps / 2);
  bench::watchdog dog("reclaim");
  ember::runtime rt;
  const std::size_t segments_start = rt.stats().heap_segments_in_use;
  std::promise<outcome> promise;
  auto measured = promise.get_future();
  rt.spawn([&] {
    outcome out;
    std::vector<double> base, full;  // in the watcher's heap, freed before it returns
    base.reserve(max_reps);
    full.reserve(max_reps);
    for (way w : {way::normal, way::kill, way::heap_limit}) {
      base.clear();
      full.clear();
      // Baselines first: they also warm the watcher's own heap for the
      // messages it receives, so that its segment count is stable.
      for (std::int64_t r = 0; r < 2 * reps + 1 && out.ok; ++r) {
        double ms = measure(rt, w, w == way::heap_limit ? 1 : 0);
        if (ms < 0) out.ok = false; else base.push_back(ms);
      }
      for (std::int64_t r = 0; r < reps && out.ok; ++r) {
        double ms = measure(rt, w, n);
        if (ms < 0) out.ok = false; else full.push_back(ms);
      }
      if (!out.ok) break;
      out.baseline_ms[int(w)] = median(base);
      out.ms[int(w)] = median(full);
    }
    promise.set_value(out);
  });
  const outcome out = measured.get();
  rt.wait();
  if (!out.ok) {
    std::fprintf(stderr, "ember_bench_reclaim: error: %s\n", error_text);
    return 1;
  }
  const std::size_t segments_end = rt.stats().heap_segments_in_use;
  if (segments_end != segments_start) {
    std::fprintf(stderr, "ember_bench_reclaim: error: heap_segments_in_use is %zu after every process "
                 "exited, %zu at the start\n", segments_end, segments_start);
    return 1;
  }
  for (way w : {way::normal, way::kill, way::heap_limit}) {
    // heap_limit: the victim dies holding N - 1 blocks.
    const double mb = double(heap_bytes_of(w == way::heap_limit ? n - 1 : n)) / 1e6;
    BENCH_PRINT("RESULT reclaim n=%lld way=%s ms=%.3f baseline_ms=%.4f heap_mb=%.1f\n", (long long)n,
                way_name[int(w)], out.ms[int(w)], out.baseline_ms[int(w)], mb);
  }
  dog.disarm();
  return 0;
}
