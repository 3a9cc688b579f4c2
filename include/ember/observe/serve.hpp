// The dashboard: an HTTP server with a JSON API and one page (observer in a
// browser). Off unless started; loopback unless told otherwise, and then a
// token is required in every URL.
//
//   auto dash = ember::observe::serve(rt, "127.0.0.1:8080");
//   std::puts(dash.url().c_str());   // http://127.0.0.1:8080/
//
// It runs on threads of its own (not processes), so it still answers when
// every scheduler is saturated. The JSON API (all GET unless said):
//   /api/overview                 runtime_sample, rates per second
//   /api/history                  one sample a second, the last 10 minutes
//   /api/processes?sort=memory|reductions|mailbox|pid&limit=N&filter=TEXT
//   /api/process/<node.slot.gen>  process_detail
//   POST /api/process/<pid>/kill  exit(pid, kill)
//   /api/tree                     supervision_tree
// With a token, each request needs ?token=T (403 otherwise).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "ember/sched/runtime.hpp"

namespace ember::observe {

struct serve_options {
  // Required when binding an address other than loopback; generated (and
  // put in url()) if empty then.
  std::string token;
};

class dashboard {
 public:
  dashboard();  // not serving (serve() makes one that is)
  dashboard(dashboard&&) noexcept;
  dashboard& operator=(dashboard&&) noexcept;
  ~dashboard();  // stops the server (waits for requests in progress)

  // "http://host:port/" (with ?token=T when there is one).
  std::string url() const;
  std::uint16_t port() const noexcept;
  void stop();

  struct state;

 private:
  friend dashboard serve(runtime&, std::string_view, serve_options);
  std::unique_ptr<state> s_;
};

// Starts the dashboard on "host:port" (port 0: any free port). Throws
// error(invalid_argument) for a bad address, error(io_failed) if it cannot
// bind. The runtime must outlive the dashboard.
dashboard serve(runtime& rt, std::string_view address, serve_options opts = {});

}  // namespace ember::observe
