// ember::io_error — what socket and file operations throw.
#pragma once

#include <string>

#include "ember/core/error.hpp"

namespace ember {

// code(): io_failed (sys_errno() says why: ECONNREFUSED, ENOENT...),
// timed_out (sys_errno() 0) or closed. what() names the operation and the
// address or path: "net: connect 127.0.0.1:9: Connection refused",
// "fs: open /no/such: No such file or directory".
class io_error : public error {
 public:
  io_error(errc code, int sys_errno, const std::string& what) : error(code, what), errno_(sys_errno) {}
  int sys_errno() const noexcept { return errno_; }

 private:
  int errno_;
};

}  // namespace ember
