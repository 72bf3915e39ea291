// Small helpers shared by the benchmarks: timing, medians, child processes,
// the page cache.
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace layercache::bench {

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double Seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The median of `reps` timings of f().
template <class F>
double MedianSeconds(int reps, F&& f) {
  std::vector<double> v;
  for (int i = 0; i < reps; ++i) v.push_back(Seconds(f));
  return Median(v);
}

// Asks the kernel to drop `path`'s pages (written back first).
inline void EvictFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// EvictFile for every regular file under `dir`.
inline void EvictTree(const std::string& dir) {
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) EvictFile(e.path().string());
  }
}

// Reads every regular file under `dir` (into the page cache).
inline void ReadTree(const std::string& dir) {
  std::vector<char> buf(8u << 20);
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    FILE* f = std::fopen(e.path().c_str(), "rb");
    if (f == nullptr) continue;
    while (std::fread(buf.data(), 1, buf.size(), f) > 0) {
    }
    std::fclose(f);
  }
}

// Starts `args` (argv[0] looked up in PATH); `quiet` sends its stdout to /dev/null.
inline pid_t Spawn(const std::vector<std::string>& args, bool quiet = false) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (quiet) (void)!std::freopen("/dev/null", "w", stdout);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// Waits for `pid`; its exit status (1 if it did not exit normally).
inline int Wait(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

inline int Run(const std::vector<std::string>& args) { return Wait(Spawn(args)); }

// Runs `args` (argv[0] looked up in PATH) and returns its standard output;
// `*status` gets its exit status (1 if it did not exit normally).
inline std::string Capture(const std::vector<std::string>& args, int* status) {
  int fds[2];
  if (::pipe(fds) != 0) {
    *status = 1;
    return "";
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t r; (r = ::read(fds[0], buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<size_t>(r));
  ::close(fds[0]);
  *status = Wait(pid);
  return out;
}

// Exits with a message: benchmarks never time a failure as if it were a result.
[[noreturn]] inline void Fail(const std::string& what) {
  std::fprintf(stderr, "benchmark failed: %s\n", what.c_str());
  std::exit(1);
}

}  // namespace layercache::bench
