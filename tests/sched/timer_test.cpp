// Timers: send_after delivers after the delay; cancel_timer before firing
// returns true and the message never arrives, after firing returns false;
// sleep_for suspends the process, not its thread; a timer whose
// destination exits is cancelled.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::after;
using ember::exit_reason;
using ember::pid;
using ember::timer_ref;
using clk = std::chrono::steady_clock;

class timers : public runtime_test {};

struct tick {
  int n;
};

TEST_P(timers, send_after_delivers_the_message_after_the_delay) {
  auto waited = in_process(rt(), [] {
    auto t0 = clk::now();
    timer_ref ref = ember::send_after(30ms, ember::self(), tick{1});
    EXPECT_TRUE(bool(ref));
    int n = ember::receive([](tick t) { return t.n; });
    EXPECT_EQ(n, 1);
    return clk::now() - t0;
  });
  EXPECT_GE(waited, 30ms) << "a timer never fires early";
  EXPECT_LT(waited, 10s);
}

TEST_P(timers, runtime_send_after_delivers_from_outside) {
  oneshot<int> got;
  pid p = rt().spawn([got] { got.set(ember::receive([](tick t) { return t.n; })); });
  auto t0 = clk::now();
  rt().send_after(20ms, p, tick{7});
  EXPECT_EQ(got.get(), 7);
  EXPECT_GE(clk::now() - t0, 20ms);
}

TEST_P(timers, timers_fire_in_deadline_order) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    ember::send_after(90ms, me, tick{3});
    ember::send_after(30ms, me, tick{1});
    ember::send_after(60ms, me, tick{2});
    ember::send_after(0ms, me, tick{0});
    std::vector<int> order;
    for (int i = 0; i < 4; ++i) order.push_back(ember::receive([](tick t) { return t.n; }));
    return order;
  });
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3}));
}

TEST_P(timers, cancel_timer_before_firing_returns_true_and_the_message_never_arrives) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    timer_ref cancelled = ember::send_after(40ms, me, tick{1});
    ember::send_after(120ms, me, tick{2});  // a later timer as sentinel
    bool before = ember::cancel_timer(cancelled);
    // Had the cancelled timer fired, its tick would precede the sentinel.
    int first = ember::receive([](tick t) { return t.n; });
    return std::string(before ? "true" : "false") + " first " + std::to_string(first) +
           " left " + std::to_string(ember::message_queue_len());
  });
  EXPECT_EQ(got, "true first 2 left 0");
}

TEST_P(timers, cancel_timer_after_firing_returns_false) {
  auto got = in_process(rt(), [] {
    timer_ref ref = ember::send_after(5ms, ember::self(), tick{1});
    ember::receive([](tick) {});
    return ember::cancel_timer(ref);
  });
  EXPECT_FALSE(got);
}

TEST_P(timers, cancel_timer_twice_returns_false_the_second_time) {
  auto got = in_process(rt(), [] {
    timer_ref ref = ember::send_after(std::chrono::hours(1), ember::self(), tick{1});
    std::string r = ember::cancel_timer(ref) ? "true" : "false";
    r += ember::cancel_timer(ref) ? " true" : " false";
    r += ember::cancel_timer(timer_ref{}) ? " true" : " false";
    r += ember::cancel_timer(timer_ref{123456789}) ? " true" : " false";
    return r;
  });
  EXPECT_EQ(got, "true false false false");
}

TEST_P(timers, runtime_cancel_timer_before_firing_returns_true) {
  oneshot<int> first;
  pid p = rt().spawn([first] { first.set(ember::receive([](tick t) { return t.n; })); });
  timer_ref cancelled = rt().send_after(30ms, p, tick{1});
  rt().send_after(100ms, p, tick{2});
  EXPECT_TRUE(rt().cancel_timer(cancelled));
  EXPECT_EQ(first.get(), 2);
  EXPECT_FALSE(rt().cancel_timer(cancelled));
}

TEST_P(timers, timer_counts_as_pending_until_it_fires_or_is_cancelled) {
  auto got = in_process(rt(), [&rt = rt()] {
    timer_ref a = ember::send_after(std::chrono::hours(1), ember::self(), tick{1});
    ember::send_after(200ms, ember::self(), tick{2});  // long enough not to fire before the first count
    std::string r = std::to_string(rt.stats().timers_pending);
    ember::receive([](tick) {});
    r += " " + std::to_string(rt.stats().timers_pending);
    ember::cancel_timer(a);
    r += " " + std::to_string(rt.stats().timers_pending);
    return r;
  });
  EXPECT_EQ(got, "2 1 0");
}

TEST_P(timers, sleep_for_suspends_for_at_least_the_duration) {
  auto waited = in_process(rt(), [] {
    auto t0 = clk::now();
    ember::sleep_for(40ms);
    return clk::now() - t0;
  });
  EXPECT_GE(waited, 40ms);
  EXPECT_LT(waited, 10s);
}

TEST_P(timers, sleep_for_suspends_the_process_not_its_scheduler_thread) {
  // With every scheduler holding a sleeper, other processes still run while
  // they sleep: the collector sees "ran" before any "woke".
  const unsigned n = rt().schedulers();
  inbox<std::string> events;
  oneshot<void> all_asleep;
  auto asleep = std::make_shared<std::atomic<unsigned>>(0);
  for (unsigned i = 0; i < n; ++i) {
    rt().spawn([events, asleep, all_asleep, n] {
      if (asleep->fetch_add(1) + 1 == n) all_asleep.set();
      ember::sleep_for(300ms);
      events.put("woke");
    });
  }
  all_asleep.get();
  rt().spawn([events] { events.put("ran"); });
  EXPECT_EQ(events.take(), "ran");
  for (unsigned i = 0; i < n; ++i) EXPECT_EQ(events.take(), "woke");
}

TEST_P(timers, sleeping_process_keeps_its_mailbox) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    ember::send_after(5ms, me, tick{1});
    ember::sleep_for(30ms);
    return ember::receive([](tick t) { return t.n; }, after(0ms, [] { return -1; }));
  });
  EXPECT_EQ(got, 1) << "a message that arrived during the sleep is kept";
}

TEST_P(timers, sleep_for_zero_returns) {
  EXPECT_TRUE(in_process(rt(), [] {
    ember::sleep_for(0ms);
    return true;
  }));
}

TEST_P(timers, many_receive_timeouts_fire_independently) {
  constexpr int n = 200;
  inbox<int> fired;
  for (int i = 0; i < n; ++i) {
    rt().spawn([fired, i] {
      fired.put(ember::receive([](tick t) { return t.n; },
                               after(std::chrono::milliseconds(1 + i % 20), [] { return -1; })));
    });
  }
  int timeouts = 0;
  for (int i = 0; i < n; ++i) timeouts += fired.take() == -1 ? 1 : 0;
  EXPECT_EQ(timeouts, n);
}

TEST_P(timers, timers_of_a_dead_destination_are_cancelled) {
  oneshot<void> armed;
  watched w = spawn_watched(rt(), [armed] {
    for (int i = 0; i < 10; ++i) ember::send_after(std::chrono::hours(1), ember::self(), tick{i});
    armed.set();
    ember::receive([](std::string) {});
  });
  armed.get();
  EXPECT_GE(rt().stats().timers_pending, 10u);
  rt().send(w.id, std::string("exit"));
  EXPECT_TRUE(exit_of(w).is_normal());
  EXPECT_TRUE(eventually([&] { return rt().stats().timers_pending == 0; }, 10s))
      << rt().stats().timers_pending << " timers still pending for a dead process";
}

TEST_P(timers, timers_armed_from_outside_for_a_dead_destination_are_cancelled) {
  watched w = spawn_watched(rt(), [] { ember::receive([](std::string) {}); });
  for (int i = 0; i < 10; ++i) rt().send_after(std::chrono::hours(1), w.id, tick{i});
  EXPECT_GE(rt().stats().timers_pending, 10u);
  rt().exit(w.id, exit_reason::kill());
  EXPECT_EQ(exit_of(w), exit_reason::killed());
  EXPECT_TRUE(eventually([&] { return rt().stats().timers_pending == 0; }, 10s))
      << rt().stats().timers_pending << " timers still pending for a dead process";
}

TEST_P(timers, send_after_to_a_dead_pid_delivers_nothing_and_leaves_no_timer) {
  watched dead = spawn_watched(rt(), [] {});
  ASSERT_TRUE(exit_of(dead).is_normal());
  EXPECT_NO_THROW(rt().send_after(std::chrono::hours(1), dead.id, tick{1}));
  EXPECT_TRUE(eventually([&] { return rt().stats().timers_pending == 0; }, 10s));
}

TEST_P(timers, process_killed_while_waiting_on_a_receive_timeout_leaves_no_timer) {
  oneshot<void> waiting;
  watched w = spawn_watched(rt(), [waiting] {
    waiting.set();
    ember::receive([](tick) {}, after(std::chrono::hours(1), [] {}));
  });
  waiting.get();
  rt().exit(w.id, exit_reason::kill());
  EXPECT_EQ(exit_of(w), exit_reason::killed());
  EXPECT_TRUE(eventually([&] { return rt().stats().timers_pending == 0; }, 10s));
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(timers);

}  // namespace
