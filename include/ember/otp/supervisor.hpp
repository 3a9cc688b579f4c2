// supervisor: a process that starts children, watches them, and restarts
// them by its strategy, with OTP's semantics.
//
//   using namespace ember;
//   supervisor::spec s{
//       .flags = {.strategy = supervisor::strategy::one_for_one, .intensity = 3, .period = 5s},
//       .children = {supervisor::worker<cache>("cache", 1024),
//                    supervisor::worker<db>("db", "postgres://...")}};
//   pid sup = supervisor::start_link(s);
//
// Children start in order and stop in reverse order, each by its shutdown
// policy (exit `shutdown`, wait, then `kill`). A child that exits is
// restarted by its restart type (permanent: always; transient: unless it
// exited normal or shutdown; temporary: never, and its spec is dropped)
// and the strategy: one_for_one restarts it alone, one_for_all stops the
// others and restarts all, rest_for_one stops and restarts the children
// started after it. More than `intensity` restarts within `period` and the
// supervisor stops every child and exits with `shutdown`, so the failure
// climbs the tree. A supervisor is a gen_server: stop it with
// gen_server::stop, name it with gen_server::options.
//
// dynamic_supervisor (below) supervises many children of one spec
// (simple_one_for_one / Elixir's DynamicSupervisor).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ember/core/pid.hpp"
#include "ember/core/spawn.hpp"
#include "ember/otp/gen_server.hpp"
#include "ember/otp/registry.hpp"

namespace ember::supervisor {

enum class restart : std::uint8_t { permanent, transient, temporary };
enum class child_type : std::uint8_t { worker, supervisor };
enum class strategy : std::uint8_t { one_for_one, one_for_all, rest_for_one };

// How a child is stopped.
class shutdown_policy {
 public:
  // exit(child, kill) at once.
  static constexpr shutdown_policy brutal_kill() noexcept { return shutdown_policy(-1); }
  // exit(child, shutdown); kill if it has not exited after t.
  static constexpr shutdown_policy timeout(std::chrono::milliseconds t) noexcept {
    return shutdown_policy(t.count() < 0 ? 0 : t.count());
  }
  // exit(child, shutdown) and wait as long as it takes (supervisors' default).
  static constexpr shutdown_policy infinity() noexcept { return shutdown_policy(-2); }

  constexpr bool is_brutal_kill() const noexcept { return ms_ == -1; }
  constexpr bool is_infinity() const noexcept { return ms_ == -2; }
  constexpr std::chrono::milliseconds time() const noexcept { return std::chrono::milliseconds(ms_ < 0 ? 0 : ms_); }

 private:
  constexpr explicit shutdown_policy(std::int64_t ms) noexcept : ms_(ms) {}
  std::int64_t ms_;
};

struct child_spec {
  std::string id{};
  // Starts the child linked to the caller (the supervisor) and returns its
  // pid; the null pid means "ignore" (nothing started). Called again for
  // every restart. Throwing (exit_error from a failed init) is a failed start.
  std::function<pid()> start{};
  enum restart restart = restart::permanent;
  shutdown_policy shutdown = shutdown_policy::timeout(std::chrono::milliseconds(5000));
  child_type type = child_type::worker;
};

struct flags {
  enum strategy strategy = strategy::one_for_one;
  int intensity = 1;                             // at most this many restarts...
  std::chrono::milliseconds period{5000};        // ...within this period
};

struct spec {
  struct flags flags{};
  std::vector<child_spec> children{};  // started in this order
};

// A gen_server child: gen_server::start_link<S>(args...), arguments copied.
template <class S, class... A>
child_spec worker(std::string id, A... args) {
  return {std::move(id), [args...]() { return gen_server::start_link<S>(args...); }};
}
// A gen_server child with options (a name, spawn options).
template <class S, class... A>
child_spec worker(std::string id, gen_server::options opts, A... args) {
  return {std::move(id), [opts, args...]() { return gen_server::start_link<S>(opts, args...); }};
}
// A function-process child: spawn_link(fn).
template <class F>
child_spec function(std::string id, F fn) {
  return {std::move(id), [fn]() { return spawn_link(fn); }};
}

// Starts a supervisor; returns once every child has started. If a child
// fails to start, the ones started are stopped and start throws
// exit_error(start_failed) (reason "failed_to_start_child '<id>': ...").
pid start_link(spec s, gen_server::options opts = {});
pid start(spec s, gen_server::options opts = {});
// A child spec for a supervisor under a supervisor (shutdown infinity).
child_spec child_supervisor(std::string id, spec s, gen_server::options opts = {});

// The API, each a call to the supervisor (throwing exit_error if the
// supervisor is gone). start_child adds a spec and starts it (error
// already_present if the id exists; exit_error(start_failed) if it fails);
// terminate_child stops a child and keeps its spec (temporary: drops it);
// restart_child starts a stopped child again (error running if it runs);
// delete_child drops a stopped child's spec. Unknown ids: error not_found.
pid start_child(server_ref sup, child_spec c);
void terminate_child(server_ref sup, std::string_view id);
pid restart_child(server_ref sup, std::string_view id);
void delete_child(server_ref sup, std::string_view id);

struct child_info {
  std::string id;   // dynamic children: empty
  pid child;        // null: not running
  child_type type;
};
std::vector<child_info> which_children(server_ref sup);

struct child_counts {
  std::size_t specs = 0;        // children (specs) the supervisor has
  std::size_t active = 0;       // running
  std::size_t supervisors = 0;  // of type supervisor
  std::size_t workers = 0;      // of type worker
};
child_counts count_children(server_ref sup);

}  // namespace ember::supervisor

namespace ember::dynamic_supervisor {

struct spec {
  supervisor::flags flags{};       // the strategy must be one_for_one
  supervisor::child_spec child{};  // the template every child is started from
  std::size_t max_children = 0;   // 0: no limit
};

pid start_link(spec s, gen_server::options opts = {});
pid start(spec s, gen_server::options opts = {});

// Starts one more child from the template; or with its own start function
// (restart, shutdown and type from the template). Returns the null pid if
// the start function ignored. Throws exit_error(start_failed) if it fails,
// error(system_limit) past max_children.
pid start_child(server_ref sup);
pid start_child(server_ref sup, std::function<pid()> start);
// Stops one child (by its shutdown policy) and forgets it; error not_found
// if it is not a child.
void terminate_child(server_ref sup, pid child);
// supervisor::which_children and count_children work on both kinds.

}  // namespace ember::dynamic_supervisor
