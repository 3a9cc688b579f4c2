// Reductions: every runtime call, ember::check() and allocation cost them;
// a process that spends its budget yields, and exit signals reach it there.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::pid;

ember::runtime_options one_scheduler(std::uint32_t reductions = 2000) {
  ember::runtime_options o;
  o.schedulers = 1;
  o.reductions = reductions;
  return o;
}

TEST(reductions, a_budget_outside_1_to_100_million_is_an_invalid_argument) {
  for (std::uint32_t bad : {0u, 100'000'001u}) {
    ember::runtime_options o;
    o.reductions = bad;
    try {
      ember::runtime rt(o);
      ADD_FAILURE() << "accepted reductions = " << bad;
    } catch (const ember::error& e) {
      EXPECT_EQ(e.code(), ember::errc::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("reductions"), std::string::npos) << e.what();
    }
  }
}

TEST(reductions, check_outside_a_process_does_nothing) { EXPECT_NO_THROW(ember::check()); }

TEST(reductions, a_loop_calling_check_lets_another_process_run_on_one_scheduler) {
  ember::runtime rt(one_scheduler());
  auto other_ran = std::make_shared<std::atomic<bool>>(false);
  oneshot<bool> saw;
  rt.spawn([other_ran, saw] {
    ember::spawn([other_ran] { other_ran->store(true); });  // queued behind us
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!other_ran->load() && std::chrono::steady_clock::now() < deadline) ember::check();
    saw.set(other_ran->load());
  });
  EXPECT_TRUE(saw.get());
  EXPECT_TRUE(rt.wait_for(hang_limit));
}

TEST(reductions, checks_are_counted_and_banked_at_each_yield) {
  ember::runtime rt(one_scheduler(100));
  auto got = in_process(rt, [] {
    std::uint64_t before = ember::process_info(ember::self())->reductions;
    for (int i = 0; i < 1000; ++i) ember::check();
    ember::yield();  // banks this turn's count
    return ember::process_info(ember::self())->reductions - before;
  });
  EXPECT_GE(got, 1000u);
  EXPECT_LE(got, 1100u);
}

TEST(reductions, a_kill_reaches_a_process_that_only_calls_check) {
  ember::runtime rt(one_scheduler());
  destructor_counter dtors;
  inbox<int> started;
  watched w = spawn_watched(rt, [dtors, started] {
    auto guard = dtors.make();
    started.put(1);
    for (;;) ember::check();
  });
  started.take();
  rt.exit(w.id, exit_reason::kill());
  EXPECT_TRUE(exit_of(w).is(exit_reason::kind::killed));
  EXPECT_EQ(dtors.value(), 1);  // unwound from inside check()
  EXPECT_TRUE(rt.wait_for(hang_limit));
}

TEST(reductions, allocation_in_the_process_heap_costs_reductions) {
  ember::runtime rt(one_scheduler(100'000'000));  // never yields on its own
  auto got = in_process(rt, [] {
    std::uint64_t before = ember::process_info(ember::self())->reductions;
    std::vector<char*> blocks;
    for (int i = 0; i < 100; ++i) blocks.push_back(new char[40 * 1024]);  // large: 1 per 4 KiB
    for (char* b : blocks) delete[] b;
    ember::yield();
    return ember::process_info(ember::self())->reductions - before;
  });
  EXPECT_GE(got, 100u * 10u);
}

TEST(reductions, a_process_that_spent_its_budget_in_runtime_calls_yields) {
  // Two processes sending to themselves in a loop on one scheduler: with a
  // budget of 50, each yields every 50 sends, so they interleave.
  ember::runtime rt(one_scheduler(50));
  auto turns = std::make_shared<std::vector<int>>();
  auto mu = std::make_shared<std::mutex>();
  oneshot<void> a_done, b_done;
  rt.spawn([turns, mu, a_done, b_done] {  // both start on this scheduler's queue
    for (int who = 0; who < 2; ++who) {
      oneshot<void> done = who == 0 ? a_done : b_done;
      ember::spawn([who, turns, mu, done] {
        for (int i = 0; i < 500; ++i) {
          ember::send(ember::self(), i);
          ember::receive([](int) {});
          ember::global_heap_scope global;  // the log outlives both processes
          std::lock_guard lock(*mu);
          turns->push_back(who);
        }
        done.set();
      });
    }
  });
  a_done.get();
  b_done.get();
  ASSERT_TRUE(rt.wait_for(hang_limit));
  int switches = 0;
  for (std::size_t i = 1; i < turns->size(); ++i) switches += (*turns)[i] != (*turns)[i - 1];
  EXPECT_GE(switches, 10) << "the two processes did not take turns";
}

TEST(reductions, process_info_reports_the_reductions_of_another_process) {
  ember::runtime rt(one_scheduler());
  inbox<int> ready;
  watched w = spawn_watched(rt, [ready] {
    for (int i = 0; i < 300; ++i) ember::check();
    ember::yield();
    ready.put(1);
    ember::receive([](int) {});
  });
  ready.take();
  auto info = rt.process_info(w.id);
  ASSERT_TRUE(info.has_value());
  EXPECT_GE(info->reductions, 300u);
  rt.send(w.id, 1);
  EXPECT_TRUE(exit_of(w).is_normal());
}

}  // namespace
