// LayerCache's device calls: get_layer(key, "cuda:N") and its prefetching,
// over the GPU tier (src/gpu/gpu_front.h), created on first use.
#include <mutex>

#include "gpu/gpu_front.h"
#include "layercache/layer_cache.h"

namespace layercache {

struct LayerCache::GpuPart {
  std::mutex mu;
  std::unique_ptr<GpuFront> front;
};

std::shared_ptr<LayerCache::GpuPart> LayerCache::NewGpuPart() {
  return std::make_shared<GpuPart>();
}

namespace {

// The GPU tier of `part`, created with the cache's options on first use.
Result<GpuFront*> Front(LayerCache& cache, std::mutex& mu, std::unique_ptr<GpuFront>& front,
                        const std::function<HostTiers()>& host) {
  std::lock_guard lock(mu);
  if (front) return front.get();
  auto runtime = DefaultDeviceRuntime();
  if (!runtime.ok()) return runtime.status();
  const LayerCacheOptions& o = cache.options();
  GpuFrontOptions g;
  g.tier.capacity_bytes = o.max_gpu_bytes();
  g.tier.eviction_policy = o.eviction_policy;
  g.tier.direct_io = o.disk_read_mode == DiskReadMode::kDirect;
  g.pin_host_layers = o.pin_memory_layers;
  g.prefetch_threads = o.prefetch_threads;
  front = std::make_unique<GpuFront>(*runtime, g, host());
  return front.get();
}

// A device name to an ordinal; "cpu" is refused here (host layers come from
// the other get_layer).
Result<int> DeviceOrdinal(std::string_view device) {
  auto d = ParseDevice(device);
  if (!d.ok()) return d.status();
  if (*d < 0) {
    return Status::InvalidArgument(
        "get_layer(key, device) returns layers in GPU memory: use get_layer(key) for CPU "
        "memory, or pass \"cuda:N\"");
  }
  return *d;
}

[[noreturn]] void Throw(const Status& s) {
  if (s.code() == StatusCode::kInvalidArgument) throw std::invalid_argument(s.message());
  throw Error(s);
}

}  // namespace

Result<DeviceLayerPtr> LayerCache::get_layer_status(const LayerKey& key, std::string_view device) {
  try {
    key.Validate();
  } catch (const std::invalid_argument& e) {
    return Status::InvalidArgument(e.what());  // a *_status call never throws
  }
  auto ordinal = DeviceOrdinal(device);
  if (!ordinal.ok()) return ordinal.status();
  auto front = Front(*this, gpu_->mu, gpu_->front, [this] { return GpuHostTiers(); });
  if (!front.ok()) return front.status();
  return (*front)->Get(key, *ordinal);
}

DeviceLayerPtr LayerCache::get_layer(const LayerKey& key, std::string_view device) {
  auto r = get_layer_status(key, device);
  if (r.ok()) return *r;
  if (r.status().IsNotFound()) return nullptr;
  Throw(r.status());
}

std::vector<std::shared_future<DeviceLayerPtr>> LayerCache::prefetch(
    const std::vector<LayerKey>& keys, std::string_view device) {
  for (const LayerKey& k : keys) k.Validate();
  auto ordinal = DeviceOrdinal(device);
  if (!ordinal.ok()) Throw(ordinal.status());
  auto front = Front(*this, gpu_->mu, gpu_->front, [this] { return GpuHostTiers(); });
  if (!front.ok()) Throw(front.status());
  if (Status s = (*front)->tier().CheckDevice(*ordinal); !s.ok()) Throw(s);
  return (*front)->Prefetch(keys, *ordinal);
}

DeviceLayerPtr LayerCache::get_layer_with_prefetch(const LayerKey& key, int64_t num_layers,
                                                   std::string_view device, int lookahead) {
  if (key.layer_index < 0 || key.layer_index >= num_layers) {
    throw std::invalid_argument("layer_index must be in [0, num_layers), got " +
                                std::to_string(key.layer_index) + " with num_layers " +
                                std::to_string(num_layers));
  }
  if (lookahead < 0) throw std::invalid_argument("lookahead must be >= 0");
  std::vector<LayerKey> next;
  for (int64_t k = 1; k <= std::min<int64_t>(lookahead, num_layers - 1); ++k) {
    LayerKey n = key;
    n.layer_index = (key.layer_index + k) % num_layers;
    next.push_back(std::move(n));
  }
  if (!next.empty()) (void)prefetch(next, device);
  return get_layer(key, device);
}

}  // namespace layercache
