// server_ref: resolving the three ways a server is named.
#include "ember/otp/registry.hpp"

#include "ember/core/process.hpp"

namespace ember {

pid server_ref::resolve() const {
  if (pid_) return pid_;
  if (via_) return via_->registry ? via_->registry->whereis_name(via_->name) : pid{};
  return whereis(name_);
}

std::string server_ref::to_string() const {
  if (pid_) return pid_.to_string();
  if (via_) return "via '" + via_->name + "'";
  return "'" + std::string(name_) + "'";
}

}  // namespace ember
