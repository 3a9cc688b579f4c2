// A node for the dashboard's browser test (tests/observe/browser): an
// application whose tree holds a named worker (`worker_a`, a gen_server
// that keeps a few KB of state and a backlog of messages), a second
// worker, and a sub-supervisor with two more; a process hogging nothing
// but sending to worker_a keeps the figures moving. Prints
// `url http://127.0.0.1:PORT/` once the dashboard listens and runs until
// SIGTERM/SIGINT (or --seconds N).
#include <ember/ember.hpp>
#include <ember/observe/introspect.hpp>
#include <ember/observe/serve.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

struct tick {};

// Its data is made in init, in the server's own process (and heap): the
// constructor runs in the process that starts it.
struct worker_state {
  std::size_t n;
  std::vector<std::string> kept;
  explicit worker_state(std::size_t count) : n(count) {}
  void init() {
    ember::observe::set_label("fixture worker");
    for (std::size_t i = 0; i < n; ++i) kept.emplace_back(256, char('a' + i % 26));
  }
  void handle_cast(const tick&) { kept.front().back() ^= 1; }
};

volatile std::sig_atomic_t stop_requested = 0;
void on_signal(int) { stop_requested = 1; }

}  // namespace

int main(int argc, char** argv) {
  int seconds = 600;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atoi(argv[i + 1]);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);

  ember::runtime rt;
  namespace sup = ember::supervisor;
  ember::gen_server::options a_opts;
  a_opts.name = "worker_a";
  ember::gen_server::options b_opts;
  b_opts.name = "worker_b";
  sup::spec inner;
  inner.children = {sup::worker<worker_state>("inner_1", std::size_t(4)),
                    sup::worker<worker_state>("inner_2", std::size_t(4))};
  sup::spec top;
  top.flags.intensity = 100;
  top.children = {sup::worker<worker_state>("worker_a", a_opts, std::size_t(64)),
                  sup::worker<worker_state>("worker_b", b_opts, std::size_t(8)),
                  sup::child_supervisor("inner_sup", inner)};
  auto app = ember::start(rt, ember::application{"fixture_app", top});
  // Something that moves: a process casting to worker_a every millisecond.
  rt.spawn([] {
    ember::observe::set_label("ticker");
    for (;;) {
      if (ember::pid a = ember::whereis("worker_a")) ember::gen_server::cast(a, tick{});
      ember::receive(ember::after(std::chrono::milliseconds(1), [] {}));
    }
  });

  auto dash = ember::observe::serve(rt, "127.0.0.1:0");
  std::printf("url %s\n", dash.url().c_str());
  std::fflush(stdout);
  for (int i = 0; i < seconds * 10 && !stop_requested; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  dash.stop();
  app.stop();
  rt.shutdown();
  return 0;
}
