// A latency histogram with fixed storage, so that recording a sample never
// allocates: exact below 256 ns, then 128 buckets per doubling (a value is
// known within 0.8%). bench/erlang/w7_heapiso.erl uses the same buckets, so
// both runtimes' percentiles are computed the same way.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace bench {

class latency_hist {
 public:
  static constexpr int buckets = 256 + (64 - 8) * 128;

  void clear() {
    std::memset(count_, 0, sizeof count_);
    total_ = 0;
    max_ = 0;
  }

  void record(std::uint64_t ns) {
    ++count_[index(ns)];
    ++total_;
    if (ns > max_) max_ = ns;
  }

  // Adds another histogram's samples to this one (per-process histograms
  // merged at the end, as W9's clients do).
  void merge(const latency_hist& other) {
    for (int i = 0; i < buckets; ++i) count_[i] += other.count_[i];
    total_ += other.total_;
    if (other.max_ > max_) max_ = other.max_;
  }

  std::uint64_t total() const { return total_; }
  std::uint64_t max_ns() const { return max_; }

  // The q-quantile (0 < q <= 1) in ns: the smallest bucket holding the
  // ceil(q * total)-th sample, as its midpoint (exact below 256 ns).
  double quantile_ns(double q) const {
    if (total_ == 0) return 0;
    auto rank = std::uint64_t(std::ceil(q * double(total_)));
    if (rank < 1) rank = 1;
    std::uint64_t seen = 0;
    for (int i = 0; i < buckets; ++i) {
      seen += count_[i];
      if (seen >= rank) return midpoint(i);
    }
    return double(max_);
  }

  static int index(std::uint64_t v) {
    if (v < 256) return int(v);
    int msb = 63 - __builtin_clzll(v);  // >= 8
    return 256 + (msb - 8) * 128 + int((v >> (msb - 7)) & 127);
  }

  static double midpoint(int i) {
    if (i < 256) return i;
    int msb = (i - 256) / 128 + 8, sub = (i - 256) % 128;
    double width = std::ldexp(1.0, msb - 7);
    return double(128 + sub) * width + (width - 1) / 2;
  }

 private:
  std::uint64_t count_[buckets] = {};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace bench
