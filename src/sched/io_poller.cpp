// The I/O poller (design in io_poller.hpp).
#include "sched/io_poller.hpp"

#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/node.hpp"
#include "core/resource.hpp"
#include "ember/core/error.hpp"
#include "ember/core/process.hpp"

namespace ember::detail {

namespace {
constexpr std::uint64_t tag_of(std::uint64_t w) noexcept { return w & io_handle::tag_mask; }
constexpr std::uint64_t with_tag(std::uint64_t w, std::uint64_t tag) noexcept {
  return (w & ~io_handle::tag_mask) | tag;
}
}  // namespace

void io_handle::release(std::uint32_t g) noexcept { poller->close(*this, g); }

io_poller::io_poller(node& n) : node_(n) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0)
    throw error(errc::system_limit, std::string("I/O poller: epoll_create1: ") + std::strerror(errno));
  eventfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (eventfd_ < 0) {
    int e = errno;
    ::close(epfd_);
    throw error(errc::system_limit, std::string("I/O poller: eventfd: ") + std::strerror(e));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: a pending interrupt is seen by the next wait
  ev.data.ptr = nullptr;
  ::epoll_ctl(epfd_, EPOLL_CTL_ADD, eventfd_, &ev);
}

io_poller::~io_poller() {
  // Processes are gone (they released what they owned); what is left was
  // in flight to a process that never took it.
  for (auto& chunk : chunks_)
    for (std::uint32_t i = 0; i < chunk_size; ++i) {
      io_handle& h = chunk[i];
      if (h.fd >= 0) ::close(h.fd);
      std::free(h.buf);
    }
  ::close(eventfd_);
  ::close(epfd_);
}

io_handle* io_poller::open(int fd) {
  io_handle* h;
  {
    std::lock_guard lock(mu_);
    if (!free_) {
      try {
        auto chunk = std::make_unique<io_handle[]>(chunk_size);
        std::uint32_t base = std::uint32_t(chunks_.size() * chunk_size);
        for (std::uint32_t i = chunk_size; i-- > 0;) {
          chunk[i].index = base + i;
          chunk[i].poller = this;
          chunk[i].next_free = free_;
          free_ = &chunk[i];
        }
        chunks_.push_back(std::move(chunk));
      } catch (...) {
        ::close(fd);
        throw;
      }
    }
    h = free_;
    free_ = h->next_free;
  }
  h->next_free = nullptr;
  h->fd = fd;
  h->kind = 0;
  h->on_active = nullptr;
  h->owner.store(0, std::memory_order_relaxed);
  for (auto& s : h->state) {
    // A new seq, so that nothing meant for the slot's last use matches.
    std::uint64_t w = s.load(std::memory_order_relaxed);
    s.store(((w >> 3) + 1) << 3 | io_handle::tag_idle, std::memory_order_release);
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = h;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    int e = errno;
    std::uint32_t g = h->gen.load(std::memory_order_relaxed);
    close(*h, g);
    throw error(errc::system_limit, std::string("I/O poller: epoll_ctl: ") + std::strerror(e));
  }
  registered_.fetch_add(1, std::memory_order_relaxed);
  return h;
}

void io_poller::close(io_handle& h, std::uint32_t g) noexcept {
  std::uint32_t next = g + 1 == 0 ? 1 : g + 1;
  if (!h.gen.compare_exchange_strong(g, next, std::memory_order_acq_rel)) return;
  // Wait out an active reader (another thread, one recv long), then no
  // poller touches the descriptor again.
  for (auto& s : h.state) {
    std::uint64_t w = s.load(std::memory_order_acquire);
    for (;;) {
      std::uint64_t t = tag_of(w);
      if (t == io_handle::tag_busy || t == io_handle::tag_busy_pending) {
        ::sched_yield();
        w = s.load(std::memory_order_acquire);
        continue;
      }
      if (s.compare_exchange_weak(w, with_tag(w, io_handle::tag_closed), std::memory_order_acq_rel)) break;
    }
  }
  bool was_registered = h.fd >= 0;
  if (h.fd >= 0) {
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, h.fd, nullptr);
    ::close(h.fd);
    h.fd = -1;
  }
  std::free(h.buf);
  h.buf = nullptr;
  h.buf_begin = h.buf_end = h.buf_cap = 0;
  h.on_active = nullptr;
  if (was_registered) registered_.fetch_sub(1, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  h.next_free = free_;
  free_ = &h;
}

int io_poller::poll(int timeout_ms) noexcept {
  epoll_event evs[128];
  int n = ::epoll_wait(epfd_, evs, 128, timeout_ms);
  int handled = 0;
  for (int i = 0; i < n; ++i) {
    auto* h = static_cast<io_handle*>(evs[i].data.ptr);
    if (!h) {
      std::uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(eventfd_, &v, sizeof v);
      continue;
    }
    std::uint32_t e = evs[i].events;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ready(*h, io_dir::read);
    if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) ready(*h, io_dir::write);
    ++handled;
  }
  return handled;
}

void io_poller::interrupt() noexcept {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(eventfd_, &one, sizeof one);
}

void io_poller::ready(io_handle& h, io_dir d) noexcept {
  auto& st = h.state[int(d)];
  std::uint64_t w = st.load(std::memory_order_acquire);
  for (;;) {
    switch (tag_of(w)) {
      case io_handle::tag_ready:
      case io_handle::tag_busy_pending:
      case io_handle::tag_closed:
        return;
      case io_handle::tag_waiting: {
        pid waiter = pid::from_bits(h.waiter[int(d)].load(std::memory_order_relaxed));
        if (st.compare_exchange_weak(w, with_tag(w, io_handle::tag_idle), std::memory_order_acq_rel)) {
          post_wake(node_, waiter, w >> 3);
          return;
        }
        break;
      }
      case io_handle::tag_armed:
        if (st.compare_exchange_weak(w, with_tag(w, io_handle::tag_busy), std::memory_order_acq_rel)) {
          h.on_active(h);
          return;
        }
        break;
      case io_handle::tag_busy:
        if (st.compare_exchange_weak(w, with_tag(w, io_handle::tag_busy_pending), std::memory_order_acq_rel))
          return;
        break;
      default:  // idle
        if (st.compare_exchange_weak(w, with_tag(w, io_handle::tag_ready), std::memory_order_acq_rel)) return;
        break;
    }
  }
}

bool io_wait(io_handle& h, io_dir d, std::int64_t deadline_ns) {
  auto& st = h.state[int(d)];
  std::uint64_t w = st.load(std::memory_order_acquire);
  std::uint64_t seq;
  for (;;) {
    std::uint64_t t = tag_of(w);
    if (t == io_handle::tag_ready) {
      if (st.compare_exchange_weak(w, with_tag(w, io_handle::tag_idle), std::memory_order_acq_rel)) return true;
      continue;
    }
    if (t == io_handle::tag_closed) return true;  // the retried operation sees the close
    if (t != io_handle::tag_idle)
      throw error(errc::invalid_argument, t == io_handle::tag_waiting
                                              ? "socket: another process is waiting on it already"
                                              : "socket: it is in active mode");
    seq = (w >> 3) + 1;
    h.waiter[int(d)].store(self().bits(), std::memory_order_relaxed);
    if (st.compare_exchange_weak(w, seq << 3 | io_handle::tag_waiting, std::memory_order_acq_rel)) break;
  }
  const std::uint64_t waiting = seq << 3 | io_handle::tag_waiting;
  bool woken;
  try {
    woken = await_wake(seq, deadline_ns);
  } catch (...) {
    std::uint64_t expected = waiting;
    st.compare_exchange_strong(expected, seq << 3 | io_handle::tag_idle, std::memory_order_acq_rel);
    throw;
  }
  if (woken) return true;
  std::uint64_t expected = waiting;
  if (st.compare_exchange_strong(expected, seq << 3 | io_handle::tag_idle, std::memory_order_acq_rel)) return false;
  return true;  // the poller took the wait at the same moment: try again
}

void io_arm_active(io_handle& h) noexcept {
  auto& st = h.state[int(io_dir::read)];
  std::uint64_t w = st.load(std::memory_order_acquire);
  for (;;) {
    switch (tag_of(w)) {
      case io_handle::tag_idle:
        if (st.compare_exchange_weak(w, with_tag(w, io_handle::tag_armed), std::memory_order_acq_rel)) return;
        break;
      case io_handle::tag_ready:
        if (st.compare_exchange_weak(w, with_tag(w, io_handle::tag_busy), std::memory_order_acq_rel)) {
          h.on_active(h);
          return;
        }
        break;
      default:  // armed or reading already; closed
        return;
    }
  }
}

bool io_active_done(io_handle& h, bool rearm) noexcept {
  // Not rearmed: something was delivered, and more may be waiting in the
  // kernel (no new edge will say so): leave it `ready`, so the next arm
  // reads at once.
  auto& st = h.state[int(io_dir::read)];
  std::uint64_t w = st.load(std::memory_order_acquire);
  for (;;) {
    if (rearm && tag_of(w) == io_handle::tag_busy_pending) {
      if (st.compare_exchange_weak(w, with_tag(w, io_handle::tag_busy), std::memory_order_acq_rel)) return false;
      continue;
    }
    if (st.compare_exchange_weak(w, with_tag(w, rearm ? io_handle::tag_armed : io_handle::tag_ready),
                                 std::memory_order_acq_rel))
      return true;
  }
}

}  // namespace ember::detail
