// Links: bidirectional; a non-normal exit sends an exit signal to every
// linked process, ending those that do not trap exits (with the same
// reason) and arriving as an exit_signal message at those that do. A normal
// exit ends no linked process. Linking to a dead pid gives noproc.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::exit_signal;
using ember::pid;

class links : public runtime_test {};

struct go {};

// A process that waits for `go`, then ends with `how` (normal: returns).
auto ends_with(exit_reason how) {
  return [how] {
    ember::receive([](go) {});
    if (how.is_normal()) return;
    if (how.is(exit_reason::kind::exception)) throw std::runtime_error(std::string(how.text()));
    ember::exit(how);
  };
}

// A process that links to `peer` (given as a message), acknowledges, and
// then waits for messages until it is ended; it reports its reason through
// the watcher.
auto links_then_waits(oneshot<void> linked) {
  return [linked] {
    pid peer = ember::receive([](pid p) { return p; });
    ember::link(peer);
    linked.set();
    ember::receive([](double) {});  // nobody sends a double
  };
}

TEST_P(links, link_propagates_crash_to_linked_process) {
  watched crasher = spawn_watched(rt(), ends_with(exit_reason::exception("", "boom")));
  oneshot<void> linked;
  watched partner = spawn_watched(rt(), links_then_waits(linked));
  rt().send(partner.id, crasher.id);
  linked.get();
  rt().send(crasher.id, go{});
  auto r = exit_of(crasher);
  EXPECT_EQ(r.exception_type(), "std::runtime_error");
  EXPECT_EQ(exit_of(partner), r) << "the linked process dies with the crash's reason";
}

TEST_P(links, link_is_bidirectional) {
  // partner links to crasher; this time the linking side crashes and the
  // linked-to side dies.
  oneshot<void> linked;
  watched target = spawn_watched(rt(), [] { ember::receive([](double) {}); });
  watched linker = spawn_watched(rt(), [linked, t = target.id] {
    ember::link(t);
    linked.set();
    ember::receive([](go) {});
    ember::exit("linker failed");
  });
  linked.get();
  rt().send(linker.id, go{});
  EXPECT_EQ(exit_of(linker), exit_reason("linker failed"));
  EXPECT_EQ(exit_of(target), exit_reason("linker failed"));
}

TEST_P(links, crash_propagates_along_a_chain_of_links) {
  constexpr int n = 10;
  std::vector<watched> chain;
  for (int i = 0; i < n; ++i) {
    oneshot<void> linked;
    if (i == 0) {
      chain.push_back(spawn_watched(rt(), ends_with("chain reaction")));
      continue;
    }
    chain.push_back(spawn_watched(rt(), links_then_waits(linked)));
    rt().send(chain.back().id, chain[std::size_t(i) - 1].id);
    linked.get();
  }
  rt().send(chain[0].id, go{});
  for (auto& w : chain) EXPECT_EQ(exit_of(w), exit_reason("chain reaction")) << w.id;
}

TEST_P(links, normal_exit_does_not_end_linked_processes) {
  watched quitter = spawn_watched(rt(), ends_with(exit_reason::normal()));
  oneshot<void> linked;
  watched partner = spawn_watched(rt(), links_then_waits(linked));
  rt().send(partner.id, quitter.id);
  linked.get();
  rt().send(quitter.id, go{});
  EXPECT_TRUE(exit_of(quitter).is_normal());
  // The partner is still alive: a message it waits for ends it normally.
  rt().send(partner.id, 1.0);
  EXPECT_TRUE(exit_of(partner).is_normal());
}

TEST_P(links, trap_exit_turns_a_linked_crash_into_an_exit_signal_message) {
  auto got = in_process(rt(), [] {
    ember::trap_exit(true);
    pid c = ember::spawn(ends_with("crashed"));
    ember::link(c);
    ember::send(c, go{});
    return ember::receive([c](exit_signal s) {
      return (s.from == c ? std::string("from child: ") : std::string("from elsewhere: ")) +
             s.reason.to_string();
    });
  });
  EXPECT_EQ(got, "from child: crashed");
}

TEST_P(links, trapping_process_gets_the_normal_exit_of_a_linked_process_as_a_message) {
  auto got = in_process(rt(), [] {
    ember::trap_exit(true);
    pid c = ember::spawn_link(ends_with(exit_reason::normal()));
    ember::send(c, go{});
    return ember::receive([c](exit_signal s) {
      return (s.from == c ? std::string("from child: ") : std::string("from elsewhere: ")) +
             s.reason.to_string();
    });
  });
  EXPECT_EQ(got, "from child: normal");
}

TEST_P(links, killed_process_sends_killed_to_linked_processes) {
  // kill is untrappable, but what the linked processes see is `killed`,
  // an ordinary reason: trapping processes get it as a message, others die
  // with it.
  oneshot<void> linked;
  oneshot<pid> victim_pid;
  oneshot<std::string> trapped;
  watched trapper = spawn_watched(rt(), [trapped, victim_pid, linked] {
    ember::trap_exit(true);
    pid v = ember::spawn_link([] { ember::receive([](double) {}); });
    victim_pid.set(v);
    trapped.set(ember::receive([](exit_signal s) { return s.reason.to_string(); }));
  });
  pid victim = victim_pid.get();
  oneshot<void> partner_linked;
  watched partner = spawn_watched(rt(), links_then_waits(partner_linked));
  rt().send(partner.id, victim);
  partner_linked.get();
  rt().exit(victim, exit_reason::kill());
  EXPECT_EQ(trapped.get(), "killed");
  EXPECT_TRUE(exit_of(trapper).is_normal());
  EXPECT_EQ(exit_of(partner), exit_reason::killed());
}

TEST_P(links, exit_signal_to_a_linked_process_propagates_its_reason) {
  // A process ended by exit(p, reason) passes that reason on to its links.
  oneshot<void> linked;
  watched middle = spawn_watched(rt(), [] { ember::receive([](double) {}); });
  watched partner = spawn_watched(rt(), links_then_waits(linked));
  rt().send(partner.id, middle.id);
  linked.get();
  rt().exit(middle.id, "told to stop");
  EXPECT_EQ(exit_of(middle), exit_reason("told to stop"));
  EXPECT_EQ(exit_of(partner), exit_reason("told to stop"));
}

TEST_P(links, unlink_stops_propagation) {
  auto got = in_process(rt(), [] {
    ember::trap_exit(true);
    pid c = ember::spawn_link(ends_with("after unlink"));
    ember::unlink(c);
    auto ref = ember::monitor(c);
    ember::send(c, go{});
    // The down arrives; an exit signal, had the link survived, would have
    // been sent at the same moment, so a short wait after the down suffices.
    ember::receive([ref](ember::down d) { return d.ref == ref; });
    return ember::receive([](exit_signal s) { return "exit signal " + s.reason.to_string(); },
                          ember::after(50ms, [] { return std::string("no exit signal"); }));
  });
  EXPECT_EQ(got, "no exit signal");
}

TEST_P(links, unlinked_non_trapping_process_survives_the_crash) {
  watched crasher = spawn_watched(rt(), ends_with("crash"));
  oneshot<void> unlinked;
  watched partner = spawn_watched(rt(), [unlinked, c = crasher.id] {
    ember::link(c);
    ember::unlink(c);
    unlinked.set();
    ember::receive([](double) {});
  });
  unlinked.get();
  rt().send(crasher.id, go{});
  EXPECT_EQ(exit_of(crasher), exit_reason("crash"));
  rt().send(partner.id, 1.0);
  EXPECT_TRUE(exit_of(partner).is_normal());
}

TEST_P(links, unlinking_a_process_that_is_not_linked_is_a_no_op) {
  watched other = spawn_watched(rt(), [] { ember::receive([](double) {}); });
  EXPECT_TRUE(in_process(rt(), [o = other.id] {
    ember::unlink(o);
    ember::unlink(ember::pid(0, 99999, 3));
    return true;
  }));
  rt().send(other.id, 1.0);
  EXPECT_TRUE(exit_of(other).is_normal());
}

TEST_P(links, linking_twice_makes_one_link) {
  // Erlang: at most one link between two processes; one unlink removes it.
  watched crasher = spawn_watched(rt(), ends_with("crash"));
  oneshot<void> unlinked;
  watched partner = spawn_watched(rt(), [unlinked, c = crasher.id] {
    ember::link(c);
    ember::link(c);
    ember::unlink(c);
    unlinked.set();
    ember::receive([](double) {});
  });
  unlinked.get();
  rt().send(crasher.id, go{});
  EXPECT_EQ(exit_of(crasher), exit_reason("crash"));
  rt().send(partner.id, 1.0);
  EXPECT_TRUE(exit_of(partner).is_normal());
}

TEST_P(links, linking_to_oneself_does_nothing) {
  watched w = spawn_watched(rt(), [] {
    ember::link(ember::self());
    ember::unlink(ember::self());
    ember::link(ember::self());
  });
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(links, link_to_a_dead_pid_gives_a_trapping_caller_a_noproc_exit_signal) {
  watched dead = spawn_watched(rt(), [] {});
  ASSERT_TRUE(exit_of(dead).is_normal());
  auto got = in_process(rt(), [d = dead.id] {
    ember::trap_exit(true);
    ember::link(d);
    return ember::receive([](exit_signal s) {
      return s.from.to_string() + " " + s.reason.to_string();
    });
  });
  EXPECT_EQ(got, dead.id.to_string() + " noproc");
}

TEST_P(links, link_to_a_dead_pid_ends_a_non_trapping_caller_with_noproc) {
  watched dead = spawn_watched(rt(), [] {});
  ASSERT_TRUE(exit_of(dead).is_normal());
  watched caller = spawn_watched(rt(), [d = dead.id] {
    ember::link(d);
    ember::receive([](double) {});
  });
  EXPECT_EQ(exit_of(caller), exit_reason::noproc());
}

TEST_P(links, crash_of_a_process_ends_every_process_linked_to_it) {
  constexpr int n = 100;
  oneshot<std::vector<pid>> children;
  watched hub = spawn_watched(rt(), [children] {
    std::vector<pid> cs;
    for (int i = 0; i < n; ++i) cs.push_back(ember::spawn_link([] { ember::receive([](double) {}); }));
    children.set(cs);
    ember::receive([](go) {});
    throw std::runtime_error("hub down");
  });
  // A third process monitors every child and counts their reasons.
  oneshot<void> monitoring;
  oneshot<int> died_with_hub_reason;
  rt().spawn([cs = children.get(), monitoring, died_with_hub_reason] {
    for (pid c : cs) ember::monitor(c);
    monitoring.set();
    int same = 0;
    for (std::size_t i = 0; i < cs.size(); ++i)
      same += ember::receive([](ember::down d) { return d.reason.text() == "hub down" ? 1 : 0; });
    died_with_hub_reason.set(same);
  });
  monitoring.get();
  rt().send(hub.id, go{});
  EXPECT_EQ(exit_of(hub).text(), "hub down");
  EXPECT_EQ(died_with_hub_reason.get(), n);
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(links);

}  // namespace
