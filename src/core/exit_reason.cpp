// exit_reason: construction, comparison, printing; demangling for messages.
#include "ember/core/exit_reason.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <string_view>
#include <utility>
#include <ostream>

#include "core/heap.hpp"
#include "ember/core/message.hpp"

namespace ember {

exit_reason::exit_reason(const char* text) : exit_reason(std::string(text ? text : "")) {}

exit_reason::exit_reason(std::string text) : exit_reason(kind::user, std::move(text), {}, {}) {}

// A reason fans out to other processes and outlives the one that made it:
// its data is copied (never moved: a moved string keeps its buffer) into the
// global heap.
exit_reason::exit_reason(kind k, std::string text, std::string type_name, std::any value) : kind_(k) {
  detail::runtime_alloc_scope global;
  data_ = std::make_shared<const data>(data{std::string(text), std::string(type_name), std::any(value)});
}

exit_reason exit_reason::heap_limit(std::string what) {
  return exit_reason(kind::heap_limit, std::move(what), {}, {});
}

exit_reason exit_reason::stack_overflow(std::string what) {
  return exit_reason(kind::stack_overflow, std::move(what), {}, {});
}

exit_reason exit_reason::fault(std::string what) {
  return exit_reason(kind::fault, std::move(what), {}, {});
}

exit_reason exit_reason::exception(std::string type_name, std::string what) {
  return exit_reason(kind::exception, std::move(what), std::move(type_name), {});
}

exit_reason exit_reason::system_limit(std::string what) {
  return exit_reason(kind::system_limit, std::move(what), {}, {});
}

std::string_view exit_reason::exception_type() const noexcept {
  return data_ ? std::string_view(data_->type_name) : std::string_view();
}

std::string_view exit_reason::text() const noexcept {
  return data_ ? std::string_view(data_->text) : std::string_view();
}

std::string exit_reason::to_string() const {
  switch (kind_) {
    case kind::normal: return "normal";
    case kind::shutdown: return "shutdown";
    case kind::kill: return "kill";
    case kind::killed: return "killed";
    case kind::noproc: return "noproc";
    case kind::noconnection: return "noconnection";
    case kind::exception: return "exception: " + std::string(exception_type()) + ": " + std::string(text());
    case kind::system_limit: return "system_limit: " + std::string(text());
    case kind::heap_limit: return "heap_limit: " + std::string(text());
    case kind::stack_overflow: return "stack_overflow: " + std::string(text());
    case kind::fault: return "fault: " + std::string(text());
    case kind::timeout: return "timeout";
    case kind::user: return std::string(text());
  }
  return "?";
}

bool operator==(const exit_reason& a, const exit_reason& b) noexcept {
  return a.kind_ == b.kind_ && a.text() == b.text() && a.exception_type() == b.exception_type();
}

std::ostream& operator<<(std::ostream& os, const exit_reason& r) { return os << r.to_string(); }

namespace detail {
std::string demangle(const std::type_info& t) {
  int status = 0;
  char* name = abi::__cxa_demangle(t.name(), nullptr, nullptr, &status);
  std::string out = (status == 0 && name) ? name : t.name();
  std::free(name);
  // Spell the standard strings as people write them.
  static const std::pair<std::string_view, std::string_view> short_names[] = {
      {"std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >", "std::string"},
      {"std::__cxx11::", "std::"},
  };
  for (auto [from, to] : short_names) {
    for (std::size_t at = out.find(from); at != std::string::npos; at = out.find(from, at + to.size()))
      out.replace(at, from.size(), to);
  }
  return out;
}
}  // namespace detail

}  // namespace ember
