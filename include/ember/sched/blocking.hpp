// blocking: run a call that blocks (file I/O, DNS, a C library that waits)
// on a separate pool of threads, so that it suspends only the calling
// process, never a scheduler thread (Erlang's dirty schedulers, ZIO's
// attemptBlocking).
//
//   std::string text = ember::blocking([path] { return read_whole_file(path); });
//
// Inside a process only. The pool's threads start on demand, up to
// runtime_options::blocking_threads; calls beyond that wait their turn.
// fn runs outside every process (its allocations are malloc's); its value is
// copied into the caller's heap, its exception rethrown in the caller. A
// process killed while it waits ends at once; fn runs to its end on its
// pool thread and its result is dropped. The runtime's shutdown waits for
// the calls that are running to return.
#pragma once

#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "ember/core/heap.hpp"
#include "ember/core/pid.hpp"

namespace ember {

namespace detail {

// One call on the pool: run() calls the function and keeps its value or
// exception; the pool then wakes the waiting process.
struct blocking_job {
  virtual ~blocking_job() = default;
  virtual void run() noexcept = 0;
  std::exception_ptr error;
};
// Queues job for the pool and suspends the calling process until it has
// run. Throws error(not_in_process) outside a process.
void blocking_run(const std::shared_ptr<blocking_job>& job);

template <class F>
struct blocking_call final : blocking_job {
  using R = std::invoke_result_t<F&>;
  F fn;
  std::optional<std::conditional_t<std::is_void_v<R>, bool, R>> value;
  explicit blocking_call(F f) : fn(std::move(f)) {}
  void run() noexcept override {
    try {
      if constexpr (std::is_void_v<R>) {
        fn();
        value.emplace(true);
      } else {
        value.emplace(fn());
      }
    } catch (...) {
      error = std::current_exception();
    }
  }
};

}  // namespace detail

template <class F>
auto blocking(F fn) -> std::invoke_result_t<F&> {
  using R = std::invoke_result_t<F&>;
  static_assert(!std::is_reference_v<R>, "ember::blocking: fn must return a value, not a reference");
  std::shared_ptr<detail::blocking_call<F>> job;
  {
    // The job outlives the caller if it is killed while waiting: it and the
    // copy of fn live in the global heap, not the caller's.
    global_heap_scope runtime_owned;
    if constexpr (std::is_copy_constructible_v<F>) {
      job = std::make_shared<detail::blocking_call<F>>(static_cast<const F&>(fn));
    } else {
      job = std::make_shared<detail::blocking_call<F>>(std::move(fn));
    }
  }
  detail::blocking_run(job);
  if (job->error) std::rethrow_exception(job->error);
  if constexpr (!std::is_void_v<R>) {
    if constexpr (std::is_copy_constructible_v<R>) {
      return R(std::as_const(*job->value));  // into the caller's heap
    } else {
      return std::move(*job->value);
    }
  }
}

}  // namespace ember
