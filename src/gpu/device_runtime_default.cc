#include <mutex>

#include "gpu/device_runtime.h"

namespace layercache {
namespace {
std::mutex g_mu;
std::shared_ptr<DeviceRuntime> g_override;
}  // namespace

void SetDefaultDeviceRuntime(std::shared_ptr<DeviceRuntime> runtime) {
  std::lock_guard lock(g_mu);
  g_override = std::move(runtime);
}

Result<std::shared_ptr<DeviceRuntime>> DefaultDeviceRuntime() {
  {
    std::lock_guard lock(g_mu);
    if (g_override) return g_override;
  }
  return CudaRuntime();
}

}  // namespace layercache
