// Small helpers shared by the benchmarks: timing, medians, child processes.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
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

}  // namespace layercache::bench
