// supervisor and dynamic_supervisor: children start in spec order and stop
// in reverse order, each by its shutdown policy; a child that exits is
// restarted by its restart type (permanent, transient, temporary) and the
// strategy (one_for_one, one_for_all, rest_for_one); more than `intensity`
// restarts within `period` stop the supervisor with `shutdown`; the child
// API (start_child, terminate_child, restart_child, delete_child,
// which_children, count_children) with its errors; nested supervisors;
// dynamic supervisors (many children of one template, max_children); a
// supervisor's specs outliving the process that gave them (run as death
// tests); and a stress test of a supervision tree under crashers and clients.
//
// Every child reports what happens to it to the test's process: a
// gen_server child sends "start <id>" from init and "stop <id> <reason>"
// from terminate (it traps exits, so the supervisor's shutdown goes through
// terminate), so the order of starts and stops is observed exactly. The
// supervisor's API is called from inside a process; tests wait for events
// (messages, downs), never for a time. Several calls whose order matters
// are never operands of one `+` (whose operands have no set order).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
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
namespace sup = ember::supervisor;
namespace dsup = ember::dynamic_supervisor;

class supervisors : public runtime_test {};

// ---------------------------------------------------------------------------
// Messages

struct event {  // child -> test: "start a", "stop a shutdown", "ready"...
  std::string what;
};
struct started {  // child -> observer: a child (of a dynamic supervisor) started
  pid who;
};
struct ping {};   // call: a gen_server child answers with its name
struct crash {};  // cast: the child throws
enum class quit_how : int { normal, shutdown };
struct quit {  // cast: the child stops with that reason
  quit_how how;
};
struct go {};

// ---------------------------------------------------------------------------
// Children

// A gen_server child that reports its init and terminate to `observer`.
// Trapping exits (the default), the supervisor's exit(shutdown) reaches
// terminate; not trapping, it ends the child at once.
struct recorded {
  std::string name;
  pid observer;
  bool trap;
  recorded(std::string n, pid o, bool t) : name(std::move(n)), observer(o), trap(t) {}
  void init() {
    if (trap) ember::trap_exit(true);
    ember::send(observer, event{"start " + name});
  }
  void handle_call(message& m, ember::from from) {
    ember::dispatch(m, [&](ping) { ember::reply(from, name); });
  }
  void handle_cast(message& m) {
    if (m.is<crash>()) throw std::runtime_error("crash " + name);
    if (auto* q = m.get_if<quit>())
      ember::stop(q->how == quit_how::normal ? exit_reason::normal() : exit_reason::shutdown());
  }
  void handle_info(message&) {}
  void terminate(const exit_reason& r) { ember::send(observer, event{"stop " + name + " " + r.to_string()}); }
};

// A gen_server child that tells `observer` its pid when it starts
// (dynamic supervisors' children); answers ping with its kind.
struct member {
  pid observer;
  std::string kind = "member";
  explicit member(pid o) : observer(o) {}
  member(pid o, std::string k) : observer(o), kind(std::move(k)) {}
  void init() { ember::send(observer, started{ember::self()}); }
  void handle_call(message& m, ember::from from) {
    ember::dispatch(m, [&](ping) { ember::reply(from, kind); });
  }
  void handle_cast(message& m) {
    if (auto* q = m.get_if<quit>())
      ember::stop(q->how == quit_how::normal ? exit_reason::normal() : exit_reason::shutdown());
  }
};

// A gen_server whose init fails.
struct refuses {
  void init() { throw std::runtime_error("init refused"); }
};

sup::child_spec rec(const std::string& id, pid observer, bool trap = true) {
  return sup::worker<recorded>(id, id, observer, trap);
}
sup::child_spec rec(const std::string& id, pid observer, sup::restart kind) {
  sup::child_spec c = rec(id, observer);
  c.restart = kind;
  return c;
}

// A function child that traps exits, says "ready" and then ignores every
// message, exit(shutdown) included: only kill ends it.
sup::child_spec stubborn(const std::string& id, pid observer, sup::shutdown_policy how) {
  sup::child_spec c = sup::function(id, [observer] {
    ember::trap_exit(true);
    ember::send(observer, event{"ready"});
    for (;;) ember::receive([](message&) {});
  });
  c.shutdown = how;
  return c;
}

// ---------------------------------------------------------------------------
// Helpers (in a process)

sup::flags flags_of(sup::strategy s, int intensity = 10) {
  return {.strategy = s, .intensity = intensity, .period = std::chrono::hours(1)};
}

// Starts a supervisor linked to the calling process, which traps exits so
// that the supervisor's exit (shutdown, whatever its reason) does not end it.
pid start_sup(sup::strategy s, std::vector<sup::child_spec> children, int intensity = 10) {
  ember::trap_exit(true);
  return sup::start_link(sup::spec{.flags = flags_of(s, intensity), .children = std::move(children)});
}

std::string next_event() {
  return ember::receive([](event e) { return e.what; },
                        ember::after(hang_limit, [] { return std::string("<no event>"); }));
}

// The next n events, in order of arrival.
std::string events(int n) {
  std::string r;
  for (int i = 0; i < n; ++i) {
    std::string e = next_event();
    r += (r.empty() ? "" : ", ") + e;
    if (e == "<no event>") break;
  }
  return r;
}

// The next n events, sorted (for events whose order is not defined).
std::string sorted_events(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back(next_event());
  std::sort(v.begin(), v.end());
  std::string r;
  for (const auto& e : v) r += (r.empty() ? "" : ", ") + e;
  return r;
}

// The events already queued ("none" if none).
std::string queued_events() {
  std::string r;
  for (;;) {
    std::string e = ember::receive([](event x) { return x.what; }, ember::after(0ms, [] { return std::string(); }));
    if (e.empty()) break;
    r += (r.empty() ? "" : ", ") + e;
  }
  return r.empty() ? "none" : r;
}

pid next_started() {
  return ember::receive([](started s) { return s.who; }, ember::after(hang_limit, [] { return pid{}; }));
}
std::size_t queued_started() {
  std::size_t n = 0;
  while (ember::receive([](started) { return true; }, ember::after(0ms, [] { return false; }))) ++n;
  return n;
}

ember::down down_of(ember::monitor_ref ref) {
  return ember::receive(when([ref](const ember::down& d) { return d.ref == ref; }, [](ember::down d) { return d; }),
                        ember::after(hang_limit, [] { return ember::down{{}, {}, exit_reason("<no down>")}; }));
}

// The exit reason of a linked process, from its exit_signal (the caller traps exits).
exit_reason exit_signal_of(pid p) {
  return ember::receive(
      when([p](const ember::exit_signal& s) { return s.from == p; }, [](ember::exit_signal s) { return s.reason; }),
      ember::after(hang_limit, [] { return exit_reason("<no exit signal>"); }));
}

// Polls `done` (a query of the supervisor) until it holds; false past the
// hang limit. For "X was not restarted": the supervisor forgets a child
// and restarts it (or not) in one step, so a state in which it is gone is
// final.
template <class F>
bool poll_until(F done) {
  auto deadline = std::chrono::steady_clock::now() + hang_limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    ember::yield();
  }
  return true;
}

using children = std::vector<sup::child_info>;

pid pid_of(const children& v, std::string_view id) {
  for (const auto& c : v)
    if (c.id == id) return c.child;
  return {};
}

std::string ids_of(const children& v) {
  std::string r;
  for (const auto& c : v) r += (r.empty() ? "" : " ") + c.id;
  return r;
}

// For each child now: its id and "same" (pid as before), "new" (another
// pid) or "none" (not running).
std::string changes(const children& before, const children& now) {
  std::string r;
  for (const auto& c : now) {
    std::string what = !c.child ? "none" : (pid_of(before, c.id) == c.child ? "same" : "new");
    r += (r.empty() ? "" : ", ") + c.id + " " + what;
  }
  return r;
}

std::string describe(const children& v) {
  std::string r;
  for (const auto& c : v) {
    r += (r.empty() ? "" : ", ") + c.id + " " + (c.type == sup::child_type::worker ? "worker" : "supervisor") + " " +
         (!c.child ? "none" : (ember::is_alive(c.child) ? "running" : "dead pid"));
  }
  return r;
}

std::string counts_of(ember::server_ref s) {
  sup::child_counts n = sup::count_children(s);
  return "specs " + std::to_string(n.specs) + " active " + std::to_string(n.active) + " workers " +
         std::to_string(n.workers) + " supervisors " + std::to_string(n.supervisors);
}

// ---------------------------------------------------------------------------
// Start and stop order

TEST_P(supervisors, children_start_in_spec_order_and_stop_in_reverse_order_on_stop) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me), rec("b", me), rec("c", me)});
    // start_link has returned: every child has run its init.
    std::string r = queued_events();
    r += "; ids " + ids_of(sup::which_children(s));
    gs::stop(s, exit_reason::shutdown());
    // stop has returned: every child has run its terminate.
    r += "; " + queued_events();
    return r;
  });
  EXPECT_EQ(got, "start a, start b, start c; ids a b c; stop c shutdown, stop b shutdown, stop a shutdown");
}

TEST_P(supervisors, children_stop_in_reverse_order_when_the_parent_exits) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid parent = ember::spawn([me] {
      pid s = sup::start_link(sup::spec{.flags = flags_of(sup::strategy::one_for_one),
                                        .children = {rec("a", me), rec("b", me), rec("c", me)}});
      ember::send(me, s);
      ember::receive([](go) {});
      ember::exit("parent_gone");
    });
    pid s = ember::receive([](pid p) { return p; });
    ember::monitor_ref ref = ember::monitor(s);
    std::string r = events(3);
    ember::send(parent, go{});
    exit_reason why = down_of(ref).reason;
    r += "; " + queued_events() + "; supervisor exited " + why.to_string();
    return r;
  });
  EXPECT_EQ(got,
            "start a, start b, start c; stop c shutdown, stop b shutdown, stop a shutdown; "
            "supervisor exited parent_gone");
}

// ---------------------------------------------------------------------------
// Strategies

TEST_P(supervisors, one_for_one_restarts_only_the_child_that_exited) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me), rec("b", me), rec("c", me)});
    std::string r = events(3);
    children before = sup::which_children(s);
    ember::exit(pid_of(before, "b"), exit_reason::kill());
    r += "; " + events(1);
    children now = sup::which_children(s);
    r += "; " + changes(before, now);
    r += "; b answers " + gs::call<std::string>(pid_of(now, "b"), ping{});
    r += "; then " + queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got, "start a, start b, start c; start b; a same, b new, c same; b answers b; then none");
}

TEST_P(supervisors, one_for_all_stops_the_others_in_reverse_order_and_restarts_all_in_order) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_all, {rec("a", me), rec("b", me), rec("c", me), rec("d", me)});
    std::string r = events(4);
    children before = sup::which_children(s);
    gs::cast(pid_of(before, "b"), crash{});
    r += "; " + events(8);
    children now = sup::which_children(s);
    r += "; " + changes(before, now);
    r += "; answers";
    for (const auto& c : now) r += " " + gs::call<std::string>(c.child, ping{});
    r += "; then " + queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a, start b, start c, start d; "
            "stop b exception: std::runtime_error: crash b, stop d shutdown, stop c shutdown, stop a shutdown, "
            "start a, start b, start c, start d; a new, b new, c new, d new; answers a b c d; then none");
}

TEST_P(supervisors, rest_for_one_restarts_the_child_and_those_started_after_it) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::rest_for_one, {rec("a", me), rec("b", me), rec("c", me), rec("d", me)});
    std::string r = events(4);
    children before = sup::which_children(s);
    ember::exit(pid_of(before, "b"), exit_reason::kill());
    r += "; " + events(5);
    children now = sup::which_children(s);
    r += "; " + changes(before, now);
    r += "; then " + queued_events();
    // The last child: only it.
    ember::exit(pid_of(now, "d"), exit_reason::kill());
    r += "; " + events(1);
    r += "; " + changes(now, sup::which_children(s));
    r += "; then " + queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a, start b, start c, start d; stop d shutdown, stop c shutdown, start b, start c, start d; "
            "a same, b new, c new, d new; then none; start d; a same, b same, c same, d new; then none");
}

TEST_P(supervisors, one_for_all_does_not_restart_the_temporary_children_it_stops) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_all,
                      {rec("a", me), rec("tmp", me, sup::restart::temporary), rec("b", me)});
    std::string r = events(3);
    children before = sup::which_children(s);
    ember::exit(pid_of(before, "b"), exit_reason::kill());
    r += "; " + events(4);
    children now = sup::which_children(s);
    r += "; " + changes(before, now) + "; then ";
    r += queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a, start tmp, start b; stop tmp shutdown, stop a shutdown, start a, start b; "
            "a new, b new; then none");
}

// ---------------------------------------------------------------------------
// Restart types

TEST_P(supervisors, permanent_child_exiting_normal_is_restarted) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me), rec("b", me)});
    std::string r = events(2);
    children before = sup::which_children(s);
    gs::cast(pid_of(before, "a"), quit{quit_how::normal});
    r += "; " + events(2);
    children now = sup::which_children(s);
    r += "; " + changes(before, now) + "; a answers ";
    r += gs::call<std::string>(pid_of(now, "a"), ping{});
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got, "start a, start b; stop a normal, start a; a new, b same; a answers a");
}

TEST_P(supervisors, transient_child_exiting_normal_or_shutdown_is_not_restarted_and_keeps_its_spec) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("t1", me, sup::restart::transient),
                                                   rec("t2", me, sup::restart::transient), rec("p", me)});
    std::string r = events(3);
    children before = sup::which_children(s);
    r += "; " + counts_of(s);
    gs::cast(pid_of(before, "t1"), quit{quit_how::normal});
    r += "; " + events(1);
    bool gone = poll_until([&] { return !pid_of(sup::which_children(s), "t1"); });
    r += gone ? "" : " (t1 still running)";
    gs::cast(pid_of(before, "t2"), quit{quit_how::shutdown});
    r += "; " + events(1);
    gone = poll_until([&] { return !pid_of(sup::which_children(s), "t2"); });
    r += gone ? "" : " (t2 still running)";
    r += "; " + changes(before, sup::which_children(s));
    r += "; " + counts_of(s);
    r += "; then " + queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start t1, start t2, start p; specs 3 active 3 workers 3 supervisors 0; stop t1 normal; "
            "stop t2 shutdown; t1 none, t2 none, p same; specs 3 active 1 workers 3 supervisors 0; then none");
}

TEST_P(supervisors, transient_child_crashing_is_restarted) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("t", me, sup::restart::transient)});
    std::string r = events(1);
    children before = sup::which_children(s);
    gs::cast(pid_of(before, "t"), crash{});
    r += "; " + events(2);
    children mid = sup::which_children(s);
    r += "; " + changes(before, mid);
    ember::exit(pid_of(mid, "t"), exit_reason::kill());
    r += "; " + events(1);
    r += "; " + changes(mid, sup::which_children(s));
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got, "start t; stop t exception: std::runtime_error: crash t, start t; t new; start t; t new");
}

TEST_P(supervisors, temporary_child_is_never_restarted_and_its_spec_is_removed) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("tmp1", me, sup::restart::temporary),
                                                   rec("tmp2", me, sup::restart::temporary), rec("p", me)});
    std::string r = events(3);
    children before = sup::which_children(s);
    ember::exit(pid_of(before, "tmp1"), exit_reason::kill());
    bool gone = poll_until([&] { return ids_of(sup::which_children(s)) == "tmp2 p"; });
    r += gone ? "; tmp1 removed" : "; tmp1 still there";
    gs::cast(pid_of(before, "tmp2"), quit{quit_how::normal});
    r += "; " + events(1);
    gone = poll_until([&] { return ids_of(sup::which_children(s)) == "p"; });
    r += gone ? "; tmp2 removed" : "; tmp2 still there";
    r += "; " + changes(before, sup::which_children(s)) + "; ";
    r += counts_of(s);
    r += "; then " + queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start tmp1, start tmp2, start p; tmp1 removed; stop tmp2 normal; tmp2 removed; p same; "
            "specs 1 active 1 workers 1 supervisors 0; then none");
}

// ---------------------------------------------------------------------------
// Restart intensity

TEST_P(supervisors, more_restarts_than_the_intensity_shut_the_supervisor_and_its_children_down) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me), rec("b", me), rec("c", me)}, 3);
    std::string r = events(3);
    for (int i = 0; i < 3; ++i) {
      ember::exit(pid_of(sup::which_children(s), "a"), exit_reason::kill());
      r += "; " + events(1);
    }
    children last = sup::which_children(s);
    ember::monitor_ref ra = ember::monitor(pid_of(last, "a"));
    ember::monitor_ref rb = ember::monitor(pid_of(last, "b"));
    ember::monitor_ref rc = ember::monitor(pid_of(last, "c"));
    ember::exit(pid_of(last, "a"), exit_reason::kill());  // the 4th: one too many
    r += "; supervisor exited " + exit_signal_of(s).to_string();
    r += "; " + queued_events();
    r += "; a " + down_of(ra).reason.to_string() + ", b ";
    r += down_of(rb).reason.to_string() + ", c ";
    r += down_of(rc).reason.to_string();
    return r;
  });
  EXPECT_EQ(got,
            "start a, start b, start c; start a; start a; start a; supervisor exited shutdown; "
            "stop c shutdown, stop b shutdown; a killed, b shutdown, c shutdown");
}

TEST_P(supervisors, intensity_zero_shuts_the_supervisor_down_at_the_first_exit) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me), rec("b", me)}, 0);
    std::string r = events(2);
    children kids = sup::which_children(s);
    ember::monitor_ref rb = ember::monitor(pid_of(kids, "b"));
    ember::exit(pid_of(kids, "a"), exit_reason::kill());
    r += "; supervisor exited " + exit_signal_of(s).to_string();
    r += "; " + queued_events() + "; b ";
    r += down_of(rb).reason.to_string();
    return r;
  });
  EXPECT_EQ(got, "start a, start b; supervisor exited shutdown; stop b shutdown; b shutdown");
}

TEST_P(supervisors, a_child_that_cannot_be_restarted_uses_up_the_intensity_and_the_supervisor_exits) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto got = in_process(rt(), [calls] {
    pid me = ember::self();
    // Starts once; every restart's start fails (each retry counts as a restart).
    sup::child_spec flaky{"flaky", [calls, me] {
                            if (calls->fetch_add(1) > 0) throw std::runtime_error("cannot start again");
                            return gs::start_link<recorded>(std::string("flaky"), me, false);
                          }};
    pid s = start_sup(sup::strategy::one_for_one, {flaky, rec("b", me)}, 3);
    std::string r = events(2);
    ember::exit(pid_of(sup::which_children(s), "flaky"), exit_reason::kill());
    r += "; supervisor exited " + exit_signal_of(s).to_string();
    r += "; " + queued_events();
    return r;
  });
  EXPECT_EQ(got, "start flaky, start b; supervisor exited shutdown; stop b shutdown");
  // The first start and one attempt per restart allowed (intensity 3).
  EXPECT_EQ(calls->load(), 4);
}

TEST_P(supervisors, a_failed_restart_is_retried_until_the_child_starts) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto got = in_process(rt(), [calls] {
    pid me = ember::self();
    // The first restart's start fails; the retry succeeds.
    sup::child_spec flaky{"flaky", [calls, me] {
                            if (calls->fetch_add(1) == 1) throw std::runtime_error("not now");
                            return gs::start_link<recorded>(std::string("flaky"), me, false);
                          }};
    pid s = start_sup(sup::strategy::one_for_one, {flaky, rec("b", me)}, 5);
    std::string r = events(2);
    children before = sup::which_children(s);
    ember::exit(pid_of(before, "flaky"), exit_reason::kill());
    r += "; " + events(1);
    r += "; start called " + std::to_string(calls->load());
    r += "; " + changes(before, sup::which_children(s));
    r += ember::is_alive(s) ? "; supervisor alive" : "; supervisor gone";
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got, "start flaky, start b; start flaky; start called 3; flaky new, b same; supervisor alive");
}

TEST_P(supervisors, killing_a_supervisor_ends_its_children_through_their_links) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("t", me, true), rec("n", me, false)});
    std::string r = events(2);
    children kids = sup::which_children(s);
    ember::monitor_ref rtr = ember::monitor(pid_of(kids, "t"));
    ember::monitor_ref rn = ember::monitor(pid_of(kids, "n"));
    ember::exit(s, exit_reason::kill());
    r += "; supervisor " + exit_signal_of(s).to_string();
    // The trapping server ends with its parent's reason, after terminate.
    r += "; t " + down_of(rtr).reason.to_string();
    r += ", n " + down_of(rn).reason.to_string();
    r += "; " + queued_events();
    return r;
  });
  EXPECT_EQ(got, "start t, start n; supervisor killed; t killed, n killed; stop t killed");
}

// ---------------------------------------------------------------------------
// Shutdown policies

TEST_P(supervisors, timeout_shutdown_kills_a_child_that_ignores_shutdown) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one,
                      {rec("b", me), stubborn("stubborn", me, sup::shutdown_policy::timeout(50ms))});
    std::string r = events(2);
    pid child = pid_of(sup::which_children(s), "stubborn");
    ember::monitor_ref ref = ember::monitor(child);
    sup::terminate_child(s, "stubborn");
    r += ember::is_alive(child) ? "; alive after terminate_child" : "; gone when terminate_child returned";
    r += "; exited " + down_of(ref).reason.to_string();
    r += "; " + describe(sup::which_children(s));
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start b, ready; gone when terminate_child returned; exited killed; b worker running, stubborn worker none");
}

TEST_P(supervisors, timeout_shutdown_kills_a_stubborn_child_when_the_supervisor_stops) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one,
                      {rec("a", me), stubborn("stubborn", me, sup::shutdown_policy::timeout(50ms)), rec("c", me)});
    // "ready" comes from the function child when it runs: in any order with "start c".
    std::string r = sorted_events(3);
    ember::monitor_ref ref = ember::monitor(pid_of(sup::which_children(s), "stubborn"));
    gs::stop(s, exit_reason::shutdown());
    // The stubborn child's down comes between c's stop and a's: the
    // supervisor waits for each child before it stops the one before.
    for (int i = 0; i < 3; ++i) {
      r += "; " + ember::receive([](event e) { return e.what; },
                                 when([ref](const ember::down& d) { return d.ref == ref; },
                                      [](ember::down d) { return "stubborn " + d.reason.to_string(); }),
                                 ember::after(hang_limit, [] { return std::string("<nothing>"); }));
    }
    return r;
  });
  EXPECT_EQ(got, "ready, start a, start c; stop c shutdown; stubborn killed; stop a shutdown");
}

TEST_P(supervisors, brutal_kill_ends_the_child_with_killed_without_terminate) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    sup::child_spec a = rec("a", me);  // traps exits: shutdown would go through terminate
    a.shutdown = sup::shutdown_policy::brutal_kill();
    pid s = start_sup(sup::strategy::one_for_one, {a, rec("b", me)});
    std::string r = events(2);
    children kids = sup::which_children(s);
    ember::monitor_ref ra = ember::monitor(pid_of(kids, "a"));
    ember::monitor_ref rb = ember::monitor(pid_of(kids, "b"));
    sup::terminate_child(s, "a");
    r += "; a " + down_of(ra).reason.to_string() + ", events ";
    r += queued_events();
    sup::terminate_child(s, "b");
    r += "; b " + down_of(rb).reason.to_string() + ", events ";
    r += queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got, "start a, start b; a killed, events none; b shutdown, events stop b shutdown");
}

TEST_P(supervisors, infinity_shutdown_waits_for_a_child_however_long_it_takes) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    // Traps exits; told to stop, it says so and finishes only when the test
    // sends `go`.
    sup::child_spec slow = sup::function("slow", [me] {
      ember::trap_exit(true);
      ember::send(me, event{"ready"});
      ember::receive(when([](const ember::exit_signal& s) { return s.reason.is(exit_reason::kind::shutdown); },
                          [](const ember::exit_signal&) {}));
      ember::send(me, event{"asked to stop"});
      ember::receive([](go) {});
      ember::exit(exit_reason::shutdown());
    });
    slow.shutdown = sup::shutdown_policy::infinity();
    pid s = start_sup(sup::strategy::one_for_one, {slow});
    std::string r = events(1);
    pid child = pid_of(sup::which_children(s), "slow");
    ember::monitor_ref ref = ember::monitor(child);
    ember::spawn([s, me] {
      std::string o = outcome_of([s] { gs::stop(s, exit_reason::shutdown()); });
      ember::send(me, event{"stop " + o});
    });
    r += "; " + events(1);
    // The child cannot exit before `go`, so stop cannot have returned.
    r += "; before go: " + queued_events();
    r += (ember::is_alive(s) ? ", supervisor alive" : ", supervisor gone");
    ember::send(child, go{});
    r += "; " + events(1) + "; child ";
    r += down_of(ref).reason.to_string();
    return r;
  });
  EXPECT_EQ(got, "ready; asked to stop; before go: none, supervisor alive; stop returned; child shutdown");
}

TEST_P(supervisors, a_trapping_gen_server_child_gets_terminate_shutdown_and_a_non_trapping_one_just_exits) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("t", me, true), rec("n", me, false)});
    std::string r = events(2);
    children kids = sup::which_children(s);
    ember::monitor_ref rtr = ember::monitor(pid_of(kids, "t"));
    ember::monitor_ref rn = ember::monitor(pid_of(kids, "n"));
    gs::stop(s, exit_reason::shutdown());
    r += "; " + queued_events();
    r += "; t " + down_of(rtr).reason.to_string() + ", n ";
    r += down_of(rn).reason.to_string();
    return r;
  });
  EXPECT_EQ(got, "start t, start n; stop t shutdown; t shutdown, n shutdown");
}

// ---------------------------------------------------------------------------
// The child API

TEST_P(supervisors, start_child_adds_a_child_at_the_end_and_starts_it) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me)});
    std::string r = events(1);
    pid b = sup::start_child(s, rec("b", me));
    r += "; " + queued_events();
    children kids = sup::which_children(s);
    r += "; ids " + ids_of(kids) + (pid_of(kids, "b") == b ? ", the pid returned" : ", another pid");
    r += "; b answers " + gs::call<std::string>(b, ping{}) + "; ";
    r += counts_of(s);
    gs::stop(s, exit_reason::shutdown());
    r += "; " + queued_events();
    return r;
  });
  EXPECT_EQ(got,
            "start a; start b; ids a b, the pid returned; b answers b; specs 2 active 2 workers 2 supervisors 0; "
            "stop b shutdown, stop a shutdown");
}

TEST_P(supervisors, start_child_with_an_id_in_use_fails_with_already_present) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me), rec("b", me)});
    std::string r = events(2);
    children before = sup::which_children(s);
    r += "; running id: " + outcome_of([&] { sup::start_child(s, rec("a", me)); });
    sup::terminate_child(s, "b");
    r += "; " + events(1);
    r += "; stopped id: " + outcome_of([&] { sup::start_child(s, rec("b", me)); });
    r += "; " + changes(before, sup::which_children(s)) + "; then ";
    r += queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a, start b; running id: error already_present; stop b shutdown; "
            "stopped id: error already_present; a same, b none; then none");
}

TEST_P(supervisors, start_child_whose_start_fails_throws_start_failed_and_the_supervisor_lives_on) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me)});
    std::string r = events(1);
    children before = sup::which_children(s);
    r += "; init fails: " + outcome_of([&] { sup::start_child(s, sup::worker<refuses>("bad")); });
    sup::child_spec throws{"throws", []() -> pid { throw std::runtime_error("no way"); }};
    r += "; start throws: " + outcome_of([&] { sup::start_child(s, throws); });
    r += ember::is_alive(s) ? "; supervisor alive" : "; supervisor gone";
    r += "; " + changes(before, sup::which_children(s)) + "; ";
    r += counts_of(s);
    // The ids are free: the specs were not added.
    r += "; " + outcome_of([&] { sup::start_child(s, rec("bad", me)); });
    r += ", " + events(1);
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a; init fails: exit_error start_failed: exception: std::runtime_error: init refused; "
            "start throws: exit_error start_failed: exception: std::runtime_error: no way; supervisor alive; "
            "a same; specs 1 active 1 workers 1 supervisors 0; returned, start bad");
}

TEST_P(supervisors, terminate_child_keeps_the_spec_and_restart_child_starts_it_again) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me), rec("b", me)});
    std::string r = events(2);
    children before = sup::which_children(s);
    sup::terminate_child(s, "a");
    r += "; " + queued_events();
    r += "; " + changes(before, sup::which_children(s)) + "; ";
    r += counts_of(s);
    r += "; again: " + outcome_of([&] { sup::terminate_child(s, "a"); });
    pid a = sup::restart_child(s, "a");
    r += "; " + queued_events();
    children now = sup::which_children(s);
    r += "; " + changes(before, now) + (pid_of(now, "a") == a ? ", the pid returned" : ", another pid");
    r += "; a answers " + gs::call<std::string>(a, ping{}) + "; ";
    r += counts_of(s);
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a, start b; stop a shutdown; a none, b same; specs 2 active 1 workers 2 supervisors 0; "
            "again: returned; start a; a new, b same, the pid returned; a answers a; "
            "specs 2 active 2 workers 2 supervisors 0");
}

TEST_P(supervisors, restart_child_and_delete_child_of_a_running_child_fail_with_running) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me)});
    std::string r = events(1);
    children before = sup::which_children(s);
    r += "; restart_child: " + outcome_of([&] { sup::restart_child(s, "a"); });
    r += "; delete_child: " + outcome_of([&] { sup::delete_child(s, "a"); });
    r += "; " + changes(before, sup::which_children(s)) + "; then ";
    r += queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got, "start a; restart_child: error running; delete_child: error running; a same; then none");
}

TEST_P(supervisors, delete_child_of_a_stopped_child_removes_its_spec) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me), rec("b", me), rec("c", me)});
    std::string r = events(3);
    sup::terminate_child(s, "b");
    r += "; " + events(1);
    r += "; delete_child: " + outcome_of([&] { sup::delete_child(s, "b"); });
    r += "; ids " + ids_of(sup::which_children(s)) + "; ";
    r += counts_of(s);
    r += "; restart_child: " + outcome_of([&] { sup::restart_child(s, "b"); });
    r += "; delete again: " + outcome_of([&] { sup::delete_child(s, "b"); });
    // The id is free again: a new spec under it goes at the end.
    sup::start_child(s, rec("b", me));
    r += "; " + events(1) + "; ids ";
    r += ids_of(sup::which_children(s));
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a, start b, start c; stop b shutdown; delete_child: returned; ids a c; "
            "specs 2 active 2 workers 2 supervisors 0; restart_child: error not_found; "
            "delete again: error not_found; start b; ids a c b");
}

TEST_P(supervisors, unknown_ids_fail_with_not_found) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("a", me)});
    std::string r = events(1);
    r += "; terminate_child: " + outcome_of([&] { sup::terminate_child(s, "nobody"); });
    r += "; restart_child: " + outcome_of([&] { sup::restart_child(s, "nobody"); });
    r += "; delete_child: " + outcome_of([&] { sup::delete_child(s, "nobody"); });
    r += "; ids " + ids_of(sup::which_children(s)) + "; then ";
    r += queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a; terminate_child: error not_found; restart_child: error not_found; "
            "delete_child: error not_found; ids a; then none");
}

TEST_P(supervisors, restart_child_whose_start_fails_throws_start_failed_and_keeps_the_spec) {
  auto refuse = std::make_shared<std::atomic<bool>>(false);
  auto got = in_process(rt(), [refuse] {
    pid me = ember::self();
    sup::child_spec c{"c", [refuse, me] {
                        if (refuse->load()) throw std::runtime_error("refused");
                        return gs::start_link<recorded>(std::string("c"), me, false);
                      }};
    pid s = start_sup(sup::strategy::one_for_one, {c});
    std::string r = events(1);
    sup::terminate_child(s, "c");
    refuse->store(true);
    r += "; " + outcome_of([&] { sup::restart_child(s, "c"); });
    r += "; " + describe(sup::which_children(s));
    refuse->store(false);
    r += "; " + outcome_of([&] { sup::restart_child(s, "c"); });
    r += "; " + events(1);
    r += "; " + describe(sup::which_children(s));
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start c; exit_error start_failed: exception: std::runtime_error: refused; c worker none; returned; "
            "start c; c worker running");
}

TEST_P(supervisors, invalid_flags_are_rejected) {
  auto got = in_process(rt(), [] {
    sup::spec negative{.flags = {.strategy = sup::strategy::one_for_one, .intensity = -1, .period = 1s},
                       .children = {}};
    sup::spec no_period{.flags = {.strategy = sup::strategy::one_for_one, .intensity = 1, .period = 0s},
                        .children = {}};
    std::string r = "intensity -1: " + outcome_of([&] { sup::start(negative); });
    r += "; period 0: " + outcome_of([&] { sup::start_link(no_period); });
    r += "; dynamic, intensity -1: " +
         outcome_of([&] { dsup::start(dsup::spec{.flags = negative.flags, .child = sup::function("", [] {})}); });
    return r;
  });
  EXPECT_EQ(got,
            "intensity -1: error invalid_argument; period 0: error invalid_argument; "
            "dynamic, intensity -1: error invalid_argument");
}

TEST_P(supervisors, terminate_child_of_a_temporary_child_drops_its_spec) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, {rec("tmp", me, sup::restart::temporary), rec("a", me)});
    std::string r = events(2);
    sup::terminate_child(s, "tmp");
    r += "; " + queued_events() + "; ids ";
    r += ids_of(sup::which_children(s));
    r += "; restart_child: " + outcome_of([&] { sup::restart_child(s, "tmp"); });
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got, "start tmp, start a; stop tmp shutdown; ids a; restart_child: error not_found");
}

// A supervisor with a worker, a supervisor (with one worker), a function
// child and an ignored child.
std::vector<sup::child_spec> mixed_children(pid me) {
  sup::spec inner{.flags = flags_of(sup::strategy::one_for_one), .children = {rec("x", me)}};
  return {rec("a", me), sup::child_supervisor("inner", inner),
          sup::function("f", [] { ember::receive([](go) {}); }), sup::child_spec{"ign", [] { return pid{}; }}};
}

TEST_P(supervisors, which_children_reports_ids_pids_and_types_in_spec_order) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, mixed_children(me));
    std::string r = events(2);
    children kids = sup::which_children(s);
    r += "; " + describe(kids);
    r += "; inner has " + ids_of(sup::which_children(pid_of(kids, "inner")));
    gs::stop(s, exit_reason::shutdown());
    r += "; " + queued_events();
    return r;
  });
  EXPECT_EQ(got,
            "start a, start x; a worker running, inner supervisor running, f worker running, ign worker none; "
            "inner has x; stop x shutdown, stop a shutdown");
}

TEST_P(supervisors, count_children_counts_specs_active_workers_and_supervisors) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_sup(sup::strategy::one_for_one, mixed_children(me));
    std::string r = events(2);
    r += "; " + counts_of(s);
    sup::terminate_child(s, "inner");
    r += "; after terminating inner: " + counts_of(s);
    sup::delete_child(s, "inner");
    r += "; after deleting it: " + counts_of(s);
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a, start x; specs 4 active 3 workers 3 supervisors 1; "
            "after terminating inner: specs 4 active 2 workers 3 supervisors 1; "
            "after deleting it: specs 3 active 2 workers 3 supervisors 0");
}

TEST_P(supervisors, child_spec_helpers_give_otp_defaults) {
  auto describe_spec = [](const sup::child_spec& c) {
    std::string r = c.id;
    r += c.restart == sup::restart::permanent ? " permanent" : " not permanent";
    r += c.type == sup::child_type::worker ? " worker" : " supervisor";
    if (c.shutdown.is_infinity()) {
      r += " infinity";
    } else if (c.shutdown.is_brutal_kill()) {
      r += " brutal_kill";
    } else {
      r += " " + std::to_string(c.shutdown.time().count()) + "ms";
    }
    return r;
  };
  auto got = in_process(rt(), [&] {
    pid me = ember::self();
    return describe_spec(rec("w", me)) + ", " + describe_spec(sup::function("f", [] {})) + ", " +
           describe_spec(sup::child_supervisor("s", sup::spec{}));
  });
  EXPECT_EQ(got, "w permanent worker 5000ms, f permanent worker 5000ms, s permanent supervisor infinity");
}

TEST_P(supervisors, a_named_supervisor_is_reached_by_its_name) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    ember::trap_exit(true);
    gs::options o;
    o.name = "the_supervisor";
    pid s = sup::start_link(sup::spec{.flags = flags_of(sup::strategy::one_for_one), .children = {rec("a", me)}}, o);
    std::string r = events(1);
    r += ember::whereis("the_supervisor") == s ? "; registered" : "; not registered";
    sup::start_child("the_supervisor", rec("b", me));
    r += "; " + events(1) + "; ids ";
    r += ids_of(sup::which_children("the_supervisor")) + "; ";
    r += counts_of("the_supervisor");
    gs::stop("the_supervisor", exit_reason::shutdown());
    r += "; " + queued_events();
    r += (ember::whereis("the_supervisor") ? "; name kept" : "; name freed");
    return r;
  });
  EXPECT_EQ(got,
            "start a; registered; start b; ids a b; specs 2 active 2 workers 2 supervisors 0; "
            "stop b shutdown, stop a shutdown; name freed");
}

// ---------------------------------------------------------------------------
// Starting

TEST_P(supervisors, start_link_fails_with_failed_to_start_child_and_stops_the_children_started) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    ember::trap_exit(true);  // the supervisor exits linked to us
    std::string r;
    try {
      sup::start_link(sup::spec{.flags = flags_of(sup::strategy::one_for_one),
                                .children = {rec("a", me), rec("b", me), sup::worker<refuses>("c"), rec("d", me)}});
      r = "started";
    } catch (const ember::exit_error& e) {
      std::string why = e.reason().to_string();
      r = errc_name(e.code());
      r += why.find("failed_to_start_child") != std::string::npos ? ", failed_to_start_child" : ", reason '" + why + "'";
      r += why.find("'c'") != std::string::npos ? ", names c" : ", does not name c";
      r += why.find("init refused") != std::string::npos ? ", with the child's reason" : ", without the child's reason";
      exit_reason linked = ember::receive([](ember::exit_signal s) { return s.reason; },
                                          ember::after(hang_limit, [] { return exit_reason("<no exit signal>"); }));
      r += linked == e.reason() ? "; the supervisor exited with it" : "; the supervisor exited " + linked.to_string();
    }
    r += "; " + queued_events();
    return r;
  });
  EXPECT_EQ(got,
            "start_failed, failed_to_start_child, names c, with the child's reason; the supervisor exited with it; "
            "start a, start b, stop b shutdown, stop a shutdown");
}

TEST_P(supervisors, a_start_function_returning_the_null_pid_is_ignored_and_not_restarted) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto got = in_process(rt(), [calls] {
    pid me = ember::self();
    sup::child_spec ign{"ign", [calls] {
                          calls->fetch_add(1);
                          return pid{};
                        }};
    pid s = start_sup(sup::strategy::one_for_one, {ign, rec("a", me)});
    std::string r = events(1);
    r += "; " + describe(sup::which_children(s)) + "; ";
    r += counts_of(s);
    ember::exit(pid_of(sup::which_children(s), "a"), exit_reason::kill());
    r += "; " + events(1) + "; ";
    r += describe(sup::which_children(s));
    r += "; start called " + std::to_string(calls->load());
    pid again = sup::restart_child(s, "ign");
    r += again ? "; restart_child gave a pid" : "; restart_child gave the null pid";
    r += ", start called " + std::to_string(calls->load());
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start a; ign worker none, a worker running; specs 2 active 1 workers 2 supervisors 0; start a; "
            "ign worker none, a worker running; start called 1; restart_child gave the null pid, start called 2");
}

// ---------------------------------------------------------------------------
// Nested supervisors

TEST_P(supervisors, a_grandchild_crash_is_handled_by_the_inner_supervisor_alone) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    sup::spec inner{.flags = flags_of(sup::strategy::one_for_one, 5), .children = {rec("w1", me), rec("w2", me)}};
    pid s = start_sup(sup::strategy::one_for_one, {sup::child_supervisor("inner", inner), rec("x", me)});
    std::string r = events(3);
    children outer_before = sup::which_children(s);
    pid in = pid_of(outer_before, "inner");
    children inner_before = sup::which_children(in);
    ember::exit(pid_of(inner_before, "w1"), exit_reason::kill());
    r += "; " + events(1);
    r += "; outer: " + changes(outer_before, sup::which_children(s));
    r += "; inner: " + changes(inner_before, sup::which_children(in));
    r += "; then " + queued_events();
    gs::stop(s, exit_reason::shutdown());
    r += "; " + queued_events();
    return r;
  });
  EXPECT_EQ(got,
            "start w1, start w2, start x; start w1; outer: inner same, x same; inner: w1 new, w2 same; then none; "
            "stop x shutdown, stop w2 shutdown, stop w1 shutdown");
}

TEST_P(supervisors, an_inner_supervisor_past_its_intensity_exits_shutdown_and_the_outer_restarts_it) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    sup::spec inner{.flags = flags_of(sup::strategy::one_for_one, 0), .children = {rec("w1", me), rec("w2", me)}};
    pid s = start_sup(sup::strategy::one_for_one, {sup::child_supervisor("inner", inner), rec("x", me)});
    std::string r = events(3);
    children outer_before = sup::which_children(s);
    pid in = pid_of(outer_before, "inner");
    children inner_before = sup::which_children(in);
    ember::monitor_ref ref = ember::monitor(in);
    ember::exit(pid_of(inner_before, "w1"), exit_reason::kill());
    r += "; inner exited " + down_of(ref).reason.to_string();
    r += "; " + events(3);
    children outer_now = sup::which_children(s);
    r += "; outer: " + changes(outer_before, outer_now);
    children inner_now = sup::which_children(pid_of(outer_now, "inner"));
    r += "; inner: " + changes(inner_before, inner_now);
    r += "; w1 answers " + gs::call<std::string>(pid_of(inner_now, "w1"), ping{});
    r += "; then " + queued_events();
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "start w1, start w2, start x; inner exited shutdown; stop w2 shutdown, start w1, start w2; "
            "outer: inner new, x same; inner: w1 new, w2 new; w1 answers w1; then none");
}

// ---------------------------------------------------------------------------
// Function children

TEST_P(supervisors, function_children_are_supervised_and_restarted_like_servers) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    // Reports its pid, then returns (exits normal) when sent go.
    sup::child_spec f = sup::function("f", [me] {
      ember::send(me, started{ember::self()});
      ember::receive([](go) {});
    });
    pid s = start_sup(sup::strategy::one_for_one, {f, rec("a", me)});
    std::string r = events(1);
    pid p1 = next_started();
    r += pid_of(sup::which_children(s), "f") == p1 ? "; f running" : "; f not the reported pid";
    ember::exit(p1, exit_reason::kill());
    pid p2 = next_started();
    r += p2 && p2 != p1 && pid_of(sup::which_children(s), "f") == p2 ? "; killed: restarted" : "; killed: not restarted";
    ember::send(p2, go{});  // exits normal: permanent, so restarted
    pid p3 = next_started();
    children kids = sup::which_children(s);
    r += p3 && p3 != p2 && pid_of(kids, "f") == p3 ? "; exited normal: restarted" : "; exited normal: not restarted";
    ember::monitor_ref ref = ember::monitor(p3);
    gs::stop(s, exit_reason::shutdown());
    r += "; stopped " + down_of(ref).reason.to_string() + "; ";
    r += queued_events();
    return r;
  });
  EXPECT_EQ(got,
            "start a; f running; killed: restarted; exited normal: restarted; stopped shutdown; stop a shutdown");
}

// ---------------------------------------------------------------------------
// Dynamic supervisors

sup::child_spec member_template(pid observer, sup::restart kind = sup::restart::permanent) {
  sup::child_spec c = sup::worker<member>("", observer);
  c.restart = kind;
  return c;
}

// Starts a dynamic supervisor linked to the calling process (which traps exits).
pid start_dyn(sup::child_spec tmpl, std::size_t max_children = 0, int intensity = 10) {
  ember::trap_exit(true);
  return dsup::start_link(dsup::spec{.flags = flags_of(sup::strategy::one_for_one, intensity),
                                     .child = std::move(tmpl),
                                     .max_children = max_children});
}

std::set<pid> running_children(pid s) {
  std::set<pid> r;
  for (const auto& c : sup::which_children(s))
    if (c.child) r.insert(c.child);
  return r;
}

TEST_P(supervisors, dynamic_supervisor_starts_many_children_and_restarts_the_one_killed) {
  constexpr int n = EMBER_TEST_SANITIZED ? 300 : 1000;
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(member_template(me));
    std::set<pid> mine;
    int mismatched = 0;
    for (int i = 0; i < n; ++i) {
      pid p = dsup::start_child(s);
      if (next_started() != p) ++mismatched;
      mine.insert(p);
    }
    std::string r = "distinct " + std::to_string(mine.size()) + ", mismatched " + std::to_string(mismatched);
    r += "; " + counts_of(s);
    auto ids = sup::which_children(s);
    r += std::all_of(ids.begin(), ids.end(), [](const sup::child_info& c) { return c.id.empty(); })
             ? "; ids empty"
             : "; some id not empty";
    pid victim = *std::next(mine.begin(), n / 2);
    ember::exit(victim, exit_reason::kill());
    pid fresh = next_started();
    std::set<pid> now = running_children(s);
    std::size_t removed = 0, added = 0;
    for (pid p : mine) removed += now.count(p) ? 0 : 1;
    for (pid p : now) added += mine.count(p) ? 0 : 1;
    r += "; removed " + std::to_string(removed) + (now.count(victim) ? " (not the killed one)" : " (the killed one)");
    r += ", added " + std::to_string(added) + (now.count(fresh) ? " (the restarted one)" : " (another one)");
    r += "; " + counts_of(s) + "; restarted answers ";
    r += gs::call<std::string>(fresh, ping{});
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  std::string ns = std::to_string(n);
  EXPECT_EQ(got, "distinct " + ns + ", mismatched 0; specs " + ns + " active " + ns + " workers " + ns +
                     " supervisors 0; ids empty; removed 1 (the killed one), added 1 (the restarted one); specs " +
                     ns + " active " + ns + " workers " + ns + " supervisors 0; restarted answers member");
}

TEST_P(supervisors, stopping_a_dynamic_supervisor_stops_every_child_with_shutdown) {
  constexpr int n = 100;
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(member_template(me));
    std::vector<ember::monitor_ref> refs;
    for (int i = 0; i < n; ++i) refs.push_back(ember::monitor(dsup::start_child(s)));
    gs::stop(s, exit_reason::shutdown());
    std::map<std::string, int> reasons;
    for (auto ref : refs) ++reasons[down_of(ref).reason.to_string()];
    std::string r;
    for (auto& [why, count] : reasons) r += (r.empty() ? "" : ", ") + why + " " + std::to_string(count);
    return r;
  });
  EXPECT_EQ(got, "shutdown " + std::to_string(n));
}

TEST_P(supervisors, dynamic_supervisor_kills_children_that_ignore_shutdown_after_the_timeout) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(stubborn("", me, sup::shutdown_policy::timeout(50ms)));
    std::vector<ember::monitor_ref> refs;
    for (int i = 0; i < 3; ++i) refs.push_back(ember::monitor(dsup::start_child(s)));
    std::string r = events(3);
    gs::stop(s, exit_reason::shutdown());
    for (auto ref : refs) r += "; " + down_of(ref).reason.to_string();
    return r;
  });
  EXPECT_EQ(got, "ready, ready, ready; killed; killed; killed");
}

TEST_P(supervisors, dynamic_terminate_child_stops_the_child_and_forgets_it) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(member_template(me));
    pid p1 = dsup::start_child(s), p2 = dsup::start_child(s), p3 = dsup::start_child(s);
    ember::monitor_ref ref = ember::monitor(p2);
    dsup::terminate_child(s, p2);
    std::string r = "terminated " + down_of(ref).reason.to_string();
    r += running_children(s) == std::set<pid>{p1, p3} ? "; the others remain" : "; children changed otherwise";
    r += "; " + counts_of(s);
    r += "; again: " + outcome_of([&] { dsup::terminate_child(s, p2); });
    r += "; not a child: " + outcome_of([&] { dsup::terminate_child(s, me); });
    r += "; null pid: " + outcome_of([&] { dsup::terminate_child(s, pid{}); });
    queued_started();
    r += "; restarted " + std::to_string(queued_started());
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "terminated shutdown; the others remain; specs 2 active 2 workers 2 supervisors 0; "
            "again: error not_found; not a child: error not_found; null pid: error not_found; restarted 0");
}

TEST_P(supervisors, dynamic_max_children_limits_start_child_with_system_limit) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(member_template(me), 3);
    std::vector<pid> kids;
    for (int i = 0; i < 3; ++i) kids.push_back(dsup::start_child(s));
    std::string r = "4th: " + outcome_of([&] { dsup::start_child(s); });
    r += "; own start: " + outcome_of([&] { dsup::start_child(s, [me] { return gs::start_link<member>(me); }); });
    r += "; started " + std::to_string(queued_started()) + "; ";
    r += counts_of(s);
    dsup::terminate_child(s, kids[0]);
    r += "; after a terminate: " + outcome_of([&] { dsup::start_child(s); });
    r += ", " + counts_of(s);
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "4th: error system_limit; own start: error system_limit; started 3; "
            "specs 3 active 3 workers 3 supervisors 0; after a terminate: returned, "
            "specs 3 active 3 workers 3 supervisors 0");
}

TEST_P(supervisors, dynamic_transient_children_are_removed_on_normal_or_shutdown_and_restarted_on_a_crash) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(member_template(me, sup::restart::transient));
    pid p1 = dsup::start_child(s), p2 = dsup::start_child(s), p3 = dsup::start_child(s);
    queued_started();
    gs::cast(p1, quit{quit_how::normal});
    std::string r = poll_until([&] { return !running_children(s).count(p1); }) ? "normal: removed" : "normal: kept";
    r += ", " + counts_of(s);
    gs::cast(p2, quit{quit_how::shutdown});
    r += poll_until([&] { return !running_children(s).count(p2); }) ? "; shutdown: removed" : "; shutdown: kept";
    r += ", " + counts_of(s);
    r += "; restarted " + std::to_string(queued_started());
    ember::exit(p3, exit_reason::kill());
    pid p4 = next_started();
    r += running_children(s) == std::set<pid>{p4} ? "; killed: restarted" : "; killed: not restarted";
    r += ", " + counts_of(s);
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "normal: removed, specs 2 active 2 workers 2 supervisors 0; shutdown: removed, "
            "specs 1 active 1 workers 1 supervisors 0; restarted 0; killed: restarted, "
            "specs 1 active 1 workers 1 supervisors 0");
}

TEST_P(supervisors, dynamic_temporary_children_are_never_restarted) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(member_template(me, sup::restart::temporary));
    pid p1 = dsup::start_child(s), p2 = dsup::start_child(s);
    queued_started();
    ember::exit(p1, exit_reason::kill());
    std::string r = poll_until([&] { return !running_children(s).count(p1); }) ? "killed: removed" : "killed: kept";
    gs::cast(p2, quit{quit_how::normal});
    r += poll_until([&] { return !running_children(s).count(p2); }) ? "; normal: removed" : "; normal: kept";
    r += "; " + counts_of(s) + "; restarted ";
    r += std::to_string(queued_started());
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got, "killed: removed; normal: removed; specs 0 active 0 workers 0 supervisors 0; restarted 0");
}

TEST_P(supervisors, dynamic_start_child_with_its_own_start_function_is_restarted_with_it) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(member_template(me));
    pid plain = dsup::start_child(s);
    pid custom = dsup::start_child(s, [me] { return gs::start_link<member>(me, std::string("custom")); });
    queued_started();
    std::string r = gs::call<std::string>(plain, ping{}) + ", ";
    r += gs::call<std::string>(custom, ping{});
    r += "; " + counts_of(s);
    ember::exit(custom, exit_reason::kill());
    pid again = next_started();
    r += "; restarted as " + gs::call<std::string>(again, ping{});
    r += running_children(s) == std::set<pid>{plain, again} ? ", the plain one kept" : ", children changed otherwise";
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got, "member, custom; specs 2 active 2 workers 2 supervisors 0; restarted as custom, the plain one kept");
}

TEST_P(supervisors, dynamic_start_child_that_ignores_or_fails_adds_no_child) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(member_template(me));
    pid kept = dsup::start_child(s);
    pid ignored = dsup::start_child(s, [] { return pid{}; });
    std::string r = ignored ? "ignore: a pid" : "ignore: the null pid";
    r += "; init fails: " + outcome_of([&] { dsup::start_child(s, [] { return gs::start_link<refuses>(); }); });
    r += ember::is_alive(s) ? "; supervisor alive" : "; supervisor gone";
    r += running_children(s) == std::set<pid>{kept} ? "; only the first child" : "; children changed";
    r += "; " + counts_of(s);
    gs::stop(s, exit_reason::shutdown());
    return r;
  });
  EXPECT_EQ(got,
            "ignore: the null pid; init fails: exit_error start_failed: exception: std::runtime_error: init refused; "
            "supervisor alive; only the first child; specs 1 active 1 workers 1 supervisors 0");
}

TEST_P(supervisors, dynamic_supervisor_past_its_intensity_exits_shutdown_with_its_children) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid s = start_dyn(member_template(me), 0, 2);
    std::vector<pid> kids;
    for (int i = 0; i < 3; ++i) kids.push_back(dsup::start_child(s));
    queued_started();
    ember::monitor_ref r1 = ember::monitor(kids[1]), r2 = ember::monitor(kids[2]);
    ember::exit(kids[0], exit_reason::kill());
    pid a = next_started();
    ember::exit(a, exit_reason::kill());
    pid b = next_started();
    ember::exit(b, exit_reason::kill());  // the third restart within the period: one too many
    std::string r = "supervisor exited " + exit_signal_of(s).to_string();
    r += "; others " + down_of(r1).reason.to_string() + ", ";
    r += down_of(r2).reason.to_string();
    r += "; restarted " + std::to_string(queued_started());
    return r;
  });
  EXPECT_EQ(got, "supervisor exited shutdown; others shutdown, shutdown; restarted 0");
}

TEST_P(supervisors, dynamic_child_that_cannot_be_restarted_uses_up_the_intensity) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto got = in_process(rt(), [calls] {
    pid me = ember::self();
    sup::child_spec tmpl{"", [calls, me] {
                           if (calls->fetch_add(1) > 0) throw std::runtime_error("cannot start again");
                           return gs::start_link<member>(me);
                         }};
    pid s = start_dyn(tmpl, 0, 2);
    pid p = dsup::start_child(s);
    next_started();
    ember::exit(p, exit_reason::kill());
    std::string r = "supervisor exited " + exit_signal_of(s).to_string();
    r += "; restarted " + std::to_string(queued_started());
    return r;
  });
  EXPECT_EQ(got, "supervisor exited shutdown; restarted 0");
  // The first start and one attempt per restart allowed (intensity 2).
  EXPECT_EQ(calls->load(), 3);
}

TEST_P(supervisors, dynamic_supervisor_rejects_a_strategy_other_than_one_for_one) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    return outcome_of([&] {
      dsup::start(dsup::spec{.flags = flags_of(sup::strategy::one_for_all), .child = member_template(me)});
    });
  });
  EXPECT_EQ(got, "error invalid_argument");
}

// ---------------------------------------------------------------------------
// Ownership: a supervisor's specs are its own
//
// The specs given to start / start_link are built in the caller's heap,
// which goes when the caller exits. The supervisor must keep its own copies:
// an unlinked supervisor outlives its starter, and a linked one still stops
// its children and destroys its specs after its parent has gone. A use of
// the dead caller's memory may end the whole OS process (a fault, an abort
// from free(), a sanitizer report), so these scenarios run in a child
// process (a death test) with a runtime of their own: such a failure fails
// the test, not the test program.

// Ids and names longer than std::string's inline buffer, so they live in a heap.
const std::string long_a = "first_child_with_a_name_longer_than_the_inline_buffer";
const std::string long_b = "second_child_with_a_name_longer_than_the_inline_buffer";

// Allocates and frees a few MiB in the calling process, so that heap memory
// freed by a process that exited is reused (and overwritten).
void churn_memory() {
  std::vector<std::string> junk;
  for (int round = 0; round < 40; ++round)
    for (std::size_t len = 16; len < 600; len += 8) junk.emplace_back(len, 'z');
}

// The next event, or how the monitored supervisor exited if it exits first.
std::string event_or_exit(ember::monitor_ref sup_ref) {
  return ember::receive([](event e) { return e.what; },
                        when([sup_ref](const ember::down& d) { return d.ref == sup_ref; },
                             [](ember::down d) { return "supervisor exited " + d.reason.to_string(); }),
                        ember::after(hang_limit, [] { return std::string("<no event>"); }));
}

class supervisor_ownership_DeathTest : public ::testing::TestWithParam<unsigned> {
 protected:
  // Runs `scenario` (returning what it observed) in a process of a new
  // runtime with GetParam() schedulers, in a child OS process; waits for
  // every process to exit (the supervisor has destroyed its specs). Passes
  // if the child then exits 0 having observed `expected`.
  template <class F>
  void expect_in_child_process(F scenario, const std::string& expected) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
          std::string got;
          try {
            ember::runtime_options o;
            o.schedulers = GetParam();
            ember::runtime rt(o);
            got = in_process(rt, scenario);
            if (!rt.wait_for(hang_limit)) got += " (processes left)";
          } catch (const std::exception& e) {
            got = std::string("exception: ") + e.what();
          }
          if (got == expected) {
            std::fputs("as expected\n", stderr);
            std::_Exit(0);
          }
          std::fprintf(stderr, "observed: %s\nexpected: %s\n", got.c_str(), expected.c_str());
          std::_Exit(1);
        },
        ::testing::ExitedWithCode(0), "as expected");
  }
};

TEST_P(supervisor_ownership_DeathTest, a_supervisor_keeps_working_after_the_process_that_started_it_exits) {
  expect_in_child_process(
      [] {
        pid me = ember::self();
        // The starter builds the specs (in its own heap), starts an unlinked
        // supervisor with them, and exits; its heap goes with it.
        auto [starter, sref] = ember::spawn_monitor([me] {
          pid s = sup::start(sup::spec{.flags = flags_of(sup::strategy::one_for_one),
                                       .children = {rec(long_a, me), rec(long_b, me)}});
          ember::send(me, s);
        });
        pid s = ember::receive([](pid p) { return p; });
        ember::monitor_ref sup_ref = ember::monitor(s);
        std::string r = "starter " + down_of(sref).reason.to_string();
        churn_memory();
        r += "; " + events(2);
        children kids = sup::which_children(s);
        r += "; ids " + ids_of(kids);
        // The first child, by position (its id may be lost): restarted by
        // its spec's start function.
        ember::exit(kids.at(0).child, exit_reason::kill());
        r += "; " + event_or_exit(sup_ref);
        if (!ember::is_alive(s)) return r;
        r += "; answers " + gs::call<std::string>(sup::which_children(s).at(0).child, ping{});
        gs::stop(s, exit_reason::shutdown());
        r += "; " + queued_events();
        return r;
      },
      "starter normal; start " + long_a + ", start " + long_b + "; ids " + long_a + " " + long_b + "; start " +
          long_a + "; answers " + long_a + "; stop " + long_b + " shutdown, stop " + long_a + " shutdown");
}

TEST_P(supervisor_ownership_DeathTest, a_dynamic_supervisor_keeps_working_after_the_process_that_started_it_exits) {
  expect_in_child_process(
      [] {
        pid me = ember::self();
        auto [starter, sref] = ember::spawn_monitor([me] {
          sup::child_spec tmpl = sup::worker<member>("", me, long_a);
          pid s = dsup::start(dsup::spec{.flags = flags_of(sup::strategy::one_for_one), .child = tmpl});
          ember::send(me, s);
        });
        pid s = ember::receive([](pid p) { return p; });
        std::string r = "starter " + down_of(sref).reason.to_string();
        churn_memory();
        try {
          pid p = dsup::start_child(s);  // by the template's start function
          next_started();
          r += "; answers " + gs::call<std::string>(p, ping{});
          ember::exit(p, exit_reason::kill());
          pid again = next_started();
          r += "; restarted answers " + gs::call<std::string>(again, ping{});
        } catch (const ember::error& e) {
          r += "; " + std::string(e.what());
        }
        gs::stop(s, exit_reason::shutdown());
        return r;
      },
      "starter normal; answers " + long_a + "; restarted answers " + long_a);
}

TEST_P(supervisor_ownership_DeathTest, a_linked_supervisor_stops_its_children_after_its_parent_exits) {
  expect_in_child_process(
      [] {
        pid me = ember::self();
        pid parent = ember::spawn([me] {
          pid s = sup::start_link(sup::spec{.flags = flags_of(sup::strategy::one_for_one),
                                            .children = {rec(long_a, me), rec(long_b, me)}});
          ember::send(me, s);
          ember::receive([](go) {});
        });
        pid s = ember::receive([](pid p) { return p; });
        ember::monitor_ref sup_ref = ember::monitor(s);
        std::string r = events(2);
        ember::send(parent, go{});
        churn_memory();
        r += "; " + events(2);
        r += "; " + event_or_exit(sup_ref);
        return r;
      },
      "start " + long_a + ", start " + long_b + "; stop " + long_b + " shutdown, stop " + long_a +
          " shutdown; supervisor exited normal");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(supervisor_ownership_DeathTest);

// ---------------------------------------------------------------------------
// Stress: a supervision tree under crashers and clients

struct stress_member {
  pid watcher;
  explicit stress_member(pid w) : watcher(w) {}
  void init() { ember::send(watcher, started{ember::self()}); }
  void handle_call(message& m, ember::from from) {
    ember::dispatch(m, [&](ping) { ember::reply(from, 1); });
  }
};

struct finish {
  pid reply_to;
};
struct watch_report {
  std::size_t started = 0;
  std::size_t ended = 0;
  std::map<std::string, std::size_t> reasons;
};
struct crasher_done {
  int kills;
  int errors;
};
struct client_done {
  int ok;
  int failed;
  int timeouts;
  int odd;  // failures whose reason is none a crash or a stop explains
};

// A random running worker of the tree under `top`; the null pid if the
// pick found none (a child being restarted).
pid random_worker(pid top, std::mt19937& rng) {
  children inner = sup::which_children(top);
  if (inner.empty()) return {};
  const sup::child_info& in = inner[rng() % inner.size()];
  if (!in.child) return {};
  children kids = sup::which_children(in.child);
  if (kids.empty()) return {};
  return kids[rng() % kids.size()].child;
}

TEST_P(supervisors, stress_crashers_and_clients_on_a_supervision_tree_leave_no_worker_behind) {
  constexpr int workers_per_supervisor = 10;
  constexpr int crashers = EMBER_TEST_SANITIZED ? 2 : 4;
  constexpr int kills_each = EMBER_TEST_SANITIZED ? 60 : 400;
  constexpr int clients = EMBER_TEST_SANITIZED ? 3 : 4;
  constexpr int calls_each = EMBER_TEST_SANITIZED ? 200 : 1000;
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    // Counts every worker start and, by a monitor, every worker exit.
    pid watcher = ember::spawn([] {
      watch_report report;
      pid reply_to;
      for (;;) {
        if (reply_to && report.ended == report.started) {
          ember::send(reply_to, report);
          return;
        }
        ember::receive(
            [&](started s) {
              ++report.started;
              ember::monitor(s.who);
            },
            [&](ember::down d) {
              ++report.ended;
              ++report.reasons[d.reason.to_string()];
            },
            [&](finish f) { reply_to = f.reply_to; });
      }
    });
    auto inner = [watcher](sup::strategy s) {
      sup::spec spec{.flags = {.strategy = s, .intensity = 1'000'000, .period = std::chrono::hours(1)}, .children = {}};
      for (int i = 0; i < workers_per_supervisor; ++i)
        spec.children.push_back(sup::worker<stress_member>("w" + std::to_string(i), watcher));
      return spec;
    };
    ember::trap_exit(true);
    pid top = sup::start_link(sup::spec{
        .flags = {.strategy = sup::strategy::one_for_one, .intensity = 1'000'000, .period = std::chrono::hours(1)},
        .children = {sup::child_supervisor("s0", inner(sup::strategy::one_for_one)),
                     sup::child_supervisor("s1", inner(sup::strategy::one_for_all)),
                     sup::child_supervisor("s2", inner(sup::strategy::rest_for_one))}});
    children inner_at_start = sup::which_children(top);

    for (int c = 0; c < crashers; ++c) {
      ember::spawn([top, me, c] {
        std::mt19937 rng(unsigned(1000 + c));
        int kills = 0, errors = 0;
        for (int i = 0; i < kills_each; ++i) {
          try {
            pid w = random_worker(top, rng);
            if (!w) continue;
            ember::exit(w, rng() % 2 ? exit_reason::kill() : exit_reason("boom"));
            ++kills;
          } catch (const ember::exit_error&) {
            ++errors;
          }
          ember::yield();
        }
        ember::send(me, crasher_done{kills, errors});
      });
    }
    for (int c = 0; c < clients; ++c) {
      ember::spawn([top, me, c] {
        std::mt19937 rng(unsigned(2000 + c));
        client_done d{0, 0, 0, 0};
        for (int i = 0; i < calls_each; ++i) {
          try {
            pid w = random_worker(top, rng);
            if (!w) {
              ++d.failed;
              continue;
            }
            if (gs::call<int>(w, ping{}, 10s) == 1) ++d.ok; else ++d.odd;
          } catch (const ember::exit_error& e) {
            const exit_reason& why = e.reason();
            if (why.is(exit_reason::kind::timeout)) {
              ++d.timeouts;
            } else if (why.is(exit_reason::kind::noproc) || why.is(exit_reason::kind::killed) ||
                       why.is(exit_reason::kind::shutdown) || why.to_string() == "boom") {
              ++d.failed;
            } else {
              ++d.odd;
            }
          }
        }
        ember::send(me, d);
      });
    }
    int kills = 0, crasher_errors = 0;
    for (int c = 0; c < crashers; ++c) {
      crasher_done d = ember::receive([](crasher_done x) { return x; },
                                      ember::after(hang_limit, [] { return crasher_done{-1000000, 1}; }));
      kills += d.kills;
      crasher_errors += d.errors;
    }
    int ok = 0, failed = 0, timeouts = 0, odd = 0;
    for (int c = 0; c < clients; ++c) {
      client_done d = ember::receive([](client_done x) { return x; },
                                     ember::after(hang_limit, [] { return client_done{0, 0, 1, 0}; }));
      ok += d.ok;
      failed += d.failed;
      timeouts += d.timeouts;
      odd += d.odd;
    }
    children inner_at_end = sup::which_children(top);
    std::string shape;
    for (const auto& in : inner_at_end) shape += (shape.empty() ? "" : " ") + std::to_string(sup::which_children(in.child).size());

    gs::stop(top, exit_reason::shutdown());
    ember::send(watcher, finish{me});
    watch_report report = ember::receive([](watch_report w) { return w; },
                                         ember::after(hang_limit, [] { return watch_report{1, 0, {}}; }));
    std::size_t explained = report.reasons["killed"] + report.reasons["boom"] + report.reasons["shutdown"] +
                            report.reasons["noproc"];

    std::string r = "crasher errors " + std::to_string(crasher_errors);
    r += kills > 0 ? ", kills made" : ", no kills";
    r += "; calls " + std::to_string(ok + failed + odd + timeouts) + ", timeouts " + std::to_string(timeouts) +
         ", odd " + std::to_string(odd);
    r += ok > 0 ? ", some answered" : ", none answered";
    r += "; inner supervisors " + changes(inner_at_start, inner_at_end) + ", workers " + shape;
    r += "; workers started " + std::string(report.started >= 3 * workers_per_supervisor ? ">= 30" : "< 30");
    r += report.ended == report.started ? ", all exited" : ", exited " + std::to_string(report.ended) + " of " +
                                                                std::to_string(report.started);
    r += explained == report.ended ? ", every reason explained" : ", unexplained reasons";
    r += report.reasons["shutdown"] >= std::size_t(3 * workers_per_supervisor) ? ", the last ones shut down"
                                                                               : ", too few shutdowns";
    return r;
  });
  EXPECT_EQ(got, "crasher errors 0, kills made; calls " + std::to_string(clients * calls_each) +
                     ", timeouts 0, odd 0, some answered; inner supervisors s0 same, s1 same, s2 same, workers 10 10 "
                     "10; workers started >= 30, all exited, every reason explained, the last ones shut down");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(supervisors);

}  // namespace
