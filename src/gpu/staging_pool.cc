#include "gpu/staging_pool.h"

#include <algorithm>

namespace layercache {

StagingPool::StagingPool(std::shared_ptr<DeviceRuntime> runtime, int device, size_t buffers,
                         uint64_t buffer_bytes)
    : runtime_(std::move(runtime)),
      device_(device),
      buffer_bytes_(buffer_bytes),
      slots_(std::max<size_t>(1, buffers)) {
  for (size_t i = 0; i < slots_.size(); ++i) free_.push_back(i);
}

StagingPool::~StagingPool() {
  for (Slot& s : slots_) {
    if (s.event != nullptr) {
      if (s.pending) (void)runtime_->WaitEvent(device_, s.event);
      runtime_->DestroyEvent(device_, s.event);
    }
    if (s.data != nullptr) runtime_->FreePinned(s.data);
  }
}

Result<StagingPool::Lease> StagingPool::Acquire() {
  size_t slot;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !free_.empty(); });
    slot = free_.front();
    free_.pop_front();
  }
  Slot& s = slots_[slot];  // leased: this thread alone touches it now
  auto give_back = [&](Status st) -> Result<Lease> {
    std::lock_guard lock(mu_);
    free_.push_front(slot);  // untouched: first in line again
    cv_.notify_one();
    return st;
  };
  if (s.data == nullptr) {
    auto p = runtime_->AllocatePinned(buffer_bytes_);
    if (!p.ok()) return give_back(p.status().WithContext("staging buffer"));
    s.data = static_cast<std::byte*>(*p);
  }
  if (s.event == nullptr) {
    auto e = runtime_->CreateEvent(device_);
    if (!e.ok()) return give_back(e.status());
    s.event = *e;
  }
  if (s.pending) {
    s.pending = false;
    if (Status st = runtime_->WaitEvent(device_, s.event); !st.ok()) return give_back(st);
  }
  return Lease{s.data, slot};
}

Status StagingPool::Release(const Lease& lease, DeviceStream stream) {
  Slot& s = slots_[lease.slot];
  Status st;
  if (stream != nullptr) {
    st = runtime_->RecordEvent(device_, s.event, stream);
    // Without an event, wait for the stream itself before the buffer is reused.
    s.pending = st.ok();
    if (!st.ok()) (void)runtime_->SynchronizeStream(device_, stream);
  }
  std::lock_guard lock(mu_);
  free_.push_back(lease.slot);
  cv_.notify_one();
  return st;
}

}  // namespace layercache
