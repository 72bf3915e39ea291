// DeviceRuntime: the few GPU runtime calls the GPU tier makes (device memory,
// page-locked host memory, asynchronous host-to-device copies on a stream,
// events), behind one interface, so that the tier's logic (budgets,
// eviction, the staging pool, the order of reads and copies, the handling of
// faults) is tested everywhere with a simulated device (tests/sim_device.h),
// and runs on CUDA (cuda_runtime.cc, built with -DLAYERCACHE_CUDA=ON).
//
// Errors are Statuses: an out-of-memory device allocation is kNoSpace, a bad
// ordinal kInvalidArgument, anything else the runtime reports kIOError with
// the runtime's own name for the error. Thread-safe: any thread may call any
// method; a stream may be used by several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "layercache/status.h"

namespace layercache {

// Opaque runtime handles (cudaStream_t and cudaEvent_t on CUDA).
using DeviceStream = void*;
using DeviceEvent = void*;

class DeviceRuntime {
 public:
  virtual ~DeviceRuntime() = default;

  // "cuda 13.0" or the simulator's name, for messages.
  virtual std::string Name() const = 0;
  // How many devices there are (0: none, or no driver).
  virtual int DeviceCount() = 0;
  // kInvalidArgument naming the valid range when `device` is not one.
  Status CheckOrdinal(int device);
  // The device's total memory in bytes.
  virtual Result<uint64_t> TotalMemory(int device) = 0;

  // Device memory: kNoSpace when the device is out of memory.
  virtual Result<void*> Allocate(int device, uint64_t bytes) = 0;
  virtual void Free(int device, void* ptr) = 0;

  // Page-locked (pinned) host memory, which the device reads directly.
  virtual Result<void*> AllocatePinned(uint64_t bytes) = 0;
  virtual void FreePinned(void* ptr) = 0;
  // Whether `ptr` lies in page-locked host memory.
  virtual bool IsPinned(const void* ptr) = 0;

  virtual Result<DeviceStream> CreateStream(int device) = 0;
  virtual void DestroyStream(int device, DeviceStream stream) = 0;
  virtual Result<DeviceEvent> CreateEvent(int device) = 0;
  virtual void DestroyEvent(int device, DeviceEvent event) = 0;

  // Queues a copy of `n` bytes from host `src` to device `dst` on `stream`.
  // The copy may run after the call returns: `src` must stay unchanged until
  // an event recorded after it has completed. Errors of the copy itself may
  // be reported here or by a later WaitEvent/SynchronizeStream.
  virtual Status CopyToDeviceAsync(int device, void* dst, const void* src, uint64_t n,
                                   DeviceStream stream) = 0;
  // Copies `n` bytes from device `src` to host `dst` and waits for it.
  virtual Status CopyToHost(int device, void* dst, const void* src, uint64_t n) = 0;
  // Records `event` after the work queued on `stream` so far.
  virtual Status RecordEvent(int device, DeviceEvent event, DeviceStream stream) = 0;
  // Blocks the calling thread until `event` has completed; returns the error
  // of any work it covers that failed.
  virtual Status WaitEvent(int device, DeviceEvent event) = 0;
  // Makes work queued later on `stream` wait for `event` (no host wait).
  virtual Status StreamWaitEvent(int device, DeviceStream stream, DeviceEvent event) = 0;
  virtual Status SynchronizeStream(int device, DeviceStream stream) = 0;
};

// The CUDA runtime (cudart), or, in a build without -DLAYERCACHE_CUDA=ON,
// kUnsupported saying so. One instance per process.
Result<std::shared_ptr<DeviceRuntime>> CudaRuntime();
// Whether this build has CUDA support.
bool BuiltWithCuda();

// The runtime LayerCache uses for devices: CudaRuntime(), unless another was
// set (the tests set a simulated device; nullptr restores CUDA). Caches
// created before a change keep theirs.
Result<std::shared_ptr<DeviceRuntime>> DefaultDeviceRuntime();
void SetDefaultDeviceRuntime(std::shared_ptr<DeviceRuntime> runtime);

}  // namespace layercache
