// A node in an OS process of its own, for the tests that kill a node
// (tests/dist/node_test.cpp). It joins the cluster, starts an echo process
// and prints "ready <node id> <echo's cluster pid bits>"; it leaves when its
// standard input closes.
//
//   ember_dist_node_peer <redis host:port> <cluster> <name> [down_after_ms]
//
// The echo process answers a Seq with a Seq of the same n to the sender
// named in it, and exits with the text of a Note as its reason.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <ember/dist/node.hpp>
#include <ember/dist/wire.hpp>
#include <ember/ember.hpp>

#include "node_messages.capnp.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s <redis host:port> <cluster> <name> [down_after_ms]\n", argv[0]);
    return 2;
  }
  using namespace std::chrono_literals;
  ember::runtime rt(ember::runtime_options{.schedulers = 2});
  ember::node_options o;
  o.name = argv[3];
  o.cluster = argv[2];
  o.redis = {argv[1]};
  o.heartbeat = 100ms;
  o.down_after = std::chrono::milliseconds(argc > 4 ? std::atoi(argv[4]) : 1000);
  ember::node me(rt, o);
  ember::pid echo = rt.spawn([] {
    for (;;) {
      bool more = ember::receive(
          [](const ember::wire<Seq>& m) {
            auto in = m.get();
            ember::pid to = ember::pid::from_bits(in.getFrom());
            ember::send(to, ember::wire<Seq>::build([&](Seq::Builder b) {
              b.setN(in.getN());
              b.setFrom(ember::cluster_pid(ember::self()).bits());
            }));
            return true;
          },
          [](const ember::wire<Note>& m) {
            ember::exit(ember::exit_reason(std::string(m.get().getText().cStr())));
            return false;
          });
      if (!more) return;
    }
  });
  // The echo is also known as "<name>_echo" across the cluster.
  std::atomic<bool> named{false};
  rt.spawn([&named, echo, name = std::string(o.name)] { named = ember::register_global(name + "_echo", echo); });
  while (!named.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::printf("ready %u %llu\n", me.id(), static_cast<unsigned long long>(me.cluster_pid(echo).bits()));
  std::fflush(stdout);
  char buf[64];
  while (::read(0, buf, sizeof buf) > 0) {
  }
  me.leave();
  rt.shutdown();
  return 0;
}
