// The ping-pong pair that W6 and W7 time: its messages and the ponger.
#pragma once

#include <ember/ember.hpp>

#include <cstdint>

namespace bench {

struct ping {
  ember::pid from;
};
struct pong {};
struct stop_ponger {};
struct ponger_done {
  std::int64_t answered;
};

// Answers every ping with a pong until stop_ponger, then tells `report_to`
// how many it answered.
inline void ponger_loop(ember::pid report_to) {
  std::int64_t answered = 0;
  bool running = true;
  while (running) {
    ember::receive(
        [&](ping p) {
          ember::send(p.from, pong{});
          ++answered;
        },
        [&](stop_ponger) { running = false; });
  }
  ember::send(report_to, ponger_done{answered});
}

}  // namespace bench
