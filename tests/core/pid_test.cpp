// Pids: 64 bits naming node, slot and generation; printed <node.slot.gen>;
// a pid of a dead process never reaches a later process in the same slot.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::pid;

TEST(pid, pid_prints_as_node_slot_generation) {
  EXPECT_EQ(pid(3, 42, 7).to_string(), "<3.42.7>");
  EXPECT_EQ(pid(0, 1, 0).to_string(), "<0.1.0>");
}

TEST(pid, pid_stream_output_matches_to_string) {
  std::ostringstream os;
  os << pid(1, 2, 3);
  EXPECT_EQ(os.str(), "<1.2.3>");
}

TEST(pid, pid_fields_round_trip_through_bits) {
  constexpr pid p(4095, (1u << 26) - 1, 12345);
  static_assert(p.node() == 4095);
  static_assert(p.slot() == (1u << 26) - 1);
  static_assert(p.generation() == 12345);
  EXPECT_EQ(pid::from_bits(p.bits()), p);
  EXPECT_EQ(pid::from_bits(p.bits()).to_string(), "<4095.67108863.12345>");
}

TEST(pid, null_pid_names_no_process) {
  constexpr pid p;
  static_assert(!p);
  static_assert(p.bits() == 0);
  EXPECT_TRUE(bool(pid(0, 1, 0)));
}

TEST(pid, pids_with_different_generation_are_different) {
  EXPECT_NE(pid(0, 5, 1), pid(0, 5, 2));
  EXPECT_NE(std::hash<pid>{}(pid(0, 5, 1)), std::hash<pid>{}(pid(0, 5, 2)));
}

class pids : public runtime_test {};

TEST_P(pids, spawned_processes_have_distinct_pids) {
  std::unordered_set<pid> seen;
  inbox<pid> started;
  std::vector<pid> ps;
  for (int i = 0; i < 200; ++i) {
    ps.push_back(rt().spawn([started] {
      started.put(ember::self());
      ember::receive([](int) {});
    }));
  }
  for (int i = 0; i < 200; ++i) started.take();
  for (pid p : ps) {
    EXPECT_TRUE(bool(p));
    EXPECT_TRUE(seen.insert(p).second) << "pid " << p << " given twice";
    rt().send(p, 0);
  }
}

TEST(pid, spawned_pid_carries_the_runtime_node_id) {
  ember::runtime_options o;
  o.schedulers = 1;
  o.node_id = 5;
  ember::runtime node5(o);
  pid p = node5.spawn([] {});
  EXPECT_EQ(p.node(), 5u);
  EXPECT_TRUE(node5.wait_for(hang_limit));
}

TEST_P(pids, spawned_pid_of_the_default_runtime_has_node_zero) {
  pid q = rt().spawn([] {});
  EXPECT_EQ(q.node(), 0u);
}

struct stale_message {};
struct check {};

// Later processes: handler processes (no stack each, so many can be alive),
// each reporting whether the first message it sees is a stale_message or
// the check the test sends after it.
struct later_process {
  inbox<bool> got_stale;
  void operator()(ember::message& m) {
    got_stale.put(m.is<stale_message>());
    ember::exit(ember::exit_reason::normal());
  }
};

struct slot_reuse {
  pid stale;               // a process that has exited
  pid reuser;              // a live later process in the stale pid's slot
  std::vector<pid> later;  // every later process, all alive
};

// Spins (holding the thread, no runtime call) until `count` reaches `n`:
// n processes doing this at once must each be on its own scheduler thread.
void spin_barrier(std::atomic<unsigned>& count, unsigned n) {
  count.fetch_add(1);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (count.load() < n && std::chrono::steady_clock::now() < deadline) {
  }
}

// Lets a process die, then spawns later processes until one occupies its
// slot. Slots may be recycled per scheduler, so a spawner runs on every
// scheduler thread; the spawners exist before the stale process dies, so
// none of them takes its slot.
slot_reuse spawn_until_slot_reused(ember::runtime& rt, inbox<bool> got_stale) {
  const unsigned n = rt.schedulers();
  auto found = std::make_shared<std::atomic<bool>>(false);
  auto before = std::make_shared<std::atomic<unsigned>>(0);
  auto after = std::make_shared<std::atomic<unsigned>>(0);
  inbox<int> ready;
  inbox<std::vector<pid>> spawned;
  inbox<pid> reusers;
  std::vector<pid> spawners;
  for (unsigned i = 0; i < n; ++i) {
    ember::spawn_options o;
    o.scheduler = int(i);
    spawners.push_back(rt.spawn(
        [=] {
          spin_barrier(*before, n);
          ready.put(1);
          pid stale = ember::receive([](pid p) { return p; });
          spin_barrier(*after, n);
          std::vector<pid> mine;
          for (int k = 0; k < 20'000 && !found->load(); ++k) {
            pid p = ember::spawn(ember::handler(later_process{got_stale}));
            mine.push_back(p);
            if (p.slot() == stale.slot() && p.node() == stale.node()) {
              reusers.put(p);
              found->store(true);
            }
          }
          spawned.put(std::move(mine));
        },
        o));
  }
  for (unsigned i = 0; i < n; ++i) ready.take();

  slot_reuse r;
  watched first = spawn_watched(rt, [] {});
  EXPECT_TRUE(exit_of(first).is_normal());
  r.stale = first.id;
  EXPECT_FALSE(rt.is_alive(r.stale));
  for (pid s : spawners) rt.send(s, r.stale);

  for (unsigned i = 0; i < n; ++i) {
    auto v = spawned.take();
    r.later.insert(r.later.end(), v.begin(), v.end());
  }
  if (reusers.size() > 0) r.reuser = reusers.take();
  return r;
}

// The core rule: spawn a process, let it die, then spawn until a later
// process occupies the same slot. Everything sent to the stale pid must
// miss the later process.
TEST_P(pids, stale_pid_never_reaches_a_later_process_in_the_same_slot) {
  inbox<bool> got_stale;
  slot_reuse r = spawn_until_slot_reused(rt(), got_stale);
  if (r.reuser) rt().send(r.stale, stale_message{});
  for (pid p : r.later) rt().send(p, check{});  // release them whatever happens
  ASSERT_TRUE(bool(r.reuser)) << "no later process reused slot " << r.stale.slot() << " after "
                              << r.later.size() << " spawns (pid.hpp documents reuse)";
  EXPECT_NE(r.reuser.generation(), r.stale.generation());
  EXPECT_NE(r.reuser, r.stale);
  int stale_deliveries = 0;
  for (std::size_t i = 0; i < r.later.size(); ++i) stale_deliveries += got_stale.take() ? 1 : 0;
  EXPECT_EQ(stale_deliveries, 0);
}

TEST_P(pids, stale_pid_misses_a_later_process_for_sends_and_signals_from_outside) {
  inbox<bool> got_stale;
  slot_reuse r = spawn_until_slot_reused(rt(), got_stale);
  if (!r.reuser) {
    for (pid p : r.later) rt().send(p, check{});
    FAIL() << "no later process reused slot " << r.stale.slot();
  }
  // Watch the reuser: an exit signal to the stale pid must not end it.
  oneshot<void> watching;
  oneshot<std::string> reuser_exit;
  rt().spawn([reuser = r.reuser, watching, reuser_exit] {
    auto ref = ember::monitor(reuser);
    watching.set();
    reuser_exit.set(ember::receive([ref](ember::down d) {
      return d.ref == ref ? d.reason.to_string() : std::string("another down");
    }));
  });
  watching.get();
  rt().send(r.stale, stale_message{});
  rt().exit(r.stale, "stale exit signal");
  rt().exit(r.stale, ember::exit_reason::kill());
  EXPECT_FALSE(rt().is_alive(r.stale));
  EXPECT_TRUE(rt().is_alive(r.reuser));
  for (pid p : r.later) rt().send(p, check{});
  int stale_deliveries = 0;
  for (std::size_t i = 0; i < r.later.size(); ++i) stale_deliveries += got_stale.take() ? 1 : 0;
  EXPECT_EQ(stale_deliveries, 0);
  EXPECT_EQ(reuser_exit.get(), "normal");
}

TEST_P(pids, stale_pid_misses_a_later_process_for_sends_signals_monitors_and_links_from_inside) {
  inbox<bool> got_stale;
  slot_reuse r = spawn_until_slot_reused(rt(), got_stale);
  if (!r.reuser) {
    for (pid p : r.later) rt().send(p, check{});
    FAIL() << "no later process reused slot " << r.stale.slot();
  }
  auto result = in_process(rt(), [r] {
    const pid stale = r.stale;
    ember::trap_exit(true);
    auto reuser_ref = ember::monitor(r.reuser);
    ember::send(stale, stale_message{});
    ember::exit(stale, "stale exit signal");
    ember::exit(stale, ember::exit_reason::kill());
    std::string out;
    auto stale_ref = ember::monitor(stale);
    ember::receive(ember::when([&](const ember::down& d) { return d.ref == stale_ref; },
                               [&](ember::down d) { out += "stale monitor: " + d.reason.to_string(); }));
    ember::link(stale);
    ember::receive([&](ember::exit_signal s) {
      out += "; stale link: " + s.reason.to_string() + (s.from == stale ? "" : " from another pid");
    });
    for (pid p : r.later) ember::send(p, check{});
    ember::receive(ember::when([&](const ember::down& d) { return d.ref == reuser_ref; },
                               [&](ember::down d) { out += "; later process: " + d.reason.to_string(); }));
    return out;
  });
  EXPECT_EQ(result, "stale monitor: noproc; stale link: noproc; later process: normal");
  int stale_deliveries = 0;
  for (std::size_t i = 0; i < r.later.size(); ++i) stale_deliveries += got_stale.take() ? 1 : 0;
  EXPECT_EQ(stale_deliveries, 0);
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(pids);

}  // namespace
