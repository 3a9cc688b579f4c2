// ember::net: sockets used from processes. Each operation suspends only its
// process; errors name the operation and the address; a process's sockets
// close when it exits by any path.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "ember/io/net.hpp"
#include "ember_test.hpp"

namespace {

using namespace ember_test;
using namespace std::chrono_literals;
using ember::pid;
namespace net = ember::net;

class net_basics : public runtime_test {};

// What running f threw, as "<errc> <sys_errno>" for a net_error.
template <class F>
std::string net_outcome(F&& f) {
  try {
    f();
    return "returned";
  } catch (const net::net_error& e) {
    return errc_name(e.code()) + (e.sys_errno() ? " " + std::to_string(e.sys_errno()) : "");
  } catch (const ember::error& e) {
    return "error " + errc_name(e.code());
  }
}

TEST_P(net_basics, a_line_echoed_through_a_listener_comes_back) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    net::address at = l.local_address();
    pid me = ember::self();
    ember::spawn([at, me] {
      auto c = net::stream::connect(at, 5s);
      c.write("hello\r\nworld\n");
      std::string a = c.read_line(5s);
      std::string b = c.read_line(5s);
      ember::send(me, a + "|" + b);
    });
    auto s = l.accept(5s);
    for (int i = 0; i < 2; ++i) s.write(s.read_line(5s) + "!\n");
    return ember::receive([](const std::string& r) { return r; });
  });
  EXPECT_EQ(got, "hello!|world!");
}

TEST_P(net_basics, a_read_with_nothing_to_read_times_out_and_the_socket_stays_usable) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    auto c = net::stream::connect(l.local_address(), 5s);
    auto s = l.accept(5s);
    char b[8];
    std::string first = net_outcome([&] { s.read(b, sizeof b, 20ms); });
    c.write("x");
    std::size_t n = s.read(b, sizeof b, 5s);
    return first + " then " + std::to_string(n);
  });
  EXPECT_EQ(got, "timed_out then 1");
}

TEST_P(net_basics, connecting_to_a_closed_port_is_refused_with_the_address_in_the_error) {
  auto got = in_process(rt(), [] {
    net::address at;
    {
      auto l = net::listener::listen(net::address::loopback(0));
      at = l.local_address();
    }  // closed: nobody listens there now
    try {
      net::stream::connect(at, 5s);
      return std::string("connected");
    } catch (const net::net_error& e) {
      bool names_address = std::string(e.what()).find(at.to_string()) != std::string::npos;
      return errc_name(e.code()) + (e.sys_errno() == ECONNREFUSED ? " ECONNREFUSED" : " other") +
             (names_address ? " with address" : " without address");
    }
  });
  EXPECT_EQ(got, "io_failed ECONNREFUSED with address");
}

TEST_P(net_basics, end_of_file_reads_zero_and_read_exact_reports_closed) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    auto c = net::stream::connect(l.local_address(), 5s);
    auto s = l.accept(5s);
    c.write("abc");
    c.close();
    char b[8];
    std::string r = net_outcome([&] { s.read_exact(b, 8, 5s); });
    std::size_t n = s.read(b, sizeof b, 5s);
    return r + " then " + std::to_string(n);
  });
  EXPECT_EQ(got, "closed then 0");
}

TEST_P(net_basics, a_process_killed_while_blocked_in_read_closes_its_socket) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    net::address at = l.local_address();
    pid me = ember::self();
    pid reader = ember::spawn([at, me] {
      auto c = net::stream::connect(at, 5s);
      ember::send(me, std::string("connected"));
      char b[1];
      c.read(b, 1);  // never returns: the peer sends nothing
    });
    auto s = l.accept(5s);
    ember::receive([](const std::string&) {});
    auto ref = ember::monitor(reader);
    ember::exit(reader, ember::exit_reason::kill());
    ember::receive(ember::when([ref](const ember::down& d) { return d.ref == ref; }, [](const ember::down&) {}));
    char b[1];
    return std::to_string(s.read(b, 1, 5s));  // end of file: the reader's socket was closed
  });
  EXPECT_EQ(got, "0");
}

TEST_P(net_basics, a_socket_moved_into_a_spawned_process_is_owned_by_it) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    auto c = net::stream::connect(l.local_address(), 5s);
    pid me = ember::self();
    pid h = ember::spawn([conn = l.accept(5s), me]() mutable {
      conn.write(conn.read_line(5s) + " back\n");
      ember::send(me, std::string("done"));
      ember::receive([](const std::string&) {});  // until told to crash
      throw std::runtime_error("crash");
    });
    c.write("ping\n");
    std::string line = c.read_line(5s);
    ember::receive([](const std::string&) {});
    ember::send(h, std::string("crash"));
    char b[1];
    std::size_t n = c.read(b, 1, 5s);  // its socket closed with it
    return line + " / " + std::to_string(n);
  });
  EXPECT_EQ(got, "ping back / 0");
}

TEST_P(net_basics, a_socket_given_away_is_closed_when_its_new_owner_dies) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    auto c = net::stream::connect(l.local_address(), 5s);
    auto s = l.accept(5s);
    pid me = ember::self();
    pid h = ember::spawn([me] {
      ember::send(me, std::string("ready"));
      ember::receive([](const std::string&) {});
    });
    ember::receive([](const std::string&) {});
    s.give_to(h);
    auto ref = ember::monitor(h);
    ember::exit(h, ember::exit_reason::kill());
    ember::receive(ember::when([ref](const ember::down& d) { return d.ref == ref; }, [](const ember::down&) {}));
    char b[1];
    std::size_t n = c.read(b, 1, 5s);
    return std::to_string(n) + (s.is_open() ? " open" : " closed");
  });
  EXPECT_EQ(got, "0 closed");
}

TEST_P(net_basics, active_once_delivers_data_and_close_as_messages) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    auto c = net::stream::connect(l.local_address(), 5s);
    auto s = l.accept(5s);
    std::string out;
    s.set_active_once();
    c.write("one");
    ember::receive([&](const net::socket_data& d) { out += (d.socket == s.id() ? "" : "?") + d.data; });
    c.write("two");
    s.set_active_once();
    ember::receive([&](const net::socket_data& d) { out += "," + d.data; });
    c.close();
    s.set_active_once();
    ember::receive([&](const net::socket_closed& d) { out += d.socket == s.id() ? ",closed" : ",?"; });
    return out;
  });
  EXPECT_EQ(got, "one,two,closed");
}

TEST_P(net_basics, udp_datagrams_go_both_ways_with_their_sender) {
  auto got = in_process(rt(), [] {
    auto a = net::datagram::bind(net::address::loopback(0));
    auto b = net::datagram::bind(net::address::loopback(0));
    a.send_to("ping", b.local_address());
    auto r = b.receive_from(5s);
    b.send_to(r.data + "-pong", r.from);
    auto back = a.receive_from(5s);
    return back.data + (r.from == a.local_address() ? " from a" : " from ?");
  });
  EXPECT_EQ(got, "ping-pong from a");
}

TEST_P(net_basics, unix_domain_streams_work_like_tcp) {
  std::string path = "/tmp/ember_net_test_" + std::to_string(::getpid()) + "_" + std::to_string(GetParam());
  ::unlink(path.c_str());
  auto got = in_process(rt(), [path] {
    auto l = net::listener::listen(net::address::unix_path(path));
    auto c = net::stream::connect(l.local_address(), 5s);
    auto s = l.accept(5s);
    c.write("over unix\n");
    return s.read_line(5s) + " " + l.local_address().to_string();
  });
  ::unlink(path.c_str());
  EXPECT_EQ(got, "over unix unix:" + path);
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(net_basics);

}  // namespace
