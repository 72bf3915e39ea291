// DeviceRuntime on the CUDA runtime API (cudart). Built only with
// -DLAYERCACHE_CUDA=ON; needs no kernels, so any C++ compiler builds it.
#include <cuda_runtime_api.h>

#include <mutex>

#include "gpu/device_runtime.h"

namespace layercache {
namespace {

// Maps a CUDA error to a Status, clearing the thread's last-error state so
// that a recoverable error (an allocation that failed) does not resurface in
// the next call.
Status CudaStatus(cudaError_t err, const std::string& what, int device) {
  if (err == cudaSuccess) return Status::OK();
  (void)cudaGetLastError();
  const std::string where = device >= 0 ? " on cuda:" + std::to_string(device) : "";
  std::string msg =
      what + where + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  switch (err) {
    case cudaErrorMemoryAllocation:
      return Status::NoSpace("out of device memory: " + msg);
    case cudaErrorInvalidDevice:
      return Status::InvalidArgument(msg);
    default:
      return Status::IOError(msg);
  }
}

class CudaDeviceRuntime final : public DeviceRuntime {
 public:
  std::string Name() const override {
    int version = 0;
    cudaRuntimeGetVersion(&version);
    return "CUDA runtime " + std::to_string(version / 1000) + "." +
           std::to_string(version % 1000 / 10);
  }

  int DeviceCount() override {
    std::call_once(count_once_, [&] {
      int n = 0;
      // No driver or no device: an error here, which means zero devices.
      if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        n = 0;
      }
      count_ = n;
    });
    return count_;
  }

  Result<uint64_t> TotalMemory(int device) override {
    if (Status s = Use(device); !s.ok()) return s;
    size_t free_bytes = 0, total = 0;
    if (Status s = CudaStatus(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo", device);
        !s.ok()) {
      return s;
    }
    return static_cast<uint64_t>(total);
  }

  Result<void*> Allocate(int device, uint64_t bytes) override {
    if (Status s = Use(device); !s.ok()) return s;
    void* p = nullptr;
    if (Status s = CudaStatus(cudaMalloc(&p, bytes == 0 ? 1 : bytes),
                              "cudaMalloc of " + std::to_string(bytes) + " bytes", device);
        !s.ok()) {
      return s;
    }
    return p;
  }

  void Free(int device, void* ptr) override {
    if (ptr == nullptr || !Use(device).ok()) return;
    (void)CudaStatus(cudaFree(ptr), "cudaFree", device);
  }

  Result<void*> AllocatePinned(uint64_t bytes) override {
    void* p = nullptr;
    if (Status s = CudaStatus(cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocPortable),
                              "cudaHostAlloc of " + std::to_string(bytes) + " bytes", -1);
        !s.ok()) {
      return s;
    }
    return p;
  }

  void FreePinned(void* ptr) override {
    if (ptr != nullptr) (void)CudaStatus(cudaFreeHost(ptr), "cudaFreeHost", -1);
  }

  bool IsPinned(const void* ptr) override {
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return attr.type == cudaMemoryTypeHost;
  }

  Result<DeviceStream> CreateStream(int device) override {
    if (Status s = Use(device); !s.ok()) return s;
    cudaStream_t stream = nullptr;
    if (Status s = CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                              "cudaStreamCreate", device);
        !s.ok()) {
      return s;
    }
    return static_cast<DeviceStream>(stream);
  }

  void DestroyStream(int device, DeviceStream stream) override {
    if (stream == nullptr || !Use(device).ok()) return;
    (void)cudaStreamDestroy(static_cast<cudaStream_t>(stream));
  }

  Result<DeviceEvent> CreateEvent(int device) override {
    if (Status s = Use(device); !s.ok()) return s;
    cudaEvent_t event = nullptr;
    if (Status s = CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                              "cudaEventCreate", device);
        !s.ok()) {
      return s;
    }
    return static_cast<DeviceEvent>(event);
  }

  void DestroyEvent(int device, DeviceEvent event) override {
    if (event == nullptr || !Use(device).ok()) return;
    (void)cudaEventDestroy(static_cast<cudaEvent_t>(event));
  }

  Status CopyToDeviceAsync(int device, void* dst, const void* src, uint64_t n,
                           DeviceStream stream) override {
    if (Status s = Use(device); !s.ok()) return s;
    return CudaStatus(
        cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)),
        "cudaMemcpyAsync (host to device)", device);
  }

  Status CopyToHost(int device, void* dst, const void* src, uint64_t n) override {
    if (Status s = Use(device); !s.ok()) return s;
    return CudaStatus(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost),
                      "cudaMemcpy (device to host)", device);
  }

  Status RecordEvent(int device, DeviceEvent event, DeviceStream stream) override {
    if (Status s = Use(device); !s.ok()) return s;
    return CudaStatus(
        cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)),
        "cudaEventRecord", device);
  }

  Status WaitEvent(int device, DeviceEvent event) override {
    if (Status s = Use(device); !s.ok()) return s;
    return CudaStatus(cudaEventSynchronize(static_cast<cudaEvent_t>(event)), "cudaEventSynchronize",
                      device);
  }

  Status StreamWaitEvent(int device, DeviceStream stream, DeviceEvent event) override {
    if (Status s = Use(device); !s.ok()) return s;
    return CudaStatus(
        cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0),
        "cudaStreamWaitEvent", device);
  }

  Status SynchronizeStream(int device, DeviceStream stream) override {
    if (Status s = Use(device); !s.ok()) return s;
    return CudaStatus(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)),
                      "cudaStreamSynchronize", device);
  }

 private:
  // Makes `device` current on this thread (the runtime's calls act on it).
  Status Use(int device) {
    if (Status s = CheckOrdinal(device); !s.ok()) return s;
    return CudaStatus(cudaSetDevice(device), "cudaSetDevice", device);
  }

  std::once_flag count_once_;
  int count_ = 0;
};

}  // namespace

Result<std::shared_ptr<DeviceRuntime>> CudaRuntime() {
  static const std::shared_ptr<DeviceRuntime> runtime = std::make_shared<CudaDeviceRuntime>();
  return runtime;
}

bool BuiltWithCuda() { return true; }

}  // namespace layercache
