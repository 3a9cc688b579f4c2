// How a server is named: by pid, by a local name (register_name), or through
// a registry of the user's (Erlang's {via, Module, Name}), so that another
// layer (distribution's cluster-wide names) can plug in.
#pragma once

#include <string>
#include <string_view>

#include "ember/core/pid.hpp"

namespace ember {

// A registry of names. Implementations must be safe to call from any
// process concurrently, and should drop a name when its process exits
// (monitor it) as local names are.
class name_registry {
 public:
  virtual ~name_registry() = default;
  // Registers `name` for `p`; false if the name is taken.
  virtual bool register_name(const std::string& name, pid p) = 0;
  virtual void unregister_name(const std::string& name) = 0;
  // The pid registered as `name`, or the null pid.
  virtual pid whereis_name(const std::string& name) = 0;
};

// A name in a registry.
struct via {
  name_registry* registry = nullptr;
  std::string name;
};

// Where a call, cast or stop goes: a pid, a local name or a via name.
// A parameter type: it refers to the name it was made from.
class server_ref {
 public:
  server_ref(pid p) noexcept : pid_(p) {}
  server_ref(const char* name) noexcept : name_(name) {}
  server_ref(std::string_view name) noexcept : name_(name) {}
  server_ref(const std::string& name) noexcept : name_(name) {}
  server_ref(const via& v) noexcept : name_(v.name), via_(&v) {}

  // The pid the name stands for now; the null pid if nobody has it.
  pid resolve() const;
  // "<0.4.1>", "'db'", "via 'db'": for error messages.
  std::string to_string() const;

 private:
  pid pid_{};
  std::string_view name_;
  const via* via_ = nullptr;
};

}  // namespace ember
