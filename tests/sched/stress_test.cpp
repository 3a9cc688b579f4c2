// Stress: 100,000 processes (10,000 under sanitizers), half function
// processes and half handler processes, exchange messages and then die in a
// random order: some return normally, some throw, some are killed, some die
// through a link to one of those. Every count is checked at the end:
// messages sent and received, per-sender order, down messages per reason,
// and no process left once the runtime has waited.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::message;
using ember::pid;

#if EMBER_TEST_SANITIZED
constexpr int total_processes = 10'000;
constexpr int wave_size = 2'000;
#else
constexpr int total_processes = 100'000;
constexpr int wave_size = 10'000;
#endif
constexpr int tokens_per_process = 3;

enum class fate : std::uint8_t { normal, exception, killed, linked };

// Coordinator -> worker: whom to send tokens to, how many tokens to expect,
// and (for fate::linked) whom to link to.
struct start {
  std::vector<pid> targets;
  int expect;
  pid link_to;
};
struct token {
  int from;  // sender index
  int seq;   // per sender, increasing
};
struct done {};              // worker -> coordinator: messaging finished
struct die {                 // coordinator -> worker: end now, this way
  bool by_exception;
};

struct counters {
  std::atomic<long> sent{0};
  std::atomic<long> received{0};
  std::atomic<long> out_of_order{0};
};

// Per-sender order check: tokens of one sender arrive with increasing seq.
struct order_check {
  std::vector<std::pair<int, int>> last;  // (sender, seq), few entries
  bool accept(token t) {
    for (auto& [from, seq] : last) {
      if (from == t.from) {
        bool ok = t.seq > seq;
        seq = t.seq;
        return ok;
      }
    }
    last.emplace_back(t.from, t.seq);
    return true;
  }
};

void send_tokens(const start& s, int index, counters& c) {
  int seq = 0;
  for (pid t : s.targets) {
    ember::send(t, token{index, seq++});
    c.sent.fetch_add(1, std::memory_order_relaxed);
  }
}

[[noreturn]] void end(die d) {
  if (d.by_exception) throw std::runtime_error("stress");
  ember::exit(exit_reason::normal());
}

// A worker written as a function process.
struct function_worker {
  std::shared_ptr<counters> c;
  pid coordinator;
  int index;
  void operator()() const {
    start s = ember::receive([](start x) { return x; });
    if (s.link_to) ember::link(s.link_to);
    send_tokens(s, index, *c);
    order_check order;
    for (int got = 0; got < s.expect; ++got) {
      ember::receive([&](token t) {
        if (!order.accept(t)) c->out_of_order.fetch_add(1);
      });
      c->received.fetch_add(1, std::memory_order_relaxed);
    }
    ember::send(coordinator, done{});
    end(ember::receive([](die d) { return d; }));  // killed/linked: never arrives
  }
};

// The same worker written as a handler process.
struct handler_worker {
  std::shared_ptr<counters> c;
  pid coordinator;
  int index;
  int expect = -1;  // -1 until start arrives (tokens may come first)
  int got = 0;
  order_check order;
  void operator()(message& m) {
    if (auto* s = m.get_if<start>()) {
      if (s->link_to) ember::link(s->link_to);
      send_tokens(*s, index, *c);
      expect = s->expect;
      report_if_done();
    } else if (auto* t = m.get_if<token>()) {
      if (!order.accept(*t)) c->out_of_order.fetch_add(1);
      c->received.fetch_add(1, std::memory_order_relaxed);
      ++got;
      report_if_done();
    } else if (auto* d = m.get_if<die>()) {
      end(*d);
    }
  }
  void report_if_done() {
    if (got == expect) ember::send(coordinator, done{});
  }
};

struct stress_result {
  long done_reports = 0;
  long normal = 0, exception = 0, killed = 0, other = 0;
  long expected_normal = 0, expected_exception = 0, expected_killed = 0;
  std::string first_other;
};

// The coordinator: runs waves of wave_size workers; a wave's deaths overlap
// the next wave's messaging. One receive loop takes done and down messages
// as they come.
stress_result coordinate(std::shared_ptr<counters> c, unsigned seed) {
  std::mt19937 rng(seed);
  stress_result r;
  pid me = ember::self();
  struct wave {
    std::vector<pid> pids;
    std::vector<fate> fates;
    int done = 0;
  };
  std::vector<wave> waves;

  auto launch = [&] {
    wave w;
    w.fates.resize(wave_size);
    for (int i = 0; i < wave_size; i += 2) {
      switch (rng() % 6) {
        case 0: w.fates[i] = fate::exception; w.fates[i + 1] = fate::linked; break;
        case 1: w.fates[i] = fate::killed; w.fates[i + 1] = fate::linked; break;
        default:
          for (int k = 0; k < 2; ++k) w.fates[i + k] = fate(rng() % 3);
      }
    }
    for (int i = 0; i < wave_size; ++i) {
      int index = int(waves.size()) * wave_size + i;
      if (rng() % 2)
        w.pids.push_back(ember::spawn_monitor(function_worker{c, me, index}).first);
      else
        w.pids.push_back(ember::spawn_monitor(ember::handler(handler_worker{c, me, index, -1, 0, {}})).first);
    }
    std::vector<int> expect(wave_size, 0);
    std::vector<std::vector<pid>> targets(wave_size);
    for (int i = 0; i < wave_size; ++i) {
      for (int k = 0; k < tokens_per_process; ++k) {
        int t = int(rng() % wave_size);
        targets[i].push_back(w.pids[t]);
        ++expect[t];
      }
    }
    for (int i = 0; i < wave_size; ++i) {
      pid link_to = w.fates[i] == fate::linked ? w.pids[i - 1] : pid();
      ember::send(w.pids[i], start{std::move(targets[i]), expect[i], link_to});
      switch (w.fates[i]) {
        case fate::normal: ++r.expected_normal; break;
        case fate::killed: ++r.expected_killed; break;
        case fate::exception: ++r.expected_exception; break;
        case fate::linked:
          (w.fates[i - 1] == fate::killed ? r.expected_killed : r.expected_exception)++;
          break;
      }
    }
    waves.push_back(std::move(w));
  };

  auto kill_in_random_order = [&](wave& w) {
    std::vector<int> order(wave_size);
    for (int i = 0; i < wave_size; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    for (int i : order) {
      switch (w.fates[i]) {
        case fate::normal: ember::send(w.pids[i], die{false}); break;
        case fate::exception: ember::send(w.pids[i], die{true}); break;
        case fate::killed: ember::exit(w.pids[i], exit_reason::kill()); break;
        case fate::linked: break;  // dies with its partner
      }
    }
  };

  // Only one wave is messaging at a time (the next is launched when the
  // current one has reported done), so every done message belongs to
  // waves[messaging]; the deaths of a wave overlap the next wave's work.
  const int waves_total = total_processes / wave_size;
  launch();
  std::size_t messaging = 0;  // the wave whose done messages we count
  long downs = 0;
  while (downs < total_processes) {
    ember::receive(
        [&](done) {
          ++r.done_reports;
          wave& w = waves[messaging];
          if (++w.done == wave_size) {
            kill_in_random_order(w);
            w.pids.clear();
            ++messaging;
            if (int(waves.size()) < waves_total) launch();
          }
        },
        [&](ember::down d) {
          ++downs;
          if (d.reason.is_normal()) {
            ++r.normal;
          } else if (d.reason == exit_reason::killed()) {
            ++r.killed;
          } else if (d.reason.exception_type() == "std::runtime_error" && d.reason.text() == "stress") {
            ++r.exception;
          } else {
            if (r.other++ == 0) r.first_other = d.reason.to_string();
          }
        });
  }
  return r;
}

class stress : public runtime_test {};

TEST_P(stress, processes_exchange_messages_and_die_in_random_orders_with_every_count_checked) {
  auto c = std::make_shared<counters>();
  unsigned seed = 20240601u + GetParam();
  SCOPED_TRACE("seed " + std::to_string(seed));
  oneshot<stress_result> result;
  rt().spawn([c, seed, result] { result.set(coordinate(c, seed)); });
  stress_result r = result.get(std::chrono::seconds(240));

  const long total_tokens = long(total_processes) * tokens_per_process;
  EXPECT_EQ(c->sent.load(), total_tokens);
  EXPECT_EQ(c->received.load(), total_tokens);
  EXPECT_EQ(c->out_of_order.load(), 0);
  EXPECT_EQ(r.done_reports, total_processes);
  EXPECT_EQ(r.normal + r.exception + r.killed + r.other, total_processes);
  EXPECT_EQ(r.normal, r.expected_normal);
  EXPECT_EQ(r.exception, r.expected_exception);
  EXPECT_EQ(r.killed, r.expected_killed);
  EXPECT_EQ(r.other, 0) << "first unexpected reason: " << r.first_other;
  EXPECT_GT(r.expected_normal, 0);
  EXPECT_GT(r.expected_exception, 0);
  EXPECT_GT(r.expected_killed, 0);

  EXPECT_TRUE(rt().wait_for(hang_limit));
  auto s = rt().stats();
  EXPECT_EQ(s.processes, 0u);
  EXPECT_EQ(s.spawned, std::uint64_t(total_processes) + 1) << "workers and the coordinator";
  EXPECT_EQ(s.exited, s.spawned);
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(stress);

}  // namespace
