// Per-process heaps, as a user sees them.
//
// While a process runs, every C++ allocation it makes (operator new in all
// its forms) comes from that process's own heap: counted, cappable
// (spawn_options::max_heap_bytes) and reclaimed all at once when the process
// exits, however it exits. Outside processes (main, other threads) and inside
// a global_heap_scope, allocations go to the global heap (malloc).
//
// Consequence: memory that must outlive the process that creates it (a cache,
// a singleton, a function-local static first touched inside a process, a
// thread started from a process) must be allocated inside a
// global_heap_scope. malloc/free called directly are always global.
#pragma once

#include <cstddef>

namespace ember {

// While alive, allocations of the calling process go to the global heap.
// Nests; survives suspension (it belongs to the process, not the thread).
class global_heap_scope {
 public:
  global_heap_scope() noexcept;
  ~global_heap_scope();
  global_heap_scope(const global_heap_scope&) = delete;
  global_heap_scope& operator=(const global_heap_scope&) = delete;

 private:
  void* process_;
};

// What the process heap counts for an allocation of n bytes: its size class
// (16-byte steps to 128, then four classes per doubling up to 8 KiB; above,
// n rounded up to 16).
std::size_t heap_block_size(std::size_t n) noexcept;

}  // namespace ember
