// Local names: name -> pid, and pid -> name so a dying process frees its
// name. One mutex: registration is rare next to messaging.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "ember/core/pid.hpp"

namespace ember::detail {

class registry {
 public:
  enum class add_outcome : unsigned char { added, name_taken, already_registered };
  // Called with the process known alive; the caller re-checks liveness.
  [[nodiscard]] add_outcome add(const std::string& name, pid p);
  pid find(std::string_view name) const;
  bool remove(std::string_view name);
  void remove_pid(pid p);
  std::size_t size() const;
  // Every registered name by pid (a copy, for observe's tables).
  std::unordered_map<pid, std::string> names_by_pid() const;
  std::mutex& mutex() const { return mu_; }

 private:
  struct hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  mutable std::mutex mu_;
  std::unordered_map<std::string, pid, hash, std::equal_to<>> by_name_;
  std::unordered_map<pid, std::string> by_pid_;
};

}  // namespace ember::detail
