// ParallelFor: runs fn(i) for i in [0, n) on up to `threads` threads at once
// (the calling one included; 0 means one per core), on the current executor
// (util/executor.h): no threads are started per call.
#pragma once

#include <cstddef>
#include <utility>

#include "util/executor.h"

namespace layercache {

template <class F>
void ParallelFor(size_t n, unsigned threads, F&& fn) {
  Executor::Current().ParallelFor(n, threads == 0 ? HardwareThreads() : threads,
                                  std::forward<F>(fn));
}

}  // namespace layercache
