// Durable mailboxes (include/ember/dist/durable.hpp explains the model).
//
// Keys. A mailbox `m` of cluster `c` is the stream {ember:c:dm:m} and its
// dead letters {ember:c:dm:m}:dead: one hash tag, so both live on one shard
// of a Redis Cluster and one pipeline may touch both. Entries have the
// fields s (the schema id, decimal) and m (the Cap'n Proto bytes).
//
// Reading. The consumer group is "ember", created at the stream's start
// (id 0, MKSTREAM), so messages sent before any consumer attached are
// delivered too. A mailbox reads, in this order:
//   1. its own pending entries: what this consumer took and never
//      acknowledged, i.e. what its previous life was doing when it crashed
//      or its node was killed. XPENDING lists them with their delivery
//      counts without counting a delivery; each is then taken again alone
//      with XCLAIM, which counts one. So a crash adds one delivery to the
//      message that was being handled, not to everything listed;
//   2. entries idle longer than claim_after in any consumer's hands
//      (XAUTOCLAIM ... JUSTID, every claim_after / 2: a consumer that is
//      gone): made this consumer's without counting, then taken as in 1;
//   3. new entries (XREADGROUP ... BLOCK ... >), up to `batch` at a time,
//      on a connection of its own (a blocked read holds its connection),
//      blocking at most claim_after / 2 so that step 2 runs again. Redis
//      counts each as delivered once it is read: after a crash, the ones
//      read with the crashing one but not yet handled come back with two
//      deliveries. A count above 1 means "may have been seen", which is
//      what an idempotent handler needs; batch = 1 makes it exact.
// An entry delivered more than max_deliveries times, malformed, or of
// another type than the receive expects, is copied to the dead-letter
// stream (with its id, count and reason) and acknowledged.
#include "ember/dist/durable.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <deque>

#include "dist/cluster.hpp"
#include "ember/dist/redis.hpp"
#include "ember/sched/timer.hpp"

namespace ember::durable {

namespace {

constexpr const char* group = "ember";

std::string stream_of(const std::string& cluster, const std::string& name) {
  return "{ember:" + cluster + ":dm:" + name + "}";
}

redis::client client_for(const dist::detail::cluster_settings& c) {
  redis::client_options o;
  o.seeds = c.redis;
  o.command_timeout = std::max<std::chrono::milliseconds>(c.timeout, std::chrono::milliseconds(1000));
  return redis::client(o);
}

void check(const redis::reply& r, const std::string& what) {
  if (r.is_error()) throw error(errc::redis_error, "durable: " + what + ": " + r.str);
}

}  // namespace

// ------------------------------------------------------------------ producer

struct producer::state {
  std::string cluster;
  redis::client rc;
};

producer::producer() {
  auto c = dist::detail::current_cluster("durable::producer");
  s_ = std::make_unique<state>(state{c.cluster, client_for(c)});
}
producer::~producer() = default;
producer::producer(producer&&) noexcept = default;
producer& producer::operator=(producer&&) noexcept = default;

std::string producer::append(const std::string& mailbox, std::uint64_t schema, std::span<const std::byte> bytes) {
  // Not idempotent: an XADD whose reply was lost may have been applied, so
  // it is not sent again behind the caller's back (unavailable instead).
  redis::reply r = s_->rc.command({"XADD", stream_of(s_->cluster, mailbox), "*", "s", std::to_string(schema), "m",
                                   std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())},
                                  1, false);
  check(r, "XADD to '" + mailbox + "'");
  return r.str;
}

std::vector<std::string> producer::append_all(const std::string& mailbox, std::uint64_t schema,
                                              const std::vector<std::span<const std::byte>>& bytes) {
  std::string key = stream_of(s_->cluster, mailbox), id = std::to_string(schema);
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(bytes.size());
  for (auto b : bytes)
    cmds.push_back({"XADD", key, "*", "s", id, "m", std::string(reinterpret_cast<const char*>(b.data()), b.size())});
  std::vector<std::string> ids;
  if (cmds.empty()) return ids;
  auto replies = s_->rc.pipeline(cmds, 1, false);
  ids.reserve(replies.size());
  for (auto& r : replies) {
    check(r, "XADD to '" + mailbox + "'");
    ids.push_back(r.str);
  }
  return ids;
}

// ------------------------------------------------------------------ mailbox

struct mailbox::state {
  std::string name, consumer, key, dead;
  options opts;
  redis::client rc;
  std::optional<redis::connection> blocking;
  bool group_ready = false;
  bool own_done = false;
  std::string own_cursor = "0";
  std::string claim_cursor = "0-0";
  std::chrono::steady_clock::time_point next_claim{};
  std::deque<raw_entry> queue;
  std::chrono::milliseconds timeout;

  void log(const std::string& what) const {
    std::fprintf(stderr, "ember: durable mailbox %s (%s): %s\n", name.c_str(), consumer.c_str(), what.c_str());
  }
};

mailbox::mailbox(std::string name, options o) {
  if (name.empty()) throw error(errc::invalid_argument, "durable::mailbox: an empty name");
  if (o.max_deliveries == 0 || o.batch == 0 || o.claim_after.count() <= 0)
    throw error(errc::invalid_argument, "durable::mailbox: max_deliveries, batch and claim_after must be positive");
  auto c = dist::detail::current_cluster("durable::mailbox");
  std::string consumer = o.consumer.empty() ? c.node_name : o.consumer;
  std::string key = stream_of(c.cluster, name);
  s_ = std::make_unique<state>(state{std::move(name), std::move(consumer), key, key + ":dead", std::move(o),
                                     client_for(c), std::nullopt, false, false, "0", "0-0", {}, {}, c.timeout});
}
mailbox::~mailbox() = default;
mailbox::mailbox(mailbox&&) noexcept = default;
mailbox& mailbox::operator=(mailbox&&) noexcept = default;

const std::string& mailbox::name() const noexcept { return s_->name; }
const std::string& mailbox::consumer() const noexcept { return s_->consumer; }
std::string mailbox::stream_key() const { return s_->key; }
std::string mailbox::dead_letter_key() const { return s_->dead; }

namespace {

// Entries of an XREADGROUP / XAUTOCLAIM reply's entry list: [id, [f, v...]].
template <class Entry>
void parse_entries(const redis::reply& list, std::vector<Entry>& out, std::vector<std::string>& empty_ids) {
  for (const auto& item : list.elements) {
    if (item.elements.empty()) continue;
    Entry e;
    e.id = item.elements[0].str;
    if (item.elements.size() < 2 || item.elements[1].is_nil()) {
      empty_ids.push_back(e.id);  // deleted from the stream while pending
      continue;
    }
    const auto& fields = item.elements[1].elements;
    bool have_schema = false, have_bytes = false;
    for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "s") {
        // from_chars, not stoull: errno is shared by the processes of a thread.
        const std::string& t = fields[i + 1].str;
        auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), e.schema_id);
        have_schema = ec == std::errc() && end == t.data() + t.size() && !t.empty();
      } else if (fields[i].str == "m") {
        e.bytes = fields[i + 1].str;
        have_bytes = true;
      }
    }
    if (!have_schema || !have_bytes) e.schema_id = 0;  // malformed: dead-lettered by receive
    out.push_back(std::move(e));
  }
}

}  // namespace

std::optional<mailbox::raw_entry> mailbox::next(std::chrono::milliseconds timeout) {
  state& s = *s_;
  using clock = std::chrono::steady_clock;
  const bool forever = timeout == std::chrono::milliseconds::max();
  const auto deadline = forever ? clock::time_point::max() : clock::now() + timeout;
  if (!s.group_ready) {
    redis::reply r = s.rc.command({"XGROUP", "CREATE", s.key, group, "0", "MKSTREAM"}, 2);
    if (r.is_error() && r.str.rfind("BUSYGROUP", 0) != 0) check(r, "XGROUP CREATE");
    s.group_ready = true;
  }
  for (;;) {
    while (!s.queue.empty()) {
      raw_entry e = std::move(s.queue.front());
      s.queue.pop_front();
      if (e.pending) {
        // Delivered before (to this consumer's previous life, or claimed
        // from another): e.deliveries counts those deliveries.
        if (e.deliveries >= s.opts.max_deliveries) {
          redis::reply r = s.rc.command({"XRANGE", s.key, e.id, e.id});
          check(r, "XRANGE");
          std::vector<raw_entry> body;
          std::vector<std::string> gone;
          parse_entries(r, body, gone);
          if (body.empty()) {
            ack(e.id);
            continue;
          }
          body[0].deliveries = e.deliveries;
          dead_letter(body[0], "delivered " + std::to_string(e.deliveries) + " times (max_deliveries " +
                                   std::to_string(s.opts.max_deliveries) + ")");
          continue;
        }
        // Take it again: XCLAIM counts this delivery and returns the entry.
        redis::reply r = s.rc.command({"XCLAIM", s.key, group, s.consumer, "0", e.id});
        check(r, "XCLAIM");
        std::vector<raw_entry> body;
        std::vector<std::string> gone;
        parse_entries(r, body, gone);
        if (body.empty()) {
          ack(e.id);  // deleted from the stream meanwhile
          continue;
        }
        body[0].deliveries = e.deliveries + 1;
        e = std::move(body[0]);
      }
      if (e.schema_id == 0) {
        dead_letter(e, "a malformed entry (it needs the fields s, a schema id, and m, the message)");
        continue;
      }
      return e;
    }
    std::vector<raw_entry> got;
    std::vector<std::string> empty;
    if (!s.own_done) {
      // 1. This consumer's own pending entries, read without counting a
      // delivery (XPENDING); each is taken again one at a time above, so a
      // crash counts only the delivery that crashed.
      redis::reply r = s.rc.command({"XPENDING", s.key, group, "-", "+", std::to_string(s.opts.batch), s.consumer});
      check(r, "XPENDING");
      for (const auto& row : r.elements) {
        if (row.elements.size() < 4) continue;
        raw_entry e;
        e.id = row.elements[0].str;
        e.deliveries = std::uint64_t(row.elements[3].integer);
        e.pending = true;
        got.push_back(std::move(e));
      }
      if (got.empty()) s.own_done = true;
    } else if (clock::now() >= s.next_claim) {
      // 2. Entries another consumer left unacknowledged: made this
      // consumer's (JUSTID: no delivery counted) and taken as in 1.
      redis::reply r = s.rc.command({"XAUTOCLAIM", s.key, group, s.consumer, std::to_string(s.opts.claim_after.count()),
                                     s.claim_cursor, "COUNT", std::to_string(s.opts.batch), "JUSTID"});
      check(r, "XAUTOCLAIM");
      bool claimed = r.elements.size() >= 2 && !r.elements[1].elements.empty();
      if (r.elements.size() >= 2) s.claim_cursor = r.elements[0].str;
      if (claimed) s.own_done = false;
      if (s.claim_cursor == "0-0" || r.elements.size() < 2) s.next_claim = clock::now() + s.opts.claim_after / 2;
    } else {
      // 3. New entries, blocking (on a connection of its own).
      auto now = clock::now();
      if (now >= deadline) return std::nullopt;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::min<clock::duration>(deadline - now, std::chrono::hours(1)));
      auto wait = std::clamp<std::chrono::milliseconds>(std::min(left, s.opts.claim_after / 2),
                                                        std::chrono::milliseconds(1), std::chrono::milliseconds(2000));
      try {
        if (!s.blocking || !s.blocking->connected()) s.blocking.emplace(s.rc.dedicated_connection_for_key(s.key));
        redis::reply r = s.blocking->command(
            {"XREADGROUP", "GROUP", group, s.consumer, "COUNT", std::to_string(s.opts.batch), "BLOCK",
             std::to_string(wait.count()), "STREAMS", s.key, ">"},
            wait + s.timeout);
        if (r.is_error() && r.str.rfind("NOGROUP", 0) == 0) {
          s.group_ready = false;  // the stream was deleted: make the group again
          return next(forever ? timeout : std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()));
        }
        check(r, "XREADGROUP");
        if (!r.is_nil() && !r.elements.empty() && r.elements[0].elements.size() >= 2)
          parse_entries(r.elements[0].elements[1], got, empty);
      } catch (const error& e) {
        if (e.code() == errc::redis_error) throw;
        // The blocking connection failed (Redis restarted, a failover):
        // reconnect on the next round, after a pause.
        s.blocking.reset();
        s.log(std::string("reading: ") + e.what() + "; retrying");
        ember::sleep_for(std::chrono::milliseconds(100));
      }
    }
    for (const auto& id : empty) ack(id);
    for (auto& e : got) s.queue.push_back(std::move(e));
  }
}

void mailbox::ack(const std::string& id) {
  redis::reply r = s_->rc.command({"XACK", s_->key, group, id});
  check(r, "XACK");
}

void mailbox::dead_letter(const raw_entry& e, const std::string& why) {
  state& s = *s_;
  s.log("entry " + e.id + " moved to " + s.dead + ": " + why);
  auto replies = s.rc.pipeline({{"XADD", s.dead, "*", "id", e.id, "s", std::to_string(e.schema_id), "m", e.bytes,
                                 "deliveries", std::to_string(e.deliveries), "why", why},
                                {"XACK", s.key, group, e.id}},
                               1, false);
  for (auto& r : replies) check(r, "dead-lettering " + e.id);
}

}  // namespace ember::durable
