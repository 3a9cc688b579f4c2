// chat: a TCP chat server. Every connection is a process, every room a
// gen_server started on demand under a dynamic supervisor and found by its
// registered name. A connection that crashes ends alone: the runtime closes
// its socket, its room (which monitors it) drops it, the others chat on.
//
//   chat [--port N]    serves on 127.0.0.1:N (default 7000) until killed
//   chat --self-test   serves on an ephemeral port, runs simulated clients
//                      against it, exits 0 if everything went as expected
//
// The protocol is lines: "/nick NAME", "/join ROOM", "/who", "/quit"; any
// other line goes to everyone in the room as "[ROOM] NICK: text". Replies
// start with "* ", errors with "! ". The server's parts are in
// chat_server.hpp (the demo runs them too).
#include "chat_server.hpp"  // rooms, the directory, the connection handler

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace net = ember::net;
using namespace std::chrono_literals;
using chat::connection;

void accept_loop(net::listener listener) {
  for (;;) {
    net::stream s = listener.accept();
    // The handler owns the socket from its first use (here: the welcome).
    // Not linked to the acceptor: a connection's crash is its own.
    ember::spawn([s = std::move(s)]() mutable { connection(std::move(s)).run(); },
                 {.max_heap_bytes = 4 << 20});
  }
}

// --------------------------------------------------------------- self-test

// The driver's script, one message per step; the client answers done.
// step: write a line, expect these replies (and then the end, if so).
// talk: say "msg first".."msg first+4" if a sender; expect every sender's, in order.
struct step { std::string line; std::vector<std::string> replies; bool then_closed = false; };
struct talk { std::string room; int first; std::vector<std::string> senders; };
struct done {};

// A simulated client: talks to the server over TCP as a person with nc
// would. Anything unexpected throws, which ends the client with a reason
// that the driver reports.
void simulated_client(ember::pid driver, std::string nick, std::uint16_t port) {
  net::stream c = net::stream::connect(net::address::loopback(port), 5s);
  auto fail = [&](const std::string& what) { throw std::runtime_error(nick + ": " + what); };
  auto expect = [&](const std::string& want) {
    std::string got = c.read_line(10s);
    if (got != want) fail("expected \"" + want + "\", got \"" + got + "\"");
  };
  expect("* welcome: /nick NAME, /join ROOM, /who, /quit; other lines talk");
  for (bool open = true; open; ember::send(driver, done{})) {
    open = ember::receive(
        [&](const step& s) {
          c.write(s.line + "\n");
          for (auto& want : s.replies) expect(want);
          char b;
          if (s.then_closed && c.read(&b, 1, 10s) != 0) fail("the connection is still open");
          return !s.then_closed;
        },
        [&](const talk& t) {
          if (std::ranges::count(t.senders, nick)) {
            std::string batch;  // one write: the server must split the lines itself
            for (int i = 0; i < 5; ++i) batch += "msg " + std::to_string(t.first + i) + "\n";
            c.write(batch);
          }
          std::map<std::string, int> next;  // per sender: the message that must come next
          for (auto& s : t.senders) next[s] = t.first;
          for (std::size_t left = t.senders.size() * 5; left > 0; --left) {
            std::string got = c.read_line(10s);
            auto it = std::ranges::find_if(next, [&](auto& n) {
              return got == "[" + t.room + "] " + n.first + ": msg " + std::to_string(n.second);
            });
            if (it == next.end()) fail("unexpected line \"" + got + "\"");
            ++it->second;
          }
          return true;
        });
  }
}

// The driver: starts the clients and moves them through the script, each
// step once every client involved has done the one before; throws at the
// first client that ends abnormally.
void run_self_test(std::uint16_t port) {
  std::printf("chat self-test on 127.0.0.1:%u\n", port);
  std::map<std::string, std::vector<std::string>> rooms = {{"lobby", {"alice", "bob", "carol"}},
                                                           {"ops", {"dave", "erin"}}};
  std::map<std::string, ember::pid> clients;
  auto await = [&](std::size_t n) {
    while (n > 0) {
      ember::receive([&](done) { --n; },
                     [&](const ember::down& d) {
                       if (d.reason.is_normal()) return;  // a client that finished its script
                       auto it = std::ranges::find_if(clients, [&](auto& c) { return c.second == d.who; });
                       throw std::runtime_error("client " + it->first + " failed: " + d.reason.to_string());
                     });
    }
  };
  auto play_round = [&](int first) {  // everyone in `rooms` says 5 messages
    std::size_t players = 0;
    for (auto& [room, nicks] : rooms) {
      for (auto& n : nicks) ember::send(clients[n], talk{room, first, nicks});
      players += nicks.size();
    }
    await(players);
  };

  for (auto& [room, nicks] : rooms) {
    for (auto& n : nicks) {
      clients[n] = ember::spawn_monitor([me = ember::self(), n, port] { simulated_client(me, n, port); }).first;
      ember::send(clients[n], step{"hello?", {"! join a room first"}});
      ember::send(clients[n], step{"/nick " + n, {"* you are " + n}});
      ember::send(clients[n], step{"/join " + room, {"* joined " + room}});
    }
  }
  await(3 * clients.size());
  ember::pid lobby = ember::whereis("room:lobby");
  std::printf("  5 clients joined: alice, bob, carol in lobby; dave, erin in ops\n");
  play_round(1);
  std::printf("  round 1: 25 messages, each client got its room's, in order per sender\n");
  ember::send(clients["carol"], step{"/crash", {}, true});
  await(1);
  std::erase(rooms["lobby"], "carol");
  std::printf("  carol sent /crash: her handler threw, her connection closed\n");
  play_round(6);
  ember::send(clients["alice"], step{"/who", {"* in lobby: alice, bob"}});
  await(1);
  if (ember::whereis("room:lobby") != lobby) throw std::runtime_error("the lobby did not survive");
  std::printf("  round 2: 20 messages, in order; the lobby (%s) survived and dropped carol\n",
              lobby.to_string().c_str());
  for (auto& n : {"alice", "bob", "dave", "erin"}) ember::send(clients[n], step{"/quit", {"* bye"}, true});
  await(4);
  std::printf("  everyone quit: OK\n");
}

// ------------------------------------------------------------------- main

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool self_test = args == std::vector<std::string>{"--self-test"};
  long port = args.empty() ? 7000 : args.size() == 2 && args[0] == "--port" ? std::atol(args[1].c_str()) : 0;
  if (!self_test && (port <= 0 || port > 65535)) {
    std::fprintf(stderr, "usage: %s [--port N] | --self-test\n", argv[0]);
    return 2;
  }

  if (self_test) {  // the watchdog: whatever goes wrong, fail within 30 s, never hang
    std::thread([] {
      std::this_thread::sleep_for(30s);
      std::printf("FAILED: the self-test did not finish within 30 s\n");
      std::fflush(stdout);
      std::_Exit(1);
    }).detach();
  }
  ember::runtime rt;
  auto app = ember::start(rt, {.name = "chat", .spec = {.children = {
      {.id = "room_sup",
       .start = [] { return ember::dynamic_supervisor::start_link(
                         {.child = {.id = "room", .restart = ember::supervisor::restart::temporary}},
                         {.name = "room_sup"}); },
       .shutdown = ember::supervisor::shutdown_policy::infinity(),
       .type = ember::supervisor::child_type::supervisor},
      ember::supervisor::worker<chat::directory<>>("rooms", ember::gen_server::options{.name = "rooms"})}}});

  // Sockets are opened in processes: the acceptor, a plain process beside
  // the tree, tells main the port it got.
  std::promise<std::uint16_t> bound;
  rt.spawn([&bound, at = std::uint16_t(self_test ? 0 : port)] {
    net::listener l;
    try {
      l = net::listener::listen(net::address::loopback(at));
    } catch (const net::net_error& e) {
      std::fprintf(stderr, "chat: %s\n", e.what());
      bound.set_value(0);
      return;
    }
    bound.set_value(l.local_address().port());
    accept_loop(std::move(l));
  });
  std::uint16_t at = bound.get_future().get();
  if (at == 0) return 1;

  if (!self_test) {
    std::printf("chat: listening on 127.0.0.1:%u (try: nc 127.0.0.1 %u)\n", at, at);
    std::fflush(stdout);
    app.wait();  // for ever, unless the tree gives up
    return 1;
  }
  std::promise<bool> verdict;
  rt.spawn([&verdict, at] {
    bool ok = false;
    try {
      run_self_test(at);
      ok = true;
    } catch (const std::exception& e) {
      std::printf("FAILED: %s\n", e.what());
    }
    verdict.set_value(ok);
  });
  bool ok = verdict.get_future().get();
  app.stop();         // the directory, then the rooms
  return ok ? 0 : 1;  // the runtime's destructor ends the acceptor
}
