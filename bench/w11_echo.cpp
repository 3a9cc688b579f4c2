// W11 echo: a TCP echo server on loopback; a load generator opens C
// connections and makes R round trips of 64 bytes on each, all connections
// at once, timing every round trip; the server's RSS growth per connection
// is measured from outside, in its own OS process.
//
//   ember_bench_w11 [R=1000] [C=1000] [--runtime NAME -- SERVER-COMMAND...]
//   ember_bench_w11 server PORT
//
// Server mode: an ember echo server on 127.0.0.1:PORT. One process accepts;
// each connection is moved into the closure of a process it spawns, which
// sets TCP_NODELAY and loops read_exact(64) / write(64) until the peer
// closes. It prints nothing on stdout and runs until killed.
//
// Driver mode: picks a free loopback port and starts the server as a child
// OS process (fork + exec, PORT appended as the last argument): by default
// this program in server mode (`/proc/self/exe server PORT`); after `--` any
// other server command, e.g. the BEAM peer
// (`erl -noshell -pa DIR -s w11_echo main`) or the Go one (`w11_echo_go`).
// `--runtime NAME` labels the RESULT line (`runtime=NAME`, as bench/run's
// BEAM lines are labelled). The child's stdout goes to stderr, it gets
// SIGKILL if this program dies (PR_SET_PDEATHSIG), and it is killed once the
// measurement is done.
//
// The driver probes the port until it accepts, makes one 64-byte round trip
// on that probe connection (the server is an echo server; code paths are
// loaded), closes it, waits 200 ms and reads the child's VmRSS from
// /proc/<pid>/status: `rss_before`. Then the ember load generator (this
// program's runtime, all cores): C client processes each connect (with
// TCP_NODELAY), make one untimed round trip, say `ready` and wait for `go`.
// Once all are ready the server RSS is read again, the start time taken and
// every client sent `go`; each makes R round trips (write 64 bytes of a
// pattern unique to the client and the round trip, read_exact 64, compare),
// timing each (steady_clock around write + read) into a preallocated array.
// The wall time ends when the last client reports done; the server RSS is
// read a last time with all C connections still open, the server is killed
// (its teardown is not measured) and the clients are told to close. Meanwhile a thread samples the server's VmRSS every 10 ms
// (from the first `ready` sample to the last one).
//
// bytes_per_conn = (largest server RSS seen with all C connections open -
// rss_before) / C. The RSS figures go to stderr.
//
// Verification (exit 1 otherwise): every client connected and made all R
// round trips; every echo equals what was sent; the histogram holds C*R
// samples; the server was still running when the last client was done.
//
// RESULT W11 rps=<C*R / wall time> p99_us p50_us max_us bytes_per_conn [runtime=NAME]
#include <ember/ember.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "latency_hist.hpp"

namespace {

namespace net = ember::net;
using namespace std::chrono_literals;

constexpr std::size_t msg_size = 64;
const char* me = "ember_bench_w11";

// Raises the soft limit on open files to the hard one: 1,000 connections
// on each side, and the server child inherits it.
void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// ---------------------------------------------------------------- server

int run_server(int argc, char** argv) {
  const std::int64_t port = bench::arg_int(argc, argv, 2, 0);
  if (port <= 0 || port > 65535) {
    std::fprintf(stderr, "%s server: a port is needed\n", me);
    return 64;
  }
  raise_nofile();
  ember::runtime rt(bench::runtime_options());
  rt.spawn([port] {
    try {
      auto l = net::listener::listen(net::address::loopback(std::uint16_t(port)), {.backlog = 1024});
      for (;;) {
        net::stream conn = l.accept();
        ember::spawn([c = std::move(conn)]() mutable {
          try {
            c.set_nodelay(true);
            char buf[msg_size];
            for (;;) {
              c.read_exact(buf, msg_size);
              c.write(buf, msg_size);
            }
          } catch (const ember::error&) {
            // the peer closed (or reset): this connection is done
          }
        });
      }
    } catch (const ember::error& e) {
      std::fprintf(stderr, "%s server: %s\n", me, e.what());
      std::fflush(stderr);
      _exit(1);
    }
  });
  rt.wait();  // never: the acceptor runs until the program is killed
  return 0;
}

// ---------------------------------------------------------------- driver

// VmRSS of process `p` in bytes (0 if unreadable).
std::int64_t rss_of(pid_t p) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", int(p));
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

// A loopback port nobody listens on now (bound to port 0, then released).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    std::perror("free_port");
    std::exit(1);
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

pid_t start_server(std::vector<std::string> cmd) {
  std::vector<char*> args;
  for (auto& s : cmd) args.push_back(s.data());
  args.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = getpid();
  pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the driver is already gone
    dup2(2, 1);                         // the server's output never mixes with RESULT lines
    execvp(args[0], args.data());
    std::fprintf(stderr, "%s: cannot run %s: %s\n", me, args[0], std::strerror(errno));
    _exit(127);
  }
  return child;
}

// false if the server has exited (and says so).
bool server_alive(pid_t server) {
  int ws = 0;
  pid_t r = waitpid(server, &ws, WNOHANG);
  if (r == 0) return true;
  if (r == server) {
    if (WIFSIGNALED(ws))
      std::fprintf(stderr, "%s: error: the server died: signal %d\n", me, WTERMSIG(ws));
    else
      std::fprintf(stderr, "%s: error: the server exited with status %d\n", me, WEXITSTATUS(ws));
  }
  return false;
}

// Connects to the server until it accepts (at most `limit`), then makes
// one 64-byte round trip on that connection and closes it. Blocking
// sockets: the runtime is not started yet.
bool probe(pid_t server, int port, std::chrono::seconds limit) {
  const auto until = bench::clock::now() + limit;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(std::uint16_t(port));
  for (;;) {
    if (!server_alive(server)) return false;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      timeval tv{5, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char out[msg_size], in[msg_size];
      for (std::size_t j = 0; j < msg_size; ++j) out[j] = char('a' + j % 26);
      bool ok = ::send(fd, out, msg_size, MSG_NOSIGNAL) == ssize_t(msg_size);
      std::size_t got = 0;
      while (ok && got < msg_size) {
        ssize_t r = ::recv(fd, in + got, msg_size - got, 0);
        if (r <= 0) ok = false;
        else got += std::size_t(r);
      }
      ::close(fd);
      if (!ok || std::memcmp(in, out, msg_size) != 0) {
        std::fprintf(stderr, "%s: error: the server accepted but did not echo 64 bytes\n", me);
        return false;
      }
      return true;
    }
    ::close(fd);
    if (bench::clock::now() > until) {
      std::fprintf(stderr, "%s: error: the server did not accept on port %d within %llds\n", me, port,
                   (long long)limit.count());
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
}

struct ready {
  bool ok;
};
struct go {};
struct close_now {};
struct client_done {
  int index;
  std::int64_t round_trips;  // completed and verified
  std::int64_t mismatches;   // echoes that differed from what was sent
  bool failed;               // an operation threw (its text is in client_errors[index])
};

// Allocated by main before the runtime starts (global heap): client i writes
// only latencies[i*R .. i*R+R) and client_errors[i].
std::vector<std::uint32_t> latencies;
std::vector<std::string> client_errors;

void fill(char* buf, int index, std::int64_t k) {
  for (std::size_t j = 0; j < msg_size; ++j) buf[j] = char(std::uint32_t(index) * 131u + std::uint32_t(k) * 7u + j);
}

void client(int index, net::address at, ember::pid driver, std::int64_t r) {
  client_done d{index, 0, 0, false};
  net::stream c;
  char out[msg_size], in[msg_size];
  try {
    c = net::stream::connect(at, 20s);
    c.set_nodelay(true);
    fill(out, index, -1);  // the untimed warm-up round trip
    c.write(out, msg_size);
    c.read_exact(in, msg_size);
    if (std::memcmp(in, out, msg_size) != 0) ++d.mismatches;
  } catch (const ember::error& e) {
    ember::global_heap_scope outlives_me;
    client_errors[std::size_t(index)] = std::string("connect: ") + e.what();
    d.failed = true;
  }
  ember::send(driver, ready{!d.failed});
  ember::receive([](go) {});
  if (!d.failed) {
    std::uint32_t* lat = latencies.data() + std::size_t(index) * std::size_t(r);
    try {
      for (std::int64_t k = 0; k < r; ++k) {
        fill(out, index, k);
        const auto t0 = bench::clock::now();
        c.write(out, msg_size);
        c.read_exact(in, msg_size);
        const auto t1 = bench::clock::now();
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
        lat[k] = std::uint32_t(std::min<std::int64_t>(ns, UINT32_MAX));
        if (std::memcmp(in, out, msg_size) != 0) ++d.mismatches;
        ++d.round_trips;
      }
    } catch (const ember::error& e) {
      ember::global_heap_scope outlives_me;
      client_errors[std::size_t(index)] = e.what();
      d.failed = true;
    }
  }
  ember::send(driver, d);
  ember::receive([](close_now) {});  // the connection stays open until the last RSS reading
}

struct measurement {
  double ns = 0;
  std::int64_t round_trips = 0;
  std::int64_t mismatches = 0;
  int not_ready = 0;  // clients that could not connect
  int failed = 0;     // clients whose operations threw
  double connect_ns = 0;  // from spawning the clients to the last one ready
  std::int64_t rss_ready = 0, rss_end = 0;
  bool server_ran = false;  // the server was still running when the last client was done
  std::string error;
};

// The server's largest VmRSS while the sampler runs.
struct rss_sampler {
  std::atomic<bool> on{false}, stop{false};
  std::atomic<std::int64_t> peak{0};
  std::thread thread;
  explicit rss_sampler(pid_t server) {
    thread = std::thread([this, server] {
      while (!stop.load()) {
        if (on.load()) {
          std::int64_t v = rss_of(server);
          if (v > peak.load()) peak.store(v);
        }
        std::this_thread::sleep_for(10ms);
      }
    });
  }
  ~rss_sampler() {
    stop = true;
    thread.join();
  }
};

int run_driver(int argc, char** argv) {
  // [R] [C] [--runtime NAME] [-- server command...]
  std::vector<char*> sizes;
  std::string runtime_name;
  std::vector<std::string> server_cmd;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--runtime" && i + 1 < argc) {
      runtime_name = argv[++i];
    } else if (a == "--") {
      for (++i; i < argc; ++i) server_cmd.emplace_back(argv[i]);
    } else {
      sizes.push_back(argv[i]);
    }
  }
  sizes.insert(sizes.begin(), argv[0]);
  const std::int64_t r = bench::arg_int(int(sizes.size()), sizes.data(), 1, 1000);
  const std::int64_t c = bench::arg_int(int(sizes.size()), sizes.data(), 2, 1000);
  const std::string tag = runtime_name.empty() ? "W11" : "W11 runtime=" + runtime_name;
  const std::string label = runtime_name.empty() ? "" : " runtime=" + runtime_name;

  raise_nofile();
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur != RLIM_INFINITY && std::int64_t(rl.rlim_cur) < c + 64)
    std::fprintf(stderr, "%s: warning: open files limited to %llu (C=%lld connections need more)\n", me,
                 (unsigned long long)rl.rlim_cur, (long long)c);

  bench::watchdog dog(tag);
  const int port = free_port();
  if (server_cmd.empty()) server_cmd = {"/proc/self/exe", "server"};
  server_cmd.push_back(std::to_string(port));
  const pid_t server = start_server(server_cmd);
  bool server_stopped = false;
  auto stop_server = [&] {
    if (server_stopped) return;
    server_stopped = true;
    kill(server, SIGKILL);
    int ws = 0;
    while (waitpid(server, &ws, 0) < 0 && errno == EINTR) {
    }
  };
  if (!probe(server, port, 30s)) {
    stop_server();
    return 1;
  }
  std::this_thread::sleep_for(200ms);
  const std::int64_t rss_before = rss_of(server);

  latencies.assign(std::size_t(c * r), 0);
  client_errors.resize(std::size_t(c));
  rss_sampler sampler(server);

  ember::runtime rt(bench::runtime_options());
  measurement m = bench::run_driver<measurement>(rt, [&](measurement& m) {
    const ember::pid driver = ember::self();
    const net::address at = net::address::loopback(std::uint16_t(port));
    std::vector<ember::pid> clients;
    clients.reserve(std::size_t(c));
    for (int i = 0; i < int(c); ++i)
      clients.push_back(ember::spawn([i, at, driver, r] { client(i, at, driver, r); }));
    const auto t_spawn = bench::clock::now();
    for (std::int64_t i = 0; i < c; ++i) ember::receive([&](ready x) { m.not_ready += !x.ok; });
    m.connect_ns = bench::ns_between(t_spawn, bench::clock::now());
    m.rss_ready = rss_of(server);
    sampler.on = true;
    const auto t0 = bench::clock::now();
    for (ember::pid p : clients) ember::send(p, go{});
    for (std::int64_t i = 0; i < c; ++i) {
      ember::receive([&](const client_done& d) {
        m.round_trips += d.round_trips;
        m.mismatches += d.mismatches;
        m.failed += d.failed;
      });
    }
    const auto t1 = bench::clock::now();
    m.ns = bench::ns_between(t0, t1);
    m.rss_end = rss_of(server);
    sampler.on = false;
    // The server is stopped before the connections close: its teardown is
    // not measured, and the run is over.
    m.server_ran = server_alive(server);
    stop_server();
    for (ember::pid p : clients) ember::send(p, close_now{});
  });
  if (!m.error.empty()) {  // the runtime's destructor ends what is left
    std::fprintf(stderr, "%s: error: the driver failed: %s\n", me, m.error.c_str());
    stop_server();
    return 1;
  }
  rt.wait();
  bool ok = m.server_ran;

  const std::int64_t total = c * r;
  int shown = 0;
  for (std::int64_t i = 0; i < c; ++i) {
    if (!client_errors[std::size_t(i)].empty() && shown++ < 5)
      std::fprintf(stderr, "%s: error: client %lld: %s\n", me, (long long)i, client_errors[std::size_t(i)].c_str());
  }
  bench::latency_hist all;
  all.clear();
  if (m.round_trips == total)
    for (std::uint32_t ns : latencies) all.record(ns);
  if (m.not_ready != 0 || m.failed != 0 || m.round_trips != total || m.mismatches != 0 ||
      std::int64_t(all.total()) != total) {
    std::fprintf(stderr,
                 "%s: error: verification failed: %d clients could not connect, %d failed, %lld round trips "
                 "(expected %lld), %lld echoes differed, %llu latency samples\n",
                 me, m.not_ready, m.failed, (long long)m.round_trips, (long long)total,
                 (long long)m.mismatches, (unsigned long long)all.total());
    ok = false;
  }
  if (!ok) return 1;
  const std::int64_t rss_peak = std::max({m.rss_ready, m.rss_end, sampler.peak.load()});
  std::fprintf(stderr,
               "%s: connecting took %.0f ms, the round trips %.0f ms; server RSS: before %lld KiB, all "
               "connected %lld KiB, peak %lld KiB, end %lld KiB\n",
               me, m.connect_ns / 1e6, m.ns / 1e6, (long long)(rss_before / 1024), (long long)(m.rss_ready / 1024),
               (long long)(rss_peak / 1024), (long long)(m.rss_end / 1024));
  BENCH_PRINT("RESULT W11 rps=%.0f p99_us=%.1f p50_us=%.1f max_us=%.1f bytes_per_conn=%.0f%s\n",
              double(total) / (m.ns / 1e9), all.quantile_ns(0.99) / 1e3, all.quantile_ns(0.5) / 1e3,
              double(all.max_ns()) / 1e3, double(rss_peak - rss_before) / double(c), label.c_str());
  dog.disarm();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "server") return run_server(argc, argv);
  return run_driver(argc, argv);
}
