// ember::error — the one exception type ember's API throws.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace ember {

enum class errc : std::uint8_t {
  not_in_process,     // a process-only call made from a thread that runs no process
  name_taken,         // register_name: the name is registered already
  no_such_name,       // send/whereis by a name that nobody registered
  not_alive,          // the operation needs a live process and the pid names none
  already_registered, // register_name: the process has a name already
  system_limit,       // a system resource ran out (stack mappings, process slots)
  invalid_argument,   // bad configuration or argument
  bad_message_type,   // message::get<T> on a message of another type
  runtime_stopped,    // the runtime is shut down
};

class error : public std::runtime_error {
 public:
  error(errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

}  // namespace ember
