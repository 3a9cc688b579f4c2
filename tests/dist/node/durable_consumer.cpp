// A durable mailbox's consumer in an OS process of its own, for the fault
// test that kills its node (tests/dist/node/durable_test.cpp). It joins the
// cluster as node "consumer", takes mailbox <mailbox> as consumer "worker"
// and, for each Seq it handles, appends "<n>:<deliveries>" to the Redis
// list <log key> before the message is acknowledged. It prints "ready" once
// it consumes, and leaves when its standard input closes.
//
//   ember_dist_durable_consumer <redis host:port> <cluster> <mailbox> <log key>
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <unistd.h>

#include <ember/dist/durable.hpp>
#include <ember/dist/node.hpp>
#include <ember/dist/redis.hpp>
#include <ember/ember.hpp>

#include "node_messages.capnp.h"

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s <redis host:port> <cluster> <mailbox> <log key>\n", argv[0]);
    return 2;
  }
  using namespace std::chrono_literals;
  ember::runtime rt(ember::runtime_options{.schedulers = 2});
  ember::node_options o;
  o.name = "consumer";
  o.cluster = argv[2];
  o.redis = {argv[1]};
  o.heartbeat = 100ms;
  o.down_after = 1000ms;
  o.join_timeout = 30s;
  ember::node me(rt, o);
  std::atomic<bool> ready{false};
  std::string redis = argv[1], mailbox = argv[3], log = argv[4];
  rt.spawn([&ready, redis, mailbox, log] {
    ember::durable::options mo;
    mo.consumer = "worker";
    mo.claim_after = 1000ms;
    ember::durable::mailbox box(mailbox, mo);
    ember::redis::client_options co;
    co.seeds = {redis};
    ember::redis::client rc(co);
    ready = true;
    for (;;)
      box.receive<Seq>([&](const ember::durable::delivery<Seq>& d) {
        rc.command({"RPUSH", log, std::to_string(d.message.get().getN()) + ":" + std::to_string(d.deliveries)});
      });
  });
  while (!ready.load()) std::this_thread::sleep_for(1ms);
  std::printf("ready\n");
  std::fflush(stdout);
  char buf[64];
  while (::read(0, buf, sizeof buf) > 0) {
  }
  me.leave();
  rt.shutdown();
  return 0;
}
