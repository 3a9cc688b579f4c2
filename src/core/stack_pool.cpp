// Stack mapping and pooling (see stack_pool.hpp).
#include "core/stack_pool.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

#include "core/sanitizers.hpp"
#include "ember/core/error.hpp"

namespace ember::detail {

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102  // Linux 6.13; Debian 12's headers predate it
#endif

namespace {
constexpr std::size_t page = 4096;

// Guard pages: where the kernel has guard regions (MADV_GUARD_INSTALL,
// Linux >= 6.13) the guard costs no mapping of its own, and adjacent stacks
// merge into one kernel mapping, so vm.max_map_count stops limiting the
// number of stacks. Elsewhere an mprotect-ed guard splits the mapping: two
// per stack. Decided on first use.
std::atomic<int> guard_regions_state{-1};  // -1 unknown, 0 no, 1 yes

bool install_guard(void* base) {
  if (guard_regions_state.load(std::memory_order_relaxed) != 0) {
    if (::madvise(base, page, MADV_GUARD_INSTALL) == 0) {
      guard_regions_state.store(1, std::memory_order_relaxed);
      return true;
    }
    if (errno != EINVAL) return false;
    guard_regions_state.store(0, std::memory_order_relaxed);
  }
  return ::mprotect(base, page, PROT_NONE) == 0;
}
// Stacks kept mapped for reuse. The first `warm_cap` keep their pages; past
// that a returned stack's pages are given back lazily (MADV_FREE: cheap,
// and the memory is reclaimed only under pressure), so a wave of a million
// function processes leaves virtual address space, not RSS, behind, and
// never pays a munmap per stack.
constexpr std::size_t pool_cap = std::size_t(1) << 21;
constexpr std::size_t warm_cap = 16384;
constexpr std::size_t cache_cap = 64;    // per scheduler

std::size_t round_up(std::size_t n) { return (n + page - 1) & ~(page - 1); }

std::string max_map_count() {
  std::ifstream f("/proc/sys/vm/max_map_count");
  std::string v;
  f >> v;
  return v.empty() ? "unknown" : v;
}

[[noreturn]] void refuse(std::size_t mapping, const char* call, int err) {
  throw error(errc::system_limit,
              "spawn: cannot map a " + std::to_string(mapping / 1024) + " KiB process stack (" + call +
                  ": " + std::strerror(err) + "). On kernels without guard regions (Linux < 6.13) each "
                  "function-process stack takes 2 kernel mappings and vm.max_map_count is " + max_map_count() +
                  "; for millions of function processes raise it (sysctl -w vm.max_map_count=4194304), "
                  "or use handler processes, which hold no stack while idle.");
}
}  // namespace

bool stack_pool::guard_regions() noexcept {
  if (guard_regions_state.load(std::memory_order_relaxed) < 0) {
    // Probe once on a scratch mapping.
    void* probe = ::mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (probe != MAP_FAILED) {
      bool yes = ::madvise(probe, page, MADV_GUARD_INSTALL) == 0;
      ::munmap(probe, 2 * page);
      int expected = -1;
      guard_regions_state.compare_exchange_strong(expected, yes ? 1 : 0);
    }
  }
  return guard_regions_state.load(std::memory_order_relaxed) == 1;
}

char* stack::bottom() const noexcept { return static_cast<char*>(base) + page; }

stack_pool::stack_pool(std::size_t default_size) : default_size_(mapping_size(default_size)) {}

stack_pool::~stack_pool() {
  while (free_) {
    stack* s = free_;
    free_ = s->next;
    unmap(s);
  }
}

std::size_t stack_pool::mapping_size(std::size_t requested) const noexcept {
  if (requested == 0) return default_size_;
  return round_up(requested + sizeof(stack)) + page;
}

stack* stack_pool::map(std::size_t mapping) {
  void* base = ::mmap(nullptr, mapping, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) refuse(mapping, "mmap", errno);
  if (!install_guard(base)) {
    int err = errno;
    ::munmap(base, mapping);
    refuse(mapping, guard_regions_state.load(std::memory_order_relaxed) == 1 ? "madvise" : "mprotect", err);
  }
  auto* s = reinterpret_cast<stack*>(static_cast<char*>(base) + mapping - sizeof(stack));
  s->base = base;
  s->size = mapping;
  s->next = nullptr;
  s->tsan_fiber = sanitizers::create_fiber();
  s->fault_address = nullptr;
  s->fault_signal = 0;
  s->fault_overflow = false;
  mapped_.fetch_add(1, std::memory_order_relaxed);
  return s;
}

void stack_pool::unmap(stack* s) noexcept {
  mapped_.fetch_sub(1, std::memory_order_relaxed);
  sanitizers::destroy_fiber(s->tsan_fiber);
  ::munmap(s->base, s->size);
}

stack* stack_pool::get(std::size_t requested) {
  std::size_t mapping = mapping_size(requested);
  if (mapping == default_size_) {
    std::lock_guard lock(mu_);
    if (free_) {
      stack* s = free_;
      free_ = s->next;
      free_count_.store(free_count_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
      return s;
    }
  }
  return map(mapping);
}

void stack_pool::put(stack* s) noexcept {
  if (s->size == default_size_) {
    bool cold;
    {
      std::lock_guard lock(mu_);
      cold = free_count_.load(std::memory_order_relaxed) >= warm_cap;
    }
    if (cold) {
      // Everything but the top page, which holds the stack's own header.
      char* from = s->bottom();
      char* to = reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(s) & ~(page - 1));
      if (to > from) ::madvise(from, std::size_t(to - from), MADV_FREE);
    }
    std::lock_guard lock(mu_);
    std::size_t n = free_count_.load(std::memory_order_relaxed);
    if (n < pool_cap) {
      s->next = free_;
      free_ = s;
      free_count_.store(n + 1, std::memory_order_relaxed);
      return;
    }
  }
  unmap(s);
}

// Cache hits touch no shared memory: the counts a cache keeps are its
// owner's, published with plain relaxed stores for stats readers.
stack* stack_pool::get(cache& c, std::size_t requested) {
  if (c.head && mapping_size(requested) == default_size_) {
    stack* s = c.head;
    c.head = s->next;
    c.count.store(c.count.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    return s;
  }
  return get(requested);
}

void stack_pool::put(cache& c, stack* s) noexcept {
  std::size_t n = c.count.load(std::memory_order_relaxed);
  if (s->size == default_size_ && n < cache_cap) {
    s->next = c.head;
    c.head = s;
    c.count.store(n + 1, std::memory_order_relaxed);
    return;
  }
  put(s);
}

void stack_pool::drain(cache& c) noexcept {
  while (c.head) {
    stack* s = c.head;
    c.head = s->next;
    put(s);
  }
  c.count.store(0, std::memory_order_relaxed);
}

}  // namespace ember::detail
