// observe: the process table, one process in full, runtime samples and the
// supervision tree, read from outside the runtime while it runs.
#include <ember/ember.hpp>
#include <ember/observe/introspect.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using namespace std::chrono_literals;
namespace observe = ember::observe;

class observe_table : public runtime_test {};

std::optional<observe::process_row> row_of(ember::runtime& rt, ember::pid p) {
  for (auto& r : observe::processes(rt))
    if (r.id == p) return r;
  return std::nullopt;
}

struct go {};
struct stop {};
struct other {};

void a_named_function_body() {
  ember::observe::set_label("labelled worker");
  ember::register_name("observe_me", ember::self());
  ember::receive([](stop) {});
}

TEST_P(observe_table, lists_a_waiting_process_with_its_name_label_parent_and_initial_call) {
  inbox<ember::pid> spawned;
  ember::pid parent = rt().spawn([spawned] {
    ember::pid child = ember::spawn([] { a_named_function_body(); });
    spawned.put(child);
    ember::receive([](stop) {});
  });
  ember::pid child = spawned.take();
  ASSERT_TRUE(eventually([&] {
    auto r = row_of(rt(), child);
    return r && r->name == "observe_me" && r->status == observe::process_status::waiting;
  }));
  auto r = *row_of(rt(), child);
  EXPECT_EQ(r.label, "labelled worker");
  EXPECT_EQ(r.parent, parent);
  // A lambda is named after the function it was written in.
  EXPECT_NE(r.initial_call.find("lists_a_waiting_process"), std::string::npos) << r.initial_call;
  EXPECT_EQ(r.scheduler, -1);
  EXPECT_GT(r.stack_bytes, 0u);  // a function process keeps its stack while it waits
  auto top = row_of(rt(), parent);
  ASSERT_TRUE(top);
  EXPECT_FALSE(top->parent);  // spawned from outside any process
  rt().send(child, stop{});
  rt().send(parent, stop{});
}

TEST_P(observe_table, counts_the_messages_a_process_has_not_taken_and_the_heap_it_holds) {
  inbox<ember::pid> ready;
  ember::pid p = rt().spawn([ready] {
    std::vector<char> big(200'000, 'x');  // in this process's heap
    ready.put(ember::self());
    // Waits for `stop` only: the `other` messages stay in the mailbox.
    ember::receive([](stop) {});
    (void)big;
  });
  ready.take();
  for (int i = 0; i < 50; ++i) rt().send(p, other{});
  // The count is the process's own, published as it takes messages in:
  // wake it with a message it leaves too, so it looks at them all.
  ASSERT_TRUE(eventually([&] {
    auto r = row_of(rt(), p);
    return r && r->message_queue_len == 50;
  })) << row_of(rt(), p)->message_queue_len;
  auto r = *row_of(rt(), p);
  EXPECT_GE(r.heap_bytes, 200'000u);
  EXPECT_GE(r.heap_peak_bytes, r.heap_bytes);
  EXPECT_GE(r.memory(), r.heap_bytes + r.stack_bytes);
  rt().send(p, stop{});
}

TEST_P(observe_table, reductions_grow_as_a_process_works_and_an_ended_process_leaves_the_table) {
  inbox<int> rounds;
  ember::pid p = rt().spawn([rounds] {
    for (;;) {
      int n = ember::receive([](int v) { return v; }, [](stop) { return -1; });
      if (n < 0) return;
      for (int i = 0; i < n; ++i) ember::check();
      rounds.put(n);
    }
  });
  rt().send(p, 10);
  rounds.take();
  ASSERT_TRUE(eventually([&] { return row_of(rt(), p).has_value(); }));
  std::uint64_t before = row_of(rt(), p)->reductions;
  rt().send(p, 10'000);
  rounds.take();
  ASSERT_TRUE(eventually([&] {
    auto r = row_of(rt(), p);
    return r && r->reductions >= before + 10'000;
  }));
  rt().send(p, stop{});
  ASSERT_TRUE(eventually([&] { return !row_of(rt(), p); }));
  EXPECT_FALSE(observe::process_info(rt(), p));
}

TEST_P(observe_table, process_info_reports_links_monitors_both_ways_and_trap_exit) {
  inbox<ember::pid> pids;
  ember::pid watched = rt().spawn([pids] {
    ember::trap_exit(true);
    ember::pid partner = ember::spawn_link([] { ember::receive([](stop) {}); });
    pids.put(partner);
    ember::receive([](stop) {});
    ember::exit(partner, ember::exit_reason::kill());
    ember::receive([](const ember::exit_signal&) {});
  });
  ember::pid partner = pids.take();
  ember::pid watcher = rt().spawn([watched, pids] {
    ember::monitor(watched);
    pids.put(ember::self());
    ember::receive([](stop) {}, [](const ember::down&) {});
  });
  pids.take();
  std::optional<observe::process_detail> d;
  ASSERT_TRUE(eventually([&] {
    d = observe::process_info(rt(), watched, 2s);
    return d && d->relations_known && d->monitored_by.size() == 1;
  }));
  EXPECT_TRUE(d->trap_exit);
  EXPECT_EQ(d->links, std::vector<ember::pid>{partner});
  EXPECT_EQ(d->monitored_by, std::vector<ember::pid>{watcher});
  EXPECT_TRUE(d->monitors.empty());
  auto w = observe::process_info(rt(), watcher, 2s);
  ASSERT_TRUE(w && w->relations_known);
  EXPECT_EQ(w->monitors, std::vector<ember::pid>{watched});
  EXPECT_FALSE(w->trap_exit);
  rt().send(watched, stop{});
  rt().send(watcher, stop{});
}

TEST_P(observe_table, a_process_in_a_blocking_call_shows_as_blocking_and_still_answers) {
  auto release = std::make_shared<std::atomic<bool>>(false);
  inbox<int> started;
  ember::pid p = rt().spawn([release, started] {
    ember::blocking([&] {
      started.put(1);
      while (!release->load()) std::this_thread::sleep_for(1ms);
    });
  });
  started.take();
  ASSERT_TRUE(eventually([&] {
    auto r = row_of(rt(), p);
    return r && r->status == observe::process_status::blocking;
  }));
  auto d = observe::process_info(rt(), p, 2s);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, observe::process_status::blocking);
  EXPECT_TRUE(d->relations_known);  // it waits in its mailbox, where the question arrives
  *release = true;
}

TEST_P(observe_table, a_hog_shows_as_running_and_its_relations_are_unknown_within_the_wait) {
  auto release = std::make_shared<std::atomic<bool>>(false);
  inbox<int> started;
  ember::pid hog = rt().spawn([release, started] {
    started.put(1);
    while (!release->load(std::memory_order_relaxed)) {
    }
  });
  started.take();
  ASSERT_TRUE(eventually([&] {
    auto r = row_of(rt(), hog);
    return r && r->status == observe::process_status::running && r->scheduler >= 0;
  }));
  auto d = observe::process_info(rt(), hog, 50ms);
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->relations_known);  // never drains its mailbox
  ASSERT_TRUE(eventually([&] {
    auto s = observe::sample(rt());
    return std::any_of(s.schedulers.begin(), s.schedulers.end(), [](auto& sc) { return sc.utilization > 0.5; });
  }));
  ASSERT_TRUE(eventually([&] { return row_of(rt(), hog)->run_time >= 10ms; }));
  *release = true;
}

TEST_P(observe_table, samples_count_schedulers_messages_and_memory) {
  auto first = observe::sample(rt());
  EXPECT_EQ(first.schedulers.size(), rt().schedulers());
  EXPECT_GT(first.memory_rss, 0u);
  EXPECT_GT(first.os_pid, 0);
  inbox<int> done;
  ember::pid sink = rt().spawn([done] {
    for (int i = 0; i < 1000; ++i) ember::receive([](int) {});
    done.put(1);
  });
  ember::pid source = rt().spawn([sink] {
    for (int i = 0; i < 1000; ++i) ember::send(sink, i);
  });
  (void)source;
  done.take();
  auto second = observe::sample(rt());
  EXPECT_GE(second.messages_delivered, first.messages_delivered + 1000);
  EXPECT_GT(second.reductions, first.reductions);
  EXPECT_GE(second.stats.spawned, first.stats.spawned + 2);
  for (auto& s : second.schedulers) {
    EXPECT_GE(s.utilization, 0.0);
    EXPECT_LE(s.utilization, 1.0);
  }
}

TEST_P(observe_table, a_snapshot_is_safe_while_processes_come_and_go) {
  // Shared, not on this stack: the processes outlive the test body.
  auto done = std::make_shared<std::atomic<bool>>(false);
  ember::pid churn = rt().spawn([done] {
    while (!done->load(std::memory_order_relaxed)) {
      std::vector<ember::pid> batch;
      for (int i = 0; i < 50; ++i)
        batch.push_back(ember::spawn([] { ember::receive(ember::after(0ms, [] {})); }));
      ember::yield();
    }
  });
  (void)churn;
  std::size_t seen = 0;
  for (int i = 0; i < 200; ++i) {
    auto rows = observe::processes(rt());
    seen = std::max(seen, rows.size());
    for (auto& r : rows) ASSERT_TRUE(r.id);
    if (i % 20 == 0) {
      for (auto& r : rows) {
        if (auto d = observe::process_info(rt(), r.id, 1ms)) {
          ASSERT_EQ(d->id, r.id);
        }
      }
    }
  }
  *done = true;
  EXPECT_GE(seen, 1u);
}

TEST_P(observe_table, set_label_outside_a_process_is_refused) {
  EXPECT_EQ(outcome_of([] { observe::set_label("x"); }), "error not_in_process");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(observe_table);

// The tree from an application's top supervisor down.
TEST(observe_tree, walks_the_supervision_tree_of_a_running_application) {
  struct idle_server {
    void handle_cast(int) {}
  };
  ember::runtime rt;
  namespace sup = ember::supervisor;
  sup::spec inner;
  inner.children = {sup::worker<idle_server>("leaf_1"), sup::worker<idle_server>("leaf_2")};
  sup::spec top;
  top.children = {sup::worker<idle_server>("first"), sup::child_supervisor("middle", inner)};
  {
    auto app = ember::start(rt, ember::application{"tree_app", top});
    auto tree = observe::supervision_tree(rt);
    ASSERT_EQ(tree.size(), 1u);
    EXPECT_EQ(tree[0].child, "tree_app");
    EXPECT_EQ(tree[0].id, app.top());
    EXPECT_TRUE(tree[0].supervisor);
    ASSERT_EQ(tree[0].children.size(), 2u);
    EXPECT_EQ(tree[0].children[0].child, "first");
    EXPECT_FALSE(tree[0].children[0].supervisor);
    EXPECT_TRUE(tree[0].children[0].id);
    auto& middle = tree[0].children[1];
    EXPECT_EQ(middle.child, "middle");
    EXPECT_TRUE(middle.supervisor);
    ASSERT_EQ(middle.children.size(), 2u);
    EXPECT_EQ(middle.children[0].child, "leaf_1");
    EXPECT_EQ(middle.children[1].child, "leaf_2");
    app.stop();
  }
  EXPECT_TRUE(observe::supervision_tree(rt).empty());  // ended applications are not roots
}

}  // namespace
