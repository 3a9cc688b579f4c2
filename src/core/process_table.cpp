// The process table (see process_table.hpp).
#include "core/process_table.hpp"

#include <sys/mman.h>

#include <new>

#include "core/heap.hpp"
#include "ember/core/error.hpp"

namespace ember::detail {

namespace {
constexpr std::size_t cache_cap = 4096;
constexpr std::size_t chunk_bytes = sizeof(process) * process_table::chunk_size;
}  // namespace

process_table::process_table(std::uint32_t node_id) : node_id_(node_id) {
  for (auto& c : chunks_) c.store(nullptr, std::memory_order_relaxed);
}

process_table::~process_table() {
  std::uint32_t hw = high_water_.load(std::memory_order_acquire);
  for (std::uint32_t c = 0; c < max_chunks; ++c) {
    process* chunk = chunks_[c].load(std::memory_order_acquire);
    if (!chunk) continue;
    std::uint32_t first = c << chunk_bits;
    for (std::uint32_t i = 0; i < chunk_size && first + i < hw; ++i) {
      chunk[i].mbox.discard_incoming();  // late sends to dead processes
      chunk[i].~process();
    }
    ::munmap(chunk, chunk_bytes);
  }
}

// The free lists are the runtime's: growing them while a process is
// current must not take memory from its heap.
process* process_table::allocate(slot_cache* cache) {
  runtime_alloc_scope global;
  if (cache && !cache->free.empty()) {
    std::uint32_t slot = cache->free.back();
    cache->free.pop_back();
    return at(slot);
  }
  std::lock_guard lock(mu_);
  if (!free_.empty()) {
    std::uint32_t slot = free_.back();
    free_.pop_back();
    // Take a batch for this scheduler while the lock is held.
    if (cache) {
      std::size_t take = std::min<std::size_t>(free_.size(), 256);
      cache->free.insert(cache->free.end(), free_.end() - take, free_.end());
      free_.resize(free_.size() - take);
    }
    return at(slot);
  }
  std::uint32_t slot = high_water_.load(std::memory_order_relaxed);
  if (slot >= (1u << pid::slot_bits) - 1)
    throw error(errc::system_limit, "spawn: the process table is full (" +
                                        std::to_string(slot) + " processes alive)");
  std::uint32_t c = slot >> chunk_bits;
  if (!chunks_[c].load(std::memory_order_relaxed)) {
    void* mem = ::mmap(nullptr, chunk_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) throw error(errc::system_limit, "spawn: cannot map process table memory");
    chunks_[c].store(static_cast<process*>(mem), std::memory_order_release);
  }
  process* p = new (chunks_[c].load(std::memory_order_relaxed) + (slot & (chunk_size - 1))) process();
  p->slot = slot;
  p->life.store(std::uint64_t(1) << 32, std::memory_order_relaxed);  // generation 1, dead
  high_water_.store(slot + 1, std::memory_order_release);
  return p;
}

void process_table::free_slot(process* p, slot_cache* cache) noexcept {
  runtime_alloc_scope global;
  if (cache) {
    cache->free.push_back(p->slot);
    if (cache->free.size() < cache_cap) return;
    std::lock_guard lock(mu_);
    std::size_t half = cache->free.size() / 2;
    free_.insert(free_.end(), cache->free.begin(), cache->free.begin() + half);
    cache->free.erase(cache->free.begin(), cache->free.begin() + half);
    return;
  }
  std::lock_guard lock(mu_);
  free_.push_back(p->slot);
}

void process_table::drain(slot_cache& cache) noexcept {
  runtime_alloc_scope global;
  std::lock_guard lock(mu_);
  free_.insert(free_.end(), cache.free.begin(), cache.free.end());
  cache.free.clear();
}

}  // namespace ember::detail
