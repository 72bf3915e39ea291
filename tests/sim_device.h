// SimDevice: a DeviceRuntime over host memory, for the GPU tier's tests
// everywhere (no GPU needed). Devices have a byte capacity; copies queued on
// a stream run later, in order, when an event after them is waited for or
// the stream is synchronized (so a test sees it when the tier reuses a
// staging buffer before its copy ran: the device gets the wrong bytes).
// Faults on command: the Nth copy fails when queued or when it runs (as CUDA
// reports asynchronous errors late), allocations fail. Every operation is
// logged in order ("alloc", "h2d +<offset> <bytes> pinned|pageable",
// "record", "wait", and the test's own Note()s), so that tests can assert
// the order of reads and copies.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "gpu/device_runtime.h"

namespace layercache::testing {

class SimDevice : public DeviceRuntime {
 public:
  SimDevice(int devices, uint64_t capacity_bytes) : count_(devices), capacity_(capacity_bytes) {}
  ~SimDevice() override;

  std::string Name() const override { return "simulated device"; }
  int DeviceCount() override { return count_; }
  Result<uint64_t> TotalMemory(int device) override;
  Result<void*> Allocate(int device, uint64_t bytes) override;
  void Free(int device, void* ptr) override;
  Result<void*> AllocatePinned(uint64_t bytes) override;
  void FreePinned(void* ptr) override;
  bool IsPinned(const void* ptr) override;
  Result<DeviceStream> CreateStream(int device) override;
  void DestroyStream(int device, DeviceStream stream) override;
  Result<DeviceEvent> CreateEvent(int device) override;
  void DestroyEvent(int device, DeviceEvent event) override;
  Status CopyToDeviceAsync(int device, void* dst, const void* src, uint64_t n,
                           DeviceStream stream) override;
  Status CopyToHost(int device, void* dst, const void* src, uint64_t n) override;
  Status RecordEvent(int device, DeviceEvent event, DeviceStream stream) override;
  Status WaitEvent(int device, DeviceEvent event) override;
  Status StreamWaitEvent(int device, DeviceStream stream, DeviceEvent event) override;
  Status SynchronizeStream(int device, DeviceStream stream) override;

  // Faults. The Nth copy from now (1-based) fails when queued or when it runs.
  void FailCopy(int nth, bool when_run);
  // The next `n` allocations fail as out of memory.
  void FailAllocations(int n);

  void Note(const std::string& what);
  std::vector<std::string> log() const;
  void ClearLog();
  uint64_t used(int device) const;  // device bytes allocated
  size_t live_allocations() const;
  size_t pinned_allocations() const;  // live page-locked buffers
  size_t streams() const;
  size_t events() const;
  // Misuse seen (a copy into freed memory, an unknown handle...); empty when fine.
  std::vector<std::string> violations() const;

 private:
  struct Op {
    bool is_copy = true;
    void* dst = nullptr;
    const void* src = nullptr;
    uint64_t n = 0;
    bool fail = false;
    DeviceEvent event = nullptr;
  };
  struct Stream {
    int device;
    std::deque<Op> queue;
  };
  struct Event {
    int device;
    Stream* stream = nullptr;  // recorded on, not yet reached
    uint64_t seq = 0;          // how many ops of that stream precede it
  };
  // Runs the ops of `s` up to and including the record of `until` (all when
  // null); returns the first copy error.
  Status RunLocked(Stream* s, DeviceEvent until);
  bool InDevice(const void* p, uint64_t n) const;
  std::string OffsetOf(const void* p) const;
  void Violation(const std::string& what);

  const int count_;
  const uint64_t capacity_;
  mutable std::mutex mu_;
  std::map<const std::byte*, std::pair<int, uint64_t>> device_mem_;  // base -> (device, size)
  std::map<const std::byte*, uint64_t> pinned_;                      // base -> size
  std::map<int, uint64_t> used_;
  std::set<Stream*> streams_;
  std::set<Event*> events_;
  std::vector<std::string> log_;
  std::vector<std::string> violations_;
  Status sticky_;  // an error of a copy that ran, reported by the next wait
  int copies_ = 0;
  int fail_copy_ = 0;
  bool fail_when_run_ = false;
  int fail_allocs_ = 0;
};

}  // namespace layercache::testing
