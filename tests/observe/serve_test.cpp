// observe::serve: the dashboard's JSON API over HTTP, from a client on the
// test thread, against a running runtime.
#include <ember/ember.hpp>
#include <ember/observe/introspect.hpp>
#include <ember/observe/serve.hpp>

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using namespace std::chrono_literals;
using json = nlohmann::json;

struct stop {};

std::string pid_text(ember::pid p) {
  return std::to_string(p.node()) + "." + std::to_string(p.slot()) + "." + std::to_string(p.generation());
}

class serve_test : public ::testing::Test {
 protected:
  ember::runtime rt;
  ember::observe::dashboard dash = ember::observe::serve(rt, "127.0.0.1:0");
  httplib::Client client{"127.0.0.1", dash.port()};

  json get(const std::string& path, int expected_status = 200) {
    auto res = client.Get(path);
    if (!res) throw std::runtime_error("no reply for " + path);
    EXPECT_EQ(res->status, expected_status) << path << ": " << res->body;
    return json::parse(res->body);
  }
  void TearDown() override {
    dash.stop();
    rt.shutdown();
  }
};

TEST_F(serve_test, the_page_is_served_at_the_root) {
  auto res = client.Get("/");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(res->body.find("<html"), std::string::npos);
  EXPECT_EQ(dash.url(), "http://127.0.0.1:" + std::to_string(dash.port()) + "/");
}

TEST_F(serve_test, processes_are_listed_sorted_and_filtered) {
  inbox<int> ready;
  ember::pid big = rt.spawn([ready] {
    ember::register_name("big_one", ember::self());
    std::vector<char> mem(300'000, 'x');
    ready.put(1);
    ember::receive([](stop) {});
  });
  ember::pid small = rt.spawn([ready] {
    ember::register_name("small_one", ember::self());
    ready.put(1);
    ember::receive([](stop) {});
  });
  ready.take();
  ready.take();
  json all = get("/api/processes?sort=memory&limit=1");
  EXPECT_GE(all["total"].get<int>(), 2);
  ASSERT_EQ(all["processes"].size(), 1u);
  EXPECT_EQ(all["processes"][0]["pid"], pid_text(big));
  EXPECT_EQ(all["processes"][0]["name"], "big_one");
  EXPECT_GE(all["processes"][0]["memory"].get<std::size_t>(), 300'000u);

  json filtered = get("/api/processes?filter=SMALL_");
  ASSERT_EQ(filtered["matched"], 1);
  EXPECT_EQ(filtered["processes"][0]["pid"], pid_text(small));
  EXPECT_EQ(filtered["processes"][0]["status"], "waiting");

  json by_pid = get("/api/processes?sort=pid");
  auto& rows = by_pid["processes"];
  for (std::size_t i = 1; i < rows.size(); ++i) EXPECT_NE(rows[i - 1]["pid"], rows[i]["pid"]);

  get("/api/processes?sort=colour", 400);
  get("/api/processes?limit=zero", 400);
  rt.send(big, stop{});
  rt.send(small, stop{});
}

TEST_F(serve_test, one_process_in_full_and_errors_for_bad_or_unknown_pids) {
  inbox<ember::pid> pids;
  ember::pid owner = rt.spawn([pids] {
    ember::pid child = ember::spawn_link([] { ember::receive([](stop) {}); });
    pids.put(child);
    ember::receive([](stop) {});
  });
  ember::pid child = pids.take();
  json d;
  ASSERT_TRUE(eventually([&] {
    d = get("/api/process/" + pid_text(owner));
    return d["relations_known"] == true && d["links"].size() == 1;
  }));
  EXPECT_EQ(d["pid"], pid_text(owner));
  EXPECT_EQ(d["links"][0], pid_text(child));
  EXPECT_EQ(d["parent"], "");
  EXPECT_EQ(d["trap_exit"], false);
  json c = get("/api/process/<" + pid_text(child) + ">");
  EXPECT_EQ(c["parent"], pid_text(owner));

  EXPECT_EQ(get("/api/process/1.2", 400)["error"], "malformed pid (node.slot.generation)");
  get("/api/process/abc", 400);
  get("/api/process/0.999999.1", 404);
  rt.send(owner, stop{});
}

TEST_F(serve_test, kill_ends_the_process_and_its_supervisor_restarts_it) {
  struct idle_server {
    void handle_cast(int) {}
  };
  namespace sup = ember::supervisor;
  ember::gen_server::options named;
  named.name = "restartable";
  sup::spec top;
  top.children = {sup::worker<idle_server>("restartable", named)};
  auto app = ember::start(rt, ember::application{"kill_app", top});
  ember::pid first = rt.whereis("restartable");
  ASSERT_TRUE(first);
  auto res = client.Post("/api/process/" + pid_text(first) + "/kill");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body)["killed"], true);
  ASSERT_TRUE(eventually([&] {
    ember::pid now = rt.whereis("restartable");
    return now && now != first;
  }));
  // From another site's page: refused, whatever the pid.
  auto foreign = client.Post("/api/process/" + pid_text(rt.whereis("restartable")) + "/kill",
                             httplib::Headers{{"Origin", "http://evil.example"}}, "", "text/plain");
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->status, 403);
  auto again = client.Post("/api/process/" + pid_text(first) + "/kill");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 404);

  json tree = get("/api/tree");
  ASSERT_EQ(tree["roots"].size(), 1u);
  EXPECT_EQ(tree["roots"][0]["child"], "kill_app");
  ASSERT_EQ(tree["roots"][0]["children"].size(), 1u);
  EXPECT_EQ(tree["roots"][0]["children"][0]["child"], "restartable");
  EXPECT_EQ(tree["roots"][0]["children"][0]["pid"], pid_text(rt.whereis("restartable")));
  app.stop();
}

TEST_F(serve_test, overview_and_history_fill_once_a_second) {
  json o;
  ASSERT_TRUE(eventually([&] {
    o = get("/api/overview");
    return o.contains("schedulers");
  }));
  EXPECT_EQ(o["schedulers"].size(), rt.schedulers());
  EXPECT_GT(o["memory"]["rss"].get<std::size_t>(), 0u);
  EXPECT_EQ(o["node"]["io_backend"].is_string(), true);
  ASSERT_TRUE(eventually([&] { return get("/api/history")["samples"].size() >= 2; }, 10s));
  json h = get("/api/history");
  EXPECT_EQ(h["interval_s"], 1);
  EXPECT_EQ(h["samples"][0]["utilization"].size(), rt.schedulers());
}

TEST(serve_token, a_token_is_required_when_one_is_set) {
  ember::runtime rt;
  ember::observe::serve_options opts;
  opts.token = "s3cret";
  auto dash = ember::observe::serve(rt, "127.0.0.1:0", opts);
  EXPECT_EQ(dash.url(), "http://127.0.0.1:" + std::to_string(dash.port()) + "/?token=s3cret");
  httplib::Client client("127.0.0.1", dash.port());
  auto denied = client.Get("/api/overview");
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 403);
  auto wrong = client.Get("/api/overview?token=guess");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 403);
  auto allowed = client.Get("/api/overview?token=s3cret");
  ASSERT_TRUE(allowed);
  EXPECT_EQ(allowed->status, 200);
}

TEST(serve_address, bad_addresses_are_refused_with_a_reason) {
  ember::runtime rt;
  EXPECT_EQ(outcome_of([&] { ember::observe::serve(rt, "127.0.0.1"); }), "error invalid_argument");
  EXPECT_EQ(outcome_of([&] { ember::observe::serve(rt, "127.0.0.1:99999"); }), "error invalid_argument");
  EXPECT_EQ(outcome_of([&] { ember::observe::serve(rt, "[::1:80"); }), "error invalid_argument");
  // A port in use.
  auto first = ember::observe::serve(rt, "127.0.0.1:0");
  EXPECT_EQ(outcome_of([&] { ember::observe::serve(rt, "127.0.0.1:" + std::to_string(first.port())); }),
            "error io_failed");
}

}  // namespace
