// The dashboard's HTTP server (see include/ember/observe/serve.hpp).
//
// cpp-httplib on threads of its own, plus one sampler thread: the
// dashboard must answer while every scheduler is saturated or a process
// hogs one, which is when it is needed. Handlers call the runtime only
// through what is safe from any thread: observe's snapshots, exit().
//
// The sampler takes observe::sample once a second into a ring of 600 (ten
// minutes: the page's charts) and derives the rates from consecutive
// samples; /api/overview answers from the newest one, so that a page and
// ember-top polling at once do not split the utilization windows.
#include "ember/observe/serve.hpp"

#include <httplib.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>

#include "ember/core/error.hpp"
#include "ember/observe/introspect.hpp"

extern const unsigned char ember_dashboard_html[];
extern const std::size_t ember_dashboard_html_size;

namespace ember::observe {

using json = nlohmann::json;

namespace {

std::string pid_text(pid p) {
  if (!p) return "";
  return std::to_string(p.node()) + "." + std::to_string(p.slot()) + "." + std::to_string(p.generation());
}

// "node.slot.gen", with or without Erlang's angle brackets.
std::optional<pid> parse_pid(std::string_view s) {
  if (s.size() >= 2 && s.front() == '<' && s.back() == '>') s = s.substr(1, s.size() - 2);
  std::uint32_t parts[3];
  for (int i = 0; i < 3; ++i) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), parts[i]);
    if (ec != std::errc() || end == s.data()) return std::nullopt;
    s.remove_prefix(std::size_t(end - s.data()));
    if (i < 2) {
      if (s.empty() || s.front() != '.') return std::nullopt;
      s.remove_prefix(1);
    }
  }
  if (!s.empty()) return std::nullopt;
  if (parts[0] >= (1u << pid::node_bits) || parts[1] >= (1u << pid::slot_bits) ||
      parts[2] >= (1u << pid::generation_bits))
    return std::nullopt;
  return pid(parts[0], parts[1], parts[2]);
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

json row_json(const process_row& r) {
  return {{"pid", pid_text(r.id)},
          {"name", r.name},
          {"label", r.label},
          {"initial_call", r.initial_call},
          {"status", to_string(r.status)},
          {"memory", r.memory()},
          {"heap_bytes", r.heap_bytes},
          {"stack_bytes", r.stack_bytes},
          {"mailbox", r.message_queue_len},
          {"reductions", r.reductions},
          {"scheduler", r.scheduler}};
}

json tree_json(const tree_node& n) {
  json children = json::array();
  for (auto& c : n.children) children.push_back(tree_json(c));
  return {{"pid", pid_text(n.id)}, {"child", n.child}, {"supervisor", n.supervisor}, {"children", children}};
}

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

}  // namespace

struct dashboard::state {
  runtime& rt;
  std::string host;
  std::string token;
  httplib::Server http;
  int port = 0;
  std::thread server_thread;
  std::thread sampler_thread;

  // The sampler's ring and the rates of its newest sample.
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::deque<json> history;  // oldest first
  json overview = json::object();

  explicit state(runtime& r) : rt(r) {}

  void sample_loop() {
    using clock = std::chrono::steady_clock;
    std::optional<runtime_sample> prev;
    std::unique_lock lock(mu);
    while (!stopping) {
      lock.unlock();
      runtime_sample s = sample(rt);
      json j = overview_json(s, prev ? &*prev : nullptr);
      json h = {{"t", std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count()},
                {"rss", s.memory_rss},
                {"process_heaps", s.memory_heaps},
                {"stacks", s.memory_stacks},
                {"off_heap", s.memory_off_heap},
                {"processes", s.stats.processes},
                {"message_rate", j["message_rate"]}};
      json util = json::array();
      for (auto& sc : s.schedulers)
        if (!sc.spare) util.push_back(sc.utilization);
      h["utilization"] = util;
      prev = std::move(s);
      lock.lock();
      overview = std::move(j);
      history.push_back(std::move(h));
      if (history.size() > 600) history.pop_front();
      cv.wait_until(lock, clock::now() + std::chrono::seconds(1), [&] { return stopping; });
    }
  }

  json overview_json(const runtime_sample& s, const runtime_sample* prev) {
    auto& st = s.stats;
    double secs = 0;
    if (prev) secs = std::chrono::duration<double>(s.at - prev->at).count();
    auto rate = [&](std::uint64_t now, std::uint64_t before) {
      return secs > 0 && now >= before ? double(now - before) / secs : 0.0;
    };
    json scheds = json::array();
    for (auto& sc : s.schedulers)
      scheds.push_back({{"index", sc.index},
                        {"spare", sc.spare},
                        {"active", sc.active},
                        {"utilization", sc.utilization},
                        {"run_queue", sc.run_queue},
                        {"steals", sc.steals}});
    return {{"node", {{"os_pid", s.os_pid},
                      {"uptime_s", std::chrono::duration<double>(s.uptime).count()},
                      {"io_backend", st.io_backend}}},
            {"processes", st.processes},
            {"spawned", st.spawned},
            {"exited", st.exited},
            {"spawn_rate", prev ? rate(st.spawned, prev->stats.spawned) : 0.0},
            {"exit_rate", prev ? rate(st.exited, prev->stats.exited) : 0.0},
            {"messages_delivered", s.messages_delivered},
            {"message_rate", prev ? rate(s.messages_delivered, prev->messages_delivered) : 0.0},
            {"reductions", s.reductions},
            {"reduction_rate", prev ? rate(s.reductions, prev->reductions) : 0.0},
            {"preemptions", {{"cooperative", st.reduction_yields}, {"asynchronous", st.preemptions}}},
            {"steals", st.steals},
            {"sockets_open", st.sockets_open},
            {"names", st.names},
            {"timers_pending", st.timers_pending},
            {"blocking_pool", {{"threads", s.blocking_threads}, {"busy", s.blocking_busy}, {"queued", s.blocking_queued}}},
            {"memory",
             {{"rss", s.memory_rss},
              {"process_heaps", s.memory_heaps},
              {"stacks", s.memory_stacks},
              {"off_heap", s.memory_off_heap}}},
            {"schedulers", scheds}};
  }

  bool own_origin(const std::string& origin) const {
    std::string p = ":" + std::to_string(port);
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return origin == "http://" + h + p || (is_loopback(host) && (origin == "http://localhost" + p ||
                                                                  origin == "http://127.0.0.1" + p));
  }

  bool authorized(const httplib::Request& req) const {
    return token.empty() || (req.has_param("token") && req.get_param_value("token") == token);
  }

  void routes() {
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req)) {
        reply(res, 403, {{"error", "a valid token is required (?token=...)"}});
        return httplib::Server::HandlerResponse::Handled;
      }
      // Another site's page in the same browser may POST here without a
      // preflight (a kill): only the dashboard's own origin may.
      if (req.method == "POST" && req.has_header("Origin") && !own_origin(req.get_header_value("Origin"))) {
        reply(res, 403, {{"error", "cross-origin request refused"}});
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(reinterpret_cast<const char*>(ember_dashboard_html), ember_dashboard_html_size,
                      "text/html; charset=utf-8");
    });
    http.Get("/api/overview", [this](const httplib::Request&, httplib::Response& res) {
      std::lock_guard lock(mu);
      reply(res, 200, overview);
    });
    http.Get("/api/history", [this](const httplib::Request&, httplib::Response& res) {
      json samples = json::array();
      {
        std::lock_guard lock(mu);
        for (auto& h : history) samples.push_back(h);
      }
      reply(res, 200, {{"interval_s", 1}, {"samples", samples}});
    });
    http.Get("/api/processes", [this](const httplib::Request& req, httplib::Response& res) {
      std::string sort = req.has_param("sort") ? req.get_param_value("sort") : "reductions";
      if (sort != "memory" && sort != "reductions" && sort != "mailbox" && sort != "pid")
        return reply(res, 400, {{"error", "sort must be memory, reductions, mailbox or pid"}});
      std::size_t limit = 200;
      if (req.has_param("limit")) {
        std::string l = req.get_param_value("limit");
        auto [end, ec] = std::from_chars(l.data(), l.data() + l.size(), limit);
        if (ec != std::errc() || end != l.data() + l.size() || limit == 0)
          return reply(res, 400, {{"error", "limit must be a positive integer"}});
      }
      std::string filter = lower(req.has_param("filter") ? req.get_param_value("filter") : "");
      std::vector<process_row> rows = processes(rt);
      const std::size_t total = rows.size();
      if (!filter.empty())
        std::erase_if(rows, [&](const process_row& r) {
          return lower(pid_text(r.id)).find(filter) == std::string::npos &&
                 lower(r.name).find(filter) == std::string::npos && lower(r.label).find(filter) == std::string::npos &&
                 lower(r.initial_call).find(filter) == std::string::npos;
        });
      auto key = [&](const process_row& r) -> std::uint64_t {
        if (sort == "memory") return r.memory();
        if (sort == "mailbox") return r.message_queue_len;
        return r.reductions;
      };
      std::size_t n = std::min(limit, rows.size());
      if (sort == "pid")
        std::partial_sort(rows.begin(), rows.begin() + std::ptrdiff_t(n), rows.end(),
                          [](const process_row& a, const process_row& b) { return a.id < b.id; });
      else
        std::partial_sort(rows.begin(), rows.begin() + std::ptrdiff_t(n), rows.end(),
                          [&](const process_row& a, const process_row& b) {
                            auto ka = key(a), kb = key(b);
                            return ka != kb ? ka > kb : a.id < b.id;
                          });
      json list = json::array();
      for (std::size_t i = 0; i < n; ++i) list.push_back(row_json(rows[i]));
      reply(res, 200, {{"total", total}, {"matched", rows.size()}, {"processes", list}});
    });
    http.Get(R"(/api/process/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      auto id = parse_pid(req.matches[1].str());
      if (!id) return reply(res, 400, {{"error", "malformed pid (node.slot.generation)"}});
      auto d = process_info(rt, *id);
      if (!d) return reply(res, 404, {{"error", "no such process: " + req.matches[1].str()}});
      json j = row_json(*d);
      auto pids = [](const std::vector<pid>& v) {
        json a = json::array();
        for (pid p : v) a.push_back(pid_text(p));
        return a;
      };
      j["heap_peak_bytes"] = d->heap_peak_bytes;
      j["run_time_ms"] = double(d->run_time.count()) / 1000.0;
      j["parent"] = pid_text(d->parent);
      j["trap_exit"] = d->trap_exit;
      j["relations_known"] = d->relations_known;
      j["links"] = pids(d->links);
      j["monitors"] = pids(d->monitors);
      j["monitored_by"] = pids(d->monitored_by);
      reply(res, 200, j);
    });
    http.Post(R"(/api/process/([^/]+)/kill)", [this](const httplib::Request& req, httplib::Response& res) {
      auto id = parse_pid(req.matches[1].str());
      if (!id) return reply(res, 400, {{"error", "malformed pid (node.slot.generation)"}});
      if (!rt.is_alive(*id)) return reply(res, 404, {{"error", "no such process: " + req.matches[1].str()}});
      rt.exit(*id, exit_reason::kill());
      reply(res, 200, {{"killed", true}});
    });
    http.Get("/api/tree", [this](const httplib::Request&, httplib::Response& res) {
      try {
        json roots = json::array();
        for (auto& r : supervision_tree(rt)) roots.push_back(tree_json(r));
        reply(res, 200, {{"roots", roots}});
      } catch (const std::exception& e) {
        reply(res, 503, {{"error", e.what()}});
      }
    });
  }

  void stop() {
    {
      std::lock_guard lock(mu);
      if (stopping) return;
      stopping = true;
    }
    cv.notify_all();
    http.stop();
    if (server_thread.joinable()) server_thread.join();
    if (sampler_thread.joinable()) sampler_thread.join();
  }
};

dashboard::dashboard() = default;
dashboard::dashboard(dashboard&&) noexcept = default;
dashboard& dashboard::operator=(dashboard&& o) noexcept {
  if (this != &o) {
    stop();
    s_ = std::move(o.s_);
  }
  return *this;
}
dashboard::~dashboard() { stop(); }

void dashboard::stop() {
  if (s_) s_->stop();
}

std::uint16_t dashboard::port() const noexcept { return s_ ? std::uint16_t(s_->port) : 0; }

std::string dashboard::url() const {
  if (!s_) return "";
  std::string host = s_->host.find(':') != std::string::npos ? "[" + s_->host + "]" : s_->host;
  std::string u = "http://" + host + ":" + std::to_string(s_->port) + "/";
  if (!s_->token.empty()) u += "?token=" + s_->token;
  return u;
}

dashboard serve(runtime& rt, std::string_view address, serve_options opts) {
  // "host:port" or "[v6]:port".
  std::string a(address);
  std::string host, port_text;
  if (!a.empty() && a.front() == '[') {
    auto close = a.find(']');
    if (close == std::string::npos || close + 1 >= a.size() || a[close + 1] != ':')
      throw error(errc::invalid_argument, "observe::serve: bad address '" + a + "' (host:port or [v6]:port)");
    host = a.substr(1, close - 1);
    port_text = a.substr(close + 2);
  } else {
    auto colon = a.rfind(':');
    if (colon == std::string::npos || colon == 0)
      throw error(errc::invalid_argument, "observe::serve: bad address '" + a + "' (host:port)");
    host = a.substr(0, colon);
    port_text = a.substr(colon + 1);
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535)
    throw error(errc::invalid_argument, "observe::serve: bad port in '" + a + "'");

  dashboard d;
  d.s_ = std::make_unique<dashboard::state>(rt);
  auto& s = *d.s_;
  s.host = host;
  s.token = opts.token;
  if (s.token.empty() && !is_loopback(host)) {
    // Reachable from elsewhere: never without a token.
    std::random_device rd;
    static constexpr char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; ++i) s.token += hex[rd() & 15];
  }
  s.routes();
  // cpp-httplib's default adds SO_REUSEPORT: a second dashboard on the
  // same port would then share it silently. Address reuse only.
  s.http.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  s.port = port == 0 ? s.http.bind_to_any_port(host) : (s.http.bind_to_port(host, int(port)) ? int(port) : -1);
  if (s.port <= 0)
    throw error(errc::io_failed, "observe::serve: cannot listen on " + a + ": " + std::strerror(errno));
  s.server_thread = std::thread([&s] { s.http.listen_after_bind(); });
  // A stop before the listening loop has begun would be missed (the loop
  // would then run for ever): return once it runs.
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!s.http.is_running()) {
    if (std::chrono::steady_clock::now() > give_up)
      throw error(errc::io_failed, "observe::serve: the server on " + a + " did not start");
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  s.sampler_thread = std::thread([&s] { s.sample_loop(); });
  return d;
}

}  // namespace ember::observe
