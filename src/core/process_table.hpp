// The process table: pid -> control block in O(1), and slot allocation.
//
// Slots live in chunks of 65,536 control blocks, mmap-ed on demand and never
// unmapped while the node lives (type-stable memory: reading a control block
// through a stale pointer is always safe; `life` then tells it is stale).
// Free slots are kept per scheduler (no atomics on spawn/exit) in front of a
// shared list; the table grows by bumping a high-water mark.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "core/process.hpp"
#include "ember/core/pid.hpp"

namespace ember::detail {

class process_table {
 public:
  static constexpr unsigned chunk_bits = 16;
  static constexpr std::uint32_t chunk_size = 1u << chunk_bits;
  static constexpr std::uint32_t max_chunks = 1u << (pid::slot_bits - chunk_bits);

  struct slot_cache {
    std::vector<std::uint32_t> free;
  };

  explicit process_table(std::uint32_t node_id);
  ~process_table();

  // A control block with no references and the alive bit clear, its
  // generation already set. Throws error(system_limit) when full.
  process* allocate(slot_cache* cache);
  // Gives a finalized slot back (generation already bumped).
  void free_slot(process* p, slot_cache* cache) noexcept;
  void drain(slot_cache& cache) noexcept;

  // A referenced process, or nullptr if `id` names no live process.
  process* acquire(pid id) noexcept {
    if (id.node() != node_id_) return nullptr;
    std::uint32_t slot = id.slot();
    if (slot >= high_water_.load(std::memory_order_acquire)) return nullptr;
    process* p = at(slot);
    std::uint64_t l = p->life.load(std::memory_order_acquire);
    for (;;) {
      if ((std::uint32_t(l >> 32) & gen_mask) != id.generation() || !(l & process::alive_bit)) return nullptr;
      if (p->life.compare_exchange_weak(l, l + 1, std::memory_order_acq_rel, std::memory_order_acquire)) return p;
    }
  }
  // The live process `id` names, without taking a reference: enough for a
  // send (see deliver() in process.cpp), not for anything that must be
  // answered if the process dies meanwhile.
  process* find_alive(pid id) const noexcept {
    if (id.node() != node_id_) return nullptr;
    std::uint32_t slot = id.slot();
    if (slot >= high_water_.load(std::memory_order_acquire)) return nullptr;
    process* p = at(slot);
    std::uint64_t l = p->life.load(std::memory_order_acquire);
    if ((std::uint32_t(l >> 32) & gen_mask) != id.generation() || !(l & process::alive_bit)) return nullptr;
    return p;
  }
  enum class release_outcome : std::uint8_t { still_referenced, last_reference_of_dead };
  [[nodiscard]] static release_outcome release(process* p) noexcept {
    std::uint64_t old = p->life.fetch_sub(1, std::memory_order_acq_rel);
    return ((old & process::ref_mask) == 1 && !(old & process::alive_bit))
               ? release_outcome::last_reference_of_dead
               : release_outcome::still_referenced;
  }

  pid pid_of(const process* p) const noexcept {
    return pid(node_id_, p->slot, p->generation() & gen_mask);
  }
  process* at(std::uint32_t slot) const noexcept {
    return chunks_[slot >> chunk_bits].load(std::memory_order_acquire) + (slot & (chunk_size - 1));
  }
  std::uint32_t high_water() const noexcept { return high_water_.load(std::memory_order_acquire); }
  std::uint32_t node_id() const noexcept { return node_id_; }

  static constexpr std::uint32_t gen_mask = (1u << pid::generation_bits) - 1;

 private:
  std::uint32_t node_id_;
  std::atomic<process*> chunks_[max_chunks];
  std::atomic<std::uint32_t> high_water_{0};
  std::mutex mu_;                      // growth and the shared free list
  std::vector<std::uint32_t> free_;    // shared free slots
};

}  // namespace ember::detail
