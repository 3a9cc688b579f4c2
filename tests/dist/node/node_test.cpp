// Nodes: joining, remote send in order, remote link, monitor and call,
// node down (a node that leaves, a node killed with SIGKILL), and bad
// input on the data path. Each test runs its own nodes (runtimes in this
// process, or a node_peer process) against a redis-server the suite starts
// on a free loopback port; each test uses a cluster name of its own.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "ember/dist/node.hpp"
#include "ember/dist/remote_spawn.hpp"
#include "ember/dist/wire.hpp"
#include "ember/io/net.hpp"
#include "ember_test.hpp"
#include "node_messages.capnp.h"
#include "redis_server.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::pid;
using ember::wire;

ember::wire<Seq> seq(std::uint64_t n, pid from = {}) {
  return wire<Seq>::build([&](Seq::Builder b) {
    b.setN(n);
    b.setFrom(from.bits());
  });
}
ember::wire<Note> note(const std::string& text) {
  return wire<Note>::build([&](Note::Builder b) { b.setText(text); });
}

// A process that answers Seq with Seq (to the pid inside) and exits with a
// Note's text; throws on the Note "crash".
void echo_body() {
  for (;;) {
    bool more = ember::receive(
        [](const wire<Seq>& m) {
          auto in = m.get();
          ember::send(pid::from_bits(in.getFrom()), seq(in.getN(), ember::cluster_pid(ember::self())));
          return true;
        },
        [](const wire<Note>& m) {
          std::string t = m.get().getText().cStr();
          if (t == "crash") throw std::runtime_error("boom");
          ember::exit(exit_reason(t));
          return false;
        });
    if (!more) return;
  }
}

class dist_node : public ::testing::TestWithParam<ember::node_transport> {
 protected:
  static void SetUpTestSuite() { redis_ = new redis_server(); }
  static void TearDownTestSuite() {
    delete redis_;
    redis_ = nullptr;
  }

  ember::node_options options(const std::string& name) {
    ember::node_options o;
    o.name = name;
    o.cluster = cluster();
    o.redis = {redis_->address()};
    o.heartbeat = 100ms;
    o.down_after = 1000ms;
    o.transport = GetParam();
    return o;
  }
  std::string cluster() const {
    auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return std::string("t_") + info->name();
  }
  // A runtime and a node on it, torn down in order.
  struct member {
    ember::runtime rt{ember::runtime_options{.schedulers = 2}};
    std::optional<ember::node> n;
    ~member() {
      n.reset();
      rt.shutdown();
    }
  };
  std::unique_ptr<member> join(const std::string& name) {
    auto m = std::make_unique<member>();
    m->n.emplace(m->rt, options(name));
    return m;
  }
  // Waits until `a` knows of `b` as connected.
  static void wait_connected(member& a, member& b) {
    ASSERT_TRUE(eventually([&] { return a.n->find(b.n->name()) == b.n->id(); }))
        << a.n->name() << " never saw " << b.n->name();
  }

  static redis_server* redis_;
};
redis_server* dist_node::redis_ = nullptr;

INSTANTIATE_TEST_SUITE_P(transport, dist_node,
                         ::testing::Values(ember::node_transport::direct, ember::node_transport::redis_stream),
                         [](const auto& info) {
                           return std::string(info.param == ember::node_transport::direct ? "direct" : "redis_stream");
                         });

TEST_P(dist_node, two_nodes_take_distinct_ids_and_see_each_other) {
  auto a = join("a");
  auto b = join("b");
  EXPECT_NE(a->n->id(), 0u);
  EXPECT_NE(b->n->id(), 0u);
  EXPECT_NE(a->n->id(), b->n->id());
  wait_connected(*a, *b);
  wait_connected(*b, *a);
  auto seen = a->n->nodes();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].name, "b");
  EXPECT_EQ(seen[0].address, GetParam() == ember::node_transport::direct ? b->n->address() : "-");
}

TEST_P(dist_node, a_name_held_by_a_live_node_cannot_join_twice) {
  auto a = join("same");
  member second;
  auto o = options("same");
  o.join_timeout = 300ms;
  try {
    second.n.emplace(second.rt, o);
    ADD_FAILURE() << "a second node took the name";
  } catch (const ember::error& e) {
    EXPECT_EQ(errc_name(e.code()), "name_taken") << e.what();
    EXPECT_NE(std::string(e.what()).find("same"), std::string::npos) << e.what();
  }
}

TEST_P(dist_node, messages_between_a_pair_of_processes_arrive_in_order) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  constexpr std::uint64_t count = EMBER_TEST_SANITIZED ? 2000 : 20000;
  oneshot<pid> receiver_pid;
  b->rt.spawn([receiver_pid] {
    receiver_pid.set(ember::cluster_pid(ember::self()));
    std::uint64_t expect = 0;
    bool in_order = true;
    pid reply_to;
    while (expect < count) {
      ember::receive([&](const wire<Seq>& m) {
        auto s = m.get();
        in_order = in_order && s.getN() == expect;
        reply_to = pid::from_bits(s.getFrom());
        ++expect;
      });
    }
    ember::send(reply_to, wire<Tally>::build([&](Tally::Builder t) {
                  t.setCount(expect);
                  t.setInOrder(in_order);
                }));
  });
  pid to = receiver_pid.get();
  EXPECT_EQ(to.node(), b->n->id());
  auto tally = in_process(a->rt, [to] {
    pid me = ember::cluster_pid(ember::self());
    for (std::uint64_t i = 0; i < count; ++i) ember::send(to, seq(i, me));
    return ember::receive([](const wire<Tally>& t) {
      return std::to_string(t.get().getCount()) + (t.get().getInOrder() ? " in order" : " out of order");
    });
  });
  EXPECT_EQ(tally, std::to_string(count) + " in order");
  EXPECT_GE(a->n->stats().frames_sent, count);
  EXPECT_GE(b->n->stats().frames_received, count);
}

TEST_P(dist_node, a_remote_monitor_hears_the_exit_reason) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  pid target = b->n->cluster_pid(b->rt.spawn(echo_body));
  auto got = in_process(a->rt, [target] {
    auto ref = ember::monitor(target);
    ember::send(target, note("bye"));
    return ember::receive([&](const ember::down& d) {
      return (d.ref == ref ? std::string("ref ok, ") : std::string("other ref, ")) +
             (d.who == target ? "who ok, " : "who " + d.who.to_string() + ", ") + d.reason.to_string();
    });
  });
  EXPECT_EQ(got, "ref ok, who ok, bye");
}

TEST_P(dist_node, a_remote_link_carries_a_crash_to_a_process_that_traps_exits) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  pid target = b->n->cluster_pid(b->rt.spawn(echo_body));
  auto got = in_process(a->rt, [target] {
    ember::trap_exit(true);
    ember::link(target);
    ember::send(target, note("crash"));
    return ember::receive([&](const ember::exit_signal& x) {
      return (x.from == target ? std::string("from ok, ") : "from " + x.from.to_string() + ", ") +
             std::string(x.reason.exception_type()) + ": " + std::string(x.reason.text());
    });
  });
  EXPECT_EQ(got, "from ok, std::runtime_error: boom");
}

TEST_P(dist_node, a_remote_link_ends_a_process_that_does_not_trap_exits) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  pid target = b->n->cluster_pid(b->rt.spawn(echo_body));
  watched w = spawn_watched(a->rt, [target] {
    ember::link(target);
    ember::send(target, note("going"));
    ember::receive([](const wire<Seq>&) {});  // never comes
  });
  EXPECT_EQ(exit_of(w).to_string(), "going");
}

TEST_P(dist_node, a_link_from_the_other_side_is_answered_too) {
  // The remote process links to a local one; the local one's crash reaches it.
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  oneshot<std::string> heard;
  pid watcher = b->n->cluster_pid(b->rt.spawn([heard] {
    ember::trap_exit(true);
    pid local = ember::receive([](const wire<Seq>& m) { return pid::from_bits(m.get().getFrom()); });
    ember::link(local);
    ember::send(local, seq(1, ember::cluster_pid(ember::self())));  // linked: go
    ember::receive([&](const ember::exit_signal& x) { heard.set(x.reason.to_string()); });
  }));
  a->rt.spawn([watcher] {
    ember::send(watcher, seq(0, ember::cluster_pid(ember::self())));
    ember::receive([](const wire<Seq>&) {});
    ember::exit(exit_reason("local_failure"));
  });
  EXPECT_EQ(heard.get(), "local_failure");
}

TEST_P(dist_node, monitoring_a_dead_remote_process_or_a_process_of_an_unknown_node_gives_noproc) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  watched gone = spawn_watched(b->rt, [] {});
  exit_of(gone);
  pid dead = b->n->cluster_pid(gone.id);
  auto got = in_process(a->rt, [dead] {
    auto r1 = ember::monitor(dead);
    std::string first = ember::receive([&](const ember::down& d) { return (d.ref == r1 ? "" : "?") + d.reason.to_string(); });
    pid nowhere(4000, 7, 1);
    auto r2 = ember::monitor(nowhere);
    std::string second =
        ember::receive([&](const ember::down& d) { return (d.ref == r2 ? "" : "?") + d.reason.to_string(); });
    ember::trap_exit(true);
    ember::link(dead);
    std::string third = ember::receive([](const ember::exit_signal& x) { return x.reason.to_string(); });
    return first + " " + second + " " + third;
  });
  EXPECT_EQ(got, "noproc noproc noproc");
}

TEST_P(dist_node, when_a_node_leaves_links_monitors_and_node_monitors_fire_noconnection) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  pid target = b->n->cluster_pid(b->rt.spawn(echo_body));
  std::uint32_t b_id = b->n->id();
  oneshot<void> armed;
  inbox<std::string> heard;
  a->rt.spawn([target, b_id, armed, heard] {
    ember::trap_exit(true);
    ember::link(target);
    auto ref = ember::monitor(target);
    ember::monitor_node(b_id);
    // A round trip: the link and the monitor are in place on b.
    ember::send(target, seq(1, ember::cluster_pid(ember::self())));
    ember::receive([](const wire<Seq>&) {});
    armed.set();
    for (int i = 0; i < 3; ++i)
      ember::receive([&](const ember::down& d) { heard.put("down " + std::string(d.ref == ref ? "" : "?") + d.reason.to_string()); },
                     [&](const ember::exit_signal& x) { heard.put("exit " + x.reason.to_string()); },
                     [&](const ember::node_down& n) { heard.put("node_down " + std::string(n.node == b_id ? "b" : "?")); });
  });
  armed.get();
  b->n->leave();
  std::vector<std::string> got{heard.take(), heard.take(), heard.take()};
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"down noconnection", "exit noconnection", "node_down b"}));
  EXPECT_TRUE(eventually([&] { return a->n->nodes().empty(); }));
}

TEST_P(dist_node, a_node_killed_with_sigkill_is_declared_down_and_its_links_fire_noconnection) {
  auto a = join("a");
  // The other node: an OS process of its own.
  int out[2], in[2];
  ASSERT_EQ(::pipe(out), 0);
  ASSERT_EQ(::pipe(in), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::dup2(out[1], 1);
    ::dup2(in[0], 0);
    ::close(out[0]);
    ::close(in[1]);
    std::string redis = redis_->address(), c = cluster();
    ::execl(EMBER_NODE_PEER, EMBER_NODE_PEER, redis.c_str(), c.c_str(), "victim", "1000", (char*)nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(in[0]);
  std::string line;
  char ch;
  while (::read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
  unsigned id = 0;
  unsigned long long bits = 0;
  ASSERT_EQ(std::sscanf(line.c_str(), "ready %u %llu", &id, &bits), 2) << "the peer said: " << line;
  pid echo = pid::from_bits(bits);
  ASSERT_TRUE(eventually([&] { return a->n->find("victim") == id; }));
  oneshot<void> armed;
  inbox<std::string> heard;
  a->rt.spawn([echo, id, armed, heard] {
    ember::trap_exit(true);
    ember::link(echo);
    ember::monitor(echo);
    ember::monitor_node(id);
    ember::send(echo, seq(7, ember::cluster_pid(ember::self())));
    ember::receive([](const wire<Seq>&) {});
    armed.set();
    for (int i = 0; i < 3; ++i)
      ember::receive([&](const ember::down& d) { heard.put("down " + d.reason.to_string()); },
                     [&](const ember::exit_signal& x) { heard.put("exit " + x.reason.to_string()); },
                     [&](const ember::node_down&) { heard.put("node_down"); });
  });
  armed.get();
  auto killed_at = std::chrono::steady_clock::now();
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  std::vector<std::string> got{heard.take(), heard.take(), heard.take()};
  auto took = std::chrono::steady_clock::now() - killed_at;
  ::close(out[0]);
  ::close(in[1]);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"down noconnection", "exit noconnection", "node_down"}));
  // Within the down timeout (1 s), with room for a loaded machine.
  EXPECT_LT(took, 1000ms + 4s);
  // And once its heartbeat has expired, the node is gone from Redis too,
  // with its global names.
  EXPECT_TRUE(eventually([&] { return !a->n->find("victim"); }, 10s));
  auto name = in_process(a->rt, [] {
    pid p;
    for (int i = 0; i < 2000 && (p = ember::whereis_global("victim_echo")); ++i) ember::sleep_for(5ms);
    return p ? "still " + p.to_string() : std::string("released");
  });
  EXPECT_EQ(name, "released");
}

TEST_P(dist_node, a_value_that_is_not_a_wire_message_is_refused_with_a_clear_error) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  pid target = b->n->cluster_pid(b->rt.spawn(echo_body));
  auto got = in_process(a->rt, [target] {
    std::string what;
    try {
      ember::send(target, std::string("plain text"));
      what = "sent";
    } catch (const ember::error& e) {
      what = errc_name(e.code()) + ": " + e.what();
    }
    ember::send(target, note("done"));
    return what;
  });
  EXPECT_EQ(got.substr(0, got.find(':')), "not_serializable") << got;
  EXPECT_NE(got.find("std::"), std::string::npos) << got;  // names the type
}

TEST_P(dist_node, a_runtime_that_is_no_node_refuses_a_remote_pid) {
  ember::runtime rt(ember::runtime_options{.schedulers = 1});
  auto got = in_process(rt, [] {
    try {
      ember::send(pid(9, 1, 1), note("x"));
      return std::string("sent");
    } catch (const ember::error& e) {
      return errc_name(e.code());
    }
  });
  EXPECT_EQ(got, "unavailable");
  rt.wait();
}

struct adder {
  void handle_call(ember::message& m, ember::from f) {
    if (auto* s = m.get_if<wire<Seq>>()) {
      if (s->get().getN() == 999) return;  // never answered
      ember::reply(f, seq(s->get().getN() + 1));
    }
  }
  void handle_cast(ember::message& m) {
    if (m.is<wire<Note>>()) ember::stop(exit_reason("cast_stop"));
  }
};

TEST_P(dist_node, a_gen_server_call_crosses_nodes_with_replies_timeouts_and_noproc) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  oneshot<pid> server;
  b->rt.spawn([server] {
    pid s = ember::gen_server::start<adder>();
    server.set(ember::cluster_pid(s));
    ember::receive([](const wire<Note>&) {});  // keeps b's side busy until the end
  });
  pid srv = server.get();
  auto got = in_process(a->rt, [srv] {
    std::string out;
    auto r = ember::gen_server::call<wire<Seq>>(srv, seq(41));
    out += std::to_string(r.get().getN());
    try {
      ember::gen_server::call<wire<Seq>>(srv, seq(999), 200ms);
      out += " answered";
    } catch (const ember::exit_error& e) {
      out += " " + e.reason().to_string();
    }
    ember::gen_server::cast(srv, note("stop"));
    auto ref = ember::monitor(srv);
    ember::receive([&](const ember::down& d) { return d.ref == ref; });
    try {
      ember::gen_server::call<wire<Seq>>(srv, seq(1), 2000ms);
      out += " answered";
    } catch (const ember::exit_error& e) {
      out += " " + e.reason().to_string();
    }
    return out;
  });
  EXPECT_EQ(got, "42 timeout noproc");
}

// A raw connection to a node's data listener.
int raw_connect(const std::string& address) {
  auto colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(std::uint16_t(std::stoi(address.substr(colon + 1))));
  ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}
template <class T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
std::string handshake(const std::string& cluster, std::uint32_t id, const std::string& name) {
  std::string h;
  put(h, std::uint32_t(0x524d4245));
  put(h, std::uint16_t(1));
  put(h, std::uint16_t(cluster.size()));
  h += cluster;
  put(h, id);
  put(h, std::uint16_t(name.size()));
  h += name;
  put(h, std::uint16_t(9));
  h += "127.0.0.1";
  return h;
}
// A frame for `to` carrying a user message of `schema` with `body` bytes.
std::string frame(pid to, std::uint64_t schema, const std::string& body) {
  std::string f;
  put(f, std::uint32_t(32 + 8 + body.size()));
  put(f, std::uint8_t(0));
  put(f, std::uint8_t(0));
  put(f, std::uint8_t(0));
  put(f, std::uint8_t(0));
  put(f, std::uint32_t(0));
  put(f, to.bits());
  put(f, std::uint64_t(0));
  put(f, std::uint64_t(0));
  put(f, schema);
  f += body;
  return f;
}
bool write_all(int fd, const std::string& s) { return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size()); }

TEST_P(dist_node, malformed_input_on_the_data_path_is_dropped_counted_and_logged_and_the_node_goes_on) {
  auto a = join("a");
  oneshot<pid> receiver;
  inbox<std::uint64_t> got;
  a->rt.spawn([receiver, got] {
    receiver.set(ember::cluster_pid(ember::self()));
    for (;;) {
      bool more = ember::receive([&](const wire<Seq>& m) {
        got.put(m.get().getN());
        return m.get().getN() != 0;
      });
      if (!more) return;
    }
  });
  pid to = receiver.get();
  // A connection that speaks no ember: closed.
  int junk = raw_connect(a->n->address());
  ASSERT_GE(junk, 0);
  write_all(junk, "GET / HTTP/1.1\r\n\r\n");
  char c;
  EXPECT_LE(::recv(junk, &c, 1, 0), 0) << "the node closes it (a reset if our bytes were left unread)";
  ::close(junk);
  // A peer that sends an unknown schema id, a corrupt message and then a
  // good one: the two bad ones are dropped, the good one arrives.
  int fd = raw_connect(a->n->address());
  ASSERT_GE(fd, 0);
  auto five = seq(5);
  std::string good(reinterpret_cast<const char*>(five.bytes().data()), five.bytes().size());
  std::string stream = handshake(cluster(), 4001, "fake") + frame(to, 0x1234567890abcdefull, "whatever") +
                       frame(to, wire<Seq>::schema_id(), std::string(24, '\xff')) +
                       frame(to, wire<Seq>::schema_id(), good);
  ASSERT_TRUE(write_all(fd, stream));
  EXPECT_EQ(got.take(), 5u);
  EXPECT_EQ(a->n->stats().dropped_unknown_type, 1u);
  EXPECT_EQ(a->n->stats().dropped_malformed, 1u);
  // A frame whose length is impossible: the connection is closed.
  std::string bad;
  put(bad, std::uint32_t(3));
  ASSERT_TRUE(write_all(fd, bad));
  EXPECT_LE(::recv(fd, &c, 1, 0), 0) << "the node closes it";
  ::close(fd);
  // The node goes on: a local send still works, and it ends the receiver.
  in_process(a->rt, [to] { ember::send(to, seq(0)); });
  EXPECT_EQ(got.take(), 0u);
}

// ------------------------------------------------------------ global names

TEST_P(dist_node, a_global_name_raced_by_many_processes_on_two_nodes_goes_to_exactly_one) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  constexpr int per_node = 16;
  inbox<std::string> results;  // "won <pid>" or "lost", then what each sees
  oneshot<void> go_signal;
  std::vector<std::shared_ptr<std::atomic<bool>>> keep;
  auto racer = [results](std::shared_ptr<std::promise<void>> start) {
    return [results, start] {
      pid me = ember::cluster_pid(ember::self());
      bool won = ember::register_global("leader", me);
      pid seen = ember::whereis_global("leader");
      results.put(std::string(won ? "won " : "lost ") + (seen ? seen.to_string() : "none") + " " + me.to_string());
      // The winner stays until told to go; the others leave now.
      if (won) ember::receive([](const wire<Note>&) {});
    };
  };
  for (int i = 0; i < per_node; ++i) {
    a->rt.spawn(racer(nullptr));
    b->rt.spawn(racer(nullptr));
  }
  int winners = 0;
  std::string winner, seen_by_all;
  for (int i = 0; i < 2 * per_node; ++i) {
    std::string r = results.take();
    std::istringstream in(r);
    std::string outcome, seen, me;
    in >> outcome >> seen >> me;
    if (outcome == "won") {
      ++winners;
      winner = me;
    }
    if (seen_by_all.empty()) seen_by_all = seen;
    EXPECT_EQ(seen, seen_by_all) << "every process sees one holder";
  }
  EXPECT_EQ(winners, 1);
  EXPECT_EQ(seen_by_all, winner);
  // The winner exits: the name is released and can be taken again.
  auto after = in_process(a->rt, [] {
    pid holder = ember::whereis_global("leader");
    auto ref = ember::monitor(holder);
    ember::send(holder, note("go"));
    ember::receive([&](const ember::down& d) { return d.ref == ref; });
    // Released by the holder's node once it hears of the exit.
    pid now;
    for (int i = 0; i < 2000 && (now = ember::whereis_global("leader")); ++i) ember::sleep_for(5ms);
    std::string first = now ? "still " + now.to_string() : "released";
    bool again = ember::register_global("leader", ember::self());
    pid mine = ember::whereis_global("leader");
    ember::unregister_global("leader");
    return first + (again ? ", taken again" : ", refused") +
           (mine == ember::cluster_pid(ember::self()) ? " by me" : " by " + mine.to_string()) +
           (ember::whereis_global("leader") ? ", kept" : ", unregistered");
  });
  EXPECT_EQ(after, "released, taken again by me, unregistered");
}

TEST_P(dist_node, a_gen_server_named_globally_is_called_and_sent_to_from_another_node) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  oneshot<void> started;
  b->rt.spawn([started] {
    ember::gen_server::options o;
    o.name = "adder";
    o.registry = &ember::global_names();
    ember::gen_server::start<adder>(o);
    started.set();
  });
  started.get();
  auto got = in_process(a->rt, [] {
    ember::via name{&ember::global_names(), "adder"};
    auto r = ember::gen_server::call<wire<Seq>>(name, seq(9));
    std::string out = std::to_string(r.get().getN());
    try {
      ember::send_global("nobody", note("x"));
      out += ", sent";
    } catch (const ember::error& e) {
      out += ", " + errc_name(e.code());
    }
    pid server = ember::whereis_global("adder");
    auto ref = ember::monitor(server);
    ember::gen_server::cast(name, note("stop"));
    std::string why = ember::receive([&](const ember::down& d) { return d.ref == ref ? d.reason.to_string() : "?"; });
    return out + ", " + why;
  });
  EXPECT_EQ(got, "10, no_such_name, cast_stop");
}

TEST_P(dist_node, malformed_entries_written_into_a_nodes_stream_are_dropped_with_a_logged_error) {
  auto a = join("a");
  oneshot<pid> receiver;
  inbox<std::uint64_t> got;
  a->rt.spawn([receiver, got] {
    receiver.set(ember::cluster_pid(ember::self()));
    ember::receive([&](const wire<Seq>& m) { got.put(m.get().getN()); });
  });
  pid to = receiver.get();
  std::string key = "{ember:" + cluster() + ":n" + std::to_string(a->n->id()) + "}";
  auto five = seq(5);
  std::string good(reinterpret_cast<const char*>(five.bytes().data()), five.bytes().size());
  // As redis-cli would: no fields the node knows, a bad node id, frames
  // that are not frames, then a good entry from a node that does not exist.
  redis_->command({"XADD", key, "*", "hello", "world"});
  redis_->command({"XADD", key, "*", "n", "zero", "f", "x"});
  redis_->command({"XADD", key, "*", "n", "4001", "f", "not frames at all"});
  redis_->command({"XADD", key, "*", "n", "4001", "f", frame(to, wire<Seq>::schema_id(), good)});
  EXPECT_EQ(got.take(), 5u);
  EXPECT_EQ(a->n->stats().dropped_malformed, 3u);
  // Read entries are acknowledged and trimmed away.
  EXPECT_TRUE(eventually([&] { return redis_->command({"XLEN", key}) == ":1\r\n"; })) << redis_->command({"XLEN", key});
}

// ------------------------------------------------------------ remote spawn

TEST_P(dist_node, a_registered_function_is_spawned_on_another_node_by_name_with_its_argument) {
  auto a = join("a");
  auto b = join("b");
  wait_connected(*a, *b);
  ember::register_spawnable<Seq>(*b->n, "double", [](wire<Seq> in) {
    ember::send(pid::from_bits(in.get().getFrom()), seq(2 * in.get().getN(), ember::cluster_pid(ember::self())));
  });
  ember::register_spawnable(*b->n, "idle", [] {});
  std::uint32_t b_id = b->n->id();
  auto got = in_process(a->rt, [b_id] {
    pid w = ember::spawn_on(b_id, "double", seq(21, ember::cluster_pid(ember::self())));
    std::string out = ember::receive([&](const wire<Seq>& m) {
      return std::to_string(m.get().getN()) + (pid::from_bits(m.get().getFrom()) == w ? " from it" : " from elsewhere");
    });
    out += w.node() == b_id ? ", on b" : ", on " + std::to_string(w.node());
    auto failure = [&](auto f) {
      try {
        f();
        return std::string("spawned");
      } catch (const ember::exit_error& e) {
        return errc_name(e.code()) + " " + e.reason().to_string();
      } catch (const ember::error& e) {
        return errc_name(e.code());
      }
    };
    out += ", " + failure([&] { ember::spawn_on(b_id, "nothing"); });
    out += ", " + failure([&] { ember::spawn_on(b_id, "idle", seq(1)); });
    out += ", " + failure([&] { ember::spawn_on(4001, "double", seq(1)); });
    return out;
  });
  EXPECT_EQ(got, "42 from it, on b, not_found, bad_message_type, call_failed noconnection");
}

}  // namespace
