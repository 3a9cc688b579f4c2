// The I/O poller: how a process waits for a socket without blocking its
// scheduler thread.
//
// Readiness, not completion. Every descriptor ember opens is non-blocking
// and registered once for both directions: with an epoll instance,
// edge-triggered (the default), or, when asked for (runtime_options::
// io_backend, EMBER_IO=io_uring) and the build and kernel allow it, with
// an io_uring as a multishot poll request (one completion per wake-up of
// the socket). The choice is made when the runtime starts;
// stats().io_backend names it. epoll is the default because it measured
// faster: the kernel turns each wake-up of an io_uring poll request into
// task work for the thread that submitted it (an interruption of that
// thread, wherever it is), and W11 made 35-40% fewer round trips, with a
// p99 three times longer. io_uring would pay with completion-based reads
// and writes on a ring per scheduler; that is not built.
// An operation is tried first (read, write, accept); only when the kernel
// says EAGAIN does the process wait, and then it waits in its mailbox
// (await_wake, core/resource.hpp): it is suspended, its thread runs other
// processes, and kill or an exit signal reaches it as anywhere else.
// io_uring's completion-based reads and writes would save the first try's
// system call; they are not used yet (see the README).
//
// Per descriptor and direction, one atomic word decides who wakes whom:
//   word = seq << 3 | tag,   tag: idle, ready, waiting, armed, busy,
//                                  busy_pending, closed
//   poller (an edge arrived): waiting -> idle and wake the waiter with seq;
//                             armed -> busy, run the active-mode reader
//                             (busy -> idle, or back to armed on EAGAIN);
//                             busy -> busy_pending (the reader reads again);
//                             idle -> ready.
//   process (got EAGAIN):     ready -> idle, and try again;
//                             idle -> waiting (seq + 1), then await_wake(seq).
//   close:                    anything but busy -> closed (waits out busy,
//                             so the active reader never reads a descriptor
//                             that is closed and perhaps reused).
// An edge that comes between the EAGAIN and the wait is never lost: it
// leaves `ready`, which the process finds. seq makes every wait distinct,
// so a wake meant for a wait that has timed out is dropped, never taken
// for the next one (ABA). Spurious wakes are harmless: the operation is
// simply tried again.
//
// io_uring's advantage here is the look without blocking: it reads the
// completion ring in memory, where epoll_wait(0) is a system call. Its
// rings are single-consumer: one thread reaps at a time (a try-lock for
// the look; the parked poller holds it through its wait, so that nobody
// else reaps the interrupt meant for it). Submissions have their own lock, never held while
// reaping (reaping renews polls and wakes parked schedulers). A poll
// request holds its file: the socket's close removes it, and a removal
// that finds it busy (-EALREADY) is sent again, or the file, and the
// connection's FIN, would live on. The close then waits until the request's
// last completion is reaped (by itself or the parked poller), so that a
// closed socket's port can be bound again at once, as with epoll. (The
// kernel drops the request's hold on the file just after posting that
// completion, in the thread that submitted it: a window of a few
// instructions that user space cannot close.)
//
// Who polls (Go's netpoller): schedulers, never a thread of its own.
//   - a scheduler about to spin for work, and one in every 61 turns while
//     busy, polls without blocking; the processes it wakes go to its own
//     run queue, so a busy runtime takes I/O events without a single
//     cross-thread wake-up;
//   - a scheduler about to park blocks in epoll_wait instead of its futex
//     (one at a time), so an idle runtime still wakes on I/O. The others
//     wake it through an eventfd in the same epoll set.
//
// Handles are type-stable: a slot is reused (with a new generation) but
// never freed while the runtime lives, so an event that races with a close
// touches a live object and at worst wakes somebody spuriously.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/process.hpp"

namespace ember::detail {

struct node;
class io_poller;

enum class io_dir : std::uint8_t { read, write };

struct io_handle final : resource {
  static constexpr std::uint64_t tag_idle = 0, tag_ready = 1, tag_waiting = 2, tag_armed = 3, tag_busy = 4,
                                 tag_busy_pending = 5, tag_closed = 6, tag_mask = 7;

  std::atomic<std::uint64_t> state[2] = {0, 0};   // per io_dir
  std::atomic<std::uint64_t> waiter[2] = {0, 0};  // pid::raw() of the waiting process
  std::atomic<std::uint32_t> gen{1};
  // io_uring: the live poll request's generation (its low 16 bits, | 1 << 16),
  // 0 once the kernel has ended it. A close waits for 0: the request holds
  // the file, and with it the socket's port and its FIN.
  std::atomic<std::uint32_t> live_poll{0};
  std::atomic<std::uint64_t> owner{0};            // pid::raw(): active-mode messages go here
  int fd = -1;
  std::uint32_t index = 0;
  io_poller* poller = nullptr;
  // Active mode (armed): called by the poller when data may be readable.
  void (*on_active)(io_handle& h) noexcept = nullptr;
  // Bytes read ahead (read_line) and not yet consumed: malloc'd, so that a
  // socket given to another process does not point into the giver's heap.
  char* buf = nullptr;
  std::size_t buf_begin = 0, buf_end = 0, buf_cap = 0;
  int kind = 0;  // the I/O layer's: stream, listener, datagram
  // The I/O layer's: the peer's address, kept for error messages (after a
  // reset the kernel no longer tells it).
  unsigned char peer[128] = {};
  unsigned peer_len = 0;

  io_handle* next_free = nullptr;

  void release(std::uint32_t g) noexcept override;
  bool held_by(std::uint32_t g, pid p) const noexcept override {
    return gen.load(std::memory_order_acquire) == g && owner.load(std::memory_order_acquire) == p.bits();
  }
};

class io_poller {
 public:
  // choice: 0 automatic, 1 epoll, 2 io_uring (ember::io_backend).
  io_poller(node& n, int choice);
  ~io_poller();
  io_poller(const io_poller&) = delete;
  io_poller& operator=(const io_poller&) = delete;

  // Registers a non-blocking descriptor; the handle owns it from now on
  // (it is closed by close()/release, or here if registration fails).
  io_handle* open(int fd);
  // Deregisters and closes the descriptor if gen still names this use of h.
  void close(io_handle& h, std::uint32_t gen) noexcept;

  // Waits for events up to timeout_ms (0: just looks; -1: until one comes
  // or interrupt()) and wakes their processes. Returns the number of
  // descriptor events handled (the eventfd's not counted).
  int poll(int timeout_ms) noexcept;
  void interrupt() noexcept;
  std::size_t registered() const noexcept { return registered_.load(std::memory_order_relaxed); }
  const char* backend() const noexcept { return uring_ ? "io_uring" : "epoll"; }

  // The blocking poller role (one parked scheduler at a time).
  std::atomic<bool> blocker_taken{false};

 private:
  void ready(io_handle& h, io_dir d) noexcept;
  void ready_mask(io_handle& h, std::uint32_t poll_mask) noexcept;
  void open_epoll();
  bool open_uring(std::string* why);
  int poll_uring(int timeout_ms) noexcept;
  int reap_uring() noexcept;  // with the reaping lock held
  // A poll request (tag = uring_tag) or its removal; throws system_limit.
  // Returns false if a poll request was not submitted because its handle
  // was closed meanwhile.
  bool uring_submit(std::uint64_t tag, bool removal);
  void uring_poll_ended(std::uint64_t tag) noexcept;
  void uring_await_poll_end(io_handle& h, std::uint32_t gen) noexcept;

  node& node_;
  int epfd_ = -1;
  int eventfd_ = -1;
  struct uring;                 // io_poller.cpp (liburing)
  uring* uring_ = nullptr;
  std::atomic<std::size_t> registered_{0};
  std::mutex mu_;  // the free list and chunk growth
  io_handle* free_ = nullptr;
  std::vector<std::unique_ptr<io_handle[]>> chunks_;
  static constexpr std::uint32_t chunk_size = 256;
};

// Suspends the calling process until h may be ready in direction d
// (true; the caller retries its operation) or the deadline passes (false).
// Throws error(invalid_argument) if another process is already waiting on
// the same handle and direction.
bool io_wait(io_handle& h, io_dir d, std::int64_t deadline_ns);

// Active mode: the owner gets the next data as a message. Arms the read
// side; if it is ready already, runs on_active at once (on this thread).
void io_arm_active(io_handle& h) noexcept;
// The active reader's end: rearm (it got EAGAIN) or go idle (it delivered
// something). False if an edge came while it read: read again.
bool io_active_done(io_handle& h, bool rearm) noexcept;

}  // namespace ember::detail
