// Applications: a program as a supervision tree with a name, started and
// stopped from outside the runtime's processes (main):
//
//   ember::runtime rt;
//   auto app = ember::start(rt, {.name = "shop",
//                                .spec = {.flags = {.intensity = 5},
//                                         .children = {ember::supervisor::worker<db>("db"),
//                                                      ember::supervisor::worker<web>("web")}}});
//   ...
//   app.stop();   // stops the tree in order: web, then db
//
// The top supervisor is registered under the application's name and linked
// to a small master process. If the tree gives up (the top supervisor passes
// its restart intensity), the application ends with that reason: wait()
// returns it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ember/core/exit_reason.hpp"
#include "ember/core/pid.hpp"
#include "ember/otp/supervisor.hpp"
#include "ember/sched/runtime.hpp"

namespace ember {

struct application {
  std::string name{};        // the top supervisor's registered name ("": none)
  supervisor::spec spec{};   // the top supervisor
};

class running_application {
 public:
  struct state;  // shared with the master process (otp/application.cpp)
  explicit running_application(std::shared_ptr<state> s) noexcept : state_(std::move(s)) {}
  running_application(running_application&&) noexcept = default;
  running_application& operator=(running_application&&) noexcept;
  ~running_application();  // stops the application if it still runs

  // The top supervisor.
  pid top() const noexcept;
  // Stops the tree (every child by its shutdown policy, in reverse start
  // order) and returns once all of it has exited. Does nothing if the
  // application has ended already.
  void stop();
  // Waits until the application ends (stop, or the tree giving up) and
  // returns the top supervisor's exit reason.
  exit_reason wait();
  // Whether it has ended.
  bool ended() const;

 private:
  std::shared_ptr<state> state_;
};

// Starts the application's tree in `rt` and returns once every child has
// started. Throws exit_error(start_failed) if the tree cannot start (the
// reason names the child). Called from outside processes (main); from
// inside one, start a supervisor with supervisor::start_link instead.
running_application start(runtime& rt, application app);

// The applications of `rt` that have started and not ended yet, oldest
// first (observe's supervision tree starts from these).
struct application_root {
  std::string name;
  pid top;
};
std::vector<application_root> running_applications(runtime& rt);

}  // namespace ember
