// ember::blocking: a blocking call runs on the pool, suspending only its
// process; its value or exception comes back; a killed caller does not
// stop the call; the pool grows only up to its cap.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::pid;

class blocking_calls : public runtime_test {};

TEST_P(blocking_calls, return_the_value_of_the_call_made_on_another_thread) {
  auto got = in_process(rt(), [] {
    std::thread::id here = std::this_thread::get_id();
    auto [text, there] = ember::blocking([] {
      return std::pair<std::string, std::thread::id>(std::string(100, 'x') + "!", std::this_thread::get_id());
    });
    return std::to_string(text.size()) + (there != here ? " elsewhere" : " on the scheduler");
  });
  EXPECT_EQ(got, "101 elsewhere");
}

TEST_P(blocking_calls, rethrow_the_exception_of_the_call) {
  auto got = in_process(rt(), [] {
    try {
      ember::blocking([]() -> int { throw std::invalid_argument("no such file"); });
      return std::string("returned");
    } catch (const std::invalid_argument& e) {
      return std::string("caught: ") + e.what();
    }
  });
  EXPECT_EQ(got, "caught: no such file");
}

TEST_P(blocking_calls, void_calls_return_when_done) {
  auto got = in_process(rt(), [] {
    int side = 0;
    ember::blocking([&side] { side = 42; });  // the caller waits, so its frame is alive
    return side;
  });
  EXPECT_EQ(got, 42);
}

// On one scheduler: a process waiting in a blocking call that needs another
// process to run first. If the call held the scheduler thread, it would
// never return.
TEST(blocking_one_scheduler, other_processes_run_while_a_call_blocks) {
  ember::runtime_options o;
  o.schedulers = 1;
  o.blocked_after = std::chrono::microseconds(0);  // no spare thread to hide a blocked scheduler
  ember::runtime rt(o);
  auto gate = std::make_shared<std::promise<int>>();
  std::shared_future<int> opened = gate->get_future().share();
  oneshot<int> result;
  rt.spawn([opened, result] { result.set(ember::blocking([opened] { return opened.get() + 1; })); });
  rt.spawn([gate] {
    ember::no_preempt hold;  // the promise's lock
    gate->set_value(41);
  });
  EXPECT_EQ(result.get(), 42);
  rt.wait();
}

TEST_P(blocking_calls, a_caller_killed_while_waiting_ends_at_once_and_the_call_runs_to_its_end) {
  auto release = std::make_shared<std::promise<void>>();
  std::shared_future<void> released = release->get_future().share();
  auto finished = std::make_shared<std::atomic<bool>>(false);
  oneshot<int> entered;
  pid caller = rt().spawn([released, finished, entered] {
    ember::blocking([released, finished, entered] {
      entered.set(1);
      released.wait();
      finished->store(true);
      return std::string(64, 'r');  // dropped: nobody waits for it any more
    });
  });
  EXPECT_EQ(entered.get(), 1);  // the call is running on the pool
  std::string reason = in_process(rt(), [caller] {
    ember::monitor_ref ref = ember::monitor(caller);
    ember::exit(caller, exit_reason::kill());
    return ember::receive(ember::when([ref](const ember::down& d) { return d.ref == ref; },
                                      [](ember::down d) { return d.reason.to_string(); }));
  });
  EXPECT_EQ(reason, "killed");
  EXPECT_FALSE(finished->load()) << "the caller ended while its call was still running";
  release->set_value();
  EXPECT_TRUE(eventually([&] { return finished->load(); }));
}

TEST(blocking_pool, runs_at_most_blocking_threads_calls_at_once_and_queues_the_rest) {
  ember::runtime_options o;
  o.blocking_threads = 2;
  ember::runtime rt(o);
  auto gate = std::make_shared<std::promise<void>>();
  std::shared_future<void> open = gate->get_future().share();
  auto running = std::make_shared<std::atomic<int>>(0);
  auto most = std::make_shared<std::atomic<int>>(0);
  auto entered = std::make_shared<std::atomic<int>>(0);
  inbox<int> done;
  for (int i = 0; i < 6; ++i) {
    rt.spawn([=] {
      int r = ember::blocking([=] {
        entered->fetch_add(1);
        int now = running->fetch_add(1) + 1;
        for (int m = most->load(); now > m && !most->compare_exchange_weak(m, now);) {
        }
        open.wait();
        running->fetch_sub(1);
        return i;
      });
      done.put(r);
    });
  }
  EXPECT_TRUE(eventually([&] { return entered->load() == 2; }));
  EXPECT_EQ(entered->load(), 2) << "only two threads: the other calls wait their turn";
  gate->set_value();
  int sum = 0;
  for (int i = 0; i < 6; ++i) sum += done.take();
  EXPECT_EQ(sum, 0 + 1 + 2 + 3 + 4 + 5);
  EXPECT_EQ(most->load(), 2);
  rt.wait();
}

TEST(blocking_pool, options_out_of_range_are_rejected) {
  ember::runtime_options o;
  o.blocking_threads = 0;
  EXPECT_THROW(ember::runtime{o}, ember::error);
  o.blocking_threads = 5000;
  try {
    ember::runtime rt(o);
    FAIL() << "a runtime with 5000 blocking threads was made";
  } catch (const ember::error& e) {
    EXPECT_EQ(e.code(), ember::errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("blocking_threads"), std::string::npos) << e.what();
  }
}

TEST(blocking_pool, outside_a_process_it_is_an_error) {
  ember::runtime rt;
  try {
    ember::blocking([] { return 1; });
    FAIL() << "blocking ran outside a process";
  } catch (const ember::error& e) {
    EXPECT_EQ(e.code(), ember::errc::not_in_process);
  }
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(blocking_calls);

}  // namespace
