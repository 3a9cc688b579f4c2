// Supervisors, static and dynamic: one gen_server state (supervisor_state)
// serving both.
//
// The supervisor traps exits and links to every child (the start function
// links; the supervisor links again after it, which is idempotent, so a
// start function that forgot to link still gives a linked child). A child's
// exit arrives as an exit_signal in handle_info; the supervisor looks the
// pid up, forgets it, decides by the child's restart type and the reason
// whether to restart, counts the restart against the intensity (restart
// timestamps within `period`), and restarts by the strategy.
//
// Stopping a child: monitor it, unlink it (so that its exit signal, if it
// comes, is void), send exit(shutdown) (or kill), wait for the down message
// up to the shutdown time, then kill and wait again; an exit_signal it sent
// before the unlink is flushed. Static children stop one at a time in
// reverse start order; a dynamic supervisor's children (all of one spec,
// independent of each other) are told at once and waited for together.
//
// A restart whose start function fails is retried by a message to itself,
// each retry counted as a restart, so a child that cannot start exhausts
// the intensity and the supervisor exits with `shutdown` instead of looping.
#include "ember/otp/supervisor.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <unordered_map>

#include "ember/core/process.hpp"
#include "ember/core/receive.hpp"

namespace ember::supervisor {
namespace {

using clock = std::chrono::steady_clock;

// Requests (calls to the supervisor) and their reply.
struct req_start_child {
  child_spec spec;
};
struct req_start_dynamic {
  std::function<pid()> start;  // empty: the template's
};
struct req_terminate_child {
  std::string id;
};
struct req_terminate_dynamic {
  pid child;
};
struct req_restart_child {
  std::string id;
};
struct req_delete_child {
  std::string id;
};
struct req_which_children {};
struct req_count_children {};
struct try_again {
  std::string id;    // static child
  pid old{};         // dynamic child: its pid before the failed restart
};

struct sup_reply {
  pid child{};
  errc code{};           // set with `failed`
  bool failed = false;
  bool start_failed = false;  // an exit_error(start_failed): `reason` is its reason
  std::string text;
  exit_reason reason;
};

sup_reply fail(errc code, std::string text) {
  sup_reply r;
  r.failed = true;
  r.code = code;
  r.text = std::move(text);
  return r;
}

bool restarts_on(restart kind, const exit_reason& reason) {
  switch (kind) {
    case restart::permanent: return true;
    case restart::temporary: return false;
    case restart::transient:
      return !(reason.is_normal() || reason.is(exit_reason::kind::shutdown));
  }
  return true;
}

struct dynamic_child {
  std::function<pid()> start;  // empty: the template's
};

class supervisor_state {
 public:
  supervisor_state(struct flags f, std::vector<child_spec> children)
      : flags_(f), dynamic_(false) {
    for (auto& c : children) static_.push_back({std::move(c), {}});
  }
  supervisor_state(struct flags f, child_spec tmpl, std::size_t max_children)
      : flags_(f), dynamic_(true), template_(std::move(tmpl)), max_children_(max_children) {}

  void init() {
    trap_exit(true);
    for (std::size_t i = 0; i < static_.size(); ++i) {
      std::optional<exit_reason> failed = start_static(i);
      if (failed) {
        std::string id = static_[i].spec.id;
        stop_static_range(0, static_.size());
        exit(exit_reason("failed_to_start_child '" + id + "': " + failed->to_string()));
      }
    }
  }

  void handle_call(message& req, from from) {
    dispatch(
        req,
        [&](req_start_child& r) { reply(from, add_static(std::move(r.spec))); },
        [&](req_start_dynamic& r) { reply(from, add_dynamic(std::move(r.start))); },
        [&](const req_terminate_child& r) { reply(from, terminate_static(r.id)); },
        [&](const req_terminate_dynamic& r) { reply(from, terminate_dynamic(r.child)); },
        [&](const req_restart_child& r) { reply(from, restart_static(r.id)); },
        [&](const req_delete_child& r) { reply(from, delete_static(r.id)); },
        [&](req_which_children) { reply(from, which()); },
        [&](req_count_children) { reply(from, counts()); });
  }

  void handle_info(message& m) {
    if (auto* sig = m.get_if<exit_signal>()) return child_exited(sig->from, sig->reason);
    if (auto* again = m.get_if<try_again>()) return retry(*again);
    // Anything else (a stray down, a user message) is not ours: dropped.
  }

  void terminate(const exit_reason&) {
    if (dynamic_) {
      stop_all_dynamic();
    } else {
      stop_static_range(0, static_.size());
    }
  }

 private:
  struct static_child {
    child_spec spec;
    pid id;  // null: not running
  };

  // ------------------------------------------------------------ starting
  // Starts static_[i]; nullopt if it started (or ignored), else why not.
  std::optional<exit_reason> start_static(std::size_t i) {
    try {
      pid p = static_[i].spec.start();
      if (p) link(p);
      static_[i].id = p;
      return std::nullopt;
    } catch (const exit_error& e) {
      return e.reason();
    } catch (const std::exception& e) {
      return exit_reason::exception(demangle_of(e), e.what());
    }
  }

  // Starts one dynamic child; the pid (null: ignored) or why not.
  std::optional<exit_reason> start_dynamic(const std::function<pid()>& start, pid& out) {
    try {
      out = start ? start() : template_.start();
      if (out) link(out);
      return std::nullopt;
    } catch (const exit_error& e) {
      return e.reason();
    } catch (const std::exception& e) {
      return exit_reason::exception(demangle_of(e), e.what());
    }
  }

  sup_reply start_failed_reply(const std::string& what, exit_reason reason) {
    sup_reply r = fail(errc::start_failed, what + ": " + reason.to_string());
    r.start_failed = true;
    r.reason = std::move(reason);
    return r;
  }

  sup_reply add_static(child_spec spec) {
    if (dynamic_) return fail(errc::invalid_argument, "start_child: a dynamic supervisor takes no child spec");
    if (find_static(spec.id) != static_.end())
      return fail(errc::already_present, "start_child: a child '" + spec.id + "' exists");
    if (!spec.start) return fail(errc::invalid_argument, "start_child: child '" + spec.id + "' has no start function");
    static_.push_back({std::move(spec), {}});
    std::size_t i = static_.size() - 1;
    if (auto failed = start_static(i)) {
      std::string id = static_[i].spec.id;
      static_.pop_back();
      return start_failed_reply("start_child '" + id + "'", std::move(*failed));
    }
    sup_reply r;
    r.child = static_[i].id;
    return r;
  }

  sup_reply add_dynamic(std::function<pid()> start) {
    if (!dynamic_) return fail(errc::invalid_argument, "start_child: not a dynamic supervisor (give a child spec)");
    if (max_children_ && dynamic_children_.size() >= max_children_)
      return fail(errc::system_limit, "start_child: max_children (" + std::to_string(max_children_) + ") reached");
    pid p;
    if (auto failed = start_dynamic(start, p)) return start_failed_reply("start_child", std::move(*failed));
    if (p) dynamic_children_.emplace(p, dynamic_child{std::move(start)});
    sup_reply r;
    r.child = p;
    return r;
  }

  // ------------------------------------------------------------ stopping
  // Stops one child by its shutdown policy and waits until it has exited.
  void stop_child(pid p, shutdown_policy how) {
    monitor_ref ref = monitor(p);
    unlink(p);
    auto is_down = [ref](const down& d) { return d.ref == ref; };
    if (how.is_brutal_kill()) {
      exit(p, exit_reason::kill());
      receive(when(is_down, [](const down&) {}));
    } else {
      exit(p, exit_reason::shutdown());
      bool gone = true;
      if (how.is_infinity()) {
        receive(when(is_down, [](const down&) {}));
      } else {
        gone = receive(when(is_down, [](const down&) { return true; }), after(how.time(), [] { return false; }));
      }
      if (!gone) {
        exit(p, exit_reason::kill());
        receive(when(is_down, [](const down&) {}));
      }
    }
    flush_exit_of(p);
  }

  // An exit signal the child sent before it was unlinked (or a restart
  // replaced it) is not news any more.
  static void flush_exit_of(pid p) {
    receive(when([p](const exit_signal& s) { return s.from == p; }, [](const exit_signal&) {}), after(std::chrono::milliseconds(0), [] {}));
  }

  // Stops the running static children in [first, last), last first.
  void stop_static_range(std::size_t first, std::size_t last) {
    for (std::size_t i = last; i-- > first;) {
      if (!static_[i].id) continue;
      pid p = static_[i].id;
      static_[i].id = {};
      stop_child(p, static_[i].spec.shutdown);
    }
  }

  void stop_all_dynamic() {
    if (dynamic_children_.empty()) return;
    shutdown_policy how = template_.shutdown;
    std::unordered_map<std::uint64_t, pid> waiting;  // monitor ref -> child
    std::unordered_map<pid, bool> former;            // every child, for the flush at the end
    waiting.reserve(dynamic_children_.size());
    former.reserve(dynamic_children_.size());
    for (auto& [p, c] : dynamic_children_) {
      monitor_ref ref = monitor(p);
      unlink(p);
      exit(p, how.is_brutal_kill() ? exit_reason::kill() : exit_reason::shutdown());
      waiting.emplace(ref.id, p);
      former.emplace(p, true);
    }
    dynamic_children_.clear();
    auto deadline = clock::now() + how.time();
    bool killed = how.is_brutal_kill();
    while (!waiting.empty()) {
      auto on_down = when([&](const down& d) { return waiting.count(d.ref.id) != 0; },
                          [&](const down& d) {
                            pid p = waiting[d.ref.id];
                            waiting.erase(d.ref.id);
                            return p;
                          });
      if (killed || how.is_infinity()) {
        receive(on_down);
      } else {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        pid gone = receive(on_down, after(std::max(left, std::chrono::milliseconds(0)), [] { return pid{}; }));
        if (!gone) {
          for (auto& [ref, p] : waiting) exit(p, exit_reason::kill());
          killed = true;
        }
      }
    }
    // Exit signals of children that died before their unlink: one pass at
    // the end (after a child's down, its exit signal, sent before it, is
    // here), not one scan of a mailbox full of downs per child.
    while (receive(when([&](const exit_signal& s) { return former.count(s.from) != 0; },
                        [](const exit_signal&) { return true; }),
                   after(std::chrono::milliseconds(0), [] { return false; }))) {
    }
  }

  sup_reply terminate_static(const std::string& id) {
    auto it = find_static(id);
    if (it == static_.end()) return fail(errc::not_found, "terminate_child: no child '" + id + "'");
    if (it->id) {
      pid p = it->id;
      it->id = {};
      stop_child(p, it->spec.shutdown);
    }
    if (it->spec.restart == restart::temporary) static_.erase(find_static(id));
    return {};
  }

  sup_reply terminate_dynamic(pid p) {
    auto it = dynamic_children_.find(p);
    if (it == dynamic_children_.end())
      return fail(errc::not_found, "terminate_child: " + p.to_string() + " is not a child");
    dynamic_children_.erase(it);
    stop_child(p, template_.shutdown);
    return {};
  }

  sup_reply restart_static(const std::string& id) {
    auto it = find_static(id);
    if (it == static_.end()) return fail(errc::not_found, "restart_child: no child '" + id + "'");
    if (it->id) return fail(errc::running, "restart_child: child '" + id + "' is running");
    std::size_t i = std::size_t(it - static_.begin());
    if (auto failed = start_static(i)) return start_failed_reply("restart_child '" + id + "'", std::move(*failed));
    sup_reply r;
    r.child = static_[i].id;
    return r;
  }

  sup_reply delete_static(const std::string& id) {
    auto it = find_static(id);
    if (it == static_.end()) return fail(errc::not_found, "delete_child: no child '" + id + "'");
    if (it->id) return fail(errc::running, "delete_child: child '" + id + "' is running");
    static_.erase(it);
    return {};
  }

  // ------------------------------------------------------------ restarts
  void child_exited(pid p, const exit_reason& reason) {
    if (dynamic_) {
      auto it = dynamic_children_.find(p);
      if (it == dynamic_children_.end()) return;  // not (or no longer) a child
      if (!restarts_on(template_.restart, reason)) {
        dynamic_children_.erase(it);
        return;
      }
      std::function<pid()> start = std::move(it->second.start);
      dynamic_children_.erase(it);
      if (!count_restart()) return;
      restart_dynamic(std::move(start), p);
      return;
    }
    auto it = std::find_if(static_.begin(), static_.end(), [p](const static_child& c) { return c.id == p; });
    if (it == static_.end()) return;
    it->id = {};
    if (!restarts_on(it->spec.restart, reason)) {
      if (it->spec.restart == restart::temporary) static_.erase(it);
      return;
    }
    if (!count_restart()) return;
    restart_by_strategy(std::size_t(it - static_.begin()));
  }

  // Records a restart; false if that passes the intensity, in which case
  // the supervisor is stopping (terminate stops the children).
  bool count_restart() {
    auto now = clock::now();
    restarts_.push_back(now);
    while (!restarts_.empty() && now - restarts_.front() > flags_.period) restarts_.pop_front();
    if (restarts_.size() > std::size_t(std::max(flags_.intensity, 0))) {
      stop(exit_reason::shutdown());
      return false;
    }
    return true;
  }

  void restart_by_strategy(std::size_t i) {
    switch (flags_.strategy) {
      case strategy::one_for_one:
        break;
      case strategy::one_for_all:
        stop_static_range(0, static_.size());
        drop_stopped_temporaries(i);
        i = 0;
        break;
      case strategy::rest_for_one:
        stop_static_range(i + 1, static_.size());
        drop_stopped_temporaries(i);
        break;
    }
    restart_from(i);
  }

  // Temporary children stopped by a restart are not restarted: their specs
  // go (those before `keep` are the caller's to index; after it, by id).
  void drop_stopped_temporaries(std::size_t& keep) {
    std::string keep_id = static_[keep].spec.id;
    std::erase_if(static_, [&](const static_child& c) {
      return !c.id && c.spec.restart == restart::temporary && c.spec.id != keep_id;
    });
    keep = std::size_t(find_static(keep_id) - static_.begin());
  }

  // Starts, in order, the child at i and (one_for_all, rest_for_one) the
  // stopped children after it. A failure is retried by a message to self.
  void restart_from(std::size_t i) {
    bool all = flags_.strategy != strategy::one_for_one;
    for (std::size_t j = i; j < static_.size(); ++j) {
      if (j != i && (!all || static_[j].id)) continue;
      if (static_[j].id) continue;
      if (start_static(j)) {
        send(self(), try_again{static_[j].spec.id, {}});
        return;
      }
      if (!all) return;
    }
  }

  void restart_dynamic(std::function<pid()> start, pid old) {
    pid p;
    if (start_dynamic(start, p)) {
      // Kept under the old pid until the retry (which_children shows it
      // as not running).
      dynamic_children_.emplace(old, dynamic_child{std::move(start)});
      retrying_.push_back(old);
      send(self(), try_again{{}, old});
      return;
    }
    if (p) dynamic_children_.emplace(p, dynamic_child{std::move(start)});
  }

  void retry(const try_again& again) {
    if (!count_restart()) return;
    if (dynamic_) {
      auto it = dynamic_children_.find(again.old);
      if (it == dynamic_children_.end()) return;
      std::function<pid()> start = std::move(it->second.start);
      dynamic_children_.erase(it);
      std::erase(retrying_, again.old);
      restart_dynamic(std::move(start), again.old);
      return;
    }
    auto it = find_static(again.id);
    if (it == static_.end() || it->id) return;
    restart_from(std::size_t(it - static_.begin()));
  }

  // ------------------------------------------------------------ queries
  std::vector<child_info> which() const {
    std::vector<child_info> out;
    if (dynamic_) {
      out.reserve(dynamic_children_.size());
      for (auto& [p, c] : dynamic_children_) {
        bool waiting = std::find(retrying_.begin(), retrying_.end(), p) != retrying_.end();
        out.push_back({{}, waiting ? pid{} : p, template_.type});
      }
    } else {
      for (auto& c : static_) out.push_back({c.spec.id, c.id, c.spec.type});
    }
    return out;
  }

  child_counts counts() const {
    child_counts n;
    if (dynamic_) {
      n.specs = dynamic_children_.size();
      n.active = n.specs - retrying_.size();
      (template_.type == child_type::supervisor ? n.supervisors : n.workers) = n.specs;
    } else {
      for (auto& c : static_) {
        ++n.specs;
        if (c.id) ++n.active;
        ++(c.spec.type == child_type::supervisor ? n.supervisors : n.workers);
      }
    }
    return n;
  }

  std::vector<static_child>::iterator find_static(const std::string& id) {
    return std::find_if(static_.begin(), static_.end(), [&](const static_child& c) { return c.spec.id == id; });
  }

  static std::string demangle_of(const std::exception& e) { return detail::demangle(typeid(e)); }

  struct flags flags_;
  bool dynamic_;
  std::vector<static_child> static_;
  child_spec template_;
  std::size_t max_children_ = 0;
  std::unordered_map<pid, dynamic_child> dynamic_children_;
  std::vector<pid> retrying_;  // dynamic children whose restart failed, awaiting try_again
  std::deque<clock::time_point> restarts_;
};

// Turns a supervisor's reply into a value or the exception it stands for.
sup_reply checked(sup_reply r) {
  if (!r.failed) return r;
  if (r.start_failed) throw exit_error(errc::start_failed, r.text, std::move(r.reason));
  throw error(r.code, r.text);
}

template <class Req>
sup_reply ask(server_ref sup, Req&& req) {
  return checked(gen_server::call<sup_reply>(sup, std::forward<Req>(req), gen_server::infinity));
}

void check_flags(const struct flags& f, const char* who) {
  if (f.intensity < 0) throw error(errc::invalid_argument, std::string(who) + ": intensity must be >= 0");
  if (f.period.count() <= 0) throw error(errc::invalid_argument, std::string(who) + ": period must be > 0");
}

}  // namespace

pid start_link(spec s, gen_server::options opts) {
  check_flags(s.flags, "supervisor::start_link");
  return gen_server::start_link<supervisor_state>(opts, s.flags, std::move(s.children));
}

pid start(spec s, gen_server::options opts) {
  check_flags(s.flags, "supervisor::start");
  return gen_server::start<supervisor_state>(opts, s.flags, std::move(s.children));
}

child_spec child_supervisor(std::string id, spec s, gen_server::options opts) {
  child_spec c{std::move(id), [s = std::move(s), opts]() { return start_link(s, opts); }};
  c.shutdown = shutdown_policy::infinity();
  c.type = child_type::supervisor;
  return c;
}

pid start_child(server_ref sup, child_spec c) { return ask(sup, req_start_child{std::move(c)}).child; }

void terminate_child(server_ref sup, std::string_view id) {
  ask(sup, req_terminate_child{std::string(id)});
}

pid restart_child(server_ref sup, std::string_view id) {
  return ask(sup, req_restart_child{std::string(id)}).child;
}

void delete_child(server_ref sup, std::string_view id) { ask(sup, req_delete_child{std::string(id)}); }

std::vector<child_info> which_children(server_ref sup) {
  return gen_server::call<std::vector<child_info>>(sup, req_which_children{}, gen_server::infinity);
}

child_counts count_children(server_ref sup) {
  return gen_server::call<child_counts>(sup, req_count_children{}, gen_server::infinity);
}

}  // namespace ember::supervisor

namespace ember::dynamic_supervisor {

using supervisor::supervisor_state;

pid start_link(spec s, gen_server::options opts) {
  supervisor::check_flags(s.flags, "dynamic_supervisor::start_link");
  if (s.flags.strategy != supervisor::strategy::one_for_one)
    throw error(errc::invalid_argument, "dynamic_supervisor::start_link: the strategy must be one_for_one");
  return gen_server::start_link<supervisor_state>(opts, s.flags, std::move(s.child), s.max_children);
}

pid start(spec s, gen_server::options opts) {
  supervisor::check_flags(s.flags, "dynamic_supervisor::start");
  if (s.flags.strategy != supervisor::strategy::one_for_one)
    throw error(errc::invalid_argument, "dynamic_supervisor::start: the strategy must be one_for_one");
  return gen_server::start<supervisor_state>(opts, s.flags, std::move(s.child), s.max_children);
}

pid start_child(server_ref sup) { return supervisor::ask(sup, supervisor::req_start_dynamic{}).child; }

pid start_child(server_ref sup, std::function<pid()> start) {
  return supervisor::ask(sup, supervisor::req_start_dynamic{std::move(start)}).child;
}

void terminate_child(server_ref sup, pid child) {
  supervisor::ask(sup, supervisor::req_terminate_dynamic{child});
}

}  // namespace ember::dynamic_supervisor
