#include "gpu/device_runtime.h"

namespace layercache {

Status DeviceRuntime::CheckOrdinal(int device) {
  const int count = DeviceCount();
  if (device >= 0 && device < count) return Status::OK();
  if (count == 0) {
    return Status::InvalidArgument("device cuda:" + std::to_string(device) +
                                   " does not exist: " + Name() + " sees no GPU");
  }
  return Status::InvalidArgument("device cuda:" + std::to_string(device) +
                                 " does not exist: valid devices are cuda:0 to cuda:" +
                                 std::to_string(count - 1) + " (" + Name() + ")");
}

}  // namespace layercache
