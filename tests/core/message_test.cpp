// Messages: any copyable or movable value; send never blocks; sending to a
// dead pid does nothing; messages from one sender arrive in send order.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::pid;

class messages : public runtime_test {};

struct record {
  std::string name;
  std::vector<int> values;
  std::map<std::string, int> index;
  bool operator==(const record&) const = default;
};

TEST_P(messages, copyable_value_arrives_as_an_equal_copy) {
  record original{"r", {1, 2, 3}, {{"a", 1}}};
  oneshot<record> got;
  pid p = rt().spawn([got] { got.set(ember::receive([](record r) { return r; })); });
  rt().send(p, original);  // an lvalue: copied
  EXPECT_EQ(got.get(), original);
  EXPECT_EQ(original.values.size(), 3u) << "the sender's value is untouched";
}

TEST_P(messages, message_is_a_copy_not_shared_with_the_sender) {
  auto got = in_process(rt(), [] {
    struct holder {
      std::vector<int> v;
    };
    holder h{{1, 2, 3}};
    pid me = ember::self();
    ember::send(me, h);
    h.v.push_back(4);  // changes after sending do not reach the message
    return ember::receive([](holder x) { return int(x.v.size()); });
  });
  EXPECT_EQ(got, 3);
}

// Messages are copied into the receiver's heap: move-only types are refused
// at compile time, and travel as ember::shared<T> instead.
static_assert(!ember::detail::sendable_value<std::unique_ptr<int>>);
static_assert(!ember::detail::sendable_value<std::pair<pid, std::unique_ptr<int>>>);
static_assert(ember::detail::sendable_value<ember::shared<std::unique_ptr<int>>>);
static_assert(ember::detail::sendable_value<std::string>);

TEST_P(messages, shared_value_travels_without_copy_between_processes) {
  auto got = in_process(rt(), [] {
    pid child = ember::spawn([] {
      auto [from, box] = ember::receive(
          [](std::pair<pid, ember::shared<std::unique_ptr<int>>> m) { return m; });
      ember::send(from, box);
    });
    auto box = ember::shared<std::unique_ptr<int>>::make(std::make_unique<int>(99));
    const int* address = box->get();
    ember::send(child, std::make_pair(ember::self(), box));
    box.reset();
    return ember::receive([&](ember::shared<std::unique_ptr<int>> p) {
      return (p && p->get() == address) ? **p : -1;  // the same int, not a copy
    });
  });
  EXPECT_EQ(got, 99);
}

TEST_P(messages, shared_value_can_be_sent_from_outside) {
  oneshot<int> got;
  pid p = rt().spawn([got] {
    got.set(ember::receive([](ember::shared<int> v) { return *v; }));
  });
  rt().send(p, ember::share(5));
  EXPECT_EQ(got.get(), 5);
}

TEST_P(messages, string_literal_arrives_as_std_string) {
  oneshot<std::string> got;
  pid p = rt().spawn([got] { got.set(ember::receive([](std::string s) { return s; })); });
  rt().send(p, "hello");
  EXPECT_EQ(got.get(), "hello");
}

TEST_P(messages, process_can_send_to_itself) {
  EXPECT_EQ(in_process(rt(), [] {
              ember::send(ember::self(), 17);
              return ember::receive([](int v) { return v; });
            }),
            17);
}

TEST_P(messages, send_never_blocks_even_when_the_receiver_does_not_receive) {
  // The receiver is blocked waiting for a message type nobody sends yet;
  // 100,000 sends complete and all wait in its mailbox.
  constexpr int n = 100'000;
  oneshot<std::size_t> queued;
  pid receiver = rt().spawn([queued] {
    ember::receive([](std::string) {});
    queued.set(ember::message_queue_len());
    ember::flush();
  });
  auto sent = in_process(rt(), [receiver] {
    for (int i = 0; i < n; ++i) ember::send(receiver, i);
    return n;
  });
  EXPECT_EQ(sent, n);
  rt().send(receiver, "go");
  EXPECT_EQ(queued.get(), std::size_t(n));
}

TEST_P(messages, send_to_a_dead_pid_is_a_no_op) {
  watched dead = spawn_watched(rt(), [] {});
  ASSERT_TRUE(exit_of(dead).is_normal());
  EXPECT_NO_THROW(rt().send(dead.id, 1));
  EXPECT_NO_THROW(rt().send(ember::pid(0, 123456, 77), 1)) << "a pid that never existed";
  auto got = in_process(rt(), [p = dead.id] {
    ember::send(p, std::string("lost"));
    ember::send(ember::pid(), 1);  // the null pid
    return ember::message_queue_len();
  });
  EXPECT_EQ(got, 0u);
}

TEST_P(messages, messages_from_one_sender_arrive_in_send_order) {
  constexpr int n = 10'000;
  oneshot<int> out_of_order;
  pid receiver = rt().spawn([out_of_order] {
    int bad = 0;
    for (int i = 0; i < n; ++i) bad += ember::receive([i](int v) { return v == i ? 0 : 1; });
    out_of_order.set(bad);
  });
  in_process(rt(), [receiver] {
    for (int i = 0; i < n; ++i) ember::send(receiver, i);
  });
  EXPECT_EQ(out_of_order.get(), 0);
}

TEST_P(messages, messages_sent_from_outside_arrive_in_send_order) {
  constexpr int n = 10'000;
  oneshot<int> out_of_order;
  pid receiver = rt().spawn([out_of_order] {
    int bad = 0;
    for (int i = 0; i < n; ++i) bad += ember::receive([i](int v) { return v == i ? 0 : 1; });
    out_of_order.set(bad);
  });
  for (int i = 0; i < n; ++i) rt().send(receiver, i);
  EXPECT_EQ(out_of_order.get(), 0);
}

struct numbered {
  int sender;
  int seq;
};

TEST_P(messages, messages_of_each_concurrent_sender_arrive_in_that_senders_order) {
  constexpr int senders = 8;
  constexpr int per_sender = 10'000;
  oneshot<std::string> verdict;
  pid receiver = rt().spawn([verdict] {
    std::vector<int> next(senders, 0);
    int bad = 0;
    for (int i = 0; i < senders * per_sender; ++i) {
      ember::receive([&](numbered m) {
        if (m.seq != next[std::size_t(m.sender)]) ++bad;
        next[std::size_t(m.sender)] = m.seq + 1;
      });
    }
    std::string r = "out of order: " + std::to_string(bad);
    for (int s = 0; s < senders; ++s) r += " " + std::to_string(next[std::size_t(s)]);
    verdict.set(r);
  });
  for (int s = 0; s < senders; ++s) {
    rt().spawn([receiver, s] {
      for (int i = 0; i < per_sender; ++i) ember::send(receiver, numbered{s, i});
    });
  }
  std::string expected = "out of order: 0";
  for (int s = 0; s < senders; ++s) expected += " " + std::to_string(per_sender);
  EXPECT_EQ(verdict.get(), expected);
}

TEST_P(messages, messages_of_each_outside_thread_arrive_in_that_threads_order) {
  constexpr int threads = 4;
  constexpr int per_thread = 10'000;
  oneshot<int> bad_count;
  pid receiver = rt().spawn([bad_count] {
    std::vector<int> next(threads, 0);
    int bad = 0;
    for (int i = 0; i < threads * per_thread; ++i) {
      ember::receive([&](numbered m) {
        if (m.seq != next[std::size_t(m.sender)]) ++bad;
        next[std::size_t(m.sender)] = m.seq + 1;
      });
    }
    bad_count.set(bad);
  });
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) rt().send(receiver, numbered{t, i});
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad_count.get(), 0);
}

TEST_P(messages, message_sent_before_the_sender_exits_is_delivered) {
  // Erlang: a message sent is delivered even if its sender dies right after.
  oneshot<int> got;
  pid receiver = rt().spawn([got] { got.set(ember::receive([](int v) { return v; })); });
  watched sender = spawn_watched(rt(), [receiver] {
    ember::send(receiver, 1234);
    throw std::runtime_error("dies right after sending");
  });
  EXPECT_EQ(got.get(), 1234);
  EXPECT_EQ(exit_of(sender).exception_type(), "std::runtime_error");
}

TEST_P(messages, messages_and_exit_signals_from_one_sender_arrive_in_send_order) {
  // Erlang orders all signals between a pair of processes: a trapping
  // receiver sees the exit signal between the messages sent around it.
  oneshot<void> trapping;
  oneshot<std::vector<std::string>> seen;
  pid receiver = rt().spawn([trapping, seen] {
    ember::trap_exit(true);
    trapping.set();
    std::vector<std::string> out;
    for (int i = 0; i < 5; ++i) {
      out.push_back(ember::receive(
          [](int v) { return std::to_string(v); },
          [](ember::exit_signal s) { return "exit " + s.reason.to_string(); }));
    }
    seen.set(out);
  });
  trapping.get();
  in_process(rt(), [receiver] {
    ember::send(receiver, 1);
    ember::send(receiver, 2);
    ember::exit(receiver, "between");
    ember::send(receiver, 3);
    ember::send(receiver, 4);
  });
  EXPECT_EQ(seen.get(), (std::vector<std::string>{"1", "2", "exit between", "3", "4"}));
}

TEST_P(messages, message_sent_before_exiting_arrives_before_the_down) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    std::vector<std::string> out;
    for (int round = 0; round < 50; ++round) {
      auto [c, ref] = ember::spawn_monitor([me] {
        ember::send(me, 1);
        ember::send(me, 2);
      });
      (void)c;
      (void)ref;
      std::string seq;
      for (int i = 0; i < 3; ++i)
        seq += ember::receive([](int v) { return std::to_string(v); },
                              [](ember::down d) { return "down " + d.reason.to_string(); }) +
               (i < 2 ? "," : "");
      out.push_back(seq);
    }
    return out;
  });
  for (auto& seq : got) EXPECT_EQ(seq, "1,2,down normal");
}

TEST_P(messages, message_sent_before_a_crash_arrives_before_the_exit_signal) {
  auto got = in_process(rt(), [] {
    ember::trap_exit(true);
    pid me = ember::self();
    std::string seq;
    ember::spawn_link([me] {
      ember::send(me, 1);
      throw std::runtime_error("after sending");
    });
    for (int i = 0; i < 2; ++i)
      seq += ember::receive([](int v) { return std::to_string(v); },
                            [](ember::exit_signal s) { return " exit " + std::string(s.reason.text()); });
    return seq;
  });
  EXPECT_EQ(got, "1 exit after sending");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(messages);

}  // namespace
