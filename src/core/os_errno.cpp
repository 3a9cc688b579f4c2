// Out of line on purpose: see os_errno.hpp.
#include "core/os_errno.hpp"

#include <cerrno>

namespace ember::detail {

[[gnu::noinline]] int os_errno() noexcept { return errno; }

} // namespace ember::detail
