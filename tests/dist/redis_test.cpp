// ember::redis: the connection and the client against real redis-server
// processes (support/redis_server.hpp) and fake servers written as ember
// processes.
//
// Suites: redis_key_slot (the cluster's hash slots), redis_connection
// (replies as values, pipelining, binary values, a blocking command that
// suspends only its process, timeouts, refusals, protocol errors, fake
// servers), redis_client_standalone (routing to one server, retries and
// giving up, pipelines lost halfway), redis_server_loss (a server killed
// under a command, and restarted) and redis_cluster_client (three masters:
// routing, MOVED, ASK, cross-slot pipelines, dedicated connections).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ember/dist/redis.hpp"
#include "ember/io/net.hpp"
#include "ember_test.hpp"
#include "redis_server.hpp"

namespace {

using namespace ember_test;
using namespace std::chrono_literals;
using ember::pid;
namespace net = ember::net;
namespace redis = ember::redis;

// ------------------------------------------------------------------ helpers

// How f ended: "returned", or "<errc>" of the ember::error it threw; and
// the error's what().
struct failure {
  std::string outcome;
  std::string what;
};

template <class F>
failure failure_of(F&& f) {
  try {
    f();
    return {"returned", ""};
  } catch (const ember::error& e) {
    return {errc_name(e.code()), e.what()};
  }
}

bool mentions(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// "status OK", "string hello", "integer 3", "nil", "error ERR ...", "array 2".
std::string kind_of(const redis::reply& r) {
  switch (r.kind) {
    case redis::reply::type::nil: return "nil";
    case redis::reply::type::status: return "status " + r.str;
    case redis::reply::type::error: return "error " + r.str;
    case redis::reply::type::integer: return "integer " + std::to_string(r.integer);
    case redis::reply::type::string: return "string " + r.str;
    case redis::reply::type::array: return "array " + std::to_string(r.elements.size());
  }
  return "?";
}

// The number after a RESP line's type byte. from_chars, not stoul: that
// sets errno, which the processes of a thread share (ThreadSanitizer sees
// a race with ember's save of errno when another process is preempted).
std::size_t resp_number(const std::string& line) {
  std::size_t n = 0;
  auto [end, ec] = std::from_chars(line.data() + 1, line.data() + line.size(), n);
  if (line.size() < 2 || ec != std::errc() || end != line.data() + line.size())
    throw std::runtime_error("fake server: not a RESP length: " + line);
  return n;
}

// One command as a server reads it: a RESP array of bulk strings.
std::vector<std::string> read_command(net::stream& s) {
  std::string head = s.read_line(5s);
  if (head.empty() || head[0] != '*') throw std::runtime_error("fake server: not a command: " + head);
  std::size_t n = resp_number(head);
  std::vector<std::string> args;
  for (std::size_t i = 0; i < n; ++i) {
    std::string len = s.read_line(5s);
    std::string arg = s.read_exact(resp_number(len) + 2, 5s);
    arg.resize(arg.size() - 2);
    args.push_back(std::move(arg));
  }
  return args;
}

// The answer a fake server gives to command number `index` (from 0) on
// connection number `conn` (from 0); nullopt closes the connection.
using script = std::optional<std::string> (*)(int conn, int index, const std::vector<std::string>& cmd);

// A fake Redis server: a process accepting connections one after the
// other and answering by `answer`; each accept is put in `log` as
// "accept <n>". Inside a process; kill the returned pid at the end.
struct fake_server {
  net::address at;
  pid id;
};
fake_server start_fake_server(script answer, inbox<std::string> log) {
  auto l = net::listener::listen(net::address::loopback(0));
  net::address at = l.local_address();
  pid id = ember::spawn([l = std::move(l), answer, log]() mutable {
    for (int conn = 0;; ++conn) {
      net::stream s = l.accept();
      log.put("accept " + std::to_string(conn));
      try {
        for (int index = 0;; ++index) {
          std::optional<std::string> a = answer(conn, index, read_command(s));
          if (!a) break;
          s.write(*a, 5s);
        }
      } catch (const ember::error&) {
        // the client went away
      }
      s.close();
    }
  });
  return {at, id};
}

// Kills a process when the scope ends (a fake server, a blocked reader).
struct kill_at_exit {
  pid id;
  ~kill_at_exit() { ember::exit(id, ember::exit_reason::kill()); }
};

// An address where nothing listens: a port bound (not listening, so a
// connection to it is refused) for the life of this object, so that no
// server of a test running in parallel takes it meanwhile. Test thread.
class unused_address {
 public:
  unused_address() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
      throw std::runtime_error(std::string("unused_address: ") + std::strerror(errno));
    text_ = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  }
  ~unused_address() { ::close(fd_); }
  unused_address(const unused_address&) = delete;
  unused_address& operator=(const unused_address&) = delete;
  const std::string& text() const { return text_; }

 private:
  int fd_ = -1;
  std::string text_;
};

std::string info_field(const redis::reply& r, std::string_view name) { return redis_detail::info_field(r.str, name); }

// ---------------------------------------------------------------- key slots

TEST(redis_key_slot, is_the_crc16_of_the_key_modulo_16384) {
  EXPECT_EQ(redis::key_slot("foo"), 12182);
  EXPECT_EQ(redis::key_slot("123456789"), 0x31C3);  // CRC16/XMODEM's check value
  EXPECT_EQ(redis::key_slot(""), 0);
  EXPECT_EQ(redis::key_slot("bar"), 5061);
  EXPECT_EQ(redis::key_slot("hello"), 866);
}

TEST(redis_key_slot, a_hash_tag_hashes_only_the_part_between_the_first_braces) {
  EXPECT_EQ(redis::key_slot("{user1000}.following"), redis::key_slot("{user1000}.followers"));
  EXPECT_EQ(redis::key_slot("{user1000}.following"), redis::key_slot("user1000"));
  EXPECT_EQ(redis::key_slot("foo{bar}{zap}"), redis::key_slot("bar"));  // the first {...} only
  EXPECT_EQ(redis::key_slot("foo{{bar}}zap"), redis::key_slot("{bar"));  // up to the first } after {
  EXPECT_EQ(redis::key_slot("a{b}c{d"), redis::key_slot("b"));
}

TEST(redis_key_slot, empty_braces_or_an_unclosed_brace_hash_the_whole_key) {
  EXPECT_NE(redis::key_slot("foo{}{bar}"), redis::key_slot("bar"));
  EXPECT_EQ(redis::key_slot("foo{}{bar}"), redis::key_slot(std::string_view("foo{}{bar}")));
  EXPECT_NE(redis::key_slot("{}x"), redis::key_slot("x"));
  EXPECT_NE(redis::key_slot("{x"), redis::key_slot("x"));
  EXPECT_NE(redis::key_slot("x}"), redis::key_slot("x"));
  EXPECT_EQ(redis::key_slot(std::string_view("a\0b", 3)), redis::key_slot(std::string_view("{a\0b}", 5)));
}

// ------------------------------------------------------------- connections

// One standalone server for the suite; each test starts with it empty.
class redis_connection : public runtime_test {
 protected:
  static void SetUpTestSuite() { server_ = new redis_server(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    runtime_test::SetUp();
    ASSERT_EQ(server().command({"FLUSHALL"}), "+OK\r\n");
  }
  static redis_server& server() { return *server_; }
  static std::string addr() { return server_->address(); }

 private:
  static inline redis_server* server_ = nullptr;
};

TEST_P(redis_connection, status_string_integer_and_nil_replies_are_values) {
  auto got = in_process(rt(), [a = addr()] {
    auto c = redis::connection::connect(a);
    std::vector<std::string> out;
    out.push_back(kind_of(c.command({"SET", "greeting", "hello"})));
    out.push_back(kind_of(c.command({"GET", "greeting"})));
    out.push_back(kind_of(c.command({"INCR", "counter"})));
    out.push_back(kind_of(c.command({"INCRBY", "counter", "-5"})));
    out.push_back(kind_of(c.command(std::vector<std::string>{"GET", "missing"})));
    out.push_back(c.command({"GET", "missing"}).is_nil() ? "is_nil" : "not nil");
    return out;
  });
  EXPECT_EQ(got, (std::vector<std::string>{"status OK", "string hello", "integer 1", "integer -4", "nil", "is_nil"}));
}

TEST_P(redis_connection, an_error_reply_is_a_value_and_the_connection_stays_usable) {
  auto got = in_process(rt(), [a = addr()] {
    auto c = redis::connection::connect(a);
    c.command({"SET", "word", "not-a-number"});
    redis::reply incr = c.command({"INCR", "word"});
    redis::reply unknown = c.command({"NO-SUCH-COMMAND", "x"});
    std::string after = kind_of(c.command({"PING"}));
    return std::string(incr.is_error() ? "is_error " : "? ") + incr.to_string() + " | " +
           unknown.str.substr(0, 15) + " | " + after + (c.connected() ? " | connected" : " | closed");
  });
  EXPECT_EQ(got,
            "is_error (error) ERR value is not an integer or out of range | ERR unknown com | status PONG | connected");
}

TEST_P(redis_connection, arrays_nest_and_print_as_redis_cli_prints_them) {
  auto got = in_process(rt(), [a = addr()] {
    auto c = redis::connection::connect(a);
    redis::reply nested = c.command({"EVAL", "return {1, {'a', 'b'}, 'c'}", "0"});
    redis::reply empty = c.command({"LRANGE", "no-list", "0", "-1"});
    c.command({"RPUSH", "list", "x", "y"});
    redis::reply list = c.command({"LRANGE", "list", "0", "-1"});
    return nested.to_string() + "\n--\n" + empty.to_string() + "\n--\n" + kind_of(list) + " " +
           list.elements.at(0).str + list.elements.at(1).str;
  });
  EXPECT_EQ(got,
            "1) (integer) 1\n"
            "2) 1) \"a\"\n"
            "   2) \"b\"\n"
            "3) \"c\"\n--\n"
            "(empty array)\n--\n"
            "array 2 xy");
}

TEST_P(redis_connection, a_pipeline_of_1000_commands_gets_its_replies_in_order) {
  auto got = in_process(rt(), [a = addr()] {
    auto c = redis::connection::connect(a);
    // send / flush / receive
    for (int i = 0; i < 1000; ++i) c.send({"INCR", "sequence"});
    c.flush(5s);
    int out_of_order = 0;
    for (int i = 1; i <= 1000; ++i)
      if (c.receive(5s).integer != i) ++out_of_order;
    // pipeline()
    std::vector<std::vector<std::string>> echoes;
    for (int i = 0; i < 1000; ++i) echoes.push_back({"ECHO", "message " + std::to_string(i)});
    std::vector<redis::reply> replies = c.pipeline(echoes, 5s);
    for (int i = 0; i < 1000; ++i)
      if (replies.at(std::size_t(i)).str != "message " + std::to_string(i)) ++out_of_order;
    return std::to_string(replies.size()) + " replies, " + std::to_string(out_of_order) + " out of order";
  });
  EXPECT_EQ(got, "1000 replies, 0 out of order");
}

TEST_P(redis_connection, values_and_keys_are_binary_safe) {
  auto got = in_process(rt(), [a = addr()] {
    auto c = redis::connection::connect(a);
    std::string every_byte;
    for (int b = 0; b < 256; ++b) every_byte += static_cast<char>(b);
    every_byte += std::string("\0\r\n$3\r\n*1\r\n", 12);
    std::string key("key\0with\0nuls", 13);
    std::string big(3 * 1024 * 1024 + 17, '\0');  // many reads of 16 KiB
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31 % 251);
    c.command({"SET", key, every_byte});
    c.command({"SET", "big", big});
    redis::reply back = c.command({"GET", key});
    redis::reply big_back = c.command({"GET", "big"}, 10s);
    std::string other = c.command({"GET", "key"}).to_string();  // the key is not cut at its NUL
    return std::string(back.str == every_byte ? "every byte back" : "bytes differ") + ", " +
           (big_back.str == big ? "3 MiB back" : "big value differs") + ", " + other;
  });
  EXPECT_EQ(got, "every byte back, 3 MiB back, (nil)");
}

TEST_P(redis_connection, a_blocking_command_suspends_only_its_process) {
  // On one scheduler, the process that watches the server while the reader
  // waits in XREAD BLOCK runs only if the reader's wait left the thread.
  auto got = in_process(rt(), [a = addr()] {
    pid me = ember::self();
    pid reader = ember::spawn([a, me] {
      auto c = redis::connection::connect(a);
      ember::send(me, std::string("about to block"));
      redis::reply r = c.command({"XREAD", "BLOCK", "20000", "STREAMS", "events", "$"}, 30s);
      // [[stream, [[id, [field, value]]]]]
      const redis::reply& fields = r.elements.at(0).elements.at(1).elements.at(0).elements.at(1);
      ember::send(me, "reader got " + fields.elements.at(0).str + "=" + fields.elements.at(1).str);
    });
    kill_at_exit guard{reader};
    ember::receive([](const std::string&) {});
    auto c = redis::connection::connect(a);
    int polls = 0;
    while (info_field(c.command({"INFO", "clients"}), "blocked_clients") != "1") {
      if (++polls > 100000) return std::string("the reader never blocked in the server");
      ember::sleep_for(1ms);
    }
    std::string order = "watcher saw the reader blocked; ";
    c.command({"XADD", "events", "*", "colour", "blue"});
    return order + ember::receive([](const std::string& s) { return s; });
  });
  EXPECT_EQ(got, "watcher saw the reader blocked; reader got colour=blue");
}

TEST_P(redis_connection, a_connection_moved_into_another_process_outlives_the_process_that_made_it) {
  inbox<std::string> out;
  rt().spawn([a = addr(), out] {
    auto c = redis::connection::connect(a);
    c.command({"SET", "handed", "over"});
    pid maker = ember::self();
    ember::spawn([c = std::move(c), maker, out]() mutable {
      out.put(kind_of(c.command({"PING"})));  // its socket is this process's from now on
      auto ref = ember::monitor(maker);
      ember::send(maker, std::string("mine"));
      ember::receive(ember::when([ref](const ember::down& d) { return d.ref == ref; }, [](const ember::down&) {}));
      out.put(kind_of(c.command({"GET", "handed"})) + (c.connected() ? ", connected" : ", closed"));
    });
    ember::receive([](const std::string&) {});
  });
  EXPECT_EQ(out.take(), "status PONG");
  EXPECT_EQ(out.take(), "string over, connected");
}

TEST_P(redis_connection, a_command_that_times_out_closes_the_connection) {
  auto got = in_process(rt(), [a = addr()] {
    auto c = redis::connection::connect(a);
    failure f = failure_of([&] { c.command({"BLPOP", "empty-list", "0"}, 50ms); });
    std::string out = f.outcome + (mentions(f.what, a) ? " naming the address" : " without the address: " + f.what);
    out += c.connected() ? ", still connected" : ", closed";
    // The BLPOP's reply can never be read as the next command's.
    out += ", then " + failure_of([&] { c.command({"PING"}); }).outcome;
    auto fresh = redis::connection::connect(a);
    out += ", a new connection: " + kind_of(fresh.command({"PING"}));
    return out;
  });
  EXPECT_EQ(got, "timed_out naming the address, closed, then closed, a new connection: status PONG");
}

TEST_P(redis_connection, connecting_where_nobody_listens_is_refused_naming_the_address) {
  unused_address unused;
  std::string dead = unused.text();
  auto got = in_process(rt(), [dead] {
    failure f = failure_of([&] { redis::connection::connect(dead, 5s); });
    return f.outcome + (mentions(f.what, dead) ? " naming " + dead : " without the address: " + f.what) +
           (mentions(f.what, "refused") ? ", refused" : ", not saying refused: " + f.what);
  });
  EXPECT_EQ(got, "io_failed naming " + dead + ", refused");
}

TEST_P(redis_connection, a_malformed_address_is_an_invalid_argument) {
  auto got = in_process(rt(), [] {
    std::string out;
    for (std::string bad : {"", "6379", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", ":6379"})
      out += failure_of([&] { redis::connection::connect(bad, 1s); }).outcome + " ";
    return out;
  });
  EXPECT_EQ(got,
            "invalid_argument invalid_argument invalid_argument invalid_argument invalid_argument "
            "invalid_argument invalid_argument ");
}

TEST_P(redis_connection, a_command_with_replies_still_pending_is_refused) {
  auto got = in_process(rt(), [a = addr()] {
    auto c = redis::connection::connect(a);
    c.send({"PING"});
    std::string refused = failure_of([&] { c.command({"GET", "k"}); }).outcome;
    std::string pending = kind_of(c.receive(5s));
    return refused + ", then " + pending + ", then " + kind_of(c.command({"PING"}));
  });
  EXPECT_EQ(got, "invalid_argument, then status PONG, then status PONG");
}

TEST_P(redis_connection, receive_with_nothing_pending_takes_pushed_messages) {
  auto got = in_process(rt(), [a = addr()] {
    auto subscriber = redis::connection::connect(a);
    std::string out = subscriber.command({"SUBSCRIBE", "news"}).to_string() + "\n--\n";
    auto publisher = redis::connection::connect(a);
    publisher.command({"PUBLISH", "news", "extra"});
    return out + subscriber.receive(5s).to_string();
  });
  EXPECT_EQ(got, "1) \"subscribe\"\n2) \"news\"\n3) (integer) 1\n--\n1) \"message\"\n2) \"news\"\n3) \"extra\"");
}

TEST_P(redis_connection, garbage_from_a_server_is_a_redis_error_that_closes_the_connection) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto fake = start_fake_server([](int, int, const std::vector<std::string>&) -> std::optional<std::string> {
      return std::string("?garbage\r\n");
    }, log);
    kill_at_exit guard{fake.id};
    auto c = redis::connection::connect(fake.at.to_string());
    failure f = failure_of([&] { c.command({"PING"}); });
    return f.outcome + (mentions(f.what, fake.at.to_string()) ? " naming the address" : " without it: " + f.what) +
           (mentions(f.what, "protocol error") ? ", a protocol error" : ", " + f.what) +
           (c.connected() ? ", connected" : ", closed");
  });
  EXPECT_EQ(got, "redis_error naming the address, a protocol error, closed");
}

TEST_P(redis_connection, a_server_closing_in_the_middle_of_a_reply_is_reported_closed) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto fake = start_fake_server([](int, int index, const std::vector<std::string>&) -> std::optional<std::string> {
      if (index == 0) return std::string("$10\r\nabc");  // 3 bytes of 10
      return std::nullopt;
    }, log);
    kill_at_exit guard{fake.id};
    auto c = redis::connection::connect(fake.at.to_string());
    c.send({"GET", "k"});
    c.send({"GET", "k"});  // answered by closing
    failure f = failure_of([&] { c.receive(5s); });
    return f.outcome + (mentions(f.what, "closed the connection") ? ": the server closed it" : ": " + f.what);
  });
  EXPECT_EQ(got, "closed: the server closed it");
}

INSTANTIATE_TEST_SUITE_P(sched, redis_connection, ::testing::Values(1u, 4u), scheduler_count_name);

// ------------------------------------------------------ client (standalone)

class redis_client_standalone : public redis_connection {};

redis::client_options quick_options(std::vector<std::string> seeds) {
  redis::client_options o;
  o.seeds = std::move(seeds);
  o.connect_timeout = 1s;
  o.command_timeout = 5s;
  o.backoff_min = 5ms;
  o.backoff_max = 50ms;
  return o;
}

TEST_P(redis_client_standalone, a_client_finds_a_standalone_server_and_runs_commands_and_pipelines) {
  auto got = in_process(rt(), [a = addr()] {
    redis::client db(quick_options({a}));
    std::string out = db.cluster_mode() ? "cluster? " : "";
    out += kind_of(db.command({"SET", "name", "ember"})) + ", ";
    out += kind_of(db.command({"GET", "name"})) + ", ";
    out += kind_of(db.command({"PING"}, -1)) + ", ";
    out += kind_of(db.command({"HGET", "name", "field"})) + ", ";  // a wrong-type error, as a value
    auto replies = db.pipeline({{"INCR", "{n}a"}, {"INCR", "{n}b"}, {"INCR", "{n}a"}});
    for (auto& r : replies) out += kind_of(r) + " ";
    // The one-slot rule holds here too, so that what runs on one server runs on a cluster.
    out += failure_of([&] { db.pipeline({{"INCR", "a"}, {"INCR", "b"}}); }).outcome + " ";
    out += db.cluster_mode() ? "(cluster)" : "(standalone)";
    return out;
  });
  EXPECT_EQ(got,
            "status OK, string ember, status PONG, error WRONGTYPE Operation against a key holding the wrong kind of "
            "value, integer 1 integer 1 integer 2 invalid_argument (standalone)");
}

TEST_P(redis_client_standalone, a_client_that_cannot_reach_its_server_gives_up_naming_the_command_not_its_arguments) {
  unused_address unused;
  std::string dead = unused.text();
  auto got = in_process(rt(), [dead] {
    redis::client_options o = quick_options({dead});
    o.command_timeout = 300ms;
    redis::client db(o);
    failure f = failure_of([&] { db.command({"GET", "secret-argument"}); });
    std::string out = f.outcome;
    out += mentions(f.what, "GET") ? ", names GET" : ", does not name GET: " + f.what;
    out += mentions(f.what, "secret-argument") ? ", shows the argument!" : ", hides the argument";
    out += mentions(f.what, dead) && mentions(f.what, "refused") ? ", says why" : ", does not say why: " + f.what;
    return out;
  });
  EXPECT_EQ(got, "unavailable, names GET, hides the argument, says why");
}

// A fake standalone server that is loading, then busy with a migration,
// then says the cluster is down, and then answers.
std::optional<std::string> busy_three_times(int, int index, const std::vector<std::string>& cmd) {
  if (cmd.at(0) == "CLUSTER") return std::string("-ERR This instance has cluster support disabled\r\n");
  switch (index) {  // 0 and 4: CLUSTER SLOTS (again after CLUSTERDOWN)
    case 1: return std::string("-LOADING Redis is loading the dataset in memory\r\n");
    case 2: return std::string("-TRYAGAIN Multiple keys request during rehashing of slot\r\n");
    case 3: return std::string("-CLUSTERDOWN The cluster is down\r\n");
  }
  return std::string("+PONG\r\n");
}

TEST_P(redis_client_standalone, loading_tryagain_and_clusterdown_are_retried_until_an_answer) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto fake = start_fake_server(busy_three_times, log);
    kill_at_exit guard{fake.id};
    redis::client db(quick_options({fake.at.to_string()}));
    return kind_of(db.command({"PING"}));
  });
  EXPECT_EQ(got, "status PONG");
  EXPECT_EQ(log.take(), "accept 0");
  EXPECT_EQ(log.size(), 0u) << "one connection throughout";
}

TEST_P(redis_client_standalone, max_attempts_bounds_the_retries) {
  unused_address unused;
  std::string dead = unused.text();
  auto got = in_process(rt(), [dead] {
    redis::client_options o = quick_options({dead});
    o.command_timeout = 60s;  // the attempts end it, not the deadline
    o.max_attempts = 3;
    redis::client db(o);
    failure f = failure_of([&] { db.command({"PING"}); });
    return f.outcome + (mentions(f.what, "3 attempts") ? ", after 3 attempts" : ": " + f.what);
  });
  EXPECT_EQ(got, "unavailable, after 3 attempts");
}

TEST_P(redis_client_standalone, bad_client_options_are_invalid_arguments) {
  auto outcome = [](redis::client_options o) { return failure_of([&] { redis::client c(std::move(o)); }).outcome; };
  redis::client_options none;
  EXPECT_EQ(outcome(none), "invalid_argument");
  redis::client_options backwards = quick_options({"127.0.0.1:1"});
  backwards.backoff_min = 100ms;
  backwards.backoff_max = 10ms;
  EXPECT_EQ(outcome(backwards), "invalid_argument");
  redis::client_options zero = quick_options({"127.0.0.1:1"});
  zero.command_timeout = 0ms;
  EXPECT_EQ(outcome(zero), "invalid_argument");
}

// A standalone fake server that answers the first SET of its first
// connection and then hangs up; on later connections it answers all.
std::optional<std::string> hang_up_after_one_set(int conn, int index, const std::vector<std::string>& cmd) {
  if (cmd.at(0) == "CLUSTER") return std::string("-ERR This instance has cluster support disabled\r\n");
  if (conn == 0 && index >= 2) return std::nullopt;  // 0: CLUSTER SLOTS, 1: the first SET
  return std::string("+OK\r\n");
}

TEST_P(redis_client_standalone, a_pipeline_lost_halfway_is_not_sent_again_unless_idempotent) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto fake = start_fake_server(hang_up_after_one_set, log);
    kill_at_exit guard{fake.id};
    redis::client db(quick_options({fake.at.to_string()}));
    std::vector<std::vector<std::string>> sets{{"SET", "{t}a", "1"}, {"SET", "{t}b", "2"}, {"SET", "{t}c", "3"}};
    failure f = failure_of([&] { db.pipeline(sets, 1, /*idempotent=*/false); });
    return f.outcome + (mentions(f.what, "may or may not have run") ? ", may have run" : ": " + f.what) +
           (mentions(f.what, "pipeline of 3 commands (SET)") ? ", names the pipeline" : ": " + f.what);
  });
  EXPECT_EQ(got, "unavailable, may have run, names the pipeline");
  EXPECT_EQ(log.take(), "accept 0");
  EXPECT_EQ(log.size(), 0u) << "not retried on a new connection";
}

TEST_P(redis_client_standalone, an_idempotent_pipeline_lost_halfway_is_sent_again_whole) {
  inbox<std::string> log;
  auto got = in_process(rt(), [log] {
    auto fake = start_fake_server(hang_up_after_one_set, log);
    kill_at_exit guard{fake.id};
    redis::client db(quick_options({fake.at.to_string()}));
    std::vector<std::vector<std::string>> sets{{"SET", "{t}a", "1"}, {"SET", "{t}b", "2"}, {"SET", "{t}c", "3"}};
    std::string out;
    for (auto& r : db.pipeline(sets)) out += kind_of(r) + " ";
    return out;
  });
  EXPECT_EQ(got, "status OK status OK status OK ");
  EXPECT_EQ(log.take(), "accept 0");
  EXPECT_EQ(log.take(), "accept 1");
}

INSTANTIATE_TEST_SUITE_P(sched, redis_client_standalone, ::testing::Values(1u, 4u), scheduler_count_name);

// ------------------------------------------------------------- server loss

class redis_server_loss : public runtime_test {};

TEST_P(redis_server_loss, a_server_killed_under_a_command_is_a_clear_error_and_the_client_reconnects_after_restart) {
  redis_server server({"--appendonly", "yes"});
  std::string a = server.address();
  inbox<std::string> events;
  pid p = rt().spawn([a, events] {
    auto c = redis::connection::connect(a);
    redis::client db(quick_options({a}));
    db.command({"SET", "survivor", "kept by the append-only file"});
    events.put("blocking");
    failure f = failure_of([&] { c.command({"BLPOP", "nothing", "0"}, 30s); });
    events.put(f.outcome + (mentions(f.what, a) ? " naming the address" : " without it: " + f.what) +
               (c.connected() ? ", connected" : ", closed"));
    ember::receive([](const std::string&) {});  // restarted
    events.put(kind_of(db.command({"GET", "survivor"})));
    events.put(kind_of(db.command({"INCR", "after"})));
  });
  EXPECT_EQ(events.take(), "blocking");
  EXPECT_TRUE(eventually([&] {
    return redis_detail::info_field(redis_server::bulk_text(server.command({"INFO", "clients"})), "blocked_clients") ==
           "1";
  }, hang_limit)) << "the BLPOP never blocked";
  server.kill();
  std::string killed = events.take();
  EXPECT_TRUE(killed == "closed naming the address, closed" || killed == "io_failed naming the address, closed")
      << killed;
  server.restart();
  rt().send(p, std::string("restarted"));
  EXPECT_EQ(events.take(), "string kept by the append-only file");
  EXPECT_EQ(events.take(), "integer 1");
}

TEST_P(redis_server_loss, a_client_retries_while_the_server_is_down_and_succeeds_once_it_is_back) {
  redis_server server;
  std::string a = server.address();
  server.stop();
  inbox<std::string> events;
  rt().spawn([a, events] {
    redis::client_options o = quick_options({a});
    o.command_timeout = hang_limit;
    redis::client db(o);
    events.put("trying");
    events.put(kind_of(db.command({"PING"})));
  });
  EXPECT_EQ(events.take(), "trying");
  server.restart();
  EXPECT_EQ(events.take(), "status PONG");
}

INSTANTIATE_TEST_SUITE_P(sched, redis_server_loss, ::testing::Values(1u, 4u), scheduler_count_name);

// ---------------------------------------------------------------- cluster

// One three-master cluster for the suite.
class redis_cluster_client : public runtime_test {
 protected:
  static void SetUpTestSuite() { cluster_ = new redis_cluster(); }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  static redis_cluster& cluster() { return *cluster_; }
  std::string tag() const { return std::to_string(GetParam()); }

 private:
  static inline redis_cluster* cluster_ = nullptr;
};

// A key per master: the first "<prefix><n>" whose slot is in each range.
std::vector<std::string> one_key_per_master(const std::string& prefix) {
  std::vector<std::string> keys(3);
  for (int n = 0; keys[0].empty() || keys[1].empty() || keys[2].empty(); ++n) {
    std::string k = prefix + std::to_string(n);
    int slot = redis::key_slot(k);
    for (std::size_t i = 0; i < 3; ++i)
      if (keys[i].empty() && slot >= redis_cluster::ranges[i].first && slot <= redis_cluster::ranges[i].second)
        keys[i] = k;
  }
  return keys;
}

TEST_P(redis_cluster_client, keys_owned_by_every_master_are_set_and_read_back_through_one_seed) {
  std::vector<std::string> keys = one_key_per_master("spread:" + tag() + ":");
  auto got = in_process(rt(), [seed = cluster().node(0).address(), keys] {
    redis::client db(quick_options({seed}));
    std::string out;
    for (const auto& k : keys) out += kind_of(db.command({"SET", k, "value of " + k})) + " ";
    for (const auto& k : keys) out += db.command({"GET", k}).str == "value of " + k ? "read " : "wrong ";
    return out + (db.cluster_mode() ? "(cluster)" : "(standalone)");
  });
  EXPECT_EQ(got, "status OK status OK status OK read read read (cluster)");
  // Each key is on the master its slot belongs to, which the others redirect to.
  std::set<int> owners;
  for (const auto& k : keys) {
    int owner = cluster().owner_of(redis::key_slot(k));
    owners.insert(owner);
    EXPECT_EQ(redis_server::bulk_text(cluster().node(owner).command({"GET", k})), "value of " + k);
    EXPECT_EQ(cluster().node((owner + 1) % 3).command({"GET", k}).substr(0, 7), "-MOVED ");
  }
  EXPECT_EQ(owners.size(), 3u);
}

TEST_P(redis_cluster_client, a_slot_migration_is_followed_through_ask_then_moved) {
  cluster().wait_until_settled();  // after the last test's migration (see there)
  std::string key = "migrating:" + tag();
  int slot = redis::key_slot(key);
  int from = cluster().owner_of(slot);
  ASSERT_GE(from, 0);
  int to = (from + 1) % 3;
  redis_cluster* cl = &cluster();
  auto got = in_process(rt(), [seed = cl->node(from).address(), key, slot, from, to, cl] {
    redis::client db(quick_options({seed}));
    std::string out = kind_of(db.command({"SET", key, "moving value"})) + "; ";
    // Move the key to `to`, leaving the slot half-migrated (the fixture's
    // blocking sockets, so on the blocking pool).
    std::string asked = ember::blocking([&] {
      std::string s = std::to_string(slot);
      std::string steps = cl->node(to).command({"CLUSTER", "SETSLOT", s, "IMPORTING", cl->node_id(from)});
      steps += cl->node(from).command({"CLUSTER", "SETSLOT", s, "MIGRATING", cl->node_id(to)});
      steps += cl->node(from).command(
          {"MIGRATE", "127.0.0.1", std::to_string(cl->node(to).port()), "", "0", "5000", "KEYS", key});
      if (steps != "+OK\r\n+OK\r\n+OK\r\n") return "migration failed: " + steps;
      return cl->node(from).command({"GET", key}).substr(0, 5);
    });
    out += "old owner says " + asked + "; ";
    out += "during: " + kind_of(db.command({"GET", key})) + "; ";
    std::string moved = ember::blocking([&] {
      std::string s = std::to_string(slot);
      std::string steps;
      for (int n : {to, from, 3 - from - to}) steps += cl->node(n).command({"CLUSTER", "SETSLOT", s, "NODE", cl->node_id(to)});
      if (steps != "+OK\r\n+OK\r\n+OK\r\n") return "setslot failed: " + steps;
      return cl->node(from).command({"GET", key}).substr(0, 7);
    });
    out += "old owner says " + moved + "; ";
    out += "after: " + kind_of(db.command({"GET", key})) + "; ";
    out += "write: " + kind_of(db.command({"APPEND", key, "!"}));
    return out;
  });
  EXPECT_EQ(got,
            "status OK; old owner says -ASK ; during: string moving value; old owner says -MOVED ; "
            "after: string moving value; write: integer 13");
  EXPECT_EQ(cluster().owner_of(slot), to);
  EXPECT_EQ(redis_server::bulk_text(cluster().node(to).command({"GET", key})), "moving value!");
}

TEST_P(redis_cluster_client, a_moved_redirection_is_followed_even_when_key_index_names_no_key) {
  // key_index 0 routes by the slot of "GET"; the masters that do not own
  // the key answer MOVED, which names the one that does.
  std::vector<std::string> keys = one_key_per_master("misrouted:" + tag() + ":");
  auto got = in_process(rt(), [seed = cluster().node(0).address(), keys] {
    redis::client db(quick_options({seed}));
    std::string out;
    for (const auto& k : keys) out += kind_of(db.command({"SET", k, "v"}, 0)) + " ";
    for (const auto& k : keys) out += kind_of(db.command({"GET", k}, 0)) + " ";
    return out;
  });
  EXPECT_EQ(got, "status OK status OK status OK string v string v string v ");
}

TEST_P(redis_cluster_client, a_pipeline_across_slots_is_refused_and_one_within_a_hash_tag_runs) {
  auto got = in_process(rt(), [seed = cluster().node(0).address(), t = tag()] {
    redis::client db(quick_options({seed}));
    std::string out = failure_of([&] { db.pipeline({{"SET", "a" + t, "1"}, {"SET", "b" + t, "2"}}); }).outcome;
    std::string user = "{user" + t + "}";
    auto replies = db.pipeline({{"SET", user + ".name", "ada"}, {"INCR", user + ".visits"}, {"GET", user + ".name"}, {"PING"}});
    for (auto& r : replies) out += ", " + kind_of(r);
    return out;
  });
  EXPECT_EQ(got, "invalid_argument, status OK, integer 1, string ada, status PONG");
}

TEST_P(redis_cluster_client, key_slot_agrees_with_the_servers_cluster_keyslot) {
  std::vector<std::string> keys{"foo", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "{", "}", "{}",
                                "a{b}c", "", std::string("bin\0ary{\xff\x01}", 11), "\xe2\x82\xac"};
  for (int i = 0; i < 200; ++i) keys.push_back("key:" + std::to_string(i * 7919));
  for (const auto& k : keys) {
    std::string raw = cluster().node(0).command({"CLUSTER", "KEYSLOT", k});
    EXPECT_EQ(raw, ":" + std::to_string(redis::key_slot(k)) + "\r\n") << "key " << k;
  }
}

TEST_P(redis_cluster_client, connection_for_key_is_the_clients_connection_to_the_keys_master) {
  auto got = in_process(rt(), [seed = cluster().node(0).address(), t = tag()] {
    redis::client db(quick_options({seed}));
    std::string out;
    for (const auto& k : one_key_per_master("owned:" + t + ":")) {
      db.command({"SET", k, "here"});
      redis::connection& c = db.connection_for_key(k);
      out += kind_of(c.command({"GET", k})) + (&c == &db.connection_for_key(k) ? " (same), " : " (another), ");
    }
    return out;
  });
  EXPECT_EQ(got, "string here (same), string here (same), string here (same), ");
}

TEST_P(redis_cluster_client, a_dedicated_connection_blocks_in_xreadgroup_without_holding_up_the_client) {
  auto got = in_process(rt(), [seed = cluster().node(1).address(), t = tag()] {
    std::string stream = "jobs:" + t;
    redis::client db(quick_options({seed}));
    db.command({"DEL", stream});
    db.command({"XGROUP", "CREATE", stream, "workers", "$", "MKSTREAM"}, 2);
    pid me = ember::self();
    redis::connection blocking = db.dedicated_connection_for_key(stream);
    pid worker = ember::spawn([c = std::move(blocking), stream, me]() mutable {
      redis::reply r = c.command({"XREADGROUP", "GROUP", "workers", "w1", "BLOCK", "20000", "STREAMS", stream, ">"}, 30s);
      const redis::reply& fields = r.elements.at(0).elements.at(1).elements.at(0).elements.at(1);
      ember::send(me, "worker got " + fields.elements.at(0).str + "=" + fields.elements.at(1).str);
    });
    kill_at_exit guard{worker};
    std::string out = kind_of(db.command({"PING"}, -1)) + ", ";  // the client's own connections are free
    db.command({"XADD", stream, "*", "job", "42"});
    return out + ember::receive([](const std::string& s) { return s; });
  });
  EXPECT_EQ(got, "status PONG, worker got job=42");
}

INSTANTIATE_TEST_SUITE_P(sched, redis_cluster_client, ::testing::Values(1u, 4u), scheduler_count_name);

}  // namespace
