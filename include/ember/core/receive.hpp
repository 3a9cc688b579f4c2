// receive: selective receive with guards and a timeout, as Erlang's
//
//   auto n = ember::receive(
//       [](int x) { return x; },                                   // any int
//       ember::when([](const std::string& s) { return !s.empty(); },
//                   [](std::string s) { return int(s.size()); }),  // guarded
//       ember::after(100ms, [] { return -1; }));                   // timeout
//
// takes the FIRST message in the mailbox that some clause accepts (clauses
// tried in order for each message), leaving the others where they are, in
// order. Blocks the process, never the thread. after(0ms, ...) polls. A
// clause taking ember::message& accepts any message. All clauses return the
// same type, which receive returns.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "ember/core/message.hpp"

namespace ember {

template <class F>
struct after_clause {
  std::chrono::nanoseconds timeout;
  F fn;
};
// The timeout clause: runs fn if no message matched within `timeout`.
template <class Rep, class Period, class F>
after_clause<std::decay_t<F>> after(std::chrono::duration<Rep, Period> timeout, F&& fn) {
  return {std::chrono::duration_cast<std::chrono::nanoseconds>(timeout), std::forward<F>(fn)};
}

template <class G, class F>
struct when_clause {
  G guard;
  F fn;
};
// A guarded clause: accepts a message of fn's argument type only if
// guard(const value&) is true.
template <class G, class F>
when_clause<std::decay_t<G>, std::decay_t<F>> when(G&& guard, F&& fn) {
  return {std::forward<G>(guard), std::forward<F>(fn)};
}

namespace detail {

// The argument and result of a one-argument callable.
template <class F>
struct callable_traits : callable_traits<decltype(&F::operator())> {};
#define EMBER_CALLABLE_TRAITS(QUAL)                       \
  template <class C, class R, class A>                    \
  struct callable_traits<R (C::*)(A) QUAL> {              \
    using arg = A;                                        \
    using result = R;                                     \
  };
EMBER_CALLABLE_TRAITS()
EMBER_CALLABLE_TRAITS(const)
EMBER_CALLABLE_TRAITS(noexcept)
EMBER_CALLABLE_TRAITS(const noexcept)
#undef EMBER_CALLABLE_TRAITS
template <class R, class A>
struct callable_traits<R (*)(A)> {
  using arg = A;
  using result = R;
};

template <class H>
struct clause_traits {
  using fn = H;
  using arg = typename callable_traits<H>::arg;
  using value = std::remove_cvref_t<arg>;
  using result = typename callable_traits<H>::result;
  static constexpr bool guarded = false;
};
template <class G, class F>
struct clause_traits<when_clause<G, F>> : clause_traits<F> {
  static constexpr bool guarded = true;
};

template <class H>
constexpr bool is_after_v = false;
template <class F>
constexpr bool is_after_v<after_clause<F>> = true;

template <class V>
V& value_of(envelope* e) {
  return static_cast<value_envelope<V>*>(e)->value;
}

template <class H>
bool clause_matches(H& h, envelope* e) {
  using T = clause_traits<H>;
  using V = typename T::value;
  if constexpr (std::is_same_v<V, message>) {
    return true;
  } else {
    if (e->key != key_of<V>()) return false;
    if constexpr (T::guarded) {
      return static_cast<bool>(h.guard(std::as_const(value_of<V>(e))));
    } else {
      (void)h;
      return true;
    }
  }
}

// The envelope a handler is working on, recorded in the process so that an
// exit without unwinding (heap limit, stack overflow) still frees it.
void hold_message(envelope* e) noexcept;
void drop_message(envelope* e) noexcept;
struct held_message {
  envelope* e;
  explicit held_message(envelope* env) noexcept : e(env) { hold_message(e); }
  ~held_message() { drop_message(e); }
  held_message(const held_message&) = delete;
  held_message& operator=(const held_message&) = delete;
};

// Small plain values are copied onto the stack and their envelope freed
// before the handler runs: nothing of the message is left to leak if the
// process ends without unwinding.
template <class V>
constexpr bool copy_out_v = std::is_trivially_copyable_v<V> && sizeof(V) <= 256;

// Runs clause h on e, which it owns.
// GCC 12 reports a std::string moved out of an envelope into a by-value
// parameter as "maybe uninitialized" (a known false positive of its
// inlined std::string code); the value is always constructed.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
template <class H>
decltype(auto) clause_invoke(H& h, envelope* e) {
  using T = clause_traits<H>;
  using V = typename T::value;
  auto& fn = [&]() -> auto& {
    if constexpr (T::guarded) return h.fn; else return h;
  }();
  constexpr bool by_lvalue = std::is_lvalue_reference_v<typename T::arg> &&
                             !std::is_const_v<std::remove_reference_t<typename T::arg>>;
  if constexpr (std::is_same_v<V, message>) {
    held_message held(e);
    message m(e);
    return fn(m);
  } else if constexpr (copy_out_v<V>) {
    V v = value_of<V>(e);
    e->destroy(e);
    if constexpr (by_lvalue) return fn(v); else return fn(std::move(v));
  } else if constexpr (std::is_trivially_copyable_v<V>) {
    held_message held(e);  // a large plain value: its envelope is in transit
    if constexpr (by_lvalue) return fn(value_of<V>(e)); else return fn(std::move(value_of<V>(e)));
  } else {
    // In this process's heap (copied in when it arrived): an exit without
    // unwinding reclaims it with the heap.
    std::unique_ptr<envelope, envelope_deleter> owned(e);
    if constexpr (by_lvalue) return fn(value_of<V>(e)); else return fn(std::move(value_of<V>(e)));
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// How the runtime asks a receive whether an envelope matches: the index of
// the first accepting clause, or -1.
struct match_fn {
  int (*fn)(void* ctx, envelope* e);
  void* ctx;
};
struct receive_outcome {
  envelope* env;  // nullptr: timed out
  int index;
};
// Blocks until a message matches or timeout_ns passes (< 0: never).
receive_outcome receive_match(match_fn match, std::int64_t timeout_ns);

template <class Tuple, std::size_t... I>
int match_index([[maybe_unused]] Tuple& t, [[maybe_unused]] envelope* e, std::index_sequence<I...>) {
  int found = -1;
  (void)((clause_matches(std::get<I>(t), e) ? (found = int(I), true) : false) || ...);
  return found;
}

template <class R, class Tuple, std::size_t... I>
R invoke_index([[maybe_unused]] Tuple& t, [[maybe_unused]] int index, envelope* e,
               std::index_sequence<I...>) {
  if constexpr (std::is_void_v<R>) {
    (void)((index == int(I) ? (clause_invoke(std::get<I>(t), e), true) : false) || ...);
  } else {
    std::optional<R> r;
    (void)((index == int(I) ? (r.emplace(clause_invoke(std::get<I>(t), e)), true) : false) || ...);
    return std::move(*r);
  }
}

template <class... H>
struct last_of {
  using type = std::tuple_element_t<sizeof...(H) - 1, std::tuple<H...>>;
};

template <class H>
struct result_of_clause {
  using type = typename clause_traits<H>::result;
};
template <class F>
struct result_of_clause<after_clause<F>> {
  using type = std::invoke_result_t<F&>;
};

}  // namespace detail

template <class... H>
auto receive(H... clauses) {
  static_assert(sizeof...(H) > 0, "ember::receive needs at least one clause");
  using first_result = typename detail::result_of_clause<std::tuple_element_t<0, std::tuple<H...>>>::type;
  static_assert((std::is_same_v<first_result, typename detail::result_of_clause<H>::type> && ...),
                "ember::receive: every clause must return the same type");
  using R = first_result;
  constexpr bool timed = detail::is_after_v<typename detail::last_of<H...>::type>;
  constexpr std::size_t n = sizeof...(H) - (timed ? 1 : 0);
  static_assert(((detail::is_after_v<H> ? 1 : 0) + ...) == (timed ? 1 : 0),
                "ember::receive: after(...) must be the last clause, and only one");
  auto all = std::tuple<H...>(std::move(clauses)...);
  using seq = std::make_index_sequence<n>;
  auto matcher = [](void* ctx, detail::envelope* e) -> int {
    return detail::match_index(*static_cast<decltype(all)*>(ctx), e, seq{});
  };
  std::int64_t timeout_ns = -1;
  if constexpr (timed) {
    timeout_ns = std::max<std::int64_t>(0, std::get<n>(all).timeout.count());
  }
  detail::receive_outcome out = detail::receive_match({matcher, &all}, timeout_ns);
  if constexpr (timed) {
    if (out.env == nullptr) return std::get<n>(all).fn();
  }
  return detail::invoke_index<R>(all, out.index, out.env, seq{});
}

namespace detail {
template <class H>
bool dispatch_clause(message& m, H& h) {
  using T = clause_traits<H>;
  using V = typename T::value;
  auto& fn = [&]() -> auto& {
    if constexpr (T::guarded) return h.fn; else return h;
  }();
  if constexpr (std::is_same_v<V, message>) {
    fn(m);
    return true;
  } else {
    V* v = m.get_if<V>();
    if (!v) return false;
    if constexpr (T::guarded) {
      if (!static_cast<bool>(h.guard(std::as_const(*v)))) return false;
    }
    constexpr bool by_lvalue = std::is_lvalue_reference_v<typename T::arg> &&
                               !std::is_const_v<std::remove_reference_t<typename T::arg>>;
    if constexpr (by_lvalue) fn(*v); else fn(std::move(*v));
    return true;
  }
}
}  // namespace detail

// The clauses of receive applied to a message already in hand (a handler's,
// a gen_server callback's): runs the first clause that accepts it (by type,
// when(guard, fn), or message& for anything). Throws error(bad_message_type)
// if none does, so a server given a request it has no clause for crashes
// with a reason that names the type (as Erlang's function_clause).
template <class... H>
void dispatch(message& m, H&&... clauses) {
  static_assert(sizeof...(H) > 0, "ember::dispatch needs at least one clause");
  bool done = false;
  (void)((done = detail::dispatch_clause(m, clauses)) || ...);
  if (!done) throw error(errc::bad_message_type, "dispatch: no clause takes a message of type " + m.type_name());
}

}  // namespace ember
