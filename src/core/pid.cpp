// Printing of pids and refs.
#include "ember/core/pid.hpp"

#include <ostream>

namespace ember {

std::string pid::to_string() const {
  return "<" + std::to_string(node()) + "." + std::to_string(slot()) + "." +
         std::to_string(generation()) + ">";
}

std::ostream& operator<<(std::ostream& os, pid p) { return os << p.to_string(); }

}  // namespace ember
