// Envelope allocation: per-thread free lists in 16-byte size classes up to
// 256 bytes, in front of the global allocator, with a shared depot of full
// lists ("magazines") between them. Messages are often freed on another
// thread than the one that allocated them (fan-in: producers allocate,
// the consumer frees); the depot carries whole magazines back from the
// freeing thread to the allocating ones, one lock per 256 messages instead
// of a malloc/free pair per message. Envelopes in transit belong to no
// process: they come from malloc, never from a process heap (the receiver
// copies a message that owns memory into its own heap when it takes it in).
// Sanitizer builds go straight to malloc so that use-after-free stays
// visible.
#include <cstddef>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#include "core/heap.hpp"
#include "core/preempt.hpp"
#include "ember/core/message.hpp"

namespace ember::detail {

namespace {
constexpr std::size_t class_bytes = 16;
constexpr std::size_t classes = 16;  // up to 256 bytes
constexpr std::size_t magazine = 256;      // blocks per thread list / depot entry
constexpr std::size_t depot_cap = 256;     // magazines kept per size class

struct free_block {
  free_block* next;
};

// Trivially destructible, so that access needs no TLS init guard; threads
// that ran processes give their blocks back with envelope_cache_release().
struct envelope_cache {
  free_block* lists[classes];
  std::size_t counts[classes];
};

struct depot {
  std::mutex mu;
  std::vector<free_block*> magazines[classes];  // each a chain of `magazine` blocks
};
depot& shared_depot() {
  static depot* d = [] {
    runtime_alloc_scope global;  // first use may be inside a process
    return new depot();          // never destroyed: threads may outlive statics
  }();
  return *d;
}

void free_chain(free_block* b) noexcept {
  while (b) {
    free_block* next = b->next;
    std::free(b);
    b = next;
  }
}

#if defined(EMBER_ASAN) || defined(EMBER_TSAN)
constexpr bool cached = false;
#else
constexpr bool cached = true;
#endif

__attribute__((tls_model("initial-exec"))) thread_local envelope_cache tl_cache;

void* checked_malloc(std::size_t n) {
  if (void* p = std::malloc(n)) return p;
  throw std::bad_alloc();
}
}  // namespace

void envelope_cache_release() noexcept {
  envelope_cache& cache = tl_cache;
  for (std::size_t c = 0; c < classes; ++c) {
    free_chain(cache.lists[c]);
    cache.lists[c] = nullptr;
    cache.counts[c] = 0;
  }
}

void* envelope_allocate(std::size_t size) {
  std::size_t c = (size - 1) / class_bytes;
  if (!cached || c >= classes) return checked_malloc(size);
  preempt_hold hold;  // the per-thread cache must not change hands mid-update
  envelope_cache& cache = tl_cache;
  if (!cache.lists[c]) {
    depot& d = shared_depot();
    std::lock_guard lock(d.mu);
    if (!d.magazines[c].empty()) {
      cache.lists[c] = d.magazines[c].back();
      cache.counts[c] = magazine;
      d.magazines[c].pop_back();
    }
  }
  if (free_block* b = cache.lists[c]) {
    cache.lists[c] = b->next;
    --cache.counts[c];
    return b;
  }
  return checked_malloc((c + 1) * class_bytes);
}

void envelope_free(void* p, std::size_t size) noexcept {
  std::size_t c = (size - 1) / class_bytes;
  if (!cached || c >= classes) {
    std::free(p);
    return;
  }
  preempt_hold hold;
  envelope_cache& cache = tl_cache;
  if (cache.counts[c] >= magazine) {
    // A full list goes to the depot whole, for allocating threads to take.
    free_block* full = cache.lists[c];
    cache.lists[c] = nullptr;
    cache.counts[c] = 0;
    depot& d = shared_depot();
    {
      runtime_alloc_scope global;  // the depot's vectors are the runtime's
      std::lock_guard lock(d.mu);
      if (d.magazines[c].size() < depot_cap) {
        d.magazines[c].push_back(full);
        full = nullptr;
      }
    }
    free_chain(full);
  }
  auto* b = static_cast<free_block*>(p);
  b->next = cache.lists[c];
  cache.lists[c] = b;
  ++cache.counts[c];
}

}  // namespace ember::detail
