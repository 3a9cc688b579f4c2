// Timers: send_after, cancel_timer, sleep_for (inside a process; outside,
// runtime::send_after). A timer whose destination exits is cancelled.
#pragma once

#include <chrono>
#include <cstdint>
#include <utility>

#include "ember/core/message.hpp"
#include "ember/core/pid.hpp"

namespace ember {

namespace detail {
struct node;
timer_ref arm_send_after(node* n, std::chrono::nanoseconds delay, pid to, envelope* e);
bool cancel_timer(node* n, timer_ref ref);
}  // namespace detail

// Delivers `msg` to `to` after `delay`. Returns a reference for cancel_timer.
template <class Rep, class Period, class T>
timer_ref send_after(std::chrono::duration<Rep, Period> delay, pid to, T&& msg) {
  return detail::arm_send_after(nullptr, std::chrono::duration_cast<std::chrono::nanoseconds>(delay),
                                to, detail::make_envelope(std::forward<T>(msg)));
}

// Cancels a timer. True if it had not fired yet (its message will never be
// delivered); false if it fired, was cancelled already or is unknown.
bool cancel_timer(timer_ref ref);

// Suspends the calling process (not its thread) for `d`. Exit signals still
// reach it while it sleeps.
void sleep_for(std::chrono::nanoseconds d);

}  // namespace ember
