#include "bench_limits.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

namespace layercache::benchkit {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
using Aligned = std::unique_ptr<std::byte, AlignedFree>;

// Huge-page backed where the kernel allows (as the cache's buffers are): a
// request into 2 MiB pages reaches the device in fewer, larger segments, so
// a limit measured into 4 KiB pages would understate the disk.
Aligned AllocTouched(uint64_t bytes) {
  constexpr uint64_t kHuge = 2u << 20;
  const uint64_t cap = (bytes + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, cap);
  if (p == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  ::madvise(p, cap, MADV_HUGEPAGE);
#endif
  std::memset(p, 1, cap);  // faulted in: the limits do not pay first-touch costs
  return Aligned(static_cast<std::byte*>(p));
}

void FadviseDontNeed(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// Reads [0, size) of `fd` with `qd` threads, each taking the next `req`
// bytes; into `buf` (req * qd bytes).
Status ReadWithQueue(int fd, uint64_t size, uint64_t req, int qd, std::byte* buf) {
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < qd; ++t) {
    ts.emplace_back([&, t] {
      std::byte* mine = buf + static_cast<uint64_t>(t) * req;
      for (uint64_t off; !failed && (off = next.fetch_add(req)) < size;) {
        const ssize_t r = ::pread(fd, mine, req, static_cast<off_t>(off));
        if (r <= 0) failed = true;
      }
    });
  }
  for (auto& t : ts) t.join();
  return failed ? Status::IOError("O_DIRECT read failed") : Status::OK();
}

}  // namespace

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double DeviceLimit::best() const { return std::max({sequential_gbps, qd16_gbps, qd32_gbps}); }

std::string DeviceLimit::best_name() const {
  const double b = best();
  if (b == sequential_gbps) return "sequential O_DIRECT, 16 MiB requests";
  if (b == qd16_gbps) return "O_DIRECT, 16 x 1 MiB in flight";
  return "O_DIRECT, 32 x 512 KiB in flight";
}

Result<std::string> DropCaches(const std::vector<std::string>& paths) {
  ::sync();
  if (::geteuid() == 0) {
    int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      const bool ok = ::write(fd, "3\n", 2) == 2;
      ::close(fd);
      if (ok) return std::string("drop_caches");
    }
  }
  namespace fs = std::filesystem;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(p, ec)) {
        if (e.is_regular_file(ec)) FadviseDontNeed(e.path().string());
      }
    } else {
      FadviseDontNeed(p);
    }
  }
  return std::string("fadvise");
}

Result<DeviceLimit> MeasureDeviceLimit(const std::string& path, int reps) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) {
    return Status::Unsupported("cannot open " + path +
                               " with O_DIRECT: " + std::string(std::strerror(errno)));
  }
  const off_t end = ::lseek(fd, 0, SEEK_END);
  const uint64_t size = end > 0 ? static_cast<uint64_t>(end) : 0;
  Aligned buf = AllocTouched(16u << 20);
  auto one = [&](uint64_t req, int qd) -> Result<double> {
    std::vector<double> gbps;
    for (int r = 0; r < reps; ++r) {
      FadviseDontNeed(path);
      const auto t0 = Clock::now();
      if (Status s = ReadWithQueue(fd, size, req, qd, buf.get()); !s.ok()) return s;
      gbps.push_back(static_cast<double>(size) / Since(t0) / 1e9);
    }
    return Median(gbps);
  };
  DeviceLimit d;
  Result<double> seq = one(16u << 20, 1), q16 = one(1u << 20, 16), q32 = one(512u << 10, 32);
  ::close(fd);
  if (!seq.ok()) return seq.status();
  if (!q16.ok()) return q16.status();
  if (!q32.ok()) return q32.status();
  d.sequential_gbps = *seq;
  d.qd16_gbps = *q16;
  d.qd32_gbps = *q32;
  return d;
}

double MeasureMemcpyGBps(uint64_t bytes, int reps) {
  Aligned src = AllocTouched(bytes), dst = AllocTouched(bytes);
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<double> gbps;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    std::vector<std::thread> ts;
    const uint64_t slice = (bytes / threads + 4095) / 4096 * 4096;
    for (unsigned t = 0; t < threads; ++t) {
      const uint64_t off = std::min<uint64_t>(bytes, t * slice);
      const uint64_t len = std::min<uint64_t>(slice, bytes - off);
      ts.emplace_back([&, off, len] { std::memcpy(dst.get() + off, src.get() + off, len); });
    }
    for (auto& t : ts) t.join();
    gbps.push_back(static_cast<double>(bytes) / Since(t0) / 1e9);
  }
  return Median(gbps);
}

Result<std::string> RunCapture(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return Status::IOError("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) return Status::IOError("fork failed");
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  for (ssize_t r; (r = ::read(pipefd[0], buf, sizeof buf)) != 0;) {
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::IOError(argv[0] + " failed (exit status " +
                           std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")");
  }
  return out;
}

Result<uint64_t> FreeBytes(const std::string& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) {
    return Status::IOError("cannot stat file system of " + dir + ": " + std::strerror(errno));
  }
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace layercache::benchkit
