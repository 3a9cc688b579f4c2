// Stacks of processes: mmap-ed, a guard page below (a kernel guard region
// where available, else mprotect), committed lazily by the kernel, recycled
// through a pool (a per-scheduler cache in front of a shared list) because
// mapping a stack costs microseconds (and, without guard regions, two
// vm.max_map_count entries).
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>
#include <vector>

namespace ember::detail {

// Lives in the top bytes of its own mapping: no separate allocation.
struct stack {
  void* base;         // start of the mapping (the guard page)
  std::size_t size;   // whole mapping, guard included
  stack* next;        // pool links
  void* tsan_fiber;   // the ThreadSanitizer fiber that runs on this stack
  // A fault that ended the process running on it (fault.cpp): written by
  // the signal handler, read by the scheduler before the stack is reused.
  void* fault_address;
  int fault_signal;
  bool fault_overflow;
  // Usable range for the context: [bottom(), top()).
  char* bottom() const noexcept;
  char* top() const noexcept { return reinterpret_cast<char*>(const_cast<stack*>(this)); }
  std::size_t usable() const noexcept { return std::size_t(top() - bottom()); }
};

class stack_pool {
 public:
  explicit stack_pool(std::size_t default_size);
  ~stack_pool();

  // Page-rounded mapping size for a requested usable size (0: default).
  std::size_t mapping_size(std::size_t requested) const noexcept;
  // Throws error(system_limit) with advice when the kernel refuses.
  stack* get(std::size_t requested);
  void put(stack* s) noexcept;

  // A small per-thread cache (one per scheduler) in front of the pool.
  struct cache {
    stack* head = nullptr;
    std::atomic<std::size_t> count{0};  // written by the owner only
  };
  stack* get(cache& c, std::size_t requested);
  void put(cache& c, stack* s) noexcept;
  void drain(cache& c) noexcept;

  // Stacks mapped now, and those in the shared list (caches keep their own count).
  std::size_t mapped() const noexcept { return mapped_.load(std::memory_order_relaxed); }
  std::size_t pooled_shared() const noexcept { return free_count_.load(std::memory_order_relaxed); }
  std::size_t default_size() const noexcept { return default_size_; }
  // True if guard pages are kernel guard regions (no mapping of their own).
  static bool guard_regions() noexcept;

 private:
  stack* map(std::size_t mapping);
  void unmap(stack* s) noexcept;

  std::size_t default_size_;  // mapping size of a default stack
  std::mutex mu_;
  stack* free_ = nullptr;     // default-size stacks only
  std::atomic<std::size_t> free_count_{0};  // written under mu_
  std::atomic<std::size_t> mapped_{0};
};

}  // namespace ember::detail
