// spawn, spawn_link, spawn_monitor, spawn options and self().
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::pid;

class spawning : public runtime_test {};

TEST_P(spawning, spawned_function_process_runs) {
  oneshot<int> ran;
  rt().spawn([ran] { ran.set(42); });
  EXPECT_EQ(ran.get(), 42);
}

TEST_P(spawning, self_is_the_pid_spawn_returned) {
  oneshot<pid> me;
  pid p = rt().spawn([me] {
    me.set(ember::self());
    ember::receive([](int) {});  // alive until the test has compared
  });
  EXPECT_EQ(me.get(), p);
  EXPECT_TRUE(rt().is_alive(p));
  rt().send(p, 0);
}

TEST_P(spawning, in_process_is_true_only_inside_a_process) {
  EXPECT_FALSE(ember::in_process());
  EXPECT_TRUE(in_process(rt(), [] { return ember::in_process(); }));
}

TEST_P(spawning, self_outside_a_process_throws_not_in_process) {
  try {
    (void)ember::self();
    FAIL() << "self() outside a process returned";
  } catch (const ember::error& e) {
    EXPECT_EQ(e.code(), ember::errc::not_in_process);
  }
}

TEST_P(spawning, process_can_spawn_a_child) {
  oneshot<pid> child_self;
  auto child = in_process(rt(), [child_self] {
    return ember::spawn([child_self] { child_self.set(ember::self()); });
  });
  EXPECT_EQ(child_self.get(), child);
}

TEST_P(spawning, spawned_process_owns_move_only_captures) {
  oneshot<int> value;
  auto box = std::make_unique<int>(7);
  rt().spawn([box = std::move(box), value] { value.set(*box); });
  EXPECT_EQ(value.get(), 7);
}

TEST_P(spawning, spawn_link_child_crash_kills_non_trapping_parent) {
  watched parent = spawn_watched(rt(), [] {
    ember::spawn_link([] { ember::exit("child crashed"); });
    ember::receive([](int) {});  // never arrives
  });
  EXPECT_EQ(exit_of(parent), exit_reason("child crashed"));
}

TEST_P(spawning, spawn_link_links_before_the_child_can_exit) {
  // The child dies at once; the link was already there, so the parent sees
  // the child's own reason, never noproc.
  auto got = in_process(rt(), [] {
    ember::trap_exit(true);
    std::vector<std::string> reasons;
    for (int i = 0; i < 100; ++i) {
      pid c = ember::spawn_link([] { throw std::runtime_error("instant"); });
      reasons.push_back(ember::receive([&](ember::exit_signal s) {
        return s.from == c ? s.reason.to_string() : "from another pid";
      }));
    }
    return reasons;
  });
  for (auto& r : got) EXPECT_EQ(r, "exception: std::runtime_error: instant");
}

TEST_P(spawning, spawn_monitor_monitors_before_the_child_can_exit) {
  auto got = in_process(rt(), [] {
    std::vector<std::string> out;
    for (int i = 0; i < 100; ++i) {
      auto [c, ref] = ember::spawn_monitor([] { ember::exit("early"); });
      out.push_back(ember::receive([&, ref = ref, c = c](ember::down d) {
        if (d.ref != ref) return std::string("wrong ref");
        if (d.who != c) return std::string("wrong pid");
        return d.reason.to_string();
      }));
    }
    return out;
  });
  for (auto& r : got) EXPECT_EQ(r, "early");
}

TEST_P(spawning, spawn_monitor_does_not_link) {
  // The child crashes; the monitoring parent only gets a down message.
  auto got = in_process(rt(), [] {
    auto [c, ref] = ember::spawn_monitor([] { throw std::logic_error("bad"); });
    (void)c;
    return ember::receive([ref = ref](ember::down d) {
      return d.ref == ref ? d.reason.to_string() : std::string("wrong ref");
    });
  });
  EXPECT_EQ(got, "exception: std::logic_error: bad");
}

// Uses about 2 MiB of stack: more than the default 256 KiB.
int deep_recursion(int depth) {
  volatile char frame[16 * 1024];
  frame[0] = char(depth);
  frame[sizeof frame - 1] = char(depth);
  if (depth == 0) return frame[0];
  return deep_recursion(depth - 1) + frame[sizeof frame - 1] - frame[0];
}

TEST_P(spawning, stack_size_option_gives_the_process_that_much_stack) {
  ember::spawn_options o;
  o.stack_size = 16 * 1024 * 1024;
  watched w = spawn_watched(rt(), [] { (void)deep_recursion(128); }, o);
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(spawning, small_stack_size_option_still_runs_a_process) {
  ember::spawn_options o;
  o.stack_size = 64 * 1024;
  oneshot<int> v;
  watched w = spawn_watched(rt(), [v] { v.set(1); }, o);
  EXPECT_EQ(v.get(), 1);
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(spawning, scheduler_hint_option_runs_the_process_on_any_valid_index) {
  inbox<int> ran;
  for (unsigned i = 0; i < rt().schedulers(); ++i) {
    ember::spawn_options o;
    o.scheduler = int(i);
    rt().spawn([ran, i] { ran.put(int(i)); }, o);
  }
  std::vector<bool> seen(rt().schedulers(), false);
  for (unsigned i = 0; i < rt().schedulers(); ++i) seen[std::size_t(ran.take())] = true;
  for (unsigned i = 0; i < rt().schedulers(); ++i) EXPECT_TRUE(seen[i]) << "scheduler " << i;
}

TEST_P(spawning, scheduler_hint_places_the_process_on_that_scheduler) {
  // Processes hinted to distinct schedulers run on distinct threads: each
  // holds its thread (spinning, no runtime calls) until all have started.
  const unsigned n = rt().schedulers();
  auto started = std::make_shared<std::atomic<unsigned>>(0);
  inbox<std::thread::id> threads;
  for (unsigned i = 0; i < n; ++i) {
    ember::spawn_options o;
    o.scheduler = int(i);
    rt().spawn(
        [started, threads, n] {
          threads.put(std::this_thread::get_id());
          started->fetch_add(1);
          auto deadline = std::chrono::steady_clock::now() + 10s;
          while (started->load() < n && std::chrono::steady_clock::now() < deadline) {
          }
        },
        o);
  }
  std::set<std::thread::id> distinct;
  for (unsigned i = 0; i < n; ++i) distinct.insert(threads.take());
  EXPECT_EQ(distinct.size(), n);
}

TEST_P(spawning, processes_hinted_to_one_scheduler_start_on_its_thread) {
  // spawn_options::scheduler names the scheduler a process starts on: all
  // processes hinted to index i start on one thread, and different indexes
  // on different threads. (Unless a scheduler is found blocked: then a spare
  // thread takes its queued processes, so the hand-off is off here.)
  ember::runtime_options opts;
  opts.schedulers = GetParam();
  opts.blocked_after = std::chrono::microseconds(0);
  ember::runtime local(opts);
  const unsigned n = local.schedulers();
  inbox<std::pair<unsigned, std::thread::id>> starts;
  auto spawn_all = [n, starts] {
    for (int round = 0; round < 3; ++round) {
      for (unsigned i = 0; i < n; ++i) {
        ember::spawn_options o;
        o.scheduler = int(i);
        ember::spawn([starts, i] { starts.put({i, std::this_thread::get_id()}); }, o);
      }
    }
  };
  in_process(local, spawn_all);  // from a process
  std::map<unsigned, std::set<std::thread::id>> by_index;
  for (unsigned k = 0; k < 3 * n; ++k) {
    auto [i, t] = starts.take();
    by_index[i].insert(t);
  }
  std::set<std::thread::id> all;
  for (auto& [i, threads] : by_index) {
    EXPECT_EQ(threads.size(), 1u) << "processes hinted to scheduler " << i << " started on "
                                  << threads.size() << " threads";
    all.insert(threads.begin(), threads.end());
  }
  EXPECT_EQ(all.size(), n) << "each scheduler index is its own thread";
}

TEST_P(spawning, many_processes_run_concurrently_and_all_finish) {
  auto done = std::make_shared<std::atomic<int>>(0);
  auto got = in_process(rt(), [done] {
    std::vector<ember::monitor_ref> refs;
    for (int i = 0; i < 2000; ++i)
      refs.push_back(ember::spawn_monitor([done] { done->fetch_add(1); }).second);
    int normal = 0;
    for (std::size_t i = 0; i < refs.size(); ++i)
      normal += ember::receive([](ember::down d) { return d.reason.is_normal() ? 1 : 0; });
    return normal;
  });
  EXPECT_EQ(got, 2000);
  EXPECT_EQ(done->load(), 2000);
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(spawning);

}  // namespace
