// GpuFront: the GPU tier in front of the host tiers, for get_layer(key,
// device). It answers from device memory when it can; otherwise it fills the
// device from the fastest place the layer is in:
//   1. the memory tier: copied from the host layer (directly when its memory
//      is page-locked; with pin_host_layers the memory tier's copy is
//      replaced by a page-locked one, so the next upload is direct);
//   2. the disk tier's entry file: read straight to the device through the
//      pinned staging buffers, checksum verified (compressed entries, and
//      entries found bad, go through the host tiers, which remove bad ones);
//   3. the rest of the chain (a remote tier, ...), through the host.
// Layers the GPU tier evicts go back to the memory tier when it lacks them.
// Concurrent requests for one (key, device) share one load; Prefetch starts
// loads on background threads. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "gpu/gpu_tier.h"
#include "util/executor.h"

namespace layercache {

// What the GPU tier needs from the host side of the cache.
struct HostTiers {
  // The memory tier's layer, or nullptr (no disk access).
  std::function<LayerPtr(const LayerKey&)> memory_lookup;
  // Puts a layer in the memory tier (replacing); false when it declines.
  std::function<void(const LayerKey&, LayerPtr)> memory_insert;
  // The whole host chain (memory, disk, remote), promoting as a get_layer
  // does: the layer, NotFound on a miss, or the failure.
  std::function<Result<LayerPtr>(const LayerKey&)> host_get;
  // The disk entry file that would hold `key` ("" when there is no disk tier).
  std::function<std::string(const LayerKey&)> entry_path;
  Env* env = nullptr;
};

struct GpuFrontOptions {
  GpuTierOptions tier;
  bool pin_host_layers = false;  // keep memory-tier layers in page-locked memory
  int prefetch_threads = 2;      // prefetches running at once, on `executor`
  // The pool its parallel work (chunk reads, prefetch) runs on; null:
  // Executor::Default(). Must outlive the front.
  Executor* executor = nullptr;
};

// Counters of the GPU tier, for get_stats().
struct GpuCounters {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t loads_from_memory = 0;
  uint64_t loads_from_disk = 0;  // straight from entry files
  uint64_t loads_from_chain = 0;
  uint64_t evictions = 0;
  uint64_t evicted_to_memory = 0;
  uint64_t errors = 0;
};

class GpuFront {
 public:
  GpuFront(std::shared_ptr<DeviceRuntime> runtime, GpuFrontOptions options, HostTiers host);
  ~GpuFront();  // waits for prefetches in flight

  // The layer on `device`: NotFound when no tier has it; other errors as
  // they are (an invalid ordinal, out of device memory, a failed copy).
  Result<DeviceLayerPtr> Get(const LayerKey& key, int device);
  // Starts loading `keys` onto `device` in the background.
  std::vector<std::shared_future<DeviceLayerPtr>> Prefetch(const std::vector<LayerKey>& keys,
                                                           int device);

  GpuTier& tier() { return tier_; }
  GpuCounters counters() const;
  // Drops the GPU copies of keys for which `pred` is true.
  size_t EraseIf(const std::function<bool(const LayerKey&)>& pred) { return tier_.EraseIf(pred); }

 private:
  struct Flight {
    bool done = false;
    Result<DeviceLayerPtr> result = Status::NotFound("loading");
  };
  Result<DeviceLayerPtr> Load(const LayerKey& key, int device);
  // A page-locked copy of `layer` (for pin_host_layers).
  Result<LayerPtr> PinnedCopy(const Layer& layer);
  void ReturnToHost(GpuTier::Evicted* evicted);

  std::shared_ptr<DeviceRuntime> runtime_;
  const GpuFrontOptions options_;
  HostTiers host_;
  GpuTier tier_;
  std::mutex flights_mu_;
  std::condition_variable flights_cv_;
  std::map<std::pair<std::string, int>, std::shared_ptr<Flight>> flights_;  // (digest, device)
  std::atomic<uint64_t> hits_{0}, misses_{0}, from_memory_{0}, from_disk_{0}, from_chain_{0},
      to_memory_{0}, errors_{0};
  Executor* executor_;
  Executor::Limited pool_;  // last: waits for its tasks before the members they use go
};

}  // namespace layercache
