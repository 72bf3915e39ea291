// GpuTier: the hottest tier. Layers resident in device memory, per device,
// under a byte budget per device, evicting the least recently used layer (or,
// with the scan-resistant policy during layer sweeps, bypassing newcomers as
// the other tiers do). Layers reach a device two ways:
//  - from a host layer (the memory tier): copied straight from it when its
//    memory is page-locked, else through the pinned staging pool;
//  - from a disk entry, pipelined: chunks are read (O_DIRECT where asked)
//    into pinned staging buffers and hashed while the copies of earlier
//    chunks run; the layer is cached and returned only when every copy has
//    completed and the checksum matched, so a failed copy or a bad entry
//    leaves nothing on the device and serves nothing.
// Device memory that runs out is made by evicting cached layers and trying
// again; when nothing is left to evict the error says so. Layers evicted
// are handed to the caller (to keep them in the host tier). Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpu/device_runtime.h"
#include "gpu/device_storage.h"
#include "gpu/staging_pool.h"
#include "io/env.h"
#include "layercache/device_layer.h"
#include "layercache/key.h"
#include "layercache/layer.h"
#include "layercache/options.h"
#include "tier/eviction_advisor.h"

namespace layercache {

struct GpuTierOptions {
  uint64_t capacity_bytes = 0;  // per device; 0: nothing is kept (layers still load)
  EvictionPolicy eviction_policy = EvictionPolicy::kLru;
  size_t staging_buffers = 4;                // per device
  uint64_t staging_buffer_bytes = 8u << 20;  // one checksum chunk (EntryDigest::kChunkBytes)
  unsigned io_threads = 4;                   // chunks read (and hashed) at once
  bool direct_io = false;                    // O_DIRECT reads of entry files
};

class GpuTier {
 public:
  GpuTier(std::shared_ptr<DeviceRuntime> runtime, GpuTierOptions options);
  ~GpuTier();
  GpuTier(const GpuTier&) = delete;
  GpuTier& operator=(const GpuTier&) = delete;

  using Evicted = std::vector<std::pair<LayerKey, DeviceLayerPtr>>;

  // InvalidArgument when `device` is not a device of the runtime.
  Status CheckDevice(int device);

  // The cached layer (now the most recently used), or nullptr.
  DeviceLayerPtr Lookup(const LayerKey& key, int device);
  bool Contains(const LayerKey& key, int device);

  // Copies `host` to `device` and caches it there (unless it does not fit
  // the budget, or the scan-resistant policy bypasses it: it is returned
  // all the same). Layers evicted to make room are appended to `evicted`.
  Result<DeviceLayerPtr> LoadFromHost(const LayerKey& key, int device, const Layer& host,
                                      Evicted* evicted);
  // Reads the disk entry at `path` (whose file name is `digest`) straight to
  // `device`, verifying its checksum, and caches it. NotFound when there is
  // no file, Corruption when the entry is bad, Unsupported for compressed
  // entries (load those through the host).
  Result<DeviceLayerPtr> LoadFromFile(const LayerKey& key, int device, Env* env,
                                      const std::string& path, const std::string& digest,
                                      Evicted* evicted);

  // A host copy of a device layer (page-locked memory when `pinned`).
  Result<LayerPtr> CopyToHost(const DeviceLayer& layer, bool pinned);

  bool Erase(const LayerKey& key);  // on every device
  size_t EraseIf(const std::function<bool(const LayerKey&)>& pred);
  void Clear();

  uint64_t capacity() const { return options_.capacity_bytes; }
  uint64_t usage(int device);
  uint64_t usage() const;  // all devices
  size_t size() const;     // layers cached, all devices
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  uint64_t bytes_copied() const { return bytes_copied_.load(std::memory_order_relaxed); }
  DeviceRuntime& runtime() { return *runtime_; }

 private:
  struct Entry {
    DeviceLayerPtr layer;
    uint64_t charge = 0;
    uint64_t last_access = 0;
  };
  struct DeviceState {
    DeviceState(std::shared_ptr<DeviceRuntime> runtime, int device, const GpuTierOptions& o)
        : advisor(o.eviction_policy, o.capacity_bytes),
          pool(std::move(runtime), device, o.staging_buffers, o.staging_buffer_bytes) {}
    std::mutex mu;
    std::unordered_map<LayerKey, Entry, LayerKeyHash, LayerKeyEqual> map;
    uint64_t usage = 0;  // cached layers plus reservations of loads in flight
    uint64_t clock = 0;  // recency stamps
    EvictionAdvisor advisor;
    std::shared_ptr<OwnedStream> copy_stream;
    StagingPool pool;
  };
  // A device allocation for a load, with its budget reservation.
  struct Reservation {
    void* data = nullptr;
    uint64_t charged = 0;  // bytes reserved in the budget (0: not to be cached)
  };

  Result<DeviceState*> State(int device);
  // Reserves `n` bytes of budget (evicting) and allocates them (evicting
  // more while the device is out of memory).
  Result<Reservation> Reserve(DeviceState& st, int device, const LayerKey& key, uint64_t n,
                              Evicted* evicted);
  void Unreserve(DeviceState& st, int device, const Reservation& r);
  // Evicts one entry (LRU, or MRU when `mru`); false when there is none.
  bool EvictOneLocked(DeviceState& st, bool mru, Evicted* evicted);
  // Records the ready event after the copies, waits for it, and caches the
  // layer (when it was charged). On failure frees the memory.
  Result<DeviceLayerPtr> Finish(DeviceState& st, int device, const LayerKey& key,
                                const Reservation& r, std::vector<TensorInfo> tensors,
                                uint64_t nbytes, Metadata metadata, Status copies);
  // Queues copies of `n` host bytes to `dst`: direct from pinned memory, else
  // through the staging pool.
  Status CopyHostBytes(DeviceState& st, int device, std::byte* dst, const std::byte* src,
                       uint64_t n);

  std::shared_ptr<DeviceRuntime> runtime_;
  const GpuTierOptions options_;
  mutable std::mutex devices_mu_;
  std::map<int, std::unique_ptr<DeviceState>> devices_;
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> bytes_copied_{0};
};

}  // namespace layercache
