// Why the default cold path maps and populates: the ways a cold file can be
// brought into a new process's memory, each timed in a new process after the
// page cache was dropped (drop_caches as root, else fadvise, and it says so).
//   build/bench/cold_read_probe [--file PATH | --mb N] [--reps R] [--smoke]
// Ways (QD = requests in flight, one thread each):
//   odirect-reuse   O_DIRECT into one reused, faulted-in buffer per thread (what dd and fio do:
//                   the device limit, paying nothing for memory)
//   odirect-fresh   O_DIRECT into a fresh buffer of the file's size (huge pages advised): what a
//                   cache must do to hand the bytes out, paying the kernel's zeroing and faults
//   buffered-fresh  read() through the page cache into a fresh buffer (the old default)
//   populate        a private mapping of the file, its pages brought in with MADV_POPULATE_READ
//                   (the page cache's pages are filled by the device: nothing to zero, no copy;
//                   what disk_read_mode=auto does for entries of 16 MiB and more)
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_limits.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

namespace {

namespace fs = std::filesystem;
using namespace layercache;
constexpr uint64_t kHuge = 2u << 20;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "cold_read_probe: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// Runs fn(offset, length) for each request of `req` bytes of [0, size) on
// `qd` threads taking requests in file order.
template <class F>
void Requests(uint64_t size, uint64_t req, unsigned qd, F&& fn) {
  std::atomic<uint64_t> next{0};
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < qd; ++t) {
    ts.emplace_back([&, t] {
      for (uint64_t off; (off = next.fetch_add(req)) < size;) fn(t, off, std::min(req, size - off));
    });
  }
  for (auto& t : ts) t.join();
}

std::byte* FreshBuffer(uint64_t bytes) {
  const uint64_t cap = (bytes + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, cap);
  if (p == nullptr) Die("out of memory");
  ::madvise(p, cap, MADV_HUGEPAGE);
  return static_cast<std::byte*>(p);
}

// The child: one way, timed from the first allocation to the last byte.
int Child(const std::string& way, const std::string& path, unsigned qd, uint64_t req) {
  const int direct = way.rfind("odirect", 0) == 0 ? O_DIRECT : 0;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | direct);
  if (fd < 0) Die("cannot open " + path);
  const uint64_t size = static_cast<uint64_t>(::lseek(fd, 0, SEEK_END));
  const uint64_t padded = (size + 4095) / 4096 * 4096;
  std::byte* reused = nullptr;
  if (way == "odirect-reuse") {  // faulted in before the clock, like dd's and fio's buffers
    reused = FreshBuffer(req * qd);
    std::memset(reused, 1, req * qd);
  }
  std::atomic<bool> failed{false};
  const auto t0 = std::chrono::steady_clock::now();
  if (way == "populate") {
    auto* m = static_cast<std::byte*>(
        ::mmap(nullptr, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0));
    if (m == MAP_FAILED) Die("mmap");
    Requests(padded, req, qd, [&](unsigned, uint64_t off, uint64_t len) {
      if (::madvise(m + off, len, MADV_POPULATE_READ) != 0) failed = true;
    });
  } else {
    std::byte* fresh = reused == nullptr ? FreshBuffer(padded) : nullptr;
    Requests(padded, req, qd, [&](unsigned t, uint64_t off, uint64_t len) {
      std::byte* dst = reused != nullptr ? reused + t * req : fresh + off;
      for (uint64_t done = 0; done < len;) {
        const ssize_t r = ::pread(fd, dst + done, len - done, static_cast<off_t>(off + done));
        if (r <= 0) {
          if (r < 0 || off + done < size) failed = true;
          break;
        }
        done += static_cast<uint64_t>(r);
      }
    });
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (failed) Die(way + " failed on " + path);
  std::printf("%.9f %llu\n", s, static_cast<unsigned long long>(size));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 6 && std::string(argv[1]) == "--child") {
    return Child(argv[2], argv[3], static_cast<unsigned>(std::atoi(argv[4])),
                 std::strtoull(argv[5], nullptr, 10));
  }
  std::string file;
  uint64_t mb = 466;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--smoke") {
      mb = 8;
      reps = 1;
    } else if (i + 1 < argc && a == "--file") {
      file = argv[++i];
    } else if (i + 1 < argc && a == "--mb") {
      mb = std::strtoull(argv[++i], nullptr, 10);
    } else if (i + 1 < argc && a == "--reps") {
      reps = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: cold_read_probe [--file PATH | --mb N] [--reps R] [--smoke]\n");
      return 2;
    }
  }
  std::string made;
  if (file.empty()) {  // a file of random bytes on /var/tmp's disk
    char tmpl[] = "/var/tmp/layercache-probe-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    if (fd < 0) Die("cannot create a file in /var/tmp");
    made = file = tmpl;
    std::mt19937_64 rng(1);
    std::vector<uint64_t> block(1 << 17);
    for (uint64_t done = 0; done < (mb << 20); done += block.size() * 8) {
      for (auto& x : block) x = rng();
      if (::write(fd, block.data(), block.size() * 8) != static_cast<ssize_t>(block.size() * 8)) {
        Die("cannot write " + file);
      }
    }
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  const std::string self = fs::read_symlink("/proc/self/exe", ec).string();
  struct Way {
    const char* way;
    unsigned qd;
    uint64_t req_kib;
  };
  const Way ways[] = {
      {"odirect-reuse", 1, 16384}, {"odirect-reuse", 32, 512},  {"odirect-fresh", 4, 8192},
      {"odirect-fresh", 16, 1024}, {"buffered-fresh", 1, 8192}, {"populate", 16, 1024},
      {"populate", 16, 2048},
  };
  std::vector<std::vector<double>> gbps(std::size(ways));
  std::string how;
  double load = 0;
  // Interleaved: each repetition runs every way, so that all see the same load.
  for (int r = 0; r < reps; ++r) {
    double l[1] = {0};
    if (::getloadavg(l, 1) == 1) load = std::max(load, l[0]);
    for (size_t w = 0; w < std::size(ways); ++w) {
      auto dropped = benchkit::DropCaches({file});
      if (!dropped.ok()) Die(dropped.status().message());
      how = *dropped;
      auto out =
          benchkit::RunCapture({self, "--child", ways[w].way, file, std::to_string(ways[w].qd),
                                std::to_string(ways[w].req_kib << 10)});
      if (!out.ok()) {
        std::fprintf(stderr, "cold_read_probe: %s\n", out.status().message().c_str());
        return 1;
      }
      double s = 0;
      unsigned long long size = 0;
      if (std::sscanf(out->c_str(), "%lf %llu", &s, &size) != 2 || s <= 0) return 1;
      gbps[w].push_back(static_cast<double>(size) / s / 1e9);
    }
  }
  std::printf(
      "%s (%.1f MB); each way in a new process after %s; medians of %d; load average up to "
      "%.1f\n",
      file.c_str(), static_cast<double>(fs::file_size(file, ec)) / 1e6,
      how == "drop_caches" ? "sync; echo 3 > /proc/sys/vm/drop_caches"
                           : "posix_fadvise(DONTNEED) (not root)",
      reps, load);
  std::printf("%-16s %4s %9s %8s\n", "way", "QD", "request", "GB/s");
  for (size_t w = 0; w < std::size(ways); ++w) {
    std::printf("%-16s %4u %5llu KiB %8.2f\n", ways[w].way, ways[w].qd,
                static_cast<unsigned long long>(ways[w].req_kib), benchkit::Median(gbps[w]));
  }
  if (!made.empty()) ::unlink(made.c_str());
  return 0;
}
