// ember::fs: files read and written from processes through the blocking
// pool; errors name the path; a process's files close when it exits.
#include <gtest/gtest.h>

#include <dirent.h>
#include <unistd.h>

#include <string>

#include "ember/io/file.hpp"
#include "ember_test.hpp"

namespace {

using namespace ember_test;
using ember::pid;
namespace fs = ember::fs;

class files : public runtime_test {
 protected:
  std::string path(const std::string& name) const {
    return "/tmp/ember_file_test_" + std::to_string(::getpid()) + "_" + std::to_string(GetParam()) + "_" + name;
  }
  void TearDown() override {
    for (const char* n : {"a", "b", "c", "d"}) ::unlink(path(n).c_str());
    runtime_test::TearDown();
  }
};

int open_descriptors() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n;
}

TEST_P(files, written_files_read_back_whole_and_in_pieces) {
  std::string p = path("a");
  auto got = in_process(rt(), [p] {
    std::string big(300000, 'x');
    for (std::size_t i = 0; i < big.size(); i += 7) big[i] = char('a' + i % 26);
    fs::write_file(p, big);
    std::string whole = fs::read_file(p);
    auto f = fs::file::open(p);
    std::string head = f.read(5);
    std::uint64_t size = f.size();
    return std::string(whole == big ? "same" : "different") + " " + head + " " + std::to_string(size);
  });
  EXPECT_EQ(got, "same axxxx 300000");
}

TEST_P(files, append_mode_writes_at_the_end) {
  std::string p = path("b");
  auto got = in_process(rt(), [p] {
    fs::write_file(p, "one\n");
    {
      auto f = fs::file::open(p, fs::mode::append);
      f.write("two\n");
      f.sync();
    }
    return fs::read_file(p);
  });
  EXPECT_EQ(got, "one\ntwo\n");
}

TEST_P(files, opening_a_missing_file_names_the_path_and_errno) {
  std::string p = path("c") + "/no/such";
  auto got = in_process(rt(), [p] {
    try {
      fs::file::open(p);
      return std::string("opened");
    } catch (const ember::io_error& e) {
      bool names = std::string(e.what()).find(p) != std::string::npos;
      return errc_name(e.code()) + (e.sys_errno() == ENOENT ? " ENOENT" : " other") + (names ? " with path" : "");
    }
  });
  EXPECT_EQ(got, "io_failed ENOENT with path");
}

TEST_P(files, a_closed_file_reports_closed) {
  std::string p = path("d");
  auto got = in_process(rt(), [p] {
    fs::write_file(p, "x");
    auto f = fs::file::open(p);
    f.close();
    try {
      f.read(1);
      return std::string("read");
    } catch (const ember::io_error& e) {
      return errc_name(e.code());
    }
  });
  EXPECT_EQ(got, "closed");
}

TEST_P(files, a_killed_process_closes_its_files) {
  std::string p = path("a");
  int before = open_descriptors();
  auto got = in_process(rt(), [p] {
    pid me = ember::self();
    auto [h, ref] = ember::spawn_monitor([p, me] {
      fs::write_file(p, "data");
      auto f1 = fs::file::open(p);
      auto f2 = fs::file::open(p, fs::mode::append);
      ember::send(me, std::string("open"));
      ember::receive([](const std::string&) {});
    });
    ember::receive([](const std::string&) {});
    ember::exit(h, ember::exit_reason::kill());
    return ember::receive(ember::when([ref = ref](const ember::down& d) { return d.ref == ref; },
                                      [](const ember::down& d) { return d.reason.to_string(); }));
  });
  EXPECT_EQ(got, "killed");
  EXPECT_EQ(open_descriptors(), before);
}

TEST(files_outside, file_calls_need_a_process) {
  EXPECT_EQ(outcome_of([] { fs::file::open("/etc/hostname"); }), "error not_in_process");
}

EMBER_TEST_WITH_SCHEDULER_COUNTS(files);

}  // namespace
