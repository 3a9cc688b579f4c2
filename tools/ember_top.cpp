// ember-top: an etop-like terminal view of a running ember node.
//
// ember-top is a client of the node's dashboard JSON API, not part of the
// node: it links no ember code and shows whatever node serves the URL it is
// given. Each refresh makes two GET requests and draws one frame from them:
//
//   /api/overview              header: node, uptime, I/O backend, process
//                              count, spawn/exit/message/reduction rates,
//                              memory; then one line per scheduler
//                              (utilization bar, run queue, steals)
//   /api/processes?sort=&limit= the top N processes, in the node's order:
//                              pid, name, status, memory, reductions,
//                              reductions/s, mailbox
//
// Reductions/s per process is the only figure computed here: the change in a
// pid's reductions since the previous refresh over the time between the two
// replies. A pid absent from the previous refresh (new, or outside the top N
// then) shows "-", as does the whole column in --once. Every other rate is the
// node's own.
//
// The API is addressed relative to the URL, as a browser resolves
// "api/overview" on the dashboard page: http://h:p/ gives http://h:p/api/...,
// http://h:p/ember/ gives http://h:p/ember/api/.... The URL's query (the
// ?token=T) is sent with every request and never shown, so the token stays
// off the screen.
//
// Replies are read defensively: each must be a JSON object, but any field in
// it may be missing or of another type and is then shown as "-". An
// unreachable node, a status other than 200 or malformed JSON ends --once
// with one line on stderr and exit status 1; live mode shows the same line in
// place and retries every interval.
//
// Live mode on a terminal switches to the alternate screen, hides the cursor
// and redraws in place (cursor home, clear to end of line, clear below). Those
// two modes are the only terminal state changed (no termios), so the Ctrl-C
// handler restores them with one write() and _exit()s: quitting is immediate
// even while a request is blocked. `q` + Enter quits too.

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <initializer_list>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;

constexpr int exit_ok = 0;
constexpr int exit_error = 1;
constexpr int exit_usage = 64;  // EX_USAGE, sysexits.h

constexpr std::string_view usage_text =
    R"(usage: ember-top [--once] [--sort reductions|memory|mailbox] [-n N] [--interval SECONDS] URL

Shows a running ember node's schedulers and top processes, like etop.
URL is the dashboard URL the node prints: http://127.0.0.1:8080/ or
http://host:port/?token=T.

  --once                print one snapshot (no screen clearing, no colors) and exit
  --sort KEY            order processes by reductions (default), memory or mailbox
  -n N                  show the top N processes (default 20)
  --interval SECONDS    time between refreshes in live mode (default 1)
  -h, --help            show this help

Live mode quits on Ctrl-C, or q and Enter.
Exit status: 0 ok; 1 node unreachable or bad reply (--once); 64 bad arguments.
)";

// ---------------------------------------------------------------------------
// Arguments

struct options {
  bool once = false;
  std::string sort = "reductions";
  int limit = 20;
  double interval_s = 1.0;
  std::string url;
};

enum class parse_outcome { run, help, bad_arguments };

[[nodiscard]] parse_outcome parse_arguments(std::span<char*> args, options& out, std::string& error) {
  bool positional_only = false;
  bool have_url = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    auto value_of = [&](std::string_view name, std::string_view inline_value,
                        bool has_inline) -> std::optional<std::string_view> {
      if (has_inline) return inline_value;
      if (i + 1 < args.size()) return std::string_view(args[++i]);
      error = "option '" + std::string(name) + "' needs a value";
      return std::nullopt;
    };
    if (positional_only || arg.empty() || arg == "-" || arg[0] != '-') {
      if (have_url) {
        error = "unexpected argument '" + std::string(arg) + "' (one URL only)";
        return parse_outcome::bad_arguments;
      }
      out.url = arg;
      have_url = true;
      continue;
    }
    if (arg == "--") { positional_only = true; continue; }
    if (arg == "-h" || arg == "--help") return parse_outcome::help;
    if (arg == "--once") { out.once = true; continue; }

    std::string_view name = arg, inline_value;
    bool has_inline = false;
    if (arg.starts_with("--")) {
      if (auto eq = arg.find('='); eq != std::string_view::npos) {
        name = arg.substr(0, eq);
        inline_value = arg.substr(eq + 1);
        has_inline = true;
      }
    } else if (arg.starts_with("-n") && arg.size() > 2) {
      name = "-n";
      inline_value = arg.substr(2);
      has_inline = true;
    }

    if (name == "--sort") {
      auto v = value_of(name, inline_value, has_inline);
      if (!v) return parse_outcome::bad_arguments;
      if (*v != "reductions" && *v != "memory" && *v != "mailbox") {
        error = "--sort must be reductions, memory or mailbox, not '" + std::string(*v) + "'";
        return parse_outcome::bad_arguments;
      }
      out.sort = *v;
    } else if (name == "-n") {
      auto v = value_of(name, inline_value, has_inline);
      if (!v) return parse_outcome::bad_arguments;
      int n = 0;
      auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
      if (ec != std::errc{} || end != v->data() + v->size() || n < 1 || n > 100000) {
        error = "-n must be a whole number from 1 to 100000, not '" + std::string(*v) + "'";
        return parse_outcome::bad_arguments;
      }
      out.limit = n;
    } else if (name == "--interval") {
      auto v = value_of(name, inline_value, has_inline);
      if (!v) return parse_outcome::bad_arguments;
      std::string text(*v);
      char* end = nullptr;
      double s = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !std::isfinite(s) || s < 0.1 || s > 86400) {
        error = "--interval must be a number of seconds from 0.1 to 86400, not '" + text + "'";
        return parse_outcome::bad_arguments;
      }
      out.interval_s = s;
    } else {
      error = "unknown option '" + std::string(arg) + "'";
      return parse_outcome::bad_arguments;
    }
  }
  if (!have_url) {
    error = "missing URL (the dashboard URL the node prints, e.g. http://127.0.0.1:8080/)";
    return parse_outcome::bad_arguments;
  }
  return parse_outcome::run;
}

// ---------------------------------------------------------------------------
// The dashboard URL, split the way requests need it

struct endpoint {
  std::string scheme;     // "http" or "https"
  std::string authority;  // host[:port] as given, IPv6 brackets kept
  std::string host;       // without brackets, for the connection diagnosis
  int port = 0;
  std::string base_path;  // "/" or "/prefix/": the API is resolved against it
  std::string query;      // "token=T" or "": sent with every request, never shown

  [[nodiscard]] std::string origin() const { return scheme + "://" + authority; }
  [[nodiscard]] std::string shown() const { return origin() + base_path; }
};

[[nodiscard]] std::optional<endpoint> parse_url(std::string_view url, std::string& error) {
  endpoint at;
  std::string_view rest = url;
  if (auto sep = rest.find("://"); sep != std::string_view::npos) {
    for (char c : rest.substr(0, sep)) at.scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    rest.remove_prefix(sep + 3);
  } else {
    at.scheme = "http";
  }
  if (at.scheme != "http" && at.scheme != "https") {
    error = "URL must start with http:// or https://, not '" + std::string(url) + "'";
    return std::nullopt;
  }
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
  if (at.scheme == "https") {
    error = "https URLs need cpp-httplib built with OpenSSL support; use http://";
    return std::nullopt;
  }
#endif
  std::size_t authority_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, authority_end);
  rest = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) {
    error = "credentials in the URL are not supported: '" + std::string(url) + "'";
    return std::nullopt;
  }
  std::string_view host = authority, port;
  if (authority.starts_with('[')) {
    auto close = authority.find(']');
    if (close == std::string_view::npos) {
      error = "bad IPv6 address in URL '" + std::string(url) + "'";
      return std::nullopt;
    }
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after[0] != ':') {
      error = "bad host in URL '" + std::string(url) + "'";
      return std::nullopt;
    }
    if (!after.empty()) port = after.substr(1);
  } else if (auto colon = authority.find(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    error = "no host in URL '" + std::string(url) + "'";
    return std::nullopt;
  }
  at.port = at.scheme == "https" ? 443 : 80;
  if (!port.empty()) {
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), at.port);
    if (ec != std::errc{} || end != port.data() + port.size() || at.port < 1 || at.port > 65535) {
      error = "bad port '" + std::string(port) + "' in URL '" + std::string(url) + "'";
      return std::nullopt;
    }
  }
  at.authority = authority;
  at.host = host;

  std::string_view path = rest.substr(0, rest.find_first_of("?#"));
  at.base_path = path.empty() ? "/" : std::string(path.substr(0, path.rfind('/') + 1));
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    std::string_view query = rest.substr(q + 1);
    at.query = query.substr(0, query.find('#'));
  }
  return at;
}

// ---------------------------------------------------------------------------
// Text helpers

[[gnu::format(printf, 1, 2)]] std::string format(const char* fmt, ...) {
  char buffer[256];
  va_list args;
  va_start(args, fmt);
  int n = std::vsnprintf(buffer, sizeof buffer, fmt, args);
  va_end(args);
  return n < 0 ? std::string{} : std::string(buffer, std::min<std::size_t>(n, sizeof buffer - 1));
}

std::string lowercase_first(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  return s;
}

// Width in terminal columns, counting one per UTF-8 code point.
std::size_t width_of(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// The first `width` code points of s.
std::string_view clip(std::string_view s, std::size_t width) {
  std::size_t seen = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && seen++ == width) return s.substr(0, i);
  }
  return s;
}

// A string from the node, safe to print: control characters become '?'.
std::string printable(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return out;
}

enum class align { left, right };

// s padded or cut to exactly `width` columns; a cut string ends in '~'.
std::string fit(std::string_view s, std::size_t width, align side = align::left) {
  std::size_t w = width_of(s);
  if (w > width) return width == 0 ? std::string{} : std::string(clip(s, width - 1)) + "~";
  std::string pad(width - w, ' ');
  return side == align::left ? std::string(s) + pad : pad + std::string(s);
}

// Three significant digits: 1.23, 45.6, 789.
std::string three_digits(double v) {
  double a = std::fabs(v);
  return format(a < 9.995 ? "%.2f" : a < 99.95 ? "%.1f" : "%.0f", v);
}

// v divided by `step` while it would take four digits, with the matching
// unit: 12.3k, 4.56M; 999.7k is shown as 1.00M, never 1000k.
std::string scaled(double v, double step, std::initializer_list<const char*> units) {
  const char* unit = "";
  for (const char* u : units) {
    if (std::fabs(v) < 999.5) break;
    v /= step;
    unit = u;
  }
  return three_digits(v) + unit;
}

std::string show_count(std::optional<double> n) {
  if (!n || !std::isfinite(*n)) return "-";
  if (std::fabs(*n) < 100000) return format("%.0f", *n);
  return scaled(*n, 1000, {"k", "M", "G", "T", "P"});
}

std::string show_rate(std::optional<double> r) {
  if (!r || !std::isfinite(*r)) return "-";
  if (std::fabs(*r) < 100) return format("%.1f", *r);
  if (std::fabs(*r) < 100000) return format("%.0f", *r);
  return scaled(*r, 1000, {"k", "M", "G", "T", "P"});
}

std::string show_bytes(std::optional<double> b) {
  if (!b || !std::isfinite(*b)) return "-";
  if (std::fabs(*b) < 1024) return format("%.0f B", *b);
  return scaled(*b, 1024, {" KiB", " MiB", " GiB", " TiB", " PiB"});
}

std::string show_duration(std::optional<double> seconds) {
  if (!seconds || !std::isfinite(*seconds) || *seconds < 0) return "-";
  auto s = static_cast<long long>(*seconds);
  long long d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;
  s %= 60;
  if (d > 0) return format("%lldd %02lldh %02lldm", d, h, m);
  if (h > 0) return format("%lldh %02lldm %02llds", h, m, s);
  if (m > 0) return format("%lldm %02llds", m, s);
  return format("%.1fs", *seconds);
}

std::string show_clock(std::time_t t) {
  std::tm local{};
  localtime_r(&t, &local);
  char buffer[16];
  std::strftime(buffer, sizeof buffer, "%H:%M:%S", &local);
  return buffer;
}

// ---------------------------------------------------------------------------
// Defensive JSON access: a missing field or one of another type is nullopt.

const json* find(const json& j, std::initializer_list<const char*> path) {
  const json* at = &j;
  for (const char* key : path) {
    if (!at->is_object()) return nullptr;
    auto it = at->find(key);
    if (it == at->end()) return nullptr;
    at = &*it;
  }
  return at;
}

std::optional<double> number(const json& j, std::initializer_list<const char*> path) {
  const json* v = find(j, path);
  if (v && v->is_number()) return v->get<double>();
  return std::nullopt;
}

std::optional<std::string> text(const json& j, std::initializer_list<const char*> path) {
  const json* v = find(j, path);
  if (v && v->is_string()) return printable(v->get_ref<const std::string&>());
  return std::nullopt;
}

std::optional<bool> flag(const json& j, std::initializer_list<const char*> path) {
  const json* v = find(j, path);
  if (v && v->is_boolean()) return v->get<bool>();
  return std::nullopt;
}

const json& array_or_empty(const json& j, const char* key) {
  static const json empty = json::array();
  const json* v = find(j, {key});
  return v && v->is_array() ? *v : empty;
}

// ---------------------------------------------------------------------------
// HTTP: one GET, its failure described in one line

// Why a TCP connection to host:port fails, for "cannot reach URL: <why>":
// httplib reports only "Connection", so the connection is tried again here
// to recover the resolver error or the errno (connection refused, timed out).
std::string why_unreachable(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &list); rc != 0) {
    return "cannot resolve host '" + host + "': " + lowercase_first(gai_strerror(rc));
  }
  int last_error = 0;
  for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = errno;
      continue;
    }
    int err = 0;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        int n = poll(&p, 1, 2000);
        if (n == 0) {
          err = ETIMEDOUT;
        } else if (n < 0) {
          err = errno;
        } else {
          socklen_t len = sizeof err;
          if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        }
      }
    }
    close(fd);
    if (err == 0) {
      freeaddrinfo(list);
      return "connection failed (it succeeds now: the node may be restarting)";
    }
    last_error = err;
  }
  freeaddrinfo(list);
  return last_error == 0 ? "no address for host '" + host + "'" : lowercase_first(std::strerror(last_error));
}

struct reply {
  json body;          // a JSON object when error is empty
  std::string error;  // one line: what failed, for which URL
};

class api_client {
 public:
  explicit api_client(const endpoint& at) : at_(at), http_(at.origin()) {
    http_.set_connection_timeout(std::chrono::seconds(3));
    http_.set_read_timeout(std::chrono::seconds(5));
    http_.set_write_timeout(std::chrono::seconds(5));
    http_.set_keep_alive(true);
    http_.set_default_headers({{"Accept", "application/json"}, {"User-Agent", "ember-top"}});
  }

  // GET <base>/<resource>?<params>&<the URL's query>.
  [[nodiscard]] reply get(const std::string& resource, const std::string& params) {
    std::string target = at_.base_path + resource;
    std::string query = params;
    if (!at_.query.empty()) query += (query.empty() ? "" : "&") + at_.query;
    if (!query.empty()) target += "?" + query;
    const std::string shown = at_.shown() + resource;

    httplib::Result result = http_.Get(target);
    if (!result) return {{}, describe(result.error(), shown)};
    const httplib::Response& response = *result;
    if (response.status != 200) {
      std::string line = format("%s: HTTP %d", shown.c_str(), response.status);
      if (!response.reason.empty()) line += " " + printable(response.reason);
      std::string body = printable(response.body.substr(0, response.body.find('\n')));
      if (!body.empty()) line += ": " + std::string(clip(body, 160));
      if (response.status == 401 || response.status == 403) line += " (check the ?token= in the URL)";
      return {{}, line};
    }
    json body;
    try {
      body = json::parse(response.body);
    } catch (const json::exception& e) {
      std::string what = e.what();
      if (auto close = what.find("] "); what.starts_with("[json.exception") && close != std::string::npos) {
        what.erase(0, close + 2);
      }
      return {{}, shown + ": malformed JSON: " + printable(what)};
    }
    if (!body.is_object()) {
      return {{}, shown + ": unexpected reply: a JSON " + body.type_name() + ", not an object"};
    }
    return {std::move(body), {}};
  }

 private:
  std::string describe(httplib::Error error, const std::string& shown) const {
    const std::string unreachable = "cannot reach " + at_.shown() + ": ";
    switch (error) {
      case httplib::Error::Connection: return unreachable + why_unreachable(at_.host, at_.port);
      case httplib::Error::ConnectionTimeout: return unreachable + "connection timed out";
      case httplib::Error::Read: return shown + ": no reply (connection closed, or nothing within 5 s)";
      case httplib::Error::Write: return shown + ": sending the request failed";
      case httplib::Error::SSLConnection: return unreachable + "TLS handshake failed";
      case httplib::Error::SSLServerVerification: return unreachable + "TLS certificate verification failed";
      default: return unreachable + lowercase_first(httplib::to_string(error));
    }
  }

  const endpoint& at_;
  httplib::Client http_;
};

struct snapshot {
  json overview;
  json processes;
  std::time_t taken = 0;       // wall clock, shown in the header
  steady::time_point at;       // when the process list arrived, for rates
};

struct snapshot_result {
  snapshot snap;
  std::string error;  // empty on success
};

[[nodiscard]] snapshot_result take_snapshot(api_client& api, const options& opt) {
  reply overview = api.get("api/overview", "");
  if (!overview.error.empty()) return {{}, std::move(overview.error)};
  reply processes = api.get("api/processes", "sort=" + opt.sort + "&limit=" + std::to_string(opt.limit));
  if (!processes.error.empty()) return {{}, std::move(processes.error)};
  return {{std::move(overview.body), std::move(processes.body), std::time(nullptr), steady::now()}, {}};
}

// ---------------------------------------------------------------------------
// Reductions/s per pid, from the previous refresh's count for the same pid

class reduction_rates {
 public:
  void update(const json& processes, steady::time_point at) {
    std::unordered_map<std::string, sample> next;
    rates_.clear();
    for (const json& p : array_or_empty(processes, "processes")) {
      auto pid = text(p, {"pid"});
      auto reductions = number(p, {"reductions"});
      if (!pid || !reductions) continue;
      next[*pid] = {*reductions, at};
      auto before = last_.find(*pid);
      if (before == last_.end()) continue;
      double dt = std::chrono::duration<double>(at - before->second.at).count();
      if (dt > 0 && *reductions >= before->second.reductions) {
        rates_[*pid] = (*reductions - before->second.reductions) / dt;
      }
    }
    last_ = std::move(next);
  }

  [[nodiscard]] std::optional<double> of(const std::string& pid) const {
    auto it = rates_.find(pid);
    return it == rates_.end() ? std::nullopt : std::optional<double>(it->second);
  }

 private:
  struct sample {
    double reductions;
    steady::time_point at;
  };
  std::unordered_map<std::string, sample> last_;  // pid -> the previous refresh's count
  std::unordered_map<std::string, double> rates_;  // pid -> reductions/s, this refresh
};

// ---------------------------------------------------------------------------
// Frames: lines of styled spans, cut to the screen width

enum class tint { plain, bold, inverse, red, yellow, green };

struct span {
  std::string text;
  tint look = tint::plain;
};
using line = std::vector<span>;

const char* escape(tint look) {
  switch (look) {
    case tint::plain: return "";
    case tint::bold: return "\x1b[1m";
    case tint::inverse: return "\x1b[7m";
    case tint::red: return "\x1b[31m";
    case tint::yellow: return "\x1b[33m";
    case tint::green: return "\x1b[32m";
  }
  return "";
}

// The line as text of at most `width` columns, without trailing blanks.
std::string paint(const line& l, bool color, std::size_t width) {
  std::string out;
  std::size_t left = width;
  std::size_t plain_end = 0;  // out.size() after the last non-blank character
  for (const span& s : l) {
    if (left == 0) break;
    std::string_view piece = clip(s.text, left);
    if (piece.empty()) continue;
    left -= width_of(piece);
    if (color && s.look != tint::plain) {  // kept whole: an inverse bar is blank on purpose
      out += escape(s.look);
      out += piece;
      out += "\x1b[0m";
      plain_end = out.size();
    } else {
      out += piece;
      if (auto last = piece.find_last_not_of(' '); last != std::string_view::npos) {
        plain_end = out.size() - piece.size() + last + 1;
      }
    }
  }
  out.resize(plain_end);
  return out;
}

struct screen {
  std::size_t width = 100;
  bool color = false;
};

// "label value" pairs on one line, values in bold.
void field(line& l, std::string_view label, std::string value) {
  if (!l.empty()) l.push_back({"  "});
  l.push_back({std::string(label) + " "});
  l.push_back({std::move(value), tint::bold});
}

tint level(double fraction) {
  return fraction >= 0.8 ? tint::red : fraction >= 0.5 ? tint::yellow : tint::green;
}

// [#####.....] for a utilization in 0..1; an unknown one is all dots.
void bar(line& l, std::optional<double> fraction, int length) {
  int filled = 0;
  if (fraction && std::isfinite(*fraction)) {
    filled = static_cast<int>(std::lround(std::clamp(*fraction, 0.0, 1.0) * length));
  }
  l.push_back({"["});
  l.push_back({std::string(filled, '#'), fraction ? level(*fraction) : tint::plain});
  l.push_back({std::string(length - filled, '.') + "]"});
}

std::string show_percent(std::optional<double> fraction) {
  if (!fraction || !std::isfinite(*fraction)) return "-";
  return format("%.1f%%", *fraction * 100);
}

std::vector<line> render_header(const snapshot& s, const endpoint& at) {
  const json& o = s.overview;
  std::vector<line> out;

  out.push_back({{"ember-top", tint::bold}, {"  " + at.shown() + "  " + show_clock(s.taken)}});

  line node;
  field(node, "node  os_pid", show_count(number(o, {"node", "os_pid"})));
  field(node, "uptime", show_duration(number(o, {"node", "uptime_s"})));
  field(node, "io", text(o, {"node", "io_backend"}).value_or("-"));
  field(node, "sockets", show_count(number(o, {"sockets_open"})));
  out.push_back(std::move(node));

  line procs;
  field(procs, "processes", show_count(number(o, {"processes"})));
  field(procs, "spawn/s", show_rate(number(o, {"spawn_rate"})));
  field(procs, "exit/s", show_rate(number(o, {"exit_rate"})));
  field(procs, "msgs/s", show_rate(number(o, {"message_rate"})));
  field(procs, "reds/s", show_rate(number(o, {"reduction_rate"})));
  out.push_back(std::move(procs));

  line memory;
  field(memory, "memory  rss", show_bytes(number(o, {"memory", "rss"})));
  field(memory, "heaps", show_bytes(number(o, {"memory", "process_heaps"})));
  field(memory, "stacks", show_bytes(number(o, {"memory", "stacks"})));
  field(memory, "off-heap", show_bytes(number(o, {"memory", "off_heap"})));
  out.push_back(std::move(memory));

  line sched;
  field(sched, "preemptions  coop", show_count(number(o, {"preemptions", "cooperative"})));
  field(sched, "async", show_count(number(o, {"preemptions", "asynchronous"})));
  field(sched, "steals", show_count(number(o, {"steals"})));
  field(sched, "blocking pool",
        show_count(number(o, {"blocking_pool", "busy"})) + "/" +
            show_count(number(o, {"blocking_pool", "threads"})) + " busy, " +
            show_count(number(o, {"blocking_pool", "queued"})) + " queued");
  out.push_back(std::move(sched));
  return out;
}

// One line per scheduler when they are few or the screen is narrow; several
// compact cells per line otherwise (64 schedulers take 16 lines, not 64, on
// a 140-column terminal); a spare scheduler is marked "s" there.
std::vector<line> render_schedulers(const json& overview, const screen& scr) {
  const json& list = array_or_empty(overview, "schedulers");
  std::vector<line> out;
  constexpr std::size_t cell_width = 35;
  const std::size_t per_line = list.size() > 8 ? std::max<std::size_t>(1, scr.width / cell_width) : 1;

  auto index_of = [](const json& s, std::size_t position) {
    auto index = number(s, {"index"});
    return index ? show_count(index) : std::to_string(position);
  };

  if (per_line == 1) {
    out.push_back({{fit("SCHED", 6) + fit("UTILIZATION", 31) + fit("RUN_Q", 8, align::right) +
                        fit("STEALS", 9, align::right) + "  " + fit("", scr.width),
                    tint::inverse}});
    for (std::size_t i = 0; i < list.size(); ++i) {
      const json& s = list[i];
      auto util = number(s, {"utilization"});
      line l{{fit(index_of(s, i), 5, align::right) + " "}};
      bar(l, util, 20);
      l.push_back({fit(show_percent(util), 8, align::right) + "  "});
      l.push_back({fit(show_count(number(s, {"run_queue"})), 8, align::right)});
      l.push_back({fit(show_count(number(s, {"steals"})), 9, align::right)});
      std::string flags;
      if (flag(s, {"spare"}).value_or(false)) flags += " spare";
      if (auto active = flag(s, {"active"}); active && !*active) flags += " inactive";
      if (!flags.empty()) l.push_back({" " + flags});
      out.push_back(std::move(l));
    }
    return out;
  }

  line header;
  for (std::size_t c = 0; c < per_line; ++c) {
    header.push_back({fit("#", 4, align::right) + " " + fit("UTILIZATION", 19) + fit("RUN_Q", 9, align::right) + "  "});
  }
  header.push_back({fit("s: spare", scr.width)});
  for (span& s : header) s.look = tint::inverse;
  out.push_back(std::move(header));
  line l;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const json& s = list[i];
    auto util = number(s, {"utilization"});
    bool inactive = !flag(s, {"active"}).value_or(true);
    l.push_back({fit(index_of(s, i), 4, align::right) + (flag(s, {"spare"}).value_or(false) ? "s" : " ")});
    bar(l, util, 10);
    l.push_back({fit(inactive ? "off" : show_percent(util), 7, align::right)});
    l.push_back({fit(show_count(number(s, {"run_queue"})), 9, align::right) + "  "});
    if ((i + 1) % per_line == 0 || i + 1 == list.size()) out.push_back(std::exchange(l, {}));
  }
  return out;
}

std::vector<line> render_processes(const snapshot& s, const reduction_rates& rates, const options& opt,
                                   const screen& scr) {
  const json& p = s.processes;
  const json& list = array_or_empty(p, "processes");
  std::vector<line> out;

  std::string summary = format("top %zu of %s processes by %s", list.size(),
                               show_count(number(p, {"total"})).c_str(), opt.sort.c_str());
  auto total = number(p, {"total"});
  if (auto matched = number(p, {"matched"}); matched && total && *matched != *total) {
    summary += " (" + show_count(matched) + " matched)";
  }
  out.push_back({{summary}});

  constexpr std::size_t pid_w = 14, status_w = 9, memory_w = 10, reds_w = 11, rate_w = 9, mailbox_w = 9;
  constexpr std::size_t fixed = pid_w + 1 + 1 + status_w + memory_w + reds_w + rate_w + mailbox_w;
  const std::size_t name_w = std::clamp<std::size_t>(scr.width > fixed ? scr.width - fixed : 0, 12, 40);

  out.push_back({{fit("PID", pid_w) + " " + fit("NAME", name_w) + " " + fit("STATUS", status_w) +
                      fit("MEMORY", memory_w, align::right) + fit("REDUCTIONS", reds_w, align::right) +
                      fit("REDS/S", rate_w, align::right) + fit("MAILBOX", mailbox_w, align::right) +
                      fit("", scr.width),
                  tint::inverse}});

  for (const json& proc : list) {
    auto pid = text(proc, {"pid"});
    std::string name = "-";
    for (const char* key : {"name", "label", "initial_call"}) {
      if (auto v = text(proc, {key}); v && !v->empty()) {
        name = *v;
        break;
      }
    }
    std::string status = text(proc, {"status"}).value_or("-");
    tint status_look = status == "running" ? tint::green : status == "exiting" ? tint::red : tint::plain;
    auto mailbox = number(proc, {"mailbox"});
    tint mailbox_look = !mailbox ? tint::plain : *mailbox >= 10000 ? tint::red : *mailbox >= 1000 ? tint::yellow
                                                                                                   : tint::plain;
    line l;
    l.push_back({fit(pid ? "<" + *pid + ">" : "-", pid_w) + " " + fit(name, name_w) + " "});
    l.push_back({fit(status, status_w), status_look});
    l.push_back({fit(show_bytes(number(proc, {"memory"})), memory_w, align::right) +
                 fit(show_count(number(proc, {"reductions"})), reds_w, align::right) +
                 fit(show_rate(pid ? rates.of(*pid) : std::nullopt), rate_w, align::right)});
    l.push_back({fit(show_count(mailbox), mailbox_w, align::right), mailbox_look});
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<line> render(const snapshot& s, const reduction_rates& rates, const options& opt, const endpoint& at,
                         const screen& scr) {
  std::vector<line> out = render_header(s, at);
  out.push_back({});
  for (line& l : render_schedulers(s.overview, scr)) out.push_back(std::move(l));
  out.push_back({});
  for (line& l : render_processes(s, rates, opt, scr)) out.push_back(std::move(l));
  return out;
}

std::vector<line> render_error(const std::string& error, const std::optional<snapshot>& last, const options& opt,
                               const endpoint& at) {
  std::vector<line> out;
  out.push_back({{"ember-top", tint::bold}, {"  " + at.shown() + "  " + show_clock(std::time(nullptr))}});
  out.push_back({});
  out.push_back({{"ember-top: " + error, tint::red}});
  std::string retry = "retrying every " + show_duration(opt.interval_s);
  if (last) retry += "; last good reply at " + show_clock(last->taken);
  out.push_back({{retry}});
  return out;
}

// ---------------------------------------------------------------------------
// Terminal

// Set by the signal handlers, read by the main loop and the quit handler.
volatile std::sig_atomic_t screen_taken = 0;  // the alternate screen and hidden cursor are on
volatile std::sig_atomic_t resized = 0;       // SIGWINCH since the last frame

constexpr std::string_view take_screen_sequence = "\x1b[?1049h\x1b[?25l";
constexpr std::string_view restore_screen_sequence = "\x1b[?25h\x1b[?1049l";

[[nodiscard]] bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

void on_quit_signal(int sig) {
  // Only async-signal-safe calls: write() and _exit().
  if (screen_taken) (void)!::write(STDOUT_FILENO, restore_screen_sequence.data(), restore_screen_sequence.size());
  _exit(sig == SIGINT ? exit_ok : 128 + sig);
}

void on_resize(int) { resized = 1; }

void install_signal_handlers() {
  struct sigaction quit {};
  quit.sa_handler = on_quit_signal;
  sigemptyset(&quit.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &quit, nullptr);
  struct sigaction resize {};
  resize.sa_handler = on_resize;
  sigemptyset(&resize.sa_mask);
  sigaction(SIGWINCH, &resize, nullptr);  // no SA_RESTART: poll() returns EINTR and we redraw
}

struct terminal_size {
  std::size_t columns = 0;  // 0: unknown
  std::size_t rows = 0;
};

terminal_size size_of_terminal() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return {ws.ws_col, ws.ws_row};
  return {};
}

// Columns to fill: the terminal's, else $COLUMNS, else 100; at least 40.
std::size_t output_width(std::size_t terminal_columns) {
  std::size_t width = terminal_columns;
  if (width == 0) {
    const char* env = std::getenv("COLUMNS");
    std::string_view v = env ? env : "";
    if (std::from_chars(v.data(), v.data() + v.size(), width).ec != std::errc{}) width = 0;
  }
  return width == 0 ? 100 : std::max<std::size_t>(width, 40);
}

// The alternate screen with the cursor hidden, for as long as it lives.
class alternate_screen {
 public:
  explicit alternate_screen(bool take) : taken_(take) {
    if (taken_ && write_all(STDOUT_FILENO, take_screen_sequence)) screen_taken = 1;
  }
  ~alternate_screen() {
    if (!taken_) return;
    screen_taken = 0;
    (void)write_all(STDOUT_FILENO, restore_screen_sequence);
  }
  alternate_screen(const alternate_screen&) = delete;
  alternate_screen& operator=(const alternate_screen&) = delete;

 private:
  bool taken_;
};

enum class wake { refresh, redraw, quit };

// Sleeps until `deadline`; earlier on a resize (redraw) or a "q" line on
// stdin (quit). Stdin is watched only while it is our terminal.
[[nodiscard]] wake wait_until(steady::time_point deadline, bool& watch_stdin, std::string& typed) {
  for (;;) {
    if (resized) {
      resized = 0;
      return wake::redraw;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()).count();
    if (left <= 0) return wake::refresh;
    if (watch_stdin && tcgetpgrp(STDIN_FILENO) != getpgrp()) watch_stdin = false;  // in the background
    pollfd in{STDIN_FILENO, POLLIN, 0};
    int n = poll(&in, watch_stdin ? 1 : 0, static_cast<int>(std::min<long long>(left, 1000)));
    if (n < 0 && errno != EINTR) return wake::refresh;
    if (n <= 0) continue;
    if (in.revents & (POLLERR | POLLNVAL)) {
      watch_stdin = false;
      continue;
    }
    char buffer[256];
    ssize_t got = ::read(STDIN_FILENO, buffer, sizeof buffer);
    if (got <= 0) {
      if (got == 0 || errno != EINTR) watch_stdin = false;
      continue;
    }
    for (char c : std::string_view(buffer, static_cast<std::size_t>(got))) {
      if (c != '\n') {
        typed += c;
        continue;
      }
      if (typed == "q" || typed == "Q") return wake::quit;
      typed.clear();
      return wake::redraw;  // Enter scrolled the screen: draw it again
    }
  }
}

// ---------------------------------------------------------------------------
// Modes

int run_once(const options& opt, const endpoint& at) {
  api_client api(at);
  snapshot_result result = take_snapshot(api, opt);
  if (!result.error.empty()) {
    std::cerr << "ember-top: " << result.error << '\n';
    return exit_error;
  }
  screen scr{output_width(isatty(STDOUT_FILENO) ? size_of_terminal().columns : 0), false};
  reduction_rates rates;  // one snapshot: no rates
  rates.update(result.snap.processes, result.snap.at);
  std::string out;
  for (const line& l : render(result.snap, rates, opt, at, scr)) out += paint(l, false, scr.width) + "\n";
  std::cout << out << std::flush;
  return std::cout ? exit_ok : exit_error;
}

int run_live(const options& opt, const endpoint& at) {
  const bool tty = isatty(STDOUT_FILENO);
  install_signal_handlers();
  alternate_screen screen_guard(tty);
  api_client api(at);
  reduction_rates rates;
  std::optional<snapshot> last;
  std::string error;
  bool watch_stdin = isatty(STDIN_FILENO);
  std::string typed;
  const auto interval = std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(opt.interval_s));

  auto draw = [&]() -> bool {
    terminal_size size = tty ? size_of_terminal() : terminal_size{};
    screen scr{output_width(size.columns), tty && std::getenv("NO_COLOR") == nullptr};
    std::vector<line> frame = error.empty() ? render(*last, rates, opt, at, scr) : render_error(error, last, opt, at);
    if (!tty) {  // a pipe or a file: frames one after another
      std::string out;
      for (const line& l : frame) out += paint(l, false, scr.width) + "\n";
      return write_all(STDOUT_FILENO, out + "\n");
    }
    // Keep the last row free so the final newline never scrolls the screen.
    if (size.rows > 1 && frame.size() > size.rows - 1) frame.resize(size.rows - 1);
    std::string out = "\x1b[H";
    for (const line& l : frame) out += paint(l, scr.color, scr.width) + "\x1b[K\n";
    out += "\x1b[J";
    return write_all(STDOUT_FILENO, out);
  };

  for (;;) {
    const auto started = steady::now();
    snapshot_result result = take_snapshot(api, opt);
    if (result.error.empty()) {
      rates.update(result.snap.processes, result.snap.at);
      last = std::move(result.snap);
      error.clear();
    } else {
      error = std::move(result.error);
    }
    if (!draw()) return exit_error;  // stdout closed
    for (;;) {
      wake w = wait_until(started + interval, watch_stdin, typed);
      if (w == wake::quit) return exit_ok;
      if (w == wake::refresh) break;
      if (!draw()) return exit_error;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  std::string error;
  switch (parse_arguments(std::span<char*>(argv + 1, argc > 0 ? argc - 1 : 0), opt, error)) {
    case parse_outcome::help: std::cout << usage_text; return exit_ok;
    case parse_outcome::bad_arguments: std::cerr << "ember-top: " << error << "\n\n" << usage_text; return exit_usage;
    case parse_outcome::run: break;
  }
  std::optional<endpoint> at = parse_url(opt.url, error);
  if (!at) {
    std::cerr << "ember-top: " << error << "\n\n" << usage_text;
    return exit_usage;
  }
  // A send on a socket the node closed must fail with EPIPE, not kill us
  // (httplib does not pass MSG_NOSIGNAL); a closed stdout fails the write.
  signal(SIGPIPE, SIG_IGN);
  return opt.once ? run_once(opt, *at) : run_live(opt, *at);
}
