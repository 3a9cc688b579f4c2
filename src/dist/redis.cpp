// ember::redis — a Redis client whose every wait suspends only its process.
//
// Vocabulary. A *connection* is one TCP stream to one server; a *client*
// is a set of connections plus what it knows of the servers' topology
// (standalone, or a cluster's map from the 16384 hash slots to masters); a
// *command* is a vector of byte strings, name first; a *reply* is the RESP
// value the server answers with; a *redirection* is a -MOVED or -ASK error
// reply by which a cluster node says that another node owns the key's slot.
//
// Protocol: hiredis, and only its codec. Commands are encoded with
// redisFormatCommandArgv (binary-safe RESP arrays of bulk strings) into the
// connection's output buffer; replies are decoded by a redisReader fed
// with whatever the socket gave, and each complete redisReply is copied
// into a `reply` and freed at once. hiredis is the reference codec
// (DESIGN.md: never write by hand what a kept library does well), but its
// own I/O (redisContext, blocking sockets, or its async API with an event
// library adapter) would either block a scheduler thread or need a second
// event loop beside ember's poller. So all I/O goes through net::stream:
// a read that finds nothing suspends the process until the poller sees
// the socket readable, and the scheduler runs others meanwhile. That is
// also why a command that blocks in the server (BLPOP, XREADGROUP BLOCK)
// costs nothing but its own process's wait. Reads take up to 16 KiB at a
// time (hiredis's own read size, and its reader's idle-buffer limit) and
// feed them to the reader whole; one read often completes many pipelined
// replies, which receive() then hands out without reading again.
//
// Connection state, and why a failure closes it. A connection holds the
// stream, the reader (with any partial reply), the unwritten output and
// the names of the commands whose replies are still to come (for error
// messages). Replies are matched to commands by order only; after a
// timeout, an I/O error or a protocol error, the number of replies still
// on their way is unknown, so the connection closes itself: a late reply
// can never be read as the answer to a later command. Redis buffers
// replies and keeps reading while a client writes, so a pipeline is
// written whole before its replies are read, without deadlock.
//
// Ownership and memory. The stream belongs to the process that last used
// it and is closed when that process exits (net.hpp). So that a
// connection can move to another process as a stream can (a dedicated
// connection made by one process for a worker it spawns), its own memory
// (state, output buffer, read buffer, pending names) is allocated in the
// global heap (global_heap_scope), never in a process heap that could be
// reclaimed under it; the replies it returns are in the caller's heap.
// The hiredis reader and the replies it builds are malloc'd anyway
// (hiredis 0.14 has no allocator hooks). All of it is freed by
// destructors, so a process ended without unwinding (heap limit, stack
// overflow) leaks its connections (a few hundred bytes plus buffers) — as
// every global-heap object held by such a process does (README, heap
// limits). A client's memory (maps, addresses) is in the heap of the
// process that made it: a client is used by that process only.
//
// Cluster routing (client). On first use, and again after any failure
// that may mean the topology changed (a lost connection, -MOVED,
// -CLUSTERDOWN), the client asks a known master or a seed for CLUSTER
// SLOTS. An array answer means a cluster: each entry [first, last,
// [ip, port, id], replicas...] sets slot_owner[first..last] to the
// master's index in `masters` (an empty or "?" ip means "the address you
// asked"). An error answer (cluster support disabled) means a standalone
// server: every command goes to it. A command goes to the master owning
// key_slot(args[key_index]); commands without a key go to any master. One
// connection per server address is kept in `nodes`; its entries are never
// erased (connection_for_key hands out references), a failed one is
// reconnected in place.
//
// Redirections and retries. -MOVED <slot> <addr>: the slot's entry is set
// to addr, the map is marked stale (refreshed before the next attempt),
// and the command goes again at once, to addr (so a command whose
// key_index names no key still ends up where its key is). -ASK <slot>
// <addr>: the next attempt goes to addr, the command preceded by ASKING
// (the slot is being migrated; the map is not changed). -TRYAGAIN, -CLUSTERDOWN,
// -LOADING (and, in a cluster, -MASTERDOWN and -READONLY, seen around a
// failover) and connection failures are retried after a backoff:
// backoff_min, doubling up to backoff_max, spent in ember::sleep_for so
// the process is suspended (never a busy loop; after five redirections in
// a row a redirection backs off too). Every command has a deadline,
// command_timeout from its start, which bounds the attempts, the waits and
// each attempt's I/O; past it (or after max_attempts) the client throws
// error(unavailable) naming the command and the last failure — the name
// only, never the arguments, which may be secrets.
//
// What is sent again. A command answered with a redirection or a
// retryable error was not run, so it is sent again wherever it must go.
// A command whose connection failed after it was written may have run: it
// is sent again only if the caller says it is idempotent (the default,
// since most commands are: SET, GET, HSET...); otherwise the client throws
// unavailable at once saying so. A pipeline whose connection failed is
// resent whole (a pipeline may carry connection state: MULTI ... EXEC),
// and so is one containing MULTI when part of it was redirected (the
// server then aborted the transaction). Pipelines need all their keys in
// one slot, checked before anything is sent, so one node can run them.
//
// Limits: RESP2 only (no HELLO 3: hiredis 0.14's reader knows no RESP3
// types); replies nested deeper than hiredis 0.14's reader allows (7
// levels) are a protocol error; no TLS, no AUTH option (send AUTH as a
// command on a connection; a client would need it per connection).
//
// Rejected: hiredis-cluster (another dependency, its own blocking I/O);
// one connection per command (a TCP handshake per command); refreshing the
// slot map on a timer (CLUSTER SLOTS costs the server; redirections say
// when it is needed); reading byte by byte to find reply boundaries (a
// system call per byte; the reader finds them in a chunk).
#include "ember/dist/redis.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <utility>

#include "ember/core/error.hpp"
#include "ember/core/heap.hpp"
#include "ember/io/io_error.hpp"
#include "ember/io/net.hpp"
#include "ember/sched/timer.hpp"

namespace ember::redis {

namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t read_chunk = 16 * 1024;
constexpr std::uint16_t slot_count = 16384;
constexpr std::uint16_t no_owner = 0xFFFF;

// ------------------------------------------------------------------ CRC16

// CRC16-CCITT as XMODEM computes it (polynomial 0x1021, initial value 0,
// no reflection, no final xor): the checksum of Redis Cluster's key slots.
constexpr std::array<std::uint16_t, 256> make_crc16_table() {
  std::array<std::uint16_t, 256> t{};
  for (unsigned i = 0; i < 256; ++i) {
    unsigned crc = i << 8;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
    t[i] = static_cast<std::uint16_t>(crc);
  }
  return t;
}
constexpr auto crc16_table = make_crc16_table();

std::uint16_t crc16(std::string_view bytes) noexcept {
  std::uint16_t crc = 0;
  for (unsigned char c : bytes)
    crc = static_cast<std::uint16_t>((crc << 8) ^ crc16_table[((crc >> 8) ^ c) & 0xFF]);
  return crc;
}

// ------------------------------------------------------------------ time

// A point after which an operation gives up; `infinite` for net::infinity.
struct deadline {
  clock::time_point at{};
  bool infinite = false;

  explicit deadline(milliseconds t) {
    if (t >= milliseconds(std::chrono::hours(24 * 365 * 100))) {
      infinite = true;
    } else {
      at = clock::now() + std::max(t, milliseconds(0));
    }
  }
  net::timeout remaining() const {
    if (infinite) return net::infinity;
    auto left = std::chrono::ceil<milliseconds>(at - clock::now());
    return std::max(left, milliseconds(0));
  }
  bool passed() const { return !infinite && clock::now() >= at; }
};

std::string ms_text(milliseconds t) { return std::to_string(t.count()) + " ms"; }

// ------------------------------------------------------------------ text

// A command's name for messages: printable, bounded; never its arguments.
std::string name_of(std::string_view name) {
  std::string out;
  for (char c : name.substr(0, 32)) out += std::isprint(static_cast<unsigned char>(c)) ? c : '?';
  if (name.size() > 32) out += "...";
  return out.empty() ? std::string("(empty)") : out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool starts_with_word(std::string_view s, std::string_view word) {
  return s.substr(0, word.size()) == word && (s.size() == word.size() || s[word.size()] == ' ');
}

// The why of an I/O error without net's prefix: "Connection refused".
std::string io_reason(const io_error& e, net::timeout t) {
  if (e.code() == errc::timed_out) return t == net::infinity ? "timed out" : "timed out after " + ms_text(t);
  if (e.code() == errc::closed) return "the connection was closed";
  if (e.sys_errno() != 0) {
    char buf[128];
    return ::strerror_r(e.sys_errno(), buf, sizeof buf);
  }
  return e.what();
}

void append_quoted(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\a': out += "\\a"; break;
      case '\b': out += "\\b"; break;
      default:
        if (std::isprint(c)) {
          out += static_cast<char>(c);
        } else {
          out += "\\x";
          out += hex[c >> 4];
          out += hex[c & 0xF];
        }
    }
  }
  out += '"';
}

void format_reply(const reply& r, std::string& out, std::size_t indent) {
  switch (r.kind) {
    case reply::type::nil: out += "(nil)"; return;
    case reply::type::status: out += r.str; return;
    case reply::type::error: out += "(error) " + r.str; return;
    case reply::type::integer: out += "(integer) " + std::to_string(r.integer); return;
    case reply::type::string: append_quoted(out, r.str); return;
    case reply::type::array: break;
  }
  if (r.elements.empty()) {
    out += "(empty array)";
    return;
  }
  std::size_t width = std::to_string(r.elements.size()).size();
  for (std::size_t i = 0; i < r.elements.size(); ++i) {
    if (i > 0) out += '\n' + std::string(indent, ' ');
    std::string number = std::to_string(i + 1);
    std::string prefix = std::string(width - number.size(), ' ') + number + ") ";
    out += prefix;
    format_reply(r.elements[i], out, indent + prefix.size());
  }
}

// ------------------------------------------------------------------ codec

struct reader_free {
  void operator()(redisReader* r) const noexcept { redisReaderFree(r); }
};
using reader_ptr = std::unique_ptr<redisReader, reader_free>;

struct reply_free {
  void operator()(void* r) const noexcept { freeReplyObject(r); }
};

// Copies hiredis's reply tree into ours. nullopt for a type RESP2 lacks.
std::optional<reply> from_hiredis(const redisReply* r) {
  reply out;
  if (!r) return out;  // nil
  switch (r->type) {
    case REDIS_REPLY_NIL: return out;
    case REDIS_REPLY_STATUS: out.kind = reply::type::status; break;
    case REDIS_REPLY_ERROR: out.kind = reply::type::error; break;
    case REDIS_REPLY_STRING: out.kind = reply::type::string; break;
    case REDIS_REPLY_INTEGER:
      out.kind = reply::type::integer;
      out.integer = r->integer;
      return out;
    case REDIS_REPLY_ARRAY:
      out.kind = reply::type::array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) {
        auto e = from_hiredis(r->element[i]);
        if (!e) return std::nullopt;
        out.elements.push_back(std::move(*e));
      }
      return out;
    default: return std::nullopt;
  }
  out.str.assign(r->str, r->len);
  return out;
}

// Appends args as one RESP command to out.
template <class Args>
void encode(std::string& out, const Args& args) {
  std::size_t n = std::size(args);
  if (n == 0) throw error(errc::invalid_argument, "redis: an empty command (a command needs at least its name)");
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(n);
  lens.reserve(n);
  for (const auto& a : args) {
    argv.push_back(std::data(a));
    lens.push_back(std::size(a));
  }
  char* cmd = nullptr;
  int len = redisFormatCommandArgv(&cmd, static_cast<int>(n), argv.data(), lens.data());
  if (len < 0 || !cmd) throw error(errc::system_limit, "redis: out of memory encoding a command");
  std::unique_ptr<char, void (*)(char*)> owned(cmd, redisFreeCommand);
  out.append(cmd, static_cast<std::size_t>(len));
}

// ------------------------------------------------------------------ addresses

// "host:port" to a socket address: numeric ones parsed, names resolved.
net::address resolve_address(const std::string& host_port) {
  auto bad = [&](const char* why) {
    return error(errc::invalid_argument, "redis: address \"" + host_port + "\": " + why + " (expected host:port, like 127.0.0.1:6379)");
  };
  if (host_port.empty()) throw bad("empty");
  try {
    return net::address::parse(host_port);
  } catch (const io_error&) {
    throw;
  } catch (const error& e) {
    if (e.code() != errc::invalid_argument) throw;
  }
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0) throw bad("no port");
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string_view port_text = std::string_view(host_port).substr(colon + 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535)
    throw bad("the port is not a number from 1 to 65535");
  std::vector<net::address> found;
  try {
    found = net::resolve(host, static_cast<std::uint16_t>(port));
  } catch (const io_error& e) {
    throw io_error(errc::io_failed, e.sys_errno(), "redis: resolve " + host_port + ": " + e.what());
  }
  if (found.empty()) throw io_error(errc::io_failed, 0, "redis: resolve " + host_port + ": no address");
  return found.front();
}

// The host part of "host:port" ("::1" for "[::1]:6379").
std::string host_of(std::string_view host_port) {
  auto colon = host_port.rfind(':');
  std::string_view host = colon == std::string_view::npos ? host_port : host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return std::string(host);
}

std::string join_host_port(std::string_view host, std::int64_t port) {
  std::string h(host);
  if (h.find(':') != std::string::npos) h = "[" + h + "]";
  return h + ":" + std::to_string(port);
}

}  // namespace

// ====================================================================== reply

std::string reply::to_string() const {
  std::string out;
  format_reply(*this, out, 0);
  return out;
}

std::uint16_t key_slot(std::string_view key) noexcept {
  auto open = key.find('{');
  if (open != std::string_view::npos) {
    auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close != open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return crc16(key) & (slot_count - 1);
}

// ================================================================= connection

struct connection::state {
  std::string addr;
  net::stream sock;
  reader_ptr reader;
  std::string out;                  // encoded commands not yet written
  std::deque<std::string> pending;  // names of the commands whose replies are to come
  std::unique_ptr<char[]> buf;      // read_chunk bytes, made on first read

  bool open() const noexcept { return sock.is_open() && reader; }
  std::size_t outstanding() const noexcept { return pending.size(); }

  void drop() noexcept {
    try {
      sock.close();
    } catch (...) {
    }
    reader.reset();
    out.clear();
    pending.clear();
  }

  std::string current_name() const { return pending.empty() ? std::string("receive") : pending.front(); }

  [[noreturn]] void fail_io(const std::string& op, const io_error& e, net::timeout t) {
    drop();
    throw io_error(e.code(), e.sys_errno(),
                   "redis " + addr + ": " + op + ": " + io_reason(e, t) + "; the connection is closed");
  }
  // The state of an open connection, or error(closed).
  static state& of(const std::unique_ptr<state>& s, std::string_view op) {
    if (!s || !s->open()) {
      std::string addr = s ? s->addr : std::string();
      throw io_error(errc::closed, 0,
                     "redis " + (addr.empty() ? std::string("(not connected)") : addr) + ": " + std::string(op) +
                         ": the connection is closed (by close() or an earlier failure); connect again");
    }
    return *s;
  }

  void check_idle(std::string_view op) const {
    if (!pending.empty())
      throw error(errc::invalid_argument, "redis " + addr + ": " + std::string(op) + ": " +
                                              std::to_string(pending.size()) +
                                              " replies to earlier send() calls are pending; receive them first");
  }

  [[noreturn]] void fail_protocol(const std::string& op, const std::string& why) {
    drop();
    throw error(errc::redis_error, "redis " + addr + ": " + op + ": protocol error (" + why +
                                       "); is this a Redis server? The connection is closed");
  }
};

connection::connection() = default;
connection::~connection() = default;
connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&&) noexcept = default;

connection connection::connect(const std::string& host_port, milliseconds timeout) {
  deadline d(timeout);
  net::address at = resolve_address(host_port);
  connection c;
  {
    global_heap_scope global;  // see "Ownership and memory" above
    c.s_ = std::make_unique<state>();
    c.s_->addr = host_port;
  }
  net::timeout t = d.remaining();
  try {
    c.s_->sock = net::stream::connect(at, t);
    c.s_->sock.set_nodelay(true);
  } catch (const io_error& e) {
    throw io_error(e.code(), e.sys_errno(), "redis: connect " + host_port + ": " + io_reason(e, t));
  }
  c.s_->reader.reset(redisReaderCreate());
  if (!c.s_->reader) throw error(errc::system_limit, "redis: connect " + host_port + ": out of memory for a reader");
  return c;
}

bool connection::connected() const noexcept { return s_ && s_->open(); }

void connection::close() {
  if (s_) s_->drop();
}

const std::string& connection::address() const noexcept {
  static const std::string none;
  return s_ ? s_->addr : none;
}

void connection::send(const std::vector<std::string>& args) {
  state& s = state::of(s_, args.empty() ? std::string("send") : name_of(args[0]));
  global_heap_scope global;
  encode(s.out, args);
  s.pending.push_back(name_of(args[0]));
}

void connection::flush(milliseconds timeout) {
  state& s = state::of(s_, "flush");
  if (s.out.empty()) return;
  net::timeout t = deadline(timeout).remaining();
  try {
    s.sock.write(s.out, t);
  } catch (const io_error& e) {
    s.fail_io(s.pending.empty() ? std::string("flush") : s.pending.back(), e, t);
  }
  s.out.clear();
  // Long pipelines can leave a big buffer behind; keep a small one.
  if (s.out.capacity() > 64 * 1024) std::string().swap(s.out);
}

reply connection::receive(milliseconds timeout) {
  state& s = state::of(s_, "receive");
  deadline d(timeout);
  if (!s.out.empty()) flush(d.remaining());
  std::string name = s.current_name();
  for (;;) {
    void* raw = nullptr;
    if (redisReaderGetReply(s.reader.get(), &raw) != REDIS_OK) s.fail_protocol(name, s.reader->errstr);
    if (raw) {
      std::unique_ptr<void, reply_free> owned(raw);
      auto r = from_hiredis(static_cast<const redisReply*>(raw));
      if (!r) s.fail_protocol(name, "a reply of a type RESP2 does not have");
      if (!s.pending.empty()) s.pending.pop_front();
      return std::move(*r);
    }
    if (!s.buf) {
      global_heap_scope global;
      s.buf = std::make_unique<char[]>(read_chunk);
    }
    std::size_t n = 0;
    net::timeout t = d.remaining();
    try {
      n = s.sock.read(s.buf.get(), read_chunk, t);
    } catch (const io_error& e) {
      if (e.code() == errc::timed_out) {
        s.drop();
        throw io_error(errc::timed_out, 0,
                       "redis " + s.addr + ": " + name + ": no reply within " + ms_text(timeout) +
                           "; the connection is closed (a late reply must not answer a later command)");
      }
      s.fail_io(name, e, t);
    }
    if (n == 0) {
      s.drop();
      throw io_error(errc::closed, 0, "redis " + s.addr + ": " + name + ": the server closed the connection");
    }
    if (redisReaderFeed(s.reader.get(), s.buf.get(), n) != REDIS_OK) s.fail_protocol(name, s.reader->errstr);
  }
}

reply connection::command(std::initializer_list<std::string_view> args, milliseconds timeout) {
  state& s = state::of(s_, args.size() ? name_of(*args.begin()) : std::string("command"));
  s.check_idle(name_of(args.size() ? *args.begin() : std::string_view()));
  deadline d(timeout);
  {
    global_heap_scope global;
    encode(s.out, args);
    s.pending.push_back(name_of(*args.begin()));
  }
  flush(d.remaining());
  return receive(d.remaining());
}

reply connection::command(const std::vector<std::string>& args, milliseconds timeout) {
  state& s = state::of(s_, args.empty() ? std::string("command") : name_of(args[0]));
  s.check_idle(name_of(args.empty() ? std::string_view() : std::string_view(args[0])));
  deadline d(timeout);
  send(args);
  flush(d.remaining());
  return receive(d.remaining());
}

std::vector<reply> connection::pipeline(const std::vector<std::vector<std::string>>& commands,
                                        milliseconds timeout) {
  state& s = state::of(s_, "pipeline");
  s.check_idle("pipeline");
  for (const auto& c : commands)
    if (c.empty()) throw error(errc::invalid_argument, "redis " + s.addr + ": pipeline: an empty command");
  deadline d(timeout);
  for (const auto& c : commands) send(c);
  flush(d.remaining());
  std::vector<reply> replies;
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) replies.push_back(receive(d.remaining()));
  return replies;
}

// ===================================================================== client

namespace {

// An attempt that failed before anything was sent: safe to retry.
struct retry_needed {
  std::string why;
};

// Failures after which a retry may succeed (the others are the caller's).
bool transient(errc c) {
  return c == errc::io_failed || c == errc::timed_out || c == errc::closed || c == errc::redis_error;
}

// What an error reply asks of the client.
enum class verdict : std::uint8_t { answer, moved, ask, retry };

struct redirect {
  int slot = -1;
  std::string addr;
};

std::optional<redirect> parse_redirect(std::string_view text, std::string_view from) {
  // "MOVED 3999 127.0.0.1:6381", "ASK 3999 :6381" (host unknown: the one asked)
  auto sp1 = text.find(' ');
  if (sp1 == std::string_view::npos) return std::nullopt;
  auto sp2 = text.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return std::nullopt;
  std::string_view slot_text = text.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view addr = text.substr(sp2 + 1);
  int slot = -1;
  auto [end, ec] = std::from_chars(slot_text.data(), slot_text.data() + slot_text.size(), slot);
  if (ec != std::errc() || end != slot_text.data() + slot_text.size() || slot < 0 || slot >= slot_count)
    return std::nullopt;
  auto colon = addr.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == addr.size()) return std::nullopt;
  redirect r;
  r.slot = slot;
  if (colon == 0) {
    std::int64_t port = 0;
    std::string_view port_text = addr.substr(1);
    auto [pend, pec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (pec != std::errc() || pend != port_text.data() + port_text.size()) return std::nullopt;
    r.addr = join_host_port(host_of(from), port);
  } else {
    r.addr = std::string(addr);
  }
  return r;
}

// Attempts, waits and the deadline of one client operation.
class retry_loop {
 public:
  retry_loop(const client_options& o, std::string what)
      : o_(o), what_(std::move(what)), start_(clock::now()), d_(o.command_timeout) {}
  const deadline& limit() const { return d_; }

  // Records a failed attempt and waits before the next one (a redirection
  // goes again at once, up to five in a row), or throws unavailable.
  void failed(std::string why, bool redirection = false) {
    last_ = std::move(why);
    ++attempts_;
    if (o_.max_attempts > 0 && attempts_ >= o_.max_attempts) give_up();
    if (d_.passed()) give_up();
    if (redirection && ++redirections_ <= 5) return;
    milliseconds wait = o_.backoff_min;
    for (unsigned i = 0; i < step_ && wait < o_.backoff_max; ++i) wait *= 2;
    wait = std::min(wait, o_.backoff_max);
    ++step_;
    net::timeout left = d_.remaining();
    if (wait >= left) {
      ember::sleep_for(left);
      give_up();
    }
    ember::sleep_for(wait);
  }

  [[noreturn]] void give_up() const {
    auto spent = std::chrono::duration_cast<milliseconds>(clock::now() - start_);
    throw error(errc::unavailable, "redis: " + what_ + ": gave up after " + std::to_string(attempts_) +
                                       (attempts_ == 1 ? " attempt" : " attempts") + " in " + ms_text(spent) +
                                       " (command_timeout " + ms_text(o_.command_timeout) +
                                       (o_.max_attempts ? ", max_attempts " + std::to_string(o_.max_attempts) : "") +
                                       "); last error: " + last_);
  }
  [[noreturn]] void not_retried(const std::string& why) const {
    throw error(errc::unavailable, "redis: " + what_ + ": " + why +
                                       "; it may or may not have run, and is not sent again (not idempotent)");
  }

 private:
  const client_options& o_;
  std::string what_;
  clock::time_point start_;
  deadline d_;
  int attempts_ = 0;
  int redirections_ = 0;
  unsigned step_ = 0;
  std::string last_;
};

std::string pipeline_name(const std::vector<const std::vector<std::string>*>& cmds) {
  if (cmds.size() == 1) return name_of(cmds[0]->empty() ? std::string_view() : std::string_view((*cmds[0])[0]));
  std::vector<std::string> names;
  for (const auto* c : cmds) {
    std::string n = name_of(c->empty() ? std::string_view() : std::string_view((*c)[0]));
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    if (names.size() > 3) break;
  }
  std::string out = "pipeline of " + std::to_string(cmds.size()) + " commands (";
  for (std::size_t i = 0; i < names.size() && i < 3; ++i) out += (i ? ", " : "") + names[i];
  return out + (names.size() > 3 ? ", ...)" : ")");
}

// The slot of a command's key; -1 if it has none.
int slot_of(const std::vector<std::string>& args, int key_index) {
  if (key_index < 0 || std::size_t(key_index) >= args.size()) return -1;
  return key_slot(args[std::size_t(key_index)]);
}

}  // namespace

struct client::state {
  client_options opt;
  enum class mode : std::uint8_t { unknown, standalone, cluster };
  mode kind = mode::unknown;
  bool stale = true;  // (re)learn the topology before the next attempt
  // One connection per server address. Entries are never erased:
  // connection_for_key hands out references to them.
  std::map<std::string, connection, std::less<>> nodes;
  std::string standalone;            // the server, in standalone mode
  std::vector<std::string> masters;  // cluster: master addresses
  std::vector<std::uint16_t> slot_owner = std::vector<std::uint16_t>(slot_count, no_owner);  // index into masters

  // The connection to addr, connected (reconnected in place if it failed,
  // or if the user left replies pending on it).
  connection& node(const std::string& addr, const deadline& d) {
    auto it = nodes.find(addr);
    if (it == nodes.end()) it = nodes.emplace(addr, connection()).first;
    connection& c = it->second;
    if (c.connected() && (c.s_->outstanding() || !c.s_->out.empty())) c.close();
    if (!c.connected()) c = connection::connect(addr, std::min(opt.connect_timeout, d.remaining()));
    return c;
  }

  std::size_t master_index(const std::string& addr) {
    auto it = std::find(masters.begin(), masters.end(), addr);
    if (it != masters.end()) return std::size_t(it - masters.begin());
    masters.push_back(addr);
    return masters.size() - 1;
  }

  // Learns the slot map from a CLUSTER SLOTS reply. False if it is not one.
  bool apply_slots(const reply& r, const std::string& asked) {
    std::vector<std::string> new_masters;
    std::vector<std::uint16_t> owners(slot_count, no_owner);
    for (const reply& e : r.elements) {
      if (e.kind != reply::type::array || e.elements.size() < 3) return false;
      const reply& first = e.elements[0];
      const reply& last = e.elements[1];
      const reply& master = e.elements[2];
      if (first.kind != reply::type::integer || last.kind != reply::type::integer) return false;
      if (master.kind != reply::type::array || master.elements.size() < 2) return false;
      if (first.integer < 0 || last.integer >= slot_count || first.integer > last.integer) return false;
      const reply& ip = master.elements[0];
      const reply& port = master.elements[1];
      if (port.kind != reply::type::integer || port.integer <= 0 || port.integer > 65535) return false;
      std::string host = ip.kind == reply::type::string ? ip.str : std::string();
      if (host.empty() || host == "?") host = host_of(asked);
      std::string addr = join_host_port(host, port.integer);
      auto it = std::find(new_masters.begin(), new_masters.end(), addr);
      if (it == new_masters.end()) it = new_masters.insert(new_masters.end(), addr);
      auto index = static_cast<std::uint16_t>(it - new_masters.begin());
      std::fill(owners.begin() + first.integer, owners.begin() + last.integer + 1, index);
    }
    masters = std::move(new_masters);
    slot_owner = std::move(owners);
    return true;
  }

  // Finds out the topology: CLUSTER SLOTS from a known master or a seed.
  // Throws retry_needed if none answers usefully.
  void discover(const deadline& d) {
    std::vector<std::string> candidates;
    auto add = [&](const std::string& a) {
      if (std::find(candidates.begin(), candidates.end(), a) == candidates.end()) candidates.push_back(a);
    };
    if (kind == mode::cluster) for (const auto& m : masters) add(m);
    if (kind == mode::standalone) add(standalone);
    for (const auto& s : opt.seeds) add(s);
    std::string last;
    for (const auto& a : candidates) {
      try {
        connection& c = node(a, d);
        reply r = c.command({"CLUSTER", "SLOTS"}, d.remaining());
        if (r.kind == reply::type::array) {
          if (r.elements.empty()) {
            last = "redis " + a + ": CLUSTER SLOTS: no slots are assigned (is the cluster set up?)";
            continue;
          }
          if (!apply_slots(r, a)) {
            last = "redis " + a + ": CLUSTER SLOTS: a reply of unexpected shape: " + r.to_string().substr(0, 200);
            continue;
          }
          kind = mode::cluster;
          stale = false;
          return;
        }
        if (r.is_error() && (starts_with_word(r.str, "LOADING") || starts_with_word(r.str, "TRYAGAIN") ||
                             starts_with_word(r.str, "CLUSTERDOWN") || starts_with_word(r.str, "MASTERDOWN"))) {
          last = "redis " + a + ": CLUSTER SLOTS: " + r.str;
          continue;
        }
        // "ERR This instance has cluster support disabled", or a server
        // that knows no CLUSTER: a standalone server.
        kind = mode::standalone;
        standalone = a;
        stale = false;
        return;
      } catch (const error& e) {
        if (!transient(e.code())) throw;
        last = e.what();
      }
    }
    throw retry_needed{last.empty() ? std::string("no server to ask") : last};
  }

  // Where a command for `slot` (-1: no key) goes now.
  std::string route(int slot) {
    if (kind == mode::standalone) return standalone;
    if (slot >= 0) {
      std::uint16_t owner = slot_owner[std::size_t(slot)];
      if (owner == no_owner || owner >= masters.size()) {
        stale = true;
        throw retry_needed{"slot " + std::to_string(slot) + " is served by no master (yet)"};
      }
      return masters[owner];
    }
    for (const auto& m : masters)
      if (auto it = nodes.find(m); it != nodes.end() && it->second.connected()) return m;
    if (masters.empty()) {
      stale = true;
      throw retry_needed{"the cluster has no masters"};
    }
    return masters.front();
  }

  verdict judge(const reply& r) const {
    if (!r.is_error()) return verdict::answer;
    std::string_view t = r.str;
    if (starts_with_word(t, "MOVED")) return verdict::moved;
    if (starts_with_word(t, "ASK")) return verdict::ask;
    if (starts_with_word(t, "TRYAGAIN") || starts_with_word(t, "CLUSTERDOWN") || starts_with_word(t, "LOADING"))
      return verdict::retry;
    if (kind == mode::cluster && (starts_with_word(t, "MASTERDOWN") || starts_with_word(t, "READONLY")))
      return verdict::retry;
    return verdict::answer;
  }

  // Runs commands on the node owning `slot` (-1: any), following
  // redirections and retrying as the header says; replies in order.
  std::vector<reply> run(const std::vector<const std::vector<std::string>*>& cmds, int slot, bool idempotent) {
    state& s = *this;
    for (const auto* c : cmds)
      if (c->empty()) throw error(errc::invalid_argument, "redis: an empty command (a command needs at least its name)");
    retry_loop loop(s.opt, pipeline_name(cmds));
    const bool transaction = std::any_of(cmds.begin(), cmds.end(), [](const auto* c) { return iequals((*c)[0], "MULTI"); });
    std::vector<reply> results(cmds.size());
    std::vector<std::size_t> todo(cmds.size());
    for (std::size_t i = 0; i < todo.size(); ++i) todo[i] = i;
    std::string next_target;  // where a redirection sent the commands left to do
    bool next_asking = false;  // ... with ASKING before each
    // Not a static: one first made inside a process would live in that
    // process's heap and die with it.
    const std::vector<std::string> asking_command{"ASKING"};
    for (;;) {
      std::string target, why;
      bool written = false, redirected = false;
      try {
        if (s.stale || s.kind == mode::unknown) s.discover(loop.limit());
        const bool asking = std::exchange(next_asking, false);
        target = next_target.empty() ? s.route(slot) : std::exchange(next_target, std::string());
        connection& c = s.node(target, loop.limit());
        for (std::size_t i : todo) {
          if (asking) c.send(asking_command);
          c.send(*cmds[i]);
        }
        written = true;
        c.flush(loop.limit().remaining());
        std::vector<std::size_t> again;
        std::string ask_to, moved_to;
        redirected = true;  // every failure this round was a redirection
        std::size_t asked = 0, moved = 0;
        for (std::size_t i : todo) {
          if (asking) c.receive(loop.limit().remaining());  // ASKING's +OK
          reply r = c.receive(loop.limit().remaining());
          verdict v = s.judge(r);
          if (v == verdict::answer) {
            results[i] = std::move(r);
            continue;
          }
          again.push_back(i);
          why = "redis " + target + ": " + r.str;
          if (v == verdict::retry) {
            redirected = false;
            if (!starts_with_word(r.str, "LOADING") && !starts_with_word(r.str, "TRYAGAIN")) s.stale = true;
            continue;
          }
          auto to = parse_redirect(r.str, target);
          if (!to) {
            redirected = false;
            s.stale = true;
            continue;
          }
          if (v == verdict::moved) {
            s.slot_owner[std::size_t(to->slot)] = static_cast<std::uint16_t>(s.master_index(to->addr));
            s.stale = true;  // more may have moved: refresh before the next attempt
            moved += moved == 0 || moved_to == to->addr;
            moved_to = to->addr;
          } else {
            asked += asked == 0 || ask_to == to->addr;
            ask_to = to->addr;
          }
        }
        if (again.empty()) return results;
        if (transaction && again.size() != todo.size()) again = todo;  // the server aborted the transaction
        // All sent elsewhere: go there (even if key_index named no key).
        if (asked == again.size()) {
          next_target = ask_to;
          next_asking = true;
        } else if (moved == again.size()) {
          next_target = moved_to;
        }
        todo = std::move(again);
      } catch (const retry_needed& e) {
        why = e.why;
        redirected = false;
      } catch (const error& e) {
        if (!transient(e.code())) throw;
        s.stale = true;  // reconnect, and learn the topology again
        if (written && !idempotent)
          loop.not_retried("the connection to " + target + " failed after it was sent (" + e.what() + ")");
        why = e.what();
        redirected = false;
      }
      loop.failed(std::move(why), redirected);
    }
  }

  // Runs fn (which needs the topology) with the client's retries.
  template <class F>
  auto with_topology(const std::string& what, F fn) -> decltype(fn(std::declval<const deadline&>())) {
    state& s = *this;
    retry_loop loop(s.opt, what);
    for (;;) {
      std::string why;
      try {
        if (s.stale || s.kind == mode::unknown) s.discover(loop.limit());
        return fn(loop.limit());
      } catch (const retry_needed& e) {
        why = e.why;
      } catch (const error& e) {
        if (!transient(e.code())) throw;
        s.stale = true;
        why = e.what();
      }
      loop.failed(std::move(why));
    }
  }
};

client::client(client_options options) : s_(std::make_unique<state>()) {
  if (options.seeds.empty()) throw error(errc::invalid_argument, "redis::client: no seeds (give at least one host:port)");
  for (const auto& seed : options.seeds)
    if (seed.empty()) throw error(errc::invalid_argument, "redis::client: an empty seed address");
  if (options.connect_timeout <= milliseconds(0) || options.command_timeout <= milliseconds(0))
    throw error(errc::invalid_argument, "redis::client: connect_timeout and command_timeout must be positive");
  if (options.backoff_min <= milliseconds(0) || options.backoff_max < options.backoff_min)
    throw error(errc::invalid_argument, "redis::client: backoff_min must be positive and at most backoff_max");
  if (options.max_attempts < 0) throw error(errc::invalid_argument, "redis::client: max_attempts must not be negative");
  s_->opt = std::move(options);
}

client::~client() = default;
client::client(client&&) noexcept = default;
client& client::operator=(client&&) noexcept = default;

reply client::command(const std::vector<std::string>& args, int key_index, bool idempotent) {
  std::vector<const std::vector<std::string>*> one{&args};
  return std::move(s_->run(one, slot_of(args, key_index), idempotent).front());
}

std::vector<reply> client::pipeline(const std::vector<std::vector<std::string>>& commands, int key_index,
                                    bool idempotent) {
  if (commands.empty()) return {};
  int slot = -1;
  std::size_t first = 0;
  std::vector<const std::vector<std::string>*> cmds;
  cmds.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) {
    cmds.push_back(&commands[i]);
    int k = slot_of(commands[i], key_index);
    if (k < 0) continue;
    if (slot < 0) {
      slot = k;
      first = i;
    } else if (k != slot) {
      throw error(errc::invalid_argument,
                  "redis::client::pipeline: the keys of commands " + std::to_string(first) + " and " +
                      std::to_string(i) + " are in different slots (" + std::to_string(slot) + " and " +
                      std::to_string(k) + "); a pipeline runs on one node: give its keys one hash tag, like {user42}.name");
    }
  }
  return s_->run(cmds, slot, idempotent);
}

connection& client::connection_for_key(std::string_view key) {
  int slot = key_slot(key);
  return s_->with_topology("connection_for_key", [&](const deadline& d) -> connection& {
    return s_->node(s_->route(slot), d);
  });
}

connection client::dedicated_connection_for_key(std::string_view key) {
  int slot = key_slot(key);
  return s_->with_topology("dedicated_connection_for_key", [&](const deadline& d) {
    return connection::connect(s_->route(slot), std::min(s_->opt.connect_timeout, d.remaining()));
  });
}

bool client::cluster_mode() const noexcept { return s_ && s_->kind == state::mode::cluster; }

}  // namespace ember::redis
