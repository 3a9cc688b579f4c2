// Introspection (see include/ember/observe/introspect.hpp for the contract).
//
// How a snapshot stays cheap and safe under full load:
//   - The process table is walked slot by slot up to its high-water mark.
//     A slot whose alive bit is set is pinned with a reference (one CAS,
//     the same as a monitor takes), its figures copied, and released: the
//     slot cannot be finalized and reused meanwhile. Nothing else is
//     locked, so no scheduler ever waits for a snapshot.
//   - Every figure a row shows is published by the process's own thread
//     (or its scheduler, or the monitor thread) with relaxed stores into
//     atomics of its control block: status at each switch, the mailbox's
//     private count at each change, heap bytes at each allocation size
//     class change, reductions at each switch, run time by sampling.
//     A row is thus a moment's picture, not a consistent cut across
//     processes (Erlang's observer is no different).
//   - Links and monitors live in the process's own relations, which only
//     its thread touches: process_info sends it a system signal
//     (sig_inspect) that it answers when it next drains its mailbox, i.e.
//     within its next turn or wake; a process that does not answer in
//     time is shown without them.
//   - Names come from the registry's pid -> name map, copied once per
//     table under its mutex (names are few).
#include "ember/observe/introspect.hpp"

#include <cxxabi.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "core/heap.hpp"
#include "core/node.hpp"
#include "core/process.hpp"
#include "ember/core/error.hpp"
#include "ember/core/heap.hpp"
#include "ember/core/process.hpp"
#include "ember/otp/application.hpp"
#include "ember/otp/supervisor.hpp"
#include "sched/scheduler.hpp"

namespace ember::observe {

using detail::process;

const char* to_string(process_status s) noexcept {
  switch (s) {
    case process_status::runnable: return "runnable";
    case process_status::running: return "running";
    case process_status::waiting: return "waiting";
    case process_status::blocking: return "blocking";
    case process_status::exiting: return "exiting";
  }
  return "unknown";
}

namespace {

// Demangled type names, cached: a table of a million processes has a few
// hundred distinct bodies.
std::mutex names_mu;
std::unordered_map<const std::type_info*, std::string>* demangled = nullptr;

// "ember::detail::function_body<main::{lambda()#1}>" -> "main::{lambda()#1}":
// the wrapper says nothing, what it wraps does.
std::string strip_wrapper(std::string name) {
  while (name.rfind("ember::", 0) == 0) {
    auto open = name.find('<');
    auto close = name.rfind('>');
    if (open == std::string::npos || close == std::string::npos || close < open) break;
    name = name.substr(open + 1, close - open - 1);
  }
  // "x<y> " (the space the demangler leaves before a closing '>').
  while (!name.empty() && name.back() == ' ') name.pop_back();
  return name;
}

std::string initial_call_of(const std::type_info* t) {
  if (!t) return {};
  std::lock_guard lock(names_mu);
  if (!demangled) demangled = new std::unordered_map<const std::type_info*, std::string>();
  auto it = demangled->find(t);
  if (it != demangled->end()) return it->second;
  int status = 0;
  char* d = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
  std::string name = strip_wrapper(status == 0 && d ? d : t->name());
  std::free(d);
  demangled->emplace(t, name);
  return name;
}

// Interned labels: set_label stores a pointer that stays valid for the
// runtime's life (the process table is read without locks).
std::mutex labels_mu;
std::unordered_set<std::string>* labels = nullptr;
constexpr std::size_t max_labels = 65536;

const char* intern_label(std::string_view label) {
  global_heap_scope runtime_owned;  // outlives every process heap
  std::lock_guard lock(labels_mu);
  if (!labels) labels = new std::unordered_set<std::string>();
  auto it = labels->find(std::string(label));
  if (it != labels->end()) return it->c_str();
  if (labels->size() >= max_labels) return labels->emplace("\u2026").first->c_str();
  return labels->emplace(label).first->c_str();
}

process_status status_of(const process& p) noexcept {
  auto s = p.obs_state.load(std::memory_order_relaxed);
  if (s == detail::obs_waiting && p.obs_blocking.load(std::memory_order_relaxed)) return process_status::blocking;
  switch (s) {
    case detail::obs_running: return process_status::running;
    case detail::obs_waiting: return process_status::waiting;
    case detail::obs_exiting: return process_status::exiting;
    default: return process_status::runnable;
  }
}

// Copies p's figures (p is pinned by the caller).
void fill_row(process_row& r, const process& p, pid id) {
  r.id = id;
  r.status = status_of(p);
  if (const char* l = p.obs_label.load(std::memory_order_relaxed)) r.label = l;
  r.initial_call = initial_call_of(p.obs_initial.load(std::memory_order_relaxed));
  if (detail::process_heap* h = p.heap.load(std::memory_order_acquire)) {
    r.heap_bytes = h->live.load(std::memory_order_relaxed);
    r.heap_peak_bytes = h->peak.load(std::memory_order_relaxed);
  }
  r.stack_bytes = p.obs_stack_bytes.load(std::memory_order_relaxed);
  r.message_queue_len = p.mbox.published_count.load(std::memory_order_relaxed);
  r.reductions = p.reductions_done.load(std::memory_order_relaxed);
  r.run_time = std::chrono::microseconds(p.obs_run_ns.load(std::memory_order_relaxed) / 1000);
  r.parent = pid::from_bits(p.obs_parent.load(std::memory_order_relaxed));
}

// Where each running process runs: read from the schedulers (a few), not
// kept per process (that was two stores in every turn).
std::unordered_map<const process*, int> running_on(detail::runtime_node& n) {
  std::unordered_map<const process*, int> on;
  const std::size_t count = std::min<std::size_t>(n.primaries() + n.spares_started.load(std::memory_order_acquire),
                                                  n.scheds.size());
  for (std::size_t i = 0; i < count; ++i) {
    detail::scheduler& s = *n.scheds[i];
    if (!(s.turn.load(std::memory_order_acquire) & 1)) continue;  // between turns
    if (process* p = s.running.load(std::memory_order_relaxed)) on[p] = int(i);
  }
  return on;
}

int scheduler_of(const std::unordered_map<const process*, int>& on, const process& p, process_status status) {
  if (status != process_status::running) return -1;
  auto it = on.find(&p);
  return it == on.end() ? -1 : it->second;
}

}  // namespace

std::vector<process_row> processes(runtime& rt) {
  detail::runtime_node& n = detail::runtime_access::of(rt);
  std::unordered_map<pid, std::string> names = n.names.names_by_pid();
  const auto on = running_on(n);
  std::vector<process_row> out;
  out.reserve(n.stats().processes + 16);
  const std::uint32_t high = n.table.high_water();
  const std::uint32_t node_id = n.table.node_id();
  for (std::uint32_t slot = 0; slot < high; ++slot) {
    process* p = n.table.at(slot);
    std::uint64_t life = p->life.load(std::memory_order_acquire);
    if (!(life & process::alive_bit)) continue;
    pid id(node_id, slot, std::uint32_t(life >> 32) & detail::process_table::gen_mask);
    process* pinned = n.table.acquire(id);
    if (!pinned) continue;  // ended meanwhile
    process_row& r = out.emplace_back();
    fill_row(r, *pinned, id);
    r.scheduler = scheduler_of(on, *pinned, r.status);
    if (auto it = names.find(id); it != names.end()) r.name = it->second;
    detail::release_ref(n, pinned);
  }
  return out;
}

std::optional<process_detail> process_info(runtime& rt, pid id, std::chrono::milliseconds wait) {
  detail::runtime_node& n = detail::runtime_access::of(rt);
  process* p = n.table.acquire(id);
  if (!p) return std::nullopt;
  process_detail d;
  fill_row(d, *p, id);
  d.scheduler = scheduler_of(running_on(n), *p, d.status);
  d.trap_exit = p->obs_trap_exit.load(std::memory_order_relaxed);
  detail::release_ref(n, p);
  {
    auto names = n.names.names_by_pid();
    if (auto it = names.find(id); it != names.end()) d.name = it->second;
  }
  std::shared_ptr<detail::inspect_request> req;
  {
    global_heap_scope runtime_owned;  // shared with the target
    req = std::make_shared<detail::inspect_request>();
  }
  if (!detail::send_inspect(n, id, req)) return d;
  std::unique_lock lock(req->mu);
  if (!req->cv.wait_for(lock, wait, [&] { return req->done; })) return d;
  if (req->known) {
    d.relations_known = true;
    d.trap_exit = req->trap_exit;
    d.links = req->links;
    d.monitors = req->monitors;
    d.monitored_by = req->monitored_by;
  }
  return d;
}

void set_label(std::string_view label) {
  process* p = detail::current_process();
  if (!p) throw error(errc::not_in_process, "set_label: called outside a process");
  p->obs_label.store(label.empty() ? nullptr : intern_label(label), std::memory_order_relaxed);
}

namespace {

// Per runtime: the figures of the last sample, for utilization between two.
struct last_sample {
  std::chrono::steady_clock::time_point at;
  std::vector<std::uint64_t> busy_ns;
};
std::mutex samples_mu;
std::unordered_map<const detail::runtime_node*, last_sample>* samples = nullptr;

std::size_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * std::size_t(::sysconf(_SC_PAGESIZE));
}

}  // namespace

runtime_sample sample(runtime& rt) {
  detail::runtime_node& n = detail::runtime_access::of(rt);
  runtime_sample out;
  out.at = std::chrono::steady_clock::now();
  out.uptime = out.at - n.started_at;
  out.os_pid = long(n.os_pid);
  out.stats = n.stats();
  const std::size_t count = n.primaries() + n.spares_started.load(std::memory_order_acquire);
  std::vector<std::uint64_t> busy(std::min(count, n.scheds.size()));
  for (std::size_t i = 0; i < busy.size(); ++i) {
    detail::scheduler& s = *n.scheds[i];
    busy[i] = s.busy_ns.load(std::memory_order_relaxed);
    out.messages_delivered += s.messages_in();
    out.reductions += s.reductions_spent();
  }
  last_sample previous;
  {
    std::lock_guard lock(samples_mu);
    if (!samples) samples = new std::unordered_map<const detail::runtime_node*, last_sample>();
    auto it = samples->find(&n);
    if (it != samples->end()) previous = it->second;
    else previous.at = n.started_at;
    (*samples)[&n] = {out.at, busy};
  }
  const double span_ns = double(std::chrono::duration_cast<std::chrono::nanoseconds>(out.at - previous.at).count());
  for (std::size_t i = 0; i < busy.size(); ++i) {
    detail::scheduler& s = *n.scheds[i];
    scheduler_row r;
    r.index = unsigned(i);
    r.spare = s.spare;
    r.active = !s.spare || (s.turn.load(std::memory_order_relaxed) & 1);
    std::uint64_t before = i < previous.busy_ns.size() ? previous.busy_ns[i] : 0;
    r.utilization = span_ns > 0 ? std::clamp(double(busy[i] - std::min(before, busy[i])) / span_ns, 0.0, 1.0) : 0;
    r.run_queue = s.rq.size();
    r.steals = s.steals.load(std::memory_order_relaxed);
    out.schedulers.push_back(r);
  }
  auto pool = n.blocking().usage();
  out.blocking_threads = pool.threads;
  out.blocking_busy = pool.busy;
  out.blocking_queued = pool.queued;
  out.memory_rss = resident_bytes();
  out.memory_heaps = out.stats.heap_segments_in_use * detail::segment_bytes;
  out.memory_stacks = n.stacks.mapped() * n.stacks.default_size();
  struct mallinfo2 mi = ::mallinfo2();
  out.memory_off_heap = mi.uordblks + mi.hblkhd;
  return out;
}

namespace {

void walk(tree_node& node, int depth) {
  if (depth > 32 || !node.id) return;  // a cycle cannot happen; a runaway depth can
  std::vector<supervisor::child_info> children;
  try {
    children = supervisor::which_children(node.id);
  } catch (const std::exception&) {
    return;  // it ended meanwhile
  }
  for (auto& c : children) {
    tree_node& child = node.children.emplace_back();
    child.id = c.child;
    child.child = c.id;
    child.supervisor = c.type == supervisor::child_type::supervisor;
    if (child.supervisor) walk(child, depth + 1);
  }
}

}  // namespace

std::vector<tree_node> supervision_tree(runtime& rt) {
  std::vector<application_root> roots = running_applications(rt);
  if (roots.empty()) return {};
  // which_children is a call: a process walks the tree.
  auto result = std::make_shared<std::promise<std::vector<tree_node>>>();
  auto fut = result->get_future();
  rt.spawn([roots, result] {
    std::vector<tree_node> tree;
    for (auto& r : roots) {
      tree_node& root = tree.emplace_back();
      root.id = r.top;
      root.child = r.name;
      root.supervisor = true;
      walk(root, 0);
    }
    global_heap_scope runtime_owned;  // read by the asking thread
    std::vector<tree_node> copy = tree;
    result->set_value(std::move(copy));
  });
  if (fut.wait_for(std::chrono::seconds(5)) != std::future_status::ready)
    throw error(errc::timed_out, "supervision_tree: the walk did not finish in 5 s");
  return fut.get();
}

}  // namespace ember::observe
