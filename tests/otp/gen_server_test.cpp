// gen_server: a handler process serving calls (request/reply with a
// monitor and an alias), casts and other messages, with OTP's semantics for
// starting (init acknowledged, names, links, monitors), failing calls
// (noproc, timeout, the server's exit reason), deferred replies, terminate,
// stop and idle timeouts.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::message;
using ember::pid;
using ember::when;
namespace gs = ember::gen_server;

class gen_servers : public runtime_test {};

// ---------------------------------------------------------------------------
// Helpers


// Options naming the server (in `registry` if given) or bounding its init.
gs::options named(std::string name, ember::name_registry* registry = nullptr) {
  gs::options o;
  o.name = std::move(name);
  o.registry = registry;
  return o;
}
gs::options init_within(std::chrono::milliseconds t) {
  gs::options o;
  o.init_timeout = t;
  return o;
}

// The exit_error f throws (fails the test's process if it throws none).
template <class F>
ember::exit_error exit_error_of(F&& f) {
  try {
    f();
  } catch (const ember::exit_error& e) {
    return e;
  }
  throw std::runtime_error("expected an ember::exit_error, nothing was thrown");
}

// inbox::size from a process: under no_preempt, as inbox::put holds its lock.
template <class T>
std::size_t size_in_process(const inbox<T>& b) {
  ember::no_preempt hold;
  return b.size();
}

ember::down down_of(ember::monitor_ref ref) {
  return ember::receive(
      when([ref](const ember::down& d) { return d.ref == ref; }, [](ember::down d) { return d; }));
}

// Waits for the exit of p (monitoring it now) and returns the reason.
exit_reason wait_exit(pid p) { return down_of(ember::monitor(p)).reason; }

std::string join(const std::vector<std::string>& v) {
  std::string r;
  for (const auto& s : v) r += (r.empty() ? "" : " ") + s;
  return r;
}

// Nothing left in the calling process's mailbox: counted, and a receive of
// any message with a zero timeout finds none.
std::string mailbox_state() {
  std::size_t len = ember::message_queue_len();
  std::string found = ember::receive([](message& m) { return "a " + m.type_name(); },
                                     ember::after(0ms, [] { return std::string("nothing"); }));
  return "queue " + std::to_string(len) + ", receive finds " + found;
}

// ---------------------------------------------------------------------------
// Messages

struct add {
  int by;
};
struct get_value {};
struct reset {};
struct go {};
struct never_sent {};
struct crash_now {};
struct quit {
  std::string reason;
};
struct get_log {};

// ---------------------------------------------------------------------------
// Servers

// The counter of the header's example.
struct counter {
  int n = 0;
  counter() = default;
  explicit counter(int start) : n(start) {}
  void handle_call(message& request, ember::from from) {
    ember::dispatch(request,
                    [&](const add& a) { ember::reply(from, n += a.by); },
                    [&](get_value) { ember::reply(from, n); });
  }
  void handle_cast(message& m) {
    if (m.is<reset>()) n = 0;
    if (auto* a = m.get_if<add>()) n += a->by;
  }
};

// Logs what happens to it (handle_info, terminate) to the test; crashes or
// stops on request.
struct probe {
  inbox<std::string> log;
  explicit probe(inbox<std::string> l) : log(std::move(l)) {}
  void handle_call(message& m, ember::from from) {
    ember::dispatch(m,
                    [&](get_value) { ember::reply(from, 1); },
                    [](crash_now) { throw std::runtime_error("crash in call"); },
                    [](const quit& q) { ember::stop(exit_reason(q.reason)); });
  }
  void handle_cast(message& m) {
    if (m.is<crash_now>()) throw std::runtime_error("crash in cast");
    if (auto* q = m.get_if<quit>()) {
      ember::stop(exit_reason(q->reason));
      ember::send(ember::self(), 0);  // queued: never handled (would be logged)
    }
  }
  void handle_info(message& m) {
    if (auto* s = m.get_if<ember::exit_signal>()) {
      log.put("info exit_signal from " + s->from.to_string() + ": " + s->reason.to_string());
    } else {
      log.put("info " + m.type_name());
    }
  }
  void terminate(const exit_reason& r) { log.put("terminate " + r.to_string()); }
};
struct probe_with_init : probe {
  using probe::probe;
  void init() {}
};
struct trapping_probe : probe {
  using probe::probe;
  void init() { ember::trap_exit(true); }
};

// Keeps a call (hold) and answers it when told by a cast (release), then
// acknowledges to release.ack_to that the reply has gone.
struct hold {};
struct release {
  int value;
  pid ack_to;
};
struct held {
  pid caller;
};
struct released {};
struct holder {
  pid observer;  // told `held` when a call is kept
  ember::from kept{};
  int replies = 0;
  holder() = default;
  explicit holder(pid o) : observer(o) {}
  void handle_call(message& m, ember::from from) {
    ember::dispatch(m,
                    [&](hold) {
                      kept = from;
                      if (observer) ember::send(observer, held{from.caller()});
                    },
                    [&](get_value) { ember::reply(from, replies); });
  }
  void handle_cast(message& m) {
    if (auto* r = m.get_if<release>()) {
      ember::reply(kept, r->value);
      kept = {};
      ++replies;
      ember::send(r->ack_to, released{});
    }
  }
};

// ---------------------------------------------------------------------------
// Calls

TEST_P(gen_servers, call_returns_the_reply_of_handle_call) {
  auto got = in_process(rt(), [] {
    pid c = gs::start<counter>();
    int a = gs::call<int>(c, add{2});
    int b = gs::call<int>(c, add{3});
    int v = gs::call<int>(c, get_value{});
    gs::stop(c);
    return std::to_string(a) + " " + std::to_string(b) + " " + std::to_string(v);
  });
  EXPECT_EQ(got, "2 5 5");
}

TEST_P(gen_servers, state_is_constructed_from_the_arguments_of_start) {
  struct labelled {
    int n;
    std::string label;
    labelled(int v, std::string l) : n(v), label(std::move(l)) {}
    void handle_call(message&, ember::from from) { ember::reply(from, label + " " + std::to_string(n)); }
  };
  auto got = in_process(rt(), [] {
    pid s = gs::start<labelled>(7, std::string("seven"));
    pid t = gs::start<labelled>(gs::options{}, 8, std::string("eight"));
    std::string r = gs::call<std::string>(s, get_value{}) + ", " + gs::call<std::string>(t, get_value{});
    gs::stop(s);
    gs::stop(t);
    return r;
  });
  EXPECT_EQ(got, "seven 7, eight 8");
}

struct tagged_add {
  int client;
  int seq;
};
struct tagged_reply {
  int client;
  int seq;
  int total;
};
struct client_done {
  int client;
  int bad;
  std::vector<int> totals;
};
struct tagged_counter {
  int n = 0;
  void handle_call(message& m, ember::from from) {
    ember::dispatch(m,
                    [&](const tagged_add& a) { ember::reply(from, tagged_reply{a.client, a.seq, ++n}); },
                    [&](get_value) { ember::reply(from, n); });
  }
};

TEST_P(gen_servers, concurrent_calls_from_many_clients_give_the_exact_count_and_each_caller_its_own_replies) {
  constexpr int clients = EMBER_TEST_SANITIZED ? 20 : 50;
  constexpr int calls = EMBER_TEST_SANITIZED ? 50 : 200;
  constexpr int total = clients * calls;
  auto got = in_process(rt(), [] {
    pid srv = gs::start<tagged_counter>();
    pid me = ember::self();
    for (int c = 0; c < clients; ++c) {
      ember::spawn([srv, me, c] {
        int bad = 0;
        std::vector<int> totals;
        totals.reserve(calls);
        for (int i = 0; i < calls; ++i) {
          auto r = gs::call<tagged_reply>(srv, tagged_add{c, i}, gs::infinity);
          if (r.client != c || r.seq != i) ++bad;
          totals.push_back(r.total);
        }
        ember::send(me, client_done{c, bad, totals});
      });
    }
    int bad = 0, not_increasing = 0;
    std::vector<int> seen(total + 1, 0);
    for (int c = 0; c < clients; ++c) {
      client_done d = ember::receive([](client_done x) { return x; });
      bad += d.bad;
      for (std::size_t i = 0; i < d.totals.size(); ++i) {
        int t = d.totals[i];
        if (t >= 1 && t <= total) ++seen[std::size_t(t)];
        if (i > 0 && d.totals[i - 1] >= t) ++not_increasing;
      }
    }
    int each_once = int(std::count(seen.begin() + 1, seen.end(), 1));
    int final_count = gs::call<int>(srv, get_value{});
    gs::stop(srv);
    return "final " + std::to_string(final_count) + ", replies seen once " + std::to_string(each_once) +
           ", replies of another call " + std::to_string(bad) + ", out of order " +
           std::to_string(not_increasing);
  });
  EXPECT_EQ(got, "final " + std::to_string(total) + ", replies seen once " + std::to_string(total) +
                     ", replies of another call 0, out of order 0");
}

TEST_P(gen_servers, call_to_a_dead_pid_fails_with_noproc) {
  auto got = in_process(rt(), [] {
    pid c = gs::start<counter>();
    gs::stop(c);
    std::string r = outcome_of([&] { gs::call<int>(c, get_value{}); });
    return r + "; " + mailbox_state();
  });
  EXPECT_EQ(got, "exit_error call_failed: noproc; queue 0, receive finds nothing");
}

TEST_P(gen_servers, call_to_an_unregistered_name_fails_with_noproc) {
  auto got = in_process(rt(), [] {
    auto e = exit_error_of([] { gs::call<int>("nobody_is_registered_as_this", get_value{}); });
    return errc_name(e.code()) + ": " + e.reason().to_string();
  });
  EXPECT_EQ(got, "call_failed: noproc");
}

TEST_P(gen_servers, call_cast_and_stop_by_registered_name) {
  auto got = in_process(rt(), [] {
    pid c = gs::start<counter>(named("the_counter"), 10);
    std::string r = ember::whereis("the_counter") == c ? "registered" : "not registered";
    r += ", call " + std::to_string(gs::call<int>("the_counter", add{5}));
    gs::cast("the_counter", add{100});
    r += ", after cast " + std::to_string(gs::call<int>(std::string("the_counter"), get_value{}));
    gs::stop("the_counter");
    r += ember::is_alive(c) ? ", alive after stop" : ", gone after stop";
    r += ember::whereis("the_counter") ? ", name kept" : ", name freed";
    return r;
  });
  EXPECT_EQ(got, "registered, call 15, after cast 115, gone after stop, name freed");
}

TEST_P(gen_servers, start_with_a_taken_name_fails_with_already_started_and_the_holder) {
  auto got = in_process(rt(), [] {
    pid first = gs::start<counter>(named("unique"));
    auto e = exit_error_of([] { gs::start<counter>(named("unique")); });
    std::string r = errc_name(e.code());
    std::string text(e.reason().text());
    r += text.rfind("already_started", 0) == 0 ? ", already_started" : ", reason '" + text + "'";
    const pid* holder = e.reason().value<pid>();
    r += !holder ? ", no holder" : (*holder == first ? ", holder is the first" : ", another holder");
    r += ember::whereis("unique") == first ? ", name still the first's" : ", name moved";
    r += ", first answers " + std::to_string(gs::call<int>("unique", add{1}));
    gs::stop(first);
    return r;
  });
  EXPECT_EQ(got, "start_failed, already_started, holder is the first, name still the first's, first answers 1");
}

TEST_P(gen_servers, server_crash_in_handle_call_fails_the_call_with_the_exception_reason) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto [s, ref] = gs::start_monitor<probe>(log);
    auto e = exit_error_of([s = s] { gs::call<int>(s, crash_now{}); });
    exit_reason server_exit = down_of(ref).reason;
    std::string r = errc_name(e.code()) + ", kind exception " +
                    (e.reason().is(exit_reason::kind::exception) ? "yes" : "no") + ", type " +
                    std::string(e.reason().exception_type()) + ", text " + std::string(e.reason().text());
    r += server_exit == e.reason() ? ", the server's exit reason" : ", server exited with " + server_exit.to_string();
    return r;
  });
  EXPECT_EQ(got, "call_failed, kind exception yes, type std::runtime_error, text crash in call, the server's exit reason");
  EXPECT_EQ(log.take(), "terminate exception: std::runtime_error: crash in call");
}

TEST_P(gen_servers, server_stopping_without_reply_fails_the_call_with_the_stop_reason) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    pid s = gs::start<probe>(log);
    return outcome_of([&] { gs::call<int>(s, quit{"stopped_in_call"}); });
  });
  EXPECT_EQ(got, "exit_error call_failed: stopped_in_call");
  EXPECT_EQ(log.take(), "terminate stopped_in_call");
}

TEST_P(gen_servers, server_exiting_while_holding_a_deferred_call_fails_it_with_the_exit_reason) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = gs::start<holder>(me);
    auto [client, cref] = ember::spawn_monitor([s, me] {
      ember::send(me, outcome_of([&] { gs::call<int>(s, hold{}, gs::infinity); }));
    });
    ember::receive([](held) {});  // the call is kept, unanswered
    ember::exit(s, "server_went_away");
    std::string r = ember::receive([](std::string o) { return o; });
    return r + "; client " + down_of(cref).reason.to_string();
  });
  EXPECT_EQ(got, "exit_error call_failed: server_went_away; client normal");
}

TEST_P(gen_servers, call_timeout_fails_with_timeout_and_the_late_reply_is_dropped) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid slow = gs::start<holder>();
    pid other = gs::start<counter>();
    // The server keeps the call and answers only when told: the call
    // certainly times out.
    auto e = exit_error_of([&] { gs::call<int>(slow, hold{}, 20ms); });
    std::string r = errc_name(e.code()) + ": " + e.reason().to_string();
    // Now it replies, then acknowledges; the ack comes after the reply.
    gs::cast(slow, release{42, me});
    ember::receive([](released) {});
    r += "; after the late reply: " + mailbox_state();
    r += "; other call " + std::to_string(gs::call<int>(other, add{3}));
    r += "; after another call: " + mailbox_state();
    r += "; slow server replied " + std::to_string(gs::call<int>(slow, get_value{})) + " time(s)";
    gs::stop(slow);
    gs::stop(other);
    r += "; after stopping both: " + mailbox_state();
    return r;
  });
  EXPECT_EQ(got,
            "call_failed: timeout; after the late reply: queue 0, receive finds nothing; other call 3; "
            "after another call: queue 0, receive finds nothing; slow server replied 1 time(s); "
            "after stopping both: queue 0, receive finds nothing");
}

TEST_P(gen_servers, deferred_reply_from_a_later_cast) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = gs::start<holder>(me);
    pid client = ember::spawn([s, me] { ember::send(me, gs::call<int>(s, hold{}, gs::infinity)); });
    pid caller = ember::receive([](held h) { return h.caller; });
    std::string r = caller == client ? "from is the client" : "from is " + caller.to_string();
    gs::cast(s, release{77, me});
    ember::receive([](released) {});
    r += ", client got " + std::to_string(ember::receive([](int v) { return v; }));
    gs::stop(s);
    return r;
  });
  EXPECT_EQ(got, "from is the client, client got 77");
}

TEST_P(gen_servers, reply_from_another_process) {
  struct delegate {
    int x;
  };
  struct delegating {
    void handle_call(message& m, ember::from from) {
      int x = m.get<delegate>().x;
      ember::spawn([from, x] { ember::reply(from, x * 2); });  // the server replies not itself
    }
  };
  auto got = in_process(rt(), [] {
    pid s = gs::start<delegating>();
    std::string r;
    for (int i = 1; i <= 3; ++i) r += std::to_string(gs::call<int>(s, delegate{i * 10})) + " ";
    gs::stop(s);
    return r + mailbox_state();
  });
  EXPECT_EQ(got, "20 40 60 queue 0, receive finds nothing");
}

struct take_ticket {};
struct serve_all {};
struct all_queued {
  std::vector<pid> order;
};
struct got_ticket {
  pid client;
  int ticket;
};
// A queue: callers wait until the server serves them, first come first served.
struct ticket_queue {
  pid observer;
  std::size_t expected;
  std::deque<ember::from> waiting;
  ticket_queue(pid o, std::size_t n) : observer(o), expected(n) {}
  void handle_call(message& m, ember::from from) {
    m.get<take_ticket>();
    waiting.push_back(from);
    if (waiting.size() == expected) {
      std::vector<pid> order;
      for (const auto& f : waiting) order.push_back(f.caller());
      ember::send(observer, all_queued{order});
    }
  }
  void handle_cast(message& m) {
    if (!m.is<serve_all>()) return;
    int ticket = 0;
    while (!waiting.empty()) {
      ember::reply(waiting.front(), ticket++);
      waiting.pop_front();
    }
  }
};

TEST_P(gen_servers, queued_callers_are_answered_in_fifo_order) {
  constexpr int n = 20;
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = gs::start<ticket_queue>(me, std::size_t(n));
    for (int i = 0; i < n; ++i) {
      ember::spawn([s, me] {
        int t = gs::call<int>(s, take_ticket{}, gs::infinity);
        ember::send(me, got_ticket{ember::self(), t});
      });
    }
    std::vector<pid> order = ember::receive([](all_queued q) { return q.order; });
    gs::cast(s, serve_all{});
    int in_order = 0, out_of_order = 0;
    for (int i = 0; i < n; ++i) {
      got_ticket g = ember::receive([](got_ticket x) { return x; });
      if (g.ticket >= 0 && g.ticket < int(order.size()) && order[std::size_t(g.ticket)] == g.client)
        ++in_order;
      else
        ++out_of_order;
    }
    gs::stop(s);
    return "queued " + std::to_string(order.size()) + ", served in order " + std::to_string(in_order) +
           ", out of order " + std::to_string(out_of_order);
  });
  EXPECT_EQ(got, "queued 20, served in order 20, out of order 0");
}

struct ask_string {};
struct ask_int {};
struct any_replier {
  void handle_call(message& m, ember::from from) {
    ember::dispatch(m,
                    [&](ask_string) { ember::reply(from, std::string("text")); },
                    [&](ask_int) { ember::reply(from, 5); });
  }
};

TEST_P(gen_servers, call_void_accepts_any_reply) {
  auto got = in_process(rt(), [] {
    pid s = gs::start<any_replier>();
    std::string r = outcome_of([&] { gs::call(s, ask_string{}); });
    r += " " + outcome_of([&] { gs::call<void>(s, ask_int{}); });
    gs::stop(s);
    return r + "; " + mailbox_state();
  });
  EXPECT_EQ(got, "returned returned; queue 0, receive finds nothing");
}

TEST_P(gen_servers, reply_of_the_wrong_type_throws_bad_message_type_and_the_caller_lives_on) {
  auto got = in_process(rt(), [] {
    pid s = gs::start<any_replier>();
    std::string r;
    try {
      gs::call<int>(s, ask_string{});
      r = "returned";
    } catch (const ember::exit_error& e) {
      r = "exit_error " + e.reason().to_string();
    } catch (const ember::error& e) {
      r = "error " + errc_name(e.code());
    }
    // The caller carries on: the next calls work, the server is untouched.
    r += ", then " + gs::call<std::string>(s, ask_string{}) + " " + std::to_string(gs::call<int>(s, ask_int{}));
    r += ember::is_alive(s) ? ", server alive" : ", server gone";
    gs::stop(s);
    return r + "; " + mailbox_state();
  });
  EXPECT_EQ(got, "error bad_message_type, then text 5, server alive; queue 0, receive finds nothing");
}

struct unknown_request {};

TEST_P(gen_servers, dispatch_without_a_clause_crashes_the_server_naming_the_type) {
  auto got = in_process(rt(), [] {
    auto [s, ref] = gs::start_monitor<counter>();
    auto e = exit_error_of([s = s] { gs::call<int>(s, unknown_request{}); });
    exit_reason server_exit = down_of(ref).reason;
    std::string text(e.reason().text());
    std::string r = errc_name(e.code());
    r += e.reason().is(exit_reason::kind::exception) ? ", exception" : ", " + e.reason().to_string();
    r += ", " + std::string(e.reason().exception_type());
    r += text.find("no clause") != std::string::npos ? ", no clause" : ", text '" + text + "'";
    r += text.find("unknown_request") != std::string::npos ? ", names the type" : ", type not named";
    r += server_exit == e.reason() ? ", the server's exit reason" : ", server exited with " + server_exit.to_string();
    return r;
  });
  EXPECT_EQ(got, "call_failed, exception, ember::error, no clause, names the type, the server's exit reason");
}

TEST_P(gen_servers, call_to_a_server_without_handle_call_fails_with_bad_message_type) {
  struct cast_only {
    void handle_cast(message&) {}
  };
  auto got = in_process(rt(), [] {
    auto [s, ref] = gs::start_monitor<cast_only>();
    auto e = exit_error_of([s = s] { gs::call<int>(s, get_value{}); });
    down_of(ref);
    std::string text(e.reason().text());
    return errc_name(e.code()) + ", " + std::string(e.reason().exception_type()) +
           (text.find("no handle_call") != std::string::npos ? ", no handle_call" : ", text '" + text + "'");
  });
  EXPECT_EQ(got, "call_failed, ember::error, no handle_call");
}

TEST_P(gen_servers, nested_call_from_inside_handle_call) {
  struct front {
    pid back;
    explicit front(pid b) : back(b) {}
    void handle_call(message& m, ember::from from) {
      int by = m.get<add>().by;
      int v = gs::call<int>(back, add{by});  // a call from the server's own handler
      ember::reply(from, v + 1000);
    }
  };
  auto got = in_process(rt(), [] {
    pid back = gs::start<counter>(5);
    pid f = gs::start<front>(back);
    std::string r = std::to_string(gs::call<int>(f, add{1}));
    r += " " + std::to_string(gs::call<int>(f, add{2}));
    r += " back " + std::to_string(gs::call<int>(back, get_value{}));
    gs::stop(f);
    gs::stop(back);
    return r;
  });
  EXPECT_EQ(got, "1006 1008 back 8");
}

TEST_P(gen_servers, caller_killed_while_waiting_leaves_the_server_fine) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = gs::start<holder>(me);
    auto [client, cref] = ember::spawn_monitor([s] { gs::call<int>(s, hold{}, gs::infinity); });
    ember::receive([](held) {});
    ember::exit(client, exit_reason::kill());
    std::string r = "client " + down_of(cref).reason.to_string();
    gs::cast(s, release{1, me});  // a reply to a dead caller
    ember::receive([](released) {});
    r += ", server replied " + std::to_string(gs::call<int>(s, get_value{})) + " time(s)";
    r += ember::is_alive(s) ? ", alive" : ", gone";
    r += ", stop " + outcome_of([&] { gs::stop(s); });
    return r;
  });
  EXPECT_EQ(got, "client killed, server replied 1 time(s), alive, stop returned");
}

// ---------------------------------------------------------------------------
// Casts and other messages

struct cast_log {
  std::vector<int> seen;
  void handle_cast(message& m) { seen.push_back(m.get<int>()); }
  void handle_call(message&, ember::from from) { ember::reply(from, seen); }
};

TEST_P(gen_servers, casts_reach_handle_cast_in_order) {
  auto got = in_process(rt(), [] {
    pid s = gs::start<cast_log>();
    for (int i = 0; i < 500; ++i) gs::cast(s, i);
    auto first = gs::call<std::vector<int>>(s, get_log{});  // after the casts sent before it
    for (int i = 500; i < 1000; ++i) gs::cast(s, i);
    auto all = gs::call<std::vector<int>>(s, get_log{});
    gs::stop(s);
    std::vector<int> expected(1000);
    for (int i = 0; i < 1000; ++i) expected[std::size_t(i)] = i;
    return "first call saw " + std::to_string(first.size()) + ", then " + std::to_string(all.size()) +
           (all == expected ? " in order" : " NOT in order");
  });
  EXPECT_EQ(got, "first call saw 500, then 1000 in order");
}

TEST_P(gen_servers, cast_to_a_dead_pid_or_unknown_name_does_nothing) {
  auto got = in_process(rt(), [] {
    pid s = gs::start<counter>();
    gs::stop(s);
    std::string r = outcome_of([&] { gs::cast(s, add{1}); });
    r += " " + outcome_of([] { gs::cast("nobody_is_registered_as_this", add{1}); });
    return r + "; " + mailbox_state();
  });
  EXPECT_EQ(got, "returned returned; queue 0, receive finds nothing");
}

TEST_P(gen_servers, plain_send_reaches_handle_info_and_cast_handle_cast) {
  struct sorter {
    std::vector<std::string> seen;
    void handle_info(message& m) { seen.push_back("info " + std::to_string(m.get<int>())); }
    void handle_cast(message& m) { seen.push_back("cast " + std::to_string(m.get<int>())); }
    void handle_call(message&, ember::from from) { ember::reply(from, join(seen)); }
  };
  auto got = in_process(rt(), [] {
    pid s = gs::start<sorter>();
    ember::send(s, 1);
    gs::cast(s, 2);
    ember::send(s, 3);
    gs::cast(s, 4);
    auto r = gs::call<std::string>(s, get_log{});
    gs::stop(s);
    return r;
  });
  EXPECT_EQ(got, "info 1 cast 2 info 3 cast 4");
}

TEST_P(gen_servers, server_without_handle_info_or_handle_cast_ignores_those_messages) {
  struct call_only {
    int n = 0;
    void handle_call(message& m, ember::from from) {
      ember::dispatch(m, [&](const add& a) { ember::reply(from, n += a.by); });
    }
  };
  auto got = in_process(rt(), [] {
    pid s = gs::start<call_only>();
    ember::send(s, 5);
    ember::send(s, std::string("text"));
    ember::send(s, add{100});  // a plain message, not a call
    gs::cast(s, add{1000});    // no handle_cast: dropped
    std::string r = "call " + std::to_string(gs::call<int>(s, add{1}));
    r += ember::is_alive(s) ? ", alive" : ", gone";
    gs::stop(s);
    return r;
  });
  EXPECT_EQ(got, "call 1, alive");
}

TEST_P(gen_servers, handle_info_receives_downs_and_timer_messages) {
  struct watch {
    pid target;
  };
  struct arm {};
  struct tick {};
  struct watcher {
    inbox<std::string> log;
    explicit watcher(inbox<std::string> l) : log(std::move(l)) {}
    void handle_cast(message& m) {
      if (auto* w = m.get_if<watch>()) ember::monitor(w->target);
      if (m.is<arm>()) ember::send_after(1ms, ember::self(), tick{});
    }
    void handle_call(message&, ember::from from) { ember::reply(from, 0); }
    void handle_info(message& m) {
      if (auto* d = m.get_if<ember::down>()) log.put("down " + d->reason.to_string());
      else if (m.is<tick>()) log.put("tick");
      else log.put("other " + m.type_name());
    }
  };
  inbox<std::string> log;
  pid s = in_process(rt(), [log] {
    pid srv = gs::start<watcher>(log);
    pid target = ember::spawn([] {
      ember::receive([](go) {});
      ember::exit("target_done");
    });
    gs::cast(srv, watch{target});
    gs::cast(srv, arm{});
    gs::call<int>(srv, get_value{});  // the casts before it have been handled: the monitor is set
    ember::send(target, go{});
    return srv;
  });
  std::set<std::string> got{log.take(), log.take()};
  EXPECT_EQ(got, (std::set<std::string>{"down target_done", "tick"}));
  in_process(rt(), [s] { gs::stop(s); });
  EXPECT_EQ(log.size(), 0u);
}

TEST_P(gen_servers, trapping_server_gets_the_exit_signal_of_a_linked_process_in_handle_info) {
  inbox<std::string> log;
  oneshot<pid> server;
  watched peer = spawn_watched(rt(), [log, server] {
    pid s = gs::start<trapping_probe>(log);  // not start_link: the peer is no parent
    server.set(s);
    ember::link(s);
    ember::exit("peer_gone");
  });
  pid s = server.get();
  EXPECT_EQ(exit_of(peer), exit_reason("peer_gone"));
  EXPECT_EQ(log.take(), "info exit_signal from " + peer.id.to_string() + ": peer_gone");
  auto got = in_process(rt(), [s] {
    std::string r = "call " + std::to_string(gs::call<int>(s, get_value{}));
    gs::stop(s);
    return r;
  });
  EXPECT_EQ(got, "call 1");
  EXPECT_EQ(log.take(), "terminate normal");
}

// ---------------------------------------------------------------------------
// Starting

TEST_P(gen_servers, init_runs_before_start_returns) {
  struct initialised {
    int n = 0;
    void init() {
      ember::register_name("named_in_init", ember::self());
      n = 42;
    }
    void handle_call(message&, ember::from from) { ember::reply(from, n); }
  };
  auto got = in_process(rt(), [] {
    pid s = gs::start<initialised>();
    // No waiting: what init did is there as soon as start returns.
    std::string r = ember::whereis("named_in_init") == s ? "name set" : "name not set";
    r += ", first call " + std::to_string(gs::call<int>(s, get_value{}));
    gs::stop(s);
    return r;
  });
  EXPECT_EQ(got, "name set, first call 42");
}

struct terminated {};

// Tells `observer` its pid, then fails its init in the way asked; tells
// `observer` if its terminate runs (as in OTP, it must not after a failed init).
enum class init_failure { throws, exits, stops, blocks };
struct failing_init {
  pid observer;
  init_failure how;
  failing_init(pid o, init_failure h) : observer(o), how(h) {}
  void init() {
    ember::send(observer, ember::self());
    switch (how) {
      case init_failure::throws: throw std::invalid_argument("bad config value");
      case init_failure::exits: ember::exit("bad_config");
      case init_failure::stops: ember::stop("no_thanks"); return;
      case init_failure::blocks: ember::receive([](never_sent) {}); return;
    }
  }
  void handle_call(message&, ember::from from) { ember::reply(from, 0); }
  void terminate(const exit_reason&) { ember::send(observer, terminated{}); }
};

// Starts a failing_init; describes what start did and whether the server
// is alive when start is done.
std::string start_failing(init_failure how, gs::options opts = {}) {
  pid me = ember::self();
  std::string r;
  pid started;
  try {
    started = gs::start<failing_init>(opts, me, how);
    r = "start returned";
  } catch (const ember::exit_error& e) {
    r = "exit_error " + errc_name(e.code()) + ": " + e.reason().to_string();
  }
  pid server = ember::receive([](pid p) { return p; });
  r += ember::is_alive(server) ? ", server alive" : ", server gone";
  // terminate would have run before the server's exit, so before start threw.
  r += ember::receive([](terminated) { return ", terminate ran"; },
                      ember::after(0ms, [] { return ", no terminate"; }));
  if (started) {
    // Let it end (the assertion has failed already): the test must not hang.
    ember::exit(started, exit_reason::kill());
    wait_exit(started);
  }
  return r;
}

TEST_P(gen_servers, init_throwing_fails_start_with_the_exception_and_the_server_is_gone) {
  auto got = in_process(rt(), [] { return start_failing(init_failure::throws); });
  EXPECT_EQ(got, "exit_error start_failed: exception: std::invalid_argument: bad config value, server gone, no terminate");
}

TEST_P(gen_servers, init_calling_exit_fails_start_with_that_reason) {
  auto got = in_process(rt(), [] { return start_failing(init_failure::exits); });
  EXPECT_EQ(got, "exit_error start_failed: bad_config, server gone, no terminate");
}

TEST_P(gen_servers, init_calling_stop_fails_start_with_that_reason) {
  // The header: "Throws exit_error(start_failed) if init fails (the reason
  // is its exception, exit or stop reason)".
  auto got = in_process(rt(), [] { return start_failing(init_failure::stops); });
  EXPECT_EQ(got, "exit_error start_failed: no_thanks, server gone, no terminate");
}

TEST_P(gen_servers, init_timeout_fails_start_with_timeout_and_kills_the_server) {
  auto got = in_process(rt(), [] {
    return start_failing(init_failure::blocks, init_within(20ms));
  });
  EXPECT_EQ(got, "exit_error start_failed: timeout, server gone, no terminate");
}

TEST_P(gen_servers, start_link_links_the_server_to_the_starter) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    ember::trap_exit(true);
    std::string r;
    pid a = gs::start_link<probe>(log);             // no init: spawned linked
    pid b = gs::start_link<probe_with_init>(log);   // init: linked, waited for
    for (pid s : {a, b}) {
      gs::cast(s, crash_now{});
      auto sig = ember::receive(
          when([s](const ember::exit_signal& x) { return x.from == s; }, [](ember::exit_signal x) { return x; }));
      r += sig.reason.to_string() + "; ";
    }
    return r + mailbox_state();
  });
  EXPECT_EQ(got,
            "exception: std::runtime_error: crash in cast; exception: std::runtime_error: crash in cast; "
            "queue 0, receive finds nothing");
}

TEST_P(gen_servers, start_monitor_monitors_the_server) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    std::string r;
    auto a = gs::start_monitor<probe>(log);
    auto b = gs::start_monitor<probe_with_init>(log);
    for (auto [s, ref] : {a, b}) {
      gs::cast(s, crash_now{});
      ember::down d = down_of(ref);
      r += (d.who == s ? "" : "(wrong pid) ") + d.reason.to_string() + "; ";
    }
    return r + mailbox_state();
  });
  EXPECT_EQ(got,
            "exception: std::runtime_error: crash in cast; exception: std::runtime_error: crash in cast; "
            "queue 0, receive finds nothing");
}

// ---------------------------------------------------------------------------
// terminate and stop

TEST_P(gen_servers, stop_runs_terminate_with_the_reason_before_returning) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    pid s = gs::start<probe>(log);
    gs::stop(s, "custom_reason");
    // stop has returned: the server has exited, terminate has run.
    return std::string(ember::is_alive(s) ? "alive" : "gone") + ", terminate logged " +
           std::to_string(size_in_process(log));
  });
  EXPECT_EQ(got, "gone, terminate logged 1");
  EXPECT_EQ(log.take(), "terminate custom_reason");
}

TEST_P(gen_servers, stop_without_a_reason_stops_normally) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto [s, ref] = gs::start_monitor<probe>(log);
    gs::stop(s);
    return down_of(ref).reason.to_string();
  });
  EXPECT_EQ(got, "normal");
  EXPECT_EQ(log.take(), "terminate normal");
}

TEST_P(gen_servers, stop_in_a_callback_ends_the_server_after_terminate_when_the_callback_returns) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto [s, ref] = gs::start_monitor<probe>(log);
    gs::cast(s, quit{"done_here"});  // also sends itself a message after stop
    std::string r = down_of(ref).reason.to_string();
    return r + ", logged " + std::to_string(size_in_process(log));
  });
  EXPECT_EQ(got, "done_here, logged 1");
  EXPECT_EQ(log.take(), "terminate done_here");
}

TEST_P(gen_servers, terminate_runs_on_an_exception_from_a_callback) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto [s, ref] = gs::start_monitor<probe>(log);
    gs::cast(s, crash_now{});
    std::string r = down_of(ref).reason.to_string();
    // terminate runs before monitors fire.
    return r + ", logged before the down " + std::to_string(size_in_process(log));
  });
  EXPECT_EQ(got, "exception: std::runtime_error: crash in cast, logged before the down 1");
  EXPECT_EQ(log.take(), "terminate exception: std::runtime_error: crash in cast");
}

TEST_P(gen_servers, trapping_server_terminates_with_its_parents_exit_reason) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    pid me = ember::self();
    pid parent = ember::spawn([log, me] {
      pid s = gs::start_link<trapping_probe>(log);
      ember::send(me, s);
      ember::receive([](go) {});
      ember::exit("parent_gone");
    });
    pid s = ember::receive([](pid p) { return p; });
    ember::monitor_ref ref = ember::monitor(s);
    ember::send(parent, go{});
    std::string r = down_of(ref).reason.to_string();
    return r + ", logged " + std::to_string(size_in_process(log));
  });
  EXPECT_EQ(got, "parent_gone, logged 1");
  // terminate ran with the parent's reason; the parent's exit_signal was
  // the behaviour's, not handle_info's.
  EXPECT_EQ(log.take(), "terminate parent_gone");
}

TEST_P(gen_servers, terminate_is_not_called_on_kill) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto [s, ref] = gs::start_monitor<probe>(log);
    ember::exit(s, exit_reason::kill());
    std::string r = down_of(ref).reason.to_string();
    return r + ", logged " + std::to_string(size_in_process(log));
  });
  EXPECT_EQ(got, "killed, logged 0");
}

TEST_P(gen_servers, terminate_is_not_called_on_an_untrapped_exit_signal) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto [s, ref] = gs::start_monitor<probe>(log);
    ember::exit(s, "external");
    std::string r = down_of(ref).reason.to_string();
    return r + ", logged " + std::to_string(size_in_process(log));
  });
  EXPECT_EQ(got, "external, logged 0");
}

TEST_P(gen_servers, stop_of_a_dead_server_or_unknown_name_fails_with_noproc) {
  auto got = in_process(rt(), [] {
    pid s = gs::start<counter>();
    gs::stop(s);
    std::string r = outcome_of([&] { gs::stop(s); });
    r += "; " + outcome_of([] { gs::stop("nobody_is_registered_as_this"); });
    return r + "; " + mailbox_state();
  });
  EXPECT_EQ(got, "exit_error call_failed: noproc; exit_error call_failed: noproc; queue 0, receive finds nothing");
}

TEST_P(gen_servers, stop_times_out_when_terminate_blocks) {
  struct stuck_terminate {
    void terminate(const exit_reason&) { ember::receive([](never_sent) {}); }
  };
  auto got = in_process(rt(), [] {
    pid s = gs::start<stuck_terminate>();
    std::string r = outcome_of([&] { gs::stop(s, exit_reason::normal(), 20ms); });
    r += ember::is_alive(s) ? ", still alive" : ", gone";
    ember::monitor_ref ref = ember::monitor(s);
    ember::exit(s, exit_reason::kill());
    r += ", then " + down_of(ref).reason.to_string();
    return r + "; " + mailbox_state();
  });
  EXPECT_EQ(got, "exit_error call_failed: timeout, still alive, then killed; queue 0, receive finds nothing");
}

TEST_P(gen_servers, stop_reports_another_exit_reason_when_terminate_fails) {
  struct failing_terminate {
    void terminate(const exit_reason&) { throw std::logic_error("terminate failed"); }
  };
  auto got = in_process(rt(), [] {
    pid s = gs::start<failing_terminate>();
    return outcome_of([&] { gs::stop(s, "requested"); });
  });
  EXPECT_EQ(got, "exit_error call_failed: exception: std::logic_error: terminate failed");
}

// ---------------------------------------------------------------------------
// Idle timeouts

TEST_P(gen_servers, idle_timeout_delivers_timeout_to_handle_info_when_no_message_comes) {
  struct idle_once {
    inbox<std::string> log;
    explicit idle_once(inbox<std::string> l) : log(std::move(l)) {}
    void init() { gs::idle_timeout(20ms); }
    void handle_info(message& m) { log.put(m.is<gs::timeout>() ? "timeout" : "info " + m.type_name()); }
  };
  inbox<std::string> log;
  pid s = in_process(rt(), [log] { return gs::start<idle_once>(log); });
  EXPECT_EQ(log.take(), "timeout");
  in_process(rt(), [s] { gs::stop(s); });
  EXPECT_EQ(log.size(), 0u);
}

TEST_P(gen_servers, messages_that_come_first_are_handled_and_each_postpones_the_idle_timeout) {
  struct step {
    int i;
  };
  struct idle_sequence {
    inbox<std::string> log;
    std::vector<std::string> seen;
    explicit idle_sequence(inbox<std::string> l) : log(std::move(l)) {}
    void init() {
      // Queued before the first idle timer is armed: each message comes
      // before the timeout asked for by the callback before it.
      for (int i = 1; i <= 3; ++i) ember::send(ember::self(), step{i});
      gs::idle_timeout(10ms);
    }
    void handle_info(message& m) {
      if (auto* s = m.get_if<step>()) {
        seen.push_back("step" + std::to_string(s->i));
        gs::idle_timeout(10ms);
      } else if (m.is<gs::timeout>()) {
        seen.push_back("timeout");
        log.put(join(seen));
      }
    }
    void handle_call(message&, ember::from from) { ember::reply(from, join(seen)); }
  };
  inbox<std::string> log;
  pid s = in_process(rt(), [log] { return gs::start<idle_sequence>(log); });
  EXPECT_EQ(log.take(), "step1 step2 step3 timeout");
  auto got = in_process(rt(), [s] {
    auto r = gs::call<std::string>(s, get_log{});
    gs::stop(s);
    return r;
  });
  EXPECT_EQ(got, "step1 step2 step3 timeout");
}

TEST_P(gen_servers, message_arriving_first_cancels_the_idle_timer) {
  struct idle_long {
    void init() { gs::idle_timeout(std::chrono::hours(1)); }
    void handle_call(message&, ember::from from) { ember::reply(from, 7); }
    void handle_info(message&) { throw std::runtime_error("an idle timeout fired"); }
  };
  pid s = in_process(rt(), [] { return gs::start<idle_long>(); });
  EXPECT_TRUE(eventually([&] { return rt().stats().timers_pending == 1; }))
      << "the idle timer was not armed: " << rt().stats().timers_pending;
  auto got = in_process(rt(), [s] { return gs::call<int>(s, get_value{}, gs::infinity); });
  EXPECT_EQ(got, 7);
  // The call came first: the hour-long timer is cancelled, the server lives on.
  EXPECT_TRUE(eventually([&] { return rt().stats().timers_pending == 0; }))
      << "the idle timer is still pending: " << rt().stats().timers_pending;
  EXPECT_TRUE(rt().is_alive(s));
  in_process(rt(), [s] { gs::stop(s); });
}

// ---------------------------------------------------------------------------
// Via a user registry

// A registry of the user's: a map under a mutex, usable from any process or
// thread. Names of processes that have exited count as free.
class map_registry final : public ember::name_registry {
 public:
  bool register_name(const std::string& name, pid p) override {
    ember::no_preempt hold;          // a process must not be preempted holding the lock
    ember::global_heap_scope global;  // the map outlives the processes that call it
    std::lock_guard lock(mu_);
    auto it = names_.find(name);
    if (it != names_.end() && alive(it->second)) return false;
    names_[name] = p;
    return true;
  }
  void unregister_name(const std::string& name) override {
    ember::no_preempt hold;
    ember::global_heap_scope global;
    std::lock_guard lock(mu_);
    names_.erase(name);
  }
  pid whereis_name(const std::string& name) override {
    ember::no_preempt hold;
    ember::global_heap_scope global;
    std::lock_guard lock(mu_);
    auto it = names_.find(name);
    if (it == names_.end() || !alive(it->second)) return pid{};
    return it->second;
  }

 private:
  static bool alive(pid p) { return !ember::in_process() || ember::is_alive(p); }
  std::mutex mu_;
  std::map<std::string, pid> names_;
};

TEST_P(gen_servers, via_name_starts_calls_casts_and_stops_a_server) {
  map_registry reg;
  auto got = in_process(rt(), [r = &reg] {
    ember::via name{r, "x"};
    pid s = gs::start<counter>(named("x", r), 1);
    std::string out = r->whereis_name("x") == s ? "in the registry" : "not in the registry";
    out += ember::whereis("x") ? ", also local" : ", not local";
    out += ", call " + std::to_string(gs::call<int>(name, add{1}));
    gs::cast(name, add{10});
    out += ", after cast " + std::to_string(gs::call<int>(name, get_value{}));
    gs::stop(name);
    out += ember::is_alive(s) ? ", alive" : ", stopped";
    out += ", then " + outcome_of([&] { gs::call<int>(name, get_value{}); });
    out += ", unknown " + outcome_of([r] { gs::call<int>(ember::via{r, "y"}, get_value{}); });
    out += ", cast to unknown " + outcome_of([r] { gs::cast(ember::via{r, "y"}, add{1}); });
    return out;
  });
  EXPECT_EQ(got,
            "in the registry, not local, call 2, after cast 12, stopped, then exit_error call_failed: noproc, "
            "unknown exit_error call_failed: noproc, cast to unknown returned");
}

TEST_P(gen_servers, via_name_taken_fails_with_already_started) {
  map_registry reg;
  auto got = in_process(rt(), [r = &reg] {
    pid first = gs::start<counter>(named("x", r));
    auto e = exit_error_of([r] { gs::start<counter>(named("x", r)); });
    std::string text(e.reason().text());
    std::string out = errc_name(e.code());
    out += text.rfind("already_started", 0) == 0 ? ", already_started" : ", reason '" + text + "'";
    const pid* holder = e.reason().value<pid>();
    out += !holder ? ", no holder" : (*holder == first ? ", holder is the first" : ", another holder");
    out += r->whereis_name("x") == first ? ", name still the first's" : ", name moved";
    gs::stop(ember::via{r, "x"});
    return out;
  });
  EXPECT_EQ(got, "start_failed, already_started, holder is the first, name still the first's");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(gen_servers);

}  // namespace
