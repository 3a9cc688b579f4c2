// ember::net (include/ember/io/net.hpp): sockets as runtime-owned handles.
//
// Every socket is an io_handle of the runtime's poller (type-stable,
// malloc'd read-ahead buffer) entered in its owner's resource list
// (core/resource.hpp), so the owner's exit closes it whatever the path.
// The user's object is (handle, generation): a stale object finds the
// generation moved on and reports `closed`; it never touches a reused
// descriptor. Operations are tried first and wait on the poller only on
// EAGAIN (src/sched/io_poller.hpp).
#include "ember/io/net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/os_errno.hpp"
#include "core/resource.hpp"
#include "ember/core/message.hpp"
#include "ember/core/process.hpp"
#include "ember/sched/blocking.hpp"
#include "sched/scheduler.hpp"

namespace ember::net {

using detail::io_dir;
using detail::io_handle;

namespace {

enum handle_kind : int { kind_stream = 1, kind_listener, kind_datagram };

std::string errno_text(int e) {
  char buf[128];
  return ::strerror_r(e, buf, sizeof buf);  // GNU: returns the text
}

// "net: <op> <address>: <errno text>"
[[noreturn]] void fail(errc code, int e, std::string_view op, const address* at, std::string_view why = {}) {
  std::string what = "net: ";
  what += op;
  if (at && !at->empty()) {
    what += ' ';
    what += at->to_string();
  }
  what += ": ";
  what += why.empty() ? errno_text(e) : std::string(why);
  throw net_error(code, e, what);
}

detail::runtime_node& runtime_of(const char* op) {
  detail::node* n = detail::current_node();
  if (!n || !in_process()) throw error(errc::not_in_process, std::string("net: ") + op + ": called outside a process");
  return static_cast<detail::runtime_node&>(*n);
}

std::int64_t deadline_of(timeout t) {
  if (t == infinity) return detail::no_deadline;
  std::int64_t now = detail::steady_now_ns();
  std::int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t).count();
  if (ns < 0) ns = 0;
  return ns > detail::no_deadline - now ? detail::no_deadline : now + ns;
}

int new_socket(int family, int type, const char* op, const address* at) {
  int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(errc::io_failed, detail::os_errno(), op, at);
  return fd;
}

// Registers fd with the poller and makes the calling process its owner.
io_handle* adopt_fd(detail::runtime_node& rt, int fd, int kind) {
  io_handle* h = rt.poller().open(fd);  // closes fd if it fails
  h->kind = kind;
  std::uint32_t gen = h->gen.load(std::memory_order_relaxed);
  h->owner.store(self().bits(), std::memory_order_release);
  try {
    detail::own_resource(h, gen);
  } catch (...) {
    h->release(gen);
    throw;
  }
  return h;
}

address peer_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

// The peer as remembered when the connection was made (a reset socket no
// longer has one), else as the kernel tells it.
address peer_of(const io_handle& h) {
  if (h.peer_len) return address::from_sockaddr(reinterpret_cast<const sockaddr*>(h.peer), socklen_t(h.peer_len));
  return peer_of(h.fd);
}

void remember_peer(io_handle& h, const sockaddr* sa, socklen_t len) {
  if (len <= 0 || std::size_t(len) > sizeof h.peer) return;
  std::memcpy(h.peer, sa, std::size_t(len));
  h.peer_len = unsigned(len);
}

address local_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

[[noreturn]] void fail_closed(const char* op) {
  throw net_error(errc::closed, EBADF, std::string("net: ") + op + ": the socket was closed");
}

// Waits for the handle; a passed deadline is a timed_out error, a close by
// another process meanwhile a closed one.
void wait_or_fail(io_handle& h, std::uint32_t gen, io_dir d, std::int64_t deadline, const char* op, bool peer) {
  bool ready = detail::io_wait(h, d, deadline);
  if (h.gen.load(std::memory_order_acquire) != gen) fail_closed(op);
  if (ready) return;
  address a = peer ? peer_of(h) : local_of(h.fd);
  fail(errc::timed_out, 0, op, &a, "timed out");
}

// The read-ahead buffer: room for at least `want` more bytes at its end.
void reserve_tail(io_handle& h, std::size_t want) {
  if (h.buf_begin == h.buf_end) h.buf_begin = h.buf_end = 0;
  if (h.buf_cap - h.buf_end >= want) return;
  if (h.buf_begin > 0) {
    std::memmove(h.buf, h.buf + h.buf_begin, h.buf_end - h.buf_begin);
    h.buf_end -= h.buf_begin;
    h.buf_begin = 0;
    if (h.buf_cap - h.buf_end >= want) return;
  }
  std::size_t cap = h.buf_cap ? h.buf_cap : 4096;
  while (cap - h.buf_end < want) cap *= 2;
  char* b = static_cast<char*>(std::realloc(h.buf, cap));
  if (!b) throw std::bad_alloc();
  h.buf = b;
  h.buf_cap = cap;
}

std::size_t take_buffered(io_handle& h, void* out, std::size_t n) {
  std::size_t have = h.buf_end - h.buf_begin;
  if (have == 0 || n == 0) return 0;
  std::size_t k = have < n ? have : n;
  std::memcpy(out, h.buf + h.buf_begin, k);
  h.buf_begin += k;
  if (h.buf_begin == h.buf_end) h.buf_begin = h.buf_end = 0;
  return k;
}

socket_id id_of(const io_handle& h, std::uint32_t gen) { return std::uint64_t(h.index) << 32 | gen; }

void send_to_owner(io_handle& h, detail::envelope* e) {
  detail::send_envelope(detail::current_node(), pid::from_bits(h.owner.load(std::memory_order_acquire)), e);
}

// Active mode's reader: on a poller thread (or the owner's, if it armed a
// ready socket). One message per arming.
void active_read(io_handle& h) noexcept {
  socket_id id = id_of(h, h.gen.load(std::memory_order_acquire));
  for (;;) {
    std::string data;
    ssize_t r;
    int e = 0;
    try {
      data.resize(65536);
      r = ::recv(h.fd, data.data(), data.size(), 0);
      e = detail::os_errno();
      if (r > 0) {
        data.resize(std::size_t(r));
        send_to_owner(h, detail::make_envelope(socket_data{id, std::move(data)}));
      } else if (r == 0) {
        send_to_owner(h, detail::make_envelope(socket_closed{id}));
      } else if (e == EINTR) {
        continue;
      } else if (e == EAGAIN || e == EWOULDBLOCK) {
        if (detail::io_active_done(h, true)) return;
        continue;  // an edge came while it read
      } else {
        send_to_owner(h, detail::make_envelope(socket_error{id, e, "net: read: " + errno_text(e)}));
      }
    } catch (...) {
      // No memory for the message: the socket stays ready; the next
      // set_active_once reads again.
    }
    detail::io_active_done(h, false);
    return;
  }
}

}  // namespace

// ------------------------------------------------------------- address

address address::from_sockaddr(const sockaddr* sa, socklen_t len) {
  address a;
  if (len > socklen_t(sizeof a.storage_)) len = sizeof a.storage_;
  std::memcpy(&a.storage_, sa, std::size_t(len));
  a.len_ = len;
  return a;
}

address address::ipv4(std::string_view ip, std::uint16_t port) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  std::string s(ip);
  if (::inet_pton(AF_INET, s.c_str(), &in.sin_addr) != 1)
    throw error(errc::invalid_argument, "net: not an IPv4 address: '" + s + "'");
  return from_sockaddr(reinterpret_cast<sockaddr*>(&in), sizeof in);
}

address address::ipv6(std::string_view ip, std::uint16_t port) {
  sockaddr_in6 in{};
  in.sin6_family = AF_INET6;
  in.sin6_port = htons(port);
  std::string s(ip);
  if (::inet_pton(AF_INET6, s.c_str(), &in.sin6_addr) != 1)
    throw error(errc::invalid_argument, "net: not an IPv6 address: '" + s + "'");
  return from_sockaddr(reinterpret_cast<sockaddr*>(&in), sizeof in);
}

address address::unix_path(std::string_view path) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof un.sun_path)
    throw error(errc::invalid_argument, "net: a Unix socket path must have 1 to " +
                                            std::to_string(sizeof un.sun_path - 1) + " bytes");
  std::memcpy(un.sun_path, path.data(), path.size());
  return from_sockaddr(reinterpret_cast<sockaddr*>(&un),
                       socklen_t(offsetof(sockaddr_un, sun_path) + path.size() + 1));
}

address address::parse(std::string_view text) {
  if (text.starts_with("unix:")) return unix_path(text.substr(5));
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size())
    throw error(errc::invalid_argument, "net: an address is host:port, [v6]:port or unix:path, not '" +
                                            std::string(text) + "'");
  std::string_view host = text.substr(0, colon), port_text = text.substr(colon + 1);
  unsigned long port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9' || port > 65535) {
      port = 65536;
      break;
    }
    port = port * 10 + unsigned(c - '0');
  }
  if (port > 65535) throw error(errc::invalid_argument, "net: bad port in '" + std::string(text) + "'");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    return ipv6(host.substr(1, host.size() - 2), std::uint16_t(port));
  return ipv4(host, std::uint16_t(port));
}

std::uint16_t address::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(storage_).sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(storage_).sin6_port);
  return 0;
}

std::string address::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  switch (family()) {
    case AF_INET:
      ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(storage_).sin_addr, buf, sizeof buf);
      return std::string(buf) + ":" + std::to_string(port());
    case AF_INET6:
      ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(storage_).sin6_addr, buf, sizeof buf);
      return "[" + std::string(buf) + "]:" + std::to_string(port());
    case AF_UNIX: {
      const auto& un = reinterpret_cast<const sockaddr_un&>(storage_);
      std::size_t n = len_ > socklen_t(offsetof(sockaddr_un, sun_path)) ? len_ - offsetof(sockaddr_un, sun_path) : 0;
      std::string path(un.sun_path, ::strnlen(un.sun_path, n));
      return "unix:" + path;
    }
    default:
      return len_ == 0 ? "(none)" : "(family " + std::to_string(family()) + ")";
  }
}

bool operator==(const address& a, const address& b) noexcept {
  return a.len_ == b.len_ && std::memcmp(&a.storage_, &b.storage_, std::size_t(a.len_)) == 0;
}

std::vector<address> resolve(std::string_view host, std::uint16_t port) {
  std::string name(host);
  return ember::blocking([name, port] {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = ::getaddrinfo(name.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (rc != 0) throw net_error(errc::io_failed, 0, "net: resolve " + name + ": " + ::gai_strerror(rc));
    std::vector<address> out;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) out.push_back(address::from_sockaddr(ai->ai_addr, ai->ai_addrlen));
    ::freeaddrinfo(res);
    return out;
  });
}

// ------------------------------------------------------- socket_handle

socket_handle& socket_handle::operator=(socket_handle&& o) noexcept {
  if (this != &o) {
    try {
      close();
    } catch (...) {
    }
    h_ = o.h_;
    gen_ = o.gen_;
    o.h_ = nullptr;
  }
  return *this;
}

socket_handle::~socket_handle() {
  if (!h_ || h_->gen.load(std::memory_order_acquire) != gen_) return;
  if (in_process()) detail::disown_resource(h_, gen_);
  h_->release(gen_);
}

bool socket_handle::is_open() const noexcept {
  return h_ && h_->gen.load(std::memory_order_acquire) == gen_;
}

io_handle& socket_handle::use(const char* op) const {
  runtime_of(op);
  if (!is_open()) throw net_error(errc::closed, EBADF, std::string("net: ") + op + ": the socket is closed");
  std::uint64_t me = self().bits();
  if (h_->owner.load(std::memory_order_acquire) != me) {
    // Used by another process than its owner (it was moved into a spawned
    // process's closure, say): the user is the owner from now on.
    h_->owner.store(me, std::memory_order_release);
    detail::own_resource(h_, gen_);
  }
  check();  // one reduction: a process looping on a busy socket still yields
  return *h_;
}

void socket_handle::close() {
  if (!h_) return;
  if (h_->gen.load(std::memory_order_acquire) == gen_) {
    if (in_process()) detail::disown_resource(h_, gen_);
    h_->release(gen_);
  }
  h_ = nullptr;
}

void socket_handle::give_to(pid to) {
  io_handle& h = use("give_to");
  h.owner.store(to.bits(), std::memory_order_release);
  detail::give_resource(&h, gen_, to);
}

socket_id socket_handle::id() const noexcept { return h_ ? id_of(*h_, gen_) : 0; }

address socket_handle::local_address() const { return local_of(use("local_address").fd); }

int socket_handle::native_handle() const { return use("native_handle").fd; }

// -------------------------------------------------------------- stream

stream stream::connect(const address& to, timeout t) {
  auto& rt = runtime_of("connect");
  if (to.empty()) throw error(errc::invalid_argument, "net: connect: no address");
  std::int64_t deadline = deadline_of(t);
  int fd = new_socket(to.family(), SOCK_STREAM, "connect", &to);
  io_handle* h = adopt_fd(rt, fd, kind_stream);
  stream s(h, h->gen.load(std::memory_order_relaxed));
  remember_peer(*h, to.data(), to.size());
  int rc;
  do rc = ::connect(fd, to.data(), to.size());
  while (rc != 0 && detail::os_errno() == EINTR);
  if (rc == 0) return s;
  // EAGAIN is not "in progress": no local port left (TCP), or the
  // listener's queue is full (Unix); no event would ever end the wait.
  if (int e = detail::os_errno(); e != EINPROGRESS) fail(errc::io_failed, e, "connect", &to);
  std::uint32_t gen = h->gen.load(std::memory_order_relaxed);
  wait_or_fail(*h, gen, io_dir::write, deadline, "connect", true);
  for (;;) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == 0 || err == EINPROGRESS || err == EALREADY) {
      // Writable with no error can also be a spurious wake: connected?
      sockaddr_storage ss;
      socklen_t sl = sizeof ss;
      if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &sl) == 0) return s;
      if (int e = detail::os_errno(); e != ENOTCONN) fail(errc::io_failed, e, "connect", &to);
      wait_or_fail(*h, gen, io_dir::write, deadline, "connect", true);
      continue;
    }
    fail(errc::io_failed, err, "connect", &to);
  }
}

std::size_t stream::read(void* buf, std::size_t n, timeout t) {
  io_handle& h = use("read");
  if (std::size_t k = take_buffered(h, buf, n)) return k;
  if (n == 0) return 0;
  std::int64_t deadline = -1;
  for (;;) {
    ssize_t r = ::recv(h.fd, buf, n, 0);
    if (r >= 0) return std::size_t(r);
    int e = detail::os_errno();
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) {
      if (h.gen.load(std::memory_order_acquire) != gen_) fail_closed("read");  // closed under us
      address peer = peer_of(h);
      fail(errc::io_failed, e, "read", &peer);
    }
    if (deadline < 0) deadline = deadline_of(t);
    wait_or_fail(h, gen_, io_dir::read, deadline, "read", true);
  }
}

void stream::read_exact(void* buf, std::size_t n, timeout t) {
  io_handle& h = use("read_exact");
  auto* out = static_cast<char*>(buf);
  std::size_t got = take_buffered(h, out, n);
  std::int64_t deadline = -1;
  while (got < n) {
    ssize_t r = ::recv(h.fd, out + got, n - got, 0);
    if (r > 0) {
      got += std::size_t(r);
      continue;
    }
    if (r == 0) {
      address peer = peer_of(h);
      fail(errc::closed, 0, "read_exact", &peer,
           "connection closed after " + std::to_string(got) + " of " + std::to_string(n) + " bytes");
    }
    int e = detail::os_errno();
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) {
      if (h.gen.load(std::memory_order_acquire) != gen_) fail_closed("read_exact");  // closed under us
      address peer = peer_of(h);
      fail(errc::io_failed, e, "read_exact", &peer);
    }
    if (deadline < 0) deadline = deadline_of(t);
    wait_or_fail(h, gen_, io_dir::read, deadline, "read_exact", true);
  }
}

std::string stream::read_exact(std::size_t n, timeout t) {
  std::string s(n, '\0');
  read_exact(s.data(), n, t);
  return s;
}

std::string stream::read_line(timeout t, std::size_t max_length) {
  io_handle& h = use("read_line");
  std::size_t scanned = h.buf_begin;
  std::int64_t deadline = -1;
  for (;;) {
    if (void* nl = std::memchr(h.buf + scanned, '\n', h.buf_end - scanned)) {
      std::size_t end = std::size_t(static_cast<char*>(nl) - h.buf);
      std::size_t len = end - h.buf_begin;
      if (len > 0 && h.buf[end - 1] == '\r') --len;
      if (len > max_length) {
        address peer = peer_of(h);
        throw error(errc::invalid_argument, "net: read_line " + peer.to_string() + ": a line of " +
                                                std::to_string(len) + " bytes, longer than " +
                                                std::to_string(max_length));
      }
      std::string line(h.buf + h.buf_begin, len);
      h.buf_begin = end + 1;
      if (h.buf_begin == h.buf_end) h.buf_begin = h.buf_end = 0;
      return line;
    }
    // Past max_length with no end of line (a "\r" may still end it).
    std::size_t pending = h.buf_end - h.buf_begin;
    if (pending > max_length && !(pending == max_length + 1 && h.buf[h.buf_end - 1] == '\r')) {
      address peer = peer_of(h);
      throw error(errc::invalid_argument, "net: read_line " + peer.to_string() + ": no end of line within " +
                                              std::to_string(max_length) + " bytes");
    }
    std::size_t offset = h.buf_end - h.buf_begin;  // what is scanned, relative to the line
    reserve_tail(h, 4096);
    scanned = h.buf_begin + offset;
    ssize_t r = ::recv(h.fd, h.buf + h.buf_end, h.buf_cap - h.buf_end, 0);
    if (r > 0) {
      h.buf_end += std::size_t(r);
      continue;
    }
    if (r == 0) {
      if (h.buf_end == h.buf_begin) {
        address peer = peer_of(h);
        fail(errc::closed, 0, "read_line", &peer, "connection closed");
      }
      std::string rest(h.buf + h.buf_begin, h.buf_end - h.buf_begin);
      h.buf_begin = h.buf_end = 0;
      return rest;
    }
    int e = detail::os_errno();
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) {
      if (h.gen.load(std::memory_order_acquire) != gen_) fail_closed("read_line");  // closed under us
      address peer = peer_of(h);
      fail(errc::io_failed, e, "read_line", &peer);
    }
    if (deadline < 0) deadline = deadline_of(t);
    wait_or_fail(h, gen_, io_dir::read, deadline, "read_line", true);
  }
}

void stream::write(std::string_view data, timeout t) {
  io_handle& h = use("write");
  std::size_t done = 0;
  std::int64_t deadline = -1;
  while (done < data.size()) {
    ssize_t r = ::send(h.fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (r >= 0) {
      done += std::size_t(r);
      continue;
    }
    int e = detail::os_errno();
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) {
      if (h.gen.load(std::memory_order_acquire) != gen_) fail_closed("write");  // closed under us
      address peer = peer_of(h);
      fail(errc::io_failed, e, "write", &peer);
    }
    if (deadline < 0) deadline = deadline_of(t);
    wait_or_fail(h, gen_, io_dir::write, deadline, "write", true);
  }
}

void stream::shutdown(shutdown_how how) {
  io_handle& h = use("shutdown");
  if (::shutdown(h.fd, int(how)) != 0) {
    address peer = peer_of(h);
    fail(errc::io_failed, detail::os_errno(), "shutdown", &peer);
  }
}

void stream::set_nodelay(bool on) {
  io_handle& h = use("set_nodelay");
  if (local_of(h.fd).family() == AF_UNIX) return;  // no Nagle there
  int v = on ? 1 : 0;
  if (::setsockopt(h.fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0)
    fail(errc::io_failed, detail::os_errno(), "set_nodelay", nullptr);
}

address stream::peer_address() const {
  io_handle& h = use("peer_address");
  address a = peer_of(h);
  if (a.empty()) fail(errc::io_failed, detail::os_errno(), "peer_address", nullptr);
  return a;
}

void stream::set_active_once() {
  io_handle& h = use("set_active_once");
  if (h.buf_end > h.buf_begin) {
    std::string data(h.buf + h.buf_begin, h.buf_end - h.buf_begin);
    h.buf_begin = h.buf_end = 0;
    send(self(), socket_data{id_of(h, gen_), std::move(data)});
    return;
  }
  h.on_active = &active_read;
  detail::io_arm_active(h);
}

// ------------------------------------------------------------ listener

listener listener::listen(const address& at, listen_options o) {
  auto& rt = runtime_of("listen");
  if (at.empty()) throw error(errc::invalid_argument, "net: listen: no address");
  if (o.backlog <= 0) throw error(errc::invalid_argument, "net: listen: backlog must be positive");
  int fd = new_socket(at.family(), SOCK_STREAM, "listen", &at);
  io_handle* h = adopt_fd(rt, fd, kind_listener);
  listener l(h, h->gen.load(std::memory_order_relaxed));
  int one = 1;
  if (at.family() != AF_UNIX) {
    if (o.reuseaddr && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
      fail(errc::io_failed, detail::os_errno(), "listen (SO_REUSEADDR)", &at);
    if (o.reuseport && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
      fail(errc::io_failed, detail::os_errno(), "listen (SO_REUSEPORT)", &at);
  }
  if (::bind(fd, at.data(), at.size()) != 0) fail(errc::io_failed, detail::os_errno(), "bind", &at);
  if (::listen(fd, o.backlog) != 0) fail(errc::io_failed, detail::os_errno(), "listen", &at);
  return l;
}

stream listener::accept(timeout t) {
  io_handle& h = use("accept");
  auto& rt = runtime_of("accept");
  std::int64_t deadline = -1;
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(h.fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      io_handle* c = adopt_fd(rt, fd, kind_stream);
      remember_peer(*c, reinterpret_cast<sockaddr*>(&ss), len);
      return stream(c, c->gen.load(std::memory_order_relaxed));
    }
    int e = detail::os_errno();
    if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;  // that connection is gone: the next
    if (e != EAGAIN && e != EWOULDBLOCK) {
      if (h.gen.load(std::memory_order_acquire) != gen_) fail_closed("accept");  // closed under us
      address a = local_of(h.fd);
      fail(errc::io_failed, e, "accept", &a);
    }
    if (deadline < 0) deadline = deadline_of(t);
    wait_or_fail(h, gen_, io_dir::read, deadline, "accept", false);
  }
}

// ------------------------------------------------------------ datagram

datagram datagram::bind(const address& at) {
  auto& rt = runtime_of("bind");
  if (at.empty()) throw error(errc::invalid_argument, "net: bind: no address");
  int fd = new_socket(at.family(), SOCK_DGRAM, "bind", &at);
  io_handle* h = adopt_fd(rt, fd, kind_datagram);
  datagram d(h, h->gen.load(std::memory_order_relaxed));
  if (::bind(fd, at.data(), at.size()) != 0) fail(errc::io_failed, detail::os_errno(), "bind", &at);
  return d;
}

void datagram::send_to(std::string_view data, const address& to, timeout t) {
  io_handle& h = use("send_to");
  std::int64_t deadline = -1;
  for (;;) {
    ssize_t r = ::sendto(h.fd, data.data(), data.size(), MSG_NOSIGNAL, to.data(), to.size());
    if (r >= 0) return;
    int e = detail::os_errno();
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) {
      if (h.gen.load(std::memory_order_acquire) != gen_) fail_closed("send_to");  // closed under us
      fail(errc::io_failed, e, "send_to", &to);
    }
    if (deadline < 0) deadline = deadline_of(t);
    bool ready = detail::io_wait(h, io_dir::write, deadline);
    if (h.gen.load(std::memory_order_acquire) != gen_) fail_closed("send_to");
    if (!ready) fail(errc::timed_out, 0, "send_to", &to, "timed out");
  }
}

datagram::received datagram::receive_from(timeout t, std::size_t max_size) {
  io_handle& h = use("receive_from");
  received out;
  out.data.resize(max_size);
  std::int64_t deadline = -1;
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ssize_t r = ::recvfrom(h.fd, out.data.data(), out.data.size(), 0, reinterpret_cast<sockaddr*>(&ss), &len);
    if (r >= 0) {
      out.data.resize(std::size_t(r));
      out.from = address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
      return out;
    }
    int e = detail::os_errno();
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) {
      if (h.gen.load(std::memory_order_acquire) != gen_) fail_closed("receive_from");  // closed under us
      address a = local_of(h.fd);
      fail(errc::io_failed, e, "receive_from", &a);
    }
    if (deadline < 0) deadline = deadline_of(t);
    wait_or_fail(h, gen_, io_dir::read, deadline, "receive_from", false);
  }
}

}  // namespace ember::net
