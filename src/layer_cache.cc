#include "layercache/layer_cache.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "cache_settings_internal.h"
#include "disk/disk_tier.h"
#include "disk/entry_codec.h"
#include "gpu/gpu_front.h"
#include "hub/hub_source.h"
#include "layercache/progress.h"
#include "memory/memory_tier.h"
#include "metrics.h"
#include "remote/remote_tier.h"
#include "source/checkpoint.h"
#include "source/model_refs.h"
#include "util/logging.h"
#include "util/path.h"
#include "util/thread_pool.h"

namespace layercache {
namespace {

LayerKey MakeKey(std::string_view model_id, int64_t layer_index,
                 const std::optional<std::string>& quantization_mode) {
  LayerKey key;
  key.model_id = std::string(model_id);
  key.layer_index = layer_index;
  key.quantization_mode = quantization_mode.value_or("");
  return key;
}

void CheckDevice(std::string_view device) {
  if (device != "cpu") {
    throw std::invalid_argument(
        "device \"" + std::string(device) +
        "\" is not supported here: this call returns layers in CPU memory (device=\"cpu\"); "
        "for a layer in GPU memory call get_layer(key, \"cuda:N\")");
  }
}

bool IsCommit(const std::string& s) {
  return s.size() == 40 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

void CheckLayer(const LayerPtr& layer) {
  if (!layer) throw std::invalid_argument("layer is null; pass a layer built with LayerBuilder");
  if (HasReservedMetadata(layer->metadata())) {
    throw std::invalid_argument(
        "layer metadata uses the reserved prefix \"layercache.\"; rename those keys");
  }
}

}  // namespace

class LayerCache::Impl {
 public:
  explicit Impl(LayerCacheOptions options) : options_(std::move(options)) {
    options_.Validate();
    cache_dir_ = options_.ResolvedCacheDir();
    memory_ = std::make_unique<MemoryTier>(options_.max_memory_bytes(), options_.eviction_policy);
    DiskTierOptions d;
    d.cache_dir = cache_dir_;
    d.capacity_bytes = options_.max_disk_bytes();
    d.algorithm = options_.checksum_algorithm;
    d.persist_index = options_.persist_metadata;
    d.compression_level = options_.enable_compression ? options_.compression_level : 0;
    d.eviction_policy = options_.eviction_policy;
    d.read_mode = options_.disk_read_mode;
    const bool creating = options_.persist_metadata && !CacheIndexExists(cache_dir_);
    auto disk = DiskTier::Open(d);
    if (!disk.ok()) throw Error(disk.status());
    disk_ = std::move(*disk);
    if (creating) RecordSettingsOfNewCache(cache_dir_, options_);  // cache_settings.h
    lifetime_ = std::make_unique<LifetimeCounters>(options_.persist_metadata ? cache_dir_ : "");
    hub_ = std::make_unique<HubSource>(JoinPath(cache_dir_, "refs"));
    refs_ = std::make_unique<ModelRefs>(Env::Default(), JoinPath(cache_dir_, "model-refs"));
    const RemoteTierOptions r = RemoteTierOptions::From(options_);
    if (!r.urls.empty()) {
      auto remote = RemoteTier::Open(r);
      if (!remote.ok()) throw std::invalid_argument(remote.status().message());
      remote_ = std::move(*remote);
    }
  }

  Result<LayerPtr> Download(std::string_view model_id, int64_t layer_index,
                            const std::string& repo_id, const std::string& filename,
                            const DownloadOptions& options, bool non_layer) {
    LayerKey key;
    key.model_id = std::string(model_id);
    key.layer_index = non_layer ? 0 : layer_index;
    key.quantization_mode = non_layer ? kNonLayerQuantizationMode : "";
    const bool quantize = !non_layer && options.quantize.has_value();
    if (quantize) {
      options.quantize->Validate();
      key.quantization_mode = std::string(quant::QuantModeName(options.quantize->mode));
    }
    key.Validate();
    if (Status s = CheckRepoId(repo_id); !s.ok()) throw std::invalid_argument(s.message());
    if (options.connections < 1 || options.connections > 64) {
      throw std::invalid_argument("connections must be between 1 and 64, got " +
                                  std::to_string(options.connections));
    }
    const std::string revision = options.revision.empty() ? "main" : options.revision;
    auto from_record = [&](const Status& why) -> Result<LayerPtr> {
      auto recorded = IsCommit(revision) ? Result<std::string>(revision)
                                         : hub_->RecordedRevision(repo_id, revision, filename);
      if (!recorded.ok()) return why.ok() ? recorded.status() : why;
      key.revision = *recorded;
      if (LayerPtr layer = Get(LayerKeyRef(key))) return layer;
      return why.ok() ? Status::NotFound("offline (HF_HUB_OFFLINE) and " + key.ToString() +
                                         " is not cached")
                      : why;
    };
    if (HubSource::Offline(options)) return from_record(Status::OK());
    auto model = hub_->Model(repo_id, filename, options);
    if (!model.ok()) {
      // The Hub is unreachable: a layer cached earlier is still good.
      if (model.status().code() == StatusCode::kIOError) {
        auto cached = from_record(model.status());
        if (cached.ok()) {
          LogWarn(model.status().message() + "; serving the cached copy of " + repo_id + "@" +
                  revision);
        }
        return cached;
      }
      return model.status();
    }
    key.revision = (*model)->key_revision();
    LogDebug("download_and_cache " + key.ToString() + " from " + repo_id + "@" + revision);
    auto result = GetOrLoad(key, [&]() -> Result<LayerPtr> {
      const auto t0 = std::chrono::steady_clock::now();
      auto d = non_layer ? (*model)->DownloadNonLayerTensors(options.connections, options.quiet)
                         : (*model)->DownloadLayer(layer_index, options.connections, options.quiet);
      if (!d.ok()) return d.status();
      const double took =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      latencies_.load_hub.Observe(took);
      LogDebug("downloaded " + key.ToString() + ": " + std::to_string(d->payload_bytes) +
               " bytes in " + std::to_string(took) + " s");
      RecordDownload(d->payload_bytes);
      if (quantize) return quant::QuantizeLayer(*d->layer, *options.quantize);
      return d->layer;
    });
    if (result.ok()) NoteModel(key, revision, **model);
    return result;
  }

  ModelRefs& refs() { return *refs_; }

  // After a download: the default revision's commit and the config.json
  // (source/model_refs.h).
  void NoteModel(const LayerKey& key, const std::string& asked, HubModel& model) {
    if (asked == "main") refs_->Record(key.model_id, key.revision);
    if (refs_->HasConfig(key.model_id, key.revision)) return;
    auto json = model.FetchFile("config.json");
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
                bool include_non_layer, const std::string& revision) {
    auto checkpoint = Checkpoint::Open(dir, pattern);
    if (!checkpoint.ok()) throw Error(checkpoint.status());
    std::vector<int64_t> wanted = layers;
    if (wanted.empty()) {
      for (int64_t i = 0; i < (*checkpoint)->num_layers(); ++i) wanted.push_back(i);
    }
    Progress progress("import", wanted.size() + (include_non_layer ? 1 : 0), ::isatty(2) == 0);
    size_t done = 0;
    uint64_t bytes = 0;
    auto put = [&](const LayerKey& key, const Result<LayerPtr>& layer) {
      if (!layer.ok()) throw Error(layer.status());
      if (Status s = Put(key, *layer); !s.ok()) throw Error(s);
      bytes += (*layer)->nbytes();
      progress.Update(++done, bytes);
    };
    for (int64_t i : wanted)
      put(LayerKey{std::string(model_id), i, "", revision}, (*checkpoint)->ReadLayer(i));
    if (include_non_layer) {
      put(LayerKey{std::string(model_id), 0, kNonLayerQuantizationMode, revision},
          (*checkpoint)->ReadNonLayerTensors());
    }
    if (::isatty(2) != 0) progress.Finish();
    if (auto json = ReadFileToString(Env::Default(), JoinPath(dir, "config.json")); json.ok()) {
      refs_->SaveConfig(model_id, revision, *json);
    }
    // A snapshot imported under its commit (a Hugging Face cache's refs/main) becomes the model's
    // default revision, as a download of "main" does (source/model_refs.h).
    if (!revision.empty()) refs_->Record(model_id, revision);
    return done;
  }

  // A key without a revision: the model's default revision's commit when
  // that layer is cached (memory, then disk), else the key as it is.
  LayerPtr Get(const LayerKeyRef& ref) {
    if (ref.revision.empty() && !ref.model_id.empty()) {
      const std::string commit = refs_->Default(ref.model_id);
      if (!commit.empty()) {
        LayerKeyRef at = ref;
        at.revision = commit;
        if (memory_->Lookup(at) || disk_->Contains(at.ToKey())) return GetExact(at);
      }
    }
    return GetExact(ref);
  }

  // A memory hit allocates nothing and touches no shared counter.
  LayerPtr GetExact(const LayerKeyRef& ref) {
    // The cheap checks here; the text checks (NUL bytes, UTF-8) only on a
    // miss: a key that fails them was never cached, so it cannot hit.
    if (ref.model_id.empty() || ref.layer_index < 0) ref.Validate();  // throws
    if (LayerPtr layer = memory_->Lookup(ref)) {
      CounterSlot& c = Slot();
      c.memory_hits.fetch_add(1, std::memory_order_relaxed);
      c.bytes_served.fetch_add(layer->nbytes(), std::memory_order_relaxed);
      return layer;
    }
    ref.Validate();
    return GetSlow(ref.ToKey());
  }

  // The load of `key` already in flight, or, when there is none, an invalid
  // future after registering `promise` as the one: the caller leads the load
  // and must fulfil `promise` and erase the flight (EndFlight). A flight that
  // began before a put or invalidation of the key completed (an older
  // generation) is not joined: its result may be older than what the caller
  // was told; the caller then loads on its own (*registered false).
  std::shared_future<Result<LayerPtr>> JoinOrLead(const LayerKey& key,
                                                  std::promise<Result<LayerPtr>>* promise,
                                                  uint64_t generation, bool* registered) {
    std::lock_guard lock(flights_mu_);
    auto it = flights_.find(key);
    *registered = false;
    if (it != flights_.end()) {
      if (it->second.generation == generation) return it->second.result;
      return {};
    }
    flights_.emplace(key, Flight{promise->get_future().share(), generation});
    *registered = true;
    return {};
  }
  void EndFlight(const LayerKey& key, bool registered) {
    if (!registered) return;
    std::lock_guard lock(flights_mu_);
    flights_.erase(key);
  }

  // Disk (or an in-flight load of the same key), single-flight, timed.
  LayerPtr GetSlow(const LayerKey& key) {
    const auto t0 = std::chrono::steady_clock::now();
    bool remote = false;
    LayerPtr layer = GetSlowUntimed(key, &remote);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    (!layer   ? latencies_.get_miss
     : remote ? latencies_.get_remote
              : latencies_.get_disk)
        .Observe(s);
    return layer;
  }

  LayerPtr GetSlowUntimed(const LayerKey& key, bool* served_by_remote) {
    std::promise<Result<LayerPtr>> promise;
    const uint64_t generation = Generation(key);
    bool registered = false;
    std::shared_future<Result<LayerPtr>> wait_for =
        JoinOrLead(key, &promise, generation, &registered);
    CounterSlot& c = Slot();
    if (wait_for.valid()) {
      Result<LayerPtr> r = wait_for.get();
      if (r.ok() && *r) {
        c.memory_hits.fetch_add(1,
                                std::memory_order_relaxed);  // loaded into memory by another caller
        c.bytes_served.fetch_add((*r)->nbytes(), std::memory_order_relaxed);
        return *r;
      }
      c.misses.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    auto read = disk_->Get(key);
    bool from_remote = false;
    if (!read.ok() && remote_ && (read.status().IsNotFound() || read.status().IsCorruption())) {
      if (std::optional<LayerPtr> r = remote_->Get(key)) {
        read = std::move(*r);
        from_remote = true;
        StoreLocally(key, *read, nullptr);
      }
    }
    if (read.ok() && !from_remote) Promote(key, *read, generation);
    promise.set_value(read.ok() ? Result<LayerPtr>(*read) : Result<LayerPtr>(read.status()));
    EndFlight(key, registered);
    if (read.ok()) {
      *served_by_remote = from_remote;
      if (!from_remote) c.disk_hits.fetch_add(1, std::memory_order_relaxed);
      c.bytes_served.fetch_add((*read)->nbytes(), std::memory_order_relaxed);
      return std::move(*read);
    }
    c.misses.fetch_add(1, std::memory_order_relaxed);
    if (!read.status().IsNotFound() && !read.status().IsCorruption()) {
      LogWarn("cannot read " + key.ToString() + " from disk: " + read.status().message());
    }
    return nullptr;
  }

  std::vector<std::shared_future<LayerPtr>> Prefetch(std::string_view model_id,
                                                     const std::vector<int64_t>& indices,
                                                     const std::string& quant,
                                                     const IndexLoader& loader,
                                                     const std::string& revision = "") {
    std::vector<std::shared_future<LayerPtr>> out;
    const std::string commit = revision.empty() ? refs_->Default(model_id) : revision;
    for (int64_t i : indices) {
      LayerKey key{std::string(model_id), i, quant, commit};
      // Without a revision: the default revision's layer if cached, else the
      // one cached with cache_layer (no revision), as Get() does.
      if (revision.empty() && !commit.empty() && !memory_->Lookup(key) && !disk_->Contains(key)) {
        key.revision.clear();
      }
      key.Validate();
      if (LayerPtr layer = memory_->Lookup(key)) {  // already hot: nothing to do
        std::promise<LayerPtr> p;
        p.set_value(std::move(layer));
        out.push_back(p.get_future().share());
        continue;
      }
      auto task =
          std::make_shared<std::packaged_task<LayerPtr()>>([this, key, i, loader]() -> LayerPtr {
            if (!loader) return GetSlow(key);
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

  Status Put(const LayerKey& key, const LayerPtr& layer, const FileLock* held = nullptr) {
    key.Validate();
    CheckLayer(layer);
    ForgetWriteBack(key);
    const auto t0 = std::chrono::steady_clock::now();
    Status s = disk_->Put(key, layer, held);
    latencies_.put_disk.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    Promote(key, layer);
    if (s.ok()) {
      layers_cached_.fetch_add(1, std::memory_order_relaxed);
    } else {
      disk_write_errors_.fetch_add(1, std::memory_order_relaxed);
    }
    return s;
  }

  Result<LayerPtr> GetOrLoad(const LayerKey& key, const Loader& loader) {
    std::promise<Result<LayerPtr>> promise;
    bool registered = false;
    uint64_t generation = 0;
    for (;;) {
      if (LayerPtr layer = Get(LayerKeyRef(key))) return layer;
      generation = Generation(key);
      std::shared_future<Result<LayerPtr>> wait_for =
          JoinOrLead(key, &promise, generation, &registered);
      if (!wait_for.valid()) break;  // we are the leader (or load alone)
      Result<LayerPtr> r = wait_for.get();
      // Another caller's disk read that missed: look again (and perhaps lead).
      if (!r.ok() && r.status().IsNotFound()) continue;
      return r;
    }
    auto finish = [&] { EndFlight(key, registered); };
    try {
      Result<LayerPtr> result = LoadAsLeader(key, loader, generation);
      promise.set_value(result);
      finish();
      return result;
    } catch (...) {
      promise.set_exception(std::current_exception());
      finish();
      throw;
    }
  }

  bool RemoveEntry(const LayerKey& key) {
    key.Validate();
    const bool in_memory = memory_->Erase(LayerKeyRef(key));
    auto removed = disk_->RemoveKey(key);
    if (!removed.ok()) throw Error(removed.status());
    return *removed || in_memory;
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
    auto matches = [&](const LayerKey& k) {
      return !model_id ||
             (k.model_id == *model_id && (!layer_index || k.layer_index == *layer_index));
    };
    // With every stripe locked (no promotion, no write-back meanwhile): a
    // new generation, no write-back of these keys, then the disk. A read of
    // the disk that began before is not promoted afterwards (its generation
    // is gone); one promoted before is erased from memory below.
    Result<size_t> removed = 0;
    {
      InvalidationScope scope(this, matches);
      removed = disk_->Invalidate(model_id, layer_index);
      if (removed.ok() && !model_id) {
        if (Status s = disk_->Clear(); !s.ok()) removed = s;
      }
    }
    memory_->EraseIf(matches);
    if (!removed.ok()) throw Error(removed.status());
    return *removed;
  }

  void Clear() {
    Status s;
    {
      InvalidationScope scope(this, [](const LayerKey&) { return true; });
      s = disk_->Clear();
    }
    memory_->Clear();
    if (!s.ok()) throw Error(s);
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

  ~Impl() {
    if (lifetime_) (void)lifetime_->FlushAndRead(StatsOfThisProcess());
  }

  std::string Metrics() { return MetricsText(Stats(), latencies_); }
  Result<LayerPtr> TimedGetOrLoad(const LayerKey& key, const Loader& loader) {
    return GetOrLoad(key, [&]() -> Result<LayerPtr> {
      const auto t0 = std::chrono::steady_clock::now();
      Result<LayerPtr> r = loader();
      latencies_.load_other.Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      return r;
    });
  }

  CacheStats StatsOfThisProcess() {
    CacheStats s;
    auto totals = disk_->Totals();
    if (totals.ok()) {
      s.disk_cache_entries = totals->entries;
      s.disk_cache_bytes = totals->file_bytes;
      s.disk_cache_logical_bytes = totals->data_bytes;
    } else {
      LogWarn("cannot read disk totals: " + totals.status().message());
    }
    s.memory_cache_entries = memory_->size();
    s.memory_cache_bytes = memory_->usage();
    s.max_disk_cache_bytes = disk_->capacity();
    s.max_memory_cache_bytes = memory_->capacity();
    for (const CounterSlot& c : slots_) {
      s.memory_hits += c.memory_hits.load(std::memory_order_relaxed);
      s.disk_hits += c.disk_hits.load(std::memory_order_relaxed);
      s.total_misses += c.misses.load(std::memory_order_relaxed);
      s.bytes_served += c.bytes_served.load(std::memory_order_relaxed);
    }
    if (remote_) {
      const RemoteStats r = remote_->stats();
      s.remote_enabled = true;
      s.remote_hits = r.hits;
      s.remote_misses = r.misses;
      s.bytes_from_remote = r.bytes_read;
      s.bytes_to_remote = r.bytes_written;
      s.remote_publishes = r.publishes;
      s.remote_lease_waits = r.lease_waits;
      s.remote_errors = r.errors;
      s.remote_corrupt = r.corrupt;
      s.remote_breaker_opens = r.breaker_opens;
      s.remote_breaker_open = r.breaker_open;
      s.remote_redirections = r.redirections;
    }
    s.total_hits = s.memory_hits + s.disk_hits + s.remote_hits;
    s.memory_evictions = memory_->evictions();
    s.disk_evictions = disk_->evictions();
    s.checksum_failures = disk_->checksum_failures();
    s.bytes_downloaded = bytes_downloaded_.load(std::memory_order_relaxed);
    s.bytes_read_from_disk = disk_->bytes_read();
    s.bytes_written_to_disk = disk_->bytes_written();
    s.layers_cached = layers_cached_.load(std::memory_order_relaxed);
    s.disk_write_errors = disk_write_errors_.load(std::memory_order_relaxed);
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
    if (remote_) remote_->Flush();
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
    h.memory_lookup = [this](const LayerKey& key) { return memory_->Lookup(LayerKeyRef(key)); };
    h.memory_insert = [this](const LayerKey& key, LayerPtr layer) { Promote(key, layer); };
    h.host_get = [this](const LayerKey& key) -> Result<LayerPtr> {
      if (LayerPtr layer = Get(LayerKeyRef(key))) return layer;
      return Status::NotFound(key.ToString());
    };
    h.entry_path = [this](const LayerKey& key) { return disk_->EntryPath(key.Digest()); };
    return h;
  }

 private:
  // Versions in memory never go back in time (tests/versioned_stress_test.cc):
  // each key (by stripe) has a generation that every put and invalidation
  // bumps when it updates the memory tier. A layer read from disk goes into
  // memory only if its key's generation did not move since the read began;
  // else a put or invalidation completed meanwhile, and the read may be older.
  struct alignas(64) Stripe {
    std::mutex mu;
    uint64_t generation = 0;
    // The layers in memory that may be written back to disk when evicted:
    // an invalidation removes its keys' records before it removes their
    // files (and a write-back happens under this lock), so a layer it
    // invalidated is never written back.
    std::unordered_map<LayerKey, const Layer*, LayerKeyHash> write_back;
  };
  static constexpr size_t kStripes = 64;
  Stripe& StripeOf(const LayerKey& key) { return stripes_[LayerKeyHash()(key) % kStripes]; }
  uint64_t Generation(const LayerKey& key) {
    Stripe& s = StripeOf(key);
    std::lock_guard lock(s.mu);
    return s.generation;
  }
  // Before a new version of `key` is written: the old one in memory must not
  // be written back over it (a write-back in progress finishes first).
  void ForgetWriteBack(const LayerKey& key) {
    Stripe& s = StripeOf(key);
    std::lock_guard lock(s.mu);
    s.write_back.erase(key);
  }
  // Bumps every stripe's generation and drops the write-back records of the
  // keys being invalidated (one stripe locked at a time).
  void BumpAllGenerations(const std::function<bool(const LayerKey&)>& invalidated) {
    for (Stripe& s : stripes_) {
      std::lock_guard lock(s.mu);
      ++s.generation;
      std::erase_if(s.write_back, [&](const auto& kv) { return invalidated(kv.first); });
    }
  }
  // While an invalidation removes entries from disk: no layer read from disk
  // is promoted and no write-back starts; write-backs begun before it finish
  // first (they hold their key's lock, so the invalidation would miss a row
  // they are about to commit). No lock is held while waiting: the disk's key
  // locks are taken by the invalidation only afterwards.
  class InvalidationScope {
   public:
    InvalidationScope(Impl* impl, const std::function<bool(const LayerKey&)>& invalidated)
        : impl_(impl), invalidated_(invalidated) {
      impl_->invalidating_.fetch_add(1);
      impl_->BumpAllGenerations(invalidated_);
      std::unique_lock lock(impl_->write_back_mu_);
      impl_->write_back_cv_.wait(lock, [&] { return impl_->write_backs_ == 0; });
    }
    ~InvalidationScope() {
      impl_->BumpAllGenerations(invalidated_);
      impl_->invalidating_.fetch_sub(1);
    }
    InvalidationScope(const InvalidationScope&) = delete;
    InvalidationScope& operator=(const InvalidationScope&) = delete;

   private:
    Impl* impl_;
    std::function<bool(const LayerKey&)> invalidated_;
  };
  // Writes a layer evicted from memory back to disk if it is on disk no more
  // and nothing since made that wrong: a put of its key (the record is gone),
  // an invalidation (the same, or one in progress). Under the key's disk lock,
  // taken without waiting (its holder writes a newer version anyway).
  void WriteBack(const LayerKey& k, const LayerPtr& l) {
    auto key_lock = disk_->TryLockKey(k);
    if (!key_lock.ok() || !key_lock->has_value()) return;
    {
      Stripe& s = StripeOf(k);
      std::lock_guard lock(s.mu);
      auto it = s.write_back.find(k);
      if (it == s.write_back.end() || it->second != l.get()) return;
      s.write_back.erase(it);
      if (invalidating_.load() > 0) return;
      std::lock_guard wb(write_back_mu_);
      ++write_backs_;
    }
    if (!disk_->Contains(k)) {
      if (Status st = disk_->Put(k, l, &**key_lock); !st.ok()) {
        LogWarn("layer " + k.ToString() +
                " evicted from memory could not be written to disk: " + st.message());
      }
    }
    {
      std::lock_guard wb(write_back_mu_);
      --write_backs_;
    }
    write_back_cv_.notify_all();
  }
  // Puts `layer` in the memory tier: a put's layer (read_at empty), or one
  // read from a lower tier when the generation of its key was `*read_at`.
  // Layers pushed out that are no longer on disk are written back there (the
  // seed's "memory cache evicts to disk") unless invalidated meanwhile in this
  // process. Across processes this can bring back a layer that another
  // process invalidated (this memory tier is not told): docs/RELIABILITY.md.
  void Promote(const LayerKey& key, const LayerPtr& layer,
               std::optional<uint64_t> read_at = std::nullopt) {
    MemoryTier::Evicted evicted;
    {
      Stripe& s = StripeOf(key);
      std::lock_guard lock(s.mu);
      if (read_at) {
        // A put or invalidation came after the read, or one is under way.
        if (s.generation != *read_at || invalidating_.load() > 0) return;
      } else {
        ++s.generation;
      }
      memory_->Insert(key, layer, &evicted);
      s.write_back[key] = layer.get();
    }
    for (const auto& [k, l] : evicted) WriteBack(k, l);
  }

  Result<LayerPtr> LoadAsLeader(const LayerKey& key, const Loader& loader, uint64_t generation) {
    auto lock = disk_->LockKey(key);
    if (!lock.ok()) return lock.status();
    // Another process may have filled the key while we waited for its lock.
    auto read = disk_->Get(key);
    if (read.ok()) {
      Promote(key, *read, generation);
      return std::move(*read);
    }
    // The cluster tier: one node loads from the source under a lease; the
    // others wait for its publication (or load themselves if it fails).
    std::unique_ptr<RemoteTier::Lease> lease;
    if (remote_) {
      bool held_elsewhere = false;
      lease = remote_->TryAcquireLease(key, &held_elsewhere);
      std::optional<LayerPtr> peer;
      if (lease) {
        // Published by a node that released its lease just before ours?
        peer = remote_->Get(key, /*count_miss=*/false);
      } else if (held_elsewhere) {
        peer = remote_->WaitForPeer(key);
      }
      if (peer) {
        lease.reset();
        StoreLocally(key, *peer, &*lock);
        return std::move(*peer);
      }
    }
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
      return Status::InvalidArgument("loader for " + key.ToString() +
                                     " returned metadata with the reserved prefix \"layercache.\"");
    }
    if (Status s = Put(key, *loaded, &*lock); !s.ok()) {
      LogWarn(s.message() + " (the layer is served from memory)");
    }
    if (remote_) remote_->PublishAsync(key, *loaded, std::move(lease));
    return loaded;
  }

  // A layer from the remote tier goes to the local tiers.
  void StoreLocally(const LayerKey& key, const LayerPtr& layer, const FileLock* held) {
    ForgetWriteBack(key);
    Status s = disk_->Put(key, layer, held);
    if (!s.ok()) {
      disk_write_errors_.fetch_add(1, std::memory_order_relaxed);
      LogWarn(s.message() + " (the layer is served from memory)");
    }
    Promote(key, layer);
  }

  LayerCacheOptions options_;
  std::string cache_dir_;
  std::unique_ptr<MemoryTier> memory_;
  std::unique_ptr<DiskTier> disk_;
  std::unique_ptr<HubSource> hub_;
  std::unique_ptr<ModelRefs> refs_;
  std::unique_ptr<RemoteTier> remote_;  // null without remote_urls

  struct Flight {
    std::shared_future<Result<LayerPtr>> result;
    uint64_t generation = 0;
  };
  std::mutex flights_mu_;
  std::unordered_map<LayerKey, Flight, LayerKeyHash> flights_;
  std::array<Stripe, kStripes> stripes_;
  std::atomic<int> invalidating_{0};
  std::mutex write_back_mu_;
  std::condition_variable write_back_cv_;
  int write_backs_ = 0;  // in progress

  // Hit and miss counters, striped over cache lines so that threads do not
  // contend on them; summed by get_stats().
  struct alignas(64) CounterSlot {
    std::atomic<uint64_t> memory_hits{0};
    std::atomic<uint64_t> disk_hits{0};
    std::atomic<uint64_t> misses{0};
    std::atomic<uint64_t> bytes_served{0};
  };
  std::array<CounterSlot, 16> slots_;
  CounterSlot& Slot() {
    // Threads take slots round-robin (thread ids are stack addresses, whose
    // low bits are all alike, so hashing them would put every thread in one slot).
    static std::atomic<size_t> next_slot{0};
    thread_local const size_t index = next_slot.fetch_add(1, std::memory_order_relaxed);
    return slots_[index % slots_.size()];
  }

  ThreadPool& Pool() {
    std::call_once(pool_once_,
                   [this] { pool_ = std::make_unique<ThreadPool>(options_.prefetch_threads); });
    return *pool_;
  }
  std::once_flag pool_once_;
  std::unique_ptr<ThreadPool> pool_;  // destroyed first: its tasks use the members above
  std::atomic<uint64_t> bytes_downloaded_{0};
  std::atomic<uint64_t> layers_cached_{0};
  std::atomic<uint64_t> disk_write_errors_{0};
  CacheLatencies latencies_;
  std::unique_ptr<LifetimeCounters> lifetime_;
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
  Status s = cache_layer_status(key, std::move(layer));
  if (!s.ok()) LogWarn(s.message());
  return s.ok();
}

Status LayerCache::cache_layer_status(const LayerKey& key, LayerPtr layer) {
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
  return impl_->Download(model_id, layer_index, repo_id, filename, options, /*non_layer=*/false);
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
                                     const std::string& revision) {
  return impl_->Import(dir, model_id, layers, layer_pattern, include_non_layer, revision);
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
