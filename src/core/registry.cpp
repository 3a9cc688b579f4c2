// Local names (see registry.hpp). add() and remove_pid() expect the caller
// to hold mutex(); the others lock.
#include "core/registry.hpp"

#include "core/heap.hpp"

namespace ember::detail {

registry::add_outcome registry::add(const std::string& name, pid p) {
  runtime_alloc_scope global;  // names outlive the process that registers them
  if (by_name_.find(name) != by_name_.end()) return add_outcome::name_taken;
  if (by_pid_.find(p) != by_pid_.end()) return add_outcome::already_registered;
  by_name_.emplace(name, p);
  by_pid_.emplace(p, name);
  return add_outcome::added;
}

pid registry::find(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(name);
  return it == by_name_.end() ? pid() : it->second;
}

bool registry::remove(std::string_view name) {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return false;
  by_pid_.erase(it->second);
  by_name_.erase(it);
  return true;
}

void registry::remove_pid(pid p) {
  auto it = by_pid_.find(p);
  if (it == by_pid_.end()) return;
  by_name_.erase(it->second);
  by_pid_.erase(it);
}

std::size_t registry::size() const {
  std::lock_guard lock(mu_);
  return by_name_.size();
}

std::unordered_map<pid, std::string> registry::names_by_pid() const {
  std::lock_guard lock(mu_);
  return by_pid_;
}

}  // namespace ember::detail
