// ember::net under load: ten thousand connections opened and closed in
// batches by many processes at once leave no descriptor and no socket
// behind.
#include <gtest/gtest.h>

#include <dirent.h>

#include <string>
#include <vector>

#include "ember/io/net.hpp"
#include "ember_test.hpp"

namespace {

using namespace ember_test;
using namespace std::chrono_literals;
using ember::pid;
namespace net = ember::net;

class net_stress : public runtime_test {};

// The entries of /proc/self/fd: the descriptors this OS process has open.
std::size_t open_descriptors() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return 0;
  std::size_t n = 0;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

struct batches_done {
  int client;
  int echoed;
};
struct connection_served {
  bool saw_end;  // its client's end of file, after the echo
};

// 50 client processes each open a batch of 10 connections, send a line on
// each, read it back and close them all, 20 times: 10,000 connections (8
// times, 4,000, in sanitizer builds, to stay within seconds there). Each
// accepted connection is served by a process of its own that echoes one
// line and reports whether it then saw its client's end of file.
TEST_P(net_stress, ten_thousand_connections_opened_and_closed_in_batches_leave_no_descriptor_or_socket_behind) {
  constexpr int clients = 50, batch = 10, batches = EMBER_TEST_SANITIZED ? 8 : 20;
  constexpr int total = clients * batch * batches;
  const std::size_t before = open_descriptors();
  ASSERT_GT(before, 0u);

  auto got = in_process(rt(), [] {
    auto l = net::listener::listen(net::address::loopback(0));
    net::address at = l.local_address();
    pid me = ember::self();
    for (int c = 0; c < clients; ++c)
      ember::spawn([at, me, c] {
        int echoed = 0;
        std::vector<net::stream> open;
        open.reserve(batch);
        for (int b = 0; b < batches; ++b) {
          for (int k = 0; k < batch; ++k) open.push_back(net::stream::connect(at, 20s));
          for (int k = 0; k < batch; ++k)
            open[std::size_t(k)].write(std::to_string(c) + "/" + std::to_string(b) + "/" + std::to_string(k) + "\n", 20s);
          for (int k = 0; k < batch; ++k)
            if (open[std::size_t(k)].read_line(20s) == std::to_string(c) + "/" + std::to_string(b) + "/" + std::to_string(k))
              ++echoed;
          open.clear();  // closes the batch
        }
        ember::send(me, batches_done{c, echoed});
      });
    for (int i = 0; i < total; ++i)
      ember::spawn([conn = l.accept(20s), me]() mutable {
        bool saw_end = false;
        try {
          conn.write(conn.read_line(10s) + "\n", 10s);
          char b[1];
          saw_end = conn.read(b, 1, 10s) == 0;  // the client closed
        } catch (const ember::error&) {
        }
        ember::send(me, connection_served{saw_end});
      });
    int echoed = 0, ended = 0;
    for (int c = 0; c < clients; ++c) echoed += ember::receive([](const batches_done& d) { return d.echoed; });
    for (int i = 0; i < total; ++i) ended += ember::receive([](connection_served s) { return s.saw_end ? 1 : 0; });
    return std::to_string(echoed) + " lines echoed, " + std::to_string(ended) + " ends of file seen";
  });
  EXPECT_EQ(got, std::to_string(total) + " lines echoed, " + std::to_string(total) + " ends of file seen");

  ASSERT_TRUE(rt().wait_for(hang_limit));
  EXPECT_TRUE(eventually([&] { return rt().stats().sockets_open == 0; }))
      << rt().stats().sockets_open << " sockets still open";
  EXPECT_EQ(open_descriptors(), before);
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(net_stress);

}  // namespace
