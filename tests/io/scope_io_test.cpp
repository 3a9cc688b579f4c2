// Scopes and sockets: a scope that ends while its children are blocked in
// reads stops them and closes their sockets; sockets acquired in a scope
// are closed when it ends; those acquired outside it are not.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ember/core/scope.hpp"
#include "ember/io/net.hpp"
#include "ember_test.hpp"

namespace {

using namespace ember_test;
using namespace std::chrono_literals;
using ember::pid;
namespace net = ember::net;

class scope_sockets : public runtime_test {};

TEST_P(scope_sockets, a_scope_ending_while_children_block_in_reads_stops_them_and_closes_their_sockets) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    // The peers live in a process outside the scope: the scope closes
    // only what its own process and children acquired.
    pid acceptor = ember::spawn([me] {
      auto l = net::listener::listen(net::address::loopback(0));
      ember::send(me, l.local_address());
      std::vector<net::stream> peers;
      for (int i = 0; i < 4; ++i) peers.push_back(l.accept(5s));
      ember::receive([](const std::string&) {});  // "check"
      std::string eofs;
      for (auto& p : peers) {
        char b[1];
        eofs += std::to_string(p.read(b, 1, 5s));
      }
      ember::send(me, eofs);
    });
    net::address at = ember::receive([](const net::address& a) { return a; });
    std::vector<pid> readers;
    {
      ember::scope s;
      for (int i = 0; i < 4; ++i) {
        readers.push_back(s.spawn([at, me] {
          auto c = net::stream::connect(at, 5s);
          ember::send(me, std::string("connected"));
          char b[1];
          c.read(b, 1);  // blocks: nobody writes
        }));
        ember::receive([](const std::string& m) { return m == "connected"; });
      }
    }  // the readers are still blocked in read
    int alive = 0;
    for (pid r : readers) alive += ember::is_alive(r) ? 1 : 0;
    ember::send(acceptor, std::string("check"));
    std::string eofs = ember::receive([](const std::string& m) { return m; });
    return "alive " + std::to_string(alive) + ", peer reads " + eofs;
  });
  EXPECT_EQ(got, "alive 0, peer reads 0000");
}

TEST_P(scope_sockets, sockets_opened_in_a_scope_close_when_it_ends_and_others_stay_open) {
  auto got = in_process(rt(), [] {
    auto outside = net::listener::listen(net::address::loopback(0));
    // Declared outside the scope: their destructors do not run at its end.
    net::listener kept;
    net::stream client;
    net::address kept_at;
    {
      ember::scope s;
      kept = net::listener::listen(net::address::loopback(0));
      kept_at = kept.local_address();
      client = net::stream::connect(outside.local_address(), 5s);
    }
    std::string r = client.is_open() ? "client open" : "client closed";
    r += kept.is_open() ? ", listener open" : ", listener closed";
    try {
      net::stream::connect(kept_at, 5s);
      r += " but listening";
    } catch (const net::net_error& e) {
      r += e.sys_errno() == ECONNREFUSED ? " (refused)" : " (other error)";
    }
    auto c = net::stream::connect(outside.local_address(), 5s);
    r += ", outside listener open";
    return r;
  });
  EXPECT_EQ(got, "client closed, listener closed (refused), outside listener open");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(scope_sockets);

}  // namespace
