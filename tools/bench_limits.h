// The machine's true limits, measured in the same run as what is compared
// with them: shared by `layercache bench` and the benchmarks in bench/.
//   - device: the best of a one-request sequential O_DIRECT read and deep-queue
//     O_DIRECT reads (16 and 32 requests in flight, one thread each) of the
//     same file;
//   - memory: memcpy on every core into memory already faulted in.
// "Cold" means a new process after the page cache was dropped: with
// `sync; echo 3 > /proc/sys/vm/drop_caches` when root, else with
// posix_fadvise(DONTNEED) of the files concerned (DropCaches says which).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layercache/status.h"

namespace layercache::benchkit {

struct DeviceLimit {
  double sequential_gbps = 0;  // one 16 MiB request at a time
  double qd16_gbps = 0;        // 16 x 1 MiB requests in flight
  double qd32_gbps = 0;        // 32 x 512 KiB requests in flight
  double best() const;
  std::string best_name() const;
};

// Drops `paths` (files or directories, recursively) from the page cache.
// Returns "drop_caches" when the whole page cache was dropped (root), or
// "fadvise" when only those files were asked to go (not root, or /proc/sys
// not writable), or an error.
Result<std::string> DropCaches(const std::vector<std::string>& paths);

// Reads `path` whole with O_DIRECT, median of `reps` for each way, the file
// dropped from the page cache before each. Unsupported when the file system
// has no O_DIRECT.
Result<DeviceLimit> MeasureDeviceLimit(const std::string& path, int reps);

// GB/s of memcpy of `bytes` on every core (each thread a slice), source and
// destination faulted in beforehand; median of `reps`.
double MeasureMemcpyGBps(uint64_t bytes, int reps);

// Runs argv[0] (a path) with `argv`, returns its standard output; an error if
// it cannot start or exits non-zero (its stderr passes through).
Result<std::string> RunCapture(const std::vector<std::string>& argv);

double Median(std::vector<double> v);

// Free bytes for an unprivileged user on the file system holding `dir`.
Result<uint64_t> FreeBytes(const std::string& dir);

}  // namespace layercache::benchkit
