// errno, read where a process may have moved threads.
//
// A process that waits (receive, a socket operation, any suspension) may
// resume on another scheduler thread. errno is per thread, and glibc
// declares __errno_location() `const`, so GCC computes errno's address once
// per function and reuses it across calls: after a wait, a plain `errno`
// read after a system call may read the errno of the thread the process
// ran on before (seen as a connect failing with EINPROGRESS, the previous
// thread's value, where getpeername had said ENOTCONN). os_errno() is a
// call the compiler cannot fold, so it reads this thread's errno. Use it in
// code that runs in processes; pool threads and schedulers may use errno.
#pragma once

namespace ember::detail {

int os_errno() noexcept;

} // namespace ember::detail
