// W2 pingpong: two processes exchange M round trips. The driver process is
// the pinger: it sends ping{self} and waits for pong, M times; the ponger
// answers each ping and exits after the M-th.
//
//   ember_bench_w2 [M=1000000]
#include <ember/ember.hpp>

#include <atomic>
#include <future>

#include "bench_util.hpp"

namespace {

struct ping {
  ember::pid from;
};
struct pong {};

std::atomic<std::int64_t> pings_answered{0};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t m = bench::arg_int(argc, argv, 1, 1000000);
  bench::watchdog dog("W2");
  ember::runtime rt(bench::runtime_options());
  std::promise<double> promise;
  auto measured = promise.get_future();
  rt.spawn([&] {
    const ember::pid me = ember::self();
    const ember::pid ponger = ember::spawn([m] {
      std::int64_t answered = 0;
      for (std::int64_t i = 0; i < m; ++i) {
        ember::receive([&](ping p) {
          ember::send(p.from, pong{});
          ++answered;
        });
      }
      pings_answered.store(answered);
    });
    auto t0 = bench::clock::now();
    for (std::int64_t i = 0; i < m; ++i) {
      ember::send(ponger, ping{me});
      ember::receive([](pong) {});
    }
    auto t1 = bench::clock::now();
    promise.set_value(bench::ns_between(t0, t1));
  });
  const double ns = measured.get();
  rt.wait();
  if (pings_answered.load() != m) {
    std::fprintf(stderr, "ember_bench_w2: error: verification failed: %lld pings answered, expected %lld\n",
                 (long long)pings_answered.load(), (long long)m);
    return 1;
  }
  BENCH_PRINT("RESULT W2 ns_per_roundtrip=%.1f\n", ns / double(m));
  dog.disarm();
  return 0;
}
