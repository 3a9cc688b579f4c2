// Nodes: how a runtime becomes one node of a cluster.
//
// Membership lives in Redis; data goes over direct TCP connections.
//
// Membership. Every key of a cluster's membership shares one hash tag,
// {ember:<cluster>}, so a Redis Cluster keeps them on one shard and a
// pipeline may touch them all:
//   ids            INCR counter; a joining node takes (n-1) % 4095 + 1,
//                  the first such id whose alive key it can create.
//   alive:<id>     the node's name, PX down_after: its heartbeat. A node
//                  refreshes it every `heartbeat`; when it is gone, every
//                  other node declares that node down.
//   name:<name>    the id, PX down_after: names are unique among live
//                  nodes. A restarted node waits for its old name to expire.
//   nodes          hash id -> "name address": who is in the cluster and
//                  where its data listener is.
// Each node's membership process refreshes its keys and reads the others'
// every heartbeat: a node that joins is seen within one, a node that dies
// within down_after plus one. Ids are not reused until the counter wraps,
// so a pid of a dead node never reaches a process of a later one.
//
// Why not Redis Streams for the data path. A Redis hop costs tens of
// microseconds each way, and every message would cross it twice (XADD,
// XREADGROUP) plus an XACK. A direct connection between two live nodes is
// one write and one read, batched under load: that is what W10 (round
// trip, one-way throughput) measures. Redis carries what needs it:
// discovery, heartbeats, global names, durable mailboxes.
//
// Data path. Each node listens (options.listen) and publishes the address.
// A node sends to a peer over its own outbound connection (one writer
// process per peer) and receives over the peer's (one reader process per
// inbound connection), so each direction has one ordered byte stream:
// messages between one pair of processes stay in order. A sender never
// writes to a socket: route() (called by the core's deliver() for a pid of
// another node, on whatever thread sends) appends a frame to the peer's
// buffer under its mutex and wakes the writer only when the buffer was
// idle; the writer swaps the whole buffer out and writes it in one go, so
// under load one write carries many messages.
//
// Frames (little-endian):
//   u32 length of the rest | u8 signal | u8 flavor | u8 linked |
//   u8 reason kind | u32 0 | u64 to | u64 from (or caller) |
//   u64 ref (or alias) | body
// A user message's body is its schema id (u64) and its Cap'n Proto bytes;
// an exit or down signal's body is its reason's text and exception type
// (u32 length, bytes each). Local pids and refs carry node 0; on the wire
// they carry the node's id (refs in their top 12 bits), so a monitor
// reference is unique across the cluster.
//
// Node down. A peer is declared down when its alive key is gone, or when a
// connection to or from it breaks (as Erlang's nodedown: messages in
// flight may be lost, so links and monitors must not pretend otherwise).
// route() records every link and monitor that crosses to a peer (and the
// reader every one that comes from it); on down each fires: exit signals
// and downs with reason noconnection, node_down messages to node monitors.
// If the peer is still alive in Redis it is brought up again later, with a
// new connection.
#include "ember/dist/node.hpp"
#include "dist/cluster.hpp"
#include "dist/ember_dist.capnp.h"
#include "ember/dist/remote_spawn.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <utility>

#include "core/node.hpp"
#include "core/process.hpp"
#include "ember/core/heap.hpp"
#include "ember/core/receive.hpp"
#include "ember/core/spawn.hpp"
#include "ember/dist/redis.hpp"
#include "ember/dist/wire.hpp"
#include "ember/otp/gen_server.hpp"
#include "ember/io/net.hpp"
#include "ember/sched/timer.hpp"
#include "sched/scheduler.hpp"

static_assert(std::endian::native == std::endian::little, "ember's wire format is written little-endian");

namespace ember {

namespace core = ember::detail;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t max_node_id = (1u << pid::node_bits) - 1;
constexpr unsigned ref_node_shift = 64 - pid::node_bits;
constexpr std::uint64_t ref_local_mask = (std::uint64_t(1) << ref_node_shift) - 1;
constexpr std::uint32_t handshake_magic = 0x524d4245;  // "EBMR"
constexpr std::uint16_t protocol_version = 1;
constexpr std::uint32_t max_frame = 64u << 20;

struct flush_token {};    // wakes a peer's writer

// The exception being handled, as a copy in the global heap: one thrown in
// a process keeps its text in that process's heap, which goes when the
// process ends, and the thread that waits for a join reads it later.
std::exception_ptr portable_exception() {
  global_heap_scope g;
  try {
    throw;
  } catch (const exit_error& e) {
    return std::make_exception_ptr(exit_error(e.code(), e.what(), e.reason()));
  } catch (const error& e) {
    return std::make_exception_ptr(error(e.code(), e.what()));
  } catch (const std::exception& e) {
    return std::make_exception_ptr(std::runtime_error(e.what()));
  } catch (...) {
    return std::make_exception_ptr(std::runtime_error("an unknown exception"));
  }
}
struct leave_request {};  // asks the membership process to leave
struct lookup_request {    // asks it whether a node never seen is alive
  std::uint32_t id;
};

// ------------------------------------------------------------ byte helpers

template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_text(std::string& out, std::string_view s) {
  put(out, std::uint32_t(s.size()));
  out.append(s);
}
// A whole decimal number, or nullopt. (from_chars: std::stoul would touch
// errno, which the processes of a thread share.)
template <class T = std::uint64_t>
std::optional<T> number(std::string_view text) {
  T v{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return v;
}

template <class T>
T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

exit_reason reason_from(std::uint8_t kind, std::string text, std::string type) {
  using k = exit_reason::kind;
  switch (k(kind)) {
    case k::normal: return exit_reason::normal();
    case k::shutdown: return exit_reason::shutdown();
    case k::kill: return exit_reason::kill();
    case k::killed: return exit_reason::killed();
    case k::noproc: return exit_reason::noproc();
    case k::noconnection: return exit_reason::noconnection();
    case k::timeout: return exit_reason::timeout();
    case k::exception: return exit_reason::exception(std::move(type), std::move(text));
    case k::system_limit: return exit_reason::system_limit(std::move(text));
    case k::heap_limit: return exit_reason::heap_limit(std::move(text));
    case k::stack_overflow: return exit_reason::stack_overflow(std::move(text));
    case k::fault: return exit_reason::fault(std::move(text));
    case k::user: return exit_reason(std::move(text));
  }
  return exit_reason(std::move(text));
}

bool crosses_nodes(unsigned char signal) {
  switch (signal) {
    case core::sig_none:
    case core::sig_link:
    case core::sig_unlink:
    case core::sig_exit:
    case core::sig_monitor:
    case core::sig_demonitor:
    case core::sig_down:
      return true;
    default:
      return false;
  }
}

// A peer: another node as this one knows it. Made once per id and kept
// for the node's life (route() reads them without a lock).
struct peer {
  explicit peer(std::uint32_t i) : id(i) {}
  const std::uint32_t id;
  std::mutex mu;
  // Under mu:
  std::string name, address;
  bool up = false;             // a writer exists (connecting or connected)
  std::uint64_t epoch = 0;     // +1 at each up
  pid writer;
  std::string out;             // frames for the writer
  bool writer_wanted = false;  // a flush token is on its way, or the writer is busy
  bool via_stream = false;     // to its Redis Stream, not over TCP
  std::uint64_t spawner = 0;   // its spawner's pid (cluster form), from its membership entry
  std::set<std::pair<std::uint64_t, std::uint64_t>> links;             // (local, remote) pid bits
  std::unordered_map<std::uint64_t, std::pair<pid, pid>> monitors_out;  // wire ref -> (local watcher, remote target)
  std::unordered_map<std::uint64_t, std::pair<pid, pid>> monitors_in;   // wire ref -> (remote watcher, local target)
  std::vector<pid> node_watchers;                                       // monitor_node
  std::chrono::steady_clock::time_point down_at{};
  bool announced_drop = false;
  std::atomic<std::size_t> queued{0};  // out.size(), for check_sendable without the lock
  // A node never seen yet (a pid of it came before the membership did):
  // what is sent to it waits, in order, until Redis says whether it lives.
  bool known = false;
  bool lookup_sent = false;
  std::vector<std::pair<pid, core::envelope*>> waiting;
};

// The global names server's requests (local calls).
struct register_request {
  std::string name;
  pid who;
};
struct unregister_request {
  std::string name;
};
struct whereis_request {
  std::string name;
};

// Lua, so that each change is atomic in Redis. Every key shares the
// cluster's hash tag: one slot, as scripts in a Redis Cluster require.
// A name's value is "<node id> <pid bits>", so a node's names can be told
// apart when it dies.
constexpr const char* register_script =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX') then redis.call('SADD', KEYS[2], ARGV[2]) return 1 end "
    "return 0";
constexpr const char* release_script =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end "
    "redis.call('SREM', KEYS[2], ARGV[2]) return 1";
constexpr const char* clean_node_script =
    "local names = redis.call('SMEMBERS', KEYS[1]) "
    "for _, n in ipairs(names) do "
    "  local k = ARGV[1] .. n "
    "  local v = redis.call('GET', k) "
    "  if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then redis.call('DEL', k) end "
    "end "
    "redis.call('DEL', KEYS[1]) return #names";

}  // namespace

struct node::state final : core::remote_router {
  state(runtime& r, core::node& nd, node_options o) : rt(r), n(nd), opts(std::move(o)) {}

  runtime& rt;
  core::node& n;
  node_options opts;
  std::atomic<std::uint32_t> my_id{0};
  std::atomic<bool> active{false};
  std::string advertised;
  std::array<std::atomic<peer*>, max_node_id + 1> peers{};
  std::mutex peers_mu;  // creation of peers
  std::vector<std::unique_ptr<peer>> owned_peers;

  // The node's processes, counted so that leave() can wait for them.
  std::mutex life_mu;
  std::condition_variable life_cv;
  int processes = 0;         // started and not yet ended
  std::set<pid> running;     // those that have begun
  bool membership_done = false;
  std::vector<pid> extra;    // processes not started by start() (the names server)
  pid membership, listener;

  void processes_extra(pid p) {
    global_heap_scope g;
    std::lock_guard lock(life_mu);
    extra.push_back(p);
  }

  std::atomic<std::uint64_t> frames_sent{0}, frames_received{0}, bytes_sent{0}, bytes_received{0};
  std::atomic<std::uint64_t> dropped_malformed{0}, dropped_unknown_type{0}, dropped_unreachable{0}, nodes_down{0};
  std::atomic<std::uint64_t> logged{0};

  // Global names: a name_registry whose calls go to the node's names
  // server, the one process that talks to Redis about names.
  struct global_registry final : name_registry {
    state* st;
    explicit global_registry(state* s) : st(s) {}
    pid server() const {
      pid p = pid::from_bits(st->names_server.load(std::memory_order_acquire));
      if (!p || !st->active.load(std::memory_order_acquire))
        throw error(errc::unavailable, "global names: this node is not in a cluster (it left, or never joined)");
      return p;
    }
    bool register_name(const std::string& name, pid p) override {
      if (name.empty()) throw error(errc::invalid_argument, "register_global: an empty name");
      return gen_server::call<bool>(server(), register_request{name, p}, st->opts.down_after * 2);
    }
    void unregister_name(const std::string& name) override {
      gen_server::call<bool>(server(), unregister_request{name}, st->opts.down_after * 2);
    }
    pid whereis_name(const std::string& name) override {
      return gen_server::call<pid>(server(), whereis_request{name}, st->opts.down_after * 2);
    }
  } names{this};
  std::atomic<std::uint64_t> names_server{0};

  std::string name_value(pid p) const {
    return std::to_string(my_id.load()) + " " + std::to_string(to_wire(p).bits());
  }
  // Removes the names a node held (it is down, or this node leaves).
  void clean_names_of(redis::client& rc, std::uint32_t id) {
    std::string ids = std::to_string(id);
    rc.command({"EVAL", clean_node_script, "1", key("gnames:" + ids), key("gname:"), ids + " "}, 3);
  }

  // ---------------------------------------------------------- naming

  std::string key(std::string_view rest) const { return "{ember:" + opts.cluster + "}:" + std::string(rest); }

  pid to_wire(pid p) const noexcept {
    return p.node() == 0 && p ? pid(my_id.load(std::memory_order_relaxed), p.slot(), p.generation()) : p;
  }
  pid from_wire(pid p) const noexcept {
    return p.node() == my_id.load(std::memory_order_relaxed) ? pid(0, p.slot(), p.generation()) : p;
  }
  std::uint64_t ref_to_wire(std::uint64_t r) const noexcept {
    return r && (r >> ref_node_shift) == 0 ? r | std::uint64_t(my_id.load(std::memory_order_relaxed)) << ref_node_shift
                                           : r;
  }
  std::uint64_t ref_from_wire(std::uint64_t r) const noexcept {
    return (r >> ref_node_shift) == my_id.load(std::memory_order_relaxed) ? r & ref_local_mask : r;
  }

  void log(const std::string& what) {
    // The first 100 lines, then one in 1000: a flood of bad input must not
    // become a flood of output.
    std::uint64_t k = logged.fetch_add(1, std::memory_order_relaxed);
    if (k < 100 || k % 1000 == 0)
      std::fprintf(stderr, "ember: node %s: %s\n", opts.name.c_str(), what.c_str());
  }

  peer& peer_of(std::uint32_t id) {
    if (peer* p = peers[id].load(std::memory_order_acquire)) return *p;
    global_heap_scope g;
    std::lock_guard lock(peers_mu);
    if (peer* p = peers[id].load(std::memory_order_relaxed)) return *p;
    owned_peers.push_back(std::make_unique<peer>(id));
    peers[id].store(owned_peers.back().get(), std::memory_order_release);
    return *owned_peers.back();
  }

  // ---------------------------------------------------------- processes

  // Counts a process of the node from its spawn to the destruction of its
  // body: a process killed before it first ran never runs its body, but
  // its body is destroyed all the same.
  struct life_token {
    state* s = nullptr;
    pid me{};
    explicit life_token(state* st) noexcept : s(st) {}
    life_token(life_token&& o) noexcept : s(std::exchange(o.s, nullptr)), me(o.me) {}
    life_token& operator=(life_token&&) = delete;
    ~life_token() {
      if (!s) return;
      global_heap_scope g;
      std::lock_guard lock(s->life_mu);
      if (me) s->running.erase(me);
      --s->processes;
      s->life_cv.notify_all();
    }
  };

  template <class F>
  pid start(F fn) {
    {
      std::lock_guard lock(life_mu);
      ++processes;
    }
    global_heap_scope g;
    auto body = [this, token = life_token(this), fn = std::move(fn)]() mutable {
      {
        global_heap_scope g;
        std::lock_guard lock(life_mu);
        token.me = self();
        running.insert(token.me);
      }
      fn();
    };
    // Never preempted: a process killed while preempted ends without
    // unwinding, and these hold memory outside their heaps (a writer's
    // batch, hiredis's buffers) that only their destructors free (ASan
    // found a killed stream writer's 8 MB batch leaked). Killed, they
    // unwind at their next runtime call.
    spawn_options o;
    o.preemptible = false;
    return core::spawn_body(&n, core::make_body(std::move(body)), o, core::spawn_link_mode::none).id;
  }

  // ---------------------------------------------------------- route (any thread)

  void check_sendable(pid to, const core::envelope& e) const override {
    if (e.signal != core::sig_none) return;
    if (!dist::detail::codec_by_key(e.key))
      throw error(errc::not_serializable, "send to " + to.to_string() + ": a " + core::demangle(*e.type) +
                                              " cannot cross nodes; remote messages are Cap'n Proto structs "
                                              "(ember::wire<S>, include/ember/dist/wire.hpp)");
    const peer* pr = peers[to.node()].load(std::memory_order_acquire);
    if (pr && pr->queued.load(std::memory_order_relaxed) > opts.max_queued_bytes)
      throw error(errc::unavailable, "send to " + to.to_string() + ": more than " +
                                         std::to_string(opts.max_queued_bytes) + " bytes wait for node " +
                                         std::to_string(to.node()) + " (its connection or Redis is not up)");
  }

  // Answers what could not be carried, as the core answers a dead local
  // process: a link with an exit signal, a monitor or a call with a down.
  void unreachable(pid to, core::envelope* e, const exit_reason& why) noexcept {
    if (e->signal == core::sig_link) {
      auto* s = static_cast<core::signal_envelope*>(e);
      core::deliver(n, s->s.from, core::make_signal(core::sig_exit, {to, {}, why, true, 0}));
    } else if (e->signal == core::sig_monitor) {
      auto* s = static_cast<core::signal_envelope*>(e);
      core::deliver(n, s->s.from, core::make_signal(core::sig_down, {to, s->s.ref, why, false, 0}));
    } else if (e->signal == core::sig_none && e->flavor == core::flavor_call) {
      core::deliver(n, e->caller, core::make_signal(core::sig_down, {to, monitor_ref{e->alias}, why, false, 0}));
    } else if (e->signal == core::sig_none) {
      dropped_unreachable.fetch_add(1, std::memory_order_relaxed);
    }
    e->destroy(e);
  }

  // The frame of an envelope, appended to out; false if it cannot cross.
  bool encode(std::string& out, pid to, const core::envelope& e) {
    std::size_t start = out.size();
    put(out, std::uint32_t(0));
    put(out, std::uint8_t(e.signal));
    put(out, std::uint8_t(e.flavor));
    std::uint8_t linked = 0, reason_kind = 0;
    const exit_reason* reason = nullptr;
    pid from;
    std::uint64_t ref = 0;
    if (e.signal == core::sig_none) {
      from = e.caller;
      ref = e.alias;
    } else {
      auto& s = static_cast<const core::signal_envelope&>(e).s;
      from = s.from;
      ref = s.ref.id;
      linked = s.linked;
      if (e.signal == core::sig_exit || e.signal == core::sig_down) {
        reason = &s.reason;
        reason_kind = std::uint8_t(s.reason.what_kind());
      }
    }
    put(out, linked);
    put(out, reason_kind);
    put(out, std::uint32_t(0));
    put(out, to.bits());
    put(out, to_wire(from).bits());
    put(out, ref_to_wire(ref));
    if (e.signal == core::sig_none) {
      const auto* codec = dist::detail::codec_by_key(e.key);
      if (!codec) {
        out.resize(start);
        return false;
      }
      auto bytes = codec->bytes(&e);
      put(out, codec->schema_id);
      out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    } else if (reason) {
      put_text(out, reason->text());
      put_text(out, reason->exception_type());
    }
    std::uint32_t len = std::uint32_t(out.size() - start - 4);
    std::memcpy(out.data() + start, &len, 4);
    return true;
  }

  // What crosses to a peer that the node must answer if the peer goes down.
  void note_outbound(peer& pr, pid to, const core::envelope& e) {
    if (e.signal == core::sig_none) {
      if (e.flavor == core::flavor_call) pr.monitors_out[ref_to_wire(e.alias)] = {e.caller, to};
      return;
    }
    auto& s = static_cast<const core::signal_envelope&>(e).s;
    switch (e.signal) {
      case core::sig_link: pr.links.insert({s.from.bits(), to.bits()}); break;
      case core::sig_unlink: pr.links.erase({s.from.bits(), to.bits()}); break;
      case core::sig_exit:
        if (s.linked) pr.links.erase({s.from.bits(), to.bits()});
        break;
      case core::sig_monitor: pr.monitors_out[ref_to_wire(s.ref.id)] = {s.from, to}; break;
      case core::sig_demonitor: pr.monitors_out.erase(ref_to_wire(s.ref.id)); break;
      case core::sig_down: pr.monitors_in.erase(ref_to_wire(s.ref.id)); break;
      default: break;
    }
  }

  void note_inbound(peer& pr, pid to, const core::envelope& e) {
    if (e.signal == core::sig_none) {
      if (e.flavor == core::flavor_reply) pr.monitors_out.erase(ref_to_wire(e.alias));
      if (e.flavor == core::flavor_call) pr.monitors_in[ref_to_wire(e.alias)] = {e.caller, to};
      return;
    }
    auto& s = static_cast<const core::signal_envelope&>(e).s;
    switch (e.signal) {
      case core::sig_link: pr.links.insert({to.bits(), s.from.bits()}); break;
      case core::sig_unlink: pr.links.erase({to.bits(), s.from.bits()}); break;
      case core::sig_exit:
        if (s.linked) pr.links.erase({to.bits(), s.from.bits()});
        break;
      case core::sig_monitor: pr.monitors_in[ref_to_wire(s.ref.id)] = {s.from, to}; break;
      case core::sig_demonitor: pr.monitors_in.erase(ref_to_wire(s.ref.id)); break;
      case core::sig_down: pr.monitors_out.erase(ref_to_wire(s.ref.id)); break;
      default: break;
    }
  }

  // Appends e's frame to the peer's buffer (its lock held); false if the
  // envelope was consumed otherwise (dropped, answered). The caller frees
  // e when true, and wakes the writer if `wake` is set.
  bool append_locked(std::unique_lock<std::mutex>& lock, peer& pr, pid to, core::envelope* e, pid& wake) {
    if (pr.writer && pr.out.size() > opts.max_queued_bytes) {
      // The connection (or Redis) is not keeping up, or not up: the bound.
      bool first = !pr.announced_drop;
      pr.announced_drop = true;
      lock.unlock();
      if (first) log("the queue to node " + std::to_string(pr.id) + " passed " + std::to_string(opts.max_queued_bytes) +
                     " bytes; dropping messages to it until it drains");
      unreachable(to, e, exit_reason::noconnection());
      lock.lock();
      return false;
    }
    try {
      if (!encode(pr.out, to, *e)) {
        lock.unlock();
        dropped_unknown_type.fetch_add(1, std::memory_order_relaxed);
        log("a " + core::demangle(*e->type) + " for " + to.to_string() + " is not a wire message: dropped");
        e->destroy(e);
        lock.lock();
        return false;
      }
      note_outbound(pr, to, *e);
      pr.queued.store(pr.out.size(), std::memory_order_relaxed);
    } catch (...) {
      lock.unlock();
      unreachable(to, e, exit_reason::noconnection());  // out of memory
      lock.lock();
      return false;
    }
    // No writer yet (bring_up is between up and setting it): bring_up
    // wakes it once it is set.
    if (!pr.writer_wanted && pr.writer) {
      pr.writer_wanted = true;
      wake = pr.writer;
    }
    frames_sent.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  void route(pid to, core::envelope* e) noexcept override {
    global_heap_scope global;  // the peer's buffer and tables outlive the sender
    std::uint32_t id = to.node();
    if (!active.load(std::memory_order_acquire) || !crosses_nodes(e->signal) || id == 0)
      return unreachable(to, e, exit_reason::noconnection());
    peer* pr;
    try {
      pr = &peer_of(id);
    } catch (...) {
      return unreachable(to, e, exit_reason::noconnection());
    }
    pid wake;
    bool ask = false;
    {
      std::unique_lock lock(pr->mu);
      if (!pr->up) {
        if (pr->known) {
          lock.unlock();
          return unreachable(to, e, exit_reason::noconnection());
        }
        // Never seen: wait for the membership's answer (a new node, or
        // none: then a monitor is answered noproc, as Erlang does).
        try {
          pr->waiting.emplace_back(to, e);
        } catch (...) {
          lock.unlock();
          return unreachable(to, e, exit_reason::noproc());
        }
        ask = !pr->lookup_sent;
        pr->lookup_sent = true;
      } else if (append_locked(lock, *pr, to, e, wake)) {
        lock.unlock();
        e->destroy(e);
      }
    }
    if (wake) core::deliver(n, wake, core::make_envelope(flush_token{}));
    if (ask) {
      if (pid m = membership_pid(); m) core::deliver(n, m, core::make_envelope(lookup_request{id}));
    }
  }

  // The membership process (set once it runs).
  std::atomic<std::uint64_t> membership_bits{0};
  pid membership_pid() const noexcept { return pid::from_bits(membership_bits.load(std::memory_order_acquire)); }

  // A node never seen turned out not to be alive: what waited for it is
  // answered as for a process that does not exist.
  void fail_waiting(peer& pr) {
    std::vector<std::pair<pid, core::envelope*>> waiting;
    {
      global_heap_scope g;
      std::lock_guard lock(pr.mu);
      if (pr.up) return;
      waiting.swap(pr.waiting);
      pr.lookup_sent = false;
    }
    for (auto& [to, e] : waiting) unreachable(to, e, exit_reason::noproc());
  }

  // ---------------------------------------------------------- up and down

  // Brings a peer up: a new epoch and a writer that connects to it.
  void bring_up(peer& pr, const std::string& name, const std::string& address, std::uint64_t spawner = 0) {
    std::uint64_t epoch;
    {
      std::lock_guard lock(pr.mu);
      pr.name = name;
      pr.address = address;
      if (spawner) pr.spawner = spawner;
      if (pr.up || !active.load(std::memory_order_acquire)) return;
      pr.up = true;
      epoch = ++pr.epoch;
      pr.writer_wanted = false;
      pr.announced_drop = false;
      pr.via_stream = opts.transport == node_transport::redis_stream || address == "-" || address.empty();
      pr.known = true;
      pr.lookup_sent = false;
    }
    pid w = start([this, &pr, epoch, address] {
      bool stream;
      {
        std::lock_guard lock(pr.mu);
        stream = pr.via_stream;
      }
      if (stream) {
        run_stream_writer(pr, epoch);
      } else {
        run_writer(pr, epoch, address);
      }
    });
    std::vector<core::envelope*> sent;
    {
      global_heap_scope g;
      std::unique_lock lock(pr.mu);
      if (pr.epoch != epoch) return;
      pr.writer = w;
      // What waited for the node goes first, in order, before the lock
      // lets later sends in.
      auto waiting = std::move(pr.waiting);
      pr.waiting.clear();
      pid wake;
      for (auto& [to, e] : waiting)
        if (append_locked(lock, pr, to, e, wake)) sent.push_back(e);
      // Frames appended before the writer was set woke nobody.
      if (!pr.out.empty() && !pr.writer_wanted) {
        pr.writer_wanted = true;
        wake = w;
      }
      if (wake) {
        lock.unlock();
        core::deliver(n, wake, core::make_envelope(flush_token{}));
      }
    }
    for (auto* e : sent) e->destroy(e);
  }

  // Declares a peer down (if `epoch` is still its epoch; 0: whatever it
  // is): every link and monitor across fires with noconnection.
  void declare_down(peer& pr, std::uint64_t epoch, const std::string& why) {
    std::set<std::pair<std::uint64_t, std::uint64_t>> links;
    std::unordered_map<std::uint64_t, std::pair<pid, pid>> out, in;
    std::vector<pid> watchers;
    pid writer;
    std::string name;
    {
      global_heap_scope g;
      std::lock_guard lock(pr.mu);
      if (!pr.up || (epoch && pr.epoch != epoch)) return;
      pr.up = false;
      pr.down_at = std::chrono::steady_clock::now();
      links.swap(pr.links);
      out.swap(pr.monitors_out);
      in.swap(pr.monitors_in);
      watchers.swap(pr.node_watchers);
      std::string().swap(pr.out);
      pr.queued.store(0, std::memory_order_relaxed);
      writer = pr.writer;
      pr.writer = pid();
      name = pr.name;
    }
    nodes_down.fetch_add(1, std::memory_order_relaxed);
    if (active.load(std::memory_order_relaxed)) log("node " + std::to_string(pr.id) + " (" + name + ") is down: " + why);
    exit_reason nc = exit_reason::noconnection();
    for (auto& [local, remote] : links)
      core::deliver(n, pid::from_bits(local), core::make_signal(core::sig_exit, {pid::from_bits(remote), {}, nc, true, 0}));
    for (auto& [ref, w] : out)
      core::deliver(n, w.first, core::make_signal(core::sig_down, {w.second, monitor_ref{ref_from_wire(ref)}, nc, false, 0}));
    for (auto& [ref, w] : in)  // the remote watchers are gone: forget them
      core::deliver(n, w.second, core::make_signal(core::sig_demonitor, {w.first, monitor_ref{ref_from_wire(ref)}, {}, false, 0}));
    for (pid w : watchers) core::deliver(n, w, core::make_envelope(node_down{pr.id, name}));
    if (writer) core::deliver(n, writer, core::make_signal(core::sig_exit, {pid(), {}, exit_reason::kill(), false, 0}));
  }

  // A writer's next batch: the peer's buffer, swapped out whole; waits for
  // a flush token while it is empty. false: the writer's epoch is over.
  bool next_batch(peer& pr, std::uint64_t epoch, std::string& batch) {
    for (;;) {
      {
        global_heap_scope g;
        std::lock_guard lock(pr.mu);
        if (!pr.up || pr.epoch != epoch) return false;
        if (!pr.out.empty()) {
          batch.swap(pr.out);
          pr.queued.store(0, std::memory_order_relaxed);
          return true;
        }
        pr.writer_wanted = false;
        pr.announced_drop = false;
      }
      ember::receive([](const flush_token&) {});
    }
  }

  // ---------------------------------------------------------- writer

  void run_writer(peer& pr, std::uint64_t epoch, std::string address) {
    auto current = [&] {
      std::lock_guard lock(pr.mu);
      return pr.up && pr.epoch == epoch && active.load(std::memory_order_relaxed);
    };
    net::stream s;
    auto backoff = 10ms;
    for (;;) {
      if (!current()) return;
      try {
        s = net::stream::connect(net::address::parse(address), opts.down_after);
        break;
      } catch (const error& e) {
        // Not up yet, or gone: the membership process declares it down
        // when its heartbeat stops.
        ember::sleep_for(backoff);
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, 1000ms);
      }
    }
    s.set_nodelay(true);
    std::string batch;
    {
      global_heap_scope g;
      put(batch, handshake_magic);
      put(batch, protocol_version);
      put(batch, std::uint16_t(opts.cluster.size()));
      batch += opts.cluster;
      put(batch, my_id.load());
      put(batch, std::uint16_t(opts.name.size()));
      batch += opts.name;
      put(batch, std::uint16_t(advertised.size()));
      batch += advertised;
    }
    for (;;) {
      if (batch.empty() && !next_batch(pr, epoch, batch)) return;
      try {
        s.write(batch, opts.down_after);
      } catch (const error& e) {
        declare_down(pr, epoch, std::string("the connection to it failed: ") + e.what());
        return;
      }
      bytes_sent.fetch_add(batch.size(), std::memory_order_relaxed);
      global_heap_scope g;
      batch.clear();
    }
  }

  // ---------------------------------------------------------- Redis Streams

  std::string stream_key(std::uint32_t id) const { return "{ember:" + opts.cluster + ":n" + std::to_string(id) + "}"; }

  redis::client_options redis_options() const {
    redis::client_options ro;
    ro.seeds = opts.redis;
    ro.command_timeout = std::max<std::chrono::milliseconds>(opts.down_after, 1000ms);
    return ro;
  }

  // The writer of a peer reached through its stream: each batch of frames
  // becomes entries of at most 256 KiB (n: this node's id, f: whole
  // frames), XADDed in one pipeline. While Redis is unreachable the batch
  // is retried with backoff and new frames wait in the peer's buffer, up
  // to max_queued_bytes. A batch whose reply was lost with its connection
  // is sent again, with the same numbers: the reader drops what it has
  // seen, so nothing is lost and nothing is delivered twice.
  void run_stream_writer(peer& pr, std::uint64_t epoch) {
    redis::client rc(redis_options());
    const std::string key = stream_key(pr.id), me = std::to_string(my_id.load());
    constexpr std::size_t entry_limit = 256 * 1024;
    std::string batch;
    std::vector<std::vector<std::string>> cmds;
    std::uint64_t seq = 0;
    bool failing = false;
    for (;;) {
      if (batch.empty() && !next_batch(pr, epoch, batch)) return;
      // The entries of a batch are made once and numbered (e: this
      // writer's epoch, q: its sequence), so that a batch sent again after
      // a lost reply is recognised by the reader and not delivered twice.
      if (cmds.empty()) {
        for (std::size_t at = 0; at < batch.size();) {
          std::size_t end = at;
          while (end < batch.size()) {
            std::size_t len = 4 + get<std::uint32_t>(batch.data() + end);
            if (end > at && end + len - at > entry_limit) break;
            end += len;
          }
          cmds.push_back({"XADD", key, "*", "n", me, "e", std::to_string(epoch), "q", std::to_string(++seq), "f",
                          batch.substr(at, end - at)});
          at = end;
        }
      }
      try {
        auto replies = rc.pipeline(cmds);
        for (auto& r : replies)
          if (r.is_error()) throw error(errc::redis_error, r.str);
        if (failing) log("the stream of node " + std::to_string(pr.id) + " is reachable again");
        failing = false;
      } catch (const error& e) {
        {
          std::lock_guard lock(pr.mu);
          if (!pr.up || pr.epoch != epoch) return;
        }
        if (!failing) log("writing to the stream of node " + std::to_string(pr.id) + ": " + e.what() + "; retrying");
        failing = true;
        ember::sleep_for(100ms);
        continue;
      }
      bytes_sent.fetch_add(batch.size(), std::memory_order_relaxed);
      global_heap_scope g;
      batch.clear();
      cmds.clear();
    }
  }

  // This node's stream: entries from nodes that send through Redis. Each
  // entry's frames are delivered, then the entries acknowledged and the
  // stream trimmed up to them. A malformed entry (written by anything but
  // a node: redis-cli, a bug) is dropped with a logged error.
  void run_stream_reader() {
    redis::client rc(redis_options());
    const std::string key = stream_key(my_id.load());
    std::optional<redis::connection> blocking;
    bool group = false;
    for (;;) {
      try {
        if (!group) {
          redis::reply r = rc.command({"XGROUP", "CREATE", key, "ember", "0", "MKSTREAM"}, 2);
          if (r.is_error() && r.str.rfind("BUSYGROUP", 0) != 0) throw error(errc::redis_error, r.str);
          group = true;
        }
        if (!blocking || !blocking->connected()) blocking.emplace(rc.dedicated_connection_for_key(key));
        redis::reply r = blocking->command({"XREADGROUP", "GROUP", "ember", "node", "COUNT", "256", "BLOCK", "1000",
                                            "STREAMS", key, ">"},
                                           1000ms + opts.down_after);
        if (r.is_error()) {
          if (r.str.rfind("NOGROUP", 0) == 0) group = false;
          throw error(errc::redis_error, r.str);
        }
        if (r.is_nil() || r.elements.empty() || r.elements[0].elements.size() < 2) continue;
        std::vector<std::string> ack{"XACK", key, "ember"};
        for (const auto& entry : r.elements[0].elements[1].elements) {
          if (entry.elements.empty()) continue;
          ack.push_back(entry.elements[0].str);
          on_stream_entry(entry);
        }
        if (ack.size() > 3)
          rc.pipeline({ack, {"XTRIM", key, "MINID", ack.back()}}, 1);
      } catch (const error& e) {
        blocking.reset();
        if (!active.load(std::memory_order_acquire)) return;  // leaving: the stream is deleted
        log(std::string("reading this node's stream: ") + e.what() + "; retrying");
        ember::sleep_for(100ms);
      }
    }
  }

  // The last entry seen from each sender's writer (its epoch and
  // sequence): an entry at or below it is a batch sent again.
  std::unordered_map<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>> stream_seen;

  void on_stream_entry(const redis::reply& entry) {
    const std::string& id = entry.elements[0].str;
    std::uint32_t from = 0;
    std::optional<std::uint64_t> epoch, seq;
    const std::string* frames = nullptr;
    if (entry.elements.size() >= 2) {
      const auto& fields = entry.elements[1].elements;
      for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
        if (fields[i].str == "n") {
          from = number<std::uint32_t>(fields[i + 1].str).value_or(0);
        } else if (fields[i].str == "f") {
          frames = &fields[i + 1].str;
        } else if (fields[i].str == "e") {
          epoch = number(fields[i + 1].str);
        } else if (fields[i].str == "q") {
          seq = number(fields[i + 1].str);
        }
      }
    }
    if (!frames || from == 0 || from > max_node_id || from == my_id.load()) {
      dropped_malformed.fetch_add(1, std::memory_order_relaxed);
      log("a malformed entry " + id + " in this node's stream (it needs n, a node id, and f, frames): dropped");
      return;
    }
    if (epoch && seq) {
      global_heap_scope g;
      auto& last = stream_seen[from];
      if (*epoch == last.first && *seq <= last.second) return;  // sent again: delivered already
      if (*epoch >= last.first) last = {*epoch, *seq};
    }
    peer& pr = peer_of(from);
    frames_from_bytes(pr, frames->data(), frames->size(), id);
  }

  // Frames one after another (a stream entry's).
  void frames_from_bytes(peer& pr, const char* p, std::size_t size, const std::string& where) {
    std::size_t at = 0;
    while (at < size) {
      std::uint32_t len = size - at >= 4 ? get<std::uint32_t>(p + at) : 0;
      if (len < 32 || len > max_frame || size - at - 4 < len) {
        dropped_malformed.fetch_add(1, std::memory_order_relaxed);
        log("a malformed frame in entry " + where + " from node " + std::to_string(pr.id) + ": the rest of it dropped");
        return;
      }
      on_frame(pr, p + at + 4, len);
      at += 4 + len;
    }
  }

  // ---------------------------------------------------------- reader

  void run_reader(net::stream s) {
    std::uint64_t epoch = 0;
    peer* pr = nullptr;
    try {
      char fixed[8];
      s.read_exact(fixed, 8, opts.down_after);
      if (get<std::uint32_t>(fixed) != handshake_magic || get<std::uint16_t>(fixed + 4) != protocol_version) {
        log("a connection from " + s.peer_address().to_string() + " is not an ember node of this protocol: closed");
        return;
      }
      auto text = [&](std::size_t len) {
        std::string t(len, '\0');
        if (len) s.read_exact(t.data(), len, opts.down_after);
        return t;
      };
      std::string cluster = text(get<std::uint16_t>(fixed + 6));
      char idb[4];
      s.read_exact(idb, 4, opts.down_after);
      std::uint32_t id = get<std::uint32_t>(idb);
      char lb[2];
      s.read_exact(lb, 2, opts.down_after);
      std::string name = text(get<std::uint16_t>(lb));
      s.read_exact(lb, 2, opts.down_after);
      std::string address = text(get<std::uint16_t>(lb));
      if (cluster != opts.cluster || id == 0 || id > max_node_id || id == my_id.load()) {
        log("a connection from " + s.peer_address().to_string() + " names cluster '" + cluster + "' and node " +
            std::to_string(id) + ": closed");
        return;
      }
      pr = &peer_of(id);
      bring_up(*pr, name, address);  // a node that connects is alive
      {
        std::lock_guard lock(pr->mu);
        epoch = pr->epoch;
      }
      read_frames(s, *pr);
      declare_down(*pr, epoch, "it closed its connection");
    } catch (const error& e) {
      if (pr) declare_down(*pr, epoch, std::string("its connection failed: ") + e.what());
    }
  }

  void read_frames(net::stream& s, peer& pr) {
    constexpr std::size_t chunk = 256 * 1024;
    std::size_t cap = chunk;
    auto buf = std::make_unique_for_overwrite<char[]>(cap);
    std::size_t begin = 0, end = 0;
    for (;;) {
      if (cap - end < 4096 || begin == end) {
        if (begin == end) {
          begin = end = 0;
        } else {
          std::memmove(buf.get(), buf.get() + begin, end - begin);
          end -= begin;
          begin = 0;
        }
      }
      std::size_t got = s.read(buf.get() + end, cap - end);
      if (got == 0) return;  // closed
      bytes_received.fetch_add(got, std::memory_order_relaxed);
      end += got;
      while (end - begin >= 4) {
        std::uint32_t len = get<std::uint32_t>(buf.get() + begin);
        if (len < 32 || len > max_frame) {
          dropped_malformed.fetch_add(1, std::memory_order_relaxed);
          throw error(errc::bad_message, "a frame of " + std::to_string(len) + " bytes (outside 32.." +
                                             std::to_string(max_frame) + ")");
        }
        if (end - begin - 4 < len) {
          if (4 + std::size_t(len) > cap) {  // a frame larger than the buffer: grow it
            std::size_t ncap = std::bit_ceil(4 + std::size_t(len));
            auto nbuf = std::make_unique_for_overwrite<char[]>(ncap);
            std::memcpy(nbuf.get(), buf.get() + begin, end - begin);
            end -= begin;
            begin = 0;
            buf = std::move(nbuf);
            cap = ncap;
          }
          break;
        }
        on_frame(pr, buf.get() + begin + 4, len);
        begin += 4 + len;
      }
    }
  }

  void on_frame(peer& pr, const char* f, std::uint32_t len) {
    frames_received.fetch_add(1, std::memory_order_relaxed);
    std::uint8_t signal = std::uint8_t(f[0]), flavor = std::uint8_t(f[1]), linked = std::uint8_t(f[2]),
                 reason_kind = std::uint8_t(f[3]);
    pid to = from_wire(pid::from_bits(get<std::uint64_t>(f + 8)));
    pid from = from_wire(pid::from_bits(get<std::uint64_t>(f + 16)));
    std::uint64_t ref = ref_from_wire(get<std::uint64_t>(f + 24));
    const char* body = f + 32;
    std::size_t body_len = len - 32;
    if (!n.is_local(to) || !crosses_nodes(signal) || flavor > core::flavor_system ||
        reason_kind > std::uint8_t(exit_reason::kind::user)) {
      dropped_malformed.fetch_add(1, std::memory_order_relaxed);
      log("a malformed frame from node " + std::to_string(pr.id) + " (signal " + std::to_string(signal) + ", to " +
          to.to_string() + "): dropped");
      return;
    }
    core::envelope* e = nullptr;
    try {
      global_heap_scope g;
      if (signal == core::sig_none) {
        if (body_len < 8) throw error(errc::bad_message, "no schema id");
        std::uint64_t schema = get<std::uint64_t>(body);
        const auto* codec = dist::detail::codec_by_schema(schema);
        if (!codec) {
          dropped_unknown_type.fetch_add(1, std::memory_order_relaxed);
          char hex[32];
          std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(schema));
          log(std::string("a message of unknown schema id 0x") + hex + " from node " + std::to_string(pr.id) +
              " for " + to.to_string() + ": dropped (is its type registered here? ember::register_wire_types)");
          return;
        }
        e = codec->decode(std::span<const std::byte>(reinterpret_cast<const std::byte*>(body + 8), body_len - 8));
        e->flavor = flavor;
        e->caller = from;
        e->alias = ref;
      } else {
        std::string text, type;
        if (signal == core::sig_exit || signal == core::sig_down) {
          auto take = [&](std::string& t) {
            if (body_len < 4) throw error(errc::bad_message, "a truncated reason");
            std::uint32_t l = get<std::uint32_t>(body);
            if (body_len - 4 < l) throw error(errc::bad_message, "a truncated reason");
            t.assign(body + 4, l);
            body += 4 + l;
            body_len -= 4 + l;
          };
          take(text);
          take(type);
        }
        e = core::make_signal(core::signal_kind(signal),
                              {from, monitor_ref{ref}, reason_from(reason_kind, std::move(text), std::move(type)),
                               linked != 0, 0});
      }
    } catch (const std::exception& x) {
      dropped_malformed.fetch_add(1, std::memory_order_relaxed);
      log("a malformed message from node " + std::to_string(pr.id) + " for " + to.to_string() + ": " + x.what() +
          ": dropped");
      return;
    }
    {
      global_heap_scope g;
      std::lock_guard lock(pr.mu);
      note_inbound(pr, to, *e);
    }
    core::deliver_from_remote(n, to, e);
  }

  // ---------------------------------------------------------- listener

  void run_listener(net::listener l) {
    for (;;) {
      net::stream s = l.accept();
      s.set_nodelay(true);
      start([this, s = std::move(s)]() mutable { run_reader(std::move(s)); });
    }
  }

  // ---------------------------------------------------------- global names

  // The names server: registers names in Redis, monitors their processes
  // and releases a name when its process exits.
  struct names_server_state {
    state* st;
    std::unique_ptr<redis::client> rc;
    std::unordered_map<std::string, std::pair<pid, monitor_ref>> held;  // name -> (pid, monitor)

    explicit names_server_state(state* s) : st(s) {}
    void init() {
      redis::client_options ro;
      ro.seeds = st->opts.redis;
      ro.command_timeout = st->opts.down_after;
      rc = std::make_unique<redis::client>(ro);
    }
    std::string id() const { return std::to_string(st->my_id.load()); }
    void release(const std::string& name, pid who) {
      rc->command({"EVAL", release_script, "2", st->key("gname:" + name), st->key("gnames:" + id()), st->name_value(who), name},
                  3);
    }
    void handle_call(message& m, from f) {
      if (auto* r = m.get_if<register_request>()) {
        pid who = st->n.canonical(r->who);
        if (!st->n.is_local(who))
          throw error(errc::invalid_argument, "register_global: " + r->who.to_string() + " is not a process of this node");
        redis::reply got = rc->command({"EVAL", register_script, "2", st->key("gname:" + r->name),
                                        st->key("gnames:" + id()), st->name_value(who), r->name},
                                       3, false);
        if (got.is_error()) throw error(errc::redis_error, "register_global: " + got.str);
        bool ok = got.integer == 1;
        if (ok) held[r->name] = {who, ember::monitor(who)};
        ember::reply(f, ok);
      } else if (auto* u = m.get_if<unregister_request>()) {
        auto it = held.find(u->name);
        if (it != held.end()) {
          ember::demonitor(it->second.second, true);
          release(u->name, it->second.first);
          held.erase(it);
        }
        ember::reply(f, true);
      } else if (auto* w = m.get_if<whereis_request>()) {
        redis::reply got = rc->command({"GET", st->key("gname:" + w->name)});
        pid p;
        if (got.kind == redis::reply::type::string) {
          auto space = got.str.find(' ');
          auto bits = space == std::string::npos ? std::nullopt : number(std::string_view(got.str).substr(space + 1));
          if (bits) {
            p = pid::from_bits(*bits);  // cluster form
          } else {
            st->log("global name '" + w->name + "' has a malformed value in Redis: " + got.str);
          }
        }
        ember::reply(f, p);
      }
    }
    void handle_info(message& m) {
      if (auto* d = m.get_if<ember::down>()) {
        for (auto it = held.begin(); it != held.end(); ++it) {
          if (it->second.second != d->ref) continue;
          try {
            release(it->first, it->second.first);
          } catch (const std::exception& e) {
            st->log("releasing global name '" + it->first + "': " + e.what());
          }
          held.erase(it);
          return;
        }
      }
    }
  };

  // ---------------------------------------------------------- remote spawn

  struct spawnable {
    std::uint64_t schema_id;
    std::string type_name;
    dist::detail::spawnable_fn fn;
  };
  std::mutex spawnables_mu;
  std::unordered_map<std::string, std::shared_ptr<const spawnable>> spawnables;
  std::atomic<std::uint64_t> spawner_bits{0};

  // The spawner: starts registered functions for other nodes.
  struct spawner_state {
    state* st;
    explicit spawner_state(state* s) : st(s) {}
    void handle_call(message& m, from f) {
      auto* req = m.get_if<wire<SpawnRequest>>();
      if (!req) return;
      auto r = req->get();
      std::string name = r.getFunction().cStr();
      std::shared_ptr<const spawnable> fn;
      {
        global_heap_scope g;
        std::lock_guard lock(st->spawnables_mu);
        auto it = st->spawnables.find(name);
        if (it != st->spawnables.end()) fn = it->second;
      }
      std::string error;
      pid started;
      if (!fn) {
        error = "node " + std::to_string(st->my_id.load()) + " (" + st->opts.name + ") has no function '" + name +
                "' to spawn (register_spawnable)";
      } else if (fn->schema_id != r.getSchemaId()) {
        error = "'" + name + "' on node " + std::to_string(st->my_id.load()) + " takes " + fn->type_name +
                ", not the argument sent (schema id " + std::to_string(r.getSchemaId()) + ")";
      } else {
        auto arg = r.getArgument();
        std::string bytes(reinterpret_cast<const char*>(arg.begin()), arg.size());
        started = ember::cluster_pid(ember::spawn([fn, bytes = std::move(bytes)] {
          fn->fn(std::as_bytes(std::span(bytes.data(), bytes.size())));
        }));
      }
      ember::reply(f, wire<SpawnReply>::build([&](SpawnReply::Builder b) {
        b.setPid(started.bits());
        b.setError(error);
      }));
    }
  };

  // ---------------------------------------------------------- membership

  // A node's entry in the membership hash: "name address spawner".
  std::string my_entry() const {
    return opts.name + " " + (opts.transport == node_transport::redis_stream ? std::string("-") : advertised) + " " +
           std::to_string(to_wire(pid::from_bits(spawner_bits.load())).bits());
  }
  struct entry_fields {
    std::string name, address;
    std::uint64_t spawner = 0;
  };
  static entry_fields parse_entry(const std::string& entry) {
    entry_fields f;
    std::istringstream in(entry);
    std::string spawner;
    in >> f.name >> f.address >> spawner;
    f.spawner = number(spawner).value_or(0);
    return f;
  }

  // Takes an id and the name. Throws error on failure.
  void join(redis::client& rc) {
    auto deadline = std::chrono::steady_clock::now() + opts.join_timeout;
    std::string px = std::to_string(opts.down_after.count());
    std::uint32_t id = 0;
    for (int tries = 0; tries <= int(max_node_id) && !id; ++tries) {
      redis::reply r = rc.command({"INCR", key("ids")});
      if (r.is_error()) throw error(errc::redis_error, "node: INCR " + key("ids") + ": " + r.str);
      std::uint32_t candidate = std::uint32_t((r.integer - 1) % max_node_id) + 1;
      redis::reply set = rc.command({"SET", key("alive:" + std::to_string(candidate)), opts.name, "NX", "PX", px});
      if (set.is_error()) throw error(errc::redis_error, "node: SET alive: " + set.str);
      if (!set.is_nil()) id = candidate;
    }
    if (!id) throw error(errc::system_limit, "node: every one of the 4095 node ids is alive");
    my_id.store(id);
    n.cluster_id.store(id, std::memory_order_relaxed);
    for (;;) {
      redis::reply r = rc.command({"SET", key("name:" + opts.name), std::to_string(id), "NX", "PX", px});
      if (r.is_error()) throw error(errc::redis_error, "node: SET name: " + r.str);
      if (!r.is_nil()) break;
      if (std::chrono::steady_clock::now() > deadline) {
        rc.command({"DEL", key("alive:" + std::to_string(id))});
        throw error(errc::name_taken, "node: the name '" + opts.name + "' is held by a live node of cluster '" +
                                          opts.cluster + "'");
      }
      // Held: by a live node, or by this node's previous life until its
      // heartbeat expires. Meanwhile the id stays this node's.
      ember::sleep_for(std::min<std::chrono::milliseconds>(opts.heartbeat, 100ms));
      rc.command({"SET", key("alive:" + std::to_string(id)), opts.name, "XX", "PX", px});
    }
    redis::reply h = rc.command({"HSET", key("nodes"), std::to_string(id), my_entry()});
    if (h.is_error()) throw error(errc::redis_error, "node: HSET nodes: " + h.str);
  }

  // One heartbeat: refresh this node's keys, read the others'.
  void tick(redis::client& rc) {
    std::string id = std::to_string(my_id.load());
    std::string px = std::to_string(opts.down_after.count());
    auto replies = rc.pipeline({{"SET", key("alive:" + id), opts.name, "XX", "PX", px},
                                {"SET", key("name:" + opts.name), id, "XX", "PX", px},
                                {"HGETALL", key("nodes")}});
    if (replies[0].is_nil()) {
      // Our key expired (this node stalled longer than down_after): the
      // others have declared it down; take it again if it is still free.
      log("this node's heartbeat expired in Redis; renewing it");
      rc.pipeline({{"SET", key("alive:" + id), opts.name, "NX", "PX", px},
                   {"SET", key("name:" + opts.name), id, "NX", "PX", px},
                   {"HSET", key("nodes"), id, my_entry()}});
    }
    const redis::reply& all = replies[2];
    std::vector<std::pair<std::uint32_t, std::string>> members;
    for (std::size_t i = 0; i + 1 < all.elements.size(); i += 2) {
      std::uint32_t other = number<std::uint32_t>(all.elements[i].str).value_or(0);
      if (other == 0 || other > max_node_id || other == my_id.load()) continue;
      members.emplace_back(other, all.elements[i + 1].str);
    }
    std::vector<std::string> mget{"MGET"};
    for (auto& m : members) mget.push_back(key("alive:" + std::to_string(m.first)));
    std::vector<bool> alive(members.size(), false);
    if (!members.empty()) {
      redis::reply r = rc.command(mget);
      for (std::size_t i = 0; i < members.size() && i < r.elements.size(); ++i) alive[i] = !r.elements[i].is_nil();
    }
    std::vector<std::string> gone{"HDEL", key("nodes")};
    std::set<std::uint32_t> live;
    for (std::size_t i = 0; i < members.size(); ++i) {
      auto [other, entry] = members[i];
      if (!alive[i]) {
        gone.push_back(std::to_string(other));
        continue;
      }
      live.insert(other);
      entry_fields fields = parse_entry(entry);
      peer& pr = peer_of(other);
      bool revive;
      {
        std::lock_guard lock(pr.mu);
        // A peer declared down (a broken connection) is tried again after
        // a heartbeat, if Redis still has it alive.
        revive = !pr.up && std::chrono::steady_clock::now() - pr.down_at >= opts.heartbeat;
      }
      if (revive) {
        bring_up(pr, fields.name, fields.address, fields.spawner);
      } else if (fields.spawner) {
        std::lock_guard lock(pr.mu);
        pr.spawner = fields.spawner;
      }
    }
    // Peers that are up but no longer alive in Redis, and nodes never seen
    // that sends wait for but that do not exist.
    for (std::uint32_t i = 1; i <= max_node_id; ++i) {
      peer* pr = peers[i].load(std::memory_order_acquire);
      if (!pr || live.count(i)) continue;
      declare_down(*pr, 0, "it stopped heartbeating");
      fail_waiting(*pr);
    }
    if (gone.size() > 2) {
      for (std::size_t i = 2; i < gone.size(); ++i) {
        std::uint32_t id = number<std::uint32_t>(gone[i]).value_or(0);
        clean_names_of(rc, id);
        rc.command({"DEL", stream_key(id)});  // what it never read goes with it
      }
      rc.command(gone);
    }
  }

  // A node that a send named before the membership saw it.
  void lookup(redis::client& rc, std::uint32_t id) {
    if (id == 0 || id > max_node_id) return;
    peer& pr = peer_of(id);
    try {
      std::string ids = std::to_string(id);
      auto r = rc.pipeline({{"HGET", key("nodes"), ids}, {"EXISTS", key("alive:" + ids)}});
      if (r[0].kind == redis::reply::type::string && r[1].integer == 1) {
        entry_fields fields = parse_entry(r[0].str);
        bring_up(pr, fields.name, fields.address, fields.spawner);
      } else {
        fail_waiting(pr);
      }
    } catch (const std::exception& e) {
      log("looking up node " + std::to_string(id) + ": " + e.what() + " (the next heartbeat tries again)");
    }
  }

  void run_membership(std::shared_ptr<std::promise<void>> joined_promise) {
    membership_bits.store(self().bits(), std::memory_order_release);
    struct done_guard {
      state* s;
      ~done_guard() {
        std::lock_guard lock(s->life_mu);
        s->membership_done = true;
        s->life_cv.notify_all();
      }
    } guard{this};
    redis::client_options ro;
    ro.seeds = opts.redis;
    ro.command_timeout = std::max<std::chrono::milliseconds>(opts.down_after, 1000ms);
    std::unique_ptr<redis::client> rc;
    try {
      pid sp = gen_server::start<spawner_state>(this);
      spawner_bits.store(sp.bits(), std::memory_order_release);
      processes_extra(sp);
      rc = std::make_unique<redis::client>(ro);
      join(*rc);
    } catch (...) {
      joined_promise->set_exception(portable_exception());
      return;
    }
    try {
      pid ns = gen_server::start<names_server_state>(this);
      names_server.store(ns.bits(), std::memory_order_release);
      processes_extra(ns);
    } catch (...) {
      joined_promise->set_exception(portable_exception());
      return;
    }
    active.store(true, std::memory_order_release);
    start([this] { run_stream_reader(); });
    joined_promise->set_value();
    auto next_tick = std::chrono::steady_clock::now() + opts.heartbeat;
    for (;;) {
      auto now = std::chrono::steady_clock::now();
      auto wait = next_tick > now ? std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - now) : 0ms;
      int what = ember::receive([](const leave_request&) { return 0; },
                                [&](const lookup_request& l) {
                                  lookup(*rc, l.id);
                                  return 1;
                                },
                                ember::after(wait, [] { return 2; }));
      if (what == 0) break;
      if (what == 1) continue;
      next_tick = std::chrono::steady_clock::now() + opts.heartbeat;
      try {
        tick(*rc);
      } catch (const std::exception& e) {
        log(std::string("heartbeat failed: ") + e.what());
      }
    }
    // Leave: out of Redis first, so no node connects again.
    active.store(false, std::memory_order_release);
    try {
      std::string id = std::to_string(my_id.load());
      clean_names_of(*rc, my_id.load());
      rc->command({"DEL", stream_key(my_id.load())});
      rc->pipeline({{"DEL", key("alive:" + id)}, {"DEL", key("name:" + opts.name)}, {"HDEL", key("nodes"), id}});
    } catch (const std::exception& e) {
      log(std::string("leaving: ") + e.what());
    }
    for (std::uint32_t i = 1; i <= max_node_id; ++i)
      if (peer* pr = peers[i].load(std::memory_order_acquire)) declare_down(*pr, 0, "this node left");
  }
};

// ------------------------------------------------------------------ node

node::node(runtime& rt, node_options opts) {
  core::node& nd = core::runtime_access::of(rt);
  if (nd.table.node_id() != 0)
    throw error(errc::invalid_argument, "node: the runtime has node_id " + std::to_string(nd.table.node_id()) +
                                            "; a node of a cluster takes its id from Redis (leave node_id 0)");
  if (opts.name.empty() || opts.name.find(' ') != std::string::npos)
    throw error(errc::invalid_argument, "node: the name must be non-empty and without spaces");
  if (opts.redis.empty()) throw error(errc::invalid_argument, "node: no Redis address");
  if (opts.heartbeat <= 0ms || opts.down_after <= opts.heartbeat)
    throw error(errc::invalid_argument, "node: down_after must be longer than heartbeat (and both positive)");
  if (nd.remote.load())
    throw error(errc::invalid_argument, "node: this runtime is a node already (one ember::node per runtime)");
  auto owned = std::make_unique<state>(rt, nd, std::move(opts));
  state* st = owned.get();
  // The listener first: its address is published at join.
  auto listening = std::make_shared<std::promise<std::string>>();
  auto joined = std::make_shared<std::promise<void>>();
  st->listener = st->start([st, listening] {
    net::listener l;
    try {
      l = net::listener::listen(net::address::parse(st->opts.listen));
    } catch (...) {
      listening->set_exception(portable_exception());
      return;
    }
    listening->set_value(l.local_address().to_string());
    st->run_listener(std::move(l));
  });
  try {
    std::string at = listening->get_future().get();
    st->advertised = st->opts.advertise.empty() ? at : st->opts.advertise;
  } catch (...) {
    // Nothing else started yet; the listener process has ended.
    std::unique_lock lock(st->life_mu);
    st->life_cv.wait(lock, [st] { return st->processes == 0; });
    throw;
  }
  nd.remote_owner = std::move(owned);
  nd.remote.store(st, std::memory_order_release);
  s_ = st;
  st->membership = st->start([st, joined] { st->run_membership(joined); });
  auto f = joined->get_future();
  if (f.wait_for(st->opts.join_timeout + 5s) != std::future_status::ready) {
    leave();
    throw error(errc::unavailable, "node: joining took longer than join_timeout");
  }
  try {
    f.get();
  } catch (...) {
    leave();
    throw;
  }
}

node::~node() { leave(); }

void node::leave() {
  state* st = s_;
  if (!st) return;
  // The membership process leaves Redis and brings every peer down.
  st->rt.send(st->membership, leave_request{});
  {
    std::unique_lock lock(st->life_mu);
    if (!st->life_cv.wait_for(lock, 10s, [st] { return st->membership_done; }))
      st->log("leaving: the membership process did not answer in 10 s");
  }
  st->active.store(false, std::memory_order_release);
  for (std::uint32_t i = 1; i <= max_node_id; ++i) {
    if (peer* pr = st->peers[i].load(std::memory_order_acquire)) {
      st->declare_down(*pr, 0, "this node left");
      st->fail_waiting(*pr);
    }
  }
  // Then its other processes: the listener, readers, writers. A process
  // started but not yet running is killed in a later round.
  std::vector<pid> extra;
  {
    std::lock_guard lock(st->life_mu);
    extra.swap(st->extra);
  }
  for (pid p : extra) {
    st->rt.exit(p, exit_reason::kill());
    auto give_up = std::chrono::steady_clock::now() + 10s;
    while (st->rt.is_alive(p) && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
  }
  std::unique_lock lock(st->life_mu);
  while (st->processes > 0) {
    std::vector<pid> left(st->running.begin(), st->running.end());
    lock.unlock();
    for (pid p : left) st->rt.exit(p, exit_reason::kill());
    lock.lock();
    st->life_cv.wait_for(lock, 50ms, [st] { return st->processes == 0; });
  }
  s_ = nullptr;
}

std::uint32_t node::id() const noexcept { return s_ ? s_->my_id.load() : 0; }
const std::string& node::name() const noexcept {
  static const std::string none;
  return s_ ? s_->opts.name : none;
}
const std::string& node::address() const noexcept {
  static const std::string none;
  return s_ ? s_->advertised : none;
}

std::vector<node_info> node::nodes() const {
  std::vector<node_info> out;
  if (!s_) return out;
  for (std::uint32_t i = 1; i <= max_node_id; ++i) {
    peer* pr = s_->peers[i].load(std::memory_order_acquire);
    if (!pr) continue;
    std::lock_guard lock(pr->mu);
    if (pr->up) out.push_back({i, pr->name, pr->address, true});
  }
  return out;
}

std::optional<std::uint32_t> node::find(std::string_view name) const {
  for (auto& n : nodes())
    if (n.name == name) return n.id;
  return std::nullopt;
}

node_stats node::stats() const {
  node_stats s;
  if (!s_) return s;
  s.frames_sent = s_->frames_sent.load();
  s.frames_received = s_->frames_received.load();
  s.bytes_sent = s_->bytes_sent.load();
  s.bytes_received = s_->bytes_received.load();
  s.dropped_malformed = s_->dropped_malformed.load();
  s.dropped_unknown_type = s_->dropped_unknown_type.load();
  s.dropped_unreachable = s_->dropped_unreachable.load();
  s.nodes_down = s_->nodes_down.load();
  return s;
}

namespace {
node::state& state_or_throw(const char* call) {
  core::node* nd = core::current_node();
  if (!nd || !core::current_process()) throw error(errc::not_in_process, std::string(call) + ": called outside a process");
  auto* st = static_cast<node::state*>(nd->remote.load(std::memory_order_acquire));
  if (!st) throw error(errc::unavailable, std::string(call) + ": this runtime is not a node of a cluster");
  return *st;
}
}  // namespace

dist::detail::cluster_settings dist::detail::current_cluster(const char* call) {
  node::state& st = state_or_throw(call);
  return {st.opts.redis, st.opts.cluster, st.opts.name, st.opts.down_after};
}

name_registry& global_names() { return state_or_throw("global_names").names; }

bool register_global(const std::string& name, pid p) { return state_or_throw("register_global").names.register_name(name, p); }

void unregister_global(const std::string& name) { state_or_throw("unregister_global").names.unregister_name(name); }

pid whereis_global(const std::string& name) { return state_or_throw("whereis_global").names.whereis_name(name); }

pid node::cluster_pid(pid p) const noexcept { return s_ ? s_->to_wire(p) : p; }

pid cluster_pid(pid p) {
  core::node* nd = core::current_node();
  if (!nd || !core::current_process()) throw error(errc::not_in_process, "cluster_pid: called outside a process");
  std::uint32_t id = nd->cluster_id.load(std::memory_order_relaxed);
  return p.node() == 0 && p && id ? pid(id, p.slot(), p.generation()) : p;
}

void dist::detail::register_spawnable(node& n, std::string name, std::uint64_t schema_id, std::string type_name,
                                      spawnable_fn fn) {
  if (!n.s_) throw error(errc::unavailable, "register_spawnable: the node has left");
  if (name.empty()) throw error(errc::invalid_argument, "register_spawnable: an empty name");
  global_heap_scope g;
  auto entry = std::make_shared<const node::state::spawnable>(
      node::state::spawnable{schema_id, std::move(type_name), std::move(fn)});
  std::lock_guard lock(n.s_->spawnables_mu);
  n.s_->spawnables[std::move(name)] = std::move(entry);
}

pid dist::detail::spawn_on(std::uint32_t node_id, const std::string& name, std::uint64_t schema_id,
                           std::span<const std::byte> argument, std::chrono::milliseconds timeout) {
  node::state& st = state_or_throw("spawn_on");
  std::uint64_t spawner = 0;
  if (node_id == st.my_id.load()) {
    spawner = st.to_wire(pid::from_bits(st.spawner_bits.load())).bits();
  } else if (node_id >= 1 && node_id <= max_node_id) {
    if (peer* pr = st.peers[node_id].load(std::memory_order_acquire)) {
      std::lock_guard lock(pr->mu);
      if (pr->up) spawner = pr->spawner;
    }
  }
  if (!spawner)
    throw exit_error(errc::call_failed, "spawn_on: node " + std::to_string(node_id) + " is not a live node of this cluster",
                     exit_reason::noconnection());
  auto request = wire<SpawnRequest>::build([&](SpawnRequest::Builder b) {
    b.setFunction(name);
    b.setSchemaId(schema_id);
    b.setArgument(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(argument.data()), argument.size()));
  });
  auto reply = gen_server::call<wire<SpawnReply>>(pid::from_bits(spawner), request, timeout);
  auto r = reply.get();
  if (r.getError().size() > 0) {
    std::string why = r.getError().cStr();
    throw error(why.find("takes") != std::string::npos ? errc::bad_message_type : errc::not_found, "spawn_on: " + why);
  }
  return pid::from_bits(r.getPid());
}

void monitor_node(std::uint32_t id) {
  core::node* nd = core::current_node();
  if (!nd || !core::current_process()) throw error(errc::not_in_process, "monitor_node: called outside a process");
  auto* st = static_cast<node::state*>(nd->remote.load(std::memory_order_acquire));
  pid me = self();
  if (st && id >= 1 && id <= max_node_id && st->active.load()) {
    peer& pr = st->peer_of(id);
    global_heap_scope g;
    std::lock_guard lock(pr.mu);
    if (pr.up) {
      pr.node_watchers.push_back(me);
      return;
    }
  }
  ember::send(me, node_down{id, {}});
}

}  // namespace ember
