// ember::node — this runtime as one node of a cluster: pids, send, link,
// monitor and calls that work across machines.
//
//   ember::runtime rt;
//   ember::node me(rt, {.name = "api-1", .redis = {"10.0.0.5:6379"}});
//   // in a process: ember::send(remote_pid, ember::wire<Ping>::build(...));
//
// A node registers itself in Redis, heartbeats there, learns of the other
// nodes and of their departure, and talks to each live node over a direct
// TCP connection whose address it publishes in Redis (src/dist/node.cpp
// explains why). Messages that cross nodes are Cap'n Proto structs
// (ember::wire<S>, include/ember/dist/wire.hpp); links, monitors, exit
// signals and gen_server calls cross with Erlang's semantics: messages
// between one pair of processes stay in order, and links and monitors of
// processes on a node that goes down fire with reason noconnection.
//
// Local pids print with node 0, as in Erlang; a pid that leaves this node
// carries the node's cluster id (1 to 4095), given by Redis at join and
// never given to a later node until the ids wrap. The runtime must have
// been made with node_id 0 (the default).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ember/core/error.hpp"
#include "ember/core/process.hpp"
#include "ember/core/pid.hpp"
#include "ember/otp/registry.hpp"
#include "ember/sched/runtime.hpp"

namespace ember {

class node;
namespace dist::detail {
void register_spawnable(node& n, std::string name, std::uint64_t schema_id, std::string type_name,
                        std::function<void(std::span<const std::byte>)> fn);
}

// How messages travel to a node. direct: a TCP connection of the sender's
// to the node's published listener (the fast path). redis_stream: entries
// of the node's Redis Stream, which it reads with a consumer group (one
// Redis hop each way; for nodes that cannot accept connections). A node
// always reads its stream, so a direct node reaches a redis_stream one and
// the other way round.
enum class node_transport { direct, redis_stream };

struct node_options {
  std::string name;                     // unique among the cluster's live nodes
  std::string cluster = "ember";        // the Redis key space ({ember:<cluster>}:...)
  std::vector<std::string> redis;       // Redis addresses, "host:port" (standalone, or seeds of a cluster)
  std::string listen = "127.0.0.1:0";   // the direct data path's listener
  std::string advertise;                // the address other nodes connect to (default: the listener's)
  std::chrono::milliseconds heartbeat{500};     // how often the node says it is alive
  std::chrono::milliseconds down_after{3000};   // silence after which other nodes declare it down
  std::chrono::milliseconds join_timeout{10000};
  // Per peer: messages queued while its connection (or Redis) is not up.
  // Past it a send to that node throws error(unavailable), and what the
  // runtime sends (exit signals, downs) is dropped with a logged error.
  std::size_t max_queued_bytes = std::size_t(64) << 20;
  node_transport transport = node_transport::direct;  // how others send to this node
};

// A node as another node sees it.
struct node_info {
  std::uint32_t id = 0;
  std::string name;
  std::string address;
  bool connected = false;  // its data connection is up (or being set up)
};

// What a node has carried (since it joined).
struct node_stats {
  std::uint64_t frames_sent = 0, frames_received = 0;
  std::uint64_t bytes_sent = 0, bytes_received = 0;
  // Entries dropped with a logged error: malformed frames or messages,
  // unknown message types; and messages for unreachable nodes.
  std::uint64_t dropped_malformed = 0, dropped_unknown_type = 0, dropped_unreachable = 0;
  std::uint64_t nodes_down = 0;  // times a peer was declared down
};

// Delivered to a process that monitors a node (monitor_node) when that
// node goes down (Erlang's {nodedown, Node}).
struct node_down {
  std::uint32_t node = 0;
  std::string name;
};

class node {
 public:
  // Joins the cluster: takes an id and the name in Redis, starts the
  // listener, the heartbeat and the membership processes. Called outside
  // processes (main, a test); blocks until joined. Throws ember::error:
  // invalid_argument (bad options, a runtime with a node_id), name_taken
  // (a live node has the name), unavailable (Redis unreachable in time).
  node(runtime& rt, node_options opts);
  // Leaves (see leave()). The node must be destroyed before its runtime.
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  // Stops heartbeating, removes the node from Redis, closes every
  // connection (links and monitors across them fire noconnection on both
  // sides) and stops the node's processes. Idempotent.
  void leave();

  std::uint32_t id() const noexcept;
  const std::string& name() const noexcept;
  // The data path's listening address, as published.
  const std::string& address() const noexcept;
  // The other live nodes this node knows of.
  std::vector<node_info> nodes() const;
  // The id of a live node by its name.
  std::optional<std::uint32_t> find(std::string_view name) const;
  node_stats stats() const;
  // `p` as other nodes name it (see cluster_pid below).
  pid cluster_pid(pid p) const noexcept;

  struct state;

 private:
  friend void dist::detail::register_spawnable(node&, std::string, std::uint64_t, std::string,
                                               std::function<void(std::span<const std::byte>)>);
  state* s_;  // owned by the runtime (its router), so it outlives every send
};

// Inside a process: `p` as other nodes name it. Local pids carry node 0
// (as in Erlang) and are translated when they cross in a frame (the sender,
// a link, a monitor); a pid put inside a wire message as a UInt64
// (p.bits(), read back with pid::from_bits) is not, so put it there in
// this form. Either form names the same local process here.
pid cluster_pid(pid p);

// Global names, unique across the cluster (atomic in Redis), for
// processes of this node. A name is released when its process exits or its
// node goes down (by the first node that sees it down). Inside processes;
// each is a round trip to Redis through the node's names server.
//   register_global   false if the name is taken
//   whereis_global    the pid (cluster form), or the null pid
//   global_names()    the registry, for gen_server::call(via{&global_names(), "db"}, ...)
//                     and gen_server::options::registry
bool register_global(const std::string& name, pid p);
void unregister_global(const std::string& name);
pid whereis_global(const std::string& name);
name_registry& global_names();
// Sends to the process registered as `name` across the cluster; throws
// error(no_such_name) if there is none.
template <class T>
void send_global(const std::string& name, T&& value) {
  pid to = whereis_global(name);
  if (!to) throw error(errc::no_such_name, "send_global: no process is registered as '" + name + "' in the cluster");
  ember::send(to, std::forward<T>(value));
}

// Inside a process: a node_down message when node `id` goes down (at once
// if it is not up now).
void monitor_node(std::uint32_t id);

}  // namespace ember
