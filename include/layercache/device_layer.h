// DeviceLayer: a layer resident in GPU memory (the GPU tier's unit).
//
// Its tensors lie back to back in one device allocation, in the same order
// and at the same offsets as in the host Layer they came from, so that
// tensor_data() is the device pointer of each tensor. The copies that filled
// it were issued on stream() and are complete when ready_event() is; the
// cache waits for that before it hands a layer out, so callers may use the
// pointers on any stream at once (wait_on() is there for callers that want
// to order their own work explicitly). Callers hold
// std::shared_ptr<const DeviceLayer>: like LayerPtr, a layer in use is never
// freed under its reader, whatever the GPU tier evicts meanwhile.
// All methods are safe to call from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "layercache/layer.h"
#include "layercache/status.h"

namespace layercache {

class DeviceRuntime;

class DeviceLayer {
 public:
  // What owns the device memory and the ready event (internal).
  struct Storage;

  DeviceLayer(std::shared_ptr<Storage> storage, std::vector<TensorInfo> tensors, uint64_t nbytes,
              Metadata metadata);

  // The CUDA ordinal of the device holding the layer, and "cuda:N".
  int device() const;
  std::string device_name() const { return "cuda:" + std::to_string(device()); }

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  size_t num_tensors() const { return tensors_.size(); }
  // The tensor called `name`, or nullptr.
  const TensorInfo* find(std::string_view name) const;
  // The device address of a tensor; `info` must come from this layer.
  void* tensor_data(const TensorInfo& info) const;
  // The device address of the tensor called `name`; throws layercache::Error
  // (kNotFound) if absent.
  void* tensor_data(std::string_view name) const;
  // The device address of the whole data section.
  void* data() const;
  uint64_t nbytes() const { return nbytes_; }
  const Metadata& metadata() const { return metadata_; }

  // The stream the copies were issued on (a cudaStream_t) and the event
  // recorded after them (a cudaEvent_t).
  void* stream() const;
  void* ready_event() const;
  // Blocks until the copies are complete (they are, for layers the cache
  // returns; cheap then).
  Status synchronize() const;
  // Makes work queued later on `stream` (a cudaStream_t) wait for the copies.
  Status wait_on(void* stream) const;

 private:
  std::shared_ptr<Storage> storage_;
  std::vector<TensorInfo> tensors_;
  uint64_t nbytes_ = 0;
  Metadata metadata_;
};

using DeviceLayerPtr = std::shared_ptr<const DeviceLayer>;

// Parses a device name as get_layer(key, device) takes it: "cuda" (cuda:0)
// and "cuda:N" into N, "cpu" into -1; kInvalidArgument saying what is
// accepted otherwise. Whether device N exists is checked when it is used.
Result<int> ParseDevice(std::string_view device);

}  // namespace layercache
