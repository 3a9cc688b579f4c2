// ember::redis — a Redis client for processes: one connection, or a client
// that speaks to a standalone server or a Redis Cluster.
//
//   auto c = redis::connection::connect("127.0.0.1:6379");
//   c.command({"SET", "greeting", "hello"});
//   redis::reply r = c.command({"GET", "greeting"});   // r.str == "hello"
//
//   redis::client db({.seeds = {"127.0.0.1:7000", "127.0.0.1:7001"}});
//   db.command({"INCR", "visits"});                      // routed by the key's slot
//
// Every call suspends only the calling process (the sockets are
// ember::net's), so a command that blocks in the server (BLPOP, XREADGROUP
// ... BLOCK) costs its process nothing but its wait. A connection is like
// a net::stream: it belongs to the process that last used it, and closes
// when that process exits; it may be moved into another process (its
// memory is not in a process heap). A client belongs to the process that
// made it (its memory is in that process's heap): use it from there only.
//
// Replies are values: an error reply ("-ERR ...") is a reply of kind
// error, not an exception. What throws is what leaves no answer: I/O
// failures, timeouts, a server that speaks no RESP we know (ember::error:
// io_failed, timed_out, closed, redis_error, naming the server's address),
// and a client that could not get an answer before its command deadline
// (unavailable, naming the command).
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ember::redis {

// One RESP (version 2) value as the server sent it.
struct reply {
  enum class type : std::uint8_t { nil, status, error, integer, string, array };
  type kind = type::nil;
  std::int64_t integer = 0;     // integer
  std::string str;              // status, error, string (binary-safe)
  std::vector<reply> elements;  // array

  bool is_nil() const noexcept { return kind == type::nil; }
  bool is_error() const noexcept { return kind == type::error; }
  // As redis-cli prints it: "OK", "(integer) 3", "\"a\\x00b\"", "(nil)",
  // "(error) ERR ...", "1) \"a\"\n2) (integer) 2", "(empty array)".
  std::string to_string() const;
};

// The Redis Cluster hash slot of a key (0..16383): CRC16 (XMODEM) of the
// key, or of its hash tag — the part between the first '{' and the first
// '}' after it, when that part is not empty — modulo 16384.
std::uint16_t key_slot(std::string_view key) noexcept;

// One TCP connection to one Redis server. Move-only. Any failure that
// leaves the connection's state unknown (I/O error, timeout, protocol
// error, the server closing) closes it, so a late reply is never read as
// the answer to a later command; connected() then says false and every
// call but close() throws closed.
class connection {
 public:
  connection();  // not connected
  ~connection();
  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // Connects to "host:port" ("127.0.0.1:6379", "[::1]:6379"; a host name
  // is resolved). Throws error(invalid_argument) for a malformed address,
  // io_failed (refused, unreachable, unknown host) or timed_out.
  static connection connect(const std::string& host_port,
                            std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Sends one command and returns its reply. Needs no replies pending from
  // send(): error(invalid_argument) otherwise. `timeout` bounds the whole
  // exchange; past it the connection is closed and timed_out thrown.
  reply command(std::initializer_list<std::string_view> args,
                std::chrono::milliseconds timeout = std::chrono::seconds(5));
  reply command(const std::vector<std::string>& args,
                std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Pipelining. send() encodes a command into the output buffer; flush()
  // writes the buffer; receive() returns the next reply in order (flushing
  // first if something is buffered). receive() with nothing pending waits
  // for a pushed message (after SUBSCRIBE).
  void send(const std::vector<std::string>& args);
  void flush(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  reply receive(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Sends all the commands, then reads all their replies, in order.
  std::vector<reply> pipeline(const std::vector<std::vector<std::string>>& commands,
                              std::chrono::milliseconds timeout = std::chrono::seconds(5));

  bool connected() const noexcept;
  // Closes the connection (replies still pending are dropped).
  void close();
  // The address connect() was given ("" for a default-constructed one).
  const std::string& address() const noexcept;

 private:
  friend class client;  // checks that a pooled connection has nothing pending
  struct state;
  std::unique_ptr<state> s_;
};

struct client_options {
  // Servers to ask first ("host:port"); for a cluster, any of its nodes.
  std::vector<std::string> seeds;
  std::chrono::milliseconds connect_timeout{2000};
  // A command's deadline, retries included.
  std::chrono::milliseconds command_timeout{5000};
  // Waits between retries: doubling from backoff_min, at most backoff_max.
  std::chrono::milliseconds backoff_min{50}, backoff_max{2000};
  int max_attempts = 0;  // 0: retry until the command's deadline
};

// A client of a standalone server or a Redis Cluster, found out on first
// use (CLUSTER SLOTS). In a cluster it keeps the map from slots to
// masters and one connection per master, routes each command by the slot
// of its key, follows -MOVED (and refreshes its map) and -ASK. It retries
// -TRYAGAIN, -CLUSTERDOWN, -LOADING, -MASTERDOWN, -READONLY and lost
// connections, waiting backoff_min, 2x, 4x ... backoff_max between tries
// (the process sleeps), until command_timeout; then it throws
// error(unavailable) naming the command (never its arguments) and the last
// failure. Not for commands that block in the server: those get a
// dedicated_connection_for_key.
class client {
 public:
  // Connects nothing yet. Throws error(invalid_argument) without seeds, for
  // a timeout or backoff_min that is not positive, or backoff_max <
  // backoff_min. An invalid seed address is found at first use (also
  // invalid_argument).
  explicit client(client_options options);
  ~client();
  client(client&&) noexcept;
  client& operator=(client&&) noexcept;
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Runs args (name first) on the master of args[key_index]'s slot (any
  // node if key_index < 0 or out of range). A connection lost after the
  // command was written may have run it: it is sent again only if
  // `idempotent`, else error(unavailable) says so.
  reply command(const std::vector<std::string>& args, int key_index = 1, bool idempotent = true);

  // Runs the commands as one pipeline on one node, replies in order. Their
  // keys (the key_index-th argument of each) must share one slot, else
  // error(invalid_argument) — on a standalone server too, so that what
  // runs on one server runs on a cluster. Commands answered with a
  // redirection or a retryable error were not run: they are sent again
  // where it points. A connection lost halfway through is retried with the
  // whole pipeline only if `idempotent`; else error(unavailable).
  std::vector<reply> pipeline(const std::vector<std::vector<std::string>>& commands,
                              int key_index = 1, bool idempotent = true);

  // The client's own connection to the master owning key's slot
  // (connected, retrying as command does). The reference stays valid as
  // long as the client; if it fails, the client reconnects it on next use.
  connection& connection_for_key(std::string_view key);
  // A new connection to that master, for commands that block in the server
  // (BLPOP, XREADGROUP ... BLOCK), which must not hold up the shared one.
  connection dedicated_connection_for_key(std::string_view key);

  // True once the client has found that it speaks to a cluster (false
  // before its first command).
  bool cluster_mode() const noexcept;

 private:
  struct state;
  std::unique_ptr<state> s_;
};

}  // namespace ember::redis
