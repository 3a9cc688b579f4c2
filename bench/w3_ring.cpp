// W3 ring: 503 processes in a ring pass one token for H hops (the classic
// thread-ring). The token is a number: a member that receives t > 0 passes
// t-1 to its successor (one hop); the member that receives 0 reports its
// index to the driver and sends -1 around the ring, which stops every member.
//
//   ember_bench_w3 [H=10000000]
#include <ember/ember.hpp>

#include <atomic>
#include <future>
#include <vector>

#include "bench_util.hpp"

namespace {

constexpr int ring_size = 503;

struct next_is {
  ember::pid next;
};
struct done {
  int index;
};

std::atomic<std::int64_t> hops_made{0};

void member(int index, ember::pid driver) {
  const ember::pid next = ember::receive([](next_is n) { return n.next; });
  std::int64_t hops = 0;
  for (;;) {
    const std::int64_t token = ember::receive([](std::int64_t t) { return t; });
    if (token > 0) {
      ember::send(next, std::int64_t{token - 1});
      ++hops;
      continue;
    }
    if (token == 0) ember::send(driver, done{index});
    ember::send(next, std::int64_t{-1});
    break;
  }
  hops_made.fetch_add(hops);
}

struct measurement {
  double ns = 0;
  int last = -1;
};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t h = bench::arg_int(argc, argv, 1, 10000000);
  bench::watchdog dog("W3");
  ember::runtime rt(bench::runtime_options());
  std::promise<measurement> promise;
  auto measured = promise.get_future();
  rt.spawn([&] {
    const ember::pid me = ember::self();
    std::vector<ember::pid> ring;
    ring.reserve(ring_size);
    for (int i = 0; i < ring_size; ++i) ring.push_back(ember::spawn([i, me] { member(i, me); }));
    for (int i = 0; i < ring_size; ++i) ember::send(ring[i], next_is{ring[(i + 1) % ring_size]});
    measurement m;
    auto t0 = bench::clock::now();
    ember::send(ring[0], std::int64_t{h});
    m.last = ember::receive([](done d) { return d.index; });
    auto t1 = bench::clock::now();
    m.ns = bench::ns_between(t0, t1);
    promise.set_value(m);
  });
  const measurement m = measured.get();
  rt.wait();
  const int expected_last = int(h % ring_size);
  if (m.last != expected_last || hops_made.load() != h) {
    std::fprintf(stderr,
                 "ember_bench_w3: error: verification failed: token ended at member %d after %lld "
                 "hops, expected member %d after %lld\n",
                 m.last, (long long)hops_made.load(), expected_last, (long long)h);
    return 1;
  }
  BENCH_PRINT("RESULT W3 ns_per_hop=%.1f\n", m.ns / double(h));
  dog.disarm();
  return 0;
}
