#include "sim_device.h"

#include <cstdlib>
#include <cstring>

namespace layercache::testing {

SimDevice::~SimDevice() {
  for (auto& [p, v] : device_mem_) std::free(const_cast<std::byte*>(p));
  for (auto& [p, n] : pinned_) std::free(const_cast<std::byte*>(p));
  for (Stream* s : streams_) delete s;
  for (Event* e : events_) delete e;
}

void SimDevice::Violation(const std::string& what) { violations_.push_back(what); }

Result<uint64_t> SimDevice::TotalMemory(int device) {
  if (Status s = CheckOrdinal(device); !s.ok()) return s;
  return capacity_;
}

Result<void*> SimDevice::Allocate(int device, uint64_t bytes) {
  if (Status s = CheckOrdinal(device); !s.ok()) return s;
  std::lock_guard lock(mu_);
  if (fail_allocs_ > 0 || used_[device] + bytes > capacity_) {
    if (fail_allocs_ > 0) --fail_allocs_;
    log_.push_back("alloc-failed " + std::to_string(bytes));
    return Status::NoSpace("out of device memory (simulated): " + std::to_string(bytes) +
                           " bytes asked, " + std::to_string(capacity_ - used_[device]) + " free");
  }
  auto* p = static_cast<std::byte*>(std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256));
  device_mem_[p] = {device, bytes};
  used_[device] += bytes;
  log_.push_back("alloc " + std::to_string(bytes));
  return static_cast<void*>(p);
}

void SimDevice::Free(int device, void* ptr) {
  std::lock_guard lock(mu_);
  auto it = device_mem_.find(static_cast<std::byte*>(ptr));
  if (it == device_mem_.end() || it->second.first != device) {
    Violation("free of unknown device memory");
    return;
  }
  used_[device] -= it->second.second;
  log_.push_back("free " + std::to_string(it->second.second));
  std::free(ptr);
  device_mem_.erase(it);
}

Result<void*> SimDevice::AllocatePinned(uint64_t bytes) {
  std::lock_guard lock(mu_);
  auto* p = static_cast<std::byte*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
  pinned_[p] = bytes;
  log_.push_back("pinned-alloc " + std::to_string(bytes));
  return static_cast<void*>(p);
}

void SimDevice::FreePinned(void* ptr) {
  std::lock_guard lock(mu_);
  if (pinned_.erase(static_cast<std::byte*>(ptr)) == 0) {
    Violation("free of unknown pinned memory");
    return;
  }
  std::free(ptr);
}

bool SimDevice::IsPinned(const void* ptr) {
  std::lock_guard lock(mu_);
  auto* p = static_cast<const std::byte*>(ptr);
  auto it = pinned_.upper_bound(p);
  if (it == pinned_.begin()) return false;
  --it;
  return p < it->first + it->second;
}

bool SimDevice::InDevice(const void* ptr, uint64_t n) const {
  auto* p = static_cast<const std::byte*>(ptr);
  auto it = device_mem_.upper_bound(p);
  if (it == device_mem_.begin()) return false;
  --it;
  return p >= it->first && p + n <= it->first + it->second.second;
}

std::string SimDevice::OffsetOf(const void* ptr) const {
  auto* p = static_cast<const std::byte*>(ptr);
  auto it = device_mem_.upper_bound(p);
  if (it == device_mem_.begin()) return "?";
  --it;
  return "+" + std::to_string(p - it->first);
}

Result<DeviceStream> SimDevice::CreateStream(int device) {
  if (Status s = CheckOrdinal(device); !s.ok()) return s;
  std::lock_guard lock(mu_);
  auto* s = new Stream{device, {}};
  streams_.insert(s);
  return static_cast<DeviceStream>(s);
}

void SimDevice::DestroyStream(int, DeviceStream stream) {
  std::lock_guard lock(mu_);
  auto* s = static_cast<Stream*>(stream);
  if (!streams_.contains(s)) return Violation("destroy of an unknown stream");
  (void)RunLocked(s, nullptr);
  streams_.erase(s);
  for (Event* e : events_) {
    if (e->stream == s) e->stream = nullptr;
  }
  delete s;
}

Result<DeviceEvent> SimDevice::CreateEvent(int device) {
  if (Status s = CheckOrdinal(device); !s.ok()) return s;
  std::lock_guard lock(mu_);
  auto* e = new Event{device};
  events_.insert(e);
  return static_cast<DeviceEvent>(e);
}

void SimDevice::DestroyEvent(int, DeviceEvent event) {
  std::lock_guard lock(mu_);
  auto* e = static_cast<Event*>(event);
  if (events_.erase(e) == 0) return Violation("destroy of an unknown event");
  for (Stream* s : streams_) {
    for (Op& op : s->queue) {
      if (!op.is_copy && op.event == event) op.event = nullptr;
    }
  }
  delete e;
}

Status SimDevice::CopyToDeviceAsync(int device, void* dst, const void* src, uint64_t n,
                                    DeviceStream stream) {
  std::lock_guard lock(mu_);
  auto* s = static_cast<Stream*>(stream);
  if (!streams_.contains(s) || s->device != device) {
    Violation("copy on an unknown stream");
    return Status::InvalidArgument("unknown stream");
  }
  if (!InDevice(dst, n)) {
    Violation("copy outside device memory");
    return Status::InvalidArgument("copy outside device memory");
  }
  const bool pinned = [&] {
    auto* p = static_cast<const std::byte*>(src);
    auto it = pinned_.upper_bound(p);
    if (it == pinned_.begin()) return false;
    --it;
    return p + n <= it->first + it->second;
  }();
  log_.push_back("h2d " + OffsetOf(dst) + " " + std::to_string(n) +
                 (pinned ? " pinned" : " pageable"));
  const bool fail = ++copies_ == fail_copy_;
  if (fail && !fail_when_run_) {
    return Status::IOError("injected copy error (simulated cudaErrorLaunchFailure)");
  }
  s->queue.push_back(Op{true, dst, src, n, fail, nullptr});
  return Status::OK();
}

Status SimDevice::RunLocked(Stream* s, DeviceEvent until) {
  Status first;
  while (!s->queue.empty()) {
    Op op = s->queue.front();
    s->queue.pop_front();
    if (op.is_copy) {
      if (!InDevice(op.dst, op.n)) {
        Violation("a queued copy ran into freed device memory");
      } else if (op.fail) {
        sticky_ =
            Status::IOError("injected copy error when run (simulated cudaErrorLaunchFailure)");
      } else {
        std::memcpy(op.dst, op.src, op.n);
      }
    } else if (op.event != nullptr) {
      auto* e = static_cast<Event*>(op.event);
      if (e->stream == s) e->stream = nullptr;  // reached
      if (op.event == until) break;
    }
  }
  return first;
}

Status SimDevice::CopyToHost(int device, void* dst, const void* src, uint64_t n) {
  std::lock_guard lock(mu_);
  if (Status s = CheckOrdinal(device); !s.ok()) return s;
  if (!InDevice(src, n)) {
    Violation("device-to-host copy outside device memory");
    return Status::InvalidArgument("outside device memory");
  }
  for (Stream* s : streams_) (void)RunLocked(s, nullptr);  // like a synchronizing cudaMemcpy
  std::memcpy(dst, src, n);
  log_.push_back("d2h " + std::to_string(n));
  return Status::OK();
}

Status SimDevice::RecordEvent(int device, DeviceEvent event, DeviceStream stream) {
  std::lock_guard lock(mu_);
  auto* s = static_cast<Stream*>(stream);
  auto* e = static_cast<Event*>(event);
  if (!streams_.contains(s) || !events_.contains(e) || s->device != device) {
    Violation("record with an unknown handle");
    return Status::InvalidArgument("unknown handle");
  }
  // Re-recording moves the event: drop its earlier place in any queue.
  for (Stream* other : streams_) {
    for (Op& op : other->queue) {
      if (!op.is_copy && op.event == event) op.event = nullptr;
    }
  }
  e->stream = s;
  s->queue.push_back(Op{false, nullptr, nullptr, 0, false, event});
  log_.push_back("record");
  return Status::OK();
}

Status SimDevice::WaitEvent(int, DeviceEvent event) {
  std::lock_guard lock(mu_);
  auto* e = static_cast<Event*>(event);
  if (!events_.contains(e)) {
    Violation("wait on an unknown event");
    return Status::InvalidArgument("unknown event");
  }
  log_.push_back("wait");
  if (e->stream != nullptr) (void)RunLocked(e->stream, event);
  return std::exchange(sticky_, Status::OK());
}

Status SimDevice::StreamWaitEvent(int, DeviceStream, DeviceEvent event) {
  // One copy engine in order is all the simulation models: running the
  // event's stream up to it satisfies any later work.
  return WaitEvent(0, event);
}

Status SimDevice::SynchronizeStream(int, DeviceStream stream) {
  std::lock_guard lock(mu_);
  auto* s = static_cast<Stream*>(stream);
  if (!streams_.contains(s)) {
    Violation("synchronize of an unknown stream");
    return Status::InvalidArgument("unknown stream");
  }
  log_.push_back("sync");
  (void)RunLocked(s, nullptr);
  return std::exchange(sticky_, Status::OK());
}

void SimDevice::FailCopy(int nth, bool when_run) {
  std::lock_guard lock(mu_);
  fail_copy_ = copies_ + nth;
  fail_when_run_ = when_run;
}

void SimDevice::FailAllocations(int n) {
  std::lock_guard lock(mu_);
  fail_allocs_ = n;
}

void SimDevice::Note(const std::string& what) {
  std::lock_guard lock(mu_);
  log_.push_back(what);
}

std::vector<std::string> SimDevice::log() const {
  std::lock_guard lock(mu_);
  return log_;
}

void SimDevice::ClearLog() {
  std::lock_guard lock(mu_);
  log_.clear();
}

uint64_t SimDevice::used(int device) const {
  std::lock_guard lock(mu_);
  auto it = used_.find(device);
  return it == used_.end() ? 0 : it->second;
}

size_t SimDevice::live_allocations() const {
  std::lock_guard lock(mu_);
  return device_mem_.size();
}

size_t SimDevice::pinned_allocations() const {
  std::lock_guard lock(mu_);
  return pinned_.size();
}

size_t SimDevice::streams() const {
  std::lock_guard lock(mu_);
  return streams_.size();
}

size_t SimDevice::events() const {
  std::lock_guard lock(mu_);
  return events_.size();
}

std::vector<std::string> SimDevice::violations() const {
  std::lock_guard lock(mu_);
  return violations_;
}

}  // namespace layercache::testing
