// Handler processes: spawn(handler(state)) calls state(message&) once per
// message, after an optional state.init(). They hold no stack while idle,
// may receive (and so suspend) inside a handler, and stop with exit(reason).
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::message;
using ember::pid;

class handlers : public runtime_test {};

struct stop {};

// Records every int it receives; on stop, reports them and exits normally.
struct int_recorder {
  inbox<std::vector<int>> out;
  std::vector<int> seen;
  void operator()(message& m) {
    if (int* v = m.get_if<int>()) seen.push_back(*v);
    if (m.is<stop>()) {
      out.put(seen);
      ember::exit(exit_reason::normal());
    }
  }
};

TEST_P(handlers, handler_is_called_once_per_message_in_arrival_order) {
  inbox<std::vector<int>> out;
  watched w = spawn_watched(rt(), ember::handler(int_recorder{out, {}}));
  std::vector<int> expected;
  for (int i = 0; i < 1000; ++i) {
    rt().send(w.id, i);
    expected.push_back(i);
  }
  rt().send(w.id, stop{});
  EXPECT_EQ(out.take(), expected);
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(handlers, handler_process_spawned_from_the_test_thread_runs) {
  inbox<std::vector<int>> out;
  pid p = rt().spawn(ember::handler(int_recorder{out, {}}));
  rt().send(p, 5);
  rt().send(p, stop{});
  EXPECT_EQ(out.take(), std::vector<int>{5});
}

struct with_init {
  inbox<std::string> events;
  void init() { events.put("init " + ember::self().to_string()); }
  void operator()(message& m) {
    events.put("message " + std::to_string(m.get<int>()));
    ember::exit(exit_reason::normal());
  }
};

TEST_P(handlers, init_runs_as_soon_as_the_process_is_spawned) {
  inbox<std::string> events;
  pid p = rt().spawn(ember::handler(with_init{events}));
  // No message sent yet: init has run all the same.
  EXPECT_EQ(events.take(), "init " + p.to_string());
  rt().send(p, 1);
  EXPECT_EQ(events.take(), "message 1");
}

TEST_P(handlers, init_runs_once_before_the_first_message) {
  inbox<std::string> events;
  auto p = in_process(rt(), [events] {
    pid p = ember::spawn(ember::handler(with_init{events}));
    ember::send(p, 9);  // may arrive before init has run: it must wait
    return p;
  });
  EXPECT_EQ(events.take(), "init " + p.to_string());
  EXPECT_EQ(events.take(), "message 9");
}

TEST_P(handlers, handler_state_without_init_is_accepted) {
  oneshot<int> got;
  pid p = rt().spawn(ember::handler([got](message& m) {
    got.set(m.get<int>());
    ember::exit(exit_reason::normal());
  }));
  rt().send(p, 3);
  EXPECT_EQ(got.get(), 3);
}

TEST_P(handlers, self_inside_a_handler_is_the_handler_process) {
  oneshot<pid> me;
  pid p = rt().spawn(ember::handler([me](message&) {
    me.set(ember::self());
    ember::exit(exit_reason::normal());
  }));
  rt().send(p, 0);
  EXPECT_EQ(me.get(), p);
}

TEST_P(handlers, handler_stopping_with_exit_ends_with_that_reason_and_destroys_its_state) {
  destructor_counter dtors;
  struct state {
    std::shared_ptr<destructor_counter::guard> g;
    void operator()(message& m) {
      if (m.is<stop>()) ember::exit("stopped by request");
    }
  };
  watched w = spawn_watched(
      rt(), ember::handler(state{std::make_shared<destructor_counter::guard>(dtors.count)}));
  rt().send(w.id, 1);
  rt().send(w.id, stop{});
  EXPECT_EQ(exit_of(w), exit_reason("stopped by request"));
  EXPECT_TRUE(eventually([&] { return dtors.value() == 1; }))
      << "the handler's state was not destroyed after it exited";
}

TEST_P(handlers, handler_throwing_ends_the_process_with_the_exception) {
  watched w = spawn_watched(rt(), ember::handler([](message&) {
                              throw std::invalid_argument("bad input");
                            }));
  rt().send(w.id, 1);
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.exception_type(), "std::invalid_argument");
  EXPECT_EQ(r.text(), "bad input");
}

TEST_P(handlers, handler_that_receives_inside_its_handler_suspends_and_resumes) {
  // On "ask" the handler asks a helper and waits (receive) for the int
  // reply. Strings that arrive meanwhile stay queued for later handler
  // calls, in order; the reply is taken out of turn.
  struct asker {
    inbox<std::string> log;
    void operator()(message& m) {
      if (auto* s = m.get_if<std::string>()) {
        if (*s == "ask") {
          pid me = ember::self();
          ember::spawn([me] {
            for (int i = 0; i < 3; ++i) ember::send(me, "queued " + std::to_string(i));
            ember::send(me, 42);
          });
          int reply = ember::receive([](int v) { return v; });
          log.put("reply " + std::to_string(reply));
        } else if (*s == "end") {
          ember::exit(exit_reason::normal());
        } else {
          log.put(*s);
        }
      }
    }
  };
  inbox<std::string> log;
  watched w = spawn_watched(rt(), ember::handler(asker{log}));
  rt().send(w.id, std::string("ask"));
  EXPECT_EQ(log.take(), "reply 42");
  EXPECT_EQ(log.take(), "queued 0");
  EXPECT_EQ(log.take(), "queued 1");
  EXPECT_EQ(log.take(), "queued 2");
  rt().send(w.id, std::string("end"));
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(handlers, handler_suspended_in_receive_does_not_block_its_scheduler) {
  // Many handlers wait inside their handler at once; a single scheduler
  // must still run the process that releases them.
  struct waiter {
    inbox<int> done;
    void operator()(message& m) {
      if (m.is<std::string>()) {
        int v = ember::receive([](int x) { return x; });
        done.put(v);
        ember::exit(exit_reason::normal());
      }
    }
  };
  inbox<int> done;
  std::vector<pid> ws;
  for (int i = 0; i < 50; ++i) ws.push_back(rt().spawn(ember::handler(waiter{done})));
  for (pid p : ws) rt().send(p, std::string("wait"));
  for (std::size_t i = 0; i < ws.size(); ++i) rt().send(ws[i], int(i));
  long sum = 0;
  for (std::size_t i = 0; i < ws.size(); ++i) sum += done.take();
  EXPECT_EQ(sum, 49 * 50 / 2);
}

TEST_P(handlers, handler_killed_while_suspended_in_receive_unwinds_its_stack) {
  destructor_counter dtors;
  oneshot<void> waiting;
  watched w = spawn_watched(rt(), ember::handler([dtors, waiting](message&) {
                              auto g = dtors.make();
                              waiting.set();
                              ember::receive([](double) {});
                            }));
  rt().send(w.id, 1);
  waiting.get();
  rt().exit(w.id, exit_reason::kill());
  EXPECT_EQ(exit_of(w), exit_reason::killed());
  EXPECT_EQ(dtors.value(), 1);
}

TEST_P(handlers, idle_handler_process_is_killed_with_killed) {
  oneshot<void> initialised;
  struct idle {
    oneshot<void> initialised;
    void init() { initialised.set(); }
    void operator()(message&) {}
  };
  watched w = spawn_watched(rt(), ember::handler(idle{initialised}));
  initialised.get();
  rt().exit(w.id, exit_reason::kill());
  EXPECT_EQ(exit_of(w), exit_reason::killed());
}

TEST_P(handlers, idle_handler_processes_hold_no_stack) {
  inbox<int> ready;
  struct idle {
    inbox<int> ready;
    void init() { ready.put(1); }
    void operator()(message& m) {
      if (m.is<stop>()) ember::exit(exit_reason::normal());
    }
  };
  std::vector<pid> ps;
  for (int i = 0; i < 1000; ++i) ps.push_back(rt().spawn(ember::handler(idle{ready})));
  for (int i = 0; i < 1000; ++i) ready.take();
  EXPECT_TRUE(eventually([&] { return rt().stats().stacks_in_use == 0; }))
      << rt().stats().stacks_in_use << " stacks held by 1000 idle handler processes";
  EXPECT_EQ(rt().stats().processes, 1000u);
  for (pid p : ps) rt().send(p, stop{});
}

TEST_P(handlers, handler_process_trapping_exits_gets_exit_signal_messages) {
  struct trapper {
    oneshot<void> trapping;
    inbox<std::string> out;
    void init() {
      ember::trap_exit(true);
      trapping.set();
    }
    void operator()(message& m) {
      if (auto* s = m.get_if<ember::exit_signal>()) {
        out.put("from " + s->from.to_string() + ": " + s->reason.to_string());
        ember::exit(exit_reason::normal());
      }
    }
  };
  oneshot<void> trapping;
  inbox<std::string> out;
  watched w = spawn_watched(rt(), ember::handler(trapper{trapping, out}));
  trapping.get();
  pid sender = in_process(rt(), [p = w.id] {
    ember::exit(p, "please stop");
    return ember::self();
  });
  EXPECT_EQ(out.take(), "from " + sender.to_string() + ": please stop");
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(handlers, message_get_of_another_type_throws_bad_message_type) {
  oneshot<std::string> out;
  pid p = rt().spawn(ember::handler([out](message& m) {
    std::string r = "is<int>=" + std::to_string(m.is<int>()) +
                    " is<double>=" + std::to_string(m.is<double>()) +
                    " get_if<double>=" + (m.get_if<double>() ? "set" : "null");
    try {
      (void)m.get<double>();
      r += " get<double> returned";
    } catch (const ember::error& e) {
      r += e.code() == ember::errc::bad_message_type ? " bad_message_type" : " other error";
    }
    r += " type=" + m.type_name();
    out.set(r);
    ember::exit(exit_reason::normal());
  }));
  rt().send(p, 5);
  EXPECT_EQ(out.get(), "is<int>=1 is<double>=0 get_if<double>=null bad_message_type type=int");
}

TEST_P(handlers, stop_ends_a_handler_process_when_the_current_handler_call_returns) {
  // Unlike exit(reason), stop does not unwind: the rest of the handler call
  // runs, and no later message is handled.
  struct stopper {
    inbox<std::string> log;
    void operator()(message& m) {
      int v = m.get<int>();
      log.put("handling " + std::to_string(v));
      if (v == 1) {
        ember::send(ember::self(), 2);  // queued, never handled
        ember::stop("stopped after 1");
        log.put("after stop");
      }
    }
  };
  inbox<std::string> log;
  watched w = spawn_watched(rt(), ember::handler(stopper{log}));
  rt().send(w.id, 1);
  EXPECT_EQ(exit_of(w), exit_reason("stopped after 1"));
  EXPECT_EQ(log.take(), "handling 1");
  EXPECT_EQ(log.take(), "after stop");
  EXPECT_EQ(log.size(), 0u) << "a message after stop was handled";
}

TEST_P(handlers, stop_without_a_reason_ends_the_handler_process_normally) {
  watched w = spawn_watched(rt(), ember::handler([](message&) { ember::stop(); }));
  rt().send(w.id, 0);
  EXPECT_TRUE(exit_of(w).is_normal());
}

TEST_P(handlers, stop_from_init_ends_the_handler_process_before_any_message) {
  struct stops_in_init {
    inbox<int> handled;
    void init() { ember::stop("refused to start"); }
    void operator()(message&) { handled.put(1); }
  };
  inbox<int> handled;
  watched w = spawn_watched(rt(), ember::handler(stops_in_init{handled}));
  rt().send(w.id, 0);
  EXPECT_EQ(exit_of(w), exit_reason("refused to start"));
  EXPECT_EQ(handled.size(), 0u);
}

TEST_P(handlers, stop_in_a_function_process_is_exit) {
  destructor_counter dtors;
  inbox<std::string> log;
  watched w = spawn_watched(rt(), [dtors, log] {
    auto g = dtors.make();
    ember::stop("function stop");
    log.put("after stop");
  });
  EXPECT_EQ(exit_of(w), exit_reason("function stop"));
  EXPECT_EQ(dtors.value(), 1);
  EXPECT_EQ(log.size(), 0u) << "code after stop ran in a function process";
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(handlers);

}  // namespace
