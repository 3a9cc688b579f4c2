// Applications: a master process owns the top supervisor (linked, trapping
// exits) and reports to the thread that started it through `state`, which
// both sides reach under a mutex (the master takes it under no_preempt: a
// process must not be preempted holding an OS mutex).
#include "ember/otp/application.hpp"

#include <condition_variable>
#include <mutex>
#include <optional>
#include <utility>

#include "ember/core/error.hpp"
#include "ember/core/heap.hpp"
#include "ember/core/preempt.hpp"
#include "ember/core/process.hpp"
#include "ember/core/receive.hpp"

namespace ember {

namespace {
struct app_stop {};
}  // namespace

struct running_application::state {
  std::mutex mu;
  std::condition_variable cv;
  pid master;
  pid top;
  bool started = false;
  std::optional<exit_error> start_error;
  std::optional<exit_reason> ended;
  runtime* rt = nullptr;
  std::string name;

  template <class F>
  void update(F f) {
    no_preempt hold;
    global_heap_scope global;  // what main reads must outlive the master's heap
    {
      std::lock_guard lock(mu);
      f();
    }
    cv.notify_all();
  }
};

namespace {
// Every application started (observe walks them); entries expire with
// their running_application.
std::mutex app_list_mu;
std::vector<std::weak_ptr<running_application::state>> app_list;
}  // namespace

std::vector<application_root> running_applications(runtime& rt) {
  std::vector<application_root> out;
  std::lock_guard lock(app_list_mu);
  for (auto& w : app_list) {
    auto s = w.lock();
    if (!s || s->rt != &rt) continue;
    std::lock_guard state_lock(s->mu);
    if (s->started && !s->ended) out.push_back({s->name, s->top});
  }
  return out;
}

running_application start(runtime& rt, application app) {
  if (in_process())
    throw error(errc::invalid_argument,
                "ember::start(application): call it from outside processes; inside one, use supervisor::start_link");
  auto s = std::make_shared<running_application::state>();
  s->rt = &rt;
  s->name = app.name;
  {
    std::lock_guard lock(app_list_mu);
    std::erase_if(app_list, [](const auto& w) { return w.expired(); });
    app_list.push_back(s);
  }
  pid master = rt.spawn([s, app = std::move(app)]() mutable {
    // Killed (runtime::shutdown), the master still says the application ended.
    struct report_end {
      std::shared_ptr<running_application::state> s;
      ~report_end() {
        s->update([&] {
          if (!s->ended) s->ended = exit_reason::killed();
        });
      }
    } report{s};
    trap_exit(true);
    pid top;
    try {
      gen_server::options opts;
      opts.name = app.name;
      top = supervisor::start_link(std::move(app.spec), opts);
    } catch (const exit_error& e) {
      s->update([&] {
        s->start_error.emplace(e);
        s->ended = e.reason();
      });
      return;
    }
    s->update([&] {
      s->top = top;
      s->started = true;
    });
    exit_reason reason = receive(
        [&](app_stop) {
          try {
            gen_server::stop(top, exit_reason::shutdown());
          } catch (const exit_error&) {
            // It ended by itself meanwhile: its exit signal says why.
          }
          return receive(when([top](const exit_signal& e) { return e.from == top; },
                              [](exit_signal e) { return e.reason; }));
        },
        when([top](const exit_signal& e) { return e.from == top; }, [](exit_signal e) { return e.reason; }));
    s->update([&] { s->ended = std::move(reason); });
  });
  {
    std::unique_lock lock(s->mu);
    s->master = master;
    s->cv.wait(lock, [&] { return s->started || s->ended; });
    if (s->start_error) throw *s->start_error;
  }
  return running_application(std::move(s));
}

running_application& running_application::operator=(running_application&& other) noexcept {
  if (this != &other) {
    try {
      stop();
    } catch (...) {
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

running_application::~running_application() {
  try {
    stop();
  } catch (...) {
  }
}

pid running_application::top() const noexcept { return state_ ? state_->top : pid{}; }

void running_application::stop() {
  if (!state_) return;
  {
    std::lock_guard lock(state_->mu);
    if (state_->ended) return;
  }
  state_->rt->send(state_->master, app_stop{});
  wait();
}

exit_reason running_application::wait() {
  if (!state_) return exit_reason::noproc();
  std::unique_lock lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->ended.has_value(); });
  return *state_->ended;
}

bool running_application::ended() const {
  if (!state_) return true;
  std::lock_guard lock(state_->mu);
  return state_->ended.has_value();
}

}  // namespace ember
