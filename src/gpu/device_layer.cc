#include "layercache/device_layer.h"

#include <stdexcept>

#include "gpu/device_storage.h"
#include "layercache/status.h"

namespace layercache {

DeviceLayer::DeviceLayer(std::shared_ptr<Storage> storage, std::vector<TensorInfo> tensors,
                         uint64_t nbytes, Metadata metadata)
    : storage_(std::move(storage)),
      tensors_(std::move(tensors)),
      nbytes_(nbytes),
      metadata_(std::move(metadata)) {}

int DeviceLayer::device() const { return storage_->device; }

const TensorInfo* DeviceLayer::find(std::string_view name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

void* DeviceLayer::tensor_data(const TensorInfo& info) const {
  return static_cast<std::byte*>(storage_->data) + info.offset;
}

void* DeviceLayer::tensor_data(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr)
    throw Error(Status::NotFound("no tensor \"" + std::string(name) + "\" in the layer"));
  return tensor_data(*t);
}

void* DeviceLayer::data() const { return storage_->data; }
void* DeviceLayer::stream() const { return storage_->stream->stream; }
void* DeviceLayer::ready_event() const { return storage_->ready; }

Status DeviceLayer::synchronize() const {
  return storage_->runtime->WaitEvent(storage_->device, storage_->ready);
}

Status DeviceLayer::wait_on(void* stream) const {
  return storage_->runtime->StreamWaitEvent(storage_->device, stream, storage_->ready);
}

}  // namespace layercache
