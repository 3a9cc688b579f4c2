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
#include "ember/core/heap.hpp"
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
  // In transit and holding memory of its own (a value that is not trivially
  // copyable): copies it into the receiving process's heap, frees itself
  // and returns the copy. nullptr: nothing to copy.
  envelope* (*materialize)(envelope*) = nullptr;
  // Request/reply traffic (gen_server, otp/): a call carries its caller and
  // the call's alias; a reply carries the alias and is dropped on arrival
  // unless its receiver still waits for it (process.cpp, drain).
  std::uint64_t alias = 0;
  pid caller{};
  unsigned char signal = 0;  // 0: a user message; else a runtime signal kind
  unsigned char flavor = 0;  // message_flavor: what a user message is to gen_server
  std::uint32_t to_generation = 0;  // the receiver's pid generation, checked on arrival
};

// What a user message is, for OTP behaviours.
enum message_flavor : unsigned char {
  flavor_plain = 0,  // an ordinary send: handle_info
  flavor_call,       // a gen_server call: caller and alias set
  flavor_cast,       // a gen_server cast
  flavor_reply,      // the answer to a call: alias set
  flavor_system,     // a behaviour's own control message (stop, ...)
};

// Message values are copied into the receiver's heap: a type qualifies if it
// can be copied (or is trivially copyable). Move-only values cannot be
// isolated; send an ember::shared<T> instead.
template <class T>
concept sendable_value = std::is_trivially_copyable_v<T> || std::is_copy_constructible_v<T>;

struct in_heap_tag {};

template <class T>
struct value_envelope final : envelope {
  T value;
  // In transit: made by the sender, in the global heap.
  template <class... A>
  explicit value_envelope(A&&... a) : value(std::forward<A>(a)...) {
    key = key_of<T>();
    destroy = [](envelope* e) noexcept { delete static_cast<value_envelope*>(e); };
    type = &typeid(T);
    if constexpr (!std::is_trivially_copyable_v<T>) materialize = &copy_into_current_heap;
  }
  // In the receiver's heap (operator new while its heap is current).
  value_envelope(in_heap_tag, const T& v) : value(v) {
    key = key_of<T>();
    destroy = [](envelope* e) noexcept {
      auto* self = static_cast<value_envelope*>(e);
      self->~value_envelope();
      ::operator delete(static_cast<void*>(self));
    };
    type = &typeid(T);
  }
  static envelope* copy_into_current_heap(envelope* e) {
    auto* from = static_cast<value_envelope*>(e);
    void* mem = ::operator new(sizeof(value_envelope));
    value_envelope* to;
    try {
      to = ::new (mem) value_envelope(in_heap_tag{}, std::as_const(from->value));
    } catch (...) {
      ::operator delete(mem);
      throw;
    }
    to->to_generation = from->to_generation;
    to->alias = from->alias;
    to->caller = from->caller;
    to->flavor = from->flavor;
    delete from;
    return to;
  }
};

// What a value of type T travels as: string literals become std::string.
template <class T>
using message_type_t = std::conditional_t<
    std::is_convertible_v<T, const char*> && !std::is_same_v<std::decay_t<T>, std::nullptr_t>,
    std::string, std::remove_cvref_t<T>>;

// The sender's side: the value is copied (never moved: a moved value would
// keep memory of the sender's heap) into an envelope in the global heap;
// the receiver copies it into its own heap when it takes it in.
template <class T>
envelope* make_envelope(T&& value) {
  using M = message_type_t<T>;
  static_assert(sendable_value<M>,
                "ember: a message is copied into the receiver's heap, so its type must be copyable; "
                "wrap a move-only or large payload in ember::shared<T>");
  if constexpr (std::is_trivially_copyable_v<M>) {
    return new value_envelope<M>(std::forward<T>(value));
  } else {
    global_heap_scope transit;
    if constexpr (std::is_same_v<std::remove_cvref_t<T>, M>) {
      return new value_envelope<M>(std::as_const(value));
    } else {
      return new value_envelope<M>(std::forward<T>(value));
    }
  }
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
