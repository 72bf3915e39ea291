// DeviceLayer::Storage: one device allocation and the event recorded after
// the copies into it. Frees both (after the copies are done) when the last
// DeviceLayer over it goes.
#pragma once

#include <memory>
#include <utility>

#include "gpu/device_runtime.h"
#include "layercache/device_layer.h"

namespace layercache {

// A stream, destroyed when the last holder (the GPU tier, layers whose copies
// it carried) goes.
struct OwnedStream {
  OwnedStream(std::shared_ptr<DeviceRuntime> rt, int dev, DeviceStream s)
      : runtime(std::move(rt)), device(dev), stream(s) {}
  ~OwnedStream() { runtime->DestroyStream(device, stream); }
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;

  std::shared_ptr<DeviceRuntime> runtime;
  int device;
  DeviceStream stream;
};

struct DeviceLayer::Storage {
  Storage(std::shared_ptr<DeviceRuntime> rt, int dev, void* mem, std::shared_ptr<OwnedStream> s,
          DeviceEvent ready_event)
      : runtime(std::move(rt)), device(dev), data(mem), stream(std::move(s)), ready(ready_event) {}
  ~Storage() {
    if (ready != nullptr) {
      (void)runtime->WaitEvent(device, ready);  // no copy may still target the memory
      runtime->DestroyEvent(device, ready);
    }
    runtime->Free(device, data);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  std::shared_ptr<DeviceRuntime> runtime;
  int device;
  void* data;
  std::shared_ptr<OwnedStream> stream;  // the copies were issued on
  DeviceEvent ready;
};

}  // namespace layercache
