// Durable mailboxes: persisted messages acknowledged only after their
// handler returns, redelivered (with their count) after a crash of the
// process or of its whole node, taken over from a consumer that is gone,
// dead-lettered when poisonous or malformed. Against a redis-server the
// suite starts; the fault test runs the consumer's node as an OS process
// (durable_consumer) and kills it three times.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "ember/dist/durable.hpp"
#include "ember/dist/node.hpp"
#include "ember/dist/redis.hpp"
#include "ember_test.hpp"
#include "node_messages.capnp.h"
#include "redis_server.hpp"

namespace {

using namespace ember_test;
using ember::wire;
namespace durable = ember::durable;

wire<Seq> seq(std::uint64_t n) {
  return wire<Seq>::build([&](Seq::Builder b) { b.setN(n); });
}

class dist_durable : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { redis_ = new redis_server(); }
  static void TearDownTestSuite() {
    delete redis_;
    redis_ = nullptr;
  }
  void SetUp() override {
    ember::node_options o;
    o.name = "t";
    o.cluster = cluster();
    o.redis = {redis_->address()};
    o.heartbeat = 100ms;
    o.down_after = 1000ms;
    node_.emplace(rt_, o);
  }
  void TearDown() override {
    node_.reset();
    rt_.shutdown();
  }
  std::string cluster() const {
    return std::string("d_") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  std::string key(const std::string& mailbox) const { return "{ember:" + cluster() + ":dm:" + mailbox + "}"; }
  // A Redis command from inside a process (its reply as redis-cli prints it).
  static std::string redis(const std::vector<std::string>& args) {
    ember::redis::client_options o;
    o.seeds = {redis_->address()};
    ember::redis::client c(o);
    return c.command(args).to_string();
  }
  static std::int64_t redis_int(const std::vector<std::string>& args) {
    ember::redis::client_options o;
    o.seeds = {redis_->address()};
    ember::redis::client c(o);
    return c.command(args).integer;
  }

  ember::runtime rt_{ember::runtime_options{.schedulers = 2}};
  std::optional<ember::node> node_;
  static redis_server* redis_;
};
redis_server* dist_durable::redis_ = nullptr;

TEST_F(dist_durable, messages_sent_before_the_consumer_attaches_arrive_in_order_and_are_acknowledged) {
  std::string k = key("a");
  auto got = in_process(rt_, [k] {
    durable::producer out;
    for (std::uint64_t i = 0; i < 20; ++i) out.send("a", seq(i));
    std::vector<wire<Seq>> more;
    for (std::uint64_t i = 20; i < 50; ++i) more.push_back(seq(i));
    auto ids = out.send_all("a", more);
    durable::mailbox box("a");
    std::string order;
    bool in_order = true, first_time = true;
    for (std::uint64_t i = 0; i < 50; ++i)
      box.receive<Seq>([&](const durable::delivery<Seq>& d) {
        in_order = in_order && d.message.get().getN() == i;
        first_time = first_time && d.deliveries == 1;
      });
    std::int64_t pending = redis_int({"XLEN", k});
    std::string summary = redis({"XPENDING", k, "ember"});
    return std::to_string(ids.size()) + " ids, " + (in_order ? "in order" : "out of order") +
           (first_time ? ", first deliveries, " : ", redelivered?, ") + std::to_string(pending) + " kept, pending: " +
           summary.substr(0, summary.find('\n'));
  });
  EXPECT_EQ(got, "30 ids, in order, first deliveries, 50 kept, pending: 1) (integer) 0");
}

TEST_F(dist_durable, a_message_whose_handler_throws_is_redelivered_to_the_restarted_process_with_its_count) {
  oneshot<std::string> first_id;
  watched w = spawn_watched(rt_, [first_id] {
    durable::producer out;
    out.send("b", seq(7));
    durable::mailbox box("b");
    box.receive<Seq>([&](const durable::delivery<Seq>& d) {
      first_id.set(d.id + " " + std::to_string(d.deliveries));
      throw std::runtime_error("handler failed");
    });
  });
  EXPECT_EQ(exit_of(w).to_string(), "exception: std::runtime_error: handler failed");
  std::string first = first_id.get();
  auto second = in_process(rt_, [] {
    durable::mailbox box("b");
    std::string s;
    box.receive<Seq>([&](const durable::delivery<Seq>& d) {
      s = d.id + " " + std::to_string(d.deliveries) + " n=" + std::to_string(d.message.get().getN());
    });
    return s;
  });
  EXPECT_EQ(first.substr(first.find(' ')), " 1");
  EXPECT_EQ(second, first.substr(0, first.find(' ')) + " 2 n=7");
}

TEST_F(dist_durable, a_poison_message_is_dead_lettered_after_max_deliveries_and_the_next_one_is_handled) {
  in_process(rt_, [] {
    durable::producer out;
    out.send("c", seq(666));
    out.send("c", seq(1));
  });
  durable::options o;
  o.max_deliveries = 3;
  int crashes = 0;
  std::optional<std::string> handled;
  for (int attempt = 0; attempt < 6 && !handled; ++attempt) {
    oneshot<std::string> result;
    watched w = spawn_watched(rt_, [o, result] {
      durable::mailbox box("c", o);
      box.receive<Seq>([&](const durable::delivery<Seq>& d) {
        if (d.message.get().getN() == 666) throw std::runtime_error("poison");
        result.set("handled " + std::to_string(d.message.get().getN()));
      });
    });
    exit_of(w);
    if (result.ready()) {
      handled = result.get();
    } else {
      ++crashes;
    }
  }
  EXPECT_EQ(crashes, 3);
  EXPECT_EQ(handled.value_or("nothing"), "handled 1");
  std::string k = key("c");
  auto dead = in_process(rt_, [k] { return redis({"XRANGE", k + ":dead", "-", "+"}); });
  EXPECT_NE(dead.find("\"deliveries\"\n"), std::string::npos) << dead;
  EXPECT_NE(dead.find("\"3\""), std::string::npos) << dead;
  EXPECT_NE(dead.find("max_deliveries 3"), std::string::npos) << dead;
}

TEST_F(dist_durable, a_malformed_entry_is_dead_lettered_with_its_reason_and_the_next_one_is_handled) {
  std::string k = key("d");
  auto got = in_process(rt_, [k] {
    durable::producer out;
    redis({"XADD", k, "*", "junk", "1"});
    redis({"XADD", k, "*", "s", "12345", "m", "not capnp"});
    out.send("d", seq(3));
    durable::mailbox box("d");
    std::uint64_t n = 0;
    box.receive<Seq>([&](const durable::delivery<Seq>& d) { n = d.message.get().getN(); });
    return std::to_string(n) + " after " + std::to_string(redis_int({"XLEN", k + ":dead"})) + " dead letters";
  });
  EXPECT_EQ(got, "3 after 2 dead letters");
}

TEST_F(dist_durable, a_message_left_by_a_consumer_that_is_gone_is_taken_over_after_claim_after) {
  oneshot<std::string> taken;
  ember::pid first = rt_.spawn([taken] {
    durable::producer out;
    out.send("e", seq(11));
    durable::options o;
    o.consumer = "w1";
    durable::mailbox box("e", o);
    box.receive<Seq>([&](const durable::delivery<Seq>& d) {
      taken.set(d.id);
      ember::receive([](const wire<Seq>&) {});  // hangs: killed here
    });
  });
  std::string id = taken.get();
  rt_.exit(first, ember::exit_reason::kill());
  auto got = in_process(rt_, [] {
    durable::options o;
    o.consumer = "w2";
    o.claim_after = 300ms;
    durable::mailbox box("e", o);
    std::string s;
    box.receive<Seq>([&](const durable::delivery<Seq>& d) {
      s = d.id + " " + std::to_string(d.deliveries) + " n=" + std::to_string(d.message.get().getN());
    });
    return s;
  });
  EXPECT_EQ(got, id + " 2 n=11");
}

TEST_F(dist_durable, a_mailbox_waits_no_longer_than_its_timeout) {
  auto got = in_process(rt_, [] {
    durable::mailbox box("f");
    return box.receive<Seq>([](const durable::delivery<Seq>&) {}, 200ms);
  });
  EXPECT_FALSE(got);
}

// The consumer's node, an OS process of its own.
struct consumer_process {
  pid_t pid = -1;
  int in = -1;
  consumer_process(const std::string& redis, const std::string& cluster, const std::string& mailbox,
                   const std::string& log) {
    int out_pipe[2], in_pipe[2];
    if (::pipe(out_pipe) != 0 || ::pipe(in_pipe) != 0) throw std::runtime_error("pipe");
    pid = ::fork();
    if (pid == 0) {
      ::dup2(out_pipe[1], 1);
      ::dup2(in_pipe[0], 0);
      ::close(out_pipe[0]);
      ::close(in_pipe[1]);
      ::execl(EMBER_DURABLE_CONSUMER, EMBER_DURABLE_CONSUMER, redis.c_str(), cluster.c_str(), mailbox.c_str(),
              log.c_str(), (char*)nullptr);
      ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(in_pipe[0]);
    in = in_pipe[1];
    std::string line;
    char ch;
    while (::read(out_pipe[0], &ch, 1) == 1 && ch != '\n') line += ch;
    ::close(out_pipe[0]);
    if (line != "ready") throw std::runtime_error("the consumer said: '" + line + "'");
  }
  void kill() {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::close(in);
    pid = -1;
  }
  void stop() {
    ::close(in);  // it leaves
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
  }
  ~consumer_process() {
    if (pid > 0) kill();
  }
};

TEST_F(dist_durable, nothing_is_lost_while_the_consumers_node_is_killed_and_restarted_three_times) {
  const std::uint64_t total = EMBER_TEST_SANITIZED ? 10000 : 100000;
  const std::string mailbox = "numbers", log = "{ember:" + cluster() + "}:processed";
  auto processed = [&] {
    std::string r = redis_->command({"LLEN", log});
    return std::stoll(r.substr(1));
  };
  std::optional<consumer_process> consumer;
  consumer.emplace(redis_->address(), cluster(), mailbox, log);
  // The producer: a process on this node, in batches.
  oneshot<std::string> produced;
  rt_.spawn([total, mailbox, produced] {
    durable::producer out;
    std::uint64_t sent = 0;
    while (sent < total) {
      std::vector<wire<Seq>> batch;
      for (std::uint64_t i = 0; i < 500 && sent < total; ++i) batch.push_back(seq(sent++));
      out.send_all(mailbox, batch);
    }
    produced.set(std::to_string(sent));
  });
  // Kill the consumer's node three times as the work goes on, each time
  // once it has made progress, and start it again.
  for (int k = 1; k <= 3; ++k) {
    long long mark = (long long)(total * k / 5);
    ASSERT_TRUE(eventually([&] { return processed() >= mark; }, 300s)) << "stuck at " << processed();
    consumer->kill();
    consumer.emplace(redis_->address(), cluster(), mailbox, log);
  }
  EXPECT_EQ(produced.get(300s), std::to_string(total));
  // Wait until the group has read everything and acknowledged all of it.
  std::string k = key(mailbox);
  ASSERT_TRUE(eventually(
      [&] {
        return processed() >= (long long)total &&
               redis_->command({"XPENDING", k, "ember"}).rfind("*4\r\n:0\r\n", 0) == 0;
      },
      300s))
      << "processed " << processed() << "; pending: " << redis_->command({"XPENDING", k, "ember"});
  consumer->stop();
  // Every number processed at least once; a number processed again was
  // redelivered (its later processings have a delivery count above 1).
  std::string raw = redis_->command({"LRANGE", log, "0", "-1"});
  std::map<std::uint64_t, std::vector<std::uint64_t>> seen;  // n -> delivery counts, in order
  std::size_t at = raw.find("\r\n") + 2;
  while (at < raw.size()) {
    std::size_t eol = raw.find("\r\n", at);
    std::size_t len = std::stoul(raw.substr(at + 1, eol - at - 1));
    std::string item = raw.substr(eol + 2, len);
    at = eol + 2 + len + 2;
    auto colon = item.find(':');
    seen[std::stoull(item.substr(0, colon))].push_back(std::stoull(item.substr(colon + 1)));
  }
  std::uint64_t missing = 0, duplicates = 0, bad_duplicates = 0;
  for (std::uint64_t n = 0; n < total; ++n) {
    auto it = seen.find(n);
    if (it == seen.end()) {
      ++missing;
      continue;
    }
    for (std::size_t i = 1; i < it->second.size(); ++i) {
      ++duplicates;
      if (it->second[i] <= 1) ++bad_duplicates;
    }
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(bad_duplicates, 0u) << "a number processed twice without being redelivered";
  EXPECT_EQ(seen.size(), total);
  std::cout << "[ info     ] " << total << " messages, 3 kills: " << duplicates << " processed twice (redelivered)\n";
}

}  // namespace
