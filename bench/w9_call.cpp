// W9 call: one gen_server holds a counter; C client processes each make R
// synchronous calls `gen_server::call<std::int64_t>(server, incr{})`, which
// the server answers with the incremented counter, and time every call.
//
//   ember_bench_w9 [R=10000] [C=100]
//
// The driver process starts the server (gen_server::start) and spawns the C
// clients; each client says `ready` and waits for `go`. Once all are ready
// the driver takes the start time and sends every client `go`; the wall time
// ends when the last client reports it is done. Each client records every
// call's latency (steady_clock around the call) in its own fixed-storage
// histogram (bench/latency_hist.hpp, no allocation while measuring); the
// histograms are merged at the end.
//
// Verification (exit 1 otherwise): no call failed; each client's replies
// rise strictly (the counter only grows); the replies of all clients sum to
// 1 + 2 + ... + C*R (with the rising check: every value was handed out once);
// the server's final counter (a `get_count` call) is C*R; the histogram
// holds C*R samples.
//
// RESULT W9 calls_per_s=<C*R / wall time> call_p99_us call_p50_us call_max_us
#include <ember/ember.hpp>

#include <algorithm>
#include <future>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "latency_hist.hpp"

namespace {

struct incr {};
struct get_count {};

// The server's state: one counter.
struct counter_server {
  std::int64_t n = 0;
  void handle_call(ember::message& request, ember::from from) {
    ember::dispatch(
        request,
        [&](incr) { ember::reply(from, ++n); },
        [&](get_count) { ember::reply(from, n); });
  }
};

struct ready {};
struct go {};
struct client_done {
  int index;
  std::int64_t calls;    // completed calls
  std::int64_t sum;      // of the replies
  bool rising;           // every reply above the previous one
  bool failed;           // a call threw (its text is in client_errors[index])
};

// Allocated by main before the runtime starts (global heap): client i
// writes only hists[i] and client_errors[i].
std::vector<bench::latency_hist> hists;
std::vector<std::string> client_errors;

void client(int index, ember::pid server, ember::pid driver, std::int64_t r) {
  client_done d{index, 0, 0, true, false};
  ember::send(driver, ready{});
  ember::receive([](go) {});
  bench::latency_hist& h = hists[std::size_t(index)];
  std::int64_t last = 0;
  try {
    for (std::int64_t i = 0; i < r; ++i) {
      auto t0 = bench::clock::now();
      const std::int64_t v = ember::gen_server::call<std::int64_t>(server, incr{});
      auto t1 = bench::clock::now();
      h.record(std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
      if (v <= last) d.rising = false;
      last = v;
      d.sum += v;
      ++d.calls;
    }
  } catch (const ember::error& e) {
    ember::global_heap_scope outlives_me;  // the text outlives this process
    client_errors[std::size_t(index)] = e.what();
    d.failed = true;
  }
  ember::send(driver, d);
}

struct measurement {
  double ns = 0;
  std::int64_t calls = 0;
  std::int64_t sum = 0;
  std::int64_t final_count = -1;
  int not_rising = 0;   // clients whose replies did not rise
  int failed = 0;       // clients whose calls threw
  std::string error;    // the driver's own failure
};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t r = bench::arg_int(argc, argv, 1, 10000);
  const std::int64_t c = bench::arg_int(argc, argv, 2, 100);
  const char* me = "ember_bench_w9";
  bench::watchdog dog("W9");
  hists.resize(std::size_t(c));
  client_errors.resize(std::size_t(c));
  for (auto& h : hists) h.clear();

  ember::runtime rt(bench::runtime_options());
  measurement m = bench::run_driver<measurement>(rt, [&](measurement& m) {
    const ember::pid driver = ember::self();
    const ember::pid server = ember::gen_server::start<counter_server>();
    std::vector<ember::pid> clients;
    clients.reserve(std::size_t(c));
    for (int i = 0; i < int(c); ++i)
      clients.push_back(ember::spawn([i, server, driver, r] { client(i, server, driver, r); }));
    for (std::int64_t i = 0; i < c; ++i) ember::receive([](ready) {});
    const auto t0 = bench::clock::now();
    for (ember::pid p : clients) ember::send(p, go{});
    for (std::int64_t i = 0; i < c; ++i) {
      ember::receive([&](const client_done& d) {
        m.calls += d.calls;
        m.sum += d.sum;
        if (!d.rising) ++m.not_rising;
        if (d.failed) ++m.failed;
      });
    }
    const auto t1 = bench::clock::now();
    m.ns = bench::ns_between(t0, t1);
    m.final_count = ember::gen_server::call<std::int64_t>(server, get_count{});
    ember::gen_server::stop(server);
  });
  if (!m.error.empty()) {  // the runtime's destructor ends what is left
    std::fprintf(stderr, "%s: error: the driver failed: %s\n", me, m.error.c_str());
    return 1;
  }
  rt.wait();

  const std::int64_t total = r * c;
  bool ok = true;
  for (std::int64_t i = 0; i < c; ++i) {
    if (!client_errors[std::size_t(i)].empty()) {
      std::fprintf(stderr, "%s: error: client %lld: a call failed: %s\n", me, (long long)i,
                   client_errors[std::size_t(i)].c_str());
      ok = false;
    }
  }
  bench::latency_hist all;
  all.clear();
  for (auto& h : hists) all.merge(h);
  const std::int64_t expected_sum = total * (total + 1) / 2;
  if (m.calls != total || m.sum != expected_sum || m.not_rising != 0 || m.failed != 0 ||
      m.final_count != total || std::int64_t(all.total()) != total) {
    std::fprintf(stderr,
                 "%s: error: verification failed: %lld calls made (expected %lld), replies sum to %lld "
                 "(expected %lld), %d clients saw replies not rising, %d clients failed, final counter "
                 "%lld (expected %lld), %llu latency samples\n",
                 me, (long long)m.calls, (long long)total, (long long)m.sum, (long long)expected_sum,
                 m.not_rising, m.failed, (long long)m.final_count, (long long)total,
                 (unsigned long long)all.total());
    ok = false;
  }
  if (!ok) return 1;
  BENCH_PRINT("RESULT W9 calls_per_s=%.0f call_p99_us=%.3f call_p50_us=%.3f call_max_us=%.1f\n",
              double(total) / (m.ns / 1e9), all.quantile_ns(0.99) / 1e3, all.quantile_ns(0.5) / 1e3,
              double(all.max_ns()) / 1e3);
  dog.disarm();
  return 0;
}
