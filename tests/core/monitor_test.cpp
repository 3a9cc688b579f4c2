// Monitors: one-way; when the target exits the watcher gets
// down{ref, pid, reason}; a target that is not alive gives down(noproc) at
// once; demonitor removes a monitor, with flush also its arrived down.
#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::down;
using ember::exit_reason;
using ember::monitor_ref;
using ember::pid;
using ember::when;

class monitors : public runtime_test {};

struct go {};

// Waits for the down of `ref` (leaving other messages queued).
down down_of(monitor_ref ref) {
  return ember::receive(when([ref](const down& d) { return d.ref == ref; }, [](down d) { return d; }));
}

std::string describe(const down& d, monitor_ref ref, pid who) {
  std::string r = d.reason.to_string();
  if (d.ref != ref) r += " (wrong ref)";
  if (d.who != who) r += " (wrong pid)";
  return r;
}

TEST_P(monitors, monitor_delivers_down_with_ref_pid_and_reason) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] {
      ember::receive([](go) {});
      ember::exit("target done");
    });
    monitor_ref ref = ember::monitor(t);
    ember::send(t, go{});
    return describe(down_of(ref), ref, t);
  });
  EXPECT_EQ(got, "target done");
}

TEST_P(monitors, monitor_reports_a_normal_exit) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] { ember::receive([](go) {}); });
    monitor_ref ref = ember::monitor(t);
    ember::send(t, go{});
    return describe(down_of(ref), ref, t);
  });
  EXPECT_EQ(got, "normal");
}

TEST_P(monitors, monitor_reports_an_exception_exit) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] {
      ember::receive([](go) {});
      throw std::length_error("too long");
    });
    monitor_ref ref = ember::monitor(t);
    ember::send(t, go{});
    return describe(down_of(ref), ref, t);
  });
  EXPECT_EQ(got, "exception: std::length_error: too long");
}

TEST_P(monitors, monitor_reports_killed_for_a_killed_process) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] { ember::receive([](go) {}); });
    monitor_ref ref = ember::monitor(t);
    ember::exit(t, exit_reason::kill());
    return describe(down_of(ref), ref, t);
  });
  EXPECT_EQ(got, "killed");
}

TEST_P(monitors, monitor_is_one_way_the_target_crash_does_not_end_the_watcher) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] {
      ember::receive([](go) {});
      throw std::runtime_error("crash");
    });
    monitor_ref ref = ember::monitor(t);
    ember::send(t, go{});
    down d = down_of(ref);
    return "watcher alive after " + d.reason.to_string();
  });
  EXPECT_EQ(got, "watcher alive after exception: std::runtime_error: crash");
}

TEST_P(monitors, watcher_exit_does_not_affect_the_target) {
  watched target = spawn_watched(rt(), [] { ember::receive([](go) {}); });
  watched watcher = spawn_watched(rt(), [t = target.id] {
    ember::monitor(t);
    throw std::runtime_error("watcher crashed");
  });
  EXPECT_EQ(exit_of(watcher).text(), "watcher crashed");
  EXPECT_TRUE(rt().is_alive(target.id));
  rt().send(target.id, go{});
  EXPECT_TRUE(exit_of(target).is_normal());
}

TEST_P(monitors, monitoring_a_dead_pid_gives_a_noproc_down_at_once) {
  watched dead = spawn_watched(rt(), [] {});
  ASSERT_TRUE(exit_of(dead).is_normal());
  auto got = in_process(rt(), [d = dead.id] {
    monitor_ref ref = ember::monitor(d);
    return describe(ember::receive([](down x) { return x; },
                                   ember::after(10s, [] { return down{}; })),
                    ref, d);
  });
  EXPECT_EQ(got, "noproc");
}

TEST_P(monitors, monitoring_a_pid_that_never_existed_gives_a_noproc_down) {
  auto got = in_process(rt(), [] {
    pid unknown(0, 54321, 999);
    monitor_ref ref = ember::monitor(unknown);
    return describe(down_of(ref), ref, unknown);
  });
  EXPECT_EQ(got, "noproc");
}

TEST_P(monitors, each_monitor_has_its_own_ref_and_down) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] { ember::receive([](go) {}); });
    std::vector<monitor_ref> refs;
    for (int i = 0; i < 3; ++i) refs.push_back(ember::monitor(t));
    std::set<monitor_ref> distinct(refs.begin(), refs.end());
    ember::send(t, go{});
    std::string r = std::to_string(distinct.size()) + " refs:";
    for (monitor_ref ref : refs) r += " " + describe(down_of(ref), ref, t);
    return r;
  });
  EXPECT_EQ(got, "3 refs: normal normal normal");
}

TEST_P(monitors, monitor_refs_are_unique_across_processes) {
  inbox<std::uint64_t> ids;
  watched target = spawn_watched(rt(), [] { ember::receive([](go) {}); });
  std::vector<oneshot<void>> dones(4);
  for (int w = 0; w < 4; ++w) {
    rt().spawn([ids, t = target.id, done = dones[std::size_t(w)]] {
      for (int i = 0; i < 100; ++i) {
        auto ref = ember::monitor(t);
        ids.put(ref.id);
        ember::demonitor(ref);
      }
      done.set();
    });
  }
  for (auto& d : dones) d.get();
  std::set<std::uint64_t> distinct;
  for (int i = 0; i < 400; ++i) {
    auto id = ids.take();
    EXPECT_NE(id, 0u);
    distinct.insert(id);
  }
  EXPECT_EQ(distinct.size(), 400u);
  rt().send(target.id, go{});
  EXPECT_TRUE(exit_of(target).is_normal());
}

TEST_P(monitors, demonitor_before_the_exit_means_no_down) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] { ember::receive([](go) {}); });
    monitor_ref removed = ember::monitor(t);
    bool was_active = ember::demonitor(removed);
    monitor_ref kept = ember::monitor(t);
    ember::send(t, go{});
    down d = down_of(kept);
    // Both downs would be sent at the same exit; a short wait after the
    // kept one suffices to see a stray one.
    bool stray = ember::receive(when([removed](const down& x) { return x.ref == removed; },
                                     [](down) { return true; }),
                                ember::after(50ms, [] { return false; }));
    return std::string(was_active ? "removed" : "not active") + ", " + d.reason.to_string() +
           (stray ? ", stray down" : ", no stray down");
  });
  EXPECT_EQ(got, "removed, normal, no stray down");
}

TEST_P(monitors, demonitor_with_flush_removes_an_already_arrived_down) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] {});
    monitor_ref ref = ember::monitor(t);
    // Wait for the down to arrive without taking it.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (ember::message_queue_len() == 0 && std::chrono::steady_clock::now() < deadline)
      ember::yield();
    std::string r = "queued " + std::to_string(ember::message_queue_len());
    bool active = ember::demonitor(ref, true);
    r += active ? ", demonitor true" : ", demonitor false";
    r += ", left " + std::to_string(ember::message_queue_len());
    return r;
  });
  EXPECT_EQ(got, "queued 1, demonitor false, left 0");
}

TEST_P(monitors, demonitor_with_flush_leaves_other_messages) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] {});
    ember::send(ember::self(), 1);
    monitor_ref ref = ember::monitor(t);
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (ember::message_queue_len() < 2 && std::chrono::steady_clock::now() < deadline)
      ember::yield();
    ember::send(ember::self(), 2);
    ember::demonitor(ref, true);
    std::string r;
    while (ember::message_queue_len() > 0)
      r += ember::receive([](int v) { return std::to_string(v); },
                          [](ember::message& m) { return "<" + m.type_name() + ">"; });
    return r;
  });
  EXPECT_EQ(got, "12");
}

TEST_P(monitors, demonitor_without_flush_leaves_an_arrived_down_in_the_mailbox) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] { ember::receive([](int) {}); });  // exits once monitored
    monitor_ref ref = ember::monitor(t);
    ember::send(t, 0);
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (ember::message_queue_len() == 0 && std::chrono::steady_clock::now() < deadline)
      ember::yield();
    ember::demonitor(ref);
    return describe(ember::receive([](down d) { return d; }, ember::after(0ms, [] { return down{}; })),
                    ref, t);
  });
  EXPECT_EQ(got, "normal");
}

TEST_P(monitors, demonitor_of_an_unknown_ref_returns_false) {
  auto got = in_process(rt(), [] {
    return ember::demonitor(monitor_ref{987654321}) ? "true" : "false";
  });
  EXPECT_STREQ(got, "false");
}

TEST_P(monitors, demonitor_twice_returns_false_the_second_time) {
  auto got = in_process(rt(), [] {
    pid t = ember::spawn([] { ember::receive([](go) {}); });
    monitor_ref ref = ember::monitor(t);
    std::string r = ember::demonitor(ref) ? "true" : "false";
    r += ember::demonitor(ref) ? " true" : " false";
    ember::send(t, go{});
    return r;
  });
  EXPECT_EQ(got, "true false");
}

TEST_P(monitors, many_watchers_each_get_a_down) {
  constexpr int n = 200;
  watched target = spawn_watched(rt(), [] { ember::receive([](go) {}); });
  inbox<std::string> reasons;
  inbox<int> monitoring;
  for (int i = 0; i < n; ++i) {
    rt().spawn([reasons, monitoring, t = target.id] {
      monitor_ref ref = ember::monitor(t);
      monitoring.put(1);
      reasons.put(down_of(ref).reason.to_string());
    });
  }
  for (int i = 0; i < n; ++i) monitoring.take();
  rt().exit(target.id, "gone");
  for (int i = 0; i < n; ++i) EXPECT_EQ(reasons.take(), "gone");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(monitors);

}  // namespace
