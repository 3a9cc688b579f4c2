// Asynchronous preemption: a process that computes without ever calling the
// runtime is interrupted after runtime_options::time_slice (if it is at a
// safe point: its own code in the main executable, not under no_preempt,
// preemptible) and put at the back of its queue, so it cannot keep a
// scheduler from the others; a preemption that finds it at an unsafe point
// (a shared library, the runtime, a no_preempt guard) waits for its next
// runtime call or the end of the guard. A preempted process that is killed
// dies without unwinding. A scheduler stuck in one turn for
// runtime_options::blocked_after (a blocking system call, code that cannot
// be preempted) has its runnable processes taken over by a spare thread.
//
// Most tests here run on ONE scheduler with blocked_after = 0, so that
// asynchronous preemption is the only way another process can run while a
// spinner holds the thread; a failure to preempt then shows as a hang, which
// every wait turns into a failure after a generous limit (and a `releaser`
// stops the spinners so the runtime can shut down).
//
// Rule for code inside processes here: no test assertion (GoogleTest's
// locks) and no shared mutex-protected structure (ember_test::inbox) is
// used where the process might be preempted while another process on the
// same thread waits for the same lock; results travel through atomics and
// one oneshot per process.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cfenv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::pid;
using kind = exit_reason::kind;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// Sizes: sanitizer builds (ThreadSanitizer especially) run scaled down.
constexpr std::uint64_t scaled(std::uint64_t normal, std::uint64_t sanitized) {
  return EMBER_TEST_SANITIZED ? sanitized : normal;
}

// ---------------------------------------------------------------- options

// time_slice as given, and no spare scheduler: only asynchronous
// preemption lets another process run while one computes.
ember::runtime_options preempting(unsigned schedulers, microseconds slice = microseconds(100)) {
  ember::runtime_options o;
  o.schedulers = schedulers;
  o.time_slice = slice;
  o.blocked_after = microseconds(0);
  return o;
}

// Neither asynchronous preemption nor spare schedulers: a process that does
// not call the runtime keeps its scheduler until it is done.
ember::runtime_options cooperative_only(unsigned schedulers) {
  ember::runtime_options o;
  o.schedulers = schedulers;
  o.time_slice = microseconds(0);
  o.blocked_after = microseconds(0);
  return o;
}

// ---------------------------------------------------------------- waiting

// Polls `done` until it holds; throws `hang` (a test failure) after `limit`.
template <class F>
void wait_until(F done, const std::string& what, std::chrono::nanoseconds limit = hang_limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) throw hang("timed out waiting until " + what);
    std::this_thread::sleep_for(microseconds(200));  // a poll interval, not a wait for an event
  }
}

std::uint64_t preemptions(ember::runtime& rt) { return rt.stats().preemptions; }

// True once the runtime's preemption count exceeds `before` (the counters
// are per scheduler and read without synchronization: poll briefly).
bool preempted_since(ember::runtime& rt, std::uint64_t before) {
  return eventually([&] { return preemptions(rt) > before; });
}

// Runs cleanup actions (stop the spinners, open a gate) when the test ends,
// however it ends. Declared AFTER the runtime, so that it runs before the
// runtime's destructor, which would otherwise wait for ever for a spinner
// that nobody stops (a process that never calls the runtime cannot be
// killed unless it is preempted).
class releaser {
 public:
  releaser() = default;
  releaser(const releaser&) = delete;
  releaser& operator=(const releaser&) = delete;
  ~releaser() { release(); }
  void on_release(std::function<void()> f) { actions_.push_back(std::move(f)); }
  void release() {
    for (auto& f : actions_) f();
  }

 private:
  std::vector<std::function<void()>> actions_;
};

// On a failure (or a hang, which throws), prints the runtime's preemption
// counters: what the runtime did before the test gave up. Declared after
// the runtime.
class stats_on_failure {
 public:
  explicit stats_on_failure(ember::runtime& rt) : rt_(rt) {}
  stats_on_failure(const stats_on_failure&) = delete;
  stats_on_failure& operator=(const stats_on_failure&) = delete;
  ~stats_on_failure() {
    if (std::uncaught_exceptions() == 0 && !::testing::Test::HasFailure()) return;
    auto s = rt_.stats();
    std::fprintf(stderr,
                 "runtime stats: processes %zu, spawned %llu, exited %llu, reduction_yields %llu, "
                 "preemptions %llu, preempt_signals %llu, preempt_deferred %llu, "
                 "schedulers_blocked %llu, spare_activations %llu, steals %llu\n",
                 s.processes, (unsigned long long)s.spawned, (unsigned long long)s.exited,
                 (unsigned long long)s.reduction_yields, (unsigned long long)s.preemptions,
                 (unsigned long long)s.preempt_signals, (unsigned long long)s.preempt_deferred,
                 (unsigned long long)s.schedulers_blocked, (unsigned long long)s.spare_activations,
                 (unsigned long long)s.steals);
  }

 private:
  ember::runtime& rt_;
};

// ---------------------------------------------------------------- spinners

std::atomic<std::uint64_t> sink{0};  // keeps computed values live

// The spinner's loop: no calls (a relaxed load and arithmetic), x kept in
// a register and live. Under ThreadSanitizer the load is a call into its
// runtime, a shared object where a process is never preempted (the
// preemption is deferred to a runtime call that never comes): there the
// flag is read once per 1,024 steps, so that the spinner spends its time in
// its own code as it does in other builds.
#if defined(__SANITIZE_THREAD__)
constexpr int steps_per_check = 1024;
#else
constexpr int steps_per_check = 1;
#endif
__attribute__((noipa)) std::uint64_t spin_until(const std::atomic<bool>& stop) {
  std::uint64_t x = 1;
  while (!stop.load(std::memory_order_relaxed)) {
    for (int i = 0; i < steps_per_check; ++i) {
      x = x * 31 + 7;
      asm volatile("" : "+r"(x));
    }
  }
  return x;
}

// A bounded spin: n iterations, no calls, no memory accesses.
__attribute__((noipa)) std::uint64_t spin_for(std::uint64_t n) {
  std::uint64_t x = 1;
  for (std::uint64_t i = 0; i < n; ++i) {
    x = x * 31 + 7;
    asm volatile("" : "+r"(x));
  }
  return x;
}

// Iterations of spin_for that take about `d` on this machine (measured once
// on the test thread; sizes a bounded spin, never asserted on).
std::uint64_t iterations_for(milliseconds d) {
  static const double per_ms = [] {
    constexpr std::uint64_t n = std::uint64_t(1) << 22;
    auto t0 = std::chrono::steady_clock::now();
    sink.store(spin_for(n), std::memory_order_relaxed);
    auto t1 = std::chrono::steady_clock::now();
    double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    return double(n) / std::max(ms, 1e-3);
  }();
  return std::uint64_t(per_ms * double(d.count())) + 1;
}

struct spinner_state {
  std::atomic<bool> stop{false};
  std::atomic<bool> started{false};
  std::atomic<bool> finished{false};  // set after the loop ends
};

// A new spinner's state, stopped when the test ends.
std::shared_ptr<spinner_state> new_spinner(releaser& rel) {
  auto s = std::make_shared<spinner_state>();
  rel.on_release([s] { s->stop.store(true); });
  return s;
}

// The body of a spinner process. It reaches its state through the body's
// capture (no copy of the shared_ptr on its stack, which a process killed
// without unwinding would leak).
auto spinner_body(std::shared_ptr<spinner_state> s) {
  return [s] {
    s->started.store(true);
    sink.store(spin_until(s->stop), std::memory_order_relaxed);
    s->finished.store(true);
  };
}

// As spinner_body, with an RAII object on the spinner's stack that shows
// whether the stack was unwound.
auto spinner_body_with_guard(std::shared_ptr<spinner_state> s, destructor_counter dtors) {
  return [s, dtors] {
    auto on_stack = dtors.make();
    s->started.store(true);
    sink.store(spin_until(s->stop), std::memory_order_relaxed);
    s->finished.store(true);
  };
}

void wait_started(const spinner_state& s) {
  wait_until([&] { return s.started.load(); }, "a spinner started");
}

// ---------------------------------------------------------------- traffic

struct ball {
  pid from;
  std::uint64_t n;
};
struct quit {};
struct go {};
struct tick {};

// Answers balls until quit; counts them in *hops if given.
void ponger_loop(std::atomic<std::uint64_t>* hops) {
  for (bool on = true; on;) {
    ember::receive(
        [&](ball b) {
          if (hops) hops->fetch_add(1);
          ember::send(b.from, ball{ember::self(), b.n});
        },
        [&](quit) { on = false; });
  }
}

// A pinger that plays n round trips with its own ponger and reports how
// many came back in order from the right process.
auto counted_pinger(std::uint64_t n, oneshot<std::uint64_t> done) {
  return [n, done] {
    pid ponger = ember::spawn([] { ponger_loop(nullptr); });
    std::uint64_t ok = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      ember::send(ponger, ball{ember::self(), i});
      ember::receive([&](ball b) {
        if (b.n == i && b.from == ponger) ++ok;
      });
    }
    ember::send(ponger, quit{});
    done.set(ok);
  };
}

// A ping-pong pair that runs until stopped; every message either side
// handles adds one to hops, so hops moves whenever the pair runs at all.
struct traffic {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> hops{0};
};

std::shared_ptr<traffic> start_endless_pair(ember::runtime& rt, releaser& rel) {
  auto t = std::make_shared<traffic>();
  rel.on_release([t] { t->stop.store(true); });
  rt.spawn([t] {
    pid ponger = ember::spawn([t] { ponger_loop(&t->hops); });
    for (std::uint64_t i = 0; !t->stop.load(std::memory_order_relaxed); ++i) {
      ember::send(ponger, ball{ember::self(), i});
      ember::receive([&](ball) { t->hops.fetch_add(1); });
    }
    ember::send(ponger, quit{});
  });
  wait_until([&] { return t->hops.load() > 0; }, "a ping-pong pair ran");
  return t;
}

// Waits for the down of monitor `ref` and returns its reason.
exit_reason await_down(ember::monitor_ref ref) {
  return ember::receive(
      ember::when([ref](const ember::down& d) { return d.ref == ref; },
                  [](ember::down d) { return d.reason; }),
      ember::after(hang_limit, [] { return exit_reason("no down within the hang limit"); }));
}

// ================================================= one spinner, one scheduler

TEST(preemption, a_spinner_does_not_stop_a_ping_pong_pair_on_one_scheduler) {
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto s = new_spinner(rel);
  rt.spawn(spinner_body(s));
  wait_started(*s);  // it holds the only scheduler from now on
  const std::uint64_t n = scaled(10'000, 1'000);
  oneshot<std::uint64_t> done;
  rt.spawn(counted_pinger(n, done));
  EXPECT_EQ(done.get(), n) << "round trips completed in order while the spinner spun";
  EXPECT_FALSE(s->finished.load());
  EXPECT_TRUE(preempted_since(rt, 0)) << "no preemption counted";
  rel.release();
  EXPECT_TRUE(rt.wait_for(hang_limit));
  EXPECT_TRUE(s->finished.load());
  expect_nothing_leaked(rt);
}

TEST(preemption, with_the_default_options_a_spinner_does_not_stop_a_ping_pong_pair) {
  ember::runtime_options o;
  o.schedulers = 1;
  ember::runtime rt(o);
  releaser rel;
  stats_on_failure report(rt);
  auto s = new_spinner(rel);
  rt.spawn(spinner_body(s));
  wait_started(*s);
  const std::uint64_t n = scaled(10'000, 1'000);
  oneshot<std::uint64_t> done;
  rt.spawn(counted_pinger(n, done));
  EXPECT_EQ(done.get(), n);
  // Preemption or (if the spinner's preemptions were deferred for
  // blocked_after) a spare scheduler let the pair run.
  EXPECT_TRUE(eventually([&] {
    auto st = rt.stats();
    return st.preemptions + st.spare_activations > 0;
  }));
  rel.release();
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(preemption, a_spinner_does_not_stop_a_timer_from_being_delivered_on_one_scheduler) {
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto s = new_spinner(rel);
  rt.spawn(spinner_body(s));
  wait_started(*s);
  // This process runs only if the spinner is preempted, and gets its timer
  // message only if it is preempted again after the timer fired.
  oneshot<bool> got;
  rt.spawn([got] {
    ember::send_after(milliseconds(20), ember::self(), tick{});
    got.set(ember::receive([](tick) { return true; }, ember::after(hang_limit, [] { return false; })));
  });
  EXPECT_TRUE(got.get(hang_limit + std::chrono::seconds(10))) << "the timer message was not received";
  EXPECT_FALSE(s->finished.load());
  EXPECT_TRUE(preempted_since(rt, 0)) << "no preemption counted";
  rel.release();
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(preemption, a_spinner_is_killed_by_another_process_on_one_scheduler) {
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto s = new_spinner(rel);
  pid spinner = rt.spawn(spinner_body(s));
  wait_started(*s);
  // The killer runs only while the spinner is preempted; its monitor signal
  // and its kill reach the spinner in that order.
  oneshot<exit_reason> reason;
  rt.spawn([spinner, reason] {
    auto ref = ember::monitor(spinner);
    ember::exit(spinner, exit_reason::kill());
    reason.set(await_down(ref));
  });
  exit_reason r = reason.get();
  EXPECT_EQ(r.what_kind(), kind::killed) << r;
  EXPECT_FALSE(s->finished.load()) << "the spinner's loop ended instead of the spinner being killed";
  EXPECT_FALSE(rt.is_alive(spinner));
  EXPECT_TRUE(preempted_since(rt, 0)) << "no preemption counted";
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(preemption, a_kill_from_outside_reaches_a_lone_spinner_on_one_scheduler) {
  // Nobody else is runnable: the kill itself has to interrupt the spinner.
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto s = new_spinner(rel);
  watched w = spawn_watched(rt, spinner_body(s));
  wait_started(*s);
  rt.exit(w.id, exit_reason::kill());
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), kind::killed) << r;
  EXPECT_FALSE(s->finished.load());
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(preemption, a_handler_process_spinning_in_its_handler_does_not_stop_a_pair) {
  struct spin_handler {
    std::shared_ptr<spinner_state> s;
    void operator()(ember::message& m) {
      if (m.is<go>()) {
        s->started.store(true);
        sink.store(spin_until(s->stop), std::memory_order_relaxed);
        s->finished.store(true);
      } else if (m.is<quit>()) {
        ember::stop();
      }
    }
  };
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto s = new_spinner(rel);
  watched h = spawn_watched(rt, ember::handler(spin_handler{s}));
  rt.send(h.id, go{});
  wait_started(*s);
  const std::uint64_t n = scaled(2'000, 500);
  oneshot<std::uint64_t> done;
  rt.spawn(counted_pinger(n, done));
  EXPECT_EQ(done.get(), n);
  EXPECT_TRUE(preempted_since(rt, 0)) << "no preemption counted";
  rel.release();
  rt.send(h.id, quit{});
  EXPECT_TRUE(exit_of(h).is_normal());
  EXPECT_TRUE(s->finished.load());
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

// ============================================== exits of preempted processes

TEST(preempted_exits, a_killed_preempted_process_is_not_unwound_and_its_heap_is_reclaimed) {
  destructor_counter dtors = destructor_counter::for_abandoned_stack();
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  const auto segments_before = rt.stats().heap_segments_in_use;
  auto s = new_spinner(rel);
  pid spinner = rt.spawn([s, dtors] {
    auto on_stack = dtors.make();
    std::vector<std::string> held(2000, std::string(200, 'h'));  // ~500 KiB of its heap
    s->started.store(true);
    sink.store(spin_until(s->stop) + held.size(), std::memory_order_relaxed);
    s->finished.store(true);
  });
  wait_started(*s);
  oneshot<exit_reason> reason;
  rt.spawn([spinner, reason] {
    auto ref = ember::monitor(spinner);
    ember::exit(spinner, exit_reason::kill());
    reason.set(await_down(ref));
  });
  EXPECT_EQ(reason.get().what_kind(), kind::killed);
  ASSERT_TRUE(rt.wait_for(hang_limit));
  EXPECT_EQ(dtors.value(), 0) << "a process killed while preempted is not unwound";
  EXPECT_FALSE(s->finished.load());
  EXPECT_TRUE(eventually([&] { return rt.stats().heap_segments_in_use <= segments_before; }))
      << rt.stats().heap_segments_in_use << " heap segments in use, " << segments_before << " before";
  expect_nothing_leaked(rt);
}

TEST(preempted_exits, an_untrapped_exit_signal_ends_a_preempted_process_with_its_reason) {
  destructor_counter dtors = destructor_counter::for_abandoned_stack();
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto s = new_spinner(rel);
  pid spinner = rt.spawn(spinner_body_with_guard(s, dtors));
  wait_started(*s);
  oneshot<exit_reason> reason;
  rt.spawn([spinner, reason] {
    auto ref = ember::monitor(spinner);
    ember::exit(spinner, exit_reason("custom_reason"));
    reason.set(await_down(ref));
  });
  exit_reason r = reason.get();
  EXPECT_EQ(r, exit_reason("custom_reason")) << r;
  EXPECT_FALSE(s->finished.load());
  ASSERT_TRUE(rt.wait_for(hang_limit));
  EXPECT_EQ(dtors.value(), 0) << "ended without unwinding";
  expect_nothing_leaked(rt);
}

TEST(preempted_exits, a_trapping_preempted_spinner_gets_an_exit_signal_as_a_message) {
  struct got_signal {
    pid from;
    exit_reason reason;
  };
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto t = start_endless_pair(rt, rel);  // keeps the spinner being preempted
  auto s = new_spinner(rel);
  oneshot<got_signal> got;
  watched w = spawn_watched(rt, [s, got] {
    ember::trap_exit(true);
    s->started.store(true);
    sink.store(spin_until(s->stop), std::memory_order_relaxed);
    s->finished.store(true);
    got.set(ember::receive([](ember::exit_signal e) { return got_signal{e.from, e.reason}; },
                           ember::after(hang_limit, [] { return got_signal{pid(), exit_reason("none")}; })));
  });
  wait_started(*s);
  oneshot<pid> sender;
  rt.spawn([spinner = w.id, sender] {
    ember::exit(spinner, exit_reason("go_away"));
    sender.set(ember::self());
  });
  pid from = sender.get();
  // Let the spinner be preempted and resumed a few times with the signal
  // queued (the pair never is: it yields by itself).
  const auto p0 = preemptions(rt);
  wait_until([&] { return preemptions(rt) >= p0 + 3; }, "the spinner was preempted again");
  EXPECT_FALSE(w.reason.wait_for(std::chrono::seconds(0)) == std::future_status::ready)
      << "the trapping spinner died";
  s->stop.store(true);
  exit_reason r = exit_of(w);
  EXPECT_TRUE(r.is_normal()) << r;
  got_signal g = got.get();
  EXPECT_EQ(g.from, from);
  EXPECT_EQ(g.reason, exit_reason("go_away")) << g.reason;
  rel.release();
  (void)t;
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(preempted_exits, a_killed_preempted_process_holding_messages_fires_its_links_and_monitors) {
  struct link_result {
    pid from;
    kind k;
  };
  struct down_result {
    pid who;
    kind k;
  };
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto s = new_spinner(rel);
  oneshot<pid> spinner_id;
  oneshot<link_result> trapped;
  // T traps exits and is linked to the spinner S from its spawn; it fills
  // S's mailbox, of which S takes 3 messages into its heap and leaves 5.
  rt.spawn([s, spinner_id, trapped] {
    ember::trap_exit(true);
    pid spinner = ember::spawn_link([s] {
      ember::receive([](go) {});
      std::vector<std::string> taken;
      for (int i = 0; i < 3; ++i) ember::receive([&](std::string m) { taken.push_back(std::move(m)); });
      s->started.store(true);
      sink.store(spin_until(s->stop) + taken.size(), std::memory_order_relaxed);
      s->finished.store(true);
    });
    for (int i = 0; i < 8; ++i) ember::send(spinner, std::string(1000, char('a' + i)));
    spinner_id.set(spinner);
    trapped.set(ember::receive(
        ember::when([spinner](const ember::exit_signal& e) { return e.from == spinner; },
                    [](ember::exit_signal e) { return link_result{e.from, e.reason.what_kind()}; }),
        ember::after(hang_limit, [] { return link_result{pid(), kind::normal}; })));
  });
  pid spinner = spinner_id.get();
  // M monitors S; L links to S without trapping exits. Both before S starts
  // spinning (S takes their signals in while it waits for go).
  oneshot<void> monitoring;
  oneshot<down_result> downed;
  rt.spawn([spinner, monitoring, downed] {
    auto ref = ember::monitor(spinner);
    monitoring.set();
    downed.set(ember::receive(
        ember::when([ref](const ember::down& d) { return d.ref == ref; },
                    [](ember::down d) { return down_result{d.who, d.reason.what_kind()}; }),
        ember::after(hang_limit, [] { return down_result{pid(), kind::normal}; })));
  });
  oneshot<void> linked;
  watched linker = spawn_watched(rt, [spinner, linked] {
    ember::link(spinner);
    linked.set();
    ember::receive([](quit) {});
  });
  monitoring.get();
  linked.get();
  rt.send(spinner, go{});
  wait_started(*s);
  // Killed from a process: on one scheduler it runs only while S is preempted.
  rt.spawn([spinner] { ember::exit(spinner, exit_reason::kill()); });

  link_result l = trapped.get();
  EXPECT_EQ(l.from, spinner);
  EXPECT_EQ(l.k, kind::killed) << "the trapping linked process sees exit_signal with killed";
  down_result d = downed.get();
  EXPECT_EQ(d.who, spinner);
  EXPECT_EQ(d.k, kind::killed) << "the monitor sees killed";
  exit_reason lr = exit_of(linker);
  EXPECT_EQ(lr.what_kind(), kind::killed) << "a linked process that does not trap dies with killed: " << lr;
  EXPECT_FALSE(s->finished.load());
  EXPECT_FALSE(rt.is_alive(spinner));
  EXPECT_TRUE(preempted_since(rt, 0)) << "no preemption counted";
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);  // and, under ASan, the 5 unread messages were freed
}

TEST(preempted_exits, a_preempted_process_passing_its_heap_cap_ends_with_heap_limit) {
  const std::uint64_t spin = iterations_for(milliseconds(30));
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto t = start_endless_pair(rt, rel);
  auto others_ran = std::make_shared<std::atomic<std::uint64_t>>(0);
  auto spun = std::make_shared<std::atomic<bool>>(false);
  ember::spawn_options o;
  o.max_heap_bytes = 1024 * 1024;
  const auto p0 = preemptions(rt);
  watched w = spawn_watched(
      rt,
      [t, others_ran, spun, spin] {
        std::vector<char*> held;
        for (int i = 0; i < 8; ++i) held.push_back(new char[64 * 1024]);  // 512 KiB, under the cap
        const std::uint64_t c0 = t->hops.load();
        sink.store(spin_for(spin) + held.size(), std::memory_order_relaxed);  // preempted here
        others_ran->store(t->hops.load() - c0);
        spun->store(true);
        for (int i = 0; i < 1024; ++i) {  // up to 64 MiB: far past the cap
          char* p = new char[64 * 1024];
          p[0] = char(i);
          asm volatile("" : : "g"(p) : "memory");
        }
        ember::exit("survived its heap limit");
      },
      o);
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), kind::heap_limit) << r;
  EXPECT_TRUE(spun->load());
  EXPECT_GT(others_ran->load(), 0u) << "the process was not preempted while it spun";
  EXPECT_TRUE(preempted_since(rt, p0)) << "no preemption counted";
  rel.release();
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

// ===================================== preempted computations are unchanged

std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  return h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2));
}
std::uint64_t bits_of(double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}
std::uint64_t bits_of(long double d) {  // the 80 significant bits only
  std::uint64_t lo = 0;
  std::uint16_t hi = 0;
  std::memcpy(&lo, &d, sizeof lo);
  std::memcpy(&hi, reinterpret_cast<const char*>(&d) + 8, sizeof hi);
  return mix(lo, hi);
}

// Each kernel keeps many values in registers for a long loop without calls;
// a register (or flag, or control word) not restored exactly after a
// preemption changes its result. Accumulators never forget a difference.
__attribute__((noipa)) std::uint64_t integer_kernel(std::uint64_t n) {
  std::uint64_t a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8;
  for (std::uint64_t i = 0; i < n; ++i) {
    a = a * 6364136223846793005ull + 1442695040888963407ull;
    b ^= a >> 17;
    c += b * 31;
    d = ((d ^ c) << 13) | ((d ^ c) >> 51);
    e += d >> 3;
    f ^= e * 0x9e3779b97f4a7c15ull;
    g += f ^ (f >> 29);
    h = h * 33 + (g < a ? 1 : 2);
  }
  return mix(mix(mix(mix(mix(mix(mix(a, b), c), d), e), f), g), h);
}

template <class F>
__attribute__((always_inline)) inline std::uint64_t floating_loop(std::uint64_t n) {
  F x = 1, y = 2, z = F(0.3), w = F(0.7), sx = 0, sy = 0, sz = 0, sw = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    x = x * F(1.0000001) + F(0.5);
    y = std::sqrt(y + x);
    z = F(3.99) * z * (F(1) - z);  // chaotic: any difference grows
    w = w * F(0.999) + z / (y + F(1));
    sx += x * F(1e-9);
    sy += y;
    sz += z;
    sw += w;
  }
  std::uint64_t h = 0;
  for (F v : {x, y, z, w, sx, sy, sz, sw}) h = mix(h, bits_of(v));
  return h;
}
__attribute__((noipa)) std::uint64_t double_kernel(std::uint64_t n) { return floating_loop<double>(n); }
__attribute__((noipa)) std::uint64_t x87_kernel(std::uint64_t n) { return floating_loop<long double>(n); }

// The double kernel under FE_UPWARD: the process's rounding mode (MXCSR)
// must survive its preemptions.
__attribute__((noipa)) std::uint64_t upward_double_kernel(std::uint64_t n) {
  const int old = std::fegetround();
  std::fesetround(FE_UPWARD);
  std::uint64_t r = double_kernel(n);
  std::fesetround(old);
  return r;
}

typedef float v4f __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));

// Four chaotic (logistic map) vectors and four sums: every lane matters.
template <class V, class M>
__attribute__((always_inline)) inline std::uint64_t vector_loop(std::uint64_t n, const M& rotate) {
  constexpr int lanes = int(sizeof(V) / sizeof(float));
  V a = {}, b = {}, c = {}, d = {}, sa = {}, sb = {}, sc = {}, sd = {}, r = {}, one = {};
  for (int i = 0; i < lanes; ++i) {
    a[i] = 0.11f + 0.01f * float(i);
    b[i] = 0.23f + 0.02f * float(i);
    c[i] = 0.37f + 0.015f * float(i);
    d[i] = 0.51f + 0.005f * float(i);
    r[i] = 3.99f - 0.001f * float(i);
    one[i] = 1.0f;
  }
  for (std::uint64_t i = 0; i < n; ++i) {
    a = r * a * (one - a);
    b = r * b * (one - b);
    c = r * c * (one - c);
    d = r * d * (one - d);
    sa += a;
    sb += b;
    sc += c;
    sd += d;
    if ((i & 1023) == 1023) {
      a = __builtin_shuffle(a, rotate);
      c = __builtin_shuffle(c, rotate);
    }
  }
  std::uint64_t h = 0;
  for (const V& v : {a, b, c, d, sa, sb, sc, sd}) {
    for (int i = 0; i < lanes; ++i) {
      std::uint32_t u;
      float f = v[i];
      std::memcpy(&u, &f, sizeof u);
      h = mix(h, u);
    }
  }
  return h;
}
__attribute__((noipa)) std::uint64_t sse_kernel(std::uint64_t n) {
  return vector_loop<v4f>(n, v4i{1, 2, 3, 0});
}
// 32-byte vectors on the baseline target: pairs of SSE registers.
__attribute__((noipa)) std::uint64_t vector32_kernel(std::uint64_t n) {
  return vector_loop<v8f>(n, v8i{1, 2, 3, 4, 5, 6, 7, 0});
}
// The same in AVX registers (the upper halves of ymm must survive).
__attribute__((noipa, target("avx"))) std::uint64_t avx_kernel(std::uint64_t n) {
  return vector_loop<v8f>(n, v8i{1, 2, 3, 4, 5, 6, 7, 0});
}

bool always() { return true; }
bool has_avx() { return __builtin_cpu_supports("avx"); }

struct kernel {
  const char* name;
  std::uint64_t (*fn)(std::uint64_t);
  std::uint64_t n;  // iterations: about 50 to 100 ms in a release build
  bool (*available)();
};
void PrintTo(const kernel& k, std::ostream* os) { *os << k.name; }

const kernel kernels[] = {
    {"integer", integer_kernel, scaled(30'000'000, 5'000'000), always},
    {"double", double_kernel, scaled(3'000'000, 600'000), always},
    {"double_rounding_upward", upward_double_kernel, scaled(3'000'000, 600'000), always},
    {"x87_long_double", x87_kernel, scaled(2'000'000, 400'000), always},
    {"sse", sse_kernel, scaled(12'000'000, 1'500'000), always},
    {"vector32", vector32_kernel, scaled(8'000'000, 1'000'000), always},
    {"avx", avx_kernel, scaled(8'000'000, 1'000'000), has_avx},
};

class preempted_computation : public ::testing::TestWithParam<kernel> {};

TEST_P(preempted_computation, equals_the_same_computation_on_the_main_thread) {
  const kernel k = GetParam();
  if (!k.available()) GTEST_SKIP() << k.name << " is not supported by this CPU";
  const std::uint64_t expected = k.fn(k.n);

  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  // Two spinners and a ping-pong pair share the scheduler with the
  // computation, which is therefore preempted many times.
  for (int i = 0; i < 2; ++i) {
    auto s = new_spinner(rel);
    rt.spawn(spinner_body(s));
    wait_started(*s);
  }
  auto t = start_endless_pair(rt, rel);
  const auto p0 = preemptions(rt);
  struct result {
    std::uint64_t value;
    std::uint64_t others_ran;  // pair messages handled while it computed
  };
  oneshot<result> got;
  rt.spawn([k, t, got] {
    const std::uint64_t c0 = t->hops.load();
    const std::uint64_t v = k.fn(k.n);
    got.set(result{v, t->hops.load() - c0});
  });
  result r = got.get();
  EXPECT_EQ(r.value, expected) << k.name << ": the preempted computation differs";
  EXPECT_GT(r.others_ran, 0u) << "the computation was never preempted";
  EXPECT_TRUE(preempted_since(rt, p0)) << "no preemption counted";
  rel.release();
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

INSTANTIATE_TEST_SUITE_P(kernels, preempted_computation, ::testing::ValuesIn(kernels),
                         [](const ::testing::TestParamInfo<kernel>& info) {
                           return std::string(info.param.name);
                         });

// The rounding-mode kernel is a real test of the mode: its result differs.
TEST(preempted_computation_kernels, the_rounding_mode_changes_the_double_kernel) {
  const std::uint64_t n = 100'000;
  EXPECT_NE(upward_double_kernel(n), double_kernel(n));
  EXPECT_EQ(std::fegetround(), FE_TONEAREST);
}

// ========================================== many spinners and traffic, 2 cores

struct token {
  std::uint64_t lap;
};

// A ring of `size` processes: the coordinator sends a token round `laps`
// times; each member counts the token in *hops and passes it on.
auto ring_body(int size, std::uint64_t laps, std::shared_ptr<std::atomic<std::uint64_t>> hops,
               oneshot<std::uint64_t> done) {
  return [size, laps, hops, done] {
    std::vector<pid> members;
    pid next = ember::self();
    for (int i = 0; i < size; ++i) {
      next = ember::spawn([next, hops] {
        for (bool on = true; on;) {
          ember::receive(
              [&](token t) {
                hops->fetch_add(1);
                ember::send(next, t);
              },
              [&](quit) { on = false; });
        }
      });
      members.push_back(next);
    }
    std::uint64_t completed = 0;
    for (std::uint64_t lap = 0; lap < laps; ++lap) {
      ember::send(next, token{lap});
      ember::receive([&](token t) {
        if (t.lap == lap) ++completed;
      });
    }
    for (pid m : members) ember::send(m, quit{});
    done.set(completed);
  };
}

TEST(preemption_stress, eight_spinners_and_message_traffic_on_two_schedulers) {
  ember::runtime rt(preempting(2));
  releaser rel;
  stats_on_failure report(rt);
  constexpr int spinner_count = 8;
  constexpr int ring_size = 8;
  constexpr int pair_count = 4;
  const std::uint64_t laps = scaled(200, 30);
  const std::uint64_t trips = scaled(1'000, 150);

  std::vector<std::shared_ptr<spinner_state>> spinners;
  std::vector<watched> watches;
  for (int i = 0; i < spinner_count; ++i) {
    spinners.push_back(new_spinner(rel));
    watches.push_back(spawn_watched(rt, spinner_body(spinners.back())));
  }
  for (auto& s : spinners) wait_started(*s);

  auto hops = std::make_shared<std::atomic<std::uint64_t>>(0);
  oneshot<std::uint64_t> laps_done;
  rt.spawn(ring_body(ring_size, laps, hops, laps_done));
  std::vector<oneshot<std::uint64_t>> trips_done(pair_count);
  for (auto& d : trips_done) rt.spawn(counted_pinger(trips, d));

  EXPECT_EQ(laps_done.get(), laps);
  EXPECT_EQ(hops->load(), laps * ring_size);
  for (auto& d : trips_done) EXPECT_EQ(d.get(), trips);

  for (auto& w : watches) rt.exit(w.id, exit_reason::kill());
  for (auto& w : watches) {
    exit_reason r = exit_of(w);
    EXPECT_EQ(r.what_kind(), kind::killed) << w.id.to_string() << ": " << r;
  }
  for (auto& s : spinners) EXPECT_FALSE(s->finished.load());
  EXPECT_TRUE(preempted_since(rt, 0)) << "no preemption counted";
  EXPECT_TRUE(rt.wait_for(hang_limit));
  EXPECT_EQ(rt.stats().exited, rt.stats().spawned);
  expect_nothing_leaked(rt);
}

// ============================================== libc interrupted at random

std::uint64_t splitmix(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
std::uint64_t hash_bytes(const void* p, std::size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
int compare_ints(const void* a, const void* b) {
  int x = *static_cast<const int*>(a), y = *static_cast<const int*>(b);
  return (x > y) - (x < y);
}
std::size_t own_heap_bytes() { return ember::process_info(ember::self())->heap_bytes; }

struct libc_result {
  std::uint64_t checksum = 0;
  std::uint64_t heap_mismatches = 0;  // allocations that went to the wrong heap
};

// A deterministic mix of libc and libstdc++ calls on buffers, with our own
// code in between (where preemption may happen). In a process it also
// checks that std::string's allocations go to its own heap, or (inside a
// global_heap_scope, which must survive preemption) not.
__attribute__((noipa)) libc_result libc_worker(std::uint64_t seed, int iterations, bool in_process) {
  libc_result res;
  std::uint64_t rng = seed;
  std::uint64_t h = seed;
  char a[4096];
  char b[4096];
  int ints[512];
  struct slot {
    unsigned char* p = nullptr;
    std::size_t n = 0;
  } slots[16];
  for (int it = 0; it < iterations; ++it) {
    const std::uint64_t r = splitmix(rng);
    switch (r % 9) {
      case 0: {  // memcpy
        std::size_t len = splitmix(rng) % sizeof a;
        for (std::size_t i = 0; i < len; ++i) a[i] = char(splitmix(rng));
        std::memcpy(b, a, len);
        h = mix(h, hash_bytes(b, len));
        break;
      }
      case 1: {  // overlapping memmove
        for (std::size_t i = 0; i < sizeof a; i += 8) {
          std::uint64_t v = splitmix(rng);
          std::memcpy(a + i, &v, 8);
        }
        std::size_t off = splitmix(rng) % 1024, len = splitmix(rng) % 3000;
        if (splitmix(rng) & 1) {
          std::memmove(a + off, a, len);
        } else {
          std::memmove(a, a + off, len);
        }
        h = mix(h, hash_bytes(a, sizeof a));
        break;
      }
      case 2: {  // strlen
        std::size_t len = splitmix(rng) % 2000;
        for (std::size_t i = 0; i < len; ++i) a[i] = char('a' + splitmix(rng) % 26);
        a[len] = '\0';
        h = mix(h, std::strlen(a));
        break;
      }
      case 3: {  // strcmp
        std::size_t len = 1 + splitmix(rng) % 1500;
        for (std::size_t i = 0; i < len; ++i) a[i] = char('a' + splitmix(rng) % 4);
        a[len] = '\0';
        std::memcpy(b, a, len + 1);
        if (splitmix(rng) & 1) b[splitmix(rng) % len] = char('a' + splitmix(rng) % 4);
        int c = std::strcmp(a, b);
        h = mix(h, std::uint64_t((c > 0) - (c < 0) + 1));
        break;
      }
      case 4: {  // snprintf
        int n = std::snprintf(b, sizeof b, "%llu:%x:%.6f:%s:%08d", (unsigned long long)splitmix(rng),
                              unsigned(splitmix(rng)), double(splitmix(rng) % 1000000) / 7.0, "ember",
                              int(splitmix(rng) % 100000));
        h = mix(h, std::uint64_t(n));
        h = mix(h, hash_bytes(b, std::size_t(std::max(n, 0))));
        break;
      }
      case 5: {  // qsort, calling back into our code
        std::size_t count = splitmix(rng) % 512;
        for (std::size_t i = 0; i < count; ++i) ints[i] = int(splitmix(rng) % 100000) - 50000;
        std::qsort(ints, count, sizeof(int), compare_ints);
        h = mix(h, hash_bytes(ints, count * sizeof(int)));
        h = mix(h, std::is_sorted(ints, ints + count) ? 1 : 2);
        break;
      }
      case 6: {  // malloc / free, directly
        slot& s = slots[splitmix(rng) % 16];
        if (s.p) {
          h = mix(h, hash_bytes(s.p, s.n));
          std::free(s.p);
          s.p = nullptr;
        } else {
          s.n = 1 + splitmix(rng) % 20000;
          s.p = static_cast<unsigned char*>(std::malloc(s.n));
          if (!s.p) std::abort();
          unsigned char v = static_cast<unsigned char>(splitmix(rng));
          for (std::size_t i = 0; i < s.n; ++i) s.p[i] = static_cast<unsigned char>(v + i);
        }
        break;
      }
      case 7: {  // std::string in the process's heap
        const std::size_t before = in_process ? own_heap_bytes() : 0;
        std::string s;
        s.reserve(2048);
        for (std::uint64_t k = 0, m = splitmix(rng) % 64; k < m; ++k) {
          s += std::to_string(splitmix(rng) % 100000);
          s.append(splitmix(rng) % 50, char('a' + k % 26));
        }
        if (in_process && own_heap_bytes() < before + 2048) ++res.heap_mismatches;
        h = mix(h, hash_bytes(s.data(), s.size()));
        break;
      }
      case 8: {  // std::string in the global heap
        const std::size_t before = in_process ? own_heap_bytes() : 0;
        ember::global_heap_scope global;
        std::string s;
        s.reserve(2048);
        for (std::uint64_t k = 0, m = splitmix(rng) % 64; k < m; ++k) {
          s += std::to_string(splitmix(rng) % 100000);
          s.append(splitmix(rng) % 50, char('A' + k % 26));
        }
        if (in_process && own_heap_bytes() != before) ++res.heap_mismatches;
        h = mix(h, hash_bytes(s.data(), s.size()));
        break;
      }
    }
  }
  for (slot& s : slots) {
    if (s.p) {
      h = mix(h, hash_bytes(s.p, s.n));
      std::free(s.p);
    }
  }
  res.checksum = h;
  return res;
}

class libc_under_preemption : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(libc_under_preemption, results_equal_the_main_thread_and_everything_finishes) {
  constexpr int workers = 4;
  const int iterations = int(scaled(6'000, 1'500));
  const std::uint64_t seed = GetParam();
  std::vector<std::uint64_t> expected;
  for (int i = 0; i < workers; ++i) {
    expected.push_back(libc_worker(seed * 1000 + std::uint64_t(i), iterations, false).checksum);
  }

  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  for (int i = 0; i < 2; ++i) {
    auto s = new_spinner(rel);
    rt.spawn(spinner_body(s));
    wait_started(*s);
  }
  auto t = start_endless_pair(rt, rel);
  struct result {
    libc_result r;
    std::uint64_t others_ran;
  };
  std::vector<oneshot<result>> got(workers);
  for (int i = 0; i < workers; ++i) {
    rt.spawn([w = seed * 1000 + std::uint64_t(i), iterations, t, done = got[std::size_t(i)]] {
      const std::uint64_t c0 = t->hops.load();
      libc_result r = libc_worker(w, iterations, true);
      done.set(result{r, t->hops.load() - c0});
    });
  }
  for (int i = 0; i < workers; ++i) {
    result r = got[std::size_t(i)].get();
    EXPECT_EQ(r.r.checksum, expected[std::size_t(i)]) << "worker " << i << " (seed " << seed << ")";
    EXPECT_EQ(r.r.heap_mismatches, 0u) << "worker " << i << ": allocations went to the wrong heap";
    EXPECT_GT(r.others_ran, 0u) << "worker " << i << " was never interrupted";
  }
  EXPECT_TRUE(preempted_since(rt, 0)) << "no preemption counted";
  rel.release();
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

INSTANTIATE_TEST_SUITE_P(seeds, libc_under_preemption, ::testing::Values(1u, 2u, 3u, 4u),
                         [](const ::testing::TestParamInfo<std::uint64_t>& info) {
                           return "seed_" + std::to_string(info.param);
                         });

// ===================================================== no_preempt, preemptible

TEST(no_preempt, preemptible_is_false_inside_a_guard_and_true_outside_in_a_process) {
  ember::runtime rt(preempting(1));
  stats_on_failure report(rt);
  struct flags {
    bool before, inside, nested, after_inner, after;
  };
  flags f = in_process(rt, [] {
    flags r{};
    r.before = ember::preemptible();
    {
      ember::no_preempt outer;
      r.inside = ember::preemptible();
      {
        ember::no_preempt inner;
        r.nested = ember::preemptible();
      }
      r.after_inner = ember::preemptible();
    }
    r.after = ember::preemptible();
    return r;
  });
  EXPECT_TRUE(f.before);
  EXPECT_FALSE(f.inside);
  EXPECT_FALSE(f.nested);
  EXPECT_FALSE(f.after_inner) << "guards nest: the outer one still holds";
  EXPECT_TRUE(f.after);
  EXPECT_TRUE(rt.wait_for(hang_limit));
}

TEST(no_preempt, outside_a_process_a_guard_does_nothing_and_preemptible_is_false) {
  EXPECT_FALSE(ember::preemptible());
  {
    ember::no_preempt guard;
    EXPECT_FALSE(ember::preemptible());
  }
  EXPECT_FALSE(ember::preemptible());
}

TEST(no_preempt, a_guard_belongs_to_its_process_not_to_the_thread) {
  // A holds a guard across a receive; B runs meanwhile on the same (only)
  // thread and is preemptible; A is still guarded when it resumes.
  ember::runtime rt(preempting(1));
  stats_on_failure report(rt);
  struct flags {
    bool a_before, b, a_after;
  };
  flags f = in_process(rt, [] {
    flags r{};
    ember::no_preempt guard;
    r.a_before = ember::preemptible();
    pid me = ember::self();
    ember::spawn([me] { ember::send(me, ember::preemptible()); });
    r.b = ember::receive([](bool b) { return b; });
    r.a_after = ember::preemptible();
    return r;
  });
  EXPECT_FALSE(f.a_before);
  EXPECT_TRUE(f.b) << "the guard of another process leaked into this one";
  EXPECT_FALSE(f.a_after);
  EXPECT_TRUE(rt.wait_for(hang_limit));
}

struct spin_observation {
  bool deferred;                   // the runtime deferred a preemption during the guard
  std::uint64_t during_guard;      // pair messages handled during the guarded spin
  std::uint64_t at_guard_end;      // ... between the guard's last read and the end of the guard
  std::uint64_t during_unguarded;  // ... during the unguarded spin
};

// Spins inside a no_preempt guard for `n` iterations and then until the
// runtime has deferred a preemption of it (read inside the guard, where
// the process cannot be preempted); then spins unguarded for `n` iterations
// and then until the pair (the only other runnable process) has moved.
// Reports how far the pair got meanwhile. The "until" loops wait for an
// event, with a generous limit that only catches a runtime that never
// preempts.
spin_observation guarded_then_unguarded(ember::runtime& rt, const traffic& t, std::uint64_t n) {
  const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  spin_observation o{};
  std::uint64_t a1;
  {
    ember::no_preempt guard;
    const std::uint64_t a0 = t.hops.load();
    const std::uint64_t d0 = rt.stats().preempt_deferred;
    sink.store(spin_for(n), std::memory_order_relaxed);
    while (!(o.deferred = rt.stats().preempt_deferred > d0) && std::chrono::steady_clock::now() < limit)
      sink.store(spin_for(n / 8), std::memory_order_relaxed);
    a1 = t.hops.load();
    o.during_guard = a1 - a0;
  }
  const std::uint64_t b0 = t.hops.load();
  o.at_guard_end = b0 - a1;
  sink.store(spin_for(n), std::memory_order_relaxed);
  while (t.hops.load() == b0 && std::chrono::steady_clock::now() < limit)
    sink.store(spin_for(n / 8), std::memory_order_relaxed);
  o.during_unguarded = t.hops.load() - b0;
  return o;
}

TEST(no_preempt, no_other_process_runs_during_a_guarded_spin_but_others_do_during_an_unguarded_one) {
  const std::uint64_t n = iterations_for(milliseconds(60));
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto t = start_endless_pair(rt, rel);
  const auto p0 = preemptions(rt);
  auto o = in_process(rt, [rtp = &rt, t, n] { return guarded_then_unguarded(*rtp, *t, n); });
  EXPECT_TRUE(o.deferred) << "no preemption was ever deferred during the guard";
  EXPECT_EQ(o.during_guard, 0u) << "a process ran while the guarded one spun";
  EXPECT_GT(o.during_unguarded, 0u) << "nobody ran while it spun unguarded";
  EXPECT_TRUE(preempted_since(rt, p0)) << "no preemption counted";
  rel.release();
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(no_preempt, a_preemption_deferred_by_a_guard_happens_when_the_guard_ends) {
  const std::uint64_t n = iterations_for(milliseconds(60));
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto t = start_endless_pair(rt, rel);
  auto o = in_process(rt, [rtp = &rt, t, n] { return guarded_then_unguarded(*rtp, *t, n); });
  ASSERT_TRUE(o.deferred) << "no preemption was ever deferred during the guard";
  EXPECT_EQ(o.during_guard, 0u);
  EXPECT_GT(o.at_guard_end, 0u) << "the process did not yield when its guard ended";
  rel.release();
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(not_preemptible, preemptible_is_false_in_a_process_spawned_with_preemptible_false) {
  ember::runtime rt(preempting(1));
  stats_on_failure report(rt);
  ember::spawn_options o;
  o.preemptible = false;
  struct flags {
    bool before, inside, after;
  };
  flags f = in_process(
      rt,
      [] {
        flags r{};
        r.before = ember::preemptible();
        {
          ember::no_preempt guard;
          r.inside = ember::preemptible();
        }
        r.after = ember::preemptible();
        return r;
      },
      o);
  EXPECT_FALSE(f.before);
  EXPECT_FALSE(f.inside);
  EXPECT_FALSE(f.after) << "the end of a guard does not make the process preemptible";
  // Its children are preemptible unless spawned so.
  EXPECT_TRUE(in_process(rt, [] { return ember::preemptible(); }));
  EXPECT_TRUE(rt.wait_for(hang_limit));
}

TEST(not_preemptible, no_other_process_runs_while_a_non_preemptible_process_spins) {
  const std::uint64_t n = iterations_for(milliseconds(60));
  ember::runtime rt(preempting(1));
  releaser rel;
  stats_on_failure report(rt);
  auto t = start_endless_pair(rt, rel);
  ember::spawn_options o;
  o.preemptible = false;
  auto moved = in_process(
      rt,
      [t, n] {
        const std::uint64_t c0 = t->hops.load();
        sink.store(spin_for(n), std::memory_order_relaxed);
        return t->hops.load() - c0;
      },
      o);
  EXPECT_EQ(moved, 0u) << "a process ran while the non-preemptible one spun";
  rel.release();
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

// ============================================================ time_slice = 0

TEST(time_slice_zero, a_spinner_keeps_its_scheduler_until_it_ends) {
  const std::uint64_t n = iterations_for(milliseconds(50));
  ember::runtime rt(cooperative_only(1));
  stats_on_failure report(rt);
  auto sequence = std::make_shared<std::atomic<int>>(0);
  auto started = std::make_shared<std::atomic<bool>>(false);
  oneshot<int> spinner_ended;
  rt.spawn([n, sequence, started, spinner_ended] {
    started->store(true);
    sink.store(spin_for(n), std::memory_order_relaxed);
    spinner_ended.set(sequence->fetch_add(1));
  });
  wait_until([&] { return started->load(); }, "the bounded spinner started");
  oneshot<int> pair_started;
  oneshot<std::uint64_t> trips;
  rt.spawn([sequence, pair_started, trips] {
    pair_started.set(sequence->fetch_add(1));
    counted_pinger(100, trips)();
  });
  const int ended_at = spinner_ended.get();
  const int pair_at = pair_started.get();
  EXPECT_LT(ended_at, pair_at) << "the pair ran before the spinner ended";
  EXPECT_EQ(trips.get(), 100u);
  EXPECT_TRUE(rt.wait_for(hang_limit));
  EXPECT_EQ(rt.stats().preemptions, 0u);
  EXPECT_EQ(rt.stats().preempt_signals, 0u);
  expect_nothing_leaked(rt);
}

TEST(time_slice_zero, preemptible_is_false_in_every_process) {
  ember::runtime rt(cooperative_only(1));
  stats_on_failure report(rt);
  EXPECT_FALSE(in_process(rt, [] { return ember::preemptible(); }));
  EXPECT_TRUE(rt.wait_for(hang_limit));
}

TEST(time_slice_zero, yields_by_reductions_are_counted_apart_from_preemptions) {
  ember::runtime_options o = cooperative_only(1);
  o.reductions = 1000;
  ember::runtime rt(o);
  stats_on_failure report(rt);
  in_process(rt, [] {
    for (int i = 0; i < 100'000; ++i) ember::check();
  });
  EXPECT_TRUE(rt.wait_for(hang_limit));
  EXPECT_GE(rt.stats().reduction_yields, 90u);  // one per 1,000 checks
  EXPECT_EQ(rt.stats().preemptions, 0u);
}

// ========================================================= option validation

void expect_invalid(const ember::runtime_options& o, const char* option, const std::string& value) {
  try {
    ember::runtime rt(o);
    ADD_FAILURE() << "accepted " << option << " = " << value;
  } catch (const ember::error& e) {
    EXPECT_EQ(e.code(), ember::errc::invalid_argument) << option << " = " << value << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(option), std::string::npos) << e.what();
  }
}

TEST(preemption_options, a_time_slice_outside_0_or_10us_to_1s_is_an_invalid_argument) {
  for (microseconds bad : {microseconds(-1), microseconds(1), microseconds(5), microseconds(9),
                           microseconds(1'000'001), microseconds(2'000'000)}) {
    ember::runtime_options o;
    o.schedulers = 1;
    o.time_slice = bad;
    expect_invalid(o, "time_slice", std::to_string(bad.count()) + "us");
  }
}

TEST(preemption_options, a_blocked_after_outside_0_or_100us_to_1h_is_an_invalid_argument) {
  for (microseconds bad : {microseconds(-1), microseconds(1), microseconds(50), microseconds(99),
                           std::chrono::duration_cast<microseconds>(std::chrono::hours(1)) + microseconds(1),
                           std::chrono::duration_cast<microseconds>(std::chrono::hours(2))}) {
    ember::runtime_options o;
    o.schedulers = 1;
    o.blocked_after = bad;
    expect_invalid(o, "blocked_after", std::to_string(bad.count()) + "us");
  }
}

TEST(preemption_options, zero_and_the_bounds_are_accepted) {
  for (microseconds ok : {microseconds(0), microseconds(10), microseconds(100), microseconds(1'000'000)}) {
    ember::runtime_options o;
    o.schedulers = 1;
    o.time_slice = ok;
    EXPECT_NO_THROW({ ember::runtime rt(o); }) << "time_slice = " << ok.count() << "us";
  }
  for (microseconds ok : {microseconds(0), microseconds(100), microseconds(2000),
                          std::chrono::duration_cast<microseconds>(std::chrono::hours(1))}) {
    ember::runtime_options o;
    o.schedulers = 1;
    o.blocked_after = ok;
    EXPECT_NO_THROW({ ember::runtime rt(o); }) << "blocked_after = " << ok.count() << "us";
  }
}

TEST(preemption_options, the_defaults_are_100us_and_2ms) {
  ember::runtime_options o;
  EXPECT_EQ(o.time_slice, microseconds(100));
  EXPECT_EQ(o.blocked_after, microseconds(2000));
  ember::spawn_options s;
  EXPECT_TRUE(s.preemptible);
}

// ========================================================= blocked schedulers

// A pipe whose reader blocks until the test opens the gate (once).
class gate_pipe {
 public:
  gate_pipe() {
    if (::pipe(fd_) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  }
  ~gate_pipe() {
    open();
    ::close(fd_[0]);
    ::close(fd_[1]);
  }
  gate_pipe(const gate_pipe&) = delete;
  gate_pipe& operator=(const gate_pipe&) = delete;
  int read_end() const { return fd_[0]; }
  void open() {
    if (opened_.exchange(true)) return;
    char c = 'g';
    while (::write(fd_[1], &c, 1) < 0 && errno == EINTR) {
    }
  }

 private:
  int fd_[2];
  std::atomic<bool> opened_{false};
};

ember::runtime_options one_scheduler_blocked_after_1ms() {
  ember::runtime_options o;
  o.schedulers = 1;
  o.blocked_after = microseconds(1000);
  return o;
}

// Reads one byte from fd, retrying on EINTR; the result of read().
long read_one(int fd) {
  char c = 0;
  ssize_t r;
  do {
    r = ::read(fd, &c, 1);
  } while (r < 0 && errno == EINTR);
  return long(r);
}

struct blocker_state {
  std::atomic<bool> blocking{false};  // about to call read()
  std::atomic<bool> returned{false};  // read() returned
};

// In each test below, the blocker blocks in read() on a pipe until the test
// opens the gate, which it does only after the pairs it waits for finished:
// while they run, the only scheduler is stuck in the blocker's turn, so they
// can finish only on a spare scheduler. No timing assumption: a failure to
// take over is a hang, turned into a failure after the limit. Where the
// blocker spawns the pairs itself, it does so under no_preempt, so that it
// cannot yield (a deferred preemption at the end of spawn) and let them run
// on its own scheduler before it blocks.

TEST(blocked_scheduler, processes_in_the_run_queue_of_a_scheduler_blocked_in_a_system_call_run_elsewhere) {
  gate_pipe gate;  // outlives the runtime
  ember::runtime rt(one_scheduler_blocked_after_1ms());
  releaser rel;
  stats_on_failure report(rt);
  rel.on_release([&gate] { gate.open(); });
  const std::uint64_t n = 1000;
  auto st = std::make_shared<blocker_state>();
  oneshot<std::uint64_t> queued, next;
  oneshot<long> read_result;
  // Spawned children go to the spawner's `next` slot; the second one
  // displaces the first to the run queue, where a thief can take it.
  rt.spawn([fd = gate.read_end(), n, queued, next, st, read_result] {
    long r;
    {
      ember::no_preempt guard;  // no yield between the spawns and the read
      ember::spawn(counted_pinger(n, queued));
      ember::spawn(counted_pinger(n, next));
      st->blocking.store(true);
      r = read_one(fd);
    }
    st->returned.store(true);
    read_result.set(r);
  });
  EXPECT_EQ(queued.get(hang_limit, "the pair queued behind the blocked process"), n);
  EXPECT_TRUE(st->blocking.load());
  EXPECT_FALSE(st->returned.load()) << "the blocker returned before the gate opened";
  EXPECT_GE(rt.stats().schedulers_blocked, 1u);
  EXPECT_GE(rt.stats().spare_activations, 1u);
  gate.open();
  EXPECT_EQ(read_result.get(), 1);
  EXPECT_EQ(next.get(), n);
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(blocked_scheduler, the_process_a_blocked_process_spawned_last_runs_elsewhere) {
  // The child is in the blocked scheduler's `next` slot: runnable, and it
  // must not wait for the system call to return.
  gate_pipe gate;
  ember::runtime rt(one_scheduler_blocked_after_1ms());
  releaser rel;
  stats_on_failure report(rt);
  rel.on_release([&gate] { gate.open(); });
  const std::uint64_t n = 1000;
  auto st = std::make_shared<blocker_state>();
  oneshot<std::uint64_t> done;
  oneshot<long> read_result;
  rt.spawn([fd = gate.read_end(), n, done, st, read_result] {
    long r;
    {
      ember::no_preempt guard;  // no yield between the spawn and the read
      ember::spawn(counted_pinger(n, done));
      st->blocking.store(true);
      r = read_one(fd);
    }
    st->returned.store(true);
    read_result.set(r);
  });
  EXPECT_EQ(done.get(hang_limit, "the pair spawned by the blocked process just before it blocked"), n);
  EXPECT_FALSE(st->returned.load()) << "the blocker returned before the gate opened";
  EXPECT_GE(rt.stats().schedulers_blocked, 1u);
  gate.open();
  EXPECT_EQ(read_result.get(), 1);
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(blocked_scheduler, the_slot_of_a_process_that_ended_on_a_spare_is_reused_once_the_spare_retires) {
  // A retired spare sleeps until the next blocked scheduler, perhaps for
  // ever: what it kept from the processes that ended on it (their slots,
  // their stacks) goes back to the runtime when it retires.
  gate_pipe gate;
  ember::runtime rt(one_scheduler_blocked_after_1ms());
  releaser rel;
  stats_on_failure report(rt);
  rel.on_release([&gate] { gate.open(); });
  auto st = std::make_shared<blocker_state>();
  oneshot<long> read_result;
  rt.spawn([fd = gate.read_end(), st, read_result] {
    st->blocking.store(true);
    long r = read_one(fd);
    st->returned.store(true);
    read_result.set(r);
  });
  // The only scheduler is blocked: these run on a spare. The keeper keeps
  // the spare busy until it retires (an idle spare parks, and parking
  // gives them back anyway); the victim ends there.
  ember::runtime* r = &rt;
  rt.spawn([r] {
    while (r->stats().spare_retirements == 0) ember::yield();
  });
  watched victim = spawn_watched(rt, [] {});
  EXPECT_TRUE(exit_of(victim).is_normal());
  EXPECT_FALSE(st->returned.load()) << "the blocker returned before the gate opened";
  gate.open();
  EXPECT_EQ(read_result.get(), 1);
  ASSERT_TRUE(eventually([&] {
    auto s = rt.stats();
    return s.spare_activations >= 1 && s.spare_retirements == s.spare_activations;
  }, hang_limit)) << "the spares did not retire";
  // Back on the primary: hold new processes until one takes the slot.
  oneshot<std::string> outcome;
  rt.spawn([stale = victim.id, outcome] {
    std::vector<ember::pid> held;
    std::string result = "slot " + std::to_string(stale.slot()) + " not reused after 1000 spawns";
    for (int k = 0; k < 1000; ++k) {
      held.push_back(ember::spawn([] { ember::receive([](int) {}); }));
      if (held.back().slot() == stale.slot()) {
        result = held.back() == stale ? "the same pid again" : "reused";
        break;
      }
    }
    for (ember::pid p : held) ember::send(p, 0);
    outcome.set(result);
  });
  EXPECT_EQ(outcome.get(hang_limit, "the spawner"), "reused");
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(blocked_scheduler, a_process_woken_from_outside_while_the_only_scheduler_is_blocked_runs_elsewhere) {
  gate_pipe gate;
  ember::runtime rt(one_scheduler_blocked_after_1ms());
  releaser rel;
  stats_on_failure report(rt);
  rel.on_release([&gate] { gate.open(); });
  const std::uint64_t n = 1000;
  // A pinger waiting for go, which the test sends once the scheduler is
  // stuck in the blocker's read().
  oneshot<std::uint64_t> done;
  oneshot<pid> waiting;
  rt.spawn([n, done, waiting] {
    waiting.set(ember::self());
    ember::receive([](go) {});
    counted_pinger(n, done)();
  });
  pid pinger = waiting.get();
  auto st = std::make_shared<blocker_state>();
  oneshot<long> read_result;
  rt.spawn([fd = gate.read_end(), st, read_result] {
    st->blocking.store(true);
    const long r = read_one(fd);
    st->returned.store(true);
    read_result.set(r);
  });
  wait_until([&] { return st->blocking.load(); }, "the blocker is about to block");
  rt.send(pinger, go{});
  EXPECT_EQ(done.get(hang_limit, "the pair woken while the scheduler was blocked"), n);
  EXPECT_FALSE(st->returned.load()) << "the blocker returned before the gate opened";
  gate.open();
  EXPECT_EQ(read_result.get(), 1);
  EXPECT_GE(rt.stats().schedulers_blocked, 1u);
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(blocked_scheduler, a_process_back_from_a_long_blocking_call_is_preempted_and_killable_again) {
  // Its scheduler was declared blocked during the call; once the process
  // is back in its own code, spinning, it is preempted as any spinner is,
  // so a kill reaches it.
  gate_pipe gate;
  ember::runtime_options o = one_scheduler_blocked_after_1ms();
  o.time_slice = microseconds(100);
  ember::runtime rt(o);
  releaser rel;
  stats_on_failure report(rt);
  rel.on_release([&gate] { gate.open(); });
  auto s = new_spinner(rel);
  auto st = std::make_shared<blocker_state>();
  watched w = spawn_watched(rt, [fd = gate.read_end(), s, st] {
    st->blocking.store(true);
    read_one(fd);
    st->returned.store(true);
    s->started.store(true);
    sink.store(spin_until(s->stop), std::memory_order_relaxed);
    s->finished.store(true);
  });
  wait_until([&] { return st->blocking.load(); }, "the process is about to block");
  wait_until([&] { return rt.stats().schedulers_blocked >= 1; }, "its scheduler was declared blocked");
  gate.open();
  wait_started(*s);
  const auto p0 = preemptions(rt);
  rt.exit(w.id, exit_reason::kill());
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), kind::killed) << r;
  EXPECT_FALSE(s->finished.load());
  EXPECT_TRUE(preempted_since(rt, p0)) << "no preemption counted";
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST(blocked_scheduler, processes_queued_behind_a_non_preemptible_spinner_run_elsewhere) {
  ember::runtime rt(one_scheduler_blocked_after_1ms());
  releaser rel;
  stats_on_failure report(rt);
  auto s = new_spinner(rel);
  const std::uint64_t n = 1000;
  oneshot<std::uint64_t> queued, next;
  ember::spawn_options o;
  o.preemptible = false;
  rt.spawn(
      [s, n, queued, next] {
        ember::spawn(counted_pinger(n, queued));
        ember::spawn(counted_pinger(n, next));  // displaces the first to the run queue
        s->started.store(true);
        sink.store(spin_until(s->stop), std::memory_order_relaxed);
        s->finished.store(true);
      },
      o);
  EXPECT_EQ(queued.get(hang_limit, "the pair queued behind the non-preemptible spinner"), n);
  EXPECT_TRUE(s->started.load());
  EXPECT_FALSE(s->finished.load());
  EXPECT_GE(rt.stats().schedulers_blocked, 1u);
  EXPECT_GE(rt.stats().spare_activations, 1u);
  s->stop.store(true);
  EXPECT_EQ(next.get(), n);
  EXPECT_TRUE(rt.wait_for(hang_limit));
  EXPECT_TRUE(s->finished.load());
  expect_nothing_leaked(rt);
}

TEST(blocked_scheduler, processes_sharing_a_std_mutex_without_no_preempt_do_not_deadlock) {
  // A process preempted while it holds a std::mutex, and another process of
  // the same (only) thread then blocking in lock(): the thread waits for a
  // process that can only run on it. The blocked-scheduler hand-off
  // unpins the holder and a spare runs it, so everyone finishes.
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the holder unlocks on another thread than it locked on, which ThreadSanitizer reports";
#else
  ember::runtime_options o = one_scheduler_blocked_after_1ms();
  o.time_slice = microseconds(100);
  ember::runtime rt(o);
  stats_on_failure report(rt);
  struct shared_state {
    std::mutex mu;
    long inside = 0;   // guarded by mu
    long total = 0;    // guarded by mu
  };
  auto st = std::make_shared<shared_state>();
  constexpr int processes = 4;
  constexpr int rounds = 20;
  inbox<long> done;
  for (int i = 0; i < processes; ++i)
    rt.spawn([st, done] {
      long bad = 0;
      for (int r = 0; r < rounds; ++r) {
        std::lock_guard lock(st->mu);
        if (++st->inside != 1) ++bad;
        // Work while holding the lock: several time slices, so it is
        // preempted here.
        std::uint64_t x = std::uint64_t(r) + 1;
        for (int k = 0; k < 1'000'000; ++k) x = x * 31 + 7;
        sink.store(x, std::memory_order_relaxed);  // the loop is not optimised away
        st->total += 1;
        --st->inside;
      }
      done.put(bad);
    });
  for (int i = 0; i < processes; ++i) EXPECT_EQ(done.take(), 0) << "two processes inside the lock at once";
  {
    std::lock_guard lock(st->mu);
    EXPECT_EQ(st->total, long(processes) * rounds);
  }
  EXPECT_TRUE(rt.wait_for(hang_limit));
  auto stats = rt.stats();
  EXPECT_GT(stats.preemptions, 0u);
  EXPECT_GE(stats.schedulers_blocked, 1u) << "the deadlock this test is about never arose";
#endif
}

}  // namespace
