// LayerCache: the facade. It validates arguments, builds the tier chain
// (memory, disk, and Redis when configured) and runs lookups, puts and loads
// through it. The rest of the facade is in the files layer_cache_impl.h lists.
#include "layercache/layer_cache.h"

#include <algorithm>
#include <chrono>

#include "cache_settings_internal.h"
#include "disk/disk_tier.h"
#include "gpu/gpu_front.h"
#include "hub/hub_source.h"
#include "io/env.h"
#include "layer_cache_impl.h"
#include "layercache/quantization.h"
#include "layercache/status.h"
#include "memory/memory_tier.h"
#include "remote/remote_tier.h"
#include "source/model_refs.h"
#include "util/logging.h"
#include "util/path.h"

namespace layercache {
namespace {

LayerKey MakeKey(std::string_view model_id, int64_t layer_index,
                 const std::optional<std::string>& quantization_mode) {
  return LayerKey{std::string(model_id), layer_index, quantization_mode.value_or(""), ""};
}

void CheckDevice(std::string_view device) {
  if (device != "cpu") {
    throw Error(Status::InvalidArgument(
        "device \"" + std::string(device) +
        "\" is not supported here: this call returns layers in CPU memory (device=\"cpu\"); "
        "for a layer in GPU memory call get_layer(key, \"cuda:N\")"));
  }
}

// What a *_status variant returns for an exception of the throwing path: the
// Status that layercache::Error carries (the library's one exception type);
// any other exception (none is known) becomes kIOError. They never throw
// (include/layercache/layer_cache.h, "Errors").
template <class F>
auto StatusOf(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    return e.status();
  } catch (const std::exception& e) {
    return Status::IOError(e.what());
  }
}

DiskTierOptions DiskOptions(const LayerCacheOptions& o, const std::string& cache_dir) {
  DiskTierOptions d;
  d.cache_dir = cache_dir;
  d.capacity_bytes = o.max_disk_bytes();
  d.algorithm = o.checksum_algorithm;
  d.persist_index = o.persist_metadata;
  d.compression_level = o.enable_compression ? o.compression_level : 0;
  d.eviction_policy = o.eviction_policy;
  d.read_mode = o.disk_read_mode;
  d.env = o.env;
  return d;
}

}  // namespace

void CheckLayer(const LayerPtr& layer) {
  if (!layer)
    throw Error(Status::InvalidArgument("layer is null; pass a layer built with LayerBuilder"));
  if (HasReservedMetadata(layer->metadata())) {
    throw Error(Status::InvalidArgument(
        "layer metadata uses the reserved prefix \"layercache.\"; rename those keys"));
  }
}

// ---- LayerCache::Impl: the chain ---------------------------------------------

LayerCache::Impl::Impl(LayerCacheOptions options) : options_(std::move(options)) {
  options_.Validate();
  env_ = options_.env != nullptr ? options_.env : Env::Default();
  cache_dir_ = options_.ResolvedCacheDir();
  executor_ = std::make_unique<Executor>(static_cast<unsigned>(options_.worker_threads));
  auto memory = std::make_unique<MemoryTier>(options_.max_memory_bytes(), options_.eviction_policy);
  const bool creating = options_.persist_metadata && !CacheIndexExists(cache_dir_, options_.env);
  DiskTierOptions disk_options = DiskOptions(options_, cache_dir_);
  disk_options.executor = executor_.get();
  auto disk = DiskTier::Open(disk_options);
  if (!disk.ok()) throw Error(disk.status());
  if (creating) RecordSettingsOfNewCache(cache_dir_, options_);  // cache_settings.h
  lifetime_ = std::make_unique<LifetimeCounters>(options_.persist_metadata ? cache_dir_ : "", env_);
  memory_ = memory.get();
  disk_ = disk->get();
  // The chain, top first. A new tier is one more line here.
  std::vector<std::unique_ptr<Tier>> tiers;
  tiers.push_back(std::move(memory));
  disk_index_ = tiers.size();
  tiers.push_back(std::move(*disk));
  if (RemoteTierOptions r = RemoteTierOptions::From(options_); !r.urls.empty()) {
    r.executor = executor_.get();
    auto remote = RemoteTier::Open(r);
    if (!remote.ok()) throw Error(Status::InvalidArgument(remote.status().message()));
    tiers.push_back(std::move(*remote));
  }
  chain_ = std::make_unique<TierChain>(std::move(tiers));
  // Lookups, timed by the tier that served them (by its name), or a miss.
  auto histogram_of = [this](const std::string& name) -> LatencyHistogram* {
    if (name == "memory") return &latencies_.get_memory;
    if (name == "disk") return &latencies_.get_disk;
    if (name == "remote") return &latencies_.get_remote;
    auto& other = latencies_.get_other[name];
    if (!other) other = std::make_unique<LatencyHistogram>();
    return other.get();
  };
  std::vector<LatencyHistogram*> by_tier;
  for (size_t i = 0; i < chain_->size(); ++i)
    by_tier.push_back(histogram_of(chain_->tier(i).name()));
  by_tier.push_back(&latencies_.get_miss);
  chain_->set_lookup_observer([this, by_tier](size_t tier, double seconds) {
    if (tier == 0) {  // the top tier's hits are sampled
      static_assert(TierChain::kTopHitSample == CacheLatencies::kMemoryHitSample);
      return by_tier[0]->Observe(seconds, CacheLatencies::kMemoryHitSample);
    }
    by_tier[std::min(tier, by_tier.size() - 1)]->Observe(seconds);
  });
  hub_ = std::make_unique<HubSource>(JoinPath(cache_dir_, "refs"), env_, executor_.get());
  prefetch_ = std::make_unique<Executor::Limited>(*executor_,
                                                  static_cast<unsigned>(options_.prefetch_threads));
  refs_ = std::make_unique<ModelRefs>(env_, JoinPath(cache_dir_, "model-refs"));
}

LayerCache::Impl::~Impl() {
  gpu_.reset();       // its prefetches use the tiers
  prefetch_.reset();  // so do the host prefetches
  if (lifetime_) (void)lifetime_->FlushAndRead(StatsOfThisProcess());
}

// A key without a revision: the model's default revision's commit when that
// layer is cached here, else the key as it is (source/model_refs.h).
LayerPtr LayerCache::Impl::Get(const LayerKeyRef& key) {
  if (key.revision.empty() && !key.model_id.empty()) {
    const std::string commit = refs_->Default(key.model_id);
    if (!commit.empty()) {
      LayerKeyRef at = key;
      at.revision = commit;
      if (LayerPtr hit = chain_->GetFromTop(at)) return hit;
      if (chain_->ContainsLocally(at.ToKey())) return chain_->Get(at);
    }
  }
  return chain_->Get(key);
}

Status LayerCache::Impl::Put(const LayerKey& key, const LayerPtr& layer) {
  key.Validate();
  CheckLayer(layer);
  const auto t0 = std::chrono::steady_clock::now();
  Status s = chain_->Put(key, layer);
  latencies_.put_disk.Observe(SecondsSince(t0));
  // A GPU copy of the layer this one replaces must not outlive it (any
  // revision: a key without one may name the same bytes).
  if (s.ok()) {
    DropGpuCopies([&key](const LayerKey& k) {
      return k.layer_index == key.layer_index && k.model_id == key.model_id &&
             k.quantization_mode == key.quantization_mode;
    });
  }
  return s;
}

Result<LayerPtr> LayerCache::Impl::GetOrLoad(const LayerKey& key, const Loader& loader) {
  key.Validate();
  Executor::Scope scope(executor_.get());  // a loader's parallel work runs on the cache's pool
  // What a loader returns is checked as cache_layer() checks its layer.
  return chain_->GetOrLoad(key, [&]() -> Result<LayerPtr> {
    Result<LayerPtr> loaded = Status::IOError("loader did not run");
    try {
      loaded = loader();
    } catch (const Error& e) {  // keeps its code (a LayerBuilder's kInvalidArgument, ...)
      return e.status().WithContext("loading " + key.ToString() + " failed");
    } catch (const std::exception& e) {
      return Status::IOError("loading " + key.ToString() + " failed: " + e.what());
    }
    if (!loaded.ok()) return loaded.status();
    if (!*loaded)
      return Status::InvalidArgument("loader for " + key.ToString() + " returned no layer");
    if (HasReservedMetadata((*loaded)->metadata())) {
      return Status::InvalidArgument("loader for " + key.ToString() +
                                     " returned metadata with the reserved prefix \"layercache.\"");
    }
    return loaded;
  });
}

Result<LayerPtr> LayerCache::Impl::TimedGetOrLoad(const LayerKey& key, const Loader& loader) {
  return GetOrLoad(key, [&]() -> Result<LayerPtr> {
    const auto t0 = std::chrono::steady_clock::now();
    Result<LayerPtr> r = loader();
    latencies_.load_other.Observe(SecondsSince(t0));
    return r;
  });
}

// ---- LayerCache: lookups, puts, loads -----------------------------------------

LayerCache::LayerCache(LayerCacheOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
LayerCache::~LayerCache() = default;

LayerPtr LayerCache::get_layer(std::string_view model_id, int64_t layer_index,
                               std::optional<std::string> quantization_mode,
                               std::string_view device) {
  CheckDevice(device);
  return impl_->Get(
      LayerKeyRef(model_id, layer_index,
                  quantization_mode ? std::string_view(*quantization_mode) : std::string_view()));
}

LayerPtr LayerCache::get_layer(const LayerKey& key) { return impl_->Get(LayerKeyRef(key)); }

bool LayerCache::cache_layer(std::string_view model_id, int64_t layer_index, LayerPtr layer,
                             std::optional<std::string> quantization_mode) {
  return cache_layer(MakeKey(model_id, layer_index, quantization_mode), std::move(layer));
}

bool LayerCache::cache_layer(const LayerKey& key, LayerPtr layer) {
  Status s = CacheLayer(key, std::move(layer));  // bad arguments throw
  if (!s.ok()) LogWarn(s.message());
  return s.ok();
}

Status LayerCache::cache_layer_status(const LayerKey& key, LayerPtr layer) {
  return StatusOf([&] { return CacheLayer(key, std::move(layer)); });
}

Status LayerCache::CacheLayer(const LayerKey& key, LayerPtr layer) {
  // The cache knows the mode: under "nf4"/"int8" only a layer quantized that
  // way, and a quantized layer only under its own mode (quantization.h).
  if (layer) {
    if (Status q = quant::CheckQuantMode(*layer, key.quantization_mode); !q.ok()) return q;
  }
  return impl_->Put(key, layer);
}

Result<LayerPtr> LayerCache::get_or_load(const LayerKey& key, const Loader& loader) {
  return StatusOf([&] { return impl_->TimedGetOrLoad(key, loader); });  // a bad key too
}

LayerPtr LayerCache::download_and_cache(std::string_view model_id, int64_t layer_index,
                                        const std::string& repo_id, const std::string& filename,
                                        const DownloadOptions& options) {
  auto r = impl_->Download(model_id, layer_index, repo_id, filename, options, /*non_layer=*/false);
  if (!r.ok()) throw Error(r.status());
  return *r;
}

Result<LayerPtr> LayerCache::download_and_cache_status(std::string_view model_id,
                                                       int64_t layer_index,
                                                       const std::string& repo_id,
                                                       const std::string& filename,
                                                       const DownloadOptions& options) {
  return StatusOf([&] {
    return impl_->Download(model_id, layer_index, repo_id, filename, options,
                           /*non_layer=*/false);
  });
}

LayerPtr LayerCache::download_non_layer_tensors(std::string_view model_id,
                                                const std::string& repo_id,
                                                const std::string& filename,
                                                const DownloadOptions& options) {
  auto r = impl_->Download(model_id, 0, repo_id, filename, options, /*non_layer=*/true);
  if (!r.ok()) throw Error(r.status());
  return *r;
}

int64_t LayerCache::hub_num_layers(const std::string& repo_id, const std::string& filename,
                                   const DownloadOptions& options) {
  return impl_->HubNumLayers(repo_id, filename, options);
}

size_t LayerCache::import_checkpoint(const std::string& dir, std::string_view model_id,
                                     const std::vector<int64_t>& layers,
                                     const std::string& layer_pattern, bool include_non_layer,
                                     const std::string& revision,
                                     const ProgressCallback& progress) {
  return impl_->Import(dir, model_id, layers, layer_pattern, include_non_layer, revision, progress);
}

std::string LayerCache::default_revision(std::string_view model_id) {
  return impl_->refs().Default(model_id);
}

std::string LayerCache::model_config(std::string_view model_id, const std::string& revision) {
  return impl_->refs().Config(model_id, revision);
}

void LayerCache::save_model_config(std::string_view model_id, const std::string& revision,
                                   std::string_view json) {
  impl_->refs().SaveConfig(model_id, revision, json);
}

const LayerCacheOptions& LayerCache::options() const { return impl_->options(); }

const std::string& LayerCache::cache_dir() const { return impl_->cache_dir(); }

void LayerCache::record_download(uint64_t bytes) { impl_->RecordDownload(bytes); }

}  // namespace layercache
