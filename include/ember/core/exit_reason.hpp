// ember::exit_reason — why a process ended, as a value users match on.
#pragma once

#include <any>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>

namespace ember {

// Exit reasons are values, as in Erlang. The common ones are a kind alone
// (no allocation); an exception carries its type name and what(); a user
// reason carries a string and optionally any copyable value.
class exit_reason {
 public:
  enum class kind : std::uint8_t {
    normal,        // the process returned (or exit(normal))
    shutdown,      // asked to stop by its supervisor or by runtime::shutdown
    kill,          // the untrappable signal; a killed process exits with `killed`
    killed,        // the reason of a process ended by `kill`
    noproc,        // the process did not exist (monitor, link of a dead pid)
    noconnection,  // the node of the process is unreachable (distribution)
    exception,     // an uncaught C++ exception
    system_limit,  // a system resource ran out (stacks, mappings)
    heap_limit,    // the process's heap passed its max_heap_bytes
    stack_overflow,  // the process ran off the end of its stack
    fault,         // a synchronous fault (SIGSEGV, SIGFPE...) in the process, isolated
    timeout,       // a call (or start, or stop) got no answer in time
    user,          // any other reason, given by the user
  };

  exit_reason() noexcept = default;  // normal
  // A user reason from text: exit(p, "bad_request").
  exit_reason(const char* text);
  exit_reason(std::string text);
  // A user reason carrying a value; `text` is how it prints.
  template <class T>
  static exit_reason user_value(T value, std::string text) {
    return exit_reason(kind::user, std::move(text), {}, std::any(std::move(value)));
  }

  static exit_reason normal() noexcept { return exit_reason(); }
  static exit_reason shutdown() noexcept { return exit_reason(kind::shutdown); }
  static exit_reason kill() noexcept { return exit_reason(kind::kill); }
  static exit_reason killed() noexcept { return exit_reason(kind::killed); }
  static exit_reason noproc() noexcept { return exit_reason(kind::noproc); }
  static exit_reason noconnection() noexcept { return exit_reason(kind::noconnection); }
  static exit_reason timeout() noexcept { return exit_reason(kind::timeout); }
  static exit_reason exception(std::string type_name, std::string what);
  static exit_reason system_limit(std::string what);
  static exit_reason heap_limit(std::string what);
  static exit_reason stack_overflow(std::string what);
  static exit_reason fault(std::string what);

  kind what_kind() const noexcept { return kind_; }
  bool is(kind k) const noexcept { return kind_ == k; }
  bool is_normal() const noexcept { return kind_ == kind::normal; }
  // For `exception`: the exception's type; for other kinds: empty.
  std::string_view exception_type() const noexcept;
  // For `exception`: what(); for the other kinds made with a text: the text.
  std::string_view text() const noexcept;
  // For a user reason made by user_value<T>: the value, else nullptr.
  template <class T>
  const T* value() const noexcept {
    return data_ ? std::any_cast<T>(&data_->value) : nullptr;
  }

  // "normal", "killed", "exception: std::runtime_error: boom", "bad_request".
  std::string to_string() const;

  // Equal kinds and equal text/type (user values are compared by text).
  friend bool operator==(const exit_reason& a, const exit_reason& b) noexcept;

 private:
  struct data {
    std::string text;
    std::string type_name;
    std::any value;
  };
  explicit exit_reason(kind k) noexcept : kind_(k) {}
  exit_reason(kind k, std::string text, std::string type_name, std::any value);

  kind kind_ = kind::normal;
  std::shared_ptr<const data> data_;  // shared: reasons fan out to every watcher
};

std::ostream& operator<<(std::ostream& os, const exit_reason& r);

}  // namespace ember
