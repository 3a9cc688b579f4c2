// Applications: ember::start(rt, app) starts a named supervision tree from
// outside processes; stop() stops it in reverse start order; wait() says
// how it ended.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::message;
using ember::pid;
namespace gs = ember::gen_server;
namespace sup = ember::supervisor;

class applications : public runtime_test {};

struct crash {};

// A child that reports its start and its stop (it traps exits, so the
// supervisor's shutdown reaches terminate).
struct reporter {
  std::string name;
  inbox<std::string> events;
  reporter(std::string n, inbox<std::string> e) : name(std::move(n)), events(std::move(e)) {}
  void init() {
    ember::trap_exit(true);
    events.put("start " + name);
  }
  void handle_cast(message& m) {
    if (m.is<crash>()) throw std::runtime_error("told to crash");
  }
  void terminate(const exit_reason& r) { events.put("stop " + name + " " + r.to_string()); }
};

struct failing_init {
  void init() { throw std::runtime_error("no database"); }
};

ember::application two_children(const std::string& name, inbox<std::string> events, int intensity = 1) {
  ember::application app;
  app.name = name;
  app.spec.flags.intensity = intensity;
  app.spec.children = {sup::worker<reporter>("a", std::string("a"), events),
                       sup::worker<reporter>("b", std::string("b"), events)};
  return app;
}

TEST_P(applications, start_starts_the_children_in_order_and_stop_stops_them_in_reverse) {
  inbox<std::string> events;
  auto app = ember::start(rt(), two_children("shop", events));
  EXPECT_EQ(events.size(), 2u) << "start returns once every child has started";
  EXPECT_EQ(events.take(), "start a");
  EXPECT_EQ(events.take(), "start b");
  EXPECT_FALSE(app.ended());
  app.stop();
  EXPECT_EQ(events.take(), "stop b shutdown");
  EXPECT_EQ(events.take(), "stop a shutdown");
  EXPECT_TRUE(app.ended());
  EXPECT_EQ(app.wait(), exit_reason::shutdown());
  app.stop();  // again: nothing to do
}

TEST_P(applications, the_top_supervisor_is_registered_under_the_application_name) {
  inbox<std::string> events;
  auto app = ember::start(rt(), two_children("shop", events));
  pid top = app.top();
  auto got = in_process(rt(), [] {
    std::string ids;
    for (auto& c : sup::which_children("shop")) ids += c.id + (c.child ? "+" : "-") + " ";
    return ember::whereis("shop").to_string() + " " + ids;
  });
  EXPECT_EQ(got, top.to_string() + " a+ b+ ");
  app.stop();
}

TEST_P(applications, a_tree_that_cannot_start_fails_start_naming_the_child) {
  inbox<std::string> events;
  ember::application app;
  app.name = "broken";
  app.spec.children = {sup::worker<reporter>("a", std::string("a"), events), sup::worker<failing_init>("db")};
  try {
    ember::start(rt(), app);
    FAIL() << "start returned";
  } catch (const ember::exit_error& e) {
    EXPECT_EQ(e.code(), ember::errc::start_failed);
    EXPECT_NE(std::string(e.reason().text()).find("failed_to_start_child 'db'"), std::string::npos)
        << e.reason();
    EXPECT_NE(std::string(e.reason().text()).find("no database"), std::string::npos) << e.reason();
  }
  EXPECT_EQ(events.take(), "start a");
  EXPECT_EQ(events.take(), "stop a shutdown") << "the children started before are stopped";
}

TEST_P(applications, a_tree_past_its_restart_intensity_ends_the_application_with_shutdown) {
  inbox<std::string> events;
  auto app = ember::start(rt(), two_children("fragile", events, /*intensity=*/0));
  EXPECT_EQ(events.take(), "start a");
  EXPECT_EQ(events.take(), "start b");
  in_process(rt(), [] {
    gs::cast(sup::which_children("fragile")[0].child, crash{});
    return 0;
  });
  EXPECT_EQ(app.wait(), exit_reason::shutdown());
  EXPECT_TRUE(app.ended());
  EXPECT_EQ(events.take(), "stop a exception: std::runtime_error: told to crash");
  EXPECT_EQ(events.take(), "stop b shutdown") << "the supervisor stopped the rest before it exited";
  app.stop();  // ended already: nothing to do
}

TEST_P(applications, destroying_the_handle_stops_the_application) {
  inbox<std::string> events;
  {
    auto app = ember::start(rt(), two_children("scoped", events));
    EXPECT_EQ(events.take(), "start a");
    EXPECT_EQ(events.take(), "start b");
  }
  EXPECT_EQ(events.size(), 2u);
  EXPECT_EQ(events.take(), "stop b shutdown");
  EXPECT_EQ(events.take(), "stop a shutdown");
}

TEST_P(applications, start_from_inside_a_process_is_refused) {
  ember::runtime* runtime = &rt();
  auto got = in_process(rt(), [runtime] {
    try {
      ember::application app;
      app.name = "inner";
      ember::start(*runtime, app);
      return std::string("started");
    } catch (const ember::error& e) {
      return std::string(e.code() == ember::errc::invalid_argument ? "invalid_argument: " : "other: ") + e.what();
    }
  });
  EXPECT_EQ(got.rfind("invalid_argument: ", 0), 0u) << got;
}

TEST(application_shutdown, a_runtime_shut_down_under_an_application_ends_it_with_killed) {
  inbox<std::string> events;
  ember::runtime rt;
  auto app = ember::start(rt, two_children("doomed", events));
  EXPECT_EQ(events.take(), "start a");
  rt.shutdown();
  EXPECT_EQ(app.wait(), exit_reason::killed());
  EXPECT_TRUE(app.ended());
  app.stop();  // nothing to do, and no use of the stopped runtime
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(applications);

}  // namespace
