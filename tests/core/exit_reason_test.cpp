// Exit reasons: values users match on. normal on return; an uncaught
// exception carries its type name and what(); user reasons carry a string
// and optionally a value; every reason prints.
#include <gtest/gtest.h>

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ember_test.hpp"

namespace reason_test_types {
struct custom_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace reason_test_types

namespace {

using namespace ember_test;
using ember::exit_reason;
using kind = ember::exit_reason::kind;

std::string streamed(const exit_reason& r) {
  std::ostringstream os;
  os << r;
  return os.str();
}

// ---- the values themselves ----

TEST(exit_reason, default_reason_is_normal) {
  exit_reason r;
  EXPECT_TRUE(r.is_normal());
  EXPECT_TRUE(r.is(kind::normal));
  EXPECT_EQ(r, exit_reason::normal());
  EXPECT_EQ(r.to_string(), "normal");
}

TEST(exit_reason, each_named_reason_has_its_kind) {
  EXPECT_EQ(exit_reason::shutdown().what_kind(), kind::shutdown);
  EXPECT_EQ(exit_reason::kill().what_kind(), kind::kill);
  EXPECT_EQ(exit_reason::killed().what_kind(), kind::killed);
  EXPECT_EQ(exit_reason::noproc().what_kind(), kind::noproc);
  EXPECT_EQ(exit_reason::noconnection().what_kind(), kind::noconnection);
  EXPECT_EQ(exit_reason::system_limit("no stacks").what_kind(), kind::system_limit);
  EXPECT_EQ(exit_reason::exception("E", "w").what_kind(), kind::exception);
  EXPECT_FALSE(exit_reason::killed().is_normal());
}

TEST(exit_reason, named_reasons_print_as_their_names) {
  EXPECT_EQ(exit_reason::normal().to_string(), "normal");
  EXPECT_EQ(exit_reason::shutdown().to_string(), "shutdown");
  EXPECT_EQ(exit_reason::kill().to_string(), "kill");
  EXPECT_EQ(exit_reason::killed().to_string(), "killed");
  EXPECT_EQ(exit_reason::noproc().to_string(), "noproc");
  EXPECT_EQ(exit_reason::noconnection().to_string(), "noconnection");
}

TEST(exit_reason, user_string_reason_carries_its_text) {
  exit_reason r = "bad_request";
  EXPECT_TRUE(r.is(kind::user));
  EXPECT_EQ(r.text(), "bad_request");
  EXPECT_EQ(r.exception_type(), "");
  EXPECT_EQ(r.to_string(), "bad_request");
  EXPECT_EQ(exit_reason(std::string("bad_request")), r);
  EXPECT_EQ(r.value<int>(), nullptr);
}

TEST(exit_reason, user_value_reason_carries_its_value_and_text) {
  struct code {
    int n;
  };
  auto r = exit_reason::user_value(code{42}, "code 42");
  EXPECT_TRUE(r.is(kind::user));
  ASSERT_NE(r.value<code>(), nullptr);
  EXPECT_EQ(r.value<code>()->n, 42);
  EXPECT_EQ(r.value<int>(), nullptr);
  EXPECT_EQ(r.text(), "code 42");
  EXPECT_EQ(r.to_string(), "code 42");
  exit_reason copy = r;  // reasons fan out to many watchers
  ASSERT_NE(copy.value<code>(), nullptr);
  EXPECT_EQ(copy.value<code>()->n, 42);
}

TEST(exit_reason, exception_reason_carries_type_and_what) {
  auto r = exit_reason::exception("std::runtime_error", "boom");
  EXPECT_EQ(r.exception_type(), "std::runtime_error");
  EXPECT_EQ(r.text(), "boom");
  EXPECT_EQ(r.to_string(), "exception: std::runtime_error: boom");
}

TEST(exit_reason, system_limit_reason_carries_its_text) {
  auto r = exit_reason::system_limit("out of stack mappings");
  EXPECT_EQ(r.text(), "out of stack mappings");
  EXPECT_NE(r.to_string().find("system_limit"), std::string::npos) << r.to_string();
}

TEST(exit_reason, stream_output_matches_to_string) {
  for (const exit_reason& r :
       {exit_reason::normal(), exit_reason::killed(), exit_reason("bad_request"),
        exit_reason::exception("std::logic_error", "oops"), exit_reason::noproc()}) {
    EXPECT_EQ(streamed(r), r.to_string());
  }
}

TEST(exit_reason, reasons_compare_by_kind_and_text) {
  EXPECT_EQ(exit_reason::killed(), exit_reason::killed());
  EXPECT_NE(exit_reason::killed(), exit_reason::kill());
  EXPECT_NE(exit_reason::normal(), exit_reason::shutdown());
  EXPECT_EQ(exit_reason("a"), exit_reason("a"));
  EXPECT_NE(exit_reason("a"), exit_reason("b"));
  EXPECT_EQ(exit_reason::exception("E", "w"), exit_reason::exception("E", "w"));
  EXPECT_NE(exit_reason::exception("E", "w"), exit_reason::exception("F", "w"));
  EXPECT_NE(exit_reason::exception("E", "w"), exit_reason::exception("E", "x"));
  // user values compare by text
  EXPECT_EQ(exit_reason::user_value(1, "same"), exit_reason::user_value(2, "same"));
  EXPECT_NE(exit_reason("normal"), exit_reason::normal()) << "a user text is not the kind";
}

// ---- the reasons processes exit with ----

class exit_reasons : public runtime_test {};

TEST_P(exit_reasons, returning_from_the_process_function_exits_normal) {
  watched w = spawn_watched(rt(), [] {});
  EXPECT_EQ(exit_of(w), exit_reason::normal());
}

TEST_P(exit_reasons, uncaught_exception_exits_with_its_type_and_what) {
  watched w = spawn_watched(rt(), [] { throw std::runtime_error("boom"); });
  exit_reason r = exit_of(w);
  EXPECT_TRUE(r.is(kind::exception)) << r;
  EXPECT_EQ(r.exception_type(), "std::runtime_error");
  EXPECT_EQ(r.text(), "boom");
  EXPECT_EQ(r.to_string(), "exception: std::runtime_error: boom");
}

TEST_P(exit_reasons, uncaught_exception_of_a_user_type_names_the_dynamic_type) {
  watched w = spawn_watched(rt(), [] { throw reason_test_types::custom_error("custom failure"); });
  exit_reason r = exit_of(w);
  EXPECT_TRUE(r.is(kind::exception)) << r;
  EXPECT_EQ(r.exception_type(), "reason_test_types::custom_error");
  EXPECT_EQ(r.text(), "custom failure");
}

TEST_P(exit_reasons, uncaught_non_std_exception_exits_with_exception_kind) {
  watched w = spawn_watched(rt(), [] { throw 42; });
  exit_reason r = exit_of(w);
  EXPECT_TRUE(r.is(kind::exception)) << r;
  EXPECT_EQ(r.exception_type(), "int");
}

TEST_P(exit_reasons, exit_with_a_user_string_ends_the_process_with_it) {
  watched w = spawn_watched(rt(), [] {
    ember::exit("bad_request");
  });
  exit_reason r = exit_of(w);
  EXPECT_TRUE(r.is(kind::user));
  EXPECT_EQ(r.text(), "bad_request");
}

TEST_P(exit_reasons, exit_with_a_user_value_delivers_the_value_to_watchers) {
  struct failure {
    int code;
    std::string detail;
  };
  watched w = spawn_watched(rt(), [] {
    ember::exit(exit_reason::user_value(failure{7, "disk full"}, "failure 7"));
  });
  exit_reason r = exit_of(w);
  ASSERT_NE(r.value<failure>(), nullptr) << r;
  EXPECT_EQ(r.value<failure>()->code, 7);
  EXPECT_EQ(r.value<failure>()->detail, "disk full");
  EXPECT_EQ(r.to_string(), "failure 7");
}

TEST_P(exit_reasons, exit_normal_from_inside_ends_the_process_normally) {
  destructor_counter dtors;
  watched w = spawn_watched(rt(), [dtors] {
    auto g = dtors.make();
    ember::exit(exit_reason::normal());
  });
  EXPECT_TRUE(exit_of(w).is_normal());
  EXPECT_EQ(dtors.value(), 1) << "exit(reason) unwinds the caller's stack";
}

TEST_P(exit_reasons, exit_from_a_nested_call_unwinds_the_whole_stack) {
  destructor_counter dtors;
  watched w = spawn_watched(rt(), [dtors] {
    auto g1 = dtors.make();
    [&] {
      auto g2 = dtors.make();
      [&] {
        auto g3 = dtors.make();
        ember::exit("deep");
      }();
    }();
  });
  EXPECT_EQ(exit_of(w), exit_reason("deep"));
  EXPECT_EQ(dtors.value(), 3);
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(exit_reasons);

}  // namespace
