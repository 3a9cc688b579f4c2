// ember::message — a type-erased message as a handler process sees it,
// and the messages the runtime itself delivers (exit_signal, down).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "ember/core/error.hpp"
#include "ember/core/exit_reason.hpp"
#include "ember/core/pid.hpp"

namespace ember {

// Delivered to a process that traps exits when an exit signal reaches it
// (Erlang's {'EXIT', From, Reason}).
struct exit_signal {
  pid from;
  exit_reason reason;
};

// Delivered to a process when a process it monitors exits
// (Erlang's {'DOWN', Ref, process, Pid, Reason}).
struct down {
  monitor_ref ref;
  pid who;
  exit_reason reason;
};

namespace detail {

// Messages are identified by the address of a per-type tag: a pointer
// compare, no RTTI lookup on the receive path.
using type_key = const void*;
template <class T>
struct type_tag {
  static constexpr char tag = 0;
};
template <class T>
constexpr type_key key_of() noexcept {
  return &type_tag<T>::tag;
}

void* envelope_allocate(std::size_t size);
void envelope_free(void* p, std::size_t size) noexcept;

// A message in a mailbox. Runtime signals (link, monitor, exit...) are
// envelopes too, with their own keys, so every wake-up goes through one queue.
struct envelope {
  // Envelopes come from per-thread size-class caches (messages are
  // allocated and freed at a high rate, often on different threads).
  static void* operator new(std::size_t size) { return envelope_allocate(size); }
  static void operator delete(void* p, std::size_t size) noexcept { envelope_free(p, size); }
  static void* operator new(std::size_t size, std::align_val_t a) { return ::operator new(size, a); }
  static void operator delete(void* p, std::size_t, std::align_val_t a) noexcept { ::operator delete(p, a); }

  envelope* next = nullptr;
  type_key key = nullptr;
  void (*destroy)(envelope*) noexcept = nullptr;
  const std::type_info* type = nullptr;
  unsigned char signal = 0;  // 0: a user message; else a runtime signal kind
  std::uint32_t to_generation = 0;  // the receiver's pid generation, checked on arrival
};

template <class T>
struct value_envelope final : envelope {
  T value;
  template <class... A>
  explicit value_envelope(A&&... a) : value(std::forward<A>(a)...) {
    key = key_of<T>();
    destroy = [](envelope* e) noexcept { delete static_cast<value_envelope*>(e); };
    type = &typeid(T);
  }
};

// What a value of type T travels as: string literals become std::string.
template <class T>
using message_type_t = std::conditional_t<
    std::is_convertible_v<T, const char*> && !std::is_same_v<std::decay_t<T>, std::nullptr_t>,
    std::string, std::remove_cvref_t<T>>;

template <class T>
envelope* make_envelope(T&& value) {
  using M = message_type_t<T>;
  static_assert(std::is_move_constructible_v<M>, "ember: a message must be copyable or movable");
  return new value_envelope<M>(std::forward<T>(value));
}

struct envelope_deleter {
  void operator()(envelope* e) const noexcept { e->destroy(e); }
};

std::string demangle(const std::type_info& t);

}  // namespace detail

// A received message whose type is not yet known: handler processes get one
// per message, and a receive handler taking `message&` matches any message.
class message {
 public:
  explicit message(detail::envelope* e) noexcept : env_(e) {}

  template <class T>
  bool is() const noexcept {
    return env_->key == detail::key_of<T>();
  }
  template <class T>
  T* get_if() noexcept {
    return is<T>() ? &static_cast<detail::value_envelope<T>*>(env_)->value : nullptr;
  }
  template <class T>
  T& get() {
    if (T* v = get_if<T>()) return *v;
    throw error(errc::bad_message_type, "message::get<" + detail::demangle(typeid(T)) +
                                            ">: the message is a " + type_name());
  }
  // The demangled C++ type of the message, for diagnostics.
  std::string type_name() const { return detail::demangle(*env_->type); }

 private:
  detail::envelope* env_;
};

}  // namespace ember
