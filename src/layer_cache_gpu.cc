// LayerCache's device calls: get_layer(key, "cuda:N") and its prefetching,
// over the GPU tier (src/gpu/gpu_front.h), created on first use, and the
// dropping of its copies when the host tiers' layers are replaced or removed.
#include <mutex>

#include "disk/disk_tier.h"
#include "gpu/gpu_front.h"
#include "layer_cache_impl.h"
#include "layercache/status.h"
#include "memory/memory_tier.h"
#include "util/logging.h"

namespace layercache {

namespace {

// What the GPU front needs of the host tiers: the memory tier, the chain
// and the disk tier's entry files.
HostTiers HostTiersOf(TierChain* chain, MemoryTier* memory, DiskTier* disk, Env* env,
                      std::function<LayerPtr(const LayerKey&)> get) {
  HostTiers h;
  h.env = env;
  h.memory_lookup = [memory](const LayerKey& key) { return memory->Lookup(LayerKeyRef(key)); };
  h.memory_insert = [chain](const LayerKey& key, LayerPtr layer) {
    if (Status s = chain->PutTop(key, layer); !s.ok()) LogWarn(s.message());
  };
  h.host_get = [get = std::move(get)](const LayerKey& key) -> Result<LayerPtr> {
    if (LayerPtr layer = get(key)) return layer;
    return Status::NotFound(key.ToString());
  };
  h.entry_path = [disk](const LayerKey& key) { return disk->EntryPath(key.Digest()); };
  return h;
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

}  // namespace

Result<GpuFront*> LayerCache::Impl::Gpu() {
  std::lock_guard lock(gpu_mu_);
  if (gpu_) return gpu_.get();
  auto runtime = DefaultDeviceRuntime();
  if (!runtime.ok()) return runtime.status();
  GpuFrontOptions g;
  g.tier.capacity_bytes = options_.max_gpu_bytes();
  g.tier.eviction_policy = options_.eviction_policy;
  g.tier.direct_io = options_.disk_read_mode == DiskReadMode::kDirect;
  g.pin_host_layers = options_.pin_memory_layers;
  g.prefetch_threads = options_.prefetch_threads;
  g.executor = executor_.get();
  gpu_ = std::make_unique<GpuFront>(
      *runtime, g, HostTiersOf(chain_.get(), memory_, disk_, env_, [this](const LayerKey& key) {
        return Get(LayerKeyRef(key));
      }));
  return gpu_.get();
}

void LayerCache::Impl::DropGpuCopies(const std::function<bool(const LayerKey&)>& pred) {
  std::lock_guard lock(gpu_mu_);
  if (gpu_) gpu_->EraseIf(pred);
}

Result<DeviceLayerPtr> LayerCache::get_layer_status(const LayerKey& key, std::string_view device) {
  try {
    key.Validate();
  } catch (const Error& e) {
    return e.status();  // a *_status call never throws
  }
  auto ordinal = DeviceOrdinal(device);
  if (!ordinal.ok()) return ordinal.status();
  auto front = impl_->Gpu();
  if (!front.ok()) return front.status();
  return (*front)->Get(key, *ordinal);
}

DeviceLayerPtr LayerCache::get_layer(const LayerKey& key, std::string_view device) {
  auto r = get_layer_status(key, device);
  if (r.ok()) return *r;
  if (r.status().IsNotFound()) return nullptr;
  throw Error(r.status());
}

std::vector<std::shared_future<DeviceLayerPtr>> LayerCache::prefetch(
    const std::vector<LayerKey>& keys, std::string_view device) {
  for (const LayerKey& k : keys) k.Validate();
  auto ordinal = DeviceOrdinal(device);
  if (!ordinal.ok()) throw Error(ordinal.status());
  auto front = impl_->Gpu();
  if (!front.ok()) throw Error(front.status());
  if (Status s = (*front)->tier().CheckDevice(*ordinal); !s.ok()) throw Error(s);
  return (*front)->Prefetch(keys, *ordinal);
}

DeviceLayerPtr LayerCache::get_layer_with_prefetch(const LayerKey& key, int64_t num_layers,
                                                   std::string_view device, int lookahead) {
  if (key.layer_index < 0 || key.layer_index >= num_layers) {
    throw Error(Status::InvalidArgument("layer_index must be in [0, num_layers), got " +
                                        std::to_string(key.layer_index) + " with num_layers " +
                                        std::to_string(num_layers)));
  }
  if (lookahead < 0) throw Error(Status::InvalidArgument("lookahead must be >= 0"));
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
