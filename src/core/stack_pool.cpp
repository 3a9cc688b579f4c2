// Stack mapping and pooling (see stack_pool.hpp).
#include "core/stack_pool.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "core/sanitizers.hpp"
#include "ember/core/error.hpp"

namespace ember::detail {

namespace {
constexpr std::size_t page = 4096;
constexpr std::size_t pool_cap = 16384;  // stacks kept mapped for reuse, shared
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
                  ": " + std::strerror(err) + "). Each function-process stack takes 2 kernel mappings; "
                  "vm.max_map_count is " + max_map_count() +
                  ". For millions of function processes raise it (sysctl -w vm.max_map_count=4194304), "
                  "or use handler processes, which hold no stack while idle.");
}
}  // namespace

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
  if (::mprotect(base, page, PROT_NONE) != 0) {
    int err = errno;
    ::munmap(base, mapping);
    refuse(mapping, "mprotect", err);
  }
  auto* s = reinterpret_cast<stack*>(static_cast<char*>(base) + mapping - sizeof(stack));
  s->base = base;
  s->size = mapping;
  s->next = nullptr;
  s->tsan_fiber = sanitizers::create_fiber();
  return s;
}

void stack_pool::unmap(stack* s) noexcept {
  sanitizers::destroy_fiber(s->tsan_fiber);
  ::munmap(s->base, s->size);
}

stack* stack_pool::get(std::size_t requested) {
  std::size_t mapping = mapping_size(requested);
  stack* s = nullptr;
  if (mapping == default_size_) {
    std::lock_guard lock(mu_);
    if (free_) {
      s = free_;
      free_ = s->next;
      --free_count_;
      pooled_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  if (!s) s = map(mapping);
  in_use_.fetch_add(1, std::memory_order_relaxed);
  return s;
}

void stack_pool::put(stack* s) noexcept {
  in_use_.fetch_sub(1, std::memory_order_relaxed);
  if (s->size == default_size_) {
    std::lock_guard lock(mu_);
    if (free_count_ < pool_cap) {
      s->next = free_;
      free_ = s;
      ++free_count_;
      pooled_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  unmap(s);
}

stack* stack_pool::get(cache& c, std::size_t requested) {
  if (c.head && mapping_size(requested) == default_size_) {
    stack* s = c.head;
    c.head = s->next;
    --c.count;
    pooled_.fetch_sub(1, std::memory_order_relaxed);
    in_use_.fetch_add(1, std::memory_order_relaxed);
    return s;
  }
  return get(requested);
}

void stack_pool::put(cache& c, stack* s) noexcept {
  if (s->size == default_size_ && c.count < cache_cap) {
    in_use_.fetch_sub(1, std::memory_order_relaxed);
    pooled_.fetch_add(1, std::memory_order_relaxed);
    s->next = c.head;
    c.head = s;
    ++c.count;
    return;
  }
  put(s);
}

void stack_pool::drain(cache& c) noexcept {
  while (c.head) {
    stack* s = c.head;
    c.head = s->next;
    --c.count;
    pooled_.fetch_sub(1, std::memory_order_relaxed);
    in_use_.fetch_add(1, std::memory_order_relaxed);
    put(s);
  }
}

}  // namespace ember::detail
