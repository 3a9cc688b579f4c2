// The runtime: starts its schedulers, rejects bad options, waits for its
// processes, and shuts down (killing what still runs, unwinding its stacks)
// idempotently, also when simply destroyed.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::errc;
using ember::exit_reason;
using ember::pid;

ember::runtime_options with_schedulers(unsigned n) {
  ember::runtime_options o;
  o.schedulers = n;
  return o;
}

// The errc a runtime constructed with `o` throws, as text ("none" if none).
std::string construction_error(ember::runtime_options o) {
  try {
    ember::runtime rt(o);
    return "none";
  } catch (const ember::error& e) {
    return e.code() == errc::invalid_argument ? "invalid_argument" : "another errc";
  }
}

// ---- configuration ----

TEST(runtime_options, zero_schedulers_means_one_per_core) {
  ember::runtime rt(with_schedulers(0));
  unsigned cores = std::thread::hardware_concurrency();
  EXPECT_EQ(rt.schedulers(), cores == 0 ? 1u : cores);
}

TEST(runtime_options, default_options_start_one_scheduler_per_core) {
  ember::runtime rt;
  unsigned cores = std::thread::hardware_concurrency();
  EXPECT_EQ(rt.schedulers(), cores == 0 ? 1u : cores);
}

TEST(runtime_options, handler_batch_zero_is_an_invalid_argument) {
  ember::runtime_options o = with_schedulers(1);
  o.handler_batch = 0;
  EXPECT_EQ(construction_error(o), "invalid_argument");
}

TEST(runtime_options, one_byte_stack_size_is_an_invalid_argument) {
  ember::runtime_options o = with_schedulers(1);
  o.stack_size = 1;
  EXPECT_EQ(construction_error(o), "invalid_argument");
}

TEST(runtime_options, one_tebibyte_stack_size_is_an_invalid_argument) {
  ember::runtime_options o = with_schedulers(1);
  o.stack_size = std::size_t(1) << 40;
  EXPECT_EQ(construction_error(o), "invalid_argument");
}

TEST(runtime_options, stack_size_not_a_page_multiple_is_rounded_up_and_works) {
  ember::runtime_options o = with_schedulers(1);
  o.stack_size = 100'000;
  ember::runtime rt(o);
  oneshot<int> ran;
  rt.spawn([ran] { ran.set(1); });
  EXPECT_EQ(ran.get(), 1);
  EXPECT_TRUE(rt.wait_for(hang_limit));
}

TEST(runtime_options, handler_batch_of_one_still_handles_every_message) {
  ember::runtime_options o = with_schedulers(1);
  o.handler_batch = 1;
  ember::runtime rt(o);
  oneshot<int> sum;
  pid p = rt.spawn(ember::handler([sum, total = 0, seen = 0](ember::message& m) mutable {
    total += m.get<int>();
    if (++seen == 100) {
      sum.set(total);
      ember::exit(exit_reason::normal());
    }
  }));
  for (int i = 1; i <= 100; ++i) rt.send(p, i);
  EXPECT_EQ(sum.get(), 5050);
  EXPECT_TRUE(rt.wait_for(hang_limit));
}

TEST(runtime_options, a_runtime_can_be_created_again_after_another_is_destroyed) {
  for (int i = 0; i < 3; ++i) {
    ember::runtime rt(with_schedulers(2));
    oneshot<int> ran;
    rt.spawn([ran, i] { ran.set(i); });
    EXPECT_EQ(ran.get(), i);
    EXPECT_TRUE(rt.wait_for(hang_limit));
  }
}

// ---- schedulers, wait, stats (fixture: checks for leaks at teardown) ----

class runtime_basics : public runtime_test {};

TEST_P(runtime_basics, runtime_starts_the_configured_number_of_schedulers) {
  EXPECT_EQ(rt().schedulers(), GetParam());
}

TEST_P(runtime_basics, processes_run_on_as_many_threads_as_there_are_schedulers) {
  // N processes that hold their thread (spinning without runtime calls)
  // until all N have started: only N scheduler threads, with idle ones
  // taking work, let them all start.
  const unsigned n = GetParam();
  auto started = std::make_shared<std::atomic<unsigned>>(0);
  inbox<std::thread::id> threads;
  for (unsigned i = 0; i < n; ++i) {
    rt().spawn([started, threads, n] {
      threads.put(std::this_thread::get_id());
      started->fetch_add(1);
      auto deadline = std::chrono::steady_clock::now() + 10s;
      while (started->load() < n && std::chrono::steady_clock::now() < deadline) {
      }
    });
  }
  std::set<std::thread::id> distinct;
  for (unsigned i = 0; i < n; ++i) distinct.insert(threads.take());
  EXPECT_EQ(distinct.size(), n);
  EXPECT_EQ(distinct.count(std::this_thread::get_id()), 0u) << "processes run on scheduler threads";
}

TEST_P(runtime_basics, wait_returns_when_every_process_has_exited) {
  // A chain: each process spawns the next and exits; wait must also wait
  // for processes spawned by processes.
  auto finished = std::make_shared<std::atomic<int>>(0);
  struct link_in_chain {
    std::shared_ptr<std::atomic<int>> finished;
    int left;
    void operator()() const {
      if (left > 0) ember::spawn(link_in_chain{finished, left - 1});
      finished->fetch_add(1);
    }
  };
  rt().spawn(link_in_chain{finished, 99});
  rt().wait();
  EXPECT_EQ(finished->load(), 100);
  EXPECT_EQ(rt().stats().processes, 0u);
  EXPECT_EQ(rt().process_count(), 0u);
}

TEST_P(runtime_basics, wait_returns_at_once_when_no_process_is_alive) {
  rt().wait();
  EXPECT_TRUE(rt().wait_for(0ms));
}

TEST_P(runtime_basics, wait_for_returns_false_while_a_process_is_alive) {
  pid p = rt().spawn([] { ember::receive([](int) {}); });
  EXPECT_FALSE(rt().wait_for(50ms));
  EXPECT_TRUE(rt().is_alive(p));
  rt().send(p, 0);
  EXPECT_TRUE(rt().wait_for(hang_limit));
}

TEST_P(runtime_basics, stats_count_spawned_exited_and_alive_processes) {
  inbox<int> ready;
  std::vector<pid> ps;
  for (int i = 0; i < 10; ++i)
    ps.push_back(rt().spawn([ready] {
      ready.put(1);
      ember::receive([](int) {});
    }));
  for (int i = 0; i < 10; ++i) ready.take();
  auto s = rt().stats();
  EXPECT_EQ(s.processes, 10u);
  EXPECT_EQ(rt().process_count(), 10u);
  EXPECT_EQ(s.spawned, 10u);
  EXPECT_EQ(s.exited, 0u);
  EXPECT_EQ(s.stacks_in_use, 10u) << "a function process owns its stack for life";
  for (pid p : ps) rt().send(p, 0);
  rt().wait();
  s = rt().stats();
  EXPECT_EQ(s.processes, 0u);
  EXPECT_EQ(s.spawned, 10u);
  EXPECT_EQ(s.exited, 10u);
}

TEST_P(runtime_basics, is_alive_follows_a_process_life) {
  pid p = rt().spawn([] { ember::receive([](int) {}); });
  EXPECT_TRUE(rt().is_alive(p));
  EXPECT_TRUE(in_process(rt(), [p] { return ember::is_alive(p); }));
  EXPECT_FALSE(rt().is_alive(pid()));
  rt().send(p, 0);
  rt().wait();
  EXPECT_FALSE(rt().is_alive(p));
}

TEST_P(runtime_basics, yield_lets_other_processes_run) {
  // As many yielding waiters as schedulers: the process that releases them
  // runs only if yield gives the scheduler away.
  const unsigned n = GetParam();
  auto released = std::make_shared<std::atomic<bool>>(false);
  inbox<int> done;
  inbox<int> spinning;
  for (unsigned i = 0; i < n; ++i) {
    rt().spawn([released, done, spinning] {
      spinning.put(1);
      auto deadline = std::chrono::steady_clock::now() + 10s;
      while (!released->load() && std::chrono::steady_clock::now() < deadline) ember::yield();
      done.put(released->load() ? 1 : 0);
    });
  }
  for (unsigned i = 0; i < n; ++i) spinning.take();
  rt().spawn([released] { released->store(true); });
  int ok = 0;
  for (unsigned i = 0; i < n; ++i) ok += done.take();
  EXPECT_EQ(ok, int(n));
}

TEST_P(runtime_basics, child_process_outlives_its_parent) {
  // Without a link, a parent's exit (even a crash) leaves its child alone.
  oneshot<pid> child;
  watched parent = spawn_watched(rt(), [child] {
    child.set(ember::spawn([] { ember::receive([](int) {}); }));
    throw std::runtime_error("parent crashed");
  });
  EXPECT_EQ(exit_of(parent).text(), "parent crashed");
  pid c = child.get();
  EXPECT_TRUE(rt().is_alive(c));
  rt().send(c, 0);
}

TEST(runtime_fairness, two_processes_talking_through_run_next_do_not_starve_a_queued_process) {
  // One scheduler. A and B wake each other through the run-next slot for
  // ever; C waits in the run queue. C must get to run.
  ember::runtime_options o;
  o.schedulers = 1;
  ember::runtime rt(o);
  auto c_ran = std::make_shared<std::atomic<bool>>(false);
  oneshot<bool> result;
  rt.spawn([c_ran, result] {
    const pid a = ember::self();
    ember::spawn([c_ran] { c_ran->store(true); });  // queued: B displaces it below
    const pid b = ember::spawn([a] {
      for (;;) {
        if (!ember::receive([](int x) { return x; })) return;
        ember::send(a, 1);
      }
    });
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!c_ran->load() && std::chrono::steady_clock::now() < deadline) {
      ember::send(b, 1);
      ember::receive([](int) {});
    }
    ember::send(b, 0);
    result.set(c_ran->load());
  });
  EXPECT_TRUE(result.get());
  EXPECT_TRUE(rt.wait_for(10s));
}

TEST(runtime_fairness, a_process_spawned_onto_a_busy_scheduler_gets_to_run) {
  // Both schedulers are kept busy by processes that yield for ever; a
  // process spawned onto scheduler 1 waits in its inbox, which nobody can
  // steal from. It must run all the same.
  ember::runtime_options o;
  o.schedulers = 2;
  ember::runtime rt(o);
  auto stop = std::make_shared<std::atomic<bool>>(false);
  inbox<int> busy;
  for (int s = 0; s < 2; ++s) {
    ember::spawn_options on;
    on.scheduler = s;
    for (int i = 0; i < 2; ++i)
      rt.spawn([stop, busy] {
        busy.put(1);
        while (!stop->load()) ember::yield();
      }, on);
  }
  for (int i = 0; i < 4; ++i) busy.take();
  oneshot<bool> ran;
  ember::spawn_options on1;
  on1.scheduler = 1;
  rt.spawn([ran] { ran.set(true); }, on1);
  EXPECT_TRUE(ran.get(10s, "the process spawned onto a busy scheduler"));
  stop->store(true);
  EXPECT_TRUE(rt.wait_for(10s));
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(runtime_basics);

// ---- shutdown and destruction (each test owns its runtime) ----

class runtime_shutdown : public ::testing::TestWithParam<unsigned> {};

// Starts processes of every waiting kind, each holding an RAII guard, and
// returns once all of them are waiting.
int start_waiting_processes(ember::runtime& rt, const destructor_counter& dtors) {
  inbox<int> waiting;
  int n = 0;
  for (int i = 0; i < 20; ++i, ++n)  // blocked in receive
    rt.spawn([dtors, waiting] {
      auto g = dtors.make();
      waiting.put(1);
      ember::receive([](int) {});
    });
  for (int i = 0; i < 5; ++i, ++n)  // suspended in sleep_for
    rt.spawn([dtors, waiting] {
      auto g = dtors.make();
      waiting.put(1);
      ember::sleep_for(std::chrono::hours(1));
    });
  for (int i = 0; i < 5; ++i, ++n)  // runnable, yielding in a loop
    rt.spawn([dtors, waiting] {
      auto g = dtors.make();
      waiting.put(1);
      for (;;) ember::yield();
    });
  for (int i = 0; i < 5; ++i, ++n)  // trapping exits and ignoring the signals
    rt.spawn([dtors, waiting] {
      auto g = dtors.make();
      ember::trap_exit(true);
      waiting.put(1);
      for (;;) ember::receive([](ember::message&) {});
    });
  struct idle_handler {  // a handler process between messages: state destroyed
    std::shared_ptr<destructor_counter::guard> g;
    inbox<int> waiting;
    void init() { waiting.put(1); }
    void operator()(ember::message&) {}
  };
  for (int i = 0; i < 5; ++i, ++n)
    rt.spawn(ember::handler(idle_handler{std::make_shared<destructor_counter::guard>(dtors.count), waiting}));
  for (int i = 0; i < n; ++i) waiting.take();
  return n;
}

TEST_P(runtime_shutdown, shutdown_kills_live_processes_and_runs_their_destructors) {
  ember::runtime rt(with_schedulers(GetParam()));
  destructor_counter dtors;
  int n = start_waiting_processes(rt, dtors);
  EXPECT_EQ(rt.stats().processes, std::size_t(n));
  rt.shutdown();
  EXPECT_EQ(dtors.value(), n) << "every process's stack (and handler state) was unwound";
  auto s = rt.stats();
  EXPECT_EQ(s.processes, 0u);
  EXPECT_EQ(s.stacks_in_use, 0u);
  EXPECT_EQ(s.timers_pending, 0u);
  EXPECT_EQ(s.exited, s.spawned);
}

TEST_P(runtime_shutdown, shutdown_is_idempotent) {
  ember::runtime rt(with_schedulers(GetParam()));
  destructor_counter dtors;
  int n = start_waiting_processes(rt, dtors);
  rt.shutdown();
  rt.shutdown();
  EXPECT_EQ(dtors.value(), n);
  EXPECT_EQ(rt.stats().processes, 0u);
  rt.wait();  // nothing left to wait for
}

TEST_P(runtime_shutdown, shutdown_with_no_processes_returns) {
  ember::runtime rt(with_schedulers(GetParam()));
  rt.shutdown();
  EXPECT_EQ(rt.stats().processes, 0u);
}

TEST_P(runtime_shutdown, destroying_a_runtime_with_live_processes_is_clean) {
  destructor_counter dtors;
  int n = 0;
  {
    ember::runtime rt(with_schedulers(GetParam()));
    n = start_waiting_processes(rt, dtors);
  }
  EXPECT_EQ(dtors.value(), n);
}

TEST_P(runtime_shutdown, destroying_a_runtime_while_processes_are_busy_is_clean) {
  // Processes spawning and messaging at full speed when the runtime dies.
  destructor_counter dtors;
  {
    ember::runtime rt(with_schedulers(GetParam()));
    inbox<int> started;
    for (int i = 0; i < 8; ++i) {
      rt.spawn([dtors, started] {
        auto g = dtors.make();
        started.put(1);
        for (;;) {
          pid c = ember::spawn([] { ember::receive([](int) {}); });
          ember::send(c, 1);
          ember::send(ember::self(), 2);
          ember::receive([](int) {});
        }
      });
    }
    for (int i = 0; i < 8; ++i) started.take();
  }
  EXPECT_EQ(dtors.value(), 8);
}

TEST_P(runtime_shutdown, spawn_after_shutdown_throws_runtime_stopped) {
  ember::runtime rt(with_schedulers(GetParam()));
  rt.shutdown();
  try {
    rt.spawn([] {});
    FAIL() << "spawn after shutdown returned";
  } catch (const ember::error& e) {
    EXPECT_EQ(e.code(), errc::runtime_stopped);
  }
}

INSTANTIATE_TEST_SUITE_P(sched, runtime_shutdown, ::testing::Values(1u, 2u, 4u, 8u),
                         scheduler_count_name);

}  // namespace
