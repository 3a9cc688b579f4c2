// Per-process heaps: while a process runs, operator new (every form) is
// served by its own heap, counted by size class (process_info), capped by
// spawn_options::max_heap_bytes (passing it ends the process with heap_limit,
// without unwinding) and reclaimed whole when the process exits, however it
// exits. Blocks may be freed by any process or thread. global_heap_scope
// sends allocations to the global heap; messages are copied into the
// receiver's heap; ember::shared<T> lives outside every process heap and is
// freed once, by its last holder.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::exit_reason;
using ember::heap_block_size;
using ember::monitor_ref;
using ember::pid;

class heaps : public runtime_test {};

struct go {};
struct quit {};
struct ping {
  pid from;
  int n;
};
struct pong {
  int n;
};

// A value for ember::shared that counts its destructions.
std::atomic<int> payloads_destroyed{0};

struct counted_payload {
  std::string text;
  std::vector<int> numbers;
  counted_payload(std::size_t n, char c) : text(n, c), numbers(n, int(c)) {}
  counted_payload(const counted_payload&) = default;
  ~counted_payload() { payloads_destroyed.fetch_add(1); }
};

// Keeps the compiler from eliding an allocation whose result is unused.
inline void keep(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

// The calling process's live heap bytes and peak.
std::size_t live() { return ember::process_info(ember::self())->heap_bytes; }
std::size_t peak() { return ember::process_info(ember::self())->heap_peak_bytes; }

// Allocates 1000-byte blocks and never frees them, up to 64 MiB (far past
// every cap used here); returns only if no cap stopped it.
void allocate_past_the_limit() {
  for (int i = 0; i < 64 * 1024; ++i) {
    char* p = new char[1000];
    p[0] = char(i);
    keep(p);
  }
}


// The runtime's heap segments in use, once every process has exited and
// the segments of the last ones have gone back to the pool; false (and a
// failure printed by the caller) if they never come back to `before`.
bool segments_return_to(ember::runtime& rt, std::size_t before) {
  EXPECT_TRUE(rt.wait_for(hang_limit)) << "processes still alive";
  return eventually([&] { return rt.stats().heap_segments_in_use == before; });
}

// ------------------------------------------------------------ size classes

TEST(heap_block_sizes, are_16_byte_steps_then_four_classes_per_doubling_then_16_byte_rounding) {
  EXPECT_EQ(heap_block_size(1), 16u);
  EXPECT_EQ(heap_block_size(16), 16u);
  EXPECT_EQ(heap_block_size(17), 32u);
  EXPECT_EQ(heap_block_size(100), 112u);
  EXPECT_EQ(heap_block_size(128), 128u);
  EXPECT_EQ(heap_block_size(129), 160u);
  EXPECT_EQ(heap_block_size(160), 160u);
  EXPECT_EQ(heap_block_size(161), 192u);
  EXPECT_EQ(heap_block_size(200), 224u);
  EXPECT_EQ(heap_block_size(257), 320u);
  EXPECT_EQ(heap_block_size(1000), 1024u);
  EXPECT_EQ(heap_block_size(1025), 1280u);
  EXPECT_EQ(heap_block_size(5000), 5120u);
  EXPECT_EQ(heap_block_size(8192), 8192u);
  EXPECT_EQ(heap_block_size(8193), 8208u);
  EXPECT_EQ(heap_block_size(20000), 20000u);
  EXPECT_EQ(heap_block_size(20001), 20016u);
}

// ------------------------------------------------------------ accounting

const std::vector<std::size_t> sizes = {1,   16,   17,   100,  128,  129,  160,   161,   200,
                                        257, 1000, 1024, 1025, 5000, 8192, 8193, 20000, 100000};

struct size_deltas {
  std::vector<std::size_t> held;   // live bytes over the baseline while the blocks are held
  std::vector<std::size_t> freed;  // live bytes over the baseline after freeing them
};

std::vector<std::size_t> expected_held(std::size_t blocks) {
  std::vector<std::size_t> r;
  for (std::size_t s : sizes) r.push_back(blocks * heap_block_size(s));
  return r;
}

// For every size: allocates `blocks` blocks with alloc(s), measures, frees
// them with release(p), measures again.
template <class Alloc, class Release>
size_deltas measure_sizes(std::size_t blocks, Alloc alloc, Release release) {
  size_deltas d;
  d.held.reserve(sizes.size());
  d.freed.reserve(sizes.size());
  std::vector<void*> ptrs;
  ptrs.reserve(blocks);
  for (std::size_t s : sizes) {
    std::size_t base = live();
    for (std::size_t i = 0; i < blocks; ++i) {
      void* p = alloc(s);
      std::memset(p, 0xab, s);
      ptrs.push_back(p);
    }
    d.held.push_back(live() - base);
    for (void* p : ptrs) release(p);
    ptrs.clear();
    d.freed.push_back(live() - base);
  }
  return d;
}

TEST_P(heaps, operator_new_blocks_are_counted_by_size_class_and_uncounted_when_freed) {
  auto d = in_process(rt(), [] {
    return measure_sizes(10, [](std::size_t s) { return ::operator new(s); },
                         [](void* p) { ::operator delete(p); });
  });
  EXPECT_EQ(d.held, expected_held(10));
  EXPECT_EQ(d.freed, std::vector<std::size_t>(sizes.size(), 0));
}

TEST_P(heaps, array_new_blocks_are_counted_by_size_class_and_uncounted_when_freed) {
  auto d = in_process(rt(), [] {
    return measure_sizes(10, [](std::size_t s) -> void* { return new char[s]; },
                         [](void* p) { delete[] static_cast<char*>(p); });
  });
  EXPECT_EQ(d.held, expected_held(10));
  EXPECT_EQ(d.freed, std::vector<std::size_t>(sizes.size(), 0));
}

TEST_P(heaps, nothrow_new_blocks_are_counted_by_size_class_and_uncounted_when_freed) {
  auto d = in_process(rt(), [] {
    return measure_sizes(
        10,
        [](std::size_t s) -> void* {
          void* p = ::operator new(s, std::nothrow);
          if (!p) throw std::bad_alloc();
          return p;
        },
        [](void* p) { ::operator delete(p, std::nothrow); });
  });
  EXPECT_EQ(d.held, expected_held(10));
  EXPECT_EQ(d.freed, std::vector<std::size_t>(sizes.size(), 0));
}

TEST_P(heaps, nothrow_array_new_blocks_are_counted_by_size_class_and_uncounted_when_freed) {
  auto d = in_process(rt(), [] {
    return measure_sizes(
        10,
        [](std::size_t s) -> void* {
          char* p = new (std::nothrow) char[s];
          if (!p) throw std::bad_alloc();
          return p;
        },
        [](void* p) { delete[] static_cast<char*>(p); });
  });
  EXPECT_EQ(d.held, expected_held(10));
  EXPECT_EQ(d.freed, std::vector<std::size_t>(sizes.size(), 0));
}

TEST_P(heaps, many_blocks_of_one_size_are_counted_exactly) {
  struct result {
    std::size_t held_100, held_1000, held_20000, after;
  };
  auto r = in_process(rt(), [] {
    std::vector<char*> ptrs;
    ptrs.reserve(3000);
    result r{};
    std::size_t base = live();
    for (int i = 0; i < 1000; ++i) ptrs.push_back(new char[100]);
    r.held_100 = live() - base;
    for (int i = 0; i < 1000; ++i) ptrs.push_back(new char[1000]);
    r.held_1000 = live() - base;
    for (int i = 0; i < 1000; ++i) ptrs.push_back(new char[20000]);
    r.held_20000 = live() - base;
    for (char* p : ptrs) delete[] p;
    r.after = live() - base;
    return r;
  });
  EXPECT_EQ(r.held_100, 1000 * 112u);
  EXPECT_EQ(r.held_1000, 1000 * 112u + 1000 * 1024u);
  EXPECT_EQ(r.held_20000, 1000 * 112u + 1000 * 1024u + 1000 * 20000u);
  EXPECT_EQ(r.after, 0u);
}

TEST_P(heaps, aligned_new_is_served_by_the_process_heap_and_aligned) {
  struct result {
    std::size_t size, align, grew, after_free;
    bool aligned;
  };
  auto got = in_process(rt(), [] {
    std::vector<result> out;
    out.reserve(16);
    const std::pair<std::size_t, std::size_t> cases[] = {
        {24, 16}, {24, 32}, {100, 64}, {1000, 256}, {5000, 4096}, {20000, 64}, {20000, 4096}};
    for (auto [n, a] : cases) {
      std::size_t base = live();
      void* p = ::operator new(n, std::align_val_t(a));
      std::memset(p, 0x5a, n);
      std::size_t grew = live() - base;
      bool aligned = reinterpret_cast<std::uintptr_t>(p) % a == 0;
      ::operator delete(p, std::align_val_t(a));
      out.push_back({n, a, grew, live() - base, aligned});
    }
    // The array, nothrow and sized forms, and a new-expression of an
    // over-aligned type.
    struct alignas(128) wide {
      char bytes[300];
    };
    std::size_t base = live();
    void* p1 = ::operator new[](500, std::align_val_t(64));
    void* p2 = ::operator new(500, std::align_val_t(64), std::nothrow);
    void* p3 = ::operator new[](500, std::align_val_t(64), std::nothrow);
    wide* w = new wide;
    auto u = [](const void* p, std::size_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; };
    std::size_t grew = live() - base;
    bool aligned = u(p1, 64) && u(p2, 64) && u(p3, 64) && u(w, 128);
    ::operator delete[](p1, std::align_val_t(64));
    ::operator delete(p2, std::align_val_t(64), std::nothrow);
    ::operator delete[](p3, 500, std::align_val_t(64));
    delete w;
    out.push_back({3 * 500 + sizeof(wide), 64, grew, live() - base, aligned});
    return out;
  });
  ASSERT_EQ(got.size(), 8u);
  for (const result& r : got) {
    SCOPED_TRACE("size " + std::to_string(r.size) + " align " + std::to_string(r.align));
    EXPECT_TRUE(r.aligned);
    EXPECT_GE(r.grew, r.align <= 16 ? heap_block_size(r.size) : r.size) << "counted in the process heap";
    EXPECT_EQ(r.after_free, 0u);
  }
  // Alignment 16 is the plain case: counted by its size class exactly.
  EXPECT_EQ(got[0].grew, heap_block_size(24));
}

TEST_P(heaps, peak_stays_at_the_most_held_at_once) {
  struct result {
    std::size_t base, peak_before, held, peak_held, after, peak_after, peak_after_small;
  };
  auto r = in_process(rt(), [] {
    std::vector<char*> ptrs;
    ptrs.reserve(200);
    result r{};
    r.base = live();
    r.peak_before = peak();
    for (int i = 0; i < 100; ++i) ptrs.push_back(new char[1000]);
    r.held = live();
    r.peak_held = peak();
    for (char* p : ptrs) delete[] p;
    ptrs.clear();
    r.after = live();
    r.peak_after = peak();
    for (int i = 0; i < 10; ++i) ptrs.push_back(new char[1000]);
    for (char* p : ptrs) delete[] p;
    r.peak_after_small = peak();
    return r;
  });
  std::size_t top = r.base + 100 * 1024;
  EXPECT_GE(r.peak_before, r.base);
  EXPECT_EQ(r.held, top);
  EXPECT_EQ(r.peak_held, std::max(r.peak_before, top));
  EXPECT_EQ(r.after, r.base);
  EXPECT_EQ(r.peak_after, r.peak_held) << "the peak does not fall when blocks are freed";
  EXPECT_EQ(r.peak_after_small, r.peak_held) << "a smaller burst leaves the peak alone";
}

TEST_P(heaps, another_process_and_the_runtime_see_the_same_heap_figures) {
  oneshot<std::size_t> held;
  oneshot<std::size_t> seen_by_process;
  pid holder = rt().spawn([held] {
    std::vector<char*> ptrs;
    ptrs.reserve(50);
    for (int i = 0; i < 50; ++i) ptrs.push_back(new char[1000]);
    held.set(live());
    ember::receive([](go) {});
    for (char* p : ptrs) delete[] p;
  });
  std::size_t reported = held.get();
  EXPECT_GE(reported, 50 * 1024u);
  auto outside = rt().process_info(holder);
  ASSERT_TRUE(outside.has_value());
  EXPECT_EQ(outside->heap_bytes, reported);
  EXPECT_GE(outside->heap_peak_bytes, reported);
  EXPECT_EQ(outside->heap_limit_bytes, 0u);
  auto inside = in_process(rt(), [holder] { return ember::process_info(holder); });
  ASSERT_TRUE(inside.has_value());
  EXPECT_EQ(inside->heap_bytes, reported);
  rt().send(holder, go{});
}

// ------------------------------------------------------------ process_info

TEST_P(heaps, a_process_that_allocated_nothing_reports_an_empty_heap) {
  oneshot<void> waiting;
  watched fn = spawn_watched(rt(), [waiting] {
    waiting.set();
    ember::receive([](go) {});
  });
  waiting.get();
  auto info = rt().process_info(fn.id);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->heap_bytes, 0u);
  EXPECT_EQ(info->heap_peak_bytes, 0u);
  EXPECT_EQ(info->heap_limit_bytes, 0u);

  struct idle {
    void operator()(ember::message& m) {
      if (m.is<quit>()) ember::exit(exit_reason::normal());
    }
  };
  watched h = spawn_watched(rt(), ember::handler(idle{}));
  auto hinfo = rt().process_info(h.id);
  ASSERT_TRUE(hinfo.has_value());
  EXPECT_EQ(hinfo->heap_bytes, 0u);
  EXPECT_EQ(hinfo->heap_peak_bytes, 0u);

  rt().send(fn.id, go{});
  rt().send(h.id, quit{});
  EXPECT_TRUE(exit_of(fn).is_normal());
  EXPECT_TRUE(exit_of(h).is_normal());
}

TEST_P(heaps, process_info_of_a_dead_pid_is_nullopt) {
  watched w = spawn_watched(rt(), [] {
    std::vector<int> v(1000, 1);
    keep(v.data());
  });
  ASSERT_TRUE(exit_of(w).is_normal());
  EXPECT_FALSE(rt().process_info(w.id).has_value());
  bool inside = in_process(rt(), [d = w.id] { return ember::process_info(d).has_value(); });
  EXPECT_FALSE(inside);
  EXPECT_FALSE(rt().process_info(pid(0, 54321, 999)).has_value()) << "a pid that never existed";
}

TEST_P(heaps, process_info_reports_the_max_heap_bytes_spawn_option) {
  ember::spawn_options o;
  o.max_heap_bytes = 3 * 1024 * 1024;
  auto got = in_process(rt(), [] { return ember::process_info(ember::self())->heap_limit_bytes; }, o);
  EXPECT_EQ(got, 3u * 1024 * 1024);
  auto unlimited = in_process(rt(), [] { return ember::process_info(ember::self())->heap_limit_bytes; });
  EXPECT_EQ(unlimited, 0u);
}

TEST_P(heaps, a_new_process_starts_with_an_empty_heap_after_a_leaky_one_exits) {
  watched leaker = spawn_watched(rt(), [] {
    for (int i = 0; i < 4096; ++i) keep(new char[1000]);
  });
  ASSERT_TRUE(exit_of(leaker).is_normal());
  struct result {
    std::size_t heap, peak, grew;
  };
  for (int round = 0; round < 4; ++round) {
    auto r = in_process(rt(), [] {
      result r{live(), peak(), 0};
      std::size_t base = live();
      int* p = new int(7);
      keep(p);
      r.grew = live() - base;
      delete p;
      return r;
    });
    EXPECT_LT(r.heap, 4096u * 1024) << "no bytes inherited from the leaker";
    EXPECT_LT(r.peak, 4096u * 1024) << "no peak inherited from the leaker";
    EXPECT_EQ(r.grew, 16u);
  }
}

// ------------------------------------------------------------ max_heap_bytes

TEST_P(heaps, passing_max_heap_bytes_ends_the_process_with_heap_limit_without_unwinding) {
  destructor_counter dtors = destructor_counter::for_abandoned_stack();
  ember::spawn_options o;
  o.max_heap_bytes = 256 * 1024;
  watched w = spawn_watched(
      rt(),
      [dtors] {
        auto on_stack = dtors.make();
        allocate_past_the_limit();
        ember::exit("survived the heap limit");
      },
      o);
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), exit_reason::kind::heap_limit) << r;
  EXPECT_EQ(dtors.value(), 0) << "the stack of a process over its heap limit is not unwound";
  EXPECT_FALSE(rt().process_info(w.id).has_value());
}

TEST_P(heaps, heap_limit_reaches_a_linked_process_that_traps_exits) {
  struct result {
    bool from_child;
    exit_reason::kind kind;
  };
  auto got = in_process(rt(), [] {
    ember::trap_exit(true);
    ember::spawn_options o;
    o.max_heap_bytes = 128 * 1024;
    pid child = ember::spawn_link([] { allocate_past_the_limit(); }, o);
    return ember::receive([child](const ember::exit_signal& s) {
      return result{s.from == child, s.reason.what_kind()};
    });
  });
  EXPECT_TRUE(got.from_child);
  EXPECT_EQ(got.kind, exit_reason::kind::heap_limit);
}

TEST_P(heaps, heap_limit_ends_only_the_process_that_passed_it) {
  watched bystander = spawn_watched(rt(), [] {
    for (bool on = true; on;) {
      ember::receive([](ping p) { ember::send(p.from, pong{p.n}); }, [&](quit) { on = false; });
    }
  });
  ember::spawn_options o;
  o.max_heap_bytes = 512 * 1024;
  watched hog = spawn_watched(rt(), [] { allocate_past_the_limit(); }, o);
  EXPECT_EQ(exit_of(hog).what_kind(), exit_reason::kind::heap_limit);

  EXPECT_TRUE(rt().is_alive(bystander.id));
  int answer = in_process(rt(), [b = bystander.id] {
    ember::send(b, ping{ember::self(), 41});
    return ember::receive([](pong p) { return p.n; });
  });
  EXPECT_EQ(answer, 41) << "a bystander keeps answering";
  // The node is up: new processes run, and may allocate freely.
  std::size_t big = in_process(rt(), [] {
    std::vector<char> v(8 * 1024 * 1024, 'x');
    return std::size_t(std::count(v.begin(), v.end(), 'x'));
  });
  EXPECT_EQ(big, 8u * 1024 * 1024);
  rt().send(bystander.id, quit{});
  EXPECT_TRUE(exit_of(bystander).is_normal());
}

TEST_P(heaps, a_process_under_its_limit_runs_to_completion) {
  ember::spawn_options o;
  o.max_heap_bytes = 1024 * 1024;
  auto got = in_process(
      rt(),
      [] {
        // Churns far more than the cap in total, never holding more than ~100 KiB.
        std::size_t total = 0;
        for (int round = 0; round < 200; ++round) {
          std::vector<std::string> v;
          for (int i = 0; i < 100; ++i) v.emplace_back(900, 'a');
          total += v.size() * v.back().size();
        }
        return total;
      },
      o);
  EXPECT_EQ(got, 200u * 100 * 900);
}

TEST_P(heaps, a_process_may_hold_up_to_max_heap_bytes_and_no_more) {
  constexpr std::size_t cap = 100 * 1024;
  ember::spawn_options o;
  o.max_heap_bytes = cap;
  oneshot<std::size_t> filled;
  watched w = spawn_watched(
      rt(),
      [filled] {
        std::vector<char*> ptrs;
        ptrs.reserve(200);
        while (live() + 1024 <= cap) ptrs.push_back(new char[1000]);
        filled.set(live());
        ember::receive([](go) {});
        keep(new char[1000]);  // one block past the cap
        ember::exit("survived one block past its heap limit");
      },
      o);
  std::size_t held = filled.get();
  EXPECT_LE(held, cap);
  EXPECT_GT(held + 1024, cap);
  EXPECT_TRUE(rt().is_alive(w.id)) << "at the cap, not past it";
  rt().send(w.id, go{});
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), exit_reason::kind::heap_limit) << r;
}

TEST_P(heaps, a_message_that_takes_the_receiver_past_its_limit_ends_it_with_heap_limit) {
  ember::spawn_options o;
  o.max_heap_bytes = 64 * 1024;
  destructor_counter dtors = destructor_counter::for_abandoned_stack();
  watched w = spawn_watched(
      rt(),
      [dtors] {
        auto on_stack = dtors.make();
        ember::receive([](go) {});
        ember::exit("survived a message bigger than its heap limit");
      },
      o);
  rt().send(w.id, std::string(1024 * 1024, 'z'));
  rt().send(w.id, go{});
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), exit_reason::kind::heap_limit) << r;
  EXPECT_EQ(dtors.value(), 0);
}

TEST_P(heaps, messages_pending_when_a_message_passes_the_heap_limit_are_destroyed) {
  // The receiver takes in three messages at once: a string too big for its
  // heap, then one holding the last reference to a shared value, then go.
  // It ends with heap_limit while copying the first; the runtime still
  // owns the two behind it and must destroy them (dropping the reference).
  payloads_destroyed.store(0);
  ember::spawn_options o;
  o.max_heap_bytes = 64 * 1024;
  oneshot<void> ready;
  oneshot<void> sent;
  watched w = spawn_watched(
      rt(),
      [ready, sent] {
        ready.set();
        // Not a receive, nor a yield (both take the mailbox in): the three
        // messages must arrive together.
        while (!sent.ready()) std::this_thread::yield();
        ember::receive([](go) {});
        ember::exit("survived a message bigger than its heap limit");
      },
      o);
  ready.get();
  rt().send(w.id, std::string(1024 * 1024, 'z'));
  rt().send(w.id, ember::shared<counted_payload>::make(100, 'x'));
  rt().send(w.id, go{});
  sent.set();
  exit_reason r = exit_of(w);
  EXPECT_EQ(r.what_kind(), exit_reason::kind::heap_limit) << r;
  EXPECT_TRUE(rt().wait_for(hang_limit));
  EXPECT_TRUE(eventually([] { return payloads_destroyed.load() == 1; }, 2s))
      << "a message the process never took in still holds the last reference to a shared value: "
      << payloads_destroyed.load() << " destroyed";
}

// ------------------------------------------------------------ reclaim

enum class ending { normal, exception, kill, heap_limit };

// A process leaks 10,000 `new int[4]` (160 KB: three segments at least),
// then ends as `how`: its segments go back.
void leaked_blocks_are_reclaimed(ember::runtime& rt, ending how) {
  const std::size_t before = rt.stats().heap_segments_in_use;
  oneshot<std::size_t> leaked;
  ember::spawn_options o;
  if (how == ending::heap_limit) o.max_heap_bytes = 1024 * 1024;
  watched w = spawn_watched(
      rt,
      [leaked, how] {
        std::size_t base = live();
        for (int i = 0; i < 10'000; ++i) {
          int* p = new int[4]{i, i, i, i};
          keep(p);
        }
        leaked.set(live() - base);
        ember::receive([](go) {});
        switch (how) {
          case ending::normal: return;
          case ending::exception: throw std::runtime_error("leaky and failing");
          case ending::kill: ember::receive([](quit) {}); return;  // killed while waiting
          case ending::heap_limit: allocate_past_the_limit(); return;
        }
      },
      o);
  EXPECT_EQ(leaked.get(), 10'000 * 16u);
  EXPECT_GE(rt.stats().heap_segments_in_use, before + 3) << "the leaked blocks hold segments";
  rt.send(w.id, go{});
  if (how == ending::kill) {
    in_process(rt, [t = w.id] { ember::exit(t, exit_reason::kill()); });
  }
  exit_reason r = exit_of(w);
  switch (how) {
    case ending::normal: EXPECT_TRUE(r.is_normal()) << r; break;
    case ending::exception: EXPECT_EQ(r.what_kind(), exit_reason::kind::exception) << r; break;
    case ending::kill: EXPECT_EQ(r.what_kind(), exit_reason::kind::killed) << r; break;
    case ending::heap_limit: EXPECT_EQ(r.what_kind(), exit_reason::kind::heap_limit) << r; break;
  }
  EXPECT_TRUE(segments_return_to(rt, before))
      << "segments in use: " << rt.stats().heap_segments_in_use << ", before: " << before;
}

TEST_P(heaps, blocks_leaked_by_a_process_that_returns_are_reclaimed) {
  leaked_blocks_are_reclaimed(rt(), ending::normal);
}

TEST_P(heaps, blocks_leaked_by_a_process_that_throws_are_reclaimed) {
  leaked_blocks_are_reclaimed(rt(), ending::exception);
}

TEST_P(heaps, blocks_leaked_by_a_killed_process_are_reclaimed) {
  leaked_blocks_are_reclaimed(rt(), ending::kill);
}

TEST_P(heaps, blocks_leaked_by_a_process_over_its_heap_limit_are_reclaimed) {
  leaked_blocks_are_reclaimed(rt(), ending::heap_limit);
}

TEST_P(heaps, a_container_never_deleted_is_reclaimed_with_its_process) {
  const std::size_t before = rt().stats().heap_segments_in_use;
  oneshot<std::size_t> held;
  watched w = spawn_watched(rt(), [held] {
    auto* words = new std::vector<std::string>;  // never deleted
    for (int i = 0; i < 10'000; ++i) words->emplace_back(100, char('a' + i % 26));
    held.set(live());
    ember::receive([](go) {});
  });
  EXPECT_GE(held.get(), 10'000u * 112);
  EXPECT_GE(rt().stats().heap_segments_in_use, before + 10'000u * 112 / (64 * 1024));
  rt().send(w.id, go{});
  EXPECT_TRUE(exit_of(w).is_normal());
  EXPECT_TRUE(segments_return_to(rt(), before))
      << "segments in use: " << rt().stats().heap_segments_in_use << ", before: " << before;
}

TEST_P(heaps, a_killed_process_holding_a_million_blocks_gives_its_segments_back) {
  const std::size_t blocks = EMBER_TEST_SANITIZED ? 100'000 : 1'000'000;
  const std::size_t before = rt().stats().heap_segments_in_use;
  oneshot<void> full;
  watched w = spawn_watched(rt(), [full, blocks] {
    for (std::size_t i = 0; i < blocks; ++i) keep(new int(int(i)));
    full.set();
    ember::receive([](quit) {});
  });
  full.get();
  auto info = rt().process_info(w.id);
  ASSERT_TRUE(info.has_value());
  EXPECT_GE(info->heap_bytes, blocks * 16);
  EXPECT_GE(rt().stats().heap_segments_in_use, before + blocks * 16 / (64 * 1024));
  in_process(rt(), [t = w.id] { ember::exit(t, exit_reason::kill()); });
  EXPECT_EQ(exit_of(w).what_kind(), exit_reason::kind::killed);
  EXPECT_TRUE(segments_return_to(rt(), before))
      << "segments in use: " << rt().stats().heap_segments_in_use << ", before: " << before;
}

// ------------------------------------------------------------ foreign frees

constexpr std::size_t block_bytes_of(std::size_t i) {
  constexpr std::size_t pick[] = {16, 100, 1000, 5000, 20000};
  return pick[i % 5];
}

inline unsigned char pattern_of(std::uintptr_t a) { return static_cast<unsigned char>((a >> 4) * 31 + 7); }

// Writes a pattern derived from its address over the first and last 256
// bytes of the block (all of a small one); intact() checks it.
void fill(void* p, std::size_t n) {
  auto* b = static_cast<unsigned char*>(p);
  unsigned char v = pattern_of(reinterpret_cast<std::uintptr_t>(p));
  std::size_t edge = std::min<std::size_t>(n, 256);
  std::memset(b, v, edge);
  std::memset(b + n - edge, v, edge);
}
bool intact(const void* p, std::size_t n) {
  auto* b = static_cast<const unsigned char*>(p);
  unsigned char want = pattern_of(reinterpret_cast<std::uintptr_t>(p));
  std::size_t edge = std::min<std::size_t>(n, 256);
  for (std::size_t i = 0; i < edge; ++i)
    if (b[i] != want || b[n - edge + i] != want) return false;
  return true;
}

// Allocates and frees `count` blocks of `bytes` (the pointers go in `room`,
// reserved beforehand): enough to pass through the allocation slow path,
// where frees made by others are applied.
void churn(std::vector<void*>& room, std::size_t count, std::size_t bytes) {
  for (std::size_t i = 0; i < count; ++i) room.push_back(::operator new(bytes));
  for (void* p : room) ::operator delete(p);
  room.clear();
}

struct to_free {
  pid from;
  std::vector<std::uintptr_t> blocks;  // block i is block_bytes_of(i) bytes
};
struct freed {
  bool intact;
  bool freer_heap_unchanged;
};

// Frees the blocks of every to_free it receives, then replies; until quit.
void freer() {
  for (bool on = true; on;) {
    ember::receive(
        [](const to_free& m) {
          bool ok = true;
          std::size_t before = live();
          for (std::size_t i = 0; i < m.blocks.size(); ++i) {
            void* p = reinterpret_cast<void*>(m.blocks[i]);
            ok = ok && intact(p, block_bytes_of(i));
            ::operator delete(p);
          }
          ember::send(m.from, freed{ok, live() == before});
        },
        [&](quit) { on = false; });
  }
}

TEST_P(heaps, blocks_freed_by_another_process_are_given_back_to_their_owner) {
  struct result {
    std::size_t held, after_churn;
    freed f;
  };
  auto r = in_process(rt(), [] {
    const std::size_t k = 1000;
    std::vector<std::uintptr_t> blocks;
    blocks.reserve(k);
    std::vector<void*> room;
    room.reserve(100'000);
    pid other = ember::spawn(freer);
    result r{};
    std::size_t base = live();
    for (std::size_t i = 0; i < k; ++i) {
      void* p = ::operator new(block_bytes_of(i));
      fill(p, block_bytes_of(i));
      blocks.push_back(reinterpret_cast<std::uintptr_t>(p));
    }
    r.held = live() - base;
    ember::send(other, to_free{ember::self(), blocks});
    r.f = ember::receive([](freed f) { return f; });
    ember::send(other, quit{});
    churn(room, 100'000, 100);  // the owner keeps allocating, and takes its blocks back
    r.after_churn = live() - base;
    return r;
  });
  std::size_t expected = 0;
  for (std::size_t i = 0; i < 1000; ++i) expected += heap_block_size(block_bytes_of(i));
  EXPECT_EQ(r.held, expected);
  EXPECT_TRUE(r.f.intact) << "the freer saw the owner's data";
  EXPECT_TRUE(r.f.freer_heap_unchanged) << "freeing another's blocks leaves the freer's count alone";
  EXPECT_EQ(r.after_churn, 0u) << "the remote frees were applied to the owner";
}

TEST_P(heaps, blocks_freed_by_a_thread_outside_processes_are_given_back_to_their_owner) {
  oneshot<std::vector<std::uintptr_t>> handed;
  oneshot<std::pair<std::size_t, std::size_t>> result;  // held, after churn
  pid owner = rt().spawn([handed, result] {
    const std::size_t k = 1000;
    std::vector<std::uintptr_t> blocks;
    blocks.reserve(k);
    std::vector<void*> room;
    room.reserve(100'000);
    std::size_t base = live();
    for (std::size_t i = 0; i < k; ++i) {
      void* p = ::operator new(block_bytes_of(i));
      fill(p, block_bytes_of(i));
      blocks.push_back(reinterpret_cast<std::uintptr_t>(p));
    }
    std::size_t held = live() - base;
    handed.set(blocks);
    ember::receive([](go) {});
    churn(room, 100'000, 100);
    result.set({held, live() - base});
  });
  std::vector<std::uintptr_t> blocks = handed.get();
  ASSERT_EQ(blocks.size(), 1000u);
  bool all_intact = true;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    void* p = reinterpret_cast<void*>(blocks[i]);
    all_intact = all_intact && intact(p, block_bytes_of(i));
    ::operator delete(p);
  }
  EXPECT_TRUE(all_intact);
  rt().send(owner, go{});
  auto [held, after] = result.get();
  std::size_t expected = 0;
  for (std::size_t i = 0; i < 1000; ++i) expected += heap_block_size(block_bytes_of(i));
  EXPECT_EQ(held, expected);
  EXPECT_EQ(after, 0u) << "the thread's frees were applied to the owner";
}

// Producers allocate batches of mixed sizes, two in flight at a time, and
// hand them to a freer on another scheduler while they keep allocating and
// freeing locally; at the end each producer's live bytes are back to its
// baseline.
TEST_P(heaps, stress_many_processes_freeing_each_others_blocks_concurrently) {
  const int producers = EMBER_TEST_SANITIZED ? 4 : 8;
  const int rounds = EMBER_TEST_SANITIZED ? 30 : 150;
  const std::size_t per_batch = EMBER_TEST_SANITIZED ? 40 : 80;
  struct report {
    std::size_t after_churn;
    bool all_intact;
    bool freers_unchanged;
  };
  inbox<report> reports;
  const unsigned n = rt().schedulers();
  for (int i = 0; i < producers; ++i) {
    ember::spawn_options at;
    at.scheduler = int(unsigned(i) % n);
    ember::spawn_options other;
    other.scheduler = int(unsigned(i + 1) % n);
    pid f = rt().spawn(freer, other);
    rt().spawn(
        [f, reports, rounds, per_batch] {
          std::vector<void*> room;
          room.reserve(10'000);
          std::vector<void*> local;
          local.reserve(per_batch);
          std::vector<std::uintptr_t> blocks;
          blocks.reserve(per_batch);
          report rep{0, true, true};
          auto take_reply = [&] {
            freed r = ember::receive([](freed x) { return x; });
            rep.all_intact = rep.all_intact && r.intact;
            rep.freers_unchanged = rep.freers_unchanged && r.freer_heap_unchanged;
          };
          std::size_t base = live();
          for (int round = 0; round < rounds; ++round) {
            for (std::size_t i = 0; i < per_batch; ++i) {
              void* p = ::operator new(block_bytes_of(i));
              fill(p, block_bytes_of(i));
              blocks.push_back(reinterpret_cast<std::uintptr_t>(p));
              local.push_back(::operator new(block_bytes_of(i + 2)));
            }
            ember::send(f, to_free{ember::self(), blocks});
            blocks.clear();
            for (void* p : local) ::operator delete(p);
            local.clear();
            if (round > 0) take_reply();  // two batches in flight
          }
          take_reply();
          ember::send(f, quit{});
          churn(room, 10'000, 100);
          rep.after_churn = live() - base;
          reports.put(rep);
        },
        at);
  }
  for (int i = 0; i < producers; ++i) {
    report r = reports.take();
    EXPECT_TRUE(r.all_intact);
    EXPECT_TRUE(r.freers_unchanged);
    EXPECT_EQ(r.after_churn, 0u);
  }
}

// ------------------------------------------------------------ the global heap

TEST_P(heaps, a_block_from_outside_processes_can_be_freed_inside_one) {
  auto* s = new std::string(500, 'y');
  auto* raw = new char[20000];
  std::memset(raw, 'r', 20000);
  struct result {
    bool read_ok;
    std::size_t change;
  };
  auto r = in_process(rt(), [a = reinterpret_cast<std::uintptr_t>(s), b = reinterpret_cast<std::uintptr_t>(raw)] {
    auto* s = reinterpret_cast<std::string*>(a);
    auto* raw = reinterpret_cast<char*>(b);
    bool ok = s->size() == 500 && s->find_first_not_of('y') == std::string::npos && raw[0] == 'r' &&
              raw[19999] == 'r';
    std::size_t base = live();
    delete s;
    delete[] raw;
    return result{ok, live() - base};
  });
  EXPECT_TRUE(r.read_ok);
  EXPECT_EQ(r.change, 0u) << "freeing a global block leaves the process heap alone";
}

TEST_P(heaps, a_global_heap_scope_block_outlives_its_process) {
  oneshot<std::uintptr_t> handed;
  watched w = spawn_watched(rt(), [handed] {
    std::string* s;
    {
      ember::global_heap_scope global;
      s = new std::string(200, 'x');
    }
    // The process's own heap is busy meanwhile, and goes when it exits.
    for (int i = 0; i < 1000; ++i) keep(new char[200]);
    handed.set(reinterpret_cast<std::uintptr_t>(s));
  });
  std::uintptr_t a = handed.get();
  ASSERT_TRUE(exit_of(w).is_normal());
  // Other processes reuse the reclaimed segments and scribble over them.
  in_process(rt(), [] {
    for (int i = 0; i < 4000; ++i) {
      char* p = new char[200];
      std::memset(p, '#', 200);
      keep(p);
    }
  });
  auto* s = reinterpret_cast<std::string*>(a);
  EXPECT_EQ(*s, std::string(200, 'x'));
  delete s;
}

TEST_P(heaps, allocations_in_a_global_heap_scope_are_not_counted_and_free_anywhere) {
  struct result {
    std::size_t in_scope, freed_outside, own_freed_in_scope, own_after_churn;
  };
  auto r = in_process(rt(), [] {
    std::vector<void*> room;
    room.reserve(100'000);
    result r{};
    std::size_t base = live();
    std::vector<std::string>* v;
    {
      ember::global_heap_scope global;
      v = new std::vector<std::string>(100, std::string(300, 'g'));
      r.in_scope = live() - base;
    }
    delete v;  // a global block freed outside the scope
    r.freed_outside = live() - base;
    // And a process block freed inside a scope: applied to the heap later.
    auto* own = new std::string(300, 'o');
    {
      ember::global_heap_scope global;
      delete own;
      r.own_freed_in_scope = live() - base;
    }
    churn(room, 100'000, 100);
    r.own_after_churn = live() - base;
    return r;
  });
  EXPECT_EQ(r.in_scope, 0u);
  EXPECT_EQ(r.freed_outside, 0u);
  EXPECT_EQ(r.own_after_churn, 0u);
  (void)r.own_freed_in_scope;  // lazily applied: either figure is correct
}

TEST_P(heaps, a_global_heap_scope_in_another_process_frees_blocks_made_in_one) {
  // A global block made in a scope of one process, freed by a second
  // process outside any scope.
  auto got = in_process(rt(), [] {
    std::string* s;
    {
      ember::global_heap_scope global;
      s = new std::string(1000, 'k');
    }
    pid other = ember::spawn([] {
      ember::receive([](std::pair<pid, std::uintptr_t> m) {
        auto* s = reinterpret_cast<std::string*>(m.second);
        bool ok = s->size() == 1000 && s->find_first_not_of('k') == std::string::npos;
        std::size_t base = live();
        delete s;
        ember::send(m.first, std::pair<bool, bool>{ok, live() == base});
      });
    });
    ember::send(other, std::pair<pid, std::uintptr_t>{ember::self(), reinterpret_cast<std::uintptr_t>(s)});
    return ember::receive([](std::pair<bool, bool> r) { return r; });
  });
  EXPECT_TRUE(got.first) << "the value arrived intact";
  EXPECT_TRUE(got.second) << "freeing it did not touch the freer's heap";
}

TEST_P(heaps, a_global_heap_scope_survives_suspension) {
  struct result {
    std::size_t after_resume_in_scope, after_scope;
  };
  oneshot<void> waiting;
  oneshot<result> done;
  pid p = rt().spawn([waiting, done] {
    std::vector<char*> held;
    held.reserve(20);
    result r{};
    std::size_t base = live();
    {
      ember::global_heap_scope global;
      waiting.set();
      ember::receive([](go) {});  // suspends: may resume on another scheduler
      for (int i = 0; i < 10; ++i) held.push_back(new char[1000]);
      r.after_resume_in_scope = live() - base;
      ember::yield();
      for (char* c : held) delete[] c;
      held.clear();
    }
    for (int i = 0; i < 10; ++i) held.push_back(new char[1000]);
    r.after_scope = live() - base;
    for (char* c : held) delete[] c;
    done.set(r);
  });
  waiting.get();
  rt().send(p, go{});
  result r = done.get();
  EXPECT_EQ(r.after_resume_in_scope, 0u) << "still global after the receive";
  EXPECT_EQ(r.after_scope, 10 * 1024u) << "back in the process heap once the scope ends";
}

TEST_P(heaps, global_heap_scopes_nest) {
  struct result {
    std::size_t outer, inner, outer_again, none;
  };
  auto r = in_process(rt(), [] {
    std::vector<void*> ptrs;
    ptrs.reserve(8);
    std::vector<void*> globals;
    globals.reserve(8);
    result r{};
    std::size_t base = live();
    {
      ember::global_heap_scope outer;
      globals.push_back(::operator new(1000));
      r.outer = live() - base;
      {
        ember::global_heap_scope inner;
        globals.push_back(::operator new(1000));
        r.inner = live() - base;
      }
      globals.push_back(::operator new(1000));
      r.outer_again = live() - base;
    }
    ptrs.push_back(::operator new(1000));
    r.none = live() - base;
    for (void* p : ptrs) ::operator delete(p);
    for (void* p : globals) ::operator delete(p);
    return r;
  });
  EXPECT_EQ(r.outer, 0u);
  EXPECT_EQ(r.inner, 0u);
  EXPECT_EQ(r.outer_again, 0u) << "closing the inner scope keeps the outer one";
  EXPECT_EQ(r.none, 1024u) << "closing the outer scope goes back to the process heap";
}

// ------------------------------------------------------------ messages

TEST_P(heaps, a_message_is_copied_into_the_receivers_heap_not_the_senders) {
  struct receiver_view {
    std::size_t with_message, after_taking_it;
    bool intact;
  };
  struct result {
    std::size_t sender_change;
    receiver_view r;
  };
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    pid receiver = ember::spawn([me] {
      std::size_t base = live();
      ember::send(me, go{});  // ready
      ember::receive([](go) {});  // the string, sent before go, is taken in by now
      receiver_view v{};
      v.with_message = live() - base;
      std::size_t queued = ember::message_queue_len();
      v.intact = ember::receive([](const std::string& s) { return s == std::string(1000, 'm'); }) && queued == 1;
      v.after_taking_it = live() - base;
      ember::send(me, v);
    });
    std::string text(1000, 'm');
    ember::receive([](go) {});
    std::size_t before = live();
    ember::send(receiver, text);
    ember::send(receiver, go{});
    result r{};
    r.sender_change = live() - before;
    r.r = ember::receive([](receiver_view v) { return v; });
    return r;
  });
  EXPECT_EQ(got.sender_change, 0u) << "the sender's heap is not charged for the copy";
  EXPECT_TRUE(got.r.intact);
  EXPECT_GE(got.r.with_message, heap_block_size(1001)) << "the copy is in the receiver's heap";
  EXPECT_LE(got.r.with_message, heap_block_size(1001) + 256);
  EXPECT_EQ(got.r.after_taking_it, 0u) << "and leaves it once received";
}

TEST_P(heaps, a_message_is_taken_into_the_receivers_heap_by_message_queue_len) {
  oneshot<void> ready;
  oneshot<void> sent;
  oneshot<std::pair<std::size_t, std::size_t>> result;  // queue length, heap growth
  pid p = rt().spawn([ready, sent, result] {
    std::size_t base = live();
    ready.set();
    while (!sent.ready()) ember::yield();  // no receive: the mailbox is left alone
    std::size_t q = ember::message_queue_len();  // takes the string in
    result.set({q, live() - base});
    ember::receive([](const std::string&) {});
  });
  ready.get();
  rt().send(p, std::string(1000, 'q'));
  sent.set();
  auto [queued, grew] = result.get();
  EXPECT_EQ(queued, 1u);
  EXPECT_GE(grew, heap_block_size(1001)) << "the copy is in the receiver's heap";
  EXPECT_LE(grew, heap_block_size(1001) + 256);
}

TEST_P(heaps, a_message_moved_by_a_sender_that_then_exits_stays_intact) {
  auto got = in_process(rt(), [] {
    pid me = ember::self();
    monitor_ref ref = ember::spawn_monitor([me] {
      std::string text(5000, 's');
      for (std::size_t i = 0; i < text.size(); i += 7) text[i] = char('a' + i % 26);
      std::vector<std::string> words(50, std::string(100, 'w'));
      ember::send(me, std::move(text));
      ember::send(me, std::move(words));
    }).second;
    ember::receive(ember::when([ref](const ember::down& d) { return d.ref == ref; }, [](ember::down) {}));
    // The sender's segments go to other processes, which write over them.
    pid scribbler = ember::spawn([me] {
      for (int i = 0; i < 2000; ++i) {
        char* p = new char[5000];
        std::memset(p, '#', 5000);
        keep(p);
      }
      ember::send(me, go{});
    });
    (void)scribbler;
    ember::receive([](go) {});
    std::string expected(5000, 's');
    for (std::size_t i = 0; i < expected.size(); i += 7) expected[i] = char('a' + i % 26);
    bool text_ok = ember::receive([&](const std::string& s) { return s == expected; });
    bool words_ok = ember::receive([](const std::vector<std::string>& w) {
      return w == std::vector<std::string>(50, std::string(100, 'w'));
    });
    return text_ok && words_ok;
  });
  EXPECT_TRUE(got);
}

// ------------------------------------------------------------ ember::shared

static_assert(!ember::detail::sendable_value<std::unique_ptr<int>>);
static_assert(ember::detail::sendable_value<ember::shared<std::unique_ptr<int>>>);
static_assert(ember::detail::sendable_value<ember::shared<counted_payload>>);

struct holder_report {
  std::uintptr_t address;
  bool intact;
};

// Holders get a copy each and drop it, one at a time, in `order`; the
// value is destroyed exactly once, when the last copy goes.
void shared_value_dies_with_its_last_holder(ember::runtime& rt, std::vector<int> order, bool test_thread_last) {
  payloads_destroyed.store(0);
  inbox<holder_report> reports;
  std::vector<watched> holders;
  for (std::size_t i = 0; i < order.size(); ++i) {
    holders.push_back(spawn_watched(rt, [reports] {
      ember::receive([&](ember::shared<counted_payload> v) {
        reports.put({reinterpret_cast<std::uintptr_t>(v.get()),
                     v->text == std::string(300, 'p') && v->numbers == std::vector<int>(300, int('p'))});
        ember::receive([](go) {});  // then drop it, by returning
      });
    }));
  }
  auto value = ember::shared<counted_payload>::make(300, 'p');
  const auto address = reinterpret_cast<std::uintptr_t>(value.get());
  for (watched& h : holders) rt.send(h.id, value);
  for (std::size_t i = 0; i < holders.size(); ++i) {
    holder_report r = reports.take();
    EXPECT_EQ(r.address, address) << "every holder sees the same value";
    EXPECT_TRUE(r.intact);
  }
  if (!test_thread_last) value.reset();
  for (std::size_t k = 0; k < order.size(); ++k) {
    watched& h = holders[std::size_t(order[k])];
    EXPECT_EQ(payloads_destroyed.load(), 0) << "destroyed before its last holder dropped it";
    rt.send(h.id, go{});
    EXPECT_TRUE(exit_of(h).is_normal());
  }
  if (test_thread_last) {
    EXPECT_EQ(payloads_destroyed.load(), 0);
    value.reset();
  }
  EXPECT_TRUE(rt.wait_for(hang_limit));
  EXPECT_EQ(payloads_destroyed.load(), 1) << "destroyed exactly once";
}

TEST_P(heaps, shared_value_is_destroyed_once_by_the_last_holder_in_order) {
  shared_value_dies_with_its_last_holder(rt(), {0, 1, 2, 3}, false);
}

TEST_P(heaps, shared_value_is_destroyed_once_by_the_last_holder_in_reverse_order) {
  shared_value_dies_with_its_last_holder(rt(), {3, 2, 1, 0}, false);
}

TEST_P(heaps, shared_value_is_destroyed_once_by_the_last_holder_in_mixed_order) {
  shared_value_dies_with_its_last_holder(rt(), {2, 0, 3, 1}, false);
}

TEST_P(heaps, shared_value_is_destroyed_once_when_a_thread_drops_it_last) {
  shared_value_dies_with_its_last_holder(rt(), {1, 3, 0, 2}, true);
}

TEST_P(heaps, shared_value_made_in_a_process_outlives_it) {
  payloads_destroyed.store(0);
  ember::shared<std::vector<int>> v;
  ember::shared<counted_payload> c;
  {
    oneshot<ember::shared<std::vector<int>>> handed;
    oneshot<ember::shared<counted_payload>> handed_counted;
    watched maker = spawn_watched(rt(), [handed, handed_counted] {
      std::vector<int> local(10'000, 7);
      handed.set(ember::share(local));
      handed_counted.set(ember::shared<counted_payload>::make(2000, 'c'));
    });
    ASSERT_TRUE(exit_of(maker).is_normal());
    v = handed.get();
    c = handed_counted.get();
  }
  in_process(rt(), [] {  // reuses the maker's segments
    for (int i = 0; i < 2000; ++i) {
      char* p = new char[1000];
      std::memset(p, '#', 1000);
      keep(p);
    }
  });
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, std::vector<int>(10'000, 7));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->text, std::string(2000, 'c'));
  EXPECT_EQ(payloads_destroyed.load(), 0);
  // Through a process that drops its copy; the test's copy is the last.
  auto seen = in_process(rt(), [c] {
    auto copy = c;
    return copy->numbers.size();
  });
  EXPECT_EQ(seen, 2000u);
  EXPECT_TRUE(rt().wait_for(hang_limit));
  EXPECT_EQ(payloads_destroyed.load(), 0);
  EXPECT_EQ(c.use_count(), 1);
  c.reset();
  EXPECT_EQ(payloads_destroyed.load(), 1) << "the test thread dropped the last copy";
}

TEST_P(heaps, shared_value_is_not_counted_in_a_process_heap) {
  struct result {
    std::size_t after_make, after_drop;
    long uses;
  };
  auto r = in_process(rt(), [] {
    result r{};
    std::size_t base = live();
    {
      auto big = ember::shared<std::vector<char>>::make(1 << 20, 'b');
      auto again = big;
      r.uses = again.use_count();
      r.after_make = live() - base;
    }
    r.after_drop = live() - base;
    return r;
  });
  EXPECT_EQ(r.after_make, 0u) << "the value lives in the global heap";
  EXPECT_EQ(r.after_drop, 0u);
  EXPECT_EQ(r.uses, 2);
}

// What a spawned process captures is copied out of its parent's heap: the
// parent may exit first, and its reclaimed memory be reused by others.
TEST_P(heaps, captures_of_a_child_outlive_the_parent_that_spawned_it) {
  struct go {};
  oneshot<pid> child_id;
  oneshot<std::string> seen;
  watched parent = spawn_watched(rt(), [child_id, seen] {
    std::string name(500, 'c');  // in the parent's heap
    std::vector<int> numbers(1000, 7);
    child_id.set(ember::spawn([name, numbers, seen] {
      ember::receive([](go) {});
      seen.set(name + ":" + std::to_string(numbers.size()) + ":" + std::to_string(numbers[999]));
    }));
  });
  EXPECT_TRUE(exit_of(parent).is_normal());
  // Someone else takes (and scribbles over) the memory the parent gave back.
  in_process(rt(), [] {
    std::vector<std::string*> v;
    for (int i = 0; i < 5000; ++i) v.push_back(new std::string(200, 'z'));
    for (auto* p : v) delete p;
  });
  rt().send(child_id.get(), go{});
  EXPECT_EQ(seen.get(), std::string(500, 'c') + ":1000:7");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(heaps);

}  // namespace
