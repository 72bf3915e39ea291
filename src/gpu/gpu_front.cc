#include "gpu/gpu_front.h"

#include <charconv>
#include <cstring>

#include "util/logging.h"

namespace layercache {

Result<int> ParseDevice(std::string_view device) {
  if (device == "cpu") return -1;
  if (device == "cuda") return 0;
  if (device.starts_with("cuda:")) {
    const std::string_view n = device.substr(5);
    int ordinal = -1;
    auto [ptr, ec] = std::from_chars(n.data(), n.data() + n.size(), ordinal);
    if (!n.empty() && ec == std::errc() && ptr == n.data() + n.size() && ordinal >= 0) {
      return ordinal;
    }
  }
  return Status::InvalidArgument("device \"" + std::string(device) +
                                 "\" is not understood: use \"cpu\", \"cuda\" or \"cuda:N\"");
}

GpuFront::GpuFront(std::shared_ptr<DeviceRuntime> runtime, GpuFrontOptions options, HostTiers host)
    : runtime_(runtime),
      options_(options),
      host_(std::move(host)),
      tier_(std::move(runtime), options.tier),
      executor_(options.executor != nullptr ? options.executor : &Executor::Default()),
      pool_(*executor_, static_cast<unsigned>(std::max(1, options.prefetch_threads))) {}

GpuFront::~GpuFront() = default;

GpuCounters GpuFront::counters() const {
  GpuCounters c;
  c.hits = hits_.load(std::memory_order_relaxed);
  c.misses = misses_.load(std::memory_order_relaxed);
  c.loads_from_memory = from_memory_.load(std::memory_order_relaxed);
  c.loads_from_disk = from_disk_.load(std::memory_order_relaxed);
  c.loads_from_chain = from_chain_.load(std::memory_order_relaxed);
  c.evictions = tier_.evictions();
  c.evicted_to_memory = to_memory_.load(std::memory_order_relaxed);
  c.errors = errors_.load(std::memory_order_relaxed);
  return c;
}

Result<DeviceLayerPtr> GpuFront::Get(const LayerKey& key, int device) {
  Executor::Scope scope(executor_);  // chunk reads run on this front's executor
  if (Status s = tier_.CheckDevice(device); !s.ok()) return s;
  if (DeviceLayerPtr hit = tier_.Lookup(key, device)) {
    hits_.fetch_add(1, std::memory_order_relaxed);
    return hit;
  }
  // One load per (key, device): later callers wait for the first one's.
  const auto id = std::make_pair(key.Digest(), device);
  std::shared_ptr<Flight> flight;
  {
    std::unique_lock lock(flights_mu_);
    auto it = flights_.find(id);
    if (it == flights_.end()) {
      flight = std::make_shared<Flight>();
      flights_.emplace(id, flight);
    } else {
      flight = it->second;
      flights_cv_.wait(lock, [&] { return flight->done; });
      return flight->result;
    }
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  Result<DeviceLayerPtr> result = Load(key, device);
  if (!result.ok() && !result.status().IsNotFound())
    errors_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lock(flights_mu_);
    flight->result = result;
    flight->done = true;
    flights_.erase(id);
  }
  flights_cv_.notify_all();
  return result;
}

Result<LayerPtr> GpuFront::PinnedCopy(const Layer& layer) {
  auto p = runtime_->AllocatePinned(layer.nbytes());
  if (!p.ok()) return p.status();
  std::memcpy(*p, layer.data(), layer.nbytes());
  std::shared_ptr<DeviceRuntime> rt = runtime_;
  AlignedBuffer buffer = AlignedBuffer::Adopt(static_cast<std::byte*>(*p), layer.nbytes(), 4096,
                                              [rt](std::byte* q) { rt->FreePinned(q); });
  return Layer::Create(layer.tensors(), std::move(buffer), layer.metadata());
}

void GpuFront::ReturnToHost(GpuTier::Evicted* evicted) {
  for (auto& [key, layer] : *evicted) {
    if (!host_.memory_lookup || !host_.memory_insert || host_.memory_lookup(key)) continue;
    auto back = tier_.CopyToHost(*layer, options_.pin_host_layers);
    if (!back.ok()) {
      LogWarn("GPU tier: could not keep evicted " + key.ToString() +
              " in host memory: " + back.status().ToString());
      continue;
    }
    host_.memory_insert(key, std::move(*back));
    to_memory_.fetch_add(1, std::memory_order_relaxed);
  }
  evicted->clear();
}

Result<DeviceLayerPtr> GpuFront::Load(const LayerKey& key, int device) {
  GpuTier::Evicted evicted;
  auto from_host = [&](LayerPtr host) -> Result<DeviceLayerPtr> {
    if (options_.pin_host_layers && !runtime_->IsPinned(host->data())) {
      if (auto pinned = PinnedCopy(*host); pinned.ok()) {
        host = *pinned;
        if (host_.memory_insert) host_.memory_insert(key, host);
      }
    }
    auto d = tier_.LoadFromHost(key, device, *host, &evicted);
    ReturnToHost(&evicted);
    return d;
  };
  // 1. The memory tier.
  if (host_.memory_lookup) {
    if (LayerPtr host = host_.memory_lookup(key)) {
      from_memory_.fetch_add(1, std::memory_order_relaxed);
      return from_host(std::move(host));
    }
  }
  // 2. The disk entry, straight to the device.
  const std::string path = host_.entry_path ? host_.entry_path(key) : "";
  if (!path.empty()) {
    auto d = tier_.LoadFromFile(key, device, host_.env != nullptr ? host_.env : Env::Default(),
                                path, key.Digest(), &evicted);
    ReturnToHost(&evicted);
    if (d.ok()) {
      from_disk_.fetch_add(1, std::memory_order_relaxed);
      return d;
    }
    // Missing, compressed or bad entries: the host chain reads them (and
    // removes and counts a bad one); other failures are reported.
    const StatusCode code = d.status().code();
    if (code != StatusCode::kNotFound && code != StatusCode::kUnsupported &&
        code != StatusCode::kCorruption) {
      return d;
    }
  }
  // 3. The host chain.
  if (!host_.host_get) return Status::NotFound(key.ToString());
  auto host = host_.host_get(key);
  if (!host.ok()) return host.status();
  if (*host == nullptr) return Status::NotFound(key.ToString());
  from_chain_.fetch_add(1, std::memory_order_relaxed);
  return from_host(std::move(*host));
}

std::vector<std::shared_future<DeviceLayerPtr>> GpuFront::Prefetch(
    const std::vector<LayerKey>& keys, int device) {
  std::vector<std::shared_future<DeviceLayerPtr>> out;
  for (const LayerKey& key : keys) {
    auto task = std::make_shared<std::packaged_task<DeviceLayerPtr()>>([this, key, device] {
      auto r = Get(key, device);
      if (!r.ok()) {
        if (!r.status().IsNotFound()) {
          LogWarn("prefetch of " + key.ToString() + " to cuda:" + std::to_string(device) +
                  " failed: " + r.status().ToString());
        }
        return DeviceLayerPtr();
      }
      return *r;
    });
    out.push_back(task->get_future().share());
    pool_.Submit([task] { (*task)(); });
  }
  return out;
}

}  // namespace layercache
