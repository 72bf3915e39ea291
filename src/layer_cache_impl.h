// LayerCache::Impl: the facade's state, shared by the files that implement
// the facade, one job each:
//   layer_cache.cc             construction, lookups, puts and loads
//   layer_cache_sources.cc     Hub downloads and checkpoint imports (sources
//                              hand loads to GetOrLoad)
//   layer_cache_prefetch.cc    prefetching on the cache's executor
//   layer_cache_maintenance.cc invalidation, verification, listings, stats
//   layer_cache_gpu.cc         get_layer(key, "cuda:N") over the GPU front
//   layer_cache_singleton.cc   get_layer_cache() / reset_layer_cache()
// The caching itself is TierChain's (tier/tier_chain.h).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "layercache/layer_cache.h"
#include "metrics.h"
#include "tier/tier_chain.h"
#include "util/executor.h"

namespace layercache {

class DiskTier;
class GpuFront;
class HubSource;
class LifetimeCounters;
class MemoryTier;
class ModelRefs;
struct SourceLoad;

// Throws Error (kInvalidArgument) for a null layer or reserved metadata.
void CheckLayer(const LayerPtr& layer);

// Seconds since `since`, for the latency histograms.
inline double SecondsSince(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

class LayerCache::Impl {
 public:
  explicit Impl(LayerCacheOptions options);
  ~Impl();

  // layer_cache.cc
  LayerPtr Get(const LayerKeyRef& key);
  Status Put(const LayerKey& key, const LayerPtr& layer);
  Result<LayerPtr> GetOrLoad(const LayerKey& key, const Loader& loader);
  Result<LayerPtr> TimedGetOrLoad(const LayerKey& key, const Loader& loader);

  // layer_cache_sources.cc
  Result<LayerPtr> Download(std::string_view model_id, int64_t layer_index,
                            const std::string& repo_id, const std::string& filename,
                            const DownloadOptions& options, bool non_layer);
  int64_t HubNumLayers(const std::string& repo_id, const std::string& filename,
                       const DownloadOptions& options);
  size_t Import(const std::string& dir, std::string_view model_id,
                const std::vector<int64_t>& layers, const std::string& pattern,
                bool include_non_layer, const std::string& revision,
                const ProgressCallback& progress);

  // layer_cache_prefetch.cc
  std::vector<std::shared_future<LayerPtr>> Prefetch(std::string_view model_id,
                                                     const std::vector<int64_t>& indices,
                                                     const std::string& quant,
                                                     const IndexLoader& loader,
                                                     const std::string& revision);

  // layer_cache_maintenance.cc
  size_t Invalidate(const std::optional<std::string>& model_id,
                    const std::optional<int64_t>& layer_index);
  bool RemoveEntry(const LayerKey& key);
  void Clear();
  std::vector<CorruptEntry> Verify();
  OptimizeReport Optimize();
  std::vector<EntryInfo> List();
  CacheStats Stats();
  CacheStats StatsOfThisProcess();
  std::string Metrics();
  void Flush();

  // layer_cache_gpu.cc: the GPU front, created on first use (Result's
  // error when this build or machine has no CUDA device runtime).
  Result<GpuFront*> Gpu();

  void RecordDownload(uint64_t bytes) {
    bytes_downloaded_.fetch_add(bytes, std::memory_order_relaxed);
  }
  ModelRefs& refs() { return *refs_; }
  HubSource& hub() { return *hub_; }
  const LayerCacheOptions& options() const { return options_; }
  const std::string& cache_dir() const { return cache_dir_; }
  // The cache's one pool of workers (options.worker_threads), which its
  // tiers and sources run their parallel work on.
  Executor& executor() { return *executor_; }

 private:
  size_t disk_index_ = 0;  // the disk tier's place in the chain

  void NoteModel(const SourceLoad& source);  // after a download
  // Drops the GPU tier's copies of the keys `pred` selects (invalidation).
  void DropGpuCopies(const std::function<bool(const LayerKey&)>& pred);

  LayerCacheOptions options_;
  std::string cache_dir_;
  std::unique_ptr<Executor> executor_;  // before the tiers: destroyed after them
  std::unique_ptr<TierChain> chain_;
  MemoryTier* memory_ = nullptr;  // in chain_: for listings
  DiskTier* disk_ = nullptr;      // in chain_: for the directory's maintenance
  std::unique_ptr<HubSource> hub_;
  std::unique_ptr<ModelRefs> refs_;
  Env* env_ = nullptr;  // options_.env or Env::Default()
  std::atomic<uint64_t> bytes_downloaded_{0};
  CacheLatencies latencies_;
  std::unique_ptr<LifetimeCounters> lifetime_;
  // Prefetches, prefetch_threads at once on executor_; destroyed before the
  // members above: its tasks use them.
  std::unique_ptr<Executor::Limited> prefetch_;
  std::mutex gpu_mu_;
  std::unique_ptr<GpuFront> gpu_;  // destroyed first: its prefetches use the tiers
};

}  // namespace layercache
