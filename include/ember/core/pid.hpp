// ember::pid — the 64-bit name of a process: node, slot, generation.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

namespace ember {

// A pid names one process for ever: node (12 bits), slot in the node's
// process table (26 bits), generation of that slot (26 bits). A slot is
// reused by later processes but with a new generation, so a stale pid never
// reaches a later process. The null pid (all zero) names no process.
class pid {
 public:
  static constexpr unsigned node_bits = 12;
  static constexpr unsigned slot_bits = 26;
  static constexpr unsigned generation_bits = 26;

  constexpr pid() noexcept = default;
  constexpr pid(std::uint32_t node, std::uint32_t slot, std::uint32_t generation) noexcept
      : bits_((std::uint64_t(node & mask(node_bits)) << (slot_bits + generation_bits)) |
              (std::uint64_t(slot & mask(slot_bits)) << generation_bits) |
              std::uint64_t(generation & mask(generation_bits))) {}

  static constexpr pid from_bits(std::uint64_t bits) noexcept {
    pid p;
    p.bits_ = bits;
    return p;
  }
  constexpr std::uint64_t bits() const noexcept { return bits_; }
  constexpr std::uint32_t node() const noexcept {
    return std::uint32_t(bits_ >> (slot_bits + generation_bits));
  }
  constexpr std::uint32_t slot() const noexcept {
    return std::uint32_t(bits_ >> generation_bits) & mask(slot_bits);
  }
  constexpr std::uint32_t generation() const noexcept {
    return std::uint32_t(bits_) & mask(generation_bits);
  }
  constexpr explicit operator bool() const noexcept { return bits_ != 0; }
  constexpr auto operator<=>(const pid&) const noexcept = default;

  // "<node.slot.generation>", as Erlang prints pids.
  std::string to_string() const;

 private:
  static constexpr std::uint32_t mask(unsigned bits) noexcept { return (1u << bits) - 1; }
  std::uint64_t bits_ = 0;
};

std::ostream& operator<<(std::ostream& os, pid p);

// A monitor reference: unique for the life of the runtime.
struct monitor_ref {
  std::uint64_t id = 0;
  constexpr explicit operator bool() const noexcept { return id != 0; }
  constexpr auto operator<=>(const monitor_ref&) const noexcept = default;
};

// A timer reference returned by send_after.
struct timer_ref {
  std::uint64_t id = 0;
  constexpr explicit operator bool() const noexcept { return id != 0; }
  constexpr auto operator<=>(const timer_ref&) const noexcept = default;
};

}  // namespace ember

template <>
struct std::hash<ember::pid> {
  std::size_t operator()(ember::pid p) const noexcept { return std::hash<std::uint64_t>{}(p.bits()); }
};
template <>
struct std::hash<ember::monitor_ref> {
  std::size_t operator()(ember::monitor_ref r) const noexcept { return std::hash<std::uint64_t>{}(r.id); }
};
