// Real Redis servers for tests: redis_server starts one redis-server
// process on a free loopback port, in a fresh temporary directory;
// redis_cluster starts three masters and joins them into a Redis Cluster.
// Both are driven from the test thread with plain blocking sockets (from
// a process, call them through ember::blocking: they block their thread),
// and stop their servers when destroyed. Every test executable makes its
// own, so executables can run in parallel (ctest -j).
//
//   ember_test::redis_server server;                     // waits until it answers PING
//   server.command({"SET", "k", "v"});                   // "+OK\r\n": the raw reply
//   server.kill(); server.restart();                     // same port, same directory
//
// The server is redis-server from PATH, or the one EMBER_REDIS_SERVER
// names. It is started with --save "" --appendonly no (no persistence
// unless a test asks for it) and is killed when the thread that started
// it ends (PR_SET_PDEATHSIG), so a crashed test leaves no server behind:
// make servers on the test's main thread (or one that outlives them).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace ember_test {

namespace redis_detail {

// A blocking TCP connection to 127.0.0.1:port with send and receive
// timeouts, for the test thread.
class blocking_socket {
 public:
  blocking_socket(std::uint16_t port, std::chrono::milliseconds timeout) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      int e = errno;
      ::close(fd_);
      throw std::runtime_error("connect 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(e));
    }
  }
  ~blocking_socket() { ::close(fd_); }
  blocking_socket(const blocking_socket&) = delete;
  blocking_socket& operator=(const blocking_socket&) = delete;

  void write_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  // One line, with its "\r\n".
  std::string line() {
    for (;;) {
      auto end = buf_.find("\r\n", pos_);
      if (end != std::string::npos) {
        std::string l = buf_.substr(pos_, end + 2 - pos_);
        pos_ = end + 2;
        return l;
      }
      fill();
    }
  }
  std::string bytes(std::size_t n) {
    while (buf_.size() - pos_ < n) fill();
    std::string b = buf_.substr(pos_, n);
    pos_ += n;
    return b;
  }

 private:
  void fill() {
    if (pos_ > 0) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
    char chunk[16384];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) return;
    if (n < 0) throw std::runtime_error(std::string("recv: ") + std::strerror(errno));
    if (n == 0) throw std::runtime_error("recv: the server closed the connection");
    buf_.append(chunk, static_cast<std::size_t>(n));
  }
  int fd_ = -1;
  std::string buf_;
  std::size_t pos_ = 0;
};

// One whole RESP reply, as its raw text.
inline std::string read_raw_reply(blocking_socket& s) {
  std::string l = s.line();
  switch (l[0]) {
    case '+':
    case '-':
    case ':': return l;
    case '$': {
      long n = std::strtol(l.c_str() + 1, nullptr, 10);
      return n < 0 ? l : l + s.bytes(static_cast<std::size_t>(n) + 2);
    }
    case '*': {
      long n = std::strtol(l.c_str() + 1, nullptr, 10);
      for (long i = 0; i < n; ++i) l += read_raw_reply(s);
      return l;
    }
  }
  throw std::runtime_error("not a RESP reply: " + l);
}

inline std::string encode_command(const std::vector<std::string>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  return out;
}

// A port nobody listens on now (bound to 127.0.0.1:0 and released).
inline std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    int e = errno;
    ::close(fd);
    throw std::runtime_error(std::string("bind 127.0.0.1:0: ") + std::strerror(e));
  }
  ::close(fd);
  return ntohs(sa.sin_port);
}

// The value of "name:value" in an INFO-style reply ("" if absent).
inline std::string info_field(const std::string& text, std::string_view name) {
  std::string key = std::string(name) + ":";
  for (std::size_t at = 0; (at = text.find(key, at)) != std::string::npos; at += key.size()) {
    if (at != 0 && text[at - 1] != '\n') continue;
    auto end = text.find_first_of("\r\n", at);
    return text.substr(at + key.size(), end == std::string::npos ? std::string::npos : end - at - key.size());
  }
  return "";
}

// A RESP value parsed from raw reply text (for checks on the test thread).
struct raw_value {
  char type = 0;  // '+', '-', ':', '$', '*'
  std::string text;  // status, error or bulk text; the digits of an integer
  bool nil = false;
  std::vector<raw_value> elements;
  long long integer() const { return std::strtoll(text.c_str(), nullptr, 10); }
};

inline raw_value parse_raw(const std::string& raw, std::size_t& at) {
  auto eol = raw.find("\r\n", at);
  if (eol == std::string::npos || eol == at) throw std::runtime_error("truncated RESP: " + raw);
  raw_value v;
  v.type = raw[at];
  std::string head = raw.substr(at + 1, eol - at - 1);
  at = eol + 2;
  if (v.type == '$' || v.type == '*') {
    long long n = std::strtoll(head.c_str(), nullptr, 10);
    if (n < 0) {
      v.nil = true;
    } else if (v.type == '$') {
      v.text = raw.substr(at, static_cast<std::size_t>(n));
      at += static_cast<std::size_t>(n) + 2;
    } else {
      for (long long i = 0; i < n; ++i) v.elements.push_back(parse_raw(raw, at));
    }
  } else {
    v.text = head;
  }
  return v;
}
inline raw_value parse_raw(const std::string& raw) {
  std::size_t at = 0;
  return parse_raw(raw, at);
}

// The path of an executable: as given if it has a '/', else found in PATH.
inline std::string find_executable(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw std::runtime_error(name + " not found in PATH (install redis-server or set EMBER_REDIS_SERVER)");
}

}  // namespace redis_detail

class redis_server {
 public:
  // Starts redis-server with the standard options plus `options` (command
  // line style: {"--appendonly", "yes"}). With cluster_node, as a cluster
  // node: cluster-enabled, its nodes.conf in the directory, node timeout
  // 2000 ms, and a cluster bus on a second free port.
  explicit redis_server(std::vector<std::string> options = {}, bool cluster_node = false)
      : options_(std::move(options)), cluster_node_(cluster_node) {
    const char* env = std::getenv("EMBER_REDIS_SERVER");
    executable_ = redis_detail::find_executable(env && *env ? env : "redis-server");
    std::string tmpl = temp_root() + "/ember_redis_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
    dir_ = buf.data();
    try {
      start_on_free_port();
    } catch (...) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      throw;
    }
  }
  ~redis_server() {
    try {
      stop();
    } catch (...) {
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  std::uint16_t port() const { return port_; }
  std::uint16_t bus_port() const { return bus_port_; }  // cluster nodes only
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& dir() const { return dir_; }
  bool running() const { return pid_ > 0; }

  // SIGTERM, and waits for the server to exit (SIGKILL after 10 s).
  void stop() { end(SIGTERM); }
  // SIGKILL, and waits for the server to exit.
  void kill() { end(SIGKILL); }
  // Starts it again on the same port and directory (so the data is back
  // if the options asked for persistence). Stops it first if running.
  void restart() {
    stop();
    std::string why;
    if (!launch_and_wait(why)) throw std::runtime_error("redis-server did not restart on " + address() + ": " + why);
  }

  // Sends one command and returns the raw reply ("+OK\r\n", "$1\r\nv\r\n").
  std::string command(const std::vector<std::string>& args,
                      std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
    return command_at(port_, args, timeout);
  }
  static std::string command_at(std::uint16_t port, const std::vector<std::string>& args,
                                std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    redis_detail::blocking_socket s(port, timeout);
    s.write_all(redis_detail::encode_command(args));
    return redis_detail::read_raw_reply(s);
  }
  // The text of a bulk-string reply ("" for anything else).
  static std::string bulk_text(const std::string& raw) {
    if (raw.empty() || raw[0] != '$') return "";
    auto start = raw.find("\r\n");
    if (start == std::string::npos || raw.size() < start + 4) return "";
    return raw.substr(start + 2, raw.size() - start - 4);
  }

  // The end of the server's log, for failure messages.
  std::string log_tail(std::size_t max_bytes = 2000) const {
    std::ifstream in(dir_ + "/redis.log");
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return all.size() > max_bytes ? all.substr(all.size() - max_bytes) : all;
  }

 private:
  static std::string temp_root() {
    const char* t = std::getenv("TMPDIR");
    return t && *t ? t : "/tmp";
  }

  void start_on_free_port() {
    std::string why;
    for (int attempt = 0; attempt < 20; ++attempt) {
      port_ = redis_detail::free_port();
      bus_port_ = 0;
      if (cluster_node_) {
        do bus_port_ = redis_detail::free_port();
        while (bus_port_ == port_);
      }
      if (launch_and_wait(why)) return;
      // Another process took the port between our probe and the server's
      // bind: try other ports. Anything else is a real failure.
      if (why.find("Address already in use") == std::string::npos &&
          why.find("another process is using this port") == std::string::npos)
        break;
    }
    throw std::runtime_error("redis-server (" + executable_ + ") did not start: " + why);
  }

  std::vector<std::string> arguments() const {
    std::vector<std::string> a{executable_,   "--port",          std::to_string(port_),
                               "--bind",      "127.0.0.1",       "--protected-mode",
                               "no",          "--daemonize",     "no",
                               "--save",      "",                "--appendonly",
                               "no",          "--dir",           dir_,
                               "--logfile",   dir_ + "/redis.log"};
    if (cluster_node_) {
      for (std::string o : {"--cluster-enabled", "yes", "--cluster-config-file"}) a.push_back(o);
      a.push_back(dir_ + "/nodes.conf");
      for (std::string o : {"--cluster-node-timeout", "2000", "--cluster-port"}) a.push_back(o);
      a.push_back(std::to_string(bus_port_));
    }
    a.insert(a.end(), options_.begin(), options_.end());
    return a;
  }

  // Starts the server and waits until it answers PING. False (with why)
  // if it exits first; throws if it neither answers nor exits in 20 s.
  bool launch_and_wait(std::string& why) {
    std::vector<std::string> args = arguments();
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    std::string out_path = dir_ + "/stdout.log";
    pid_t parent = ::getpid();
    pid_t child = ::fork();
    if (child < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (child == 0) {
      // Only async-signal-safe calls until exec: this process has one
      // thread of a multi-threaded parent.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (out >= 0) {
        ::dup2(out, 1);
        ::dup2(out, 2);
      }
      ::close_range(3, ~0U, 0);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = child;
    auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        why = "it exited (" + describe(status) + "); log:\n" + log_tail() + read_file(dir_ + "/stdout.log");
        return false;
      }
      if (answers_as_ours()) return true;
      if (std::chrono::steady_clock::now() > limit) {
        end(SIGKILL);
        throw std::runtime_error("redis-server on " + address() + " did not answer PING within 20 s; log:\n" +
                                 log_tail());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // short retry of a poll
    }
  }

  // True if the server on port_ is ours (its process_id) and answers PING
  // (not -LOADING).
  bool answers_as_ours() const {
    try {
      if (command({"PING"}, std::chrono::seconds(2)) != "+PONG\r\n") return false;
      std::string info = bulk_text(command({"INFO", "server"}, std::chrono::seconds(2)));
      return redis_detail::info_field(info, "process_id") == std::to_string(pid_);
    } catch (const std::exception&) {
      return false;
    }
  }

  void end(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    for (;;) {
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno == ECHILD)) break;
      if (std::chrono::steady_clock::now() > limit) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // short retry of a poll
    }
    pid_ = -1;
  }

  static std::string describe(int status) {
    if (WIFEXITED(status)) return "status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
    return "status " + std::to_string(status);
  }
  static std::string read_file(const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  std::vector<std::string> options_;
  bool cluster_node_ = false;
  std::string executable_;
  std::string dir_;
  std::uint16_t port_ = 0;
  std::uint16_t bus_port_ = 0;
  pid_t pid_ = -1;
};

// A Redis Cluster of three masters, no replicas: slots 0-5460, 5461-10922
// and 10923-16383, in node order. Ready (cluster_state:ok everywhere, and
// every node's CLUSTER SLOTS lists the three ranges) once constructed.
class redis_cluster {
 public:
  static constexpr std::array<std::pair<int, int>, 3> ranges{{{0, 5460}, {5461, 10922}, {10923, 16383}}};

  redis_cluster() {
    for (int i = 0; i < 3; ++i) nodes_.push_back(std::make_unique<redis_server>(std::vector<std::string>{}, true));
    for (int i = 0; i < 3; ++i) {
      expect(*nodes_[i], {"CLUSTER", "SET-CONFIG-EPOCH", std::to_string(i + 1)}, "+OK\r\n");
      expect(*nodes_[i],
             {"CLUSTER", "ADDSLOTSRANGE", std::to_string(ranges[i].first), std::to_string(ranges[i].second)},
             "+OK\r\n");
    }
    for (int i = 1; i < 3; ++i)
      expect(*nodes_[0],
             {"CLUSTER", "MEET", "127.0.0.1", std::to_string(nodes_[i]->port()), std::to_string(nodes_[i]->bus_port())},
             "+OK\r\n");
    for (int i = 0; i < 3; ++i) ids_.push_back(redis_server::bulk_text(nodes_[i]->command({"CLUSTER", "MYID"})));
    wait_until_ready();
    wait_until_settled();
  }

  std::vector<std::string> seeds() const {
    std::vector<std::string> s;
    for (const auto& n : nodes_) s.push_back(n->address());
    return s;
  }
  redis_server& node(int i) { return *nodes_.at(static_cast<std::size_t>(i)); }
  const std::string& node_id(int i) const { return ids_.at(static_cast<std::size_t>(i)); }
  // Waits until the nodes agree on every node's config epoch and slots
  // (CLUSTER NODES, ignoring each node's view of links and pings). A
  // manual slot migration needs it: a node given a slot by CLUSTER SETSLOT
  // NODE takes a new config epoch only if it knows a greater one, so
  // starting before an earlier epoch change has spread lets the old
  // owner's late gossip take the slot back, for good.
  void wait_until_settled() {
    auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!settled()) {
      if (std::chrono::steady_clock::now() > limit) throw std::runtime_error("the Redis cluster did not settle within 20 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // short retry of a poll
    }
  }

  // The index of the node that owns `slot` now, as node `asked` sees it
  // (-1 if none).
  int owner_of(int slot, int asked = 0) {
    redis_detail::raw_value slots = redis_detail::parse_raw(nodes_.at(std::size_t(asked))->command({"CLUSTER", "SLOTS"}));
    for (const auto& e : slots.elements) {
      if (e.elements.size() < 3 || slot < e.elements[0].integer() || slot > e.elements[1].integer()) continue;
      long long port = e.elements[2].elements.at(1).integer();
      for (std::size_t i = 0; i < nodes_.size(); ++i)
        if (nodes_[i]->port() == port) return static_cast<int>(i);
    }
    return -1;
  }

 private:
  static void expect(redis_server& n, const std::vector<std::string>& args, const std::string& want) {
    std::string got = n.command(args);
    if (got != want)
      throw std::runtime_error("cluster setup: " + args[0] + " " + args[1] + " on " + n.address() + " answered " + got);
  }

  // Every node: cluster_state:ok, three known nodes, and CLUSTER SLOTS
  // listing the three ranges with their owners' ports.
  bool ready() {
    for (auto& n : nodes_) {
      std::string info = redis_server::bulk_text(n->command({"CLUSTER", "INFO"}));
      if (redis_detail::info_field(info, "cluster_state") != "ok") return false;
      if (redis_detail::info_field(info, "cluster_known_nodes") != "3") return false;
      redis_detail::raw_value slots = redis_detail::parse_raw(n->command({"CLUSTER", "SLOTS"}));
      if (slots.elements.size() != 3) return false;
      for (std::size_t i = 0; i < 3; ++i) {
        bool listed = false;
        for (const auto& e : slots.elements) {
          if (e.elements.size() < 3 || e.elements[2].elements.size() < 2) return false;
          const auto& master = e.elements[2];
          listed |= e.elements[0].integer() == ranges[i].first && e.elements[1].integer() == ranges[i].second &&
                    master.elements[0].text == "127.0.0.1" && master.elements[1].integer() == nodes_[i]->port();
        }
        if (!listed) return false;
      }
    }
    return true;
  }

  // Every node's view, as sorted "id epoch slots..." lines, is the same.
  bool settled() {
    std::string reference;
    for (std::size_t n = 0; n < nodes_.size(); ++n) {
      std::string info = redis_server::bulk_text(nodes_[n]->command({"CLUSTER", "INFO"}));
      if (redis_detail::info_field(info, "cluster_state") != "ok") return false;
      std::stringstream text(redis_server::bulk_text(nodes_[n]->command({"CLUSTER", "NODES"})));
      std::vector<std::string> lines;
      for (std::string line; std::getline(text, line);) {
        // id addr flags master ping pong epoch link slots...
        std::stringstream fields(line);
        std::vector<std::string> f;
        for (std::string field; fields >> field;) f.push_back(field);
        if (f.size() < 8) continue;
        std::string view = f[0] + " " + f[6];
        for (std::size_t i = 8; i < f.size(); ++i) view += " " + f[i];
        lines.push_back(view);
      }
      std::sort(lines.begin(), lines.end());
      std::string all;
      for (const auto& l : lines) all += l + "\n";
      if (n == 0) {
        reference = all;
      } else if (all != reference) {
        return false;
      }
    }
    return true;
  }

  void wait_until_ready() {
    auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!ready()) {
      if (std::chrono::steady_clock::now() > limit) {
        std::string state;
        for (auto& n : nodes_) state += n->address() + ":\n" + n->command({"CLUSTER", "NODES"}) + "\n";
        throw std::runtime_error("the Redis cluster did not become ready within 20 s:\n" + state);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // short retry of a poll
    }
  }

  std::vector<std::unique_ptr<redis_server>> nodes_;
  std::vector<std::string> ids_;
};

}  // namespace ember_test
