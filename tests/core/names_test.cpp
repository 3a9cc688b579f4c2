// Registered names: register_name / whereis / unregister, as Erlang's
// register/2, whereis/1, unregister/1. A name is freed when its process dies.
#include <gtest/gtest.h>

#include <string>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::errc;
using ember::exit_reason;
using ember::pid;

class names : public runtime_test {};

// The error code an expression throws as ember::error, or "none".
template <class F>
std::string thrown_code(F f) {
  try {
    f();
    return "none";
  } catch (const ember::error& e) {
    switch (e.code()) {
      case errc::name_taken: return "name_taken";
      case errc::no_such_name: return "no_such_name";
      case errc::not_alive: return "not_alive";
      case errc::already_registered: return "already_registered";
      case errc::not_in_process: return "not_in_process";
      default: return "other errc";
    }
  }
}

TEST_P(names, registered_name_resolves_to_its_process) {
  auto got = in_process(rt(), [] {
    ember::register_name("svc", ember::self());
    bool ok = ember::whereis("svc") == ember::self();
    ember::unregister("svc");
    return ok;
  });
  EXPECT_TRUE(got);
}

TEST_P(names, whereis_from_outside_a_process_sees_registered_names) {
  oneshot<pid> registered;
  pid p = rt().spawn([registered] {
    ember::register_name("worker", ember::self());
    registered.set(ember::self());
    ember::receive([](int) {});
  });
  EXPECT_EQ(registered.get(), p);
  EXPECT_EQ(rt().whereis("worker"), p);
  EXPECT_EQ(rt().stats().names, 1u);
  rt().send(p, 0);
}

TEST_P(names, a_process_can_register_another_process) {
  oneshot<pid> child;
  auto got = in_process(rt(), [child] {
    pid c = ember::spawn([] { ember::receive([](int) {}); });
    ember::register_name("child", c);
    child.set(c);
    bool ok = ember::whereis("child") == c;
    ember::send("child", 0);
    return ok;
  });
  EXPECT_TRUE(got);
  (void)child.get();
}

TEST_P(names, runtime_register_name_names_a_process_from_outside) {
  pid p = rt().spawn([] { ember::receive([](int) {}); });
  rt().register_name("from_outside", p);
  EXPECT_EQ(rt().whereis("from_outside"), p);
  EXPECT_EQ(thrown_code([&] { rt().register_name("from_outside", p); }), "name_taken");
  pid q = rt().spawn([] { ember::receive([](int) {}); });
  EXPECT_EQ(thrown_code([&] { rt().register_name("another", p); }), "already_registered");
  rt().send("from_outside", 0);
  rt().send(q, 0);
}

TEST_P(names, runtime_register_name_of_a_dead_process_throws_not_alive) {
  watched dead = spawn_watched(rt(), [] {});
  ASSERT_TRUE(exit_of(dead).is_normal());
  EXPECT_EQ(thrown_code([&] { rt().register_name("ghost", dead.id); }), "not_alive");
  EXPECT_FALSE(bool(rt().whereis("ghost")));
}

TEST_P(names, send_by_name_delivers_to_the_registered_process) {
  oneshot<std::string> got;
  oneshot<void> registered;
  rt().spawn([got, registered] {
    ember::register_name("echo", ember::self());
    registered.set();
    auto a = ember::receive([](std::string s) { return s; });
    auto b = ember::receive([](std::string s) { return s; });
    got.set(a + "," + b);
  });
  registered.get();
  rt().send("echo", std::string("from outside"));
  in_process(rt(), [] { ember::send("echo", std::string("from inside")); });
  EXPECT_EQ(got.get(), "from outside,from inside");
}

TEST_P(names, registering_a_taken_name_throws_name_taken) {
  auto got = in_process(rt(), [] {
    ember::register_name("taken", ember::self());
    pid other = ember::spawn([] { ember::receive([](int) {}); });
    auto code = thrown_code([&] { ember::register_name("taken", other); });
    bool still_mine = ember::whereis("taken") == ember::self();
    ember::send(other, 0);
    ember::unregister("taken");
    return code + (still_mine ? " (kept)" : " (lost)");
  });
  EXPECT_EQ(got, "name_taken (kept)");
}

TEST_P(names, registering_a_second_name_for_a_process_throws_already_registered) {
  auto got = in_process(rt(), [] {
    ember::register_name("first", ember::self());
    auto code = thrown_code([] { ember::register_name("second", ember::self()); });
    bool second_free = !ember::whereis("second");
    ember::unregister("first");
    return code + (second_free ? " (second free)" : " (second taken)");
  });
  EXPECT_EQ(got, "already_registered (second free)");
}

TEST_P(names, registering_a_dead_process_throws_not_alive) {
  watched dead = spawn_watched(rt(), [] {});
  ASSERT_TRUE(exit_of(dead).is_normal());
  auto got = in_process(rt(), [p = dead.id] {
    auto code = thrown_code([&] { ember::register_name("ghost", p); });
    return code + (ember::whereis("ghost") ? " (registered)" : " (free)");
  });
  EXPECT_EQ(got, "not_alive (free)");
}

TEST_P(names, unregister_frees_the_name) {
  auto got = in_process(rt(), [] {
    std::string r;
    ember::register_name("temp", ember::self());
    r += ember::unregister("temp") ? "true" : "false";
    r += ember::whereis("temp") ? " found" : " free";
    r += ember::unregister("temp") ? " true" : " false";
    // the name, and the process, can be registered again
    ember::register_name("temp", ember::self());
    r += ember::whereis("temp") == ember::self() ? " again" : " not again";
    ember::unregister("temp");
    return r;
  });
  EXPECT_EQ(got, "true free false again");
}

TEST_P(names, unregister_of_an_unknown_name_returns_false) {
  EXPECT_FALSE(in_process(rt(), [] { return ember::unregister("never registered"); }));
}

TEST_P(names, whereis_of_an_unknown_name_returns_the_null_pid) {
  EXPECT_FALSE(bool(rt().whereis("nobody")));
  EXPECT_FALSE(in_process(rt(), [] { return bool(ember::whereis("nobody")); }));
}

TEST_P(names, name_is_freed_when_its_process_dies) {
  // Once the down message of a registered process has arrived, its name is
  // free: whereis gives the null pid and another process may take it (what
  // a supervisor restarting a registered child relies on).
  for (exit_reason how : {exit_reason::normal(), exit_reason("crash"), exit_reason::kill()}) {
    auto got = in_process(rt(), [how] {
      auto [p, ref] = ember::spawn_monitor([how] {
        ember::register_name("mortal", ember::self());
        if (how.is(exit_reason::kind::kill)) {
          ember::receive([](int) {});  // killed from outside
        }
        ember::exit(how);
      });
      if (how.is(exit_reason::kind::kill)) {
        while (!ember::whereis("mortal")) ember::yield();
        ember::exit(p, how);
      }
      ember::receive([](ember::down) {});
      std::string r = ember::whereis("mortal") ? "still registered" : "free";
      ember::register_name("mortal", ember::self());
      ember::unregister("mortal");
      return r;
    });
    EXPECT_EQ(got, "free") << "process ended by " << how;
    EXPECT_FALSE(bool(rt().whereis("mortal")));
  }
}

TEST_P(names, sending_to_an_unknown_name_throws_no_such_name) {
  auto inside = in_process(rt(), [] { return thrown_code([] { ember::send("nobody", 1); }); });
  EXPECT_EQ(inside, "no_such_name");
  EXPECT_EQ(thrown_code([&] { rt().send("nobody", 1); }), "no_such_name");
}

TEST_P(names, sending_to_the_name_of_a_dead_process_throws_no_such_name) {
  watched w = spawn_watched(rt(), [] { ember::register_name("gone", ember::self()); });
  ASSERT_TRUE(exit_of(w).is_normal());
  EXPECT_EQ(thrown_code([&] { rt().send("gone", 1); }), "no_such_name");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(names);

}  // namespace
