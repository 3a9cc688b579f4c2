// ember::fs — files for processes. Every call that touches the disk runs
// on the blocking pool (include/ember/sched/blocking.hpp), so it suspends
// only the calling process.
//
//   std::string text = ember::fs::read_file("config.txt");
//   auto log = ember::fs::file::open("events.log", ember::fs::mode::append);
//   log.write("started\n");
//
// A file is owned like a socket (include/ember/io/net.hpp): the handle
// object closes it when destroyed, and the process that last used it
// closes it when it exits by any path, including kill and stack overflow.
// A process killed while its read or write runs on the pool ends at once;
// the descriptor is closed when that call returns, never under it.
// Errors: ember::io_error, "fs: open /no/such: No such file or directory".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ember/io/io_error.hpp"

namespace ember::fs {

namespace detail {
struct file_state;
}

enum class mode {
  read,        // existing file, reading
  write,       // created or truncated, writing
  append,      // created if needed, writing at the end
  read_write,  // created if needed, both
};

class file {
 public:
  file() = default;
  file(file&& o) noexcept : s_(o.s_), gen_(o.gen_) { o.s_ = nullptr; }
  file& operator=(file&& o) noexcept;
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  ~file();

  static file open(const std::string& path, mode m = mode::read);
  // Up to n bytes from the current position; 0 at end of file.
  std::size_t read(void* buf, std::size_t n);
  std::string read(std::size_t n);
  // All of data, at the current position (the end, in append mode).
  void write(std::string_view data);
  std::uint64_t size() const;
  void sync();  // fsync
  void close();
  bool is_open() const noexcept;
  std::string path() const;  // as opened

 private:
  detail::file_state* use(const char* op) const;
  // Only a pointer and a number: the object can move into another
  // process's closure without pointing into this process's heap.
  detail::file_state* s_ = nullptr;
  std::uint32_t gen_ = 0;
};

// Whole files, each one call on the blocking pool.
std::string read_file(const std::string& path);
void write_file(const std::string& path, std::string_view data);  // created or truncated

}  // namespace ember::fs
