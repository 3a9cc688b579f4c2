// alloc: the ember process heap against mimalloc, with glibc malloc for
// reference, side by side in one Google Benchmark program.
//
//   ember_bench_alloc [--benchmark_... flags]   (default --benchmark_min_time=0.2)
//
// The whole benchmark run happens inside one ember process (a runtime with
// one scheduler, the process with an 8 MiB stack), so ::operator new /
// ::operator delete are served by that process's heap: that is the `ember`
// column. The `mimalloc` column calls mi_malloc / mi_free, the `malloc`
// column glibc's malloc / free. Every case is registered as three adjacent
// benchmarks (ember, mimalloc, malloc), so that a noisy moment hits one case
// rather than one allocator.
//
// Patterns, each for sizes 16, 32, 64, 128, 256, 512 and 1024 bytes:
//   pair    allocate one block, write its first byte, free it;
//   batch   allocate 1000 blocks (writing the first byte of each), then free
//           them all in the order they were allocated; plus a mixed-size
//           batch whose sizes cycle through 16..1024 in steps of 16
//           (16 * (1 + (37 i mod 64)), so consecutive sizes differ).
// After the Google Benchmark output, one line per case:
//   RESULT alloc pattern=pair|batch size=N|mixed ember_ns=.. mimalloc_ns=.. malloc_ns=.. ratio=..
// ns per allocation + free (real time per iteration / allocations per
// iteration; with --benchmark_repetitions, the median of the repetitions);
// ratio = ember_ns / mimalloc_ns.
//
// Linking note: Debian's libmimalloc.so is built to replace malloc (it
// exports malloc, free, __libc_malloc...), so in this program every plain
// malloc() is mimalloc's. The `malloc` column therefore calls glibc's own
// malloc and free, looked up in libc.so.6 with dlsym (checked with dladdr).
// ember's fast paths do not call malloc, so its column is unaffected.
#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <unistd.h>
#include <mimalloc.h>

#include <ember/ember.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "bench_util.hpp"

namespace {

using malloc_fn = void* (*)(std::size_t);
using free_fn = void (*)(void*);
malloc_fn glibc_malloc = nullptr;
free_fn glibc_free = nullptr;

struct ember_heap {
  static void* alloc(std::size_t n) { return ::operator new(n); }
  static void release(void* p, std::size_t n) { ::operator delete(p, n); }
};
struct mimalloc_heap {
  static void* alloc(std::size_t n) { return mi_malloc(n); }
  static void release(void* p, std::size_t) { mi_free(p); }
};
struct glibc_heap {
  static void* alloc(std::size_t n) { return glibc_malloc(n); }
  static void release(void* p, std::size_t) { glibc_free(p); }
};

constexpr int kinds = 3;
constexpr const char* kind_name[kinds] = {"ember", "mimalloc", "malloc"};
constexpr std::size_t sizes[] = {16, 32, 64, 128, 256, 512, 1024};
constexpr int batch = 1000;

constexpr std::array<std::uint32_t, batch> make_mixed() {
  std::array<std::uint32_t, batch> a{};
  for (int i = 0; i < batch; ++i) a[i] = std::uint32_t(16 * (1 + (37 * i) % 64));
  return a;
}
constexpr std::array<std::uint32_t, batch> mixed_sizes = make_mixed();

template <class A>
void bm_pair(benchmark::State& st, std::size_t n) {
  for (auto _ : st) {
    void* p = A::alloc(n);
    *static_cast<volatile char*>(p) = 1;
    benchmark::DoNotOptimize(p);
    A::release(p, n);
  }
  st.SetItemsProcessed(st.iterations());
}

// n == 0: the mixed sizes.
template <class A>
void bm_batch(benchmark::State& st, std::size_t n) {
  void* ptrs[batch];
  void** escape = ptrs;
  benchmark::DoNotOptimize(escape);
  for (auto _ : st) {
    for (int i = 0; i < batch; ++i) {
      void* p = A::alloc(n ? n : mixed_sizes[i]);
      *static_cast<volatile char*>(p) = char(i);
      ptrs[i] = p;
    }
    benchmark::ClobberMemory();
    for (int i = 0; i < batch; ++i) A::release(ptrs[i], n ? n : mixed_sizes[i]);
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * batch);
}

struct case_def {
  const char* pattern;
  std::size_t size;  // 0: mixed
  int ops;           // allocations per iteration
};
std::vector<case_def> cases;       // built in main (global heap)
std::vector<std::string> names;    // cases.size() * kinds benchmark names

// Per-iteration real times (ns) of every run, per case and kind. Fixed
// storage: the reporter runs inside the process.
constexpr int max_samples = 64;
struct samples {
  double ns[max_samples];
  int n = 0;
};
samples results[32][kinds];

// Google Benchmark's console output, in colour only on a terminal (the
// RESULT lines follow it and must start their line when piped).
class collecting_reporter : public benchmark::ConsoleReporter {
 public:
  collecting_reporter()
      : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}

  // Keeps the repetitions' runs; with --benchmark_report_aggregates_only,
  // the median aggregate instead.
  void ReportRuns(const std::vector<Run>& runs) override {
    const bool have_runs = std::any_of(runs.begin(), runs.end(), [](const Run& r) {
      return !r.error_occurred && r.run_type == Run::RT_Iteration && r.iterations > 0;
    });
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      if (have_runs ? r.run_type != Run::RT_Iteration || r.iterations == 0
                    : r.run_type != Run::RT_Aggregate || r.aggregate_name != "median")
        continue;
      for (std::size_t i = 0; i < names.size(); ++i) {
        if (r.run_name.function_name != names[i]) continue;
        samples& s = results[i / kinds][i % kinds];
        if (s.n < max_samples) s.ns[s.n++] = r.GetAdjustedRealTime() * ns_per_unit(r.time_unit);
        break;
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

 private:
  static double ns_per_unit(benchmark::TimeUnit u) {
    switch (u) {
      case benchmark::kNanosecond: return 1;
      case benchmark::kMicrosecond: return 1e3;
      case benchmark::kMillisecond: return 1e6;
      default: return 1e9;
    }
  }
};

double median(const samples& s) {
  double v[max_samples];
  std::copy(s.ns, s.ns + s.n, v);
  std::sort(v, v + s.n);
  return s.n % 2 ? v[s.n / 2] : (v[s.n / 2 - 1] + v[s.n / 2]) / 2;
}

template <class A>
void register_case(const case_def& c, int kind) {
  const std::string& name = names[(&c - cases.data()) * kinds + std::size_t(kind)];
  const std::size_t n = c.size;
  benchmark::internal::Benchmark* b;
  if (std::strcmp(c.pattern, "pair") == 0) {
    b = benchmark::RegisterBenchmark(name.c_str(), [n](benchmark::State& st) { bm_pair<A>(st, n); });
  } else {
    b = benchmark::RegisterBenchmark(name.c_str(), [n](benchmark::State& st) { bm_batch<A>(st, n); });
  }
  b->Unit(benchmark::kNanosecond);
}

bool check_glibc() {
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (!libc) {
    std::fprintf(stderr, "ember_bench_alloc: error: cannot find libc.so.6: %s\n", dlerror());
    return false;
  }
  glibc_malloc = reinterpret_cast<malloc_fn>(dlsym(libc, "malloc"));
  glibc_free = reinterpret_cast<free_fn>(dlsym(libc, "free"));
  Dl_info where{};
  if (!glibc_malloc || !glibc_free || !dladdr(reinterpret_cast<void*>(glibc_malloc), &where) ||
      !where.dli_fname || !std::strstr(where.dli_fname, "libc.so")) {
    std::fprintf(stderr, "ember_bench_alloc: error: glibc's malloc not found in libc.so.6 (got %s)\n",
                 where.dli_fname ? where.dli_fname : "nothing");
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!check_glibc()) return 1;
  // A default --benchmark_min_time unless one is given.
  std::vector<char*> args(argv, argv + argc);
  static char default_min_time[] = "--benchmark_min_time=0.2";
  if (std::none_of(argv + 1, argv + argc, [](const char* a) { return std::strncmp(a, "--benchmark_min_time", 20) == 0; }))
    args.insert(args.begin() + 1, default_min_time);
  int bargc = int(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&bargc, args.data());
  if (benchmark::ReportUnrecognizedArguments(bargc, args.data())) return 64;

  for (std::size_t s : sizes) cases.push_back({"pair", s, 1});
  for (std::size_t s : sizes) cases.push_back({"batch", s, batch});
  cases.push_back({"batch", 0, batch});
  for (const case_def& c : cases) {
    for (int k = 0; k < kinds; ++k) {
      names.push_back(std::string(c.pattern) + "/" + (c.size ? std::to_string(c.size) : "mixed") + "/" +
                      kind_name[k]);
    }
  }
  for (const case_def& c : cases) {
    register_case<ember_heap>(c, 0);
    register_case<mimalloc_heap>(c, 1);
    register_case<glibc_heap>(c, 2);
  }
  // Google Benchmark's lazily made singletons, made here on the global heap
  // rather than in the benchmark process's heap (reclaimed when it exits).
  (void)benchmark::CPUInfo::Get();
  (void)benchmark::SystemInfo::Get();

  bench::watchdog dog("alloc", std::chrono::seconds(600));
  bool heap_active = false;
  {
    ember::runtime_options ro;
    ro.schedulers = 1;
    ember::runtime rt(ro);
    ember::spawn_options so;
    so.stack_size = std::size_t(8) << 20;
    rt.spawn([&heap_active] {
      // Check that operator new is served by this process's heap.
      const std::size_t before = ember::process_info(ember::self())->heap_bytes;
      void* probe = ::operator new(64);
      heap_active = ember::process_info(ember::self())->heap_bytes == before + ember::heap_block_size(64);
      ::operator delete(probe, 64);
      if (!heap_active) return;
      collecting_reporter reporter;
      benchmark::RunSpecifiedBenchmarks(&reporter);
    }, so);
    rt.wait();
  }
  benchmark::Shutdown();
  if (!heap_active) {
    std::fprintf(stderr, "ember_bench_alloc: error: operator new inside the process did not allocate from "
                 "its heap (process_info heap_bytes did not grow by the block)\n");
    return 1;
  }
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const samples* r = results[c];
    if (r[0].n == 0 && r[1].n == 0 && r[2].n == 0) continue;  // filtered out
    std::string line = "RESULT alloc pattern=" + std::string(cases[c].pattern) +
                       " size=" + (cases[c].size ? std::to_string(cases[c].size) : "mixed");
    char buf[64];
    double ns[kinds];
    for (int k = 0; k < kinds; ++k) {
      if (!r[k].n) continue;
      ns[k] = median(r[k]) / cases[c].ops;
      std::snprintf(buf, sizeof buf, " %s_ns=%.2f", kind_name[k], ns[k]);
      line += buf;
    }
    if (r[0].n && r[1].n) {
      std::snprintf(buf, sizeof buf, " ratio=%.2f", ns[0] / ns[1]);
      line += buf;
    }
    BENCH_PRINT("%s\n", line.c_str());
  }
  dog.disarm();
  return 0;
}
