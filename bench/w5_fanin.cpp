// W5 fanin: P producer processes each send K small messages (the numbers
// 0..K-1) to one consumer, which counts them to P*K and sums them.
//
//   ember_bench_w5 [K=10000] [P=1000]
#include <ember/ember.hpp>

#include <future>

#include "bench_util.hpp"

namespace {

struct tally {
  std::int64_t count;
  std::int64_t sum;
};

struct measurement {
  double ns = 0;
  tally t{};
};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t k = bench::arg_int(argc, argv, 1, 10000);
  const std::int64_t p = bench::arg_int(argc, argv, 2, 1000);
  const std::int64_t total = p * k;
  bench::watchdog dog("W5");
  ember::runtime rt(bench::runtime_options());
  std::promise<measurement> promise;
  auto measured = promise.get_future();
  rt.spawn([&] {
    const ember::pid me = ember::self();
    const ember::pid consumer = ember::spawn([me, total] {
      std::int64_t count = 0, sum = 0;
      while (count < total) {
        sum += ember::receive([](std::int64_t v) { return v; });
        ++count;
      }
      ember::send(me, tally{count, sum});
    });
    measurement m;
    auto t0 = bench::clock::now();
    for (std::int64_t i = 0; i < p; ++i) {
      ember::spawn([consumer, k] {
        for (std::int64_t j = 0; j < k; ++j) ember::send(consumer, std::int64_t{j});
      });
    }
    m.t = ember::receive([](tally t) { return t; });
    auto t1 = bench::clock::now();
    m.ns = bench::ns_between(t0, t1);
    promise.set_value(m);
  });
  const measurement m = measured.get();
  rt.wait();
  const std::int64_t expected_sum = p * (k * (k - 1) / 2);
  if (m.t.count != total || m.t.sum != expected_sum) {
    std::fprintf(stderr,
                 "ember_bench_w5: error: verification failed: consumer got %lld messages summing to "
                 "%lld, expected %lld summing to %lld\n",
                 (long long)m.t.count, (long long)m.t.sum, (long long)total, (long long)expected_sum);
    return 1;
  }
  BENCH_PRINT("RESULT W5 msgs_per_s=%.0f\n", double(total) / (m.ns / 1e9));
  dog.disarm();
  return 0;
}
