// ember::fs (include/ember/io/file.hpp).
//
// A file is a file_state: type-stable (a global pool, never freed), with a
// generation per use, entered in its owner's resource list like a socket
// (core/resource.hpp). Reads and writes run on the blocking pool while
// the process waits; the process may be killed meanwhile and its exit
// releases the file. So the descriptor is guarded by a count of calls in
// flight: `word` = users * 2 | closing. A release sets closing and closes
// the descriptor only if no call is running; otherwise the last call to
// return closes it. No call ever runs on a descriptor that was closed and
// perhaps reused by another open.
#include "ember/io/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "core/preempt.hpp"
#include "core/resource.hpp"
#include "ember/core/process.hpp"
#include "ember/sched/blocking.hpp"

namespace ember::fs::detail {

struct file_state final : ember::detail::resource {
  std::atomic<std::uint32_t> gen{1};
  std::atomic<std::uint64_t> owner{0};
  std::atomic<std::uint32_t> word{0};  // users * 2 | closing
  int fd = -1;
  std::string path;  // global heap (set under global_heap_scope)
  file_state* next_free = nullptr;

  void release(std::uint32_t g) noexcept override;
  bool held_by(std::uint32_t g, pid p) const noexcept override {
    return gen.load(std::memory_order_acquire) == g && owner.load(std::memory_order_acquire) == p.bits();
  }
  // A call on the descriptor: false if it is closing.
  bool enter() noexcept {
    std::uint32_t w = word.fetch_add(2, std::memory_order_acq_rel);
    if (w & 1) {
      leave();
      return false;
    }
    return true;
  }
  void leave() noexcept {
    if (word.fetch_sub(2, std::memory_order_acq_rel) == 3) finish();  // last call out, closing
  }
  void finish() noexcept;
};

namespace {

std::mutex pool_mu;
file_state* pool_free = nullptr;
std::vector<std::unique_ptr<file_state[]>>* pool_chunks = new std::vector<std::unique_ptr<file_state[]>>();

file_state* pool_get() {
  ember::detail::locked_hold<std::mutex> lock(pool_mu);
  if (!pool_free) {
    ember::global_heap_scope runtime_owned;
    constexpr int n = 64;
    auto chunk = std::make_unique<file_state[]>(n);
    for (int i = n; i-- > 0;) {
      chunk[i].next_free = pool_free;
      pool_free = &chunk[i];
    }
    pool_chunks->push_back(std::move(chunk));
  }
  file_state* s = pool_free;
  pool_free = s->next_free;
  s->next_free = nullptr;
  return s;
}

void pool_put(file_state* s) noexcept {
  ember::detail::locked_hold<std::mutex> lock(pool_mu);
  s->next_free = pool_free;
  pool_free = s;
}

std::string errno_text(int e) {
  char buf[128];
  return ::strerror_r(e, buf, sizeof buf);
}

[[noreturn]] void fail(errc code, int e, std::string_view op, const std::string& path, std::string_view why = {}) {
  throw io_error(code, e,
                 "fs: " + std::string(op) + " " + path + ": " + (why.empty() ? errno_text(e) : std::string(why)));
}

// Holds one call's count on the descriptor; made in the global heap, as
// the copies of the call's closure that share it live on the pool.
struct call_guard {
  explicit call_guard(file_state* state) noexcept : s(state) {}
  call_guard(const call_guard&) = delete;
  call_guard& operator=(const call_guard&) = delete;
  ~call_guard() { s->leave(); }
  file_state* s;
};

// Runs fn(fd) on the blocking pool with the descriptor guarded until fn
// has returned there (even if the calling process is killed meanwhile).
template <class F>
auto on_pool(file_state* s, const char* op, F fn) {
  if (!s->enter()) fail(errc::closed, EBADF, op, s->path, "the file is closed");
  std::shared_ptr<call_guard> g;
  {
    ember::global_heap_scope runtime_owned;
    try {
      g = std::make_shared<call_guard>(s);
    } catch (...) {
      s->leave();
      throw;
    }
  }
  int fd = s->fd;
  return ember::blocking([g, fd, fn] { return fn(fd); });
}

struct read_result {
  std::string data;
  int err = 0;
};

}  // namespace

void file_state::release(std::uint32_t g) noexcept {
  std::uint32_t next = g + 1 == 0 ? 1 : g + 1;
  if (!gen.compare_exchange_strong(g, next, std::memory_order_acq_rel)) return;
  if (word.fetch_or(1, std::memory_order_acq_rel) == 0) finish();  // no call running
}

void file_state::finish() noexcept {
  if (fd >= 0) ::close(fd);
  fd = -1;
  owner.store(0, std::memory_order_relaxed);
  {
    ember::global_heap_scope runtime_owned;
    path.clear();
    path.shrink_to_fit();
  }
  word.store(0, std::memory_order_release);
  pool_put(this);
}

}  // namespace ember::fs::detail

namespace ember::fs {

using detail::file_state;

file& file::operator=(file&& o) noexcept {
  if (this != &o) {
    close();
    s_ = o.s_;
    gen_ = o.gen_;
    o.s_ = nullptr;
  }
  return *this;
}

file::~file() { close(); }

bool file::is_open() const noexcept { return s_ && s_->gen.load(std::memory_order_acquire) == gen_; }

void file::close() {
  if (!s_) return;
  if (s_->gen.load(std::memory_order_acquire) == gen_) {
    if (in_process()) ember::detail::disown_resource(s_, gen_);
    s_->release(gen_);
  }
  s_ = nullptr;
}

file_state* file::use(const char* op) const {
  if (!in_process()) throw error(errc::not_in_process, std::string("fs: ") + op + ": called outside a process");
  if (!is_open()) throw io_error(errc::closed, EBADF, "fs: " + std::string(op) + ": the file is closed");
  std::uint64_t me = self().bits();
  if (s_->owner.load(std::memory_order_acquire) != me) {
    s_->owner.store(me, std::memory_order_release);
    ember::detail::own_resource(s_, gen_);
  }
  return s_;
}

file file::open(const std::string& path, mode m) {
  if (!in_process()) throw error(errc::not_in_process, "fs: open: called outside a process");
  int flags = O_CLOEXEC;
  switch (m) {
    case mode::read: flags |= O_RDONLY; break;
    case mode::write: flags |= O_WRONLY | O_CREAT | O_TRUNC; break;
    case mode::append: flags |= O_WRONLY | O_CREAT | O_APPEND; break;
    case mode::read_write: flags |= O_RDWR | O_CREAT; break;
  }
  std::string p = path;
  int fd = ember::blocking([p, flags] {
    int r;
    do r = ::open(p.c_str(), flags, 0666);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
  });
  if (fd < 0) detail::fail(errc::io_failed, -fd, "open", path);
  file_state* s;
  try {
    s = detail::pool_get();
  } catch (...) {
    ::close(fd);
    throw;
  }
  s->fd = fd;
  try {
    ember::global_heap_scope runtime_owned;
    s->path = path;
  } catch (...) {
  }
  file f;
  f.s_ = s;
  f.gen_ = s->gen.load(std::memory_order_acquire);
  s->owner.store(self().bits(), std::memory_order_release);
  ember::detail::own_resource(s, f.gen_);  // on failure f's destructor closes it
  return f;
}

std::size_t file::read(void* buf, std::size_t n) {
  file_state* s = use("read");
  // Read into a buffer of the call's own: the caller's memory may be gone
  // if it is killed while the call runs.
  detail::read_result r = detail::on_pool(s, "read", [n](int fd) {
    detail::read_result out;
    out.data.resize(n);
    ssize_t k;
    do k = ::read(fd, out.data.data(), n);
    while (k < 0 && errno == EINTR);
    if (k < 0) {
      out.err = errno;
      out.data.clear();
    } else {
      out.data.resize(std::size_t(k));
    }
    return out;
  });
  if (r.err) detail::fail(errc::io_failed, r.err, "read", s->path);
  std::memcpy(buf, r.data.data(), r.data.size());
  return r.data.size();
}

std::string file::read(std::size_t n) {
  std::string s(n, '\0');
  s.resize(read(s.data(), n));
  return s;
}

void file::write(std::string_view data) {
  file_state* s = use("write");
  std::string copy(data);
  int err = detail::on_pool(s, "write", [copy](int fd) {
    std::size_t done = 0;
    while (done < copy.size()) {
      ssize_t r = ::write(fd, copy.data() + done, copy.size() - done);
      if (r < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      done += std::size_t(r);
    }
    return 0;
  });
  if (err) detail::fail(errc::io_failed, err, "write", s->path);
}

std::uint64_t file::size() const {
  file_state* s = use("size");
  long long r = detail::on_pool(s, "size", [](int fd) {
    struct stat st {};
    return ::fstat(fd, &st) == 0 ? static_cast<long long>(st.st_size) : -static_cast<long long>(errno);
  });
  if (r < 0) detail::fail(errc::io_failed, int(-r), "size", s->path);
  return std::uint64_t(r);
}

std::string file::path() const {
  if (!is_open()) return {};
  return s_->path;
}

void file::sync() {
  file_state* s = use("sync");
  int err = detail::on_pool(s, "sync", [](int fd) { return ::fsync(fd) == 0 ? 0 : errno; });
  if (err) detail::fail(errc::io_failed, err, "sync", s->path);
}

std::string read_file(const std::string& path) {
  auto f = file::open(path, mode::read);
  std::string out;
  for (;;) {
    std::string chunk = f.read(1 << 20);
    if (chunk.empty()) return out;
    out += chunk;
  }
}

void write_file(const std::string& path, std::string_view data) {
  auto f = file::open(path, mode::write);
  f.write(data);
}

}  // namespace ember::fs
