// W10 dist: two nodes on this machine, each an OS process. A process on
// node A makes M round trips to a process on node B, then sends M one-way
// messages and waits for B to acknowledge the count. Once per condition:
//
//   idle   nothing else runs: an idle core halts, and in a VM waking it
//          costs tens of microseconds (the vCPU is descheduled by the host);
//   awake  every core is kept busy by a spinner at the lowest priority
//          (below), so a wake-up finds the core running, not halted.
//
//   ember_bench_w10 [M=100000] [idle|awake|both=both]
//   ember_bench_w10 --spin                   the spinner (until stdin closes)
//   ember_bench_w10 --role a REDIS CLUSTER M CONDITION
//   ember_bench_w10 --role b REDIS CLUSTER
//
// Processes. The program (the orchestrator) starts a redis-server on a free
// loopback port (--save "" --appendonly no: membership only, nothing on
// disk) and, for each condition, runs node A as a child: `/proc/self/exe
// --role a ...` (a fresh OS process per condition, so the runtimes and
// connections of one condition do not warm the other). Node A joins the
// cluster CLUSTER (one per condition) as "a", starts node B the same way
// (`--role b`, its stdin and stdout piped to A), and reads B's line
// `ready <cluster pid bits of B's echo>`. B has joined as "b" and spawned
// the echo. A waits until it knows B (node::find), then runs the workload
// in one of its processes. B leaves when its stdin closes; every child gets
// SIGKILL if its parent dies (PR_SET_PDEATHSIG). Both runtimes have the
// default options (one scheduler per core); both nodes heartbeat every
// 100 ms and declare a silent node down after 1 s.
//
// The workload (A's driver process; messages in bench/w10.capnp):
//   warm-up  1000 round trips (min(M, 1000)), unmeasured: the connections
//            A->B and B->A are set up by the first messages;
//   round    M times: t0, send Ping{seq, from = A's driver}, receive B's
//   trips    Ping (same seq checked), t1 (steady_clock): each round trip
//            goes into the latency histogram (bench/latency_hist.hpp) and
//            their sum gives the mean;
//   one-way  t0, M times send Msg{seq}, then Done{count = M, from}, receive
//            B's Ack, t1: remote_msgs_per_s = M / (t1 - t0).
// B's echo answers a Ping with Ping{seq, from = the echo} to the pid inside,
// counts Msgs (checking seq order) and answers a Done with Ack{count,
// inOrder, pings answered}.
//
// Verification (exit 1 otherwise): every reply carried the seq sent; the
// Ack says B got M messages, in order, and answered warm-up + M Pings;
// node A dropped nothing (node_stats dropped_*); the histogram holds M
// samples. Then:
//
//   RESULT W10 condition=<idle|awake> remote_roundtrip_us=<mean>
//          remote_msgs_per_s=<n> roundtrip_p50_us roundtrip_p99_us roundtrip_max_us
//
// The spinner (`--spin`, also what bench/erlang/w10_dist.erl starts for
// BEAM's awake run, so that both runtimes get the same help): one thread per
// CPU of its affinity mask, pinned there, SCHED_IDLE (it runs only when
// nothing else on that CPU wants to), looping on sched_yield(). The yield
// matters: BEAM's schedulers call sched_yield while they busy-wait, and a
// pure busy loop would then keep the CPU until the next tick (4 ms; BEAM's
// awake p99 went from ~0.1 to ~2 ms). It says `spinning <n>` on stdout once
// every thread has started and exits when its stdin closes. It is a
// separate OS process, not threads inside the nodes, because a BEAM node
// cannot start such threads: this way the kernel sees the same thing under
// both runtimes.
//
// W10_SCHEDULERS=<n> in the environment gives each node n schedulers
// instead of one per core: for experiments (bench/run does not set it).
// W10_TRANSPORT=redis_stream makes both nodes take messages through their
// Redis Streams instead of the direct TCP path (the fallback transport).
#include <ember/dist/node.hpp>
#include <ember/dist/wire.hpp>
#include <ember/ember.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "latency_hist.hpp"
#include "w10.capnp.h"

namespace {

using namespace std::chrono_literals;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "ember_bench_w10: error: %s\n", what.c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  ::_exit(1);  // not exit(): a runtime's threads may be running (children die by PR_SET_PDEATHSIG)
}

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) die(std::string("readlink /proc/self/exe: ") + std::strerror(errno));
  return std::string(buf, std::size_t(n));
}

// --- child processes ------------------------------------------------------------

// A child OS process running `args`, its stdin (and, if asked, stdout)
// piped to this process; SIGKILL if this process dies.
struct child {
  pid_t pid = -1;
  int to_stdin = -1;     // write end of its stdin (-1: closed)
  int from_stdout = -1;  // read end of its stdout (-1: inherited)

  static child start(std::vector<std::string> args, bool pipe_stdout, bool quiet = false) {
    int in[2], out[2] = {-1, -1};
    if (::pipe2(in, O_CLOEXEC) != 0 || (pipe_stdout && ::pipe2(out, O_CLOEXEC) != 0))
      die(std::string("pipe: ") + std::strerror(errno));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::fflush(stdout);
    std::fflush(stderr);
    pid_t parent = ::getpid();
    pid_t p = ::fork();
    if (p < 0) die(std::string("fork: ") + std::strerror(errno));
    if (p == 0) {
      // Async-signal-safe calls only: the parent may have threads.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(in[0], 0);
      if (pipe_stdout) ::dup2(out[1], 1);
      if (quiet) {
        int null = ::open("/dev/null", O_WRONLY);
        if (null >= 0) {
          ::dup2(null, 1);
          ::dup2(null, 2);
        }
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(in[0]);
    if (pipe_stdout) ::close(out[1]);
    return child{p, in[1], out[0]};
  }

  // One line of its stdout, without the newline ("" at end of file).
  std::string line() const {
    std::string l;
    char c;
    while (::read(from_stdout, &c, 1) == 1 && c != '\n') l += c;
    return l;
  }

  void close_stdin() {
    if (to_stdin >= 0) ::close(to_stdin);
    to_stdin = -1;
  }

  // Waits for it to exit; its status (128 + signal if killed).
  int wait() {
    close_stdin();
    if (from_stdout >= 0) ::close(from_stdout);
    from_stdout = -1;
    int ws = 0;
    while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    return WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : WEXITSTATUS(ws);
  }

  void kill_and_wait() {
    if (pid > 0) ::kill(pid, SIGKILL);
    wait();
  }
};

// --- redis-server -----------------------------------------------------------------

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
    die(std::string("bind 127.0.0.1:0: ") + std::strerror(errno));
  ::close(fd);
  return ntohs(sa.sin_port);
}

// True if 127.0.0.1:port answers PING with +PONG.
bool redis_answers(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
      ::send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6) {
    char buf[16] = {};
    ssize_t n = ::recv(fd, buf, 7, MSG_WAITALL);
    ok = n == 7 && std::memcmp(buf, "+PONG\r\n", 7) == 0;
  }
  ::close(fd);
  return ok;
}

// A redis-server of this program's own, on a free loopback port; stopped
// (SIGTERM, then waited for) when destroyed.
class redis_server {
 public:
  redis_server() {
    for (int attempt = 0; attempt < 10; ++attempt) {
      port_ = free_port();
      server_ = child::start({"/usr/bin/env", "redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
                              "--dir", "/tmp", "--logfile", ""},
                             false, true);
      for (auto limit = bench::clock::now() + 10s; bench::clock::now() < limit;) {
        if (redis_answers(port_)) return;
        int ws;
        if (::waitpid(server_.pid, &ws, WNOHANG) == server_.pid) {  // it exited: the port was taken?
          server_.pid = -1;
          server_.close_stdin();
          break;
        }
        std::this_thread::sleep_for(5ms);  // short retry of a poll
      }
      if (server_.pid > 0) server_.kill_and_wait();
    }
    die("redis-server (from PATH) did not start and answer PING on a free loopback port");
  }
  ~redis_server() {
    if (server_.pid <= 0) return;
    ::kill(server_.pid, SIGTERM);
    server_.wait();
  }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::uint16_t port_ = 0;
  child server_;
};

// --- the spinner ----------------------------------------------------------------------

int run_spinner() {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (::sched_getaffinity(0, sizeof mask, &mask) != 0) die(std::string("sched_getaffinity: ") + std::strerror(errno));
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &mask)) continue;
    threads.emplace_back([&, cpu] {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      ::pthread_setaffinity_np(::pthread_self(), sizeof one, &one);
      ::pthread_setname_np(::pthread_self(), "w10-spinner");  // as ps and perf show it
      sched_param p{};
      if (::sched_setscheduler(0, SCHED_IDLE, &p) != 0)  // 0: this thread
        std::fprintf(stderr, "ember_bench_w10 --spin: SCHED_IDLE: %s\n", std::strerror(errno));
      started.fetch_add(1);
      // sched_yield: a runnable thread that gave up its CPU with
      // sched_yield (BEAM's schedulers do, while they busy-wait) gets it
      // back at once, not at the next tick.
      while (!stop.load(std::memory_order_relaxed)) ::sched_yield();
    });
  }
  while (started.load() < int(threads.size())) std::this_thread::sleep_for(1ms);  // short retry of a poll
  BENCH_PRINT("spinning %zu\n", threads.size());
  char buf[64];
  while (::read(0, buf, sizeof buf) > 0) {
  }
  stop = true;
  for (auto& t : threads) t.join();
  return 0;
}

// The nodes' runtime options: bench::runtime_options() (one scheduler per
// core), or W10_SCHEDULERS=<n> schedulers per node (for experiments).
ember::runtime_options node_runtime_options() {
  ember::runtime_options o = bench::runtime_options();
  if (const char* v = std::getenv("W10_SCHEDULERS"); v && std::atoi(v) > 0) o.schedulers = unsigned(std::atoi(v));
  return o;
}

// --- node B -----------------------------------------------------------------------------

ember::node_options options(const char* redis, const char* cluster, const char* name) {
  ember::node_options o;
  o.name = name;
  o.cluster = cluster;
  o.redis = {redis};
  o.heartbeat = 100ms;
  o.down_after = 1000ms;
  if (const char* t = std::getenv("W10_TRANSPORT"); t && std::string(t) == "redis_stream")
    o.transport = ember::node_transport::redis_stream;
  return o;
}

void echo() {
  const std::uint64_t me = ember::cluster_pid(ember::self()).bits();
  std::uint64_t count = 0, pings = 0;
  bool in_order = true;
  for (;;) {
    ember::receive(
        [&](const ember::wire<Ping>& m) {
          auto in = m.get();
          ember::send(ember::pid::from_bits(in.getFrom()), ember::wire<Ping>::build([&](Ping::Builder b) {
                        b.setSeq(in.getSeq());
                        b.setFrom(me);
                      }));
          ++pings;
        },
        [&](const ember::wire<Msg>& m) {
          in_order = in_order && m.get().getSeq() == count;
          ++count;
        },
        [&](const ember::wire<Done>& m) {
          auto in = m.get();
          ember::send(ember::pid::from_bits(in.getFrom()), ember::wire<Ack>::build([&](Ack::Builder b) {
                        b.setCount(count);
                        b.setInOrder(in_order);
                        b.setPings(pings);
                      }));
          count = 0;
          in_order = true;
        });
  }
}

int run_node_b(const char* redis, const char* cluster) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ember::runtime rt(node_runtime_options());
  int status = 0;
  {
    ember::node me(rt, options(redis, cluster, "b"));
    ember::pid e = rt.spawn(echo);
    BENCH_PRINT("ready %llu\n", static_cast<unsigned long long>(me.cluster_pid(e).bits()));
    char buf[64];
    while (::read(0, buf, sizeof buf) > 0) {
    }
    if (me.stats().dropped_malformed + me.stats().dropped_unknown_type + me.stats().dropped_unreachable) {
      std::fprintf(stderr, "ember_bench_w10: error: node b dropped messages\n");
      status = 1;
    }
    me.leave();
  }
  rt.shutdown();
  return status;
}

// --- node A: the workload ------------------------------------------------------------

bench::latency_hist hist;  // A's round trips (global: 59 KB)

struct measured {
  std::string error;
  double roundtrip_ns_sum = 0;
  double oneway_ns = 0;
  std::uint64_t bad_replies = 0;
  std::uint64_t acked = 0, pings = 0;
  bool in_order = false;
};

void drive(measured& out, ember::pid b, std::int64_t m, std::int64_t warm) {
  const std::uint64_t me = ember::cluster_pid(ember::self()).bits();
  auto round_trip = [&](std::uint64_t seq) {
    ember::send(b, ember::wire<Ping>::build([&](Ping::Builder p) {
                  p.setSeq(seq);
                  p.setFrom(me);
                }));
    ember::receive([&](const ember::wire<Ping>& r) { out.bad_replies += r.get().getSeq() != seq; });
  };
  for (std::int64_t i = 0; i < warm; ++i) round_trip(std::uint64_t(i));
  for (std::int64_t i = 0; i < m; ++i) {
    auto t0 = bench::clock::now();
    round_trip(std::uint64_t(warm + i));
    auto t1 = bench::clock::now();
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
    hist.record(std::uint64_t(ns));
    out.roundtrip_ns_sum += double(ns);
  }
  auto t0 = bench::clock::now();
  for (std::int64_t i = 0; i < m; ++i)
    ember::send(b, ember::wire<Msg>::build([&](Msg::Builder p) { p.setSeq(std::uint64_t(i)); }));
  ember::send(b, ember::wire<Done>::build([&](Done::Builder p) {
                p.setCount(std::uint64_t(m));
                p.setFrom(me);
              }));
  ember::receive([&](const ember::wire<Ack>& a) {
    out.acked = a.get().getCount();
    out.in_order = a.get().getInOrder();
    out.pings = a.get().getPings();
  });
  out.oneway_ns = bench::ns_between(t0, bench::clock::now());
}

int run_node_a(const char* redis, const char* cluster, std::int64_t m, const std::string& condition) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const std::string tag = "W10 condition=" + condition;
  bench::watchdog dog(tag);
  const std::int64_t warm = std::min<std::int64_t>(m, 1000);
  ember::runtime rt(node_runtime_options());
  int status = 0;
  {
    ember::node me(rt, options(redis, cluster, "a"));
    child b = child::start({self_exe(), "--role", "b", redis, cluster}, true);
    std::string line = b.line();
    unsigned long long bits = 0;
    if (std::sscanf(line.c_str(), "ready %llu", &bits) != 1)
      die("node b did not start (it said '" + line + "', exit status " + std::to_string(b.wait()) + ")");
    const ember::pid echo_pid = ember::pid::from_bits(bits);
    for (auto limit = bench::clock::now() + 10s; me.find("b") != echo_pid.node();) {
      if (bench::clock::now() > limit) die("node a did not see node b in the cluster within 10 s");
      std::this_thread::sleep_for(1ms);  // short retry of a poll
    }
    measured r = bench::run_driver<measured>(rt, [&](measured& out) { drive(out, echo_pid, m, warm); });
    ember::node_stats st = me.stats();
    std::uint64_t dropped = st.dropped_malformed + st.dropped_unknown_type + st.dropped_unreachable;
    if (!r.error.empty()) {
      std::fprintf(stderr, "ember_bench_w10: error: the driver failed: %s\n", r.error.c_str());
      status = 1;
    } else if (r.bad_replies || r.acked != std::uint64_t(m) || !r.in_order || r.pings != std::uint64_t(warm + m) ||
               dropped || hist.total() != std::uint64_t(m)) {
      std::fprintf(stderr,
                   "ember_bench_w10: error: verification failed (%s): %llu replies with the wrong seq; B got %llu "
                   "one-way messages (expected %lld), %s, answered %llu pings (expected %lld); node a dropped "
                   "%llu messages; %llu round trips timed\n",
                   condition.c_str(), (unsigned long long)r.bad_replies, (unsigned long long)r.acked, (long long)m,
                   r.in_order ? "in order" : "out of order", (unsigned long long)r.pings, (long long)(warm + m),
                   (unsigned long long)dropped, (unsigned long long)hist.total());
      status = 1;
    } else {
      BENCH_PRINT("RESULT W10 condition=%s remote_roundtrip_us=%.2f remote_msgs_per_s=%.0f roundtrip_p50_us=%.2f "
                  "roundtrip_p99_us=%.2f roundtrip_max_us=%.1f\n",
                  condition.c_str(), r.roundtrip_ns_sum / double(m) / 1000, double(m) / (r.oneway_ns / 1e9),
                  hist.quantile_ns(0.5) / 1000, hist.quantile_ns(0.99) / 1000, double(hist.max_ns()) / 1000);
    }
    dog.disarm();
    me.leave();
    if (int s = b.wait(); s != 0) {
      std::fprintf(stderr, "ember_bench_w10: error: node b exited with status %d\n", s);
      status = 1;
    }
  }
  rt.shutdown();
  return status;
}

// --- the orchestrator -------------------------------------------------------------------

int run_conditions(std::int64_t m, const std::vector<std::string>& conditions) {
  bench::watchdog dog("W10", std::chrono::seconds(100), std::chrono::seconds(20));
  redis_server redis;
  const std::string exe = self_exe();
  int status = 0;
  for (const auto& condition : conditions) {
    child spinner;
    if (condition == "awake") {
      spinner = child::start({exe, "--spin"}, true);
      std::string said = spinner.line();
      if (said.rfind("spinning ", 0) != 0) die("the spinner did not start (it said '" + said + "')");
      std::fprintf(stderr, "# W10 awake: %s SCHED_IDLE threads\n", said.c_str() + 9);
    }
    std::string cluster = "w10_" + condition + "_" + std::to_string(::getpid());
    child a = child::start({exe, "--role", "a", redis.address(), cluster, std::to_string(m), condition}, false);
    if (int s = a.wait(); s != 0) {
      std::fprintf(stderr, "ember_bench_w10: error: condition %s: node a exited with status %d\n", condition.c_str(), s);
      status = 1;
    }
    if (spinner.pid > 0) spinner.wait();
  }
  dog.disarm();
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  std::string first = argc > 1 ? argv[1] : "";
  if (first == "--spin") return run_spinner();
  if (first == "--role" && argc >= 5 && std::string(argv[2]) == "b") return run_node_b(argv[3], argv[4]);
  if (first == "--role" && argc >= 7 && std::string(argv[2]) == "a")
    return run_node_a(argv[3], argv[4], bench::arg_int(argc, argv, 5, 100000), argv[6]);
  if (first.rfind("--", 0) == 0) {
    std::fprintf(stderr, "usage: %s [M=100000] [idle|awake|both]\n", argv[0]);
    return 64;
  }
  const std::int64_t m = bench::arg_int(argc, argv, 1, 100000);
  std::string which = argc > 2 ? argv[2] : "both";
  std::vector<std::string> conditions;
  if (which == "both") conditions = {"idle", "awake"};
  else if (which == "idle" || which == "awake") conditions = {which};
  else {
    std::fprintf(stderr, "%s: the condition must be idle, awake or both, got '%s'\n", argv[0], which.c_str());
    return 64;
  }
  return run_conditions(m, conditions);
}
