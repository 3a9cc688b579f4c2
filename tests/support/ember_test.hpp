// Test support shared by ember's behaviour tests: a fixture that owns a
// runtime and checks at teardown that nothing leaked, an inbox that carries
// values from processes to the test thread, and helpers that wait for an
// event (never for a fixed time) with a generous limit that turns a hang
// into a failure.
//
// Everything here carries values out of processes to the test thread, so it
// copies them into the global heap (ember::global_heap_scope): a value left
// in a process's heap would be reclaimed when that process exits.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ember/ember.hpp>

// Sanitizer builds run scaled-down stress sizes.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define EMBER_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define EMBER_TEST_SANITIZED 1
#endif
#endif
#ifndef EMBER_TEST_SANITIZED
#define EMBER_TEST_SANITIZED 0
#endif

namespace ember_test {

using namespace std::chrono_literals;

// How long a test waits for an event before declaring a hang.
inline constexpr std::chrono::seconds hang_limit{30};

// Raised (and reported by GoogleTest as a failure) when an awaited event
// does not happen within its limit.
struct hang : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Waits for a future; throws `hang` if it is not ready within `limit`.
template <class T>
T await(std::future<T>& f, std::chrono::nanoseconds limit = hang_limit,
        const std::string& what = "a result from a process") {
  if (f.wait_for(limit) != std::future_status::ready)
    throw hang("timed out waiting for " + what);
  return f.get();
}
template <class T>
T await(std::future<T>&& f, std::chrono::nanoseconds limit = hang_limit,
        const std::string& what = "a result from a process") {
  return await(f, limit, what);
}

// Polls `done` until it holds or `limit` passes; for counters the runtime
// updates asynchronously (stats). Returns the final value of done().
template <class F>
bool eventually(F done, std::chrono::nanoseconds limit = 10s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return done();
    std::this_thread::yield();
  }
  return true;
}

// A copy of v in the global heap.
template <class T>
T global_copy(T& v) {
  ember::global_heap_scope global;
  if constexpr (std::is_copy_constructible_v<T>) {
    return T(std::as_const(v));
  } else {
    return T(std::move(v));
  }
}

// A multi-producer queue from processes (or any thread) to the test thread.
// Copies share one queue, so a process can capture one by value.
template <class T>
class inbox {
 public:
  // Under no_preempt: a process preempted while holding the lock would
  // block every other process of its thread that puts (see the README on
  // OS mutexes in processes).
  void put(T v) const {
    {
      ember::no_preempt hold;
      ember::global_heap_scope global;
      std::lock_guard lock(s_->mu);
      s_->items.push_back(global_copy(v));
    }
    s_->cv.notify_all();
  }
  // The oldest value; throws `hang` if none arrives within `limit`.
  T take(std::chrono::nanoseconds limit = hang_limit) const {
    std::unique_lock lock(s_->mu);
    if (!s_->cv.wait_for(lock, limit, [&] { return !s_->items.empty(); }))
      throw hang("timed out waiting for a value in an inbox");
    T v = std::move(s_->items.front());
    s_->items.pop_front();
    return v;
  }
  std::size_t size() const {
    std::lock_guard lock(s_->mu);
    return s_->items.size();
  }

 private:
  struct state {
    mutable std::mutex mu;
    std::condition_variable cv;
    std::deque<T> items;
  };
  std::shared_ptr<state> s_ = std::make_shared<state>();
};

// A one-shot value from a process: a copyable handle on a promise, so a
// process can capture it by value.
template <class T>
class oneshot {
 public:
  void set(T v) const {
    ember::no_preempt hold;  // the promise's lock (see inbox::put)
    ember::global_heap_scope global;
    s_->p.set_value(global_copy(v));
  }
  void fail(std::exception_ptr e) const {
    ember::no_preempt hold;
    s_->p.set_exception(std::move(e));
  }
  // The value; throws `hang` if it is not set within `limit`.
  T get(std::chrono::nanoseconds limit = hang_limit,
        const std::string& what = "a result from a process") const {
    if (s_->f.wait_for(limit) != std::future_status::ready)
      throw hang("timed out waiting for " + what);
    return s_->f.get();
  }
  bool ready() const { return s_->f.wait_for(0s) == std::future_status::ready; }

 private:
  struct state {
    std::promise<T> p;
    std::shared_future<T> f = p.get_future().share();
  };
  std::shared_ptr<state> s_ = std::make_shared<state>();
};
template <>
class oneshot<void> {
 public:
  void set() const {
    ember::no_preempt hold;
    s_->p.set_value();
  }
  void fail(std::exception_ptr e) const {
    ember::no_preempt hold;
    s_->p.set_exception(std::move(e));
  }
  void get(std::chrono::nanoseconds limit = hang_limit,
           const std::string& what = "a signal from a process") const {
    if (s_->f.wait_for(limit) != std::future_status::ready)
      throw hang("timed out waiting for " + what);
    s_->f.get();
  }
  bool ready() const { return s_->f.wait_for(0s) == std::future_status::ready; }

 private:
  struct state {
    std::promise<void> p;
    std::shared_future<void> f = p.get_future().share();
  };
  std::shared_ptr<state> s_ = std::make_shared<state>();
};

// Counts destructions: an RAII object a process keeps on its stack shows
// whether that stack was unwound.
struct destructor_counter {
  std::shared_ptr<std::atomic<int>> count = std::make_shared<std::atomic<int>>(0);
  struct guard {
    std::shared_ptr<std::atomic<int>> count;
    explicit guard(std::shared_ptr<std::atomic<int>> c) : count(std::move(c)) {}
    guard(const guard&) = delete;
    guard& operator=(const guard&) = delete;
    ~guard() { count->fetch_add(1); }
  };
  guard make() const { return guard(count); }
  int value() const { return count->load(); }
  // For a process that ends without unwinding (heap limit, stack overflow):
  // its guard never lets go of the count, so the count is kept reachable
  // for the rest of the run (LeakSanitizer would report it). Test thread only.
  static destructor_counter for_abandoned_stack() {
    static auto* kept = new std::vector<destructor_counter>;
    destructor_counter c;
    kept->push_back(c);
    return c;
  }
};

// Runs `fn` in a new process and returns its result to the test thread.
// An exception derived from std::exception is passed to the test thread
// (and still ends the process with it).
template <class F>
auto in_process(ember::runtime& rt, F fn, ember::spawn_options opts = {})
    -> decltype(fn()) {
  using R = decltype(fn());
  oneshot<R> result;
  rt.spawn(
      [fn = std::move(fn), result]() mutable {
        try {
          if constexpr (std::is_void_v<R>) {
            fn();
            result.set();
          } else {
            result.set(fn());
          }
        } catch (const std::exception& e) {
          // The exception's text may live in this process's heap: hand the
          // test thread a copy in the global heap.
          ember::global_heap_scope global;
          result.fail(std::make_exception_ptr(std::runtime_error(std::string(e.what()))));
          throw;
        }
      },
      opts);
  if constexpr (std::is_void_v<R>) {
    result.get();
  } else {
    return result.get();
  }
}

// A process spawned under watch: its pid, and the reason it exits with,
// observed through a monitor set atomically with the spawn.
struct watched {
  ember::pid id;
  std::future<ember::exit_reason> reason;
};

// Spawns `body` (a function or an ember::handler) from a watcher process
// with spawn_monitor, so the exit reason is observed however early the
// process dies.
template <class F>
watched spawn_watched(ember::runtime& rt, F body, ember::spawn_options opts = {}) {
  auto id = std::make_shared<std::promise<ember::pid>>();
  auto reason = std::make_shared<std::promise<ember::exit_reason>>();
  watched w;
  auto id_future = id->get_future();
  w.reason = reason->get_future();
  rt.spawn([body = std::move(body), opts, id, reason]() mutable {
    auto [p, ref] = ember::spawn_monitor(std::move(body), opts);
    id->set_value(p);
    ember::receive(ember::when([ref = ref](const ember::down& d) { return d.ref == ref; },
                               [&](ember::down d) { reason->set_value(std::move(d.reason)); }));
  });
  w.id = await(id_future, hang_limit, "the pid of a watched process");
  return w;
}

// Waits for the exit reason of a watched process.
inline ember::exit_reason exit_of(watched& w, std::chrono::nanoseconds limit = hang_limit) {
  return await(w.reason, limit, "the exit of process " + w.id.to_string());
}

// True if the process exits within `limit`; false (without failing) if it
// is still alive then. For rules of the form "X does not end the process".
inline bool exits_within(watched& w, std::chrono::nanoseconds limit) {
  return w.reason.wait_for(limit) == std::future_status::ready;
}

// Asserts that nothing the runtime owns has leaked once every process has
// exited: no processes, no stacks held, no timers armed, no names.
inline void expect_nothing_leaked(ember::runtime& rt) {
  auto s = rt.stats();
  EXPECT_EQ(s.processes, 0u) << "processes alive after wait";
  EXPECT_EQ(rt.process_count(), 0u);
  EXPECT_TRUE(eventually([&] { return rt.stats().stacks_in_use == 0; }))
      << "stacks still in use: " << rt.stats().stacks_in_use;
  EXPECT_TRUE(eventually([&] { return rt.stats().timers_pending == 0; }))
      << "timers still pending: " << rt.stats().timers_pending;
  EXPECT_EQ(rt.stats().names, 0u) << "names still registered";
  EXPECT_EQ(rt.stats().sockets_open, 0u) << "sockets still open";
  s = rt.stats();
  EXPECT_EQ(s.exited, s.spawned) << "every spawned process exited";
}

// The name of an error code, for messages that tests compare.
inline std::string errc_name(ember::errc c) {
  switch (c) {
    case ember::errc::not_in_process: return "not_in_process";
    case ember::errc::name_taken: return "name_taken";
    case ember::errc::no_such_name: return "no_such_name";
    case ember::errc::not_alive: return "not_alive";
    case ember::errc::already_registered: return "already_registered";
    case ember::errc::system_limit: return "system_limit";
    case ember::errc::invalid_argument: return "invalid_argument";
    case ember::errc::bad_message_type: return "bad_message_type";
    case ember::errc::runtime_stopped: return "runtime_stopped";
    case ember::errc::call_failed: return "call_failed";
    case ember::errc::start_failed: return "start_failed";
    case ember::errc::not_found: return "not_found";
    case ember::errc::already_present: return "already_present";
    case ember::errc::running: return "running";
    case ember::errc::io_failed: return "io_failed";
    case ember::errc::timed_out: return "timed_out";
    case ember::errc::closed: return "closed";
    case ember::errc::child_failed: return "child_failed";
    case ember::errc::bad_message: return "bad_message";
    case ember::errc::not_serializable: return "not_serializable";
    case ember::errc::redis_error: return "redis_error";
    case ember::errc::unavailable: return "unavailable";
  }
  return "errc " + std::to_string(int(c));
}

// What running f did: "returned", "exit_error <code>: <reason>" or
// "error <code>" (an ember::error that is not an exit_error).
template <class F>
std::string outcome_of(F&& f) {
  try {
    f();
    return "returned";
  } catch (const ember::exit_error& e) {
    return "exit_error " + errc_name(e.code()) + ": " + e.reason().to_string();
  } catch (const ember::error& e) {
    return "error " + errc_name(e.code());
  }
}

// A fixture owning a runtime with GetParam() schedulers. At teardown it
// waits for every process to exit (a passing test leaves none running) and
// checks that nothing leaked. A failed test shuts the runtime down instead,
// so one failure does not hang the suite.
class runtime_test : public ::testing::TestWithParam<unsigned> {
 protected:
  void SetUp() override {
    ember::runtime_options o;
    o.schedulers = GetParam();
    rt_.emplace(o);
  }
  void TearDown() override {
    if (!rt_) return;
    if (HasFailure()) {
      rt_->shutdown();
    } else {
      bool all_exited = rt_->wait_for(hang_limit);
      EXPECT_TRUE(all_exited) << "processes still alive at the end of the test: "
                              << rt_->process_count();
      if (!all_exited) rt_->shutdown();
    }
    expect_nothing_leaked(*rt_);
    rt_.reset();
  }
  ember::runtime& rt() { return *rt_; }

  std::optional<ember::runtime> rt_;
};

// Names a scheduler-count parameter "schedulers_4".
inline std::string scheduler_count_name(const ::testing::TestParamInfo<unsigned>& info) {
  return "schedulers_" + std::to_string(info.param);
}

}  // namespace ember_test

// Instantiates a runtime_test suite for 1, 2, 4 and 8 schedulers.
#define EMBER_TEST_WITH_SCHEDULER_COUNTS(suite)                                         \
  INSTANTIATE_TEST_SUITE_P(sched, suite, ::testing::Values(1u, 2u, 4u, 8u),                  \
                           ::ember_test::scheduler_count_name)
