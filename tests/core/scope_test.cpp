// ember::scope: children of a scope never outlive it; a failing child
// cancels its siblings and the failure reaches the scope's process; the
// scope's process dying, however it dies, takes the children with it.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "ember/core/scope.hpp"
#include "ember_test.hpp"

namespace {

using namespace ember_test;
using namespace std::chrono_literals;
using ember::exit_reason;
using ember::pid;

class scopes : public runtime_test {};

// Blocks until told (never, in these tests).
void wait_forever() {
  ember::receive([](const std::string&) {});
}

// Waits for the down of `ref` and returns its reason.
exit_reason down_of(ember::monitor_ref ref) {
  return ember::receive(ember::when([ref](const ember::down& d) { return d.ref == ref; },
                                    [](ember::down d) { return d.reason; }));
}

TEST_P(scopes, children_still_running_are_stopped_when_the_scope_ends) {
  auto got = in_process(rt(), [] {
    std::vector<pid> kids;
    {
      ember::scope s;
      for (int i = 0; i < 5; ++i) kids.push_back(s.spawn(wait_forever));
      if (s.running() != 5) return std::string("running ") + std::to_string(s.running());
    }
    int alive = 0;
    for (pid k : kids) alive += ember::is_alive(k) ? 1 : 0;
    return "alive after the scope: " + std::to_string(alive);
  });
  EXPECT_EQ(got, "alive after the scope: 0");
}

TEST_P(scopes, join_waits_for_children_that_end_normally) {
  auto got = in_process(rt(), [] {
    auto sum = std::make_shared<std::atomic<int>>(0);
    ember::scoped([&](ember::scope& s) {
      for (int i = 1; i <= 10; ++i)
        s.spawn([sum, i] {
          ember::yield();
          sum->fetch_add(i);
        });
      s.join();
    });
    return sum->load();
  });
  EXPECT_EQ(got, 55);
}

TEST_P(scopes, a_failing_child_cancels_its_siblings_and_join_throws_its_reason) {
  auto got = in_process(rt(), [] {
    std::vector<ember::monitor_ref> watch;
    std::string thrown;
    try {
      ember::scoped([&](ember::scope& s) {
        for (int i = 0; i < 3; ++i) watch.push_back(ember::monitor(s.spawn(wait_forever)));
        s.spawn([] { throw std::runtime_error("bad input"); });
        s.join();
      });
    } catch (const ember::scope_error& e) {
      thrown = errc_name(e.code()) + ": " + e.reason().to_string();
    }
    std::string siblings;
    for (auto ref : watch) siblings += " " + down_of(ref).to_string();
    return thrown + " /" + siblings;
  });
  EXPECT_EQ(got.substr(0, got.find(':')), "child_failed");
  EXPECT_NE(got.find("bad input"), std::string::npos) << got;
  EXPECT_NE(got.find("/ killed killed killed"), std::string::npos) << got;
}

TEST_P(scopes, a_failure_reaches_the_scope_process_blocked_in_a_receive) {
  auto got = in_process(rt(), [] {
    try {
      ember::scoped([&](ember::scope& s) {
        s.spawn([] { ember::exit(exit_reason::shutdown()); });
        ember::receive([](const std::string&) {});  // nobody sends: the failure ends it
      });
      return std::string("returned");
    } catch (const ember::scope_error& e) {
      return "scope_error: " + e.reason().to_string();
    }
  });
  EXPECT_EQ(got, "scope_error: shutdown");
}

TEST_P(scopes, children_downs_never_appear_as_messages) {
  auto got = in_process(rt(), [] {
    {
      ember::scope s;
      for (int i = 0; i < 3; ++i) s.spawn([] {});
      s.spawn(wait_forever);
    }
    return ember::receive([](ember::message&) { return std::string("a message"); },
                          ember::after(0ms, [] { return std::string("mailbox empty"); }));
  });
  EXPECT_EQ(got, "mailbox empty");
}

TEST_P(scopes, children_are_killed_when_the_scope_process_is_killed) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    auto [owner, owner_ref] = ember::spawn_monitor([me] {
      ember::scope s;
      pid a = s.spawn(wait_forever);
      pid b = s.spawn(wait_forever);
      ember::send(me, std::vector<pid>{a, b});
      wait_forever();
    });
    auto kids = ember::receive([](const std::vector<pid>& v) { return v; });
    auto ra = ember::monitor(kids[0]);
    auto rb = ember::monitor(kids[1]);
    ember::exit(owner, exit_reason::kill());
    return down_of(owner_ref).to_string() + " " + down_of(ra).to_string() + " " + down_of(rb).to_string();
  });
  EXPECT_EQ(got, "killed killed killed");
}

// Without unwinding: the scope object's destructor never runs.
int recurse(int n) {
  volatile char pad[512];
  pad[0] = char(n);
  return n == 0 ? pad[0] : recurse(n + 1) + pad[0];
}

TEST_P(scopes, children_are_killed_when_the_scope_process_overflows_its_stack) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    auto [owner, owner_ref] = ember::spawn_monitor([me] {
      ember::scope s;
      ember::send(me, s.spawn(wait_forever));
      ember::receive([](const std::string&) {});
      recurse(1);
    });
    pid kid = ember::receive([](pid p) { return p; });
    auto rk = ember::monitor(kid);
    ember::send(owner, std::string("go"));
    exit_reason r = down_of(owner_ref);
    return std::string(r.is(exit_reason::kind::stack_overflow) ? "overflow" : r.to_string()) + " " +
           down_of(rk).to_string();
  });
  EXPECT_EQ(got, "overflow killed");
}

TEST_P(scopes, an_inner_scope_ending_leaves_the_outer_scope_children_running) {
  auto got = in_process(rt(), [] {
    ember::scope outer;
    pid a = outer.spawn(wait_forever);
    pid b;
    {
      ember::scope inner;
      b = inner.spawn(wait_forever);
    }
    std::string r = std::string(ember::is_alive(a) ? "outer alive" : "outer dead") +
                    (ember::is_alive(b) ? ", inner alive" : ", inner dead");
    return r + ", running " + std::to_string(outer.running());
  });
  EXPECT_EQ(got, "outer alive, inner dead, running 1");
}

TEST_P(scopes, spawning_into_a_failed_scope_throws_its_failure) {
  auto got = in_process(rt(), [] {
    ember::scope s;
    auto ref = ember::monitor(s.spawn([] { throw std::runtime_error("first"); }));
    (void)ref;
    try {
      s.join();
    } catch (const ember::scope_error&) {
    }
    try {
      s.spawn(wait_forever);
      return std::string("spawned");
    } catch (const ember::scope_error& e) {
      return "refused: " + e.reason().to_string();
    }
  });
  EXPECT_NE(got.find("refused: "), std::string::npos) << got;
  EXPECT_NE(got.find("first"), std::string::npos) << got;
}

TEST(scope_outside, a_scope_needs_a_process) {
  EXPECT_EQ(outcome_of([] { ember::scope s; }), "error not_in_process");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(scopes);

}  // namespace
