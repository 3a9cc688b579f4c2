// Exit signals: exit(pid, reason) ends a non-trapping target with reason;
// normal is ignored (unless sent to oneself); kill cannot be trapped and
// ends the target with killed; trap_exit(true) turns signals into
// exit_signal messages. A process ended by a signal unwinds its stack.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::exit_signal;
using ember::pid;

class exit_signals : public runtime_test {};

// A process that answers "ping" with "pong" until it gets "stop": it shows
// it is alive by answering.
void ponger() {
  for (;;) {
    bool stop = ember::receive([](std::pair<pid, std::string> m) {
      if (m.second == "stop") return true;
      ember::send(m.first, std::string("pong"));
      return false;
    });
    if (stop) return;
  }
}

// From inside a process: true if `p` answers a ping within `limit`.
bool answers(pid p, std::chrono::milliseconds limit = 10s) {
  ember::send(p, std::make_pair(ember::self(), std::string("ping")));
  return ember::receive([](std::string s) { return s == "pong"; },
                        ember::after(limit, [] { return false; }));
}

TEST_P(exit_signals, exit_signal_ends_a_non_trapping_target_with_its_reason) {
  watched w = spawn_watched(rt(), ponger);
  in_process(rt(), [p = w.id] { ember::exit(p, "terminated"); });
  EXPECT_EQ(exit_of(w), exit_reason("terminated"));
}

TEST_P(exit_signals, exit_signal_from_outside_ends_the_target_with_its_reason) {
  watched w = spawn_watched(rt(), ponger);
  rt().exit(w.id, exit_reason::shutdown());
  EXPECT_EQ(exit_of(w), exit_reason::shutdown());
}

TEST_P(exit_signals, normal_exit_signal_is_ignored_by_a_non_trapping_target) {
  watched w = spawn_watched(rt(), ponger);
  auto alive = in_process(rt(), [p = w.id] {
    ember::exit(p, exit_reason::normal());
    return answers(p);  // the ping is sent after the signal: ordered
  });
  EXPECT_TRUE(alive);
  rt().exit(w.id, exit_reason::normal());
  EXPECT_TRUE(in_process(rt(), [p = w.id] { return answers(p); }));
  rt().send(w.id, std::make_pair(pid(), std::string("stop")));
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(exit_signals, normal_exit_signal_sent_to_oneself_ends_the_caller_normally) {
  destructor_counter dtors;
  watched w = spawn_watched(rt(), [dtors] {
    auto g = dtors.make();
    ember::exit(ember::self(), exit_reason::normal());
    ember::receive([](int) {});  // the signal ends the process here at the latest
  });
  EXPECT_TRUE(exit_of(w).is_normal());
  EXPECT_EQ(dtors.value(), 1);
}

TEST_P(exit_signals, kill_ends_the_target_with_reason_killed) {
  watched w = spawn_watched(rt(), ponger);
  rt().exit(w.id, exit_reason::kill());
  EXPECT_EQ(exit_of(w), exit_reason::killed());
}

TEST_P(exit_signals, kill_cannot_be_trapped) {
  oneshot<void> trapping;
  watched w = spawn_watched(rt(), [trapping] {
    ember::trap_exit(true);
    trapping.set();
    for (;;) ember::receive([](ember::message&) {});  // ignores every message
  });
  trapping.get();
  in_process(rt(), [p = w.id] { ember::exit(p, exit_reason::kill()); });
  EXPECT_EQ(exit_of(w), exit_reason::killed());
}

TEST_P(exit_signals, trap_exit_turns_an_exit_signal_into_an_exit_signal_message) {
  oneshot<void> trapping;
  oneshot<std::string> got;
  watched w = spawn_watched(rt(), [trapping, got] {
    ember::trap_exit(true);
    trapping.set();
    got.set(ember::receive([](exit_signal s) {
      return s.from.to_string() + " " + s.reason.to_string();
    }));
  });
  trapping.get();
  pid sender = in_process(rt(), [p = w.id] {
    ember::exit(p, "please stop");
    return ember::self();
  });
  EXPECT_EQ(got.get(), sender.to_string() + " please stop");
  EXPECT_TRUE(exit_of(w).is_normal()) << "the trapping process lived on and returned";
}

TEST_P(exit_signals, trapping_process_gets_a_normal_exit_signal_as_a_message) {
  // Erlang: exit(Pid, normal) to a process trapping exits delivers
  // {'EXIT', From, normal}.
  oneshot<void> trapping;
  oneshot<std::string> got;
  watched w = spawn_watched(rt(), [trapping, got] {
    ember::trap_exit(true);
    trapping.set();
    got.set(ember::receive([](exit_signal s) { return s.reason.to_string(); }));
  });
  trapping.get();
  in_process(rt(), [p = w.id] { ember::exit(p, exit_reason::normal()); });
  EXPECT_EQ(got.get(), "normal");
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(exit_signals, killed_as_a_plain_exit_signal_reason_can_be_trapped) {
  // Only `kill` is untrappable; `killed` sent by exit/2 is an ordinary reason.
  oneshot<void> trapping;
  oneshot<std::string> got;
  watched w = spawn_watched(rt(), [trapping, got] {
    ember::trap_exit(true);
    trapping.set();
    got.set(ember::receive([](exit_signal s) { return s.reason.to_string(); }));
  });
  trapping.get();
  rt().exit(w.id, exit_reason::killed());
  EXPECT_EQ(got.get(), "killed");
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(exit_signals, trap_exit_returns_the_previous_setting) {
  auto got = in_process(rt(), [] {
    std::string r;
    r += ember::trap_exit(true) ? "on" : "off";
    r += ember::trap_exit(true) ? " on" : " off";
    r += ember::trap_exit(false) ? " on" : " off";
    r += ember::trap_exit(false) ? " on" : " off";
    return r;
  });
  EXPECT_EQ(got, "off on on off");
}

TEST_P(exit_signals, turning_trap_exit_off_makes_exit_signals_fatal_again) {
  oneshot<void> ready;
  watched w = spawn_watched(rt(), [ready] {
    ember::trap_exit(true);
    ember::trap_exit(false);
    ready.set();
    ember::receive([](exit_signal) {});
  });
  ready.get();
  rt().exit(w.id, "fatal");
  EXPECT_EQ(exit_of(w), exit_reason("fatal"));
}

TEST_P(exit_signals, exit_signal_to_a_dead_pid_is_a_no_op) {
  watched dead = spawn_watched(rt(), [] {});
  ASSERT_TRUE(exit_of(dead).is_normal());
  EXPECT_NO_THROW(rt().exit(dead.id, exit_reason::kill()));
  EXPECT_TRUE(in_process(rt(), [p = dead.id] {
    ember::exit(p, "x");
    ember::exit(p, exit_reason::kill());
    return true;
  }));
}

TEST_P(exit_signals, exit_signal_reaches_a_process_that_keeps_running) {
  // A runnable process (yielding in a loop, never receiving) is ended by a
  // signal at its next runtime call.
  oneshot<void> running;
  watched w = spawn_watched(rt(), [running] {
    running.set();
    for (;;) ember::yield();
  });
  running.get();
  rt().exit(w.id, "stop spinning");
  EXPECT_EQ(exit_of(w), exit_reason("stop spinning"));
}

TEST_P(exit_signals, killing_a_process_suspended_in_receive_unwinds_its_stack) {
  destructor_counter dtors;
  oneshot<void> waiting;
  watched w = spawn_watched(rt(), [dtors, waiting] {
    auto outer = dtors.make();
    [&] {
      auto inner = dtors.make();
      waiting.set();
      ember::receive([](int) {});
    }();
  });
  waiting.get();
  rt().exit(w.id, exit_reason::kill());
  EXPECT_EQ(exit_of(w), exit_reason::killed());
  EXPECT_EQ(dtors.value(), 2) << "destructors run before the process is reported dead";
}

TEST_P(exit_signals, killing_a_process_suspended_in_sleep_for_unwinds_its_stack) {
  destructor_counter dtors;
  oneshot<void> sleeping;
  watched w = spawn_watched(rt(), [dtors, sleeping] {
    auto g = dtors.make();
    sleeping.set();
    ember::sleep_for(std::chrono::hours(1));
  });
  sleeping.get();
  rt().exit(w.id, exit_reason::kill());
  EXPECT_EQ(exit_of(w), exit_reason::killed());
  EXPECT_EQ(dtors.value(), 1);
}

TEST_P(exit_signals, exit_signal_wakes_a_sleeping_process_and_ends_it_with_the_reason) {
  destructor_counter dtors;
  oneshot<void> sleeping;
  watched w = spawn_watched(rt(), [dtors, sleeping] {
    auto g = dtors.make();
    sleeping.set();
    ember::sleep_for(std::chrono::hours(1));
  });
  sleeping.get();
  rt().exit(w.id, "wake up and die");
  EXPECT_EQ(exit_of(w), exit_reason("wake up and die"));
  EXPECT_EQ(dtors.value(), 1);
}

TEST_P(exit_signals, kill_is_not_swallowed_by_a_catch_all_in_process_code) {
  // However the runtime unwinds a killed process, user code catching
  // everything must not keep it alive: kill is untrappable.
  oneshot<void> waiting;
  watched w = spawn_watched(rt(), [waiting] {
    for (int round = 0;; ++round) {
      try {
        if (round == 0) waiting.set();
        ember::receive([](int) {});
      } catch (...) {
        // swallow everything and go round again
      }
    }
  });
  waiting.get();
  rt().exit(w.id, exit_reason::kill());
  EXPECT_EQ(exit_of(w, 10s), exit_reason::killed());
}

TEST_P(exit_signals, exit_signal_is_not_swallowed_by_a_catch_all_in_process_code) {
  oneshot<void> waiting;
  watched w = spawn_watched(rt(), [waiting] {
    for (int round = 0;; ++round) {
      try {
        if (round == 0) waiting.set();
        ember::receive([](int) {});
      } catch (...) {
      }
    }
  });
  waiting.get();
  rt().exit(w.id, "must end");
  EXPECT_EQ(exit_of(w, 10s), exit_reason("must end"));
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(exit_signals);

}  // namespace
