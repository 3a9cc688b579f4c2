// The per-process heap's data structures (design: heap.cpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace ember::detail {

struct process;
struct process_heap;

inline constexpr std::size_t segment_bytes = 64 * 1024;
inline constexpr std::size_t segment_header = 128;  // first block's offset
inline constexpr std::size_t small_max = 8192;       // larger: a span of its own
inline constexpr unsigned small_classes = 32;
inline constexpr std::uint16_t large_class = 0xFFFF;

struct heap_block {
  heap_block* next;
};

// A 64 KiB-aligned run of `span` segments (span > 1 only for a large block),
// owned by one heap, or free in the pool. Blocks of one size class follow
// the header; a block's segment is its address rounded down to 64 KiB.
struct segment {
  std::atomic<process_heap*> owner{nullptr};  // written by the owner (take, reclaim); read by any freer
  // --- owner only ---
  heap_block* free = nullptr;  // freed blocks, reused first
  char* bump = nullptr;        // blocks never handed out start here
  char* end = nullptr;
  segment* avail_next = nullptr;  // the heap's list of segments of this class
  segment* avail_prev = nullptr;  //   that may have room
  segment* all_next = nullptr;    // every segment of the heap (in the pool: free list)
  segment* all_prev = nullptr;
  std::uint32_t block_size = 0;   // the class's size; a large block: its counted size
  std::uint32_t used = 0;         // blocks handed out and not freed
  std::uint32_t span = 1;         // segments in this run
  std::uint16_t cls = 0;
  bool in_avail = false;
};
static_assert(sizeof(segment) <= segment_header);

struct process_heap {
  segment* avail[small_classes] = {};  // owner only: per class, segments that may have room
  std::atomic<std::size_t> live{0};    // owner writes (relaxed); process_info reads
  std::atomic<std::size_t> peak{0};
  std::size_t limit = SIZE_MAX;        // bytes; passing it ends the process
  std::atomic<heap_block*> remote{nullptr};  // blocks freed by other threads or heaps
  segment* all = nullptr;              // owner only
  process_heap* pool_next = nullptr;   // in the pool of unused heaps
  bool limit_hit = false;              // the limit fired, or the process is exiting
};

// The heap operator new uses on this thread (nullptr: global or not made
// yet), and the process it belongs to (nullptr: global). Set on every
// switch and by global_heap_scope; read only by the allocator.
// constinit: no TLS wrapper call on each access from other files.
extern constinit __attribute__((tls_model("initial-exec"))) thread_local process_heap* tl_heap;
extern constinit __attribute__((tls_model("initial-exec"))) thread_local process* tl_heap_process;

// The heap of p becomes current (or the global heap, inside a scope).
void heap_enter(process* p) noexcept;
void heap_leave() noexcept;
// Returns every segment of h to the pool at once; h goes back to its pool.
// `owner` names the dead process in quarantine reports.
struct heap_owner {
  std::uint32_t node = 0, slot = 0, generation = 0;
};
void heap_reclaim(process_heap* h, heap_owner owner) noexcept;

// Debug (runtime_options::quarantine_dead_heaps): reclaimed segments are
// made inaccessible and never reused, so that a use of a dead process's
// memory faults; the fault handler asks this who owned the address.
void heap_quarantine_enable() noexcept;
bool heap_quarantined(const void* address, heap_owner* owner) noexcept;  // async-signal-safe
// Implemented by the process layer: the current process's heap passed its
// limit. Does not return if it ends the process.
void heap_limit_exceeded(process_heap* h) noexcept;

// Global-heap scope for runtime internals that allocate while a process is
// current (registry, timers, spawn, exit reasons): their data outlives it.
// Preemption stays off inside it (the heap it saved would not be restored
// by a switch; see core/preempt.hpp).
void preempt_hold_enter() noexcept;
void preempt_hold_leave() noexcept;
class runtime_alloc_scope {
 public:
  runtime_alloc_scope() noexcept : saved_heap_((preempt_hold_enter(), tl_heap)), saved_process_(tl_heap_process) {
    tl_heap = nullptr;
    tl_heap_process = nullptr;
  }
  ~runtime_alloc_scope() {
    tl_heap = saved_heap_;
    tl_heap_process = saved_process_;
    preempt_hold_leave();
  }
  runtime_alloc_scope(const runtime_alloc_scope&) = delete;
  runtime_alloc_scope& operator=(const runtime_alloc_scope&) = delete;

 private:
  process_heap* saved_heap_;
  process* saved_process_;
};

struct heap_pool_stats {
  std::size_t arena_reserved = 0;   // bytes of address space
  std::size_t segments_mapped = 0;  // ever handed out by the frontier
  std::size_t segments_free = 0;    // in the pool
};
heap_pool_stats heap_pool_statistics() noexcept;

}  // namespace ember::detail
