// ember::net — TCP, UDP and Unix-domain sockets for processes.
//
//   auto l = net::listener::listen(net::address::parse("127.0.0.1:7000"));
//   for (;;) {
//     net::stream conn = l.accept();
//     pid h = spawn([] { ... });          // or spawn_link
//     conn.give_to(h);                    // gen_tcp:controlling_process
//   }
//   // in the handler:  std::string line = conn.read_line(5s);  conn.write(line + "\n");
//
// Every operation suspends only the calling process (the scheduler thread
// runs others meanwhile; see src/sched/io_poller.hpp) and takes a timeout
// (infinity by default).
//
// Ownership. The objects are move-only handles: the one that holds a
// socket closes it when destroyed (or on close()). A socket also belongs
// to a process — the last one that used it, or that it was given to
// (give_to) — and is closed when that process exits by any path,
// including kill, a heap limit and a stack overflow, which end a process
// without running its destructors. So an acceptor can move a connection
// into the closure of the process it spawns, and that process owns it from
// its first operation. A socket is used by one process at a time (reads
// in one and writes in another are fine); active-mode messages go to its
// owner.
//
// Errors are thrown as net_error (an ember::error) whose code() is
// io_failed (sys_errno() says why: ECONNREFUSED, ECONNRESET...), timed_out
// or closed, and whose what() names the operation and the address:
//   "net: connect 127.0.0.1:9: Connection refused".
// A timeout or reset ends the operation; the socket stays usable (after a
// timeout) or can be closed. Uncaught, the error ends the process only.
//
// Active mode (gen_tcp's {active, once}): set_active_once() makes the next
// data arrive as a socket_data message (or socket_closed / socket_error)
// to the owner, so a gen_server can own a socket and serve other messages.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ember/core/error.hpp"
#include "ember/io/io_error.hpp"
#include "ember/core/pid.hpp"

namespace ember::detail {
struct io_handle;
}

namespace ember::net {

using timeout = std::chrono::milliseconds;
inline constexpr timeout infinity = timeout::max();

// An IPv4, IPv6 or Unix-domain socket address.
class address {
 public:
  address() = default;
  // "127.0.0.1:80", "[::1]:80", "0.0.0.0:0", "unix:/path/to/socket".
  // Numeric hosts only (resolve() looks names up); throws
  // error(invalid_argument) on anything else.
  static address parse(std::string_view text);
  static address ipv4(std::string_view ip, std::uint16_t port);
  static address ipv6(std::string_view ip, std::uint16_t port);
  static address loopback(std::uint16_t port) { return ipv4("127.0.0.1", port); }
  static address unix_path(std::string_view path);
  static address from_sockaddr(const sockaddr* sa, socklen_t len);

  int family() const noexcept { return reinterpret_cast<const sockaddr&>(storage_).sa_family; }
  std::uint16_t port() const noexcept;  // 0 for Unix addresses
  std::string to_string() const;        // as parse() takes it
  const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t size() const noexcept { return len_; }
  bool empty() const noexcept { return len_ == 0; }
  friend bool operator==(const address& a, const address& b) noexcept;

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

// Looks a host name up (getaddrinfo, on the blocking pool). Throws
// net_error(io_failed) if it cannot be resolved.
std::vector<address> resolve(std::string_view host, std::uint16_t port);

// The errors of this API (include/ember/io/io_error.hpp).
using net_error = ember::io_error;

// Names a socket in active-mode messages (compare with stream::id()).
using socket_id = std::uint64_t;

// Active mode: what the owner receives.
struct socket_data {
  socket_id socket;
  std::string data;
};
struct socket_closed {  // the peer closed its side (read returned end of file)
  socket_id socket;
};
struct socket_error {
  socket_id socket;
  int sys_errno;
  std::string what;
};

enum class shutdown_how { read = SHUT_RD, write = SHUT_WR, both = SHUT_RDWR };

// Base of the three handles: ownership, close, give_to, addresses.
class socket_handle {
 public:
  socket_handle() = default;
  socket_handle(socket_handle&& o) noexcept : h_(o.h_), gen_(o.gen_) { o.h_ = nullptr; }
  socket_handle& operator=(socket_handle&& o) noexcept;
  socket_handle(const socket_handle&) = delete;
  socket_handle& operator=(const socket_handle&) = delete;
  ~socket_handle();

  bool is_open() const noexcept;
  // Closes the socket (a no-op on a closed or moved-from one).
  void close();
  // Makes process `to` its owner (gen_tcp:controlling_process): its exit,
  // not this process's, closes the socket now, and active-mode messages go
  // to it. If `to` is dead (or dies before it runs again) the socket is
  // closed. The handle itself still has to reach `to` (a closure, or a
  // message wrapped in ember::shared).
  void give_to(pid to);
  socket_id id() const noexcept;
  address local_address() const;
  int native_handle() const;  // the descriptor

 protected:
  socket_handle(detail::io_handle* h, std::uint32_t gen) noexcept : h_(h), gen_(gen) {}
  detail::io_handle& use(const char* op) const;  // checks open and owner
  detail::io_handle* h_ = nullptr;
  std::uint32_t gen_ = 0;
};

// A connected byte stream: TCP or a Unix-domain stream socket.
class stream : public socket_handle {
 public:
  stream() = default;
  // Connects (gives up after `t`: timed_out).
  static stream connect(const address& to, timeout t = infinity);

  // Up to n bytes, as soon as any are there; 0 at end of file.
  std::size_t read(void* buf, std::size_t n, timeout t = infinity);
  // Exactly n bytes; closed if the peer closes first.
  void read_exact(void* buf, std::size_t n, timeout t = infinity);
  std::string read_exact(std::size_t n, timeout t = infinity);
  // One line, without its "\n" (nor a "\r" before it). At end of file: the
  // last unterminated line if there is one, else closed. A line longer
  // than max_length: error(invalid_argument) (the bytes stay buffered).
  std::string read_line(timeout t = infinity, std::size_t max_length = 1 << 20);
  // All of data (or an error; timed_out leaves an unknown part written).
  void write(std::string_view data, timeout t = infinity);
  void write(const void* data, std::size_t n, timeout t = infinity) {
    write(std::string_view(static_cast<const char*>(data), n), t);
  }
  void shutdown(shutdown_how how = shutdown_how::write);
  void set_nodelay(bool on);
  address peer_address() const;
  // The next data arrives as a message to the owner (see above). Bytes
  // already buffered by read_line come first, as one message.
  void set_active_once();

 private:
  friend class listener;
  using socket_handle::socket_handle;
};

struct listen_options {
  int backlog = 1024;
  bool reuseaddr = true;
  bool reuseport = false;
};

class listener : public socket_handle {
 public:
  listener() = default;
  // TCP, or Unix-domain for a unix: address (the path must not exist).
  static listener listen(const address& at, listen_options o = {});
  stream accept(timeout t = infinity);

 private:
  using socket_handle::socket_handle;
};

// Datagrams: UDP, or Unix-domain datagram sockets.
class datagram : public socket_handle {
 public:
  datagram() = default;
  static datagram bind(const address& at);
  // Sends one datagram (the whole of data, or an error).
  void send_to(std::string_view data, const address& to, timeout t = infinity);
  struct received {
    std::string data;
    address from;
  };
  // The next datagram (up to max_size bytes; the rest of a longer one is lost).
  received receive_from(timeout t = infinity, std::size_t max_size = 65536);

 private:
  using socket_handle::socket_handle;
};

}  // namespace ember::net
