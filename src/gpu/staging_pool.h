// StagingPool: a few page-locked host buffers through which bytes reach a
// device. A buffer is filled (a disk read, a copy out of a pageable layer),
// a copy to the device is queued from it, and an event is recorded after
// that copy; the buffer is handed out again only once the event has
// completed, so a queued copy never reads bytes that a later fill
// overwrote. Buffers are allocated on first use. Thread-safe.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "gpu/device_runtime.h"

namespace layercache {

class StagingPool {
 public:
  StagingPool(std::shared_ptr<DeviceRuntime> runtime, int device, size_t buffers,
              uint64_t buffer_bytes);
  ~StagingPool();  // waits for the copies still reading the buffers
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  struct Lease {
    std::byte* data = nullptr;
    size_t slot = 0;
  };
  // A buffer of buffer_bytes() that no queued copy reads any more (blocks
  // until one is free).
  Result<Lease> Acquire();
  // Gives the buffer back. `stream`: a copy from it was queued there (an
  // event is recorded after it); nullptr: nothing reads it.
  Status Release(const Lease& lease, DeviceStream stream);

  uint64_t buffer_bytes() const { return buffer_bytes_; }
  size_t buffers() const { return slots_.size(); }

 private:
  struct Slot {
    std::byte* data = nullptr;
    DeviceEvent event = nullptr;
    bool pending = false;  // a copy from it may still be running
  };
  std::shared_ptr<DeviceRuntime> runtime_;
  const int device_;
  const uint64_t buffer_bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;
  // Slots not leased, the one released longest ago first (its copy is the
  // likeliest to be done).
  std::deque<size_t> free_;
};

}  // namespace layercache
