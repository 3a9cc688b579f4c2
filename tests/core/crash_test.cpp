// Crash isolation: a stack overflow, a heap limit or (when asked) a fault
// ends one process, which its links and monitors see, and nothing else.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::pid;

using kind = exit_reason::kind;

volatile int never = -1;  // the recursion's way out, never taken

// Recurses until the stack runs out; the pad keeps each frame real.
__attribute__((noinline)) int recurse(int depth) {
  volatile char pad[256];
  pad[0] = char(depth);
  if (depth == never) return 0;
  return recurse(depth + 1) + pad[0];
}

__attribute__((noinline)) int read_null() {
  volatile int* volatile p = nullptr;
  return *p;
}

volatile int quotient = 0;

__attribute__((noinline)) void divide_by_zero() {
  volatile int zero = 0;
  volatile int x = 7;
  quotient = x / zero;
}

struct ping {
  pid from;
};
struct pong {};

// Answers pings until told to stop.
void ponger() {
  for (;;) {
    bool stop = ember::receive([](ping p) {
                                 ember::send(p.from, pong{});
                                 return false;
                               },
                               [](std::string s) { return s == "stop"; });
    if (stop) return;
  }
}

bool answers(pid p) {
  ember::send(p, ping{ember::self()});
  return ember::receive([](pong) { return true; }, ember::after(10s, [] { return false; }));
}

class crashes : public runtime_test {};

TEST_P(crashes, stack_overflow_ends_only_the_process_with_stack_overflow) {
  watched bystander = spawn_watched(rt(), ponger);
  ember::spawn_options small;
  small.stack_size = 64 * 1024;
  watched w = spawn_watched(rt(), [] { recurse(0); }, small);
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), kind::stack_overflow) << r;
  EXPECT_NE(r.to_string().find("stack_overflow"), std::string::npos);
  EXPECT_TRUE(in_process(rt(), [b = bystander.id] { return answers(b); }));
  rt().send(bystander.id, std::string("stop"));
  EXPECT_TRUE(exit_of(bystander).is_normal());
}

TEST_P(crashes, stack_overflow_does_not_unwind_and_reclaims_the_heap) {
  destructor_counter destroyed = destructor_counter::for_abandoned_stack();
  auto before = rt().stats().heap_segments_in_use;
  ember::spawn_options small;
  small.stack_size = 64 * 1024;
  watched w = spawn_watched(rt(), [destroyed] {
    auto guard = destroyed.make();
    std::vector<std::string*> leaked;  // never freed: the heap goes whole
    for (int i = 0; i < 20000; ++i) leaked.push_back(new std::string(100, 'x'));
    recurse(0);
  }, small);
  EXPECT_EQ(exit_of(w).what_kind(), kind::stack_overflow);
  ASSERT_TRUE(rt().wait_for(hang_limit));
  EXPECT_EQ(destroyed.value(), 0);  // an overflowed stack cannot be unwound
  EXPECT_TRUE(eventually([&] { return rt().stats().heap_segments_in_use <= before; }))
      << rt().stats().heap_segments_in_use << " segments in use, " << before << " before";
}

TEST_P(crashes, stack_overflow_fires_links_and_monitors) {
  auto got = in_process(rt(), [] {
    ember::trap_exit(true);
    ember::spawn_options small;
    small.stack_size = 64 * 1024;
    pid child = ember::spawn_link([] { recurse(0); }, small);
    auto ref = ember::monitor(child);
    exit_reason linked = ember::receive([](ember::exit_signal e) { return e.reason; });
    exit_reason seen = ember::receive([](ember::down d) { return d.reason; });
    (void)ref;
    return std::make_pair(linked.what_kind(), seen.what_kind());
  });
  // The monitor may also be set after the child died: then it says noproc.
  EXPECT_EQ(got.first, kind::stack_overflow);
  EXPECT_TRUE(got.second == kind::stack_overflow || got.second == kind::noproc);
}

TEST_P(crashes, one_overflow_among_thousands_of_processes_leaves_the_others_running) {
  const int n = EMBER_TEST_SANITIZED ? 300 : 3000;
  std::vector<watched> others;
  others.reserve(std::size_t(n));
  for (int i = 0; i < n; ++i) others.push_back(spawn_watched(rt(), ponger));
  ember::spawn_options small;
  small.stack_size = 64 * 1024;
  watched w = spawn_watched(rt(), [] { recurse(0); }, small);
  EXPECT_EQ(exit_of(w).what_kind(), kind::stack_overflow);
  std::vector<pid> ids;
  for (auto& o : others) ids.push_back(o.id);
  auto answered = in_process(rt(), [ids] {
    int count = 0;
    for (pid p : ids) count += answers(p) ? 1 : 0;
    return count;
  });
  EXPECT_EQ(answered, n);
  for (auto& o : others) rt().send(o.id, std::string("stop"));
  for (auto& o : others) EXPECT_TRUE(exit_of(o).is_normal());
}

TEST_P(crashes, overflowed_stacks_are_reused_by_later_processes) {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer wraps signal handlers and keeps per-thread state that a
  // handler that never returns leaves behind; after a few such exits on one
  // thread its runtime stops delivering SIGSEGV to ember's handler. One
  // overflow per test (the tests above) works under it.
  GTEST_SKIP() << "repeated overflows on one thread are not supported under ThreadSanitizer";
#endif
  ember::spawn_options small;
  small.stack_size = 64 * 1024;
  for (int i = 0; i < 20; ++i) {
    watched w = spawn_watched(rt(), [] { recurse(0); }, small);
    EXPECT_EQ(exit_of(w).what_kind(), kind::stack_overflow);
    // A normal process on a recycled stack runs and unwinds normally.
    EXPECT_EQ(in_process(rt(), [] { return int(std::string(300, 'y').size()); }, small), 300);
  }
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(crashes);

// Faults other than an overflow: isolated only when the runtime says so.
class isolated_faults : public ::testing::Test {
 protected:
  static ember::runtime_options isolating() {
    ember::runtime_options o;
    o.schedulers = 2;
    o.isolate_faults = true;
    return o;
  }
};

TEST_F(isolated_faults, segfault_ends_only_the_process_with_reason_fault) {
  ember::runtime rt(isolating());
  watched bystander = spawn_watched(rt, ponger);
  watched w = spawn_watched(rt, [] { read_null(); });
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), kind::fault) << r;
  EXPECT_NE(r.to_string().find("SIGSEGV"), std::string::npos) << r;
  EXPECT_NE(r.to_string().find("address 0x0"), std::string::npos) << r;
  EXPECT_TRUE(in_process(rt, [b = bystander.id] { return answers(b); }));
  rt.send(bystander.id, std::string("stop"));
  EXPECT_TRUE(exit_of(bystander).is_normal());
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST_F(isolated_faults, division_by_zero_ends_only_the_process_with_sigfpe) {
  ember::runtime rt(isolating());
  watched w = spawn_watched(rt, [] { divide_by_zero(); });
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), kind::fault) << r;
  EXPECT_NE(r.to_string().find("SIGFPE"), std::string::npos) << r;
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

TEST_F(isolated_faults, faults_in_handler_processes_are_isolated_too) {
  ember::runtime rt(isolating());
  struct faulty {
    void operator()(ember::message& m) {
      if (m.is<int>()) read_null();
    }
  };
  watched w = spawn_watched(rt, ember::handler(faulty{}));
  rt.send(w.id, 1);
  EXPECT_EQ(exit_of(w).what_kind(), kind::fault);
  EXPECT_TRUE(rt.wait_for(hang_limit));
  expect_nothing_leaked(rt);
}

using fault_death = isolated_faults;

TEST_F(fault_death, by_default_a_segfault_ends_the_node_with_a_report_naming_the_process) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        ember::runtime_options o;
        o.schedulers = 1;
        ember::runtime rt(o);
        rt.spawn([] { read_null(); });
        rt.wait();
      },
      "ember: process <0\\.[0-9]+\\.[0-9]+> received SIGSEGV at address 0x0");
}

}  // namespace

namespace {

// A use of a dead process's memory, with quarantine on: reported, naming
// the process, and the node ends (it is a debugging aid).
TEST_F(fault_death, quarantined_heap_reports_a_use_after_its_process_exited) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        ember::runtime_options o;
        o.schedulers = 1;
        o.quarantine_dead_heaps = true;
        ember::runtime rt(o);
        oneshot<std::uintptr_t> address;
        rt.spawn([address] {
          auto* kept = new std::string(300, 'q');  // in this process's heap
          address.set(reinterpret_cast<std::uintptr_t>(kept));
        });
        rt.wait();
        auto* dead = reinterpret_cast<std::string*>(address.get());
        std::fprintf(stderr, "read %zu\n", dead->size());
      },
      "ember: use of memory of process <0\\.[0-9]+\\.[0-9]+> after it exited \\(its heap was reclaimed\\)");
}

}  // namespace

namespace {

// With the address space limited (ulimit -v, valgrind), the heap arena is
// reserved smaller, and process heaps still work.
TEST_F(fault_death, process_heaps_work_with_a_limited_address_space) {
#if EMBER_TEST_SANITIZED
  GTEST_SKIP() << "sanitizers reserve their shadow memory beyond any such limit";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        struct rlimit limit {};
        limit.rlim_cur = limit.rlim_max = rlim_t(6) << 30;  // 6 GiB: the 64 GiB arena cannot fit
        if (::setrlimit(RLIMIT_AS, &limit) != 0) std::_Exit(2);
        ember::runtime_options o;
        o.schedulers = 1;
        ember::runtime rt(o);
        oneshot<std::size_t> counted;
        rt.spawn([counted] {
          std::vector<std::string> v(1000, std::string(100, 'a'));
          counted.set(ember::process_info(ember::self())->heap_bytes);
        });
        std::size_t bytes = counted.get();
        rt.wait();
        std::_Exit(bytes >= 1000 * 112 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
#endif
}

}  // namespace
