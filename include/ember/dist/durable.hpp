// Durable mailboxes: messages persisted in Redis that are lost by no crash.
//
//   // anywhere in the cluster, inside a process:
//   ember::durable::producer out;
//   out.send("orders", ember::wire<Order>::build(...));    // returns once Redis has it
//
//   // in the process that owns the mailbox (under a supervisor):
//   ember::durable::mailbox box("orders");
//   for (;;)
//     box.receive<Order>([](const ember::durable::delivery<Order>& d) {
//       handle(d.message.get());       // d.deliveries > 1: seen before
//     });
//
// A mailbox is a Redis Stream ({ember:<cluster>:dm:<name>}) read through a
// consumer group. A message is acknowledged (XACK) only after the handler
// returns, so a crash of the process, or of its node, anywhere before that
// leaves it pending; the process that takes the mailbox again (its
// restarted self, same consumer name) gets its own pending messages first,
// and any consumer takes over messages another has left unacknowledged
// for claim_after (XAUTOCLAIM). Each delivery carries Redis's delivery
// count, so a handler can be idempotent, and a message delivered more than
// max_deliveries times (a poison message: it crashes every handler) is
// moved to the mailbox's dead-letter stream with the reason, logged.
// Messages are Cap'n Proto structs, as between nodes (ember::wire<S>).
//
// Both objects work inside a process of a runtime that is a node
// (ember::node): they use its Redis addresses and cluster name, through
// connections of their own that belong to the process that made them.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ember/core/error.hpp"
#include "ember/dist/wire.hpp"

namespace ember::durable {

// A message taken from a durable mailbox.
template <class S>
struct delivery {
  wire<S> message;
  std::string id;                // its stream entry id
  std::uint64_t deliveries = 1;  // 1 the first time; more when redelivered
};

struct options {
  std::string consumer;                          // default: the node's name
  std::uint32_t max_deliveries = 5;              // beyond: dead-lettered
  std::chrono::milliseconds claim_after{5000};   // then another consumer takes an unacknowledged message
  // New entries read at a time. Redis counts a read entry as delivered, so
  // after a crash the entries read with the one being handled come back
  // with a count of 2 though no handler saw them (1 makes counts exact).
  std::uint32_t batch = 16;
};

// Appends messages to durable mailboxes. Each send returns once Redis has
// the message (its entry id); a Redis that cannot be reached within the
// node's timeout is error(unavailable), never a silent loss.
class producer {
 public:
  producer();
  ~producer();
  producer(producer&&) noexcept;
  producer& operator=(producer&&) noexcept;

  template <class S>
  std::string send(const std::string& mailbox, const wire<S>& m) {
    return append(mailbox, wire<S>::schema_id(), m.bytes());
  }
  // Many messages in one pipeline (in order); their entry ids.
  template <class S>
  std::vector<std::string> send_all(const std::string& mailbox, const std::vector<wire<S>>& ms) {
    std::vector<std::span<const std::byte>> bytes;
    bytes.reserve(ms.size());
    for (const auto& m : ms) bytes.push_back(m.bytes());
    return append_all(mailbox, wire<S>::schema_id(), bytes);
  }

 private:
  std::string append(const std::string& mailbox, std::uint64_t schema, std::span<const std::byte> bytes);
  std::vector<std::string> append_all(const std::string& mailbox, std::uint64_t schema,
                                      const std::vector<std::span<const std::byte>>& bytes);
  struct state;
  std::unique_ptr<state> s_;
};

// A process's durable mailbox.
class mailbox {
 public:
  explicit mailbox(std::string name, options o = {});
  ~mailbox();
  mailbox(mailbox&&) noexcept;
  mailbox& operator=(mailbox&&) noexcept;

  // Takes the next message (this consumer's pending ones first, then ones
  // left by others, then new ones), runs handler(const delivery<S>&) and
  // acknowledges it when the handler returns. If the handler throws, the
  // message stays pending (redelivered later) and the exception goes on.
  // A message of another type, or malformed, is dead-lettered. false if no
  // message came within `timeout`.
  template <class S, class F>
  bool receive(F&& handler, std::chrono::milliseconds timeout = std::chrono::milliseconds::max()) {
    for (;;) {
      std::optional<raw_entry> e = next(timeout);
      if (!e) return false;
      if (e->schema_id != wire<S>::schema_id()) {
        dead_letter(*e, "a message of schema id " + std::to_string(e->schema_id) + " where " +
                            wire<S>::type_name() + " was expected");
        continue;
      }
      std::optional<delivery<S>> d;
      try {
        d.emplace(delivery<S>{wire<S>::from_bytes(std::as_bytes(std::span(e->bytes))), e->id, e->deliveries});
      } catch (const error& x) {
        dead_letter(*e, x.what());
        continue;
      }
      handler(std::as_const(*d));
      ack(e->id);
      return true;
    }
  }

  const std::string& name() const noexcept;
  const std::string& consumer() const noexcept;
  // The Redis keys of the mailbox's stream and of its dead letters.
  std::string stream_key() const;
  std::string dead_letter_key() const;

 private:
  struct raw_entry {
    std::string id;
    std::uint64_t schema_id = 0;
    std::string bytes;
    std::uint64_t deliveries = 1;
    bool pending = false;  // known by id and count only, to be taken again (XCLAIM)
  };
  std::optional<raw_entry> next(std::chrono::milliseconds timeout);
  void ack(const std::string& id);
  void dead_letter(const raw_entry& e, const std::string& why);
  struct state;
  std::unique_ptr<state> s_;
};

}  // namespace ember::durable
