// Per-process heaps.
//
// What it is for
//   Every C++ allocation a process makes while it runs lands in its own
//   heap: counted (live bytes and peak), capped (spawn_options::
//   max_heap_bytes: passing it ends the process with `heap_limit`), and
//   reclaimed all at once when the process exits, however it exits, even
//   when no destructor could run (stack overflow, heap limit). A process
//   that churns memory works in its own segments and never takes a lock
//   another process needs on its fast path.
//
// Vocabulary
//   arena     one reservation of address space (64 GiB; 8 GiB in sanitizer
//             builds; halved until it fits where address space is limited),
//             committed from the bottom up as needed. Every process
//             heap block lives in it, so "is this one of ours?" is one
//             subtraction and one compare; anything else came from malloc.
//   segment   64 KiB, 64 KiB-aligned, owned by one heap, holding blocks of
//             one size class after a 128-byte header. A block's segment is
//             its address with the low 16 bits cleared (mimalloc's idea).
//   span      a run of segments for one large block (> 8 KiB); its header is
//             in the first segment and the block starts inside it, so the
//             same masking finds it.
//   pool      free spans and unused heap objects, behind one mutex. Only slow
//             paths touch it: a heap takes a segment per 64 KiB it grows.
//   heap      per process (process_heap): for each of the 32 size classes
//             a list of its segments that may have room; counters; the
//             `remote` stack. Made on the process's first allocation, so a
//             process that allocates nothing holds one null pointer.
//
// Size classes: 16-byte steps up to 128, then four per doubling up to 8 KiB
// (160, 192, 224, 256, 320...). Live bytes count the class size.
//
// Fast paths (owner only, no atomics but relaxed counter stores)
//   new: tl_heap -> class (table lookup) -> the first segment of the class
//        -> pop its free list; count the bytes; a new peak is checked
//        against the limit.
//   delete: in the arena? -> segment (mask) -> owner == tl_heap? -> push on
//        the segment's free list. Otherwise it is a remote free.
//   Slow paths: carve one page's worth of never-used blocks into the free
//   list (so a small heap touches one page, not 64 KiB); drop full segments
//   from the class list; take a segment from the pool.
//
// Threads
//   A heap belongs to its process, not to a thread: the process migrates
//   between schedulers, and the run queues' hand-off orders everything it
//   did on one thread before what it does on the next. A block freed by any
//   other thread or heap is pushed on its owner's `remote` stack (one CAS);
//   the owner takes the whole stack in its slow path and frees the blocks
//   locally. segment::owner is atomic because any freer reads it.
//   Heap objects are never returned to malloc (they are reused), so a late
//   remote free touches valid memory even after its owner died.
//
// Reclaim: a dead process's heap walks its segment list and returns every
// segment to the pool under one lock: a million live 16-byte blocks are 245
// segments. Free segments above 32 MiB in the pool are given back to the
// kernel (madvise MADV_DONTNEED), so a heap that shrinks, or dies, gives
// memory back.
//
// What goes to the global heap: allocations outside processes, inside a
// global_heap_scope (which belongs to the process and survives its
// suspension), and runtime internals made on a process's behalf but outliving
// it (runtime_alloc_scope: registry, timers, spawned bodies, exit reasons,
// message envelopes in transit).
//
// Rejected: mimalloc itself (its heaps are bound to threads; a process must
// keep its heap as it migrates, and reclaiming a process must be O(segments),
// not a walk of its blocks); a block header holding the owner (8 bytes on
// every block, half of a 16-byte allocation); page-sized per-class segments
// for tiny heaps (a million processes with one small object each would pin
// 4 GiB; carving one page at a time pins the touched page only).
#include "core/heap.hpp"

#include <sys/mman.h>

#include <bit>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include "core/preempt.hpp"
#include "core/process.hpp"
#include "ember/core/heap.hpp"

#if defined(EMBER_ASAN) || defined(EMBER_TSAN)
#define EMBER_SANITIZED 1
#endif

// AddressSanitizer builds: memory of process heaps is poisoned except the
// bytes of live blocks, so a use after free, after a heap was reclaimed, or
// past the requested size is reported like one in malloc's memory. The
// allocator's own reads and writes of free-list links are exempt.
#if defined(EMBER_ASAN)
#include <sanitizer/asan_interface.h>
#define EMBER_ALLOCATOR __attribute__((no_sanitize("address")))
#define EMBER_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define EMBER_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define EMBER_ALLOCATOR
#define EMBER_POISON(p, n) ((void)(p), (void)(n))
#define EMBER_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

// Every function of the allocator lives in one section, whose bounds the
// preemption signal handler checks: a process is never interrupted inside
// the allocator, because the code that runs when it is resumed (taking in
// its messages) allocates from the same heap (see sched/preempt.cpp).
#define EMBER_HEAP_TEXT __attribute__((section("ember_heap_text")))

namespace ember::detail {

constinit __attribute__((tls_model("initial-exec"))) thread_local process_heap* tl_heap = nullptr;
constinit __attribute__((tls_model("initial-exec"))) thread_local process* tl_heap_process = nullptr;

namespace {

constexpr std::size_t page_bytes = 4096;
#if defined(EMBER_SANITIZED)
constexpr std::size_t arena_reserve = std::size_t(8) << 30;
#else
constexpr std::size_t arena_reserve = std::size_t(64) << 30;
#endif
constexpr std::size_t commit_step = std::size_t(32) << 20;
constexpr std::size_t pool_keep_segments = 512;  // 32 MiB kept dirty for reuse

// --- size classes ---------------------------------------------------------

constexpr std::uint32_t class_size_of(unsigned c) {
  if (c < 8) return 16 * (c + 1);
  unsigned group = (c - 8) / 4, step = (c - 8) % 4;
  std::uint32_t base = 128u << group;
  return base + (base / 4) * (step + 1);
}

constexpr unsigned class_of_size(std::size_t n) {
  if (n <= 128) return n == 0 ? 0 : unsigned((n + 15) / 16 - 1);
  unsigned msb = unsigned(std::bit_width(n - 1) - 1);
  return 8 + 4 * (msb - 7) + unsigned(((n - 1) >> (msb - 2)) & 3);
}

struct class_tables {
  std::uint32_t size[small_classes];
  std::uint8_t small_index[1024 / 16 + 1];  // (n + 15) / 16 -> class, n <= 1024
  constexpr class_tables() : size(), small_index() {
    for (unsigned c = 0; c < small_classes; ++c) size[c] = class_size_of(c);
    for (unsigned i = 0; i <= 1024 / 16; ++i) small_index[i] = std::uint8_t(class_of_size(i == 0 ? 1 : i * 16));
  }
};
constexpr class_tables classes{};
static_assert(class_size_of(small_classes - 1) == small_max);
static_assert(class_of_size(small_max) == small_classes - 1);
static_assert(class_of_size(129) == 8 && class_of_size(160) == 8 && class_of_size(161) == 9);

EMBER_HEAP_TEXT inline unsigned class_of(std::size_t n) {
  return n <= 1024 ? classes.small_index[(n + 15) >> 4] : class_of_size(n);
}

// --- arena and pool -------------------------------------------------------

// Set once (under the pool lock) before any arena pointer exists; read by
// every delete. Before that, nothing is in the arena.
std::atomic<std::uintptr_t> arena_lo{0};
std::atomic<std::uintptr_t> arena_len{0};

struct pool_state {
  std::mutex mu;
  char* base = nullptr;
  char* frontier = nullptr;   // never handed out above this
  char* committed = nullptr;  // read-write below this
  char* end = nullptr;
  segment* singles = nullptr;  // free one-segment spans
  segment* multis = nullptr;   // free longer spans (first fit)
  std::size_t free_segments = 0;
  process_heap* heaps = nullptr;  // unused heap objects
};

EMBER_HEAP_TEXT pool_state& pool() {
  static pool_state* p = new (std::malloc(sizeof(pool_state))) pool_state();  // never destroyed
  return *p;
}

// The arena's size, once reserved (a smaller one if the address space is
// limited: ulimit -v, valgrind).
std::size_t arena_size = 0;

EMBER_HEAP_TEXT bool init_arena_locked(pool_state& ps) {
  if (ps.base) return true;
  for (std::size_t size = arena_reserve; size >= (std::size_t(256) << 20); size /= 2) {
    void* mem = ::mmap(nullptr, size + segment_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) continue;
    auto lo = (reinterpret_cast<std::uintptr_t>(mem) + segment_bytes - 1) & ~(segment_bytes - 1);
    ps.base = ps.frontier = ps.committed = reinterpret_cast<char*>(lo);
    ps.end = ps.base + size;
    arena_size = size;
    arena_len.store(size, std::memory_order_relaxed);
    arena_lo.store(lo, std::memory_order_release);
    return true;
  }
  return false;  // process heaps cannot grow: their allocations throw bad_alloc
}

EMBER_HEAP_TEXT inline segment* segment_of(const void* p) {
  return reinterpret_cast<segment*>(reinterpret_cast<std::uintptr_t>(p) & ~(segment_bytes - 1));
}

EMBER_HEAP_TEXT inline bool in_arena(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) - arena_lo.load(std::memory_order_relaxed) <
         arena_len.load(std::memory_order_relaxed);
}

EMBER_HEAP_TEXT void push_free_locked(pool_state& ps, segment* s) {
  segment** list = s->span == 1 ? &ps.singles : &ps.multis;
  s->all_next = *list;
  *list = s;
  ps.free_segments += s->span;
}

// A span of k segments, or nullptr when the arena is exhausted.
EMBER_HEAP_TEXT segment* pool_take(std::size_t k) {
  pool_state& ps = pool();
  locked_hold lock(ps.mu);
  if (!init_arena_locked(ps)) return nullptr;
  segment* s = nullptr;
  if (k == 1 && ps.singles) {
    s = ps.singles;
    ps.singles = s->all_next;
  } else {
    for (segment** link = &ps.multis; *link; link = &(*link)->all_next) {
      if ((*link)->span < k) continue;
      s = *link;
      *link = s->all_next;
      if (s->span > k) {  // split: the rest stays free (and counted)
        auto* rest = reinterpret_cast<segment*>(reinterpret_cast<char*>(s) + k * segment_bytes);
        EMBER_UNPOISON(rest, segment_header);
        new (rest) segment();
        rest->span = s->span - std::uint32_t(k);
        s->span = std::uint32_t(k);
        segment** list = rest->span == 1 ? &ps.singles : &ps.multis;
        rest->all_next = *list;
        *list = rest;
      }
      break;
    }
  }
  if (s) {
    ps.free_segments -= k;
  } else {
    std::size_t bytes = k * segment_bytes;
    if (std::size_t(ps.end - ps.frontier) < bytes) return nullptr;
    if (ps.frontier + bytes > ps.committed) {
      std::size_t grow = std::max(commit_step, std::size_t(ps.frontier + bytes - ps.committed));
      grow = std::min(grow, std::size_t(ps.end - ps.committed));
      if (::mprotect(ps.committed, grow, PROT_READ | PROT_WRITE) != 0) return nullptr;
      ps.committed += grow;
    }
    s = reinterpret_cast<segment*>(ps.frontier);
    ps.frontier += bytes;
  }
  new (s) segment();
  s->span = std::uint32_t(k);
  EMBER_POISON(reinterpret_cast<char*>(s) + segment_header, k * segment_bytes - segment_header);
  return s;
}

// Returns a chain (linked through all_next) of spans to the pool. Spans
// beyond what the pool keeps are handed back to the kernel first.
EMBER_HEAP_TEXT void pool_give(segment* chain) {
  pool_state& ps = pool();
  std::size_t kept;
  {
    locked_hold lock(ps.mu);
    kept = ps.free_segments;
  }
  segment* keep = nullptr;
  for (segment* s = chain; s;) {
    segment* next = s->all_next;
    s->owner.store(nullptr, std::memory_order_relaxed);
    EMBER_POISON(reinterpret_cast<char*>(s) + segment_header, s->span * segment_bytes - segment_header);
    if (kept >= pool_keep_segments) {
      ::madvise(reinterpret_cast<char*>(s) + page_bytes, s->span * segment_bytes - page_bytes, MADV_DONTNEED);
    } else {
      kept += s->span;
    }
    s->all_next = keep;
    keep = s;
    s = next;
  }
  locked_hold lock(ps.mu);
  for (segment* s = keep; s;) {
    segment* next = s->all_next;
    push_free_locked(ps, s);
    s = next;
  }
}

EMBER_HEAP_TEXT process_heap* heap_create(std::size_t limit) {
  pool_state& ps = pool();
  process_heap* h = nullptr;
  {
    locked_hold lock(ps.mu);
    if ((h = ps.heaps)) ps.heaps = h->pool_next;
  }
  if (!h) {
    void* mem = std::malloc(sizeof(process_heap));  // never freed: late remote frees may touch it
    if (!mem) return nullptr;
    h = new (mem) process_heap();
  }
  h->limit = limit ? limit : SIZE_MAX;
  return h;
}

// --- the owner's side -----------------------------------------------------

EMBER_HEAP_TEXT void avail_unlink(process_heap* h, segment* s) {
  if (s->avail_prev) s->avail_prev->avail_next = s->avail_next; else h->avail[s->cls] = s->avail_next;
  if (s->avail_next) s->avail_next->avail_prev = s->avail_prev;
  s->avail_next = s->avail_prev = nullptr;
  s->in_avail = false;
}

EMBER_HEAP_TEXT void avail_push_front(process_heap* h, segment* s) {
  segment*& head = h->avail[s->cls];
  s->avail_prev = nullptr;
  s->avail_next = head;
  if (head) head->avail_prev = s;
  head = s;
  s->in_avail = true;
}

EMBER_HEAP_TEXT void all_link(process_heap* h, segment* s) {
  s->all_prev = nullptr;
  s->all_next = h->all;
  if (h->all) h->all->all_prev = s;
  h->all = s;
}

EMBER_HEAP_TEXT void all_unlink(process_heap* h, segment* s) {
  if (s->all_prev) s->all_prev->all_next = s->all_next; else h->all = s->all_next;
  if (s->all_next) s->all_next->all_prev = s->all_prev;
  s->all_next = s->all_prev = nullptr;
}

EMBER_HEAP_TEXT __attribute__((noinline)) void note_peak(process_heap* h, std::size_t live) {
  h->peak.store(live, std::memory_order_relaxed);
  if (live > h->limit && !h->limit_hit) {
    h->limit_hit = true;  // from here on the process is being ended: let its exit allocate
    heap_limit_exceeded(h);
  }
}

EMBER_HEAP_TEXT inline void count_alloc(process_heap* h, std::size_t bytes) {
  std::size_t live = h->live.load(std::memory_order_relaxed) + bytes;
  h->live.store(live, std::memory_order_relaxed);
  if (live > h->peak.load(std::memory_order_relaxed)) note_peak(h, live);
}

EMBER_HEAP_TEXT inline void count_free(process_heap* h, std::size_t bytes) {
  h->live.store(h->live.load(std::memory_order_relaxed) - bytes, std::memory_order_relaxed);
}

EMBER_HEAP_TEXT void release_span(process_heap* h, segment* s) {
  if (s->in_avail) avail_unlink(h, s);
  all_unlink(h, s);
  s->all_next = nullptr;
  pool_give(s);
}

// A block of h freed by h's own process: after the fast part, the cases
// that change lists.
EMBER_HEAP_TEXT void free_local_slow(process_heap* h, segment* s) {
  if (s->cls == large_class) {
    release_span(h, s);
    return;
  }
  if (s->used == 0 && h->avail[s->cls] != s) {
    release_span(h, s);  // empty and not the one allocations come from
    return;
  }
  if (!s->in_avail) avail_push_front(h, s);  // was full: has room again
}

EMBER_HEAP_TEXT EMBER_ALLOCATOR void free_local(process_heap* h, segment* s, void* p) {
  if (s->cls == large_class) {
    count_free(h, s->block_size);
    release_span(h, s);
    return;
  }
  auto* b = static_cast<heap_block*>(p);
  b->next = s->free;
  s->free = b;
  count_free(h, s->block_size);
  --s->used;
  if (!s->in_avail || (s->used == 0 && s->avail_prev)) free_local_slow(h, s);
}

EMBER_HEAP_TEXT EMBER_ALLOCATOR void drain_remote(process_heap* h) {
  heap_block* b = h->remote.exchange(nullptr, std::memory_order_acquire);
  while (b) {
    heap_block* next = b->next;
    segment* s = segment_of(b);
    if (s->owner.load(std::memory_order_relaxed) == h) free_local(h, s, b);
    b = next;
  }
}

EMBER_HEAP_TEXT EMBER_ALLOCATOR void free_remote(process_heap* owner, void* p) {
  if (!owner) return;  // its heap was reclaimed: the memory went with it
  auto* b = static_cast<heap_block*>(p);
  heap_block* head = owner->remote.load(std::memory_order_relaxed);
  do {
    b->next = head;
  } while (!owner->remote.compare_exchange_weak(head, b, std::memory_order_release, std::memory_order_relaxed));
}

[[noreturn]] void out_of_memory() { throw std::bad_alloc(); }

// Carves up to one page of never-used blocks of s into its free list (a
// fresh segment of a small heap touches one page, not 64 KiB).
EMBER_HEAP_TEXT EMBER_ALLOCATOR bool carve(segment* s) {
  std::size_t bs = s->block_size;
  if (std::size_t(s->end - s->bump) < bs) return false;
  char* page_end = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(s->bump) + page_bytes) & ~(page_bytes - 1));
  char* stop = std::min(s->end, std::max(page_end, s->bump + bs));
  heap_block* first = nullptr;
  heap_block** tail = &first;
  while (std::size_t(stop - s->bump) >= bs) {
    auto* b = reinterpret_cast<heap_block*>(s->bump);
    s->bump += bs;
    *tail = b;
    tail = &b->next;
  }
  *tail = s->free;
  s->free = first;
  return true;
}

// Allocation costs the current process reductions, charged in the slow
// paths only (a refill of a class, a large block): the fast path stays a
// free-list pop. The yield happens at the process's next runtime call.
EMBER_HEAP_TEXT inline void charge_reductions(std::uint32_t n) {
  if (process* p = tl_heap_process) p->reductions += n;
}

EMBER_HEAP_TEXT EMBER_ALLOCATOR void* alloc_small_slow(process_heap* h, unsigned c) {
  charge_reductions(1);
  if (h->remote.load(std::memory_order_relaxed)) drain_remote(h);
  for (;;) {
    segment* s = h->avail[c];
    if (!s) break;
    if (s->free || carve(s)) {
      heap_block* b = s->free;
      s->free = b->next;
      ++s->used;
      count_alloc(h, s->block_size);
      return b;
    }
    avail_unlink(h, s);  // full
  }
  segment* s = pool_take(1);
  if (!s) out_of_memory();
  s->owner.store(h, std::memory_order_relaxed);
  s->cls = std::uint16_t(c);
  s->block_size = classes.size[c];
  s->bump = reinterpret_cast<char*>(s) + segment_header;
  s->end = reinterpret_cast<char*>(s) + segment_bytes;
  all_link(h, s);
  avail_push_front(h, s);
  carve(s);
  heap_block* b = s->free;
  s->free = b->next;
  ++s->used;
  count_alloc(h, s->block_size);
  return b;
}

// A large block at `offset` (>= the header, a power of two for alignment)
// into a span of its own.
EMBER_HEAP_TEXT void* alloc_large(process_heap* h, std::size_t n, std::size_t offset) {
  charge_reductions(std::uint32_t(std::min<std::size_t>(n / 4096 + 1, 1u << 20)));
  if (h->remote.load(std::memory_order_relaxed)) drain_remote(h);
  if (n > arena_reserve) out_of_memory();
  std::size_t k = (n + offset + segment_bytes - 1) / segment_bytes;
  segment* s = pool_take(k);
  if (!s) out_of_memory();
  s->owner.store(h, std::memory_order_relaxed);
  s->cls = large_class;
  s->block_size = std::uint32_t(std::min<std::size_t>((n + 15) & ~std::size_t(15), UINT32_MAX));
  s->used = 1;
  all_link(h, s);
  count_alloc(h, s->block_size);
  return reinterpret_cast<char*>(s) + offset;
}

EMBER_HEAP_TEXT process_heap* current_heap_or_make() {
  process* p = tl_heap_process;
  if (!p) return nullptr;
  process_heap* h = p->heap.load(std::memory_order_relaxed);
  if (!h) {
    h = heap_create(p->heap_unlimited ? 0 : p->heap_limit);
    if (!h) out_of_memory();
    p->heap.store(h, std::memory_order_release);  // read by observe from other threads
  }
  tl_heap = h;
  return h;
}

EMBER_HEAP_TEXT void* global_alloc(std::size_t n) {
  for (;;) {
    if (void* p = std::malloc(n ? n : 1)) return p;
    std::new_handler handler = std::get_new_handler();
    if (!handler) out_of_memory();
    handler();
  }
}

EMBER_HEAP_TEXT void* global_alloc_aligned(std::size_t n, std::size_t align) {
  for (;;) {
    void* p = nullptr;
    if (::posix_memalign(&p, align, n ? n : 1) == 0) return p;
    std::new_handler handler = std::get_new_handler();
    if (!handler) out_of_memory();
    handler();
  }
}

EMBER_HEAP_TEXT EMBER_ALLOCATOR __attribute__((noinline)) void* alloc_general(std::size_t n) {
  process_heap* h = tl_heap ? tl_heap : current_heap_or_make();
  if (!h) return global_alloc(n);
  if (n <= small_max) return alloc_small_slow(h, class_of(n));
  return alloc_large(h, n, segment_header);
}

EMBER_HEAP_TEXT EMBER_ALLOCATOR inline void* heap_allocate(std::size_t n) {
  process_heap* h = tl_heap;
  if (__builtin_expect(h != nullptr && n <= 1024, 1)) {
    unsigned c = classes.small_index[(n + 15) >> 4];
    if (segment* s = h->avail[c]) {
      if (heap_block* b = s->free) {
        s->free = b->next;
        ++s->used;
        count_alloc(h, s->block_size);
        return b;
      }
    }
  }
  return alloc_general(n);
}

EMBER_HEAP_TEXT void* heap_allocate_aligned(std::size_t n, std::size_t align) {
  if (align <= 16) return heap_allocate(n);
  process_heap* h = tl_heap ? tl_heap : current_heap_or_make();
  if (!h || align >= segment_bytes) return global_alloc_aligned(n, align);
  if (n + align - 16 <= small_max) {
    // A block of a class large enough to hold an aligned n inside it;
    // aligned delete finds the block's start again.
    char* b = static_cast<char*>(heap_allocate(n + align - 16));
    return reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(b) + align - 1) & ~(align - 1));
  }
  return alloc_large(h, n, std::max(segment_header, align));
}

EMBER_HEAP_TEXT EMBER_ALLOCATOR __attribute__((noinline)) void free_slow(void* p, segment* s, process_heap* owner) {
  if (owner && owner == tl_heap) {
    free_local(owner, s, p);
    return;
  }
  free_remote(owner, p);
}

EMBER_HEAP_TEXT EMBER_ALLOCATOR inline void heap_free(void* p) noexcept {
  if (!in_arena(p)) {
    std::free(p);
    return;
  }
  segment* s = segment_of(p);
  EMBER_POISON(p, s->block_size);
  process_heap* owner = s->owner.load(std::memory_order_relaxed);
  if (__builtin_expect(owner == tl_heap && owner && s->cls != large_class, 1)) {
    auto* b = static_cast<heap_block*>(p);
    b->next = s->free;
    s->free = b;
    count_free(owner, s->block_size);
    // Lists change only when a full segment gets room, or one that is not
    // the class's current segment (the head: no avail_prev) empties.
    --s->used;
    if (__builtin_expect(!s->in_avail || (s->used == 0 && s->avail_prev), 0)) free_local_slow(owner, s);
    return;
  }
  free_slow(p, s, owner);
}

// What operator new hands out: the n bytes asked for become addressable
// (AddressSanitizer builds; elsewhere nothing happens).
EMBER_HEAP_TEXT inline void* handed_out(void* p, std::size_t n) noexcept {
#if defined(EMBER_ASAN)
  if (in_arena(p)) EMBER_UNPOISON(p, n ? n : 1);
#else
  (void)n;
#endif
  return p;
}

EMBER_HEAP_TEXT void heap_free_aligned(void* p, std::size_t align) noexcept {
  if (align > 16 && in_arena(p)) {
    segment* s = segment_of(p);
    if (s->cls != large_class) {
      char* first = reinterpret_cast<char*>(s) + segment_header;
      std::size_t index = std::size_t(static_cast<char*>(p) - first) / s->block_size;
      p = first + index * s->block_size;
    }
  }
  heap_free(p);
}

}  // namespace

EMBER_HEAP_TEXT void heap_enter(process* p) noexcept {
  if (p->heap_scope_depth) {
    tl_heap = nullptr;
    tl_heap_process = nullptr;
  } else {
    tl_heap = p->heap.load(std::memory_order_relaxed);
    tl_heap_process = p;
  }
}

EMBER_HEAP_TEXT void heap_leave() noexcept {
  tl_heap = nullptr;
  tl_heap_process = nullptr;
}

namespace {
// Quarantined spans: an append-only table read by the fault handler.
struct quarantine_record {
  std::uintptr_t lo, hi;
  heap_owner owner;
};
constexpr std::size_t quarantine_capacity = 1 << 16;
std::atomic<bool> quarantine_on{false};
std::atomic<std::size_t> quarantine_count{0};
quarantine_record* quarantine_table = nullptr;  // set once, before quarantine_on
std::mutex quarantine_mu;

// True if the span went to quarantine instead of the pool.
EMBER_HEAP_TEXT bool quarantine(segment* s, heap_owner owner) noexcept {
  locked_hold lock(quarantine_mu);
  std::size_t i = quarantine_count.load(std::memory_order_relaxed);
  if (i >= quarantine_capacity) return false;  // full: back to normal reuse
  auto lo = reinterpret_cast<std::uintptr_t>(s);
  quarantine_table[i] = {lo, lo + s->span * segment_bytes, owner};
  if (::mprotect(s, s->span * segment_bytes, PROT_NONE) != 0) return false;
  quarantine_count.store(i + 1, std::memory_order_release);
  return true;
}
}  // namespace

EMBER_HEAP_TEXT void heap_quarantine_enable() noexcept {
  locked_hold lock(quarantine_mu);
  if (quarantine_table) return;
  void* mem = ::mmap(nullptr, quarantine_capacity * sizeof(quarantine_record), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return;
  quarantine_table = static_cast<quarantine_record*>(mem);
  quarantine_on.store(true, std::memory_order_release);
}

EMBER_HEAP_TEXT bool heap_quarantined(const void* address, heap_owner* owner) noexcept {
  if (!quarantine_on.load(std::memory_order_acquire)) return false;
  auto a = reinterpret_cast<std::uintptr_t>(address);
  std::size_t n = quarantine_count.load(std::memory_order_acquire);
  for (std::size_t i = n; i-- > 0;) {
    const quarantine_record& r = quarantine_table[i];
    if (a >= r.lo && a < r.hi) {
      if (owner) *owner = r.owner;
      return true;
    }
  }
  return false;
}

EMBER_HEAP_TEXT void heap_reclaim(process_heap* h, heap_owner owner) noexcept {
  if (!h) return;
  segment* chain = h->all;
  for (segment* s = chain; s; s = s->all_next) s->in_avail = false;
  if (chain && quarantine_on.load(std::memory_order_relaxed)) {
    segment* rest = nullptr;
    for (segment* s = chain; s;) {
      segment* next = s->all_next;
      if (!quarantine(s, owner)) {
        s->all_next = rest;
        rest = s;
      }
      s = next;
    }
    chain = rest;
  }
  if (chain) pool_give(chain);
  for (auto& a : h->avail) a = nullptr;
  h->all = nullptr;
  h->remote.store(nullptr, std::memory_order_relaxed);
  h->live.store(0, std::memory_order_relaxed);
  h->peak.store(0, std::memory_order_relaxed);
  h->limit = SIZE_MAX;
  h->limit_hit = false;
  pool_state& ps = pool();
  locked_hold lock(ps.mu);
  h->pool_next = ps.heaps;
  ps.heaps = h;
}

EMBER_HEAP_TEXT heap_pool_stats heap_pool_statistics() noexcept {
  pool_state& ps = pool();
  locked_hold lock(ps.mu);
  heap_pool_stats st;
  st.arena_reserved = arena_size;
  st.segments_mapped = std::size_t(ps.frontier - ps.base) / segment_bytes;
  st.segments_free = ps.free_segments;
  return st;
}

}  // namespace ember::detail

// ------------------------------------------------------ public surface

namespace ember {

EMBER_HEAP_TEXT global_heap_scope::global_heap_scope() noexcept : process_(detail::tl_heap_process) {
  detail::preempt_hold hold;  // the count and the current heap change together
  auto* p = static_cast<detail::process*>(process_);
  if (!p) {
    // Outside a process, or already global: count on the process anyway, so
    // that nesting inside a process is undone in order.
    p = detail::current_process();
    process_ = p;
  }
  if (!p) return;
  ++p->heap_scope_depth;
  detail::heap_leave();
}

EMBER_HEAP_TEXT global_heap_scope::~global_heap_scope() {
  detail::preempt_hold hold;
  auto* p = static_cast<detail::process*>(process_);
  if (!p) return;
  if (--p->heap_scope_depth == 0 && detail::current_process() == p) detail::heap_enter(p);
}

EMBER_HEAP_TEXT std::size_t heap_block_size(std::size_t n) noexcept {
  if (n <= detail::small_max) return detail::classes.size[detail::class_of(n)];
  return (n + 15) & ~std::size_t(15);
}

}  // namespace ember

// ------------------------------------------- the replaced operator new

EMBER_HEAP_TEXT void* operator new(std::size_t n) { return ember::detail::handed_out(ember::detail::heap_allocate(n), n); }
EMBER_HEAP_TEXT void* operator new[](std::size_t n) { return ember::detail::handed_out(ember::detail::heap_allocate(n), n); }
EMBER_HEAP_TEXT void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return ember::detail::handed_out(ember::detail::heap_allocate(n), n);
  } catch (...) {
    return nullptr;
  }
}
EMBER_HEAP_TEXT void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return ember::detail::handed_out(ember::detail::heap_allocate(n), n);
  } catch (...) {
    return nullptr;
  }
}
EMBER_HEAP_TEXT void* operator new(std::size_t n, std::align_val_t a) {
  return ember::detail::handed_out(ember::detail::heap_allocate_aligned(n, std::size_t(a)), n);
}
EMBER_HEAP_TEXT void* operator new[](std::size_t n, std::align_val_t a) {
  return ember::detail::handed_out(ember::detail::heap_allocate_aligned(n, std::size_t(a)), n);
}
EMBER_HEAP_TEXT void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return ember::detail::handed_out(ember::detail::heap_allocate_aligned(n, std::size_t(a)), n);
  } catch (...) {
    return nullptr;
  }
}
EMBER_HEAP_TEXT void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return ember::detail::handed_out(ember::detail::heap_allocate_aligned(n, std::size_t(a)), n);
  } catch (...) {
    return nullptr;
  }
}

EMBER_HEAP_TEXT void operator delete(void* p) noexcept { ember::detail::heap_free(p); }
EMBER_HEAP_TEXT void operator delete[](void* p) noexcept { ember::detail::heap_free(p); }
EMBER_HEAP_TEXT void operator delete(void* p, std::size_t) noexcept { ember::detail::heap_free(p); }
EMBER_HEAP_TEXT void operator delete[](void* p, std::size_t) noexcept { ember::detail::heap_free(p); }
EMBER_HEAP_TEXT void operator delete(void* p, const std::nothrow_t&) noexcept { ember::detail::heap_free(p); }
EMBER_HEAP_TEXT void operator delete[](void* p, const std::nothrow_t&) noexcept { ember::detail::heap_free(p); }
EMBER_HEAP_TEXT void operator delete(void* p, std::align_val_t a) noexcept { ember::detail::heap_free_aligned(p, std::size_t(a)); }
EMBER_HEAP_TEXT void operator delete[](void* p, std::align_val_t a) noexcept { ember::detail::heap_free_aligned(p, std::size_t(a)); }
EMBER_HEAP_TEXT void operator delete(void* p, std::size_t, std::align_val_t a) noexcept {
  ember::detail::heap_free_aligned(p, std::size_t(a));
}
EMBER_HEAP_TEXT void operator delete[](void* p, std::size_t, std::align_val_t a) noexcept {
  ember::detail::heap_free_aligned(p, std::size_t(a));
}
EMBER_HEAP_TEXT void operator delete(void* p, std::align_val_t a, const std::nothrow_t&) noexcept {
  ember::detail::heap_free_aligned(p, std::size_t(a));
}
EMBER_HEAP_TEXT void operator delete[](void* p, std::align_val_t a, const std::nothrow_t&) noexcept {
  ember::detail::heap_free_aligned(p, std::size_t(a));
}
