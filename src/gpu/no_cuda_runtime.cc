// CudaRuntime() in a build without CUDA support.
#include "gpu/device_runtime.h"

namespace layercache {

Result<std::shared_ptr<DeviceRuntime>> CudaRuntime() {
  return Status::Unsupported(
      "this build of layercache has no CUDA support (it was built without the CUDA toolkit; "
      "rebuild with -DLAYERCACHE_CUDA=ON to use device='cuda:N')");
}

bool BuiltWithCuda() { return false; }

}  // namespace layercache
