// Selective receive: takes the FIRST message in the mailbox that some clause
// accepts (clauses tried in order for each message), leaving the others in
// place and in order; guards with when(); timeouts with after(); a clause
// taking message& accepts anything.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::after;
using ember::message;
using ember::pid;
using ember::when;

class receiving : public runtime_test {};

// Drains the mailbox with a catch-all clause, naming each message.
std::vector<std::string> drain() {
  std::vector<std::string> out;
  while (ember::message_queue_len() > 0) {
    out.push_back(ember::receive(
        [](int v) { return "int " + std::to_string(v); },
        [](std::string s) { return "string " + s; },
        [](double d) { return "double " + std::to_string(int(d)); },
        [](message& m) { return "other " + m.type_name(); }));
  }
  return out;
}

TEST_P(receiving, receive_takes_the_first_accepted_message_and_leaves_the_others_in_order) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    ember::send(me, 1);                   // a
    ember::send(me, std::string("two"));  // b
    ember::send(me, 3.0);                 // c
    double c = ember::receive([](double d) { return d; });
    auto rest = drain();
    rest.insert(rest.begin(), "took double " + std::to_string(int(c)));
    return rest;
  });
  EXPECT_EQ(got, (std::vector<std::string>{"took double 3", "int 1", "string two"}));
}

TEST_P(receiving, receive_scans_messages_in_arrival_order_trying_every_clause_on_each) {
  // The mailbox holds [int, string]; the string clause is written first,
  // but the int arrived first and an int clause accepts it.
  auto got = in_process(rt(), [] {
    ember::send(ember::self(), 7);
    ember::send(ember::self(), std::string("s"));
    auto first = ember::receive([](std::string s) { return "string " + s; },
                                [](int v) { return "int " + std::to_string(v); });
    auto second = ember::receive([](std::string s) { return "string " + s; },
                                 [](int v) { return "int " + std::to_string(v); });
    return first + ", " + second;
  });
  EXPECT_EQ(got, "int 7, string s");
}

TEST_P(receiving, earlier_clause_wins_when_several_accept_the_same_message) {
  auto got = in_process(rt(), [] {
    ember::send(ember::self(), 5);
    ember::send(ember::self(), -5);
    auto a = ember::receive(when([](int v) { return v > 0; }, [](int) { return std::string("positive"); }),
                            [](int) { return std::string("any int"); });
    auto b = ember::receive(when([](int v) { return v > 0; }, [](int) { return std::string("positive"); }),
                            [](int) { return std::string("any int"); });
    return a + ", " + b;
  });
  EXPECT_EQ(got, "positive, any int");
}

TEST_P(receiving, guard_rejecting_a_message_leaves_it_in_the_mailbox) {
  auto got = in_process(rt(), [] {
    for (int i = 1; i <= 4; ++i) ember::send(ember::self(), i);
    int even = ember::receive(when([](int v) { return v % 2 == 0; }, [](int v) { return v; }));
    auto rest = drain();
    rest.insert(rest.begin(), "took " + std::to_string(even));
    return rest;
  });
  EXPECT_EQ(got, (std::vector<std::string>{"took 2", "int 1", "int 3", "int 4"}));
}

TEST_P(receiving, receive_waits_for_a_message_a_guard_accepts) {
  // The receiver blocks while only rejected messages arrive.
  oneshot<int> got;
  pid receiver = rt().spawn([got] {
    int v = ember::receive(when([](const int& x) { return x == 42; }, [](int x) { return x; }));
    got.set(v * 1000 + int(ember::message_queue_len()));
    ember::flush();
  });
  for (int i = 0; i < 10; ++i) rt().send(receiver, i);
  rt().send(receiver, 42);
  EXPECT_EQ(got.get(), 42 * 1000 + 10) << "42 taken, the ten rejected ints still queued";
}

TEST_P(receiving, after_returns_its_value_when_nothing_matches_and_leaves_the_mailbox_alone) {
  struct outcome {
    int value;
    std::chrono::nanoseconds waited;
    std::vector<std::string> left;
  };
  auto got = in_process(rt(), [] {
    ember::send(ember::self(), std::string("unmatched"));
    auto t0 = std::chrono::steady_clock::now();
    int v = ember::receive([](int x) { return x; }, after(50ms, [] { return -1; }));
    auto waited = std::chrono::steady_clock::now() - t0;
    return outcome{v, waited, drain()};
  });
  EXPECT_EQ(got.value, -1);
  EXPECT_GE(got.waited, 50ms) << "a receive timeout never fires early";
  EXPECT_EQ(got.left, std::vector<std::string>{"string unmatched"});
}

TEST_P(receiving, after_timeout_is_not_restarted_by_messages_that_do_not_match) {
  // A chatter keeps sending unmatched strings every few milliseconds; the
  // receive's timeout still fires, counted from the start of the receive.
  auto waited = in_process(rt(), [] {
    pid me = ember::self();
    pid chatter = ember::spawn([me] {
      auto deadline = std::chrono::steady_clock::now() + 10s;
      while (std::chrono::steady_clock::now() < deadline) {
        ember::send(me, std::string("noise"));
        bool stop = ember::receive([](int) { return true; }, after(5ms, [] { return false; }));
        if (stop) return;
      }
    });
    auto t0 = std::chrono::steady_clock::now();
    int v = ember::receive([](double) { return 1; }, after(100ms, [] { return -1; }));
    auto waited = std::chrono::steady_clock::now() - t0;
    ember::send(chatter, 0);
    ember::flush();
    return v == -1 ? waited : std::chrono::steady_clock::duration::max();
  });
  EXPECT_GE(waited, 100ms);
  EXPECT_LT(waited, 5s) << "the timeout was restarted by unmatched messages";
}

TEST_P(receiving, after_zero_polls_without_blocking) {
  auto got = in_process(rt(), [] {
    std::string r;
    r += std::to_string(ember::receive([](int x) { return x; }, after(0ms, [] { return -1; })));
    ember::send(ember::self(), 8);
    r += " " + std::to_string(ember::receive([](int x) { return x; }, after(0ms, [] { return -1; })));
    ember::send(ember::self(), std::string("no"));
    r += " " + std::to_string(ember::receive([](int x) { return x; }, after(0ms, [] { return -1; })));
    r += " " + std::to_string(ember::message_queue_len());
    ember::flush();
    return r;
  });
  EXPECT_EQ(got, "-1 8 -1 1");
}

TEST_P(receiving, message_arriving_before_the_timeout_is_received) {
  oneshot<int> got;
  oneshot<void> waiting;
  pid receiver = rt().spawn([got, waiting] {
    waiting.set();
    got.set(ember::receive([](int x) { return x; }, after(30s, [] { return -1; })));
  });
  waiting.get();
  rt().send(receiver, 11);
  EXPECT_EQ(got.get(10s), 11);
}

TEST_P(receiving, catch_all_clause_takes_any_message) {
  auto got = in_process(rt(), [] {
    struct custom {
      int x;
    };
    ember::send(ember::self(), custom{3});
    ember::send(ember::self(), 2.5);
    std::string r;
    r += ember::receive([](message& m) {
      return m.is<custom>() ? "custom " + std::to_string(m.get<custom>().x) : "?";
    });
    r += ", ";
    r += ember::receive([](message& m) { return m.is<double>() ? std::string("double") : "?"; });
    return r;
  });
  EXPECT_EQ(got, "custom 3, double");
}

TEST_P(receiving, catch_all_clause_after_specific_clauses_takes_the_first_message) {
  auto got = in_process(rt(), [] {
    ember::send(ember::self(), 1.5);
    ember::send(ember::self(), 1);
    return ember::receive([](int) { return std::string("int"); },
                          [](message& m) { return "catch-all " + m.type_name(); });
  });
  EXPECT_EQ(got, "catch-all double");
}

TEST_P(receiving, clauses_may_take_the_value_by_reference_or_move_it_out) {
  auto got = in_process(rt(), [] {
    ember::send(ember::self(), std::string("ref"));
    ember::send(ember::self(), std::make_shared<int>(4));
    ember::send(ember::self(), std::vector<int>{1, 2});
    std::string r = ember::receive([](const std::string& s) { return s; });
    r += ember::receive([](std::shared_ptr<int>&& p) { return std::to_string(*p); });
    r += ember::receive([](std::vector<int>& v) { return std::to_string(v.size()); });
    return r;
  });
  EXPECT_EQ(got, "ref42");
}

TEST_P(receiving, receive_with_void_clauses_returns_nothing) {
  auto got = in_process(rt(), [] {
    int seen = 0;
    ember::send(ember::self(), 3);
    ember::receive([&](int v) { seen = v; }, after(10s, [] {}));
    return seen;
  });
  EXPECT_EQ(got, 3);
}

TEST_P(receiving, receive_blocks_the_process_not_its_scheduler_thread) {
  // More blocked receivers than schedulers; the releaser still runs.
  constexpr int n = 64;
  inbox<int> done;
  std::vector<pid> waiters;
  for (int i = 0; i < n; ++i)
    waiters.push_back(rt().spawn([done] { done.put(ember::receive([](int v) { return v; })); }));
  rt().spawn([waiters] {
    for (pid p : waiters) ember::send(p, 1);
  });
  int sum = 0;
  for (int i = 0; i < n; ++i) sum += done.take();
  EXPECT_EQ(sum, n);
}

TEST_P(receiving, message_queue_len_counts_waiting_messages) {
  auto got = in_process(rt(), [] {
    std::string r = std::to_string(ember::message_queue_len());
    for (int i = 0; i < 5; ++i) ember::send(ember::self(), i);
    r += " " + std::to_string(ember::message_queue_len());
    ember::receive(when([](int v) { return v == 3; }, [](int) {}));
    r += " " + std::to_string(ember::message_queue_len());
    ember::flush();
    return r;
  });
  EXPECT_EQ(got, "0 5 4");
}

TEST_P(receiving, flush_drops_every_waiting_message_and_returns_how_many) {
  auto got = in_process(rt(), [] {
    for (int i = 0; i < 5; ++i) ember::send(ember::self(), i);
    ember::send(ember::self(), std::string("x"));
    std::string r = std::to_string(ember::flush());
    r += " " + std::to_string(ember::message_queue_len());
    r += " " + std::to_string(ember::flush());
    r += " " + std::to_string(ember::receive([](int v) { return v; }, after(0ms, [] { return -1; })));
    return r;
  });
  EXPECT_EQ(got, "6 0 0 -1");
}

TEST_P(receiving, messages_skipped_by_a_selective_receive_stay_ahead_of_later_arrivals) {
  // Messages a selective receive skipped keep their place: later arrivals
  // queue behind them.
  auto got = in_process(rt(), [] {
    ember::send(ember::self(), 1);
    ember::send(ember::self(), std::string("a"));
    ember::receive([](std::string) {});
    ember::send(ember::self(), 2);
    ember::send(ember::self(), std::string("b"));
    ember::receive([](std::string) {});
    return drain();
  });
  EXPECT_EQ(got, (std::vector<std::string>{"int 1", "int 2"}));
}

TEST_P(receiving, exception_thrown_in_a_clause_ends_the_process_with_it) {
  watched w = spawn_watched(rt(), [] {
    ember::receive([](int) -> int { throw std::out_of_range("clause failed"); });
  });
  rt().send(w.id, 1);
  auto r = exit_of(w);
  EXPECT_EQ(r.exception_type(), "std::out_of_range");
  EXPECT_EQ(r.text(), "clause failed");
}

TEST_P(receiving, receive_outside_a_process_throws_not_in_process) {
  try {
    ember::receive([](int) {}, after(0ms, [] {}));
    FAIL() << "receive outside a process returned";
  } catch (const ember::error& e) {
    EXPECT_EQ(e.code(), ember::errc::not_in_process);
  }
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(receiving);

}  // namespace
