// ember::net: sockets used from processes. Each operation suspends only its
// process; errors name the operation and the address; a process's sockets
// close when it exits by any path.
//
// Suites: net_basics (the first rules), net_timeouts (every operation's
// timeout, and the socket after it), net_errors (peer close, peer reset,
// read_line's max_length, shutdown, listen errors), net_addresses (parse,
// to_string, IPv6, resolve, calls outside processes), net_ownership (which
// exit closes which socket), net_active (active-once mode, a gen_server
// owning a socket), net_datagrams (UDP and Unix datagrams) and net_load
// (megabytes each way, hundreds of connections at once).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "ember/io/net.hpp"
#include "ember_test.hpp"

namespace {

using namespace ember_test;
using namespace std::chrono_literals;
using ember::exit_reason;
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

// ------------------------------------------------------------------ helpers

std::string errno_name(int e) {
  switch (e) {
    case ECONNRESET: return "ECONNRESET";
    case EPIPE: return "EPIPE";
    case EADDRINUSE: return "EADDRINUSE";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EBADF: return "EBADF";
    case ENOTCONN: return "ENOTCONN";
  }
  return std::to_string(e);
}

// How an operation ended: "returned", "<errc>" or "<errc> <ERRNO>" for a
// net_error, "error <errc>" for another ember::error; and its what().
struct failure {
  std::string outcome;
  std::string what;
};

template <class F>
failure failure_of(F&& f) {
  try {
    f();
    return {"returned", ""};
  } catch (const net::net_error& e) {
    return {errc_name(e.code()) + (e.sys_errno() ? " " + errno_name(e.sys_errno()) : ""), e.what()};
  } catch (const ember::error& e) {
    return {"error " + errc_name(e.code()), e.what()};
  }
}

bool mentions(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Both ends of a loopback TCP connection, owned by the calling process.
struct stream_pair {
  net::stream client;
  net::stream server;
};

stream_pair connected_pair() {
  auto l = net::listener::listen(net::address::loopback(0));
  auto c = net::stream::connect(l.local_address(), 5s);
  auto s = l.accept(5s);
  return {std::move(c), std::move(s)};
}

void set_option(const net::socket_handle& h, int level, int name, const void* value, socklen_t len) {
  if (::setsockopt(h.native_handle(), level, name, value, len) != 0)
    throw std::runtime_error("setsockopt " + std::to_string(name) + ": " + errno_name(errno));
}

// Small kernel buffers, so that a few MB cannot disappear into them.
void shrink_buffers(const net::stream& s) {
  int bytes = 16 * 1024;
  set_option(s, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  set_option(s, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

// Closes with a reset (RST) instead of an orderly end of file.
void reset(net::stream& s) {
  linger abort_on_close{1, 0};
  set_option(s, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
  s.close();
}

// Everything until end of file.
std::string read_to_end(net::stream& s, net::timeout t = 10s) {
  std::string out;
  char buf[16 * 1024];
  for (;;) {
    std::size_t n = s.read(buf, sizeof buf, t);
    if (n == 0) return out;
    out.append(buf, n);
  }
}

// Waits for the down of a monitor set with spawn_monitor / monitor.
exit_reason down_of(ember::monitor_ref ref) {
  return ember::receive(ember::when([ref](const ember::down& d) { return d.ref == ref; },
                                    [](const ember::down& d) { return d.reason; }));
}

// Messages between the processes of a test.
struct ready {};
struct go {};
struct address_msg {
  net::address at;
};

// ----------------------------------------------------------------- timeouts

class net_timeouts : public runtime_test {};

TEST_P(net_timeouts, accept_times_out_naming_the_listener_and_the_listener_still_accepts) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    std::string at = l.local_address().to_string();
    failure f = failure_of([&] { l.accept(20ms); });
    auto c = net::stream::connect(l.local_address(), 5s);
    auto s = l.accept(5s);
    c.write("after\n");
    return f.outcome + (mentions(f.what, "accept " + at) ? " naming accept and " + at : " [" + f.what + "]") +
           " then " + s.read_line(5s);
  });
  EXPECT_EQ(got.substr(0, 9), "timed_out");
  EXPECT_TRUE(mentions(got, "naming accept and 127.0.0.1:")) << got;
  EXPECT_TRUE(got.ends_with(" then after")) << got;
}

TEST_P(net_timeouts, read_exact_times_out_and_the_socket_stays_usable) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    failure f = failure_of([&] { p.server.read_exact(4, 20ms); });
    p.client.write("abcd");
    return f.outcome + (mentions(f.what, "read_exact") ? " (read_exact)" : " [" + f.what + "]") + " then " +
           p.server.read_exact(4, 5s);
  });
  EXPECT_EQ(got, "timed_out (read_exact) then abcd");
}

TEST_P(net_timeouts, a_read_line_that_times_out_keeps_the_part_of_the_line_it_read) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    p.client.write("par");
    failure f = failure_of([&] { p.server.read_line(20ms); });
    p.client.write("tial\nnext\n");
    std::string a = p.server.read_line(5s);
    std::string b = p.server.read_line(5s);
    return f.outcome + " then " + a + "|" + b;
  });
  EXPECT_EQ(got, "timed_out then partial|next");
}

TEST_P(net_timeouts, a_write_the_peer_never_reads_times_out_and_the_socket_stays_usable) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    shrink_buffers(p.client);
    shrink_buffers(p.server);
    std::string peer = p.client.peer_address().to_string();
    const std::size_t big = 4u << 20;
    failure f = failure_of([&] { p.client.write(std::string(big, 'x'), 100ms); });
    // Now a reader drains the connection: the rest of the stream is
    // whatever part of the big write went out, then a marker line.
    pid me = ember::self();
    ember::spawn([s = std::move(p.server), me]() mutable {
      std::string line = s.read_line(10s, 16u << 20);
      ember::send(me, line);
    });
    p.client.write("!after\n", 10s);
    std::string line = ember::receive([](const std::string& l) { return l; });
    std::size_t bang = line.find('!');
    bool only_x_before = bang != std::string::npos && line.find_first_not_of('x') == bang;
    return f.outcome + (mentions(f.what, "write " + peer) ? " naming write and the peer" : " [" + f.what + "]") +
           (bang > 0 && bang < big ? ", part written" : ", written: " + std::to_string(bang)) +
           (only_x_before ? ", then " + line.substr(bang) : ", then garbage");
  });
  EXPECT_EQ(got, "timed_out naming write and the peer, part written, then !after");
}

TEST_P(net_timeouts, receive_from_times_out_and_the_socket_stays_usable) {
  auto got = in_process(rt(), [] {
    auto a = net::datagram::bind(net::address::loopback(0));
    auto b = net::datagram::bind(net::address::loopback(0));
    std::string at = b.local_address().to_string();
    failure f = failure_of([&] { b.receive_from(20ms); });
    a.send_to("late", b.local_address(), 5s);
    return f.outcome + (mentions(f.what, "receive_from " + at) ? " naming receive_from and the socket" : " [" + f.what + "]") +
           " then " + b.receive_from(5s).data;
  });
  EXPECT_EQ(got, "timed_out naming receive_from and the socket then late");
}

// A listener with backlog 1 that never accepts: the kernel completes two
// handshakes into its queue and then drops SYNs, so a further connect
// cannot complete (its SYN is retried after a second).
TEST_P(net_timeouts, connect_times_out_when_the_listeners_queue_is_full) {
  auto got = in_process(rt(), [] {
    net::listen_options one;
    one.backlog = 1;
    auto l = net::listener::listen(net::address::loopback(0), one);
    net::address at = l.local_address();
    std::vector<net::stream> queued;
    failure f;
    for (int i = 0; i < 16; ++i) {
      f = failure_of([&] { queued.push_back(net::stream::connect(at, 200ms)); });
      if (f.outcome != "returned") break;
    }
    std::string first = f.outcome + (mentions(f.what, "connect " + at.to_string()) ? " naming connect and the address"
                                                                                   : " [" + f.what + "]");
    // With no time at all it gives up at once, and the queue is still full.
    std::string zero = failure_of([&] { net::stream::connect(at, 0ms); }).outcome;
    // The queued connections still work.
    auto s = l.accept(5s);
    queued.front().write("queued\n");
    return first + "; with 0ms: " + zero + "; " + std::to_string(queued.size()) + " queued; " + s.read_line(5s);
  });
  EXPECT_EQ(got, "timed_out naming connect and the address; with 0ms: timed_out; 2 queued; queued");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(net_timeouts);

// ------------------------------------------------------------------- errors

class net_errors : public runtime_test {};

TEST_P(net_errors, read_line_at_end_of_file_returns_the_unterminated_last_line_then_reports_closed) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    p.client.write("one\r\ntwo");
    p.client.close();
    std::string a = p.server.read_line(5s);
    std::string b = p.server.read_line(5s);
    failure f = failure_of([&] { p.server.read_line(5s); });
    char buf[4];
    std::size_t n = p.server.read(buf, sizeof buf, 5s);
    return a + "|" + b + "|" + f.outcome + (mentions(f.what, "read_line") ? " (read_line)" : " [" + f.what + "]") +
           "|" + std::to_string(n);
  });
  EXPECT_EQ(got, "one|two|closed (read_line)|0");
}

TEST_P(net_errors, read_exact_at_end_of_file_reports_closed_with_how_many_bytes_came) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    std::string peer = p.server.peer_address().to_string();
    p.client.write("abc");
    p.client.close();
    failure f = failure_of([&] { p.server.read_exact(8, 5s); });
    return f.outcome + (mentions(f.what, "read_exact " + peer) ? ", naming read_exact and the peer" : ", [" + f.what + "]") +
           (mentions(f.what, "3 of 8 bytes") ? ", 3 of 8 bytes" : "");
  });
  EXPECT_EQ(got, "closed, naming read_exact and the peer, 3 of 8 bytes");
}

TEST_P(net_errors, a_read_from_a_reset_connection_fails_with_econnreset_naming_read_and_the_peer) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    std::string peer = p.server.peer_address().to_string();
    reset(p.client);
    char buf[8];
    failure f = failure_of([&] { p.server.read(buf, sizeof buf, 5s); });
    return failure{f.outcome + (mentions(f.what, "read") ? ", names read" : ", no op") +
                       (mentions(f.what, peer) ? ", names the peer" : ", does not name the peer " + peer),
                   f.what};
  });
  EXPECT_EQ(got.outcome, "io_failed ECONNRESET, names read, names the peer") << got.what;
}

TEST_P(net_errors, a_write_to_a_reset_connection_fails_with_epipe_or_econnreset_naming_write_and_the_peer) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    std::string peer = p.server.peer_address().to_string();
    reset(p.client);
    // A write that races the reset goes out (and draws another); the next
    // one fails. Under io_uring the reset leaves only when the closed
    // socket's poll request is removed, which a loaded machine may delay:
    // retried for up to 5 s, so that a write that never fails ends the test.
    failure f;
    auto give_up = std::chrono::steady_clock::now() + 5s;
    while ((f.outcome.empty() || f.outcome == "returned") && std::chrono::steady_clock::now() < give_up) {
      f = failure_of([&] { p.server.write("x", 5s); });
      if (f.outcome == "returned") ember::sleep_for(1ms);
    }
    std::string code = f.outcome == "io_failed EPIPE" || f.outcome == "io_failed ECONNRESET" ? "io_failed (EPIPE or ECONNRESET)"
                                                                                            : f.outcome;
    return failure{code + (mentions(f.what, "write") ? ", names write" : ", no op") +
                       (mentions(f.what, peer) ? ", names the peer" : ", does not name the peer " + peer),
                   f.what};
  });
  EXPECT_EQ(got.outcome, "io_failed (EPIPE or ECONNRESET), names write, names the peer") << got.what;
}

TEST_P(net_errors, a_line_longer_than_max_length_is_invalid_argument_and_its_bytes_stay_buffered) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    p.client.write("0123456789abcdef");  // no end of line
    failure f = failure_of([&] { p.server.read_line(5s, 8); });
    char buf[32];
    std::size_t n = p.server.read(buf, sizeof buf, 5s);
    return f.outcome + (mentions(f.what, "read_line") ? " (read_line)" : " [" + f.what + "]") + " then " +
           std::string(buf, n);
  });
  EXPECT_EQ(got, "error invalid_argument (read_line) then 0123456789abcdef");
}

// The rule holds however the line arrives: a whole line (end of line
// included) longer than max_length is refused as well, and stays buffered.
TEST_P(net_errors, a_complete_line_longer_than_max_length_is_refused_too) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    p.client.write("0123456789abcdef\nrest\n");
    std::string line;
    failure f = failure_of([&] { line = p.server.read_line(5s, 8); });
    if (f.outcome == "returned") return "returned '" + line + "'";
    std::string a = p.server.read_line(5s);
    std::string b = p.server.read_line(5s);
    return f.outcome + " then " + a + "|" + b;
  });
  EXPECT_EQ(got, "error invalid_argument then 0123456789abcdef|rest");
}

// max_length bounds the line: a line of exactly max_length bytes is not
// longer than it, whether its end of line comes with it or later.
TEST_P(net_errors, a_line_of_exactly_max_length_is_accepted_even_when_its_end_comes_later) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    p.client.write("01234567");  // 8 bytes, the end of line not yet sent
    failure f = failure_of([&] { p.server.read_line(50ms, 8); });
    p.client.write("\n");
    std::string line;
    failure then = failure_of([&] { line = p.server.read_line(5s, 8); });
    return f.outcome + " then " + (then.outcome == "returned" ? line : then.outcome + " [" + then.what + "]");
  });
  EXPECT_EQ(got, "timed_out then 01234567");
}

TEST_P(net_errors, shutdown_write_gives_the_peer_end_of_file_while_the_other_direction_still_works) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    p.client.write("request");
    p.client.shutdown(net::shutdown_how::write);
    std::string request = read_to_end(p.server);  // ends: the client's end of file
    p.server.write("response");
    p.server.close();
    std::string response = read_to_end(p.client);
    failure after = failure_of([&] { p.client.write("more"); });
    return request + "|" + response + "|" + after.outcome;
  });
  EXPECT_EQ(got, "request|response|io_failed EPIPE");
}

TEST_P(net_errors, listening_on_a_port_that_is_listened_on_fails_with_eaddrinuse) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    net::address at = l.local_address();
    failure same = failure_of([&] { net::listener::listen(at); });
    net::listen_options no_reuse;
    no_reuse.reuseaddr = false;
    failure without = failure_of([&] { net::listener::listen(at, no_reuse); });
    return same.outcome + (mentions(same.what, "bind " + at.to_string()) ? " naming bind and the address" : " [" + same.what + "]") +
           " / " + without.outcome;
  });
  EXPECT_EQ(got, "io_failed EADDRINUSE naming bind and the address / io_failed EADDRINUSE");
}

// reuseaddr (the default) lets a listener take a port that a closed one
// left with a connection in TIME_WAIT; without it the bind fails.
TEST_P(net_errors, reuseaddr_lets_a_new_listener_take_a_port_left_in_time_wait) {
  auto got = in_process(rt(), [] {
    net::address at;
    {
      auto l = net::listener::listen(net::address::loopback(0));
      at = l.local_address();
      auto c = net::stream::connect(at, 5s);
      auto s = l.accept(5s);
      s.close();  // the server side closes first: its end goes to TIME_WAIT
      char b[1];
      c.read(b, 1, 5s);
    }
    net::listen_options no_reuse;
    no_reuse.reuseaddr = false;
    std::string without = failure_of([&] { net::listener::listen(at, no_reuse); }).outcome;
    std::string with = failure_of([&] { net::listener::listen(at); }).outcome;
    return "without: " + without + ", with: " + with;
  });
  EXPECT_EQ(got, "without: io_failed EADDRINUSE, with: returned");
}

TEST_P(net_errors, listen_refuses_a_backlog_that_is_not_positive) {
  auto got = in_process(rt(), [] {
    net::listen_options o;
    o.backlog = 0;
    return failure_of([&] { net::listener::listen(net::address::loopback(0), o); }).outcome;
  });
  EXPECT_EQ(got, "error invalid_argument");
}

TEST_P(net_errors, operations_on_a_closed_socket_report_closed) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    p.server.close();
    p.server.close();  // a no-op
    char b[1];
    std::string out = failure_of([&] { p.server.read(b, 1, 1s); }).outcome + "|" +
                      failure_of([&] { p.server.write("x", 1s); }).outcome + "|" +
                      failure_of([&] { p.server.local_address(); }).outcome;
    net::stream moved_from = std::move(p.client);
    out += "|" + failure_of([&] { p.client.read(b, 1, 1s); }).outcome;
    return out + (p.server.is_open() ? "|open" : "|not open");
  });
  EXPECT_EQ(got, "closed EBADF|closed EBADF|closed EBADF|closed EBADF|not open");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(net_errors);

// ---------------------------------------------------------------- addresses

TEST(net_addresses, parse_reads_numeric_addresses_and_to_string_gives_them_back) {
  for (const char* text : {"127.0.0.1:80", "0.0.0.0:0", "255.255.255.255:65535", "10.1.2.3:7000", "[::1]:8080",
                           "[::]:0", "[fe80::1]:1", "[2001:db8::ff00:42:8329]:443", "[::ffff:127.0.0.1]:9",
                           "unix:/tmp/ember.sock", "unix:relative/socket"}) {
    EXPECT_EQ(net::address::parse(text).to_string(), text);
  }
  EXPECT_EQ(net::address::parse("127.0.0.1:0080").to_string(), "127.0.0.1:80");
  EXPECT_EQ(net::address::parse("[0:0:0:0:0:0:0:1]:5").to_string(), "[::1]:5");

  auto v4 = net::address::parse("127.0.0.1:80");
  EXPECT_EQ(v4.family(), AF_INET);
  EXPECT_EQ(v4.port(), 80);
  EXPECT_EQ(v4, net::address::loopback(80));
  EXPECT_EQ(v4, net::address::ipv4("127.0.0.1", 80));
  EXPECT_FALSE(v4 == net::address::loopback(81));
  auto v6 = net::address::parse("[::1]:8080");
  EXPECT_EQ(v6.family(), AF_INET6);
  EXPECT_EQ(v6.port(), 8080);
  EXPECT_EQ(v6, net::address::ipv6("::1", 8080));
  auto un = net::address::parse("unix:/tmp/ember.sock");
  EXPECT_EQ(un.family(), AF_UNIX);
  EXPECT_EQ(un.port(), 0);
  EXPECT_EQ(un, net::address::unix_path("/tmp/ember.sock"));
  EXPECT_TRUE(net::address().empty());
  EXPECT_FALSE(v4.empty());
}

TEST(net_addresses, parse_refuses_malformed_addresses_with_invalid_argument) {
  std::string too_long = "unix:/" + std::string(200, 'p');
  for (std::string text : {std::string(""), std::string("127.0.0.1"), std::string("127.0.0.1:"), std::string(":80"),
                           std::string("localhost:80"), std::string("127.0.0.1:65536"),
                           std::string("127.0.0.1:99999999999999999999"), std::string("127.0.0.1:-1"),
                           std::string("127.0.0.1:+80"), std::string("127.0.0.1:8o"), std::string("127.0.0.1: 80"),
                           std::string("1.2.3:80"), std::string("256.0.0.1:80"), std::string("::1:80"),
                           std::string("[::1]"), std::string("[::1:80"), std::string("[127.0.0.1]:80"),
                           std::string("[]:80"), std::string("unix:"), too_long}) {
    std::string outcome;
    try {
      auto a = net::address::parse(text);
      outcome = "parsed as " + a.to_string();
    } catch (const ember::error& e) {
      outcome = errc_name(e.code());
    }
    EXPECT_EQ(outcome, "invalid_argument") << "parse(\"" << text << "\")";
  }
  EXPECT_THROW(net::address::ipv4("::1", 1), ember::error);
  EXPECT_THROW(net::address::ipv6("127.0.0.1", 1), ember::error);
  EXPECT_THROW(net::address::unix_path(""), ember::error);
}

class net_addresses_in_processes : public runtime_test {};

bool ipv6_loopback_available() {
  int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

TEST_P(net_addresses_in_processes, a_stream_over_ipv6_loopback_works_like_ipv4) {
  if (!ipv6_loopback_available()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::parse("[::1]:0"));
    auto c = net::stream::connect(l.local_address(), 5s);
    auto s = l.accept(5s);
    c.write("six\n");
    std::string line = s.read_line(5s);
    std::string local = l.local_address().to_string();
    bool peer_is_client = s.peer_address() == c.local_address();
    return line + " " + (local.starts_with("[::1]:") ? "[::1]:port" : local) +
           (peer_is_client && s.peer_address().family() == AF_INET6 ? " peer ok" : " peer wrong");
  });
  EXPECT_EQ(got, "six [::1]:port peer ok");
}

bool is_loopback(const net::address& a) {
  if (a.family() == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(a.data())->sin_addr.s_addr) >> 24) == 127;
  if (a.family() == AF_INET6) return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(a.data())->sin6_addr);
  return false;
}

TEST_P(net_addresses_in_processes, resolve_localhost_gives_loopback_addresses_with_the_port) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    std::uint16_t port = l.local_address().port();
    std::vector<net::address> found = net::resolve("localhost", port);
    std::string out = found.empty() ? "nothing" : "found";
    for (const auto& a : found)
      if (!is_loopback(a) || a.port() != port) out += ", not loopback: " + a.to_string();
    // The IPv4 one reaches the listener.
    auto v4 = std::find_if(found.begin(), found.end(), [](const net::address& a) { return a.family() == AF_INET; });
    if (v4 != found.end()) {
      auto c = net::stream::connect(*v4, 5s);
      auto s = l.accept(5s);
      c.write("hi\n");
      out += ", " + s.read_line(5s);
    }
    failure bad = failure_of([] { net::resolve("", 80); });
    return out + "; '': " + bad.outcome + (mentions(bad.what, "resolve") ? " (resolve)" : " [" + bad.what + "]");
  });
  EXPECT_EQ(got, "found, hi; '': io_failed (resolve)");
}

TEST_P(net_addresses_in_processes, every_operation_outside_a_process_throws_not_in_process) {
  auto code_of = [](auto&& f) {
    try {
      f();
      return std::string("returned");
    } catch (const ember::error& e) {
      return errc_name(e.code()) + (mentions(e.what(), "outside a process") ? "" : std::string(" [") + e.what() + "]");
    }
  };
  net::address nowhere = net::address::loopback(9);
  EXPECT_EQ(code_of([&] { net::stream::connect(nowhere, 1s); }), "not_in_process");
  EXPECT_EQ(code_of([&] { net::listener::listen(net::address::loopback(0)); }), "not_in_process");
  EXPECT_EQ(code_of([&] { net::datagram::bind(net::address::loopback(0)); }), "not_in_process");
  EXPECT_EQ(code_of([&] { net::resolve("localhost", 80); }), "not_in_process");
  net::stream unopened;
  char b[1];
  EXPECT_EQ(code_of([&] { unopened.read(b, 1, 1s); }), "not_in_process");

  // Sockets a process holds, tried from this thread.
  struct held {
    net::listener* l;
    net::datagram* d;
    pid holder;
  };
  oneshot<held> handed;
  rt().spawn([handed] {
    auto l = net::listener::listen(net::address::loopback(0));
    auto d = net::datagram::bind(net::address::loopback(0));
    handed.set(held{&l, &d, ember::self()});
    ember::receive([](go) {});
  });
  held h = handed.get();
  EXPECT_EQ(code_of([&] { h.l->accept(0ms); }), "not_in_process");
  EXPECT_EQ(code_of([&] { h.l->local_address(); }), "not_in_process");
  EXPECT_EQ(code_of([&] { h.l->native_handle(); }), "not_in_process");
  EXPECT_EQ(code_of([&] { h.l->give_to(h.holder); }), "not_in_process");
  EXPECT_EQ(code_of([&] { h.d->send_to("x", nowhere, 1s); }), "not_in_process");
  EXPECT_EQ(code_of([&] { h.d->receive_from(0ms); }), "not_in_process");
  EXPECT_TRUE(h.l->is_open());
  rt().send(h.holder, go{});
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(net_addresses_in_processes);

// ---------------------------------------------------------------- ownership

class net_ownership : public runtime_test {};

volatile int never = -1;  // the recursion's way out, never taken

// Recurses until the stack runs out.
__attribute__((noinline)) int recurse(int depth) {
  volatile char pad[256];
  pad[0] = char(depth);
  if (depth == never) return 0;
  return recurse(depth + 1) + pad[0];
}

inline void keep(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

// Allocates and never frees, far past any heap limit used here.
void allocate_past_the_limit() {
  for (int i = 0; i < 64 * 1024; ++i) {
    char* p = new char[1000];
    p[0] = char(i);
    keep(p);
  }
}

TEST_P(net_ownership, a_process_killed_while_blocked_in_accept_closes_its_listener) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    auto [acceptor, ref] = ember::spawn_monitor([me] {
      auto l = net::listener::listen(net::address::loopback(0));
      ember::send(me, address_msg{l.local_address()});
      l.accept();  // nobody connects
    });
    net::address at = ember::receive([](const address_msg& m) { return m.at; });
    ember::exit(acceptor, exit_reason::kill());
    exit_reason why = down_of(ref);
    // Connections that still reach the listener are reset when it closes;
    // once it is closed, connecting is refused.
    std::string outcome;
    for (int i = 0; i < 100; ++i) {
      failure f = failure_of([&] {
        auto c = net::stream::connect(at, 5s);
        char b[1];
        c.read(b, 1, 5s);  // until the listener's close ends it
      });
      outcome = f.outcome;
      if (outcome == "io_failed ECONNREFUSED") break;
    }
    return why.to_string() + ", then " + outcome;
  });
  EXPECT_EQ(got, "killed, then io_failed ECONNREFUSED");
}

TEST_P(net_ownership, a_process_killed_while_blocked_in_write_closes_its_socket) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    net::address at = l.local_address();
    pid me = ember::self();
    const std::size_t big = 4u << 20;
    auto [writer, ref] = ember::spawn_monitor([at, me, big] {
      auto c = net::stream::connect(at, 5s);
      shrink_buffers(c);
      ember::send(me, ready{});
      c.write(std::string(big, 'w'));  // the peer reads a little only: this blocks
    });
    auto s = l.accept(5s);
    shrink_buffers(s);
    ember::receive([](ready) {});
    char b[1];
    std::size_t first = s.read(b, 1, 5s);  // the write has begun
    ember::exit(writer, exit_reason::kill());
    exit_reason why = down_of(ref);
    std::size_t rest = read_to_end(s).size();  // its socket closed: end of file
    return why.to_string() + ", end of file after " + (first + rest < big ? "part" : "all") + " of the write";
  });
  EXPECT_EQ(got, "killed, end of file after part of the write");
}

TEST_P(net_ownership, a_process_ending_by_stack_overflow_closes_its_sockets) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    net::address at = l.local_address();
    pid me = ember::self();
    ember::spawn_options small;
    small.stack_size = 64 * 1024;
    auto [p, ref] = ember::spawn_monitor(
        [at, me] {
          auto c = net::stream::connect(at, 5s);
          ember::send(me, ready{});
          ember::receive([](go) {});
          recurse(0);
        },
        small);
    auto s = l.accept(5s);
    ember::receive([](ready) {});
    ember::send(p, go{});
    exit_reason why = down_of(ref);
    char b[1];
    std::size_t n = s.read(b, 1, 5s);
    return std::string(why.what_kind() == exit_reason::kind::stack_overflow ? "stack_overflow" : why.to_string()) +
           ", then read " + std::to_string(n);
  });
  EXPECT_EQ(got, "stack_overflow, then read 0");
}

TEST_P(net_ownership, a_process_passing_its_heap_limit_closes_its_sockets) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    net::address at = l.local_address();
    pid me = ember::self();
    ember::spawn_options capped;
    capped.max_heap_bytes = 256 * 1024;
    auto [p, ref] = ember::spawn_monitor(
        [at, me] {
          auto c = net::stream::connect(at, 5s);
          auto d = net::datagram::bind(net::address::loopback(0));
          ember::send(me, address_msg{d.local_address()});
          ember::receive([](go) {});
          allocate_past_the_limit();
        },
        capped);
    auto s = l.accept(5s);
    net::address dgram = ember::receive([](const address_msg& m) { return m.at; });
    ember::send(p, go{});
    exit_reason why = down_of(ref);
    char b[1];
    std::size_t n = s.read(b, 1, 5s);
    // Its datagram socket's port is free again (the end of file above says
    // its sockets are released: newest first, so the datagram before it).
    std::string rebind = failure_of([&] { net::datagram::bind(dgram); }).outcome;
    return std::string(why.what_kind() == exit_reason::kind::heap_limit ? "heap_limit" : why.to_string()) +
           ", then read " + std::to_string(n) + ", rebind " + rebind;
  });
  EXPECT_EQ(got, "heap_limit, then read 0, rebind returned");
}

TEST_P(net_ownership, a_socket_given_to_a_dead_process_is_closed) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    auto [gone, ref] = ember::spawn_monitor([] {});
    down_of(ref);
    p.server.give_to(gone);
    char b[1];
    std::size_t n = p.client.read(b, 1, 5s);
    return std::to_string(n) + (p.server.is_open() ? " open" : " closed");
  });
  EXPECT_EQ(got, "0 closed");
}

struct handler_is {
  pid id;
};

TEST_P(net_ownership, a_socket_moved_into_a_closure_belongs_to_the_new_process_after_its_first_use) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    // The acceptor hands the connection to a handler, and exits once the
    // handler has used it.
    auto [acceptor, ref] = ember::spawn_monitor([me] {
      auto l = net::listener::listen(net::address::loopback(0));
      ember::send(me, address_msg{l.local_address()});
      pid self = ember::self();
      ember::spawn([conn = l.accept(5s), me, self]() mutable {
        conn.write("hello\n");  // its first use
        ember::send(self, ready{});
        ember::send(me, handler_is{ember::self()});
        ember::receive([](go) {});
        conn.write(conn.read_line(5s) + "!\n");
      });
      ember::receive([](ready) {});
    });
    net::address at = ember::receive([](const address_msg& m) { return m.at; });
    auto c = net::stream::connect(at, 5s);
    std::string hello = c.read_line(5s);
    pid handler = ember::receive([](const handler_is& h) { return h.id; });
    exit_reason why = down_of(ref);
    ember::send(handler, go{});
    c.write("ping\n");
    return hello + ", acceptor " + why.to_string() + ", " + c.read_line(5s);
  });
  EXPECT_EQ(got, "hello, acceptor normal, ping!");
}

TEST_P(net_ownership, a_socket_moved_into_a_closure_and_not_yet_used_still_belongs_to_its_spawner) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    auto [acceptor, ref] = ember::spawn_monitor([me] {
      auto l = net::listener::listen(net::address::loopback(0));
      ember::send(me, address_msg{l.local_address()});
      ember::spawn([conn = l.accept(5s), me]() mutable {
        ember::send(me, handler_is{ember::self()});
        ember::receive([](go) {});
        ember::send(me, failure_of([&] { conn.write("late"); }).outcome);
      });
    });  // exits at once, owning the connection still
    net::address at = ember::receive([](const address_msg& m) { return m.at; });
    auto c = net::stream::connect(at, 5s);
    pid handler = ember::receive([](const handler_is& h) { return h.id; });
    down_of(ref);
    char b[1];
    std::size_t n = c.read(b, 1, 5s);
    ember::send(handler, go{});
    std::string late = ember::receive([](const std::string& s) { return s; });
    return "read " + std::to_string(n) + ", handler's write: " + late;
  });
  EXPECT_EQ(got, "read 0, handler's write: closed EBADF");
}

// Reads in one process and writes in another are allowed (net.hpp); the
// writer's exit then closes the socket (it used it last) while the reader
// is blocked in read. The reader must be told `closed` at once; it must not
// sleep to its deadline and then read from a descriptor that now belongs to
// another connection (the handle's slot and descriptor are reused). (The
// ends of file below show the close has happened.)
TEST_P(net_ownership, a_reader_blocked_on_a_socket_closed_under_it_is_told_closed_and_reads_nothing_else) {
  auto got = in_process(rt(), [] {
    auto first = connected_pair();
    auto other = net::listener::listen(net::address::loopback(0));  // for the connection made after the close
    net::stream* s = &first.server;
    pid me = ember::self();
    ember::spawn([s, me] {
      ember::send(me, ready{});
      char b[16];
      std::string r;
      auto start = std::chrono::steady_clock::now();
      failure f = failure_of([&] { r = std::string(b, s->read(b, sizeof b, 10s)); });
      // Woken by the close, not by its deadline.
      bool prompt = std::chrono::steady_clock::now() - start < 5s;
      ember::send(me, (f.outcome == "returned" ? "read '" + r + "'" : f.outcome) + (prompt ? "" : " at its deadline"));
    });
    ember::receive([](ready) {});
    auto [writer, ref] = ember::spawn_monitor([s] { s->write("ping\n", 5s); });
    down_of(ref);
    std::string ping = read_to_end(first.client);  // then end of file: the writer's exit closed it
    if (ping.ends_with("\n")) ping.pop_back();
    // A new connection, which may take the closed socket's slot.
    auto c2 = net::stream::connect(other.local_address(), 5s);
    auto s2 = other.accept(5s);
    s2.write("secret");
    std::string reader = ember::receive([](const std::string& r) { return r; });
    if (reader == "closed EBADF" || reader == "closed") reader = "closed";
    std::string data;
    std::string c2_outcome = failure_of([&] {
                               char b[16];
                               data.assign(b, c2.read(b, sizeof b, 200ms));
                             }).outcome;
    return ping + ", reader: " + reader + ", new connection: " + (c2_outcome == "returned" ? data : c2_outcome);
  });
  EXPECT_EQ(got, "ping, reader: closed, new connection: secret");
}


// A supervisor restarting a listener after its owner died must find the
// port free once it hears of the death: the exit path closes the dead
// process's sockets before its links and monitors fire. The owner holds
// many other sockets (closed first: newest first) so that a close that
// came after the down would be seen.
TEST_P(net_ownership, a_dead_owners_listener_is_closed_before_its_down_arrives) {
  const int schedulers = int(GetParam());
  auto got = in_process(rt(), [schedulers] {
    pid me = ember::self();
    std::string outcomes;
    for (int round = 0; round < 6; ++round) {
      ember::spawn_options on;
      on.scheduler = round % schedulers;  // some rounds on another thread than this one
      auto [owner, ref] = ember::spawn_monitor([me] {
        auto l = net::listener::listen(net::address::loopback(0));
        std::vector<net::datagram> others;
        for (int i = 0; i < 200; ++i) others.push_back(net::datagram::bind(net::address::loopback(0)));
        ember::send(me, address_msg{l.local_address()});
        ember::receive([](go) {});
      }, on);
      net::address at = ember::receive([](const address_msg& m) { return m.at; });
      ember::exit(owner, exit_reason::kill());
      down_of(ref);
      std::string f = failure_of([&] { net::listener::listen(at); }).outcome;
      if (outcomes.find(f) == std::string::npos) outcomes += (outcomes.empty() ? "" : ", ") + f;
    }
    return outcomes;
  });
  EXPECT_EQ(got, "returned");
}

// The runtime's socket handles outlive every process: the process that
// happens to open the runtime's first socket (and so makes the poller grow
// its table of handles) may exit, and later sockets must not live in its
// reclaimed heap. With quarantine_dead_heaps a use of a dead process's
// memory ends the node with a report, so this runs in a child process.
TEST(net_heaps, sockets_opened_after_the_first_sockets_process_exited_do_not_use_its_heap) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ember::runtime_options o;
        o.schedulers = 1;
        o.quarantine_dead_heaps = true;
        ember::runtime rt(o);
        rt.spawn([] { auto first = net::datagram::bind(net::address::loopback(0)); });
        rt.wait();
        std::string got = in_process(rt, [] {
          auto p = connected_pair();
          p.client.write("still here\n");
          return p.server.read_line(5s);
        });
        rt.wait();
        std::_Exit(got == "still here" ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_P(net_ownership, stats_count_the_sockets_open) {
  oneshot<void> opened, closed_one;
  pid holder = rt().spawn([opened, closed_one] {
    auto p = connected_pair();  // two streams (its listener is closed again)
    auto d = net::datagram::bind(net::address::loopback(0));
    opened.set();
    ember::receive([](go) {});
    d.close();
    closed_one.set();
    ember::receive([](go) {});
  });
  opened.get();
  std::vector<std::size_t> counts{rt().stats().sockets_open};
  rt().send(holder, go{});
  closed_one.get();
  counts.push_back(rt().stats().sockets_open);
  rt().send(holder, go{});
  ASSERT_TRUE(rt().wait_for(hang_limit));
  counts.push_back(rt().stats().sockets_open);
  EXPECT_EQ(counts, (std::vector<std::size_t>{3, 2, 0}));
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(net_ownership);

// ------------------------------------------------------------------- active

class net_active : public runtime_test {};

struct get_echoed {};
struct echo_report {
  std::string end;  // "closed" or "error <errno>: <what>"
  std::size_t echoed = 0;
  bool ids_matched = true;
};

// A gen_server that owns a connection in active-once mode and echoes what
// comes; it reports the connection's end to `observer` and stops.
struct echo_server {
  net::stream conn;
  pid observer;
  std::size_t echoed = 0;
  bool ids_matched = true;

  echo_server(net::stream s, pid o) : conn(std::move(s)), observer(o) {}
  void init() { conn.set_active_once(); }
  void handle_call(ember::message& m, ember::from from) {
    if (m.is<get_echoed>()) ember::reply(from, echoed);
  }
  void handle_info(ember::message& m) {
    if (auto* d = m.get_if<net::socket_data>()) {
      ids_matched = ids_matched && d->socket == conn.id();
      conn.write(d->data, 5s);
      echoed += d->data.size();
      conn.set_active_once();
    } else if (auto* c = m.get_if<net::socket_closed>()) {
      ids_matched = ids_matched && c->socket == conn.id();
      ember::send(observer, echo_report{"closed", echoed, ids_matched});
      ember::stop();
    } else if (auto* e = m.get_if<net::socket_error>()) {
      ids_matched = ids_matched && e->socket == conn.id();
      ember::send(observer, echo_report{"error " + errno_name(e->sys_errno) + ": " + e->what, echoed, ids_matched});
      ember::stop();
    }
  }
};

struct client_done {
  int id;
  int ok;
};
struct close_now {};

TEST_P(net_active, a_gen_server_owning_a_socket_in_active_once_mode_serves_several_clients) {
  constexpr int clients = 6, lines = 20;
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    net::address at = l.local_address();
    pid me = ember::self();
    std::vector<pid> client_pids;
    for (int i = 0; i < clients; ++i)
      client_pids.push_back(ember::spawn([at, me, i] {
        auto c = net::stream::connect(at, 5s);
        int ok = 0;
        for (int j = 0; j < lines; ++j) {
          std::string line = "client " + std::to_string(i) + " line " + std::to_string(j);
          c.write(line + "\n", 5s);
          if (c.read_line(5s) == line) ++ok;
        }
        ember::send(me, client_done{i, ok});
        ember::receive([](close_now) {});
      }));  // exiting closes the connection
    std::vector<std::pair<pid, ember::monitor_ref>> servers;
    for (int i = 0; i < clients; ++i) servers.push_back(ember::gen_server::start_monitor<echo_server>(l.accept(5s), me));
    int ok = 0;
    for (int i = 0; i < clients; ++i) ok += ember::receive([](const client_done& d) { return d.ok; });
    // The servers answer calls between socket messages.
    std::size_t echoed = 0;
    for (auto& s : servers) echoed += ember::gen_server::call<std::size_t>(s.first, get_echoed{});
    for (pid c : client_pids) ember::send(c, close_now{});
    std::string ends;
    std::size_t reported = 0;
    for (int i = 0; i < clients; ++i) {
      echo_report r = ember::receive([](const echo_report& r) { return r; });
      ends += r.end + (r.ids_matched ? "" : " (wrong socket id)") + ";";
      reported += r.echoed;
    }
    int normal = 0;
    for (auto& s : servers) normal += down_of(s.second).is_normal() ? 1 : 0;
    return "lines ok " + std::to_string(ok) + ", echoed " + std::to_string(echoed) + " = " +
           std::to_string(reported) + ", ends " + ends + " normal exits " + std::to_string(normal);
  });
  std::size_t bytes = 0;
  for (int i = 0; i < clients; ++i)
    for (int j = 0; j < lines; ++j)
      bytes += ("client " + std::to_string(i) + " line " + std::to_string(j) + "\n").size();
  std::string ends;
  for (int i = 0; i < clients; ++i) ends += "closed;";
  EXPECT_EQ(got, "lines ok " + std::to_string(clients * lines) + ", echoed " + std::to_string(bytes) + " = " +
                     std::to_string(bytes) + ", ends " + ends + " normal exits " + std::to_string(clients));
}

TEST_P(net_active, a_gen_server_in_active_mode_gets_socket_error_when_its_client_resets) {
  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    auto c = net::stream::connect(l.local_address(), 5s);
    auto [server, ref] = ember::gen_server::start_monitor<echo_server>(l.accept(5s), ember::self());
    c.write("hello\n");
    std::string echo = c.read_line(5s);
    reset(c);
    echo_report r = ember::receive([](const echo_report& r) { return r; });
    down_of(ref);
    return echo + ", " + r.end.substr(0, r.end.find(':')) + (mentions(r.end, "read") ? " (read)" : "") +
           ", echoed " + std::to_string(r.echoed);
  });
  EXPECT_EQ(got, "hello, error ECONNRESET (read), echoed 6");
}

TEST_P(net_active, a_passive_read_on_a_socket_in_active_mode_is_invalid_argument) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    p.server.set_active_once();
    char b[4];
    failure f = failure_of([&] { p.server.read(b, sizeof b, 1s); });
    p.client.write("z");
    std::string data = ember::receive([](const net::socket_data& d) { return d.data; },
                                      ember::after(5s, [] { return std::string("no message"); }));
    return f.outcome + (mentions(f.what, "active mode") ? " (active mode)" : " [" + f.what + "]") +
           ", then the message " + data;
  });
  EXPECT_EQ(got, "error invalid_argument (active mode), then the message z");
}

TEST_P(net_active, bytes_buffered_by_read_line_come_first_in_active_mode) {
  auto got = in_process(rt(), [] {
    auto p = connected_pair();
    p.client.write("line\nrest");
    std::string line = p.server.read_line(5s);
    std::string data;
    while (data.size() < 4) {
      p.server.set_active_once();
      data += ember::receive([](const net::socket_data& d) { return d.data; });
    }
    p.client.write("more");
    while (data.size() < 8) {
      p.server.set_active_once();
      data += ember::receive([](const net::socket_data& d) { return d.data; });
    }
    return line + "|" + data;
  });
  EXPECT_EQ(got, "line|restmore");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(net_active);

// ---------------------------------------------------------------- datagrams

class net_datagrams : public runtime_test {};

TEST_P(net_datagrams, a_datagram_longer_than_max_size_is_cut_to_max_size_and_its_rest_is_lost) {
  auto got = in_process(rt(), [] {
    auto a = net::datagram::bind(net::address::loopback(0));
    auto b = net::datagram::bind(net::address::loopback(0));
    std::string big;
    for (int i = 0; i < 1000; ++i) big += char('a' + i % 26);
    a.send_to(big, b.local_address(), 5s);
    a.send_to("next", b.local_address(), 5s);
    auto cut = b.receive_from(5s, 100);
    auto next = b.receive_from(5s, 100);
    return std::to_string(cut.data.size()) + (cut.data == big.substr(0, 100) ? " first bytes" : " other bytes") +
           ", then " + next.data;
  });
  EXPECT_EQ(got, "100 first bytes, then next");
}

TEST_P(net_datagrams, unix_datagram_sockets_exchange_datagrams_with_their_sender_address) {
  std::string base = "/tmp/ember_net_dgram_" + std::to_string(::getpid()) + "_" + std::to_string(GetParam());
  std::string pa = base + "_a", pb = base + "_b";
  ::unlink(pa.c_str());
  ::unlink(pb.c_str());
  auto got = in_process(rt(), [pa, pb] {
    auto a = net::datagram::bind(net::address::unix_path(pa));
    auto b = net::datagram::bind(net::address::unix_path(pb));
    a.send_to("ping", net::address::unix_path(pb), 5s);
    auto r = b.receive_from(5s);
    b.send_to(r.data + "-pong", r.from, 5s);
    auto back = a.receive_from(5s);
    return back.data + " from " + back.from.to_string() + ", first from " + r.from.to_string();
  });
  ::unlink(pa.c_str());
  ::unlink(pb.c_str());
  EXPECT_EQ(got, "ping-pong from unix:" + pb + ", first from unix:" + pa);
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(net_datagrams);

// --------------------------------------------------------------------- load

class net_load : public runtime_test {};

// Byte i of the pattern `seed`.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
char pattern_byte(std::uint64_t seed, std::size_t i) { return char(mix(seed << 40 ^ (i / 8)) >> (8 * (i % 8))); }

std::uint64_t fnv1a(std::uint64_t h, const char* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) h = (h ^ std::uint8_t(p[i])) * 0x100000001b3ull;
  return h;
}
constexpr std::uint64_t fnv_basis = 0xcbf29ce484222325ull;

struct written {
  bool ok;
};
struct finish {};
struct side_result {
  std::size_t received = 0;
  std::uint64_t checksum = 0;
  std::uint64_t expected_checksum = 0;
  std::size_t first_difference = SIZE_MAX;
};

// One end of the transfer: a writer process sends n bytes of pattern
// `out` (then shuts its side down) while this process reads pattern `in`
// to end of file. The writer stays alive until the reading is done (its
// exit would close the socket if it used it last).
side_result transfer_side(net::stream& s, std::uint64_t out, std::uint64_t in, std::size_t n) {
  pid me = ember::self();
  net::stream* sp = &s;
  pid writer = ember::spawn([sp, me, out, n] {
    bool ok = true;
    try {
      std::string chunk(64 * 1024, '\0');
      for (std::size_t off = 0; off < n; off += chunk.size()) {
        std::size_t k = std::min(chunk.size(), n - off);
        for (std::size_t j = 0; j < k; ++j) chunk[j] = pattern_byte(out, off + j);
        sp->write(chunk.data(), k, 20s);
      }
      sp->shutdown(net::shutdown_how::write);
    } catch (const ember::error&) {
      ok = false;
    }
    ember::send(me, written{ok});
    ember::receive([](finish) {});
  });
  side_result r;
  r.checksum = r.expected_checksum = fnv_basis;
  std::vector<char> buf(64 * 1024);
  for (;;) {
    std::size_t k = s.read(buf.data(), buf.size(), 20s);
    if (k == 0) break;
    for (std::size_t j = 0; j < k; ++j) {
      char want = pattern_byte(in, r.received + j);
      if (r.first_difference == SIZE_MAX && buf[j] != want) r.first_difference = r.received + j;
      r.expected_checksum = fnv1a(r.expected_checksum, &want, 1);
    }
    r.checksum = fnv1a(r.checksum, buf.data(), k);
    r.received += k;
  }
  bool ok = ember::receive([](written w) { return w.ok; });
  ember::send(writer, finish{});
  if (!ok) r.first_difference = 0;
  return r;
}

std::string describe(const side_result& r) {
  return std::to_string(r.received) + " bytes" +
         (r.first_difference == SIZE_MAX ? ", identical" : ", differ at " + std::to_string(r.first_difference)) +
         (r.checksum == r.expected_checksum ? ", checksum ok" : ", checksum wrong");
}

TEST_P(net_load, megabytes_flow_both_ways_at_once_byte_for_byte) {
  const std::size_t n = EMBER_TEST_SANITIZED ? (2u << 20) : (8u << 20);
  auto got = in_process(rt(), [n] {
    auto p = connected_pair();
    pid me = ember::self();
    ember::spawn([s = std::move(p.server), me, n]() mutable { ember::send(me, transfer_side(s, 2, 1, n)); });
    side_result mine = transfer_side(p.client, 1, 2, n);
    side_result theirs = ember::receive([](side_result r) { return r; });
    return describe(mine) + " | " + describe(theirs);
  });
  std::string one = std::to_string(n) + " bytes, identical, checksum ok";
  EXPECT_EQ(got, one + " | " + one);
}

struct round_trips_done {
  int client;
  int ok;
};
struct lines_served {
  int lines;
};

TEST_P(net_load, hundreds_of_clients_each_make_many_line_round_trips_with_their_own_server) {
  const int clients = EMBER_TEST_SANITIZED ? 50 : 200;
  const int rounds = EMBER_TEST_SANITIZED ? 40 : 100;
  auto got = in_process(rt(), [clients, rounds] {
    auto l = net::listener::listen(net::address::loopback(0));
    net::address at = l.local_address();
    pid me = ember::self();
    for (int i = 0; i < clients; ++i)
      ember::spawn([at, me, i, rounds] {
        auto c = net::stream::connect(at, 20s);
        int ok = 0;
        for (int r = 0; r < rounds; ++r) {
          std::string line = std::to_string(i) + ":" + std::to_string(r) + ":" + std::string(std::size_t(r % 50), 'x');
          c.write(line + "\n", 20s);
          if (c.read_line(20s) == "echo " + line) ++ok;
        }
        ember::send(me, round_trips_done{i, ok});
      });
    for (int i = 0; i < clients; ++i)
      ember::spawn([conn = l.accept(20s), me]() mutable {
        int lines = 0;
        for (;;) {
          std::string line;
          try {
            line = conn.read_line(20s);
          } catch (const net::net_error& e) {
            if (e.code() == ember::errc::closed) break;  // the client is done
            throw;
          }
          conn.write("echo " + line + "\n", 20s);
          ++lines;
        }
        ember::send(me, lines_served{lines});
      });
    std::vector<int> ok(std::size_t(clients), -1);
    for (int i = 0; i < clients; ++i) {
      auto d = ember::receive([](const round_trips_done& d) { return d; });
      ok[std::size_t(d.client)] = d.ok;
    }
    int served = 0;
    for (int i = 0; i < clients; ++i) served += ember::receive([](const lines_served& s) { return s.lines; });
    int complete = int(std::count(ok.begin(), ok.end(), rounds));
    return std::to_string(complete) + " clients complete, " + std::to_string(served) + " lines served";
  });
  EXPECT_EQ(got, std::to_string(clients) + " clients complete, " + std::to_string(clients * rounds) + " lines served");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(net_load);

}  // namespace
