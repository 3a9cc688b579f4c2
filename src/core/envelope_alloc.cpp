// Envelope allocation: per-thread free lists in 16-byte size classes up to
// 256 bytes, in front of the global allocator. A block freed on another
// thread simply joins that thread's list (blocks are interchangeable). The
// per-process heap (a later layer) replaces this. Sanitizer builds go
// straight to the global allocator so that use-after-free stays visible.
#include <cstddef>
#include <new>

#include "ember/core/message.hpp"

namespace ember::detail {

namespace {
constexpr std::size_t class_bytes = 16;
constexpr std::size_t classes = 16;  // up to 256 bytes
constexpr std::size_t list_cap = 512;

struct free_block {
  free_block* next;
};

// Trivially destructible, so that access needs no TLS init guard; threads
// that ran processes give their blocks back with envelope_cache_release().
struct envelope_cache {
  free_block* lists[classes];
  std::size_t counts[classes];
};

#if defined(EMBER_ASAN) || defined(EMBER_TSAN)
constexpr bool cached = false;
#else
constexpr bool cached = true;
#endif

__attribute__((tls_model("initial-exec"))) thread_local envelope_cache tl_cache;
}  // namespace

void envelope_cache_release() noexcept {
  envelope_cache& cache = tl_cache;
  for (std::size_t c = 0; c < classes; ++c) {
    while (free_block* b = cache.lists[c]) {
      cache.lists[c] = b->next;
      ::operator delete(b);
    }
    cache.counts[c] = 0;
  }
}

void* envelope_allocate(std::size_t size) {
  std::size_t c = (size - 1) / class_bytes;
  if (!cached || c >= classes) return ::operator new(size);
  envelope_cache& cache = tl_cache;
  if (free_block* b = cache.lists[c]) {
    cache.lists[c] = b->next;
    --cache.counts[c];
    return b;
  }
  return ::operator new((c + 1) * class_bytes);
}

void envelope_free(void* p, std::size_t size) noexcept {
  std::size_t c = (size - 1) / class_bytes;
  if (!cached || c >= classes) {
    ::operator delete(p);
    return;
  }
  envelope_cache& cache = tl_cache;
  if (cache.counts[c] >= list_cap) {
    ::operator delete(p);
    return;
  }
  auto* b = static_cast<free_block*>(p);
  b->next = cache.lists[c];
  cache.lists[c] = b;
  ++cache.counts[c];
}

}  // namespace ember::detail
