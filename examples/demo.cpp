// ember_demo: what ember is, in three short experiments (scripts/demo).
//
//   1. A million processes: spawn 1,000,000 handler processes, report the
//      time and the memory each costs, then stop them all.
//   2. A ring: 10,000 function processes pass a token 1,000,000 times.
//   3. Crashes are contained: workers die three ways (an exception, a user
//      reason, a kill); a watcher that links to and monitors them receives
//      their exit reasons as messages, and a bystander linked to a crashed
//      worker dies with it.
//
// `ember_demo --quick` runs the same at a small scale (the CTest test).
// The demo checks what it shows and exits non-zero if anything is wrong.
#include <ember/ember.hpp>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

struct scale {
  std::size_t processes = 1'000'000;
  int ring_size = 10'000;
  std::int64_t hops = 1'000'000;
};

// Prints a line at once, so that a demo that hangs still shows how far it got.
template <class... A>
void say(const char* format, A... args) {
  std::printf(format, args...);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

[[noreturn]] void fail(const std::string& what) {
  say("FAILED: %s", what.c_str());
  std::_Exit(1);  // the runtime may be stuck: do not wait for its destructor
}

// 1234567 -> "1,234,567"
std::string grouped(std::uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

// Resident memory of this program in bytes (VmRSS), 0 if unknown.
std::uint64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

template <class T>
T await(std::future<T> f, const char* what) {
  if (f.wait_for(120s) != std::future_status::ready) fail(std::string(what) + " did not finish in 120 s");
  return f.get();
}

void wait_all_exited(ember::runtime& rt, const char* what) {
  if (!rt.wait_for(120s)) {
    fail(std::string(what) + ": " + std::to_string(rt.process_count()) +
         " processes still alive after 120 s");
  }
}

// ---- 1. A million processes ------------------------------------------------

// An idle handler process: a control block and a mailbox, no stack.
struct idle {
  void operator()(ember::message&) {}
};

void million_processes(ember::runtime& rt, std::size_t n) {
  say("1. %s processes", grouped(n).c_str());
  std::vector<ember::pid> pids(n);  // allocated and touched before measuring
  std::uint64_t rss0 = resident_bytes();
  auto t0 = clock_type::now();
  for (auto& p : pids) p = rt.spawn(ember::handler(idle{}));
  double spawn_ms = ms_since(t0);
  std::uint64_t rss1 = resident_bytes();
  if (rt.process_count() < n) {
    fail("spawned " + grouped(n) + " processes but " + grouped(rt.process_count()) + " are alive");
  }
  std::uint64_t grown = rss1 > rss0 ? rss1 - rss0 : 0;
  say("   spawned %s handler processes in %.0f ms (%.0f ns each)", grouped(n).c_str(), spawn_ms,
      spawn_ms * 1e6 / double(n));
  say("   memory: +%.1f MiB resident, %" PRIu64 " bytes per process", double(grown) / (1 << 20),
      grown / n);

  t0 = clock_type::now();
  for (ember::pid p : pids) rt.exit(p, ember::exit_reason::shutdown());
  wait_all_exited(rt, "stopping the processes");
  say("   stopped them all in %.0f ms", ms_since(t0));
}

// ---- 2. A ring --------------------------------------------------------------

// The token carries the hops still to go; a negative token stops the ring.
struct lap_done {};

void ring_member(ember::pid next, ember::pid master) {
  for (;;) {
    auto token = ember::receive([](std::int64_t t) { return t; });
    if (token < 0) {
      ember::send(next, token);
      return;
    }
    if (token == 0) {
      ember::send(master, lap_done{});
    } else {
      ember::send(next, token - 1);
    }
  }
}

void ring(ember::runtime& rt, int size, std::int64_t hops) {
  say("2. A ring of %s processes passing a token %s times", grouped(size).c_str(),
      grouped(hops).c_str());
  struct result {
    double build_ms, run_ms;
  };
  std::promise<result> done;
  rt.spawn([&done, size, hops] {
    // The spawner is a member too: it closes the ring and notes the end.
    ember::pid master = ember::self();
    auto t0 = clock_type::now();
    ember::pid next = master;
    for (int i = 1; i < size; ++i) next = ember::spawn([next, master] { ring_member(next, master); });
    double build_ms = ms_since(t0);

    t0 = clock_type::now();
    ember::send(next, hops - 1);  // hop 1; every token > 0 makes one more
    bool finished = false;
    while (!finished) {
      ember::receive(
          [&](std::int64_t t) {
            if (t == 0) {
              finished = true;
            } else {
              ember::send(next, t - 1);
            }
          },
          [&](lap_done) { finished = true; });
    }
    double run_ms = ms_since(t0);

    ember::send(next, std::int64_t{-1});  // once around to stop every member
    ember::receive([](std::int64_t) {});
    done.set_value({build_ms, run_ms});
  });
  result r = await(done.get_future(), "the ring");
  wait_all_exited(rt, "the ring");
  say("   built the ring in %.0f ms", r.build_ms);
  say("   %s hops in %.0f ms: %.0f ns per hop", grouped(hops).c_str(), r.run_ms,
      r.run_ms * 1e6 / double(hops));
}

// ---- 3. Crashes are contained -------------------------------------------------

struct go {};
struct never {};
struct linked {};

// Waits for `go`, then dies by `crash`.
template <class F>
auto worker(F crash) {
  return [crash] {
    ember::receive([](go) {});
    crash();
  };
}

bool crashes(ember::runtime& rt) {
  say("3. Crashes are contained");
  std::promise<bool> verdict;
  rt.spawn([&verdict] {
    ember::trap_exit(true);
    ember::pid watcher = ember::self();
    say("   the watcher %s traps exits, links to and monitors three workers:",
        watcher.to_string().c_str());

    ember::pid thrower = ember::spawn_link(worker([] { throw std::runtime_error("disk on fire"); }));
    ember::pid quitter = ember::spawn_link(worker([] { ember::exit("bad_request"); }));
    ember::pid sleeper = ember::spawn_link([] { ember::receive([](never) {}); });
    for (ember::pid p : {thrower, quitter, sleeper}) ember::monitor(p);
    // Linked to the thrower, not trapping exits, monitored by the watcher.
    auto [bystander, ref] = ember::spawn_monitor([thrower, watcher] {
      ember::link(thrower);
      ember::send(watcher, linked{});
      ember::receive([](never) {});
    });
    (void)ref;
    say("     thrower   %-12s throws std::runtime_error(\"disk on fire\")", thrower.to_string().c_str());
    say("     quitter   %-12s calls ember::exit(\"bad_request\")", quitter.to_string().c_str());
    say("     sleeper   %-12s waits for ever; the watcher kills it", sleeper.to_string().c_str());
    say("   and monitors a bystander that links to the thrower without trapping exits:");
    say("     bystander %-12s waits for ever", bystander.to_string().c_str());
    bool ready = ember::receive([](linked) { return true; }, ember::after(10s, [] { return false; }));
    if (!ready) {
      say("   the bystander did not link within 10 s");
      verdict.set_value(false);
      return;
    }

    ember::send(thrower, go{});
    ember::send(quitter, go{});
    ember::exit(sleeper, ember::exit_reason::kill());

    auto name_of = [&](ember::pid p) {
      return p == thrower ? "thrower" : p == quitter ? "quitter" : p == sleeper ? "sleeper"
                                    : p == bystander ? "bystander" : "unknown";
    };
    auto expected = [&](ember::pid p, const ember::exit_reason& r) {
      if (p == thrower || p == bystander) {
        return r.is(ember::exit_reason::kind::exception) && r.text() == "disk on fire" &&
               r.exception_type() == "std::runtime_error";
      }
      if (p == quitter) return r == ember::exit_reason("bad_request");
      if (p == sleeper) return r.is(ember::exit_reason::kind::killed);
      return false;
    };
    say("   the watcher receives:");
    int exit_signals = 0, downs = 0;
    bool ok = true;
    while (exit_signals < 3 || downs < 4) {
      bool got = ember::receive(
          [&](ember::exit_signal s) {
            ++exit_signals;
            ok &= expected(s.from, s.reason);
            say("     exit_signal  %-9s %s", name_of(s.from), s.reason.to_string().c_str());
            return true;
          },
          [&](ember::down d) {
            ++downs;
            ok &= expected(d.who, d.reason);
            say("     down         %-9s %s", name_of(d.who), d.reason.to_string().c_str());
            return true;
          },
          ember::after(10s, [] { return false; }));
      if (!got) {
        say("   missing messages after 10 s: %d of 3 exit signals, %d of 4 downs", exit_signals, downs);
        ok = false;
        break;
      }
    }
    if (ok) say("   every reason as expected; the watcher is still running");
    verdict.set_value(ok);
  });
  bool ok = await(verdict.get_future(), "the crash experiment");
  wait_all_exited(rt, "the crash experiment");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  scale s;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--quick") {
      s = {10'000, 1'000, 100'000};
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }

  ember::runtime rt;
  say("ember demo: Erlang-style processes in C++20, on %u scheduler threads", rt.schedulers());
  say("");
  million_processes(rt, s.processes);
  say("");
  ring(rt, s.ring_size, s.hops);
  say("");
  bool ok = crashes(rt);
  rt.shutdown();
  if (!ok) fail("an exit reason was not the expected one");
  return 0;
}
