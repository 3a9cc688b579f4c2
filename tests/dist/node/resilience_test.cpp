// Nodes against a Redis that goes away and comes back, and against a
// 3-master Redis Cluster. Each test starts its own redis-server processes
// on free loopback ports.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "ember/dist/durable.hpp"
#include "ember/dist/node.hpp"
#include "ember/dist/wire.hpp"
#include "ember_test.hpp"
#include "node_messages.capnp.h"
#include "redis_server.hpp"

namespace {

using namespace ember_test;
using ember::pid;
using ember::wire;

wire<Seq> seq(std::uint64_t n, pid from = {}) {
  return wire<Seq>::build([&](Seq::Builder b) {
    b.setN(n);
    b.setFrom(from.bits());
  });
}

struct member {
  ember::runtime rt{ember::runtime_options{.schedulers = 2}};
  std::optional<ember::node> n;
  member(std::vector<std::string> redis, const std::string& name, ember::node_transport t,
         std::chrono::milliseconds down_after = 1000ms, std::size_t max_queued = std::size_t(64) << 20) {
    ember::node_options o;
    o.name = name;
    o.cluster = "r";
    o.redis = std::move(redis);
    o.heartbeat = 100ms;
    o.down_after = down_after;
    o.transport = t;
    o.max_queued_bytes = max_queued;
    n.emplace(rt, o);
  }
  ~member() {
    n.reset();
    rt.shutdown();
  }
};

struct go {};

// A receiver on b counts Seq messages and checks their order; a sender on
// a sends `per_phase` messages, waits for a go, sends as many again, then
// asks for the tally.
struct counting_pair {
  pid receiver, sender;
  oneshot<std::string> tally;
  oneshot<void> first_phase_sent;
};

void start_pair(member& a, member& b, counting_pair& p, std::uint64_t per_phase) {
  oneshot<pid> r;
  auto tally = p.tally;
  b.rt.spawn([r, tally, per_phase] {
    r.set(ember::cluster_pid(ember::self()));
    std::uint64_t expect = 0;
    bool in_order = true;
    while (expect < 2 * per_phase) {
      ember::receive([&](const wire<Seq>& m) {
        in_order = in_order && m.get().getN() == expect;
        ++expect;
      });
    }
    tally.set(std::to_string(expect) + (in_order ? " in order" : " out of order"));
  });
  p.receiver = r.get();
  auto sent = p.first_phase_sent;
  pid to = p.receiver;
  p.sender = a.rt.spawn([to, sent, per_phase] {
    for (std::uint64_t i = 0; i < per_phase; ++i) ember::send(to, seq(i));
    sent.set();
    ember::receive([](const go&) {});
    for (std::uint64_t i = per_phase; i < 2 * per_phase; ++i) ember::send(to, seq(i));
  });
}

class dist_resilience : public ::testing::TestWithParam<ember::node_transport> {};

INSTANTIATE_TEST_SUITE_P(transport, dist_resilience,
                         ::testing::Values(ember::node_transport::direct, ember::node_transport::redis_stream),
                         [](const auto& info) {
                           return std::string(info.param == ember::node_transport::direct ? "direct" : "redis_stream");
                         });

TEST_P(dist_resilience, messages_sent_while_redis_restarts_all_arrive_in_order_and_the_nodes_stay_up) {
  // Persistence on, as a production Redis has it: the cluster's keys
  // (heartbeats included) survive the restart.
  redis_server redis({"--appendonly", "yes", "--appendfsync", "always"});
  member a({redis.address()}, "a", GetParam(), 3000ms);
  member b({redis.address()}, "b", GetParam(), 3000ms);
  ASSERT_TRUE(eventually([&] { return a.n->find("b") && b.n->find("a"); }));
  counting_pair p;
  start_pair(a, b, p, 500);
  p.first_phase_sent.get();
  redis.stop();
  // Redis is down: the second half is sent now (and waits, on the stream
  // transport, in the sender's queue).
  a.rt.send(p.sender, go{});
  redis.restart();
  EXPECT_EQ(p.tally.get(60s), "1000 in order");
  EXPECT_EQ(a.n->stats().nodes_down, 0u) << "b was declared down";
  EXPECT_TRUE(a.n->find("b").has_value());
}

// The stream transport only: the direct path does not go through Redis.
TEST(dist_stream_bound, a_send_past_the_queue_bound_fails_visibly_while_redis_is_away) {
  redis_server redis({"--appendonly", "yes"});
  member a({redis.address()}, "a", ember::node_transport::redis_stream, 5000ms, 4u << 20);
  member b({redis.address()}, "b", ember::node_transport::redis_stream, 5000ms, 4u << 20);
  ASSERT_TRUE(eventually([&] { return a.n->find("b") && b.n->find("a"); }));
  oneshot<pid> r;
  b.rt.spawn([r] {
    r.set(ember::cluster_pid(ember::self()));
    ember::receive([](const go&) {});
  });
  pid to = r.get();
  redis.stop();
  // A 4 MiB bound: 4 KB messages reach it after about a thousand.
  auto got = in_process(a.rt, [to] {
    std::uint64_t sent = 0;
    try {
      auto big = wire<Note>::build([](Note::Builder b) { b.setText(std::string(4000, 'x')); });
      for (; sent < 100000; ++sent) ember::send(to, big);
      return std::string("never refused");
    } catch (const ember::error& e) {
      return errc_name(e.code()) + (std::string(e.what()).find("bytes wait for node") != std::string::npos ? " (bound)" : "");
    }
  });
  EXPECT_EQ(got, "unavailable (bound)");
  b.rt.send(to, go{});
  redis.restart();  // so that the nodes leave cleanly
}

TEST(dist_cluster, nodes_names_and_durable_mailboxes_work_on_a_three_master_redis_cluster) {
  redis_cluster cluster;
  for (auto t : {ember::node_transport::direct, ember::node_transport::redis_stream}) {
    SCOPED_TRACE(t == ember::node_transport::direct ? "direct" : "redis_stream");
    member a(cluster.seeds(), "a", t);
    member b({cluster.seeds()[1]}, "b", t);  // one seed is enough: the client learns the others
    ASSERT_TRUE(eventually([&] { return a.n->find("b") && b.n->find("a"); }));
    counting_pair p;
    start_pair(a, b, p, 300);
    p.first_phase_sent.get();
    a.rt.send(p.sender, go{});
    EXPECT_EQ(p.tally.get(), "600 in order");
    // A global name registered on b, found and called from a.
    oneshot<void> named;
    b.rt.spawn([named] {
      ember::register_global("echo", ember::self());
      named.set();
      ember::receive([](const wire<Seq>& m) {
        ember::send(pid::from_bits(m.get().getFrom()), seq(m.get().getN() + 1));
      });
    });
    named.get();
    auto answer = in_process(a.rt, [] {
      ember::send_global("echo", seq(1, ember::cluster_pid(ember::self())));
      return ember::receive([](const wire<Seq>& m) { return m.get().getN(); });
    });
    EXPECT_EQ(answer, 2u);
    // Durable mailboxes on several shards (their names hash to different slots).
    auto durable = in_process(a.rt, [] {
      ember::durable::producer out;
      std::string seen;
      for (std::string name : {"orders", "invoices", "shipments", "returns"}) {
        out.send(name, seq(name.size()));
        ember::durable::mailbox box(name);
        box.receive<Seq>([&](const ember::durable::delivery<Seq>& d) { seen += std::to_string(d.message.get().getN()); });
      }
      return seen;
    });
    EXPECT_EQ(durable, "6897");
  }
}

}  // namespace
