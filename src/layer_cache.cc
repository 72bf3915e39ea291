// LayerCache: the facade. It validates arguments, builds the tier chain
// (memory, disk, and Redis when configured) and runs the sources' loads
// through it; the caching itself is TierChain's (tier/tier_chain.h).
#include "layercache/layer_cache.h"

#include <chrono>
#include <future>
#include <iostream>
#include <mutex>

#include "cache_settings_internal.h"
#include "disk/disk_tier.h"
#include "gpu/gpu_front.h"
#include "hub/hub_source.h"
#include "io/env.h"
#include "layercache/quantization.h"
#include "memory/memory_tier.h"
#include "metrics.h"
#include "remote/remote_tier.h"
#include "source/checkpoint_import.h"
#include "source/model_refs.h"
#include "tier/tier_chain.h"
#include "util/logging.h"
#include "util/path.h"
#include "util/thread_pool.h"

namespace layercache {
namespace {

LayerKey MakeKey(std::string_view model_id, int64_t layer_index,
                 const std::optional<std::string>& quantization_mode) {
  return LayerKey{std::string(model_id), layer_index, quantization_mode.value_or(""), ""};
}

void CheckDevice(std::string_view device) {
  if (device != "cpu") {
    throw std::invalid_argument(
        "device \"" + std::string(device) +
        "\" is not supported here: this call returns layers in CPU memory (device=\"cpu\"); "
        "for a layer in GPU memory call get_layer(key, \"cuda:N\")");
  }
}

void CheckLayer(const LayerPtr& layer) {
  if (!layer) throw std::invalid_argument("layer is null; pass a layer built with LayerBuilder");
  if (HasReservedMetadata(layer->metadata())) {
    throw std::invalid_argument(
        "layer metadata uses the reserved prefix \"layercache.\"; rename those keys");
  }
}

// What a *_status variant returns for an exception of the throwing path:
// the Status it carries (layercache::Error) or kInvalidArgument. They never
// throw (include/layercache/layer_cache.h, "Errors").
template <class F>
auto StatusOf(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    return e.status();
  } catch (const std::invalid_argument& e) {
    return Status::InvalidArgument(e.what());
  } catch (const std::exception& e) {
    return Status::IOError(e.what());
  }
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
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

class LayerCache::Impl {
 public:
  explicit Impl(LayerCacheOptions options) : options_(std::move(options)) {
    options_.Validate();
    env_ = options_.env != nullptr ? options_.env : Env::Default();
    cache_dir_ = options_.ResolvedCacheDir();
    auto memory =
        std::make_unique<MemoryTier>(options_.max_memory_bytes(), options_.eviction_policy);
    const bool creating = options_.persist_metadata && !CacheIndexExists(cache_dir_, options_.env);
    auto disk = DiskTier::Open(DiskOptions(options_, cache_dir_));
    if (!disk.ok()) throw Error(disk.status());
    if (creating) RecordSettingsOfNewCache(cache_dir_, options_);  // cache_settings.h
    lifetime_ =
        std::make_unique<LifetimeCounters>(options_.persist_metadata ? cache_dir_ : "", env_);
    memory_ = memory.get();
    disk_ = disk->get();
    // The chain, top first. A new tier is one more line here.
    std::vector<std::unique_ptr<Tier>> tiers;
    tiers.push_back(std::move(memory));
    tiers.push_back(std::move(*disk));
    if (const RemoteTierOptions r = RemoteTierOptions::From(options_); !r.urls.empty()) {
      auto remote = RemoteTier::Open(r);
      if (!remote.ok()) throw std::invalid_argument(remote.status().message());
      tiers.push_back(std::move(*remote));
    }
    chain_ = std::make_unique<TierChain>(std::move(tiers));
    // Lookups past the top tier, timed by the tier that served them.
    chain_->set_lookup_observer([this](size_t tier, double seconds) {
      if (tier == 0) {  // sampled memory hits
        static_assert(TierChain::kTopHitSample == CacheLatencies::kMemoryHitSample);
        return latencies_.get_memory.Observe(seconds, CacheLatencies::kMemoryHitSample);
      }
      (tier == 1   ? latencies_.get_disk
       : tier == 2 ? latencies_.get_remote
                   : latencies_.get_miss)
          .Observe(seconds);
    });
    hub_ = std::make_unique<HubSource>(JoinPath(cache_dir_, "refs"), env_);
    refs_ = std::make_unique<ModelRefs>(env_, JoinPath(cache_dir_, "model-refs"));
  }

  // A key without a revision: the model's default revision's commit when
  // that layer is cached here, else the key as it is (source/model_refs.h).
  ~Impl() {
    if (lifetime_) (void)lifetime_->FlushAndRead(StatsOfThisProcess());
  }

  LayerPtr Get(const LayerKeyRef& key) {
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

  ModelRefs& refs() { return *refs_; }

  Status Put(const LayerKey& key, const LayerPtr& layer) {
    key.Validate();
    CheckLayer(layer);
    const auto t0 = std::chrono::steady_clock::now();
    Status s = chain_->Put(key, layer);
    latencies_.put_disk.Observe(Seconds(t0));
    return s;
  }

  Result<LayerPtr> GetOrLoad(const LayerKey& key, const Loader& loader) {
    key.Validate();
    // What a loader returns is checked as cache_layer() checks its layer.
    return chain_->GetOrLoad(key, [&]() -> Result<LayerPtr> {
      Result<LayerPtr> loaded = Status::IOError("loader did not run");
      try {
        loaded = loader();
      } catch (const std::exception& e) {
        return Status::IOError("loading " + key.ToString() + " failed: " + e.what());
      }
      if (!loaded.ok()) return loaded.status();
      if (!*loaded)
        return Status::InvalidArgument("loader for " + key.ToString() + " returned no layer");
      if (HasReservedMetadata((*loaded)->metadata())) {
        return Status::InvalidArgument(
            "loader for " + key.ToString() +
            " returned metadata with the reserved prefix \"layercache.\"");
      }
      return loaded;
    });
  }

  Result<LayerPtr> Download(std::string_view model_id, int64_t layer_index,
                            const std::string& repo_id, const std::string& filename,
                            const DownloadOptions& options, bool non_layer) {
    uint64_t downloaded = 0;  // by source->load, on this thread
    auto source = hub_->Resolve(model_id, layer_index, repo_id, filename, options, non_layer,
                                [this, &downloaded](uint64_t bytes) {
                                  RecordDownload(bytes);
                                  downloaded = bytes;
                                });
    if (!source.ok()) return source.status();
    if (source->load) {
      LogDebug("download_and_cache " + source->key.ToString() + " from " + repo_id + "@" +
               options.revision);
      auto result = GetOrLoad(source->key, [&]() -> Result<LayerPtr> {
        const auto t0 = std::chrono::steady_clock::now();
        Result<LayerPtr> r = source->load();
        const double took = Seconds(t0);
        latencies_.load_hub.Observe(took);
        if (r.ok()) {
          LogDebug("downloaded " + source->key.ToString() + ": " + std::to_string(downloaded) +
                   " bytes in " + std::to_string(took) + " s");
        }
        return r;
      });
      if (result.ok()) NoteModel(*source);
      return result;
    }
    // Offline, or the Hub is unreachable: what the cache holds.
    if (LayerPtr layer = Get(LayerKeyRef(source->key))) {
      if (!source->serving_cached_note.empty()) LogWarn(source->serving_cached_note);
      return layer;
    }
    return source->unavailable;
  }

  // After a download: the default revision's commit and the config.json.
  void NoteModel(const SourceLoad& source) {
    const LayerKey& key = source.key;
    if (source.requested_revision == "main") refs_->Record(key.model_id, key.revision);
    if (!source.fetch_file || refs_->HasConfig(key.model_id, key.revision)) return;
    auto json = source.fetch_file("config.json");
    if (json.ok()) refs_->SaveConfig(key.model_id, key.revision, *json);
  }

  int64_t HubNumLayers(const std::string& repo_id, const std::string& filename,
                       const DownloadOptions& options) {
    if (Status s = CheckRepoId(repo_id); !s.ok()) throw std::invalid_argument(s.message());
    auto model = hub_->Model(repo_id, filename, options);
    if (!model.ok()) throw Error(model.status());
    return (*model)->num_layers();
  }

  size_t Import(const std::string& dir, std::string_view model_id,
                const std::vector<int64_t>& layers, const std::string& pattern,
                bool include_non_layer, const std::string& revision,
                const ProgressCallback& progress) {
    auto plan =
        PlanCheckpointImport(dir, model_id, layers, pattern, include_non_layer, revision, env_);
    if (!plan.ok()) throw Error(plan.status());
    ProgressUpdate update;
    update.label = "import";
    update.total = plan->size();
    for (const SourceLoad& item : *plan) {
      Result<LayerPtr> layer = item.load();
      if (!layer.ok()) throw Error(layer.status());
      if (Status s = Put(item.key, *layer); !s.ok()) throw Error(s);
      update.bytes += (*layer)->nbytes();
      update.finished = ++update.done == update.total;
      if (progress) progress(update);
    }
    if (auto json = ReadFileToString(env_, JoinPath(dir, "config.json")); json.ok()) {
      refs_->SaveConfig(model_id, revision, *json);
    }
    // A snapshot imported under its commit (a Hugging Face cache's refs/main)
    // becomes the model's default revision, as a download of "main" does.
    if (!revision.empty()) refs_->Record(model_id, revision);
    return update.done;
  }

  std::vector<std::shared_future<LayerPtr>> Prefetch(std::string_view model_id,
                                                     const std::vector<int64_t>& indices,
                                                     const std::string& quant,
                                                     const IndexLoader& loader,
                                                     const std::string& revision = "") {
    std::vector<std::shared_future<LayerPtr>> out;
    const std::string commit(revision.empty() ? refs_->Default(model_id)
                                              : std::string_view(revision));
    for (int64_t i : indices) {
      LayerKey key{std::string(model_id), i, quant, commit};
      // Without a revision: the default revision's layer if cached, else the
      // one cached with cache_layer (no revision), as Get() does.
      if (revision.empty() && !commit.empty() && !chain_->ContainsLocally(key)) {
        key.revision.clear();
      }
      key.Validate();
      if (LayerPtr layer = chain_->Peek(key)) {  // already hot: nothing to do
        std::promise<LayerPtr> p;
        p.set_value(std::move(layer));
        out.push_back(p.get_future().share());
        continue;
      }
      auto task =
          std::make_shared<std::packaged_task<LayerPtr()>>([this, key, i, loader]() -> LayerPtr {
            if (!loader) return chain_->GetBelowTop(key);
            auto r = GetOrLoad(key, [&] { return loader(i); });
            if (!r.ok()) {
              LogWarn("prefetch of " + key.ToString() + " failed: " + r.status().message());
              return nullptr;
            }
            return *r;
          });
      out.push_back(task->get_future().share());
      Pool().Submit([task] { (*task)(); });
    }
    return out;
  }

  size_t Invalidate(const std::optional<std::string>& model_id,
                    const std::optional<int64_t>& layer_index) {
    if (!model_id && layer_index) {
      throw std::invalid_argument("layer_index given without model_id; pass the model too");
    }
    if (layer_index && *layer_index < 0) {
      throw std::invalid_argument("layer_index must be >= 0, got " + std::to_string(*layer_index));
    }
    if (model_id && model_id->empty()) {
      throw std::invalid_argument("model_id is empty; pass a model name, or nothing to clear all");
    }
    auto removed = chain_->Invalidate(model_id, layer_index, /*clear=*/!model_id);
    if (!removed.ok()) throw Error(removed.status());
    return (*removed)[kDiskTier];
  }

  bool RemoveEntry(const LayerKey& key) {
    key.Validate();
    auto removed = chain_->Remove(key);
    if (!removed.ok()) throw Error(removed.status());
    return *removed;
  }

  void Clear() {
    if (Status s = chain_->Clear(); !s.ok()) throw Error(s);
  }

  std::vector<CorruptEntry> Verify() {
    auto corrupt = disk_->Verify();
    if (!corrupt.ok()) throw Error(corrupt.status());
    return std::move(*corrupt);
  }

  OptimizeReport Optimize() {
    auto report = disk_->Optimize();
    if (!report.ok()) throw Error(report.status());
    return *report;
  }

  CacheStats Stats() {
    CacheStats s = StatsOfThisProcess();
    s.lifetime = lifetime_->FlushAndRead(s);
    return s;
  }

  std::string Metrics() { return MetricsText(Stats(), latencies_); }

  Result<LayerPtr> TimedGetOrLoad(const LayerKey& key, const Loader& loader) {
    return GetOrLoad(key, [&]() -> Result<LayerPtr> {
      const auto t0 = std::chrono::steady_clock::now();
      Result<LayerPtr> r = loader();
      latencies_.load_other.Observe(Seconds(t0));
      return r;
    });
  }

  CacheStats StatsOfThisProcess() {
    CacheStats s;
    chain_->AddStats(&s);
    s.total_hits = s.memory_hits + s.disk_hits + s.remote_hits;
    s.bytes_downloaded = bytes_downloaded_.load(std::memory_order_relaxed);
    return s;
  }

  std::vector<EntryInfo> List() {
    auto rows = disk_->List();
    if (!rows.ok()) throw Error(rows.status());
    std::vector<EntryInfo> out;
    out.reserve(rows->size());
    for (IndexRow& r : *rows) {
      EntryInfo e;
      e.in_memory = memory_->Contains(r.key);
      e.key = std::move(r.key);
      e.size_bytes = r.size;
      e.data_bytes = r.data_bytes;
      e.last_access_ns = r.last_access_ns;
      e.created_ns = r.created_ns;
      e.checksum_algorithm = std::move(r.checksum_algorithm);
      e.checksum = std::move(r.checksum);
      e.path = disk_->EntryPath(r.digest);
      out.push_back(std::move(e));
    }
    return out;
  }

  void Flush() {
    chain_->Flush();
    (void)Stats();  // adds this process's counters to the lifetime totals
  }

  void RecordDownload(uint64_t bytes) {
    bytes_downloaded_.fetch_add(bytes, std::memory_order_relaxed);
  }

  const LayerCacheOptions& options() const { return options_; }
  const std::string& cache_dir() const { return cache_dir_; }

  // The GPU tier's view of the host tiers (src/gpu/gpu_front.h).
  HostTiers GpuHostTiers() {
    HostTiers h;
    h.env = env_;
    h.memory_lookup = [this](const LayerKey& key) { return memory_->Lookup(LayerKeyRef(key)); };
    h.memory_insert = [this](const LayerKey& key, LayerPtr layer) {
      if (Status s = chain_->PutTop(key, layer); !s.ok()) LogWarn(s.message());
    };
    h.host_get = [this](const LayerKey& key) -> Result<LayerPtr> {
      if (LayerPtr layer = Get(LayerKeyRef(key))) return layer;
      return Status::NotFound(key.ToString());
    };
    h.entry_path = [this](const LayerKey& key) { return disk_->EntryPath(key.Digest()); };
    return h;
  }

 private:
  static constexpr size_t kDiskTier = 1;  // the chain's second tier

  ThreadPool& Pool() {
    std::call_once(pool_once_,
                   [this] { pool_ = std::make_unique<ThreadPool>(options_.prefetch_threads); });
    return *pool_;
  }

  LayerCacheOptions options_;
  std::string cache_dir_;
  std::unique_ptr<TierChain> chain_;
  MemoryTier* memory_ = nullptr;  // in chain_: for listings
  DiskTier* disk_ = nullptr;      // in chain_: for the directory's maintenance
  std::unique_ptr<HubSource> hub_;
  std::unique_ptr<ModelRefs> refs_;
  Env* env_ = nullptr;  // options_.env or Env::Default()
  std::atomic<uint64_t> bytes_downloaded_{0};
  CacheLatencies latencies_;
  std::unique_ptr<LifetimeCounters> lifetime_;
  std::once_flag pool_once_;
  std::unique_ptr<ThreadPool> pool_;  // destroyed first: its tasks use the members above
};
// ---- LayerCache ------------------------------------------------------------

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

std::vector<std::shared_future<LayerPtr>> LayerCache::prefetch(
    std::string_view model_id, const std::vector<int64_t>& layer_indices,
    std::optional<std::string> quantization_mode, IndexLoader loader, const std::string& revision) {
  return impl_->Prefetch(model_id, layer_indices, quantization_mode.value_or(""), loader, revision);
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

LayerPtr LayerCache::get_layer_with_prefetch(std::string_view model_id, int64_t layer_index,
                                             int64_t num_layers, int lookahead,
                                             std::optional<std::string> quantization_mode,
                                             IndexLoader loader, const std::string& revision) {
  if (num_layers <= 0 || layer_index < 0 || layer_index >= num_layers) {
    throw std::invalid_argument("layer_index must be in [0, num_layers); got " +
                                std::to_string(layer_index) + " of " + std::to_string(num_layers));
  }
  if (lookahead < 0) throw std::invalid_argument("lookahead must be >= 0");
  std::vector<int64_t> next;
  for (int k = 1; k <= lookahead && k < num_layers; ++k)
    next.push_back((layer_index + k) % num_layers);
  (void)impl_->Prefetch(model_id, next, quantization_mode.value_or(""), loader, revision);
  LayerKey key{std::string(model_id), layer_index, quantization_mode.value_or(""), revision};
  if (LayerPtr layer = get_layer(key)) return layer;
  if (!loader) return nullptr;
  auto r = get_or_load(key, [&] { return loader(layer_index); });
  if (!r.ok()) throw Error(r.status());
  return *r;
}

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
  return impl_->TimedGetOrLoad(key, loader);
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

size_t LayerCache::invalidate_cache(std::optional<std::string> model_id,
                                    std::optional<int64_t> layer_index) {
  return impl_->Invalidate(model_id, layer_index);
}

void LayerCache::clear_cache() { impl_->Clear(); }

bool LayerCache::remove_entry(const LayerKey& key) { return impl_->RemoveEntry(key); }

std::vector<CorruptEntry> LayerCache::verify_cache_integrity() { return impl_->Verify(); }

OptimizeReport LayerCache::optimize_cache() { return impl_->Optimize(); }

void LayerCache::flush() { impl_->Flush(); }

CacheStats LayerCache::get_stats() { return impl_->Stats(); }

void LayerCache::print_stats(std::ostream& out) { out << get_stats().ToText() << std::flush; }

void LayerCache::print_stats() { print_stats(std::cout); }

std::vector<EntryInfo> LayerCache::list_entries() { return impl_->List(); }

std::string LayerCache::metrics_text() { return impl_->Metrics(); }

const LayerCacheOptions& LayerCache::options() const { return impl_->options(); }

const std::string& LayerCache::cache_dir() const { return impl_->cache_dir(); }

void LayerCache::record_download(uint64_t bytes) { impl_->RecordDownload(bytes); }

// ---- the process-wide instance ---------------------------------------------

namespace {
std::mutex g_singleton_mu;
std::shared_ptr<LayerCache> g_singleton;
}  // namespace

std::shared_ptr<LayerCache> get_layer_cache(std::optional<LayerCacheOptions> options) {
  std::lock_guard lock(g_singleton_mu);
  if (!g_singleton) {
    g_singleton = std::make_shared<LayerCache>(options.value_or(LayerCacheOptions{}));
  } else if (options && !(*options == g_singleton->options())) {
    LogWarn("get_layer_cache: the global cache already exists (cache_dir " +
            g_singleton->cache_dir() + "); the new options are ignored");
  }
  return g_singleton;
}

void reset_layer_cache() {
  std::lock_guard lock(g_singleton_mu);
  g_singleton.reset();
}

HostTiers LayerCache::GpuHostTiers() { return impl_->GpuHostTiers(); }

}  // namespace layercache
