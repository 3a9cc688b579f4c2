// ember_demo: a chat server under load, under fire, and watched (scripts/demo).
//
//   ember_demo [--seconds N] [--clients N] [--port P] [--dashboard ADDR] [--quick]
//
// One application, "demo", runs this supervision tree:
//
//   demo                      one_for_one
//   ├── reporter              prints the summary line once a second
//   ├── chat                  rest_for_one: the chat server of chat_server.hpp
//   │   ├── room_sup          dynamic supervisor: a gen_server per room
//   │   │                     (permanent: a room that dies is restarted, under
//   │   │                     its registered name "room:NAME")
//   │   ├── rooms             the directory: finds or opens a room by name
//   │   └── acceptor          accepts connections on 127.0.0.1:P and spawns a
//   │                         process per connection ("conn"; not linked: a
//   │                         connection's crash is its own)
//   ├── load                  one_for_one
//   │   ├── clients           dynamic supervisor of the simulated clients
//   │   └── launcher          starts them, 100 every 50 ms, then exits
//   ├── chaos                 kills a random connection every 200 ms and a
//   │                         random room every 2 s (exit kill)
//   └── hog                   spins for ever without a single runtime call
//
// A client is a process that talks to the server over loopback TCP as a
// person with nc would: "/nick userN", "/join ROOM" (one of 20 rooms), then
// a line now and then carrying its send time (the clients say about 130
// lines a second between them: see line_interval). The room broadcasts
// the line to every member, the sender included: the time until the sender
// reads its own line back is the round trip measured. A client whose
// connection dies (chaos killed its handler) reconnects with exponential
// backoff; one whose room dies is told so by its connection ("! your room
// closed") and joins again, once the room's supervisor has restarted it.
//
// The summary line, once a second:
//   t=12s clients=1999/2000 msgs/s=133 in, 13,300 out restarts=63 (conn 57, room 6)
//   p99=8.1ms processes=4,031 hog=running
// clients: connected and in their room, of all; msgs/s in: lines said,
// out: lines delivered to clients by the room broadcasts; restarts since
// the start: conn, a client that lost its connection and got a new one (a
// new handler process), room, a room killed and then registered again under
// a new pid by its supervisor; p99 of the round trips completed in that
// second; processes alive; hog: running if it spun in that second (else
// starved). The line is printed by a process too: that it comes on time,
// and the chat goes on, while the hog never yields, is preemption at work.
//
// It runs until Ctrl-C (or SIGTERM), or --seconds N (default: until Ctrl-C
// when stdout is a terminal, else 20 s), then stops the application (the
// tree in reverse order: hog, chaos, the clients, the server) and prints a
// final summary. The dashboard (--dashboard ADDR, default 127.0.0.1:0)
// shows the processes by label while it runs; you can also join the chat
// yourself with nc on the port it prints.
//
// --quick: 200 clients for 5 s, and the demo checks itself: it exits 1
// unless lines were delivered in every second after the first, restarts of
// both kinds happened, at least 90 % of the clients were connected at the
// end, the hog spun in at least half of the seconds, and the hog did not
// hold up the summary line (a line a second, none more than 2 s late).
// Only behaviour is checked: the limits on time are generous, and a machine
// too slow to show both restarts in 5 s gets up to 25 s more.
#include "chat_server.hpp"  // rooms, the directory, the connection handler

#include <ember/ember.hpp>
#include <ember/observe/introspect.hpp>
#include <ember/observe/serve.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <cmath>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace net = ember::net;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr const char* room_names[] = {"lobby", "cpp",   "erlang", "rust", "go",      "ops",  "random",
                                      "music", "books", "games",  "food", "travel",  "film", "science",
                                      "math",  "art",   "jobs",   "help", "offtopic", "news"};

struct demo_options {
  int seconds = 0;  // 0: until Ctrl-C
  int clients = 2000;
  int port = 0;
  std::string dashboard = "127.0.0.1:0";
  bool quick = false;
};

// Prints a line at once, so that a demo that hangs still shows how far it got.
template <class... A>
void say(const char* format, A... args) {
  std::printf(format, args...);
  std::fputc('\n', stdout);
  std::fflush(stdout);
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

// "1 room", "2 rooms", "1,000 rooms"
std::string count(std::uint64_t n, const char* what) {
  return grouped(n) + " " + what + (n == 1 ? "" : "s");
}

std::string milliseconds(std::chrono::nanoseconds d) {
  if (d <= 0ns) return "-";
  double ms = std::chrono::duration<double, std::milli>(d).count();
  char text[32];
  std::snprintf(text, sizeof text, ms < 1 ? "%.2fms" : ms < 100 ? "%.1fms" : "%.0fms", ms);
  return text;
}

// Round-trip times in log-spaced buckets, 16 per power of two (so a
// quantile is within 1/16 of the truth), counted by every client with
// relaxed atomics: no process waits for another to record a sample.
class latency_histogram {
 public:
  void add(std::chrono::nanoseconds d) {
    n_[index(std::uint64_t(std::max<std::int64_t>(d.count(), 0)))].fetch_add(1, std::memory_order_relaxed);
  }
  std::uint64_t count() const {
    std::uint64_t total = 0;
    for (auto& n : n_) total += n.load(std::memory_order_relaxed);
    return total;
  }
  // The upper bound of the bucket holding the q-quantile; 0 if empty.
  std::chrono::nanoseconds quantile(double q) const {
    std::uint64_t total = count(), seen = 0;
    if (total == 0) return 0ns;
    auto rank = std::uint64_t(q * double(total - 1)) + 1;
    for (int i = 0; i < buckets; ++i) {
      seen += n_[i].load(std::memory_order_relaxed);
      if (seen >= rank) return std::chrono::nanoseconds(upper(i));
    }
    return std::chrono::nanoseconds(upper(buckets - 1));
  }
  void clear() {
    for (auto& n : n_) n.store(0, std::memory_order_relaxed);
  }

 private:
  static constexpr int sub_bits = 4;
  static constexpr int buckets = 61 << sub_bits;
  static int index(std::uint64_t ns) {
    if (ns < (1u << sub_bits)) return int(ns);
    int msb = std::bit_width(ns) - 1;
    return ((msb - sub_bits + 1) << sub_bits) + int((ns >> (msb - sub_bits)) & ((1u << sub_bits) - 1));
  }
  static std::int64_t upper(int i) {
    if (i < (1 << sub_bits)) return i;
    int msb = (i >> sub_bits) + sub_bits - 1;
    std::uint64_t lower = std::uint64_t((1 << sub_bits) + (i & ((1 << sub_bits) - 1))) << (msb - sub_bits);
    return std::int64_t(lower + (std::uint64_t(1) << (msb - sub_bits)) - 1);
  }
  std::array<std::atomic<std::uint64_t>, buckets> n_{};
};

// What the processes of the demo count and main reads: made by main (in
// the global heap), outliving every process; only atomics are shared.
struct demo_state {
  demo_options opt;
  ember::runtime* rt = nullptr;
  clock_type::time_point t0;  // second k of the run is [t0 + k s, t0 + k+1 s)

  std::atomic<std::uint16_t> port{0};  // the chat server's (0: any, until it listens)
  // Each client says a line every line_interval to 2 x line_interval.
  std::chrono::milliseconds line_interval{1000};

  std::atomic<int> connected{0};  // clients connected and in their room now
  std::atomic<std::uint64_t> said{0}, delivered{0};
  std::atomic<std::uint64_t> reconnects{0}, room_restarts{0};  // the restarts shown
  std::atomic<std::uint64_t> conn_kills{0}, room_kills{0};     // chaos's doing
  std::atomic<std::uint64_t> hog_spins{0};
  // Round trips completed in second k go to per_second[k % 3]: the
  // reporter reads the second that just ended and clears the one after
  // the current one.
  latency_histogram per_second[3], total;

  std::atomic<bool> stopping{false};
  // For --quick, kept by the reporter:
  std::atomic<int> lines{0};               // summary lines printed
  std::atomic<int> quiet_seconds{0};       // lines after the first showing nothing delivered
  std::atomic<int> hog_starved{0};         // lines for which the hog's count had not moved
  std::atomic<std::int64_t> max_late_ns{0};  // the latest a line came after it was due

  int second_now() const { return int((clock_type::now() - t0) / 1s); }
};

// Labels the calling process for the dashboard's tables.
void label(std::string_view text) { ember::observe::set_label(text); }

// ------------------------------------------------------------ chat server

// A room that labels itself "room NAME" for the dashboard.
struct labelled_room : chat::room {
  using chat::room::room;
  void init() { label("room " + name); }
};

struct conn_opened { ember::pid conn; };  // acceptor -> chaos

// Accepts connections and spawns a handler for each, as chat.cpp does, and
// tells the chaos process about every handler (its victims).
void acceptor(net::listener l) {
  label("acceptor");
  for (;;) {
    net::stream s = l.accept();
    ember::pid handler = ember::spawn(
        [s = std::move(s)]() mutable {
          label("conn");
          chat::connection(std::move(s)).run();
        },
        {.max_heap_bytes = 4 << 20});
    if (ember::pid chaos = ember::whereis("chaos")) ember::send(chaos, conn_opened{handler});
  }
}

// The acceptor's start function listens before it spawns the acceptor, so
// that the port is known once the tree has started, and a port that is
// taken fails the start (and the application's) with a reason that says so.
// The acceptor owns the listener from its first accept.
ember::pid start_acceptor(demo_state* st) {
  auto l = net::listener::listen(net::address::loopback(st->port), {.backlog = 4096});
  st->port = l.local_address().port();  // a restarted acceptor listens on the same port
  return ember::spawn_link([l = std::move(l)]() mutable { acceptor(std::move(l)); });
}

ember::supervisor::child_spec chat_server(demo_state* st) {
  using namespace ember::supervisor;
  child_spec room_sup{
      .id = "room_sup",
      .start = [] {
        // Chaos kills a room every 2 s: allow that, and more.
        return ember::dynamic_supervisor::start_link(
            {.flags = {.intensity = 20, .period = 5s},
             .child = {.id = "room",
                       .restart = restart::permanent,
                       .shutdown = shutdown_policy::timeout(1s)}},
            {.name = "room_sup"});
      },
      .shutdown = shutdown_policy::infinity(),
      .type = child_type::supervisor};
  // Rooms come back (they are permanent): the directory waits for them.
  child_spec directory = worker<chat::directory<labelled_room>>(
      "rooms", ember::gen_server::options{.name = "rooms"}, /*rooms_come_back=*/true);
  child_spec acceptor_spec{.id = "acceptor",
                           .start = [st] { return start_acceptor(st); },
                           .shutdown = shutdown_policy::brutal_kill()};
  // rest_for_one: a new room supervisor (the old one gave up) starts with
  // no rooms, so the directory, which remembers them, starts afresh too.
  return child_supervisor("chat",
                          {.flags = {.strategy = strategy::rest_for_one, .intensity = 5, .period = 10s},
                           .children = {room_sup, directory, acceptor_spec}},
                          {.name = "chat"});
}

// ---------------------------------------------------------------- clients

struct tick { std::uint64_t session; };  // time to say the next line

std::int64_t now_ns() { return clock_type::now().time_since_epoch().count(); }

// When a client that has just connected says its first line: as long as
// a client that had been talking for a while would still wait (with gaps
// uniform in [I, 2 I]: uniform in [0, I] two times in three, else
// triangular in [I, 2 I]), so that the rate is steady from the start
// instead of coming in waves.
std::chrono::milliseconds first_line(std::mt19937& rng, std::chrono::milliseconds interval) {
  std::uniform_real_distribution<double> u(0, 1);
  double x = u(rng) < 2.0 / 3 ? u(rng) : 1 + (1 - std::sqrt(u(rng)));  // in intervals
  return std::chrono::milliseconds(std::int64_t(x * double(interval.count())));
}

// One simulated user. Every network error (refused, reset, timed out) ends
// the session as the server closing it would; the client then waits and
// connects again, waiting twice as long after each failure, up to 2 s.
void client(demo_state* st, int id) {
  label("client");
  const std::string nick = "user" + std::to_string(id);
  const std::string room = room_names[std::size_t(id) % std::size(room_names)];
  const std::string own = "[" + room + "] " + nick + ": t=";  // our own lines, coming back
  const std::string joined_line = "* joined " + room;
  std::mt19937 rng(std::uint32_t(id) * 2654435761u);
  auto between = [&](std::chrono::milliseconds lo, std::chrono::milliseconds hi) {
    std::uniform_int_distribution<std::int64_t> ms(lo.count(), hi.count());
    return std::chrono::milliseconds(ms(rng));
  };
  bool had_session = false;
  auto backoff = 50ms;
  for (std::uint64_t session = 1;; ++session) {
    bool joined = false;
    try {
      net::stream c = net::stream::connect(net::address::loopback(st->port), 5s);
      c.write("/nick " + nick + "\n/join " + room + "\n", 5s);
      c.set_active_once();
      ember::send_after(first_line(rng, st->line_interval), ember::self(), tick{session});
      std::string pending;
      auto on_line = [&](std::string_view line) {
        if (line.starts_with(own)) {
          std::int64_t sent = 0;
          std::from_chars(line.data() + own.size(), line.data() + line.size(), sent);
          auto rtt = std::chrono::nanoseconds(now_ns() - sent);
          st->per_second[st->second_now() % 3].add(rtt);
          st->total.add(rtt);
        } else if (line == joined_line && !joined) {
          joined = true;
          ++st->connected;
          if (had_session) ++st->reconnects;
          had_session = true;
          backoff = 50ms;
        } else if (line == "! your room closed; /join again") {
          c.write("/join " + room + "\n", 5s);
        }
      };
      for (bool open = true; open;) {
        open = ember::receive(
            [&](net::socket_data& d) {
              pending += d.data;
              std::uint64_t chat_lines = 0;
              std::size_t start = 0;
              for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
                std::string_view line(pending.data() + start, nl - start);
                chat_lines += line.starts_with('[');
                on_line(line);
              }
              pending.erase(0, start);
              st->delivered += chat_lines;
              c.set_active_once();
              return true;
            },
            [&](const tick& t) {
              if (t.session != session) return true;  // from a session that ended
              if (joined) {
                c.write("t=" + std::to_string(now_ns()) + "\n", 5s);
                ++st->said;
              }
              auto next = between(st->line_interval, 2 * st->line_interval);
              ember::send_after(next, ember::self(), tick{session});
              return true;
            },
            [&](const net::socket_closed&) { return false; },
            [&](const net::socket_error&) { return false; });
      }
    } catch (const ember::io_error&) {
    }
    if (joined) --st->connected;
    ember::sleep_for(backoff + between(0ms, backoff));
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, 2s);
  }
}

// How often a client talks. A line goes to every member of its room, 100
// of them with 2,000 clients in 20 rooms, and each delivery is a TCP write
// and a read (about 15 us of CPU on loopback on the reference VM, most of
// it the kernel's). A line every 1-2 s from each of 2,000 clients would be
// 130,000 deliveries a second, more than two cores can make, and the round
// trip would grow to seconds. So the clients say about 130 lines a second
// between them, whatever their number: each a line every 10-20 s at 2,000
// (13,000 deliveries a second), every 1-2 s (the most) at 200.
std::chrono::milliseconds line_interval(int clients) {
  return std::max(std::chrono::milliseconds(1000), clients * std::chrono::milliseconds(5));
}

// Starts the clients a hundred at a time, so that they do not all knock at
// once, then exits.
void launcher(demo_state* st) {
  label("launcher");
  for (int i = 0; i < st->opt.clients; ++i) {
    ember::dynamic_supervisor::start_child("clients", [st, i] {
      return ember::spawn_link([st, i] { client(st, i); });
    });
    if (i % 100 == 99) ember::sleep_for(50ms);
  }
}

ember::supervisor::child_spec load(demo_state* st) {
  using namespace ember::supervisor;
  child_spec clients{
      .id = "clients",
      .start = [] {
        return ember::dynamic_supervisor::start_link(
            {.flags = {.intensity = 10, .period = 5s},
             .child = {.id = "client",
                       .restart = restart::transient,
                       .shutdown = shutdown_policy::timeout(1s)}},
            {.name = "clients"});
      },
      .shutdown = shutdown_policy::infinity(),
      .type = child_type::supervisor};
  child_spec launch{.id = "launcher",
                    .start = [st] { return ember::spawn_link([st] { launcher(st); }); },
                    .restart = restart::temporary};
  return child_supervisor("load", {.children = {clients, launch}});
}

// ------------------------------------------------------------------ chaos

// Every 200 ms, kills a random connection handler; every 2 s, a random
// room. A killed room counts as restarted once its name is registered
// again, to a new pid (its supervisor restarted it).
void chaos(demo_state* st) {
  label("chaos");
  ember::register_name("chaos", ember::self());
  std::mt19937 rng(7);
  std::vector<ember::pid> conns;  // handlers the acceptor told us about (some since dead)
  struct killed_room { std::string name; ember::pid was; };
  std::vector<killed_room> restarting;
  auto next = clock_type::now();
  for (int round = 1;; ++round) {
    next += 200ms;
    while (ember::receive([&](const conn_opened& c) { conns.push_back(c.conn); return true; },
                          ember::after(std::max(next - clock_type::now(), clock_type::duration(0)),
                                       [] { return false; }))) {
    }
    std::erase_if(restarting, [&](const killed_room& k) {
      ember::pid now = ember::whereis("room:" + k.name);
      if (!now || now == k.was) return false;
      ++st->room_restarts;
      return true;
    });
    while (!conns.empty()) {
      std::size_t i = rng() % conns.size();
      ember::pid victim = conns[i];
      conns[i] = conns.back();
      conns.pop_back();
      if (ember::is_alive(victim)) {
        ember::exit(victim, ember::exit_reason::kill());
        ++st->conn_kills;
        break;
      }
    }
    if (round % 10 == 0) {
      std::string name = room_names[rng() % std::size(room_names)];
      if (ember::pid victim = ember::whereis("room:" + name)) {
        ember::exit(victim, ember::exit_reason::kill());
        ++st->room_kills;
        restarting.push_back({name, victim});
      }
    }
  }
}

// -------------------------------------------------------------------- hog

// Spins for ever. After its label it makes no runtime call at all: only
// asynchronous preemption (a signal once it has run a time slice, 100 us)
// gives its scheduler thread back to the others.
void hog(demo_state* st) {
  label("hog");
  for (std::uint64_t n = 1;; ++n) {
    if ((n & 0xffff) == 0) st->hog_spins.store(n, std::memory_order_relaxed);
  }
}

// --------------------------------------------------------------- reporter

// Prints the summary line once a second. A process like the others: if
// the hog held a scheduler thread, this line would be late.
void reporter(demo_state* st) {
  label("reporter");
  std::uint64_t said = st->said, delivered = st->delivered, spins = st->hog_spins;
  auto last = clock_type::now();
  for (int t = std::max(st->second_now(), 0) + 1;; t = std::max(t + 1, st->second_now())) {
    auto due = st->t0 + t * 1s;
    ember::sleep_for(std::max(due - clock_type::now(), clock_type::duration(0)));
    auto now = clock_type::now();
    double elapsed = std::chrono::duration<double>(now - last).count();
    last = now;
    std::uint64_t said_now = st->said, delivered_now = st->delivered, spins_now = st->hog_spins;
    auto p99 = st->per_second[(t - 1) % 3].quantile(0.99);
    st->per_second[(t + 1) % 3].clear();
    bool hog_moved = spins_now != spins;
    if (st->stopping) return;
    std::uint64_t conn = st->reconnects, room = st->room_restarts;
    auto per_second = [&](std::uint64_t n) { return grouped(std::uint64_t(double(n) / elapsed)); };
    say("t=%ds clients=%d/%d msgs/s=%s in, %s out restarts=%s (conn %s, room %s) p99=%s processes=%s hog=%s",
        t, st->connected.load(), st->opt.clients, per_second(said_now - said).c_str(),
        per_second(delivered_now - delivered).c_str(), grouped(conn + room).c_str(), grouped(conn).c_str(),
        grouped(room).c_str(), milliseconds(p99).c_str(), grouped(st->rt->process_count()).c_str(),
        hog_moved ? "running" : "starved");
    ++st->lines;
    if (t > 1 && delivered_now == delivered) ++st->quiet_seconds;
    if (!hog_moved) ++st->hog_starved;
    st->max_late_ns = std::max<std::int64_t>(st->max_late_ns, (now - due).count());
    said = said_now;
    delivered = delivered_now;
    spins = spins_now;
  }
}

// ------------------------------------------------------------- the tree

ember::application demo_application(demo_state* st) {
  using namespace ember::supervisor;
  return {.name = "demo",
          .spec = {.flags = {.intensity = 3, .period = 10s},
                   .children = {function("reporter", [st] { reporter(st); }),
                                chat_server(st),
                                load(st),
                                function("chaos", [st] { chaos(st); }),
                                {.id = "hog",
                                 .start = [st] { return ember::spawn_link([st] { hog(st); }); },
                                 .shutdown = shutdown_policy::brutal_kill()}}}};
}

// ------------------------------------------------------------------- main

[[noreturn]] void usage(const char* argv0, int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: %s [--seconds N] [--clients N] [--port P] [--dashboard ADDR] [--quick]\n", argv0);
  std::exit(code);
}

demo_options parse(int argc, char** argv) {
  demo_options o;
  bool seconds_given = false, clients_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto number = [&](long lo, long hi) {
      if (i + 1 >= argc) usage(argv[0], 2);
      char* end = nullptr;
      long v = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || v < lo || v > hi) usage(argv[0], 2);
      return int(v);
    };
    if (arg == "--seconds") {
      o.seconds = number(1, 1'000'000);
      seconds_given = true;
    } else if (arg == "--clients") {
      o.clients = number(1, 100'000);
      clients_given = true;
    } else if (arg == "--port") {
      o.port = number(0, 65535);
    } else if (arg == "--dashboard" && i + 1 < argc) {
      o.dashboard = argv[++i];
    } else if (arg == "--quick") {
      o.quick = true;
    } else {
      usage(argv[0], arg == "--help" || arg == "-h" ? 0 : 2);
    }
  }
  if (o.quick && !clients_given) o.clients = 200;
  if (!seconds_given) o.seconds = o.quick ? 5 : isatty(STDOUT_FILENO) ? 0 : 20;
  return o;
}

// Every client and its connection handler hold a descriptor each.
void raise_open_files_limit(demo_options& o) {
  rlimit l{};
  if (getrlimit(RLIMIT_NOFILE, &l) != 0) return;
  rlim_t need = rlim_t(o.clients) * 2 + 256;
  if (l.rlim_cur < need) {
    l.rlim_cur = std::min(need, l.rlim_max);
    setrlimit(RLIMIT_NOFILE, &l);
    getrlimit(RLIMIT_NOFILE, &l);
  }
  if (l.rlim_cur < need) {
    int fit = int((l.rlim_cur - std::min<rlim_t>(l.rlim_cur, 256)) / 2);
    say("note: the open-files limit (%llu) allows %d clients, not %d (raise it: ulimit -n %llu)",
        static_cast<unsigned long long>(l.rlim_cur), fit, o.clients, static_cast<unsigned long long>(need));
    o.clients = std::max(fit, 1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  demo_options opt = parse(argc, argv);
  raise_open_files_limit(opt);
  if (opt.quick) {  // the watchdog: whatever goes wrong, fail within 60 s, never hang
    std::thread([] {
      std::this_thread::sleep_for(60s);
      say("FAILED: the demo did not finish within 60 s");
      std::_Exit(1);
    }).detach();
  }
  // Ctrl-C and SIGTERM are taken by main with sigtimedwait: blocked here,
  // before any thread starts, so that every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ember::runtime rt;
  auto st = std::make_unique<demo_state>();
  st->opt = opt;
  st->rt = &rt;
  st->port = std::uint16_t(opt.port);
  st->line_interval = line_interval(opt.clients);

  say("ember demo: a chat server under load and under fire, on %u scheduler threads", rt.schedulers());
  std::optional<ember::observe::dashboard> dash;  // stopped before the runtime goes
  try {
    dash.emplace(ember::observe::serve(rt, opt.dashboard));
  } catch (const ember::error& e) {
    say("dashboard: %s", e.what());
    return 1;
  }
  say("dashboard: %s", dash->url().c_str());

  st->t0 = clock_type::now();
  std::optional<ember::running_application> started;
  try {
    started.emplace(ember::start(rt, demo_application(st.get())));
  } catch (const ember::exit_error& e) {
    say("FAILED: the application did not start: %s", e.reason().to_string().c_str());
    return 1;
  }
  ember::running_application& app = *started;
  unsigned port = st->port;
  say("chat: 127.0.0.1:%u (join in: nc 127.0.0.1 %u, then /nick NAME and /join lobby)", port, port);
  say("load: %s clients in %zu rooms, each saying a line every %g-%g s to its room; chaos kills a "
      "connection every 200 ms and a room every 2 s; a hog spins without yielding",
      grouped(std::uint64_t(opt.clients)).c_str(), std::size(room_names),
      std::chrono::duration<double>(st->line_interval).count(),
      std::chrono::duration<double>(2 * st->line_interval).count());
  if (opt.seconds > 0) {
    say("running for %d s", opt.seconds);
  } else {
    say("running until Ctrl-C");
  }

  // Until the time is up, a stop signal, or the tree giving up. --quick
  // gives a machine too slow to show both kinds of restart, and the clients
  // back, in its 5 s up to 25 s more: its checks are of what happens, not
  // of how fast.
  auto deadline = st->t0 + std::chrono::seconds(opt.seconds);
  auto shown = [&] {
    return st->reconnects > 0 && st->room_restarts > 0 && st->connected * 10 >= opt.clients * 9;
  };
  auto time_is_up = [&] {
    if (opt.seconds == 0) return false;
    auto now = clock_type::now();
    return now >= deadline && (!opt.quick || shown() || now >= deadline + 25s);
  };
  bool interrupted = false;
  while (!app.ended() && !time_is_up()) {
    timespec wait{0, 100'000'000};
    if (sigtimedwait(&stop_signals, nullptr, &wait) > 0) {
      interrupted = true;
      break;
    }
  }
  double ran = std::chrono::duration<double>(clock_type::now() - st->t0).count();
  int connected_at_end = st->connected;
  bool tree_gave_up = app.ended();
  std::uint64_t preemptions = rt.stats().preemptions;
  st->stopping = true;
  if (interrupted) say("");
  say("stopping the application: the hog, chaos, the clients, then the server");
  auto stop_start = clock_type::now();
  app.stop();
  double stop_ms = std::chrono::duration<double, std::milli>(clock_type::now() - stop_start).count();

  std::uint64_t conn = st->reconnects, room = st->room_restarts;
  say("final: %.1f s, %s clients, %s connected at the end", ran, grouped(std::uint64_t(opt.clients)).c_str(),
      grouped(std::uint64_t(connected_at_end)).c_str());
  say("  chat:  %s lines said, %s delivered; round trip p50 %s, p99 %s, max %s", grouped(st->said).c_str(),
      grouped(st->delivered).c_str(), milliseconds(st->total.quantile(0.5)).c_str(),
      milliseconds(st->total.quantile(0.99)).c_str(), milliseconds(st->total.quantile(1.0)).c_str());
  say("  chaos: killed %s and %s; %s reconnected, %s restarted", count(st->conn_kills, "connection").c_str(),
      count(st->room_kills, "room").c_str(), count(conn, "client").c_str(), count(room, "room").c_str());
  say("  hog:   spun in %d of %d seconds; %s preemptions (of any process, the hog's mostly)",
      st->lines - st->hog_starved, st->lines.load(), grouped(preemptions).c_str());
  say("  stop:  the tree stopped in %.0f ms", stop_ms);
  if (tree_gave_up) {
    say("FAILED: the application's tree gave up");
    return 1;
  }
  if (!opt.quick) return 0;

  // --quick: what the demo shows, checked.
  std::vector<std::string> failures;
  int expected_lines = int(ran) - 1;  // the last second may be cut short
  if (st->lines < expected_lines) {
    failures.push_back(count(std::uint64_t(st->lines), "summary line") + " in " + std::to_string(int(ran)) +
                       " s");
  }
  if (st->quiet_seconds > 0) {
    failures.push_back(count(std::uint64_t(st->quiet_seconds), "second") + " without a line delivered");
  }
  if (st->total.count() == 0) failures.push_back("no client read its own line back");
  if (conn == 0) failures.push_back("no client reconnected after chaos killed its connection");
  if (room == 0) failures.push_back("no room killed by chaos was restarted");
  if (connected_at_end * 10 < opt.clients * 9) {
    failures.push_back("only " + std::to_string(connected_at_end) + " of " + std::to_string(opt.clients) +
                       " clients connected at the end");
  }
  if (st->hog_starved * 2 > st->lines) {  // it is not meant to get much, but something
    failures.push_back("the hog did not spin in " + std::to_string(st->hog_starved.load()) + " of " +
                       std::to_string(st->lines.load()) + " seconds");
  }
  if (st->max_late_ns > std::chrono::nanoseconds(2s).count()) {
    auto late = std::chrono::nanoseconds(st->max_late_ns.load());
    failures.push_back("a summary line came " + milliseconds(late) + " late");
  }
  if (!failures.empty()) {
    for (auto& f : failures) say("FAILED: %s", f.c_str());
    return 1;
  }
  say("OK: lines delivered every second, %s and %s restarted, %d of %d clients connected at the end, summary "
      "lines at most %s late while the hog spun",
      count(conn, "connection").c_str(), count(room, "room").c_str(), connected_at_end, opt.clients,
      milliseconds(std::chrono::nanoseconds(st->max_late_ns.load())).c_str());
  return 0;
}
