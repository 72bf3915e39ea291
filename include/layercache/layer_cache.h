// LayerCache: the layer cache of the seed document: memory and disk tiers,
// an optional Redis Cluster tier, and a GPU tier in front for device layers.
//
//   layercache::LayerCache cache({.cache_dir = "/nvme/layers",
//                                 .max_cache_size_gb = 200,
//                                 .max_memory_cache_size_gb = 8});
//   if (auto layer = cache.get_layer("qwen-7b", 5)) {
//     use(layer->tensor_data("mlp.down_proj.weight"));
//   } else {
//     cache.cache_layer("qwen-7b", 5, load_somehow());
//   }
//
// Lookup order: memory tier (sharded, byte budget), then disk tier (one
// self-describing safetensors file per entry, SQLite index, byte budget,
// checksummed), then the Redis tier when remote_urls is set. A hit in a
// lower tier is promoted to the tiers above it; a layer evicted from memory
// that is no longer on disk is written back to disk. get_layer(key, "cuda:N")
// serves from a GPU tier in front of these (docs/DESIGN.md).
//
// Thread safety: every public method may be called from any number of threads
// at once. Several processes may open the same cache_dir: each has its own
// memory tier; they share the disk tier (entries are published atomically,
// the index is transactional, and one process at a time fills a missing key).
// Invalidation reaches this process's memory tier and the shared disk tier;
// other processes keep the copies already in their memory tiers until those
// are evicted.
//
// Errors: every throwing call throws one type, layercache::Error, which
// carries the Status (layercache/status.h lists what each code means):
// invalid arguments and options are kInvalidArgument with a message that
// says how to fix them; a missing repository or file is kNotFound, bad
// bytes kCorruption, a failing disk, network or device kIOError, a full disk
// kNoSpace, a build without CUDA kUnsupported. (Out of memory is
// std::bad_alloc.) The seed-compatible calls return nullptr / false for
// failures other than bad arguments and log the reason (LAYERCACHE_LOG=warn,
// the default, prints warnings to stderr). The *_status variants never
// throw: they return the Status the throwing call would throw, so one fault
// has one code whichever path it takes (a null layer is kInvalidArgument
// whether it is given to cache_layer() or cache_layer_status() or returned
// by a get_or_load() loader). Python raises ValueError for kInvalidArgument
// and OSError for the other codes.
#pragma once

#include <functional>
#include <future>
#include <iosfwd>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "layercache/device_layer.h"
#include "layercache/download.h"
#include "layercache/entry.h"
#include "layercache/key.h"
#include "layercache/layer.h"
#include "layercache/maintenance.h"
#include "layercache/options.h"
#include "layercache/progress.h"
#include "layercache/stats.h"
#include "layercache/status.h"

namespace layercache {

class LayerCache {
 public:
  // Opens (creating if needed) the cache in options.cache_dir and reconciles
  // it: temp files of dead writers are removed, entry files the index lacks
  // are adopted after their header checks out (or removed), index rows without
  // files are dropped, and a missing or corrupt index is rebuilt from the
  // files. Throws layercache::Error: kInvalidArgument for bad options, another
  // code when the directory cannot be used.
  explicit LayerCache(LayerCacheOptions options = {});
  ~LayerCache();
  LayerCache(const LayerCache&) = delete;
  LayerCache& operator=(const LayerCache&) = delete;

  // The layer, or nullptr when it is not cached (or its disk entry was found
  // corrupt: that entry is removed and counted, and the caller sees a miss,
  // never bad bytes). `device` must be "cpu".
  LayerPtr get_layer(std::string_view model_id, int64_t layer_index,
                     std::optional<std::string> quantization_mode = std::nullopt,
                     std::string_view device = "cpu");
  LayerPtr get_layer(const LayerKey& key);

  // The layer in the memory of GPU `device` ("cuda:N", or "cuda" for
  // cuda:0), or nullptr when no tier has it. Served from the GPU tier, else
  // copied there from the memory tier, or read straight from its disk entry
  // through pinned staging buffers (checksum verified), or fetched through
  // the other tiers; then kept in the GPU tier (max_gpu_cache_size_gb per
  // device). The copies are complete when it is returned. Throws
  // layercache::Error: kInvalidArgument for a malformed device or an ordinal
  // that does not exist, kUnsupported when this build has no CUDA support,
  // kNoSpace when the layer does not fit in device memory after evicting
  // everything it could, kIOError when a copy fails (nothing is cached then).
  DeviceLayerPtr get_layer(const LayerKey& key, std::string_view device);
  // As above, with every failure (and a miss: NotFound) as a Status.
  Result<DeviceLayerPtr> get_layer_status(const LayerKey& key, std::string_view device);
  // Starts copying layers to `device` in the background; one future per key
  // (nullptr when a layer is not cached or its load failed, which is logged).
  std::vector<std::shared_future<DeviceLayerPtr>> prefetch(const std::vector<LayerKey>& keys,
                                                           std::string_view device);
  // get_layer_with_prefetch for a device: prefetches the next `lookahead`
  // layers of key's model to `device` (wrapping after num_layers - 1), then
  // returns `key`'s layer on it.
  DeviceLayerPtr get_layer_with_prefetch(const LayerKey& key, int64_t num_layers,
                                         std::string_view device, int lookahead = 2);

  // Caches `layer` in memory and on disk. True when the disk entry was
  // written; false (with the reason logged) otherwise, in which case the
  // layer may still be held in memory.
  bool cache_layer(std::string_view model_id, int64_t layer_index, LayerPtr layer,
                   std::optional<std::string> quantization_mode = std::nullopt);
  bool cache_layer(const LayerKey& key, LayerPtr layer);
  // As cache_layer, returning why it failed.
  Status cache_layer_status(const LayerKey& key, LayerPtr layer);

  // Returns the cached layer, or calls `loader` to make it and caches the
  // result. Concurrent calls for one key share one load (in this process),
  // and a per-key file lock makes other processes wait for it rather than
  // load it again. Errors from the loader are returned as they are. Never
  // throws: a bad key is kInvalidArgument, as from cache_layer_status().
  using Loader = std::function<Result<LayerPtr>()>;
  Result<LayerPtr> get_or_load(const LayerKey& key, const Loader& loader);

  // Downloads layer `layer_index` of Hub repository `repo_id` and caches it
  // under (model_id, layer_index, revision = the commit the revision resolved
  // to), fetching only that layer's bytes with HTTP range requests: the
  // header of the shard (`filename`, or those named by
  // model.safetensors.index.json, or model.safetensors), then the layer's
  // tensors, in parallel. A cached layer is returned without downloading.
  // Concurrent calls, from threads or processes, download a layer once.
  // Throws layercache::Error (kInvalidArgument for bad arguments) on
  // failure, with the reason (repository not found, gated, unauthorized, ...).
  LayerPtr download_and_cache(std::string_view model_id, int64_t layer_index,
                              const std::string& repo_id, const std::string& filename = "",
                              const DownloadOptions& options = {});
  Result<LayerPtr> download_and_cache_status(std::string_view model_id, int64_t layer_index,
                                             const std::string& repo_id,
                                             const std::string& filename = "",
                                             const DownloadOptions& options = {});
  // The model's tensors outside every layer (embeddings, final norm,
  // lm_head), under their full names; cached as (model_id, 0,
  // kNonLayerQuantizationMode, commit).
  LayerPtr download_non_layer_tensors(std::string_view model_id, const std::string& repo_id,
                                      const std::string& filename = "",
                                      const DownloadOptions& options = {});
  // Number of layers of a Hub model (resolving it if needed).
  int64_t hub_num_layers(const std::string& repo_id, const std::string& filename = "",
                         const DownloadOptions& options = {});

  // Caches layers of a local checkpoint directory (model.safetensors or a
  // sharded one with model.safetensors.index.json), reading only each
  // layer's tensors. `layers` empty: all of them. Returns how many were
  // cached; throws layercache::Error on failure. `revision` is the key's
  // revision (e.g. the commit of a Hugging Face cache snapshot; "" none); a
  // non-empty one is recorded as the model's default revision (as a download
  // of "main" records its commit), and the directory's config.json is kept
  // for it.
  // `progress` (if any) hears of each layer cached (label "import", units =
  // layers).
  size_t import_checkpoint(const std::string& dir, std::string_view model_id,
                           const std::vector<int64_t>& layers = {},
                           const std::string& layer_pattern = "", bool include_non_layer = true,
                           const std::string& revision = "",
                           const ProgressCallback& progress = nullptr);

  // Starts loading layers in the background, on the cache's workers
  // (options.worker_threads), options.prefetch_threads at once:
  // from disk into the memory tier, or, for layers not cached at all, with
  // `loader` (index -> layer) when given. Returns one future per index,
  // holding the layer or nullptr. A get_layer() for a layer being loaded
  // waits for that load instead of reading it again.
  using IndexLoader = std::function<Result<LayerPtr>(int64_t layer_index)>;
  std::vector<std::shared_future<LayerPtr>> prefetch(
      std::string_view model_id, const std::vector<int64_t>& layer_indices,
      std::optional<std::string> quantization_mode = std::nullopt, IndexLoader loader = nullptr,
      const std::string& revision = "");
  // The seed's IOOptimizer.get_layer_with_prefetch: starts prefetching the
  // next `lookahead` layers (wrapping after num_layers - 1, as forward passes
  // do), then returns layer `layer_index` (nullptr when it is not cached and
  // there is no loader).
  LayerPtr get_layer_with_prefetch(std::string_view model_id, int64_t layer_index,
                                   int64_t num_layers, int lookahead = 2,
                                   std::optional<std::string> quantization_mode = std::nullopt,
                                   IndexLoader loader = nullptr, const std::string& revision = "");

  // The revision rule (docs/PYTHON.md). A key without a revision means the
  // commit that the model's default revision ("main") last resolved to in
  // this cache, as the Hub cache's refs/main: download_and_cache records it,
  // and get_layer, prefetch and get_layer_with_prefetch look there first,
  // then under no revision (layers cached with cache_layer). Other processes'
  // records are seen within a second. "" when none is recorded.
  std::string default_revision(std::string_view model_id);
  // The model's config.json as the cache keeps it: fetched with the model at
  // each commit by download_and_cache, read from the directory by
  // import_checkpoint (stored with no revision). `revision` "" : the default
  // revision's, else the unversioned one. "" when none.
  std::string model_config(std::string_view model_id, const std::string& revision = "");
  void save_model_config(std::string_view model_id, const std::string& revision,
                         std::string_view json);
  // The commits that a Hub branch or tag was last seen to point to here
  // (recorded by download_and_cache for offline use): what `layercache
  // prune` keeps. Throws layercache::Error when the records cannot be read
  // (an empty set would make every revision look unreferenced).
  std::set<std::string> referenced_revisions();

  // Removes one layer (all quantization modes and revisions of it), all
  // layers of a model, or, with no model_id, everything, from this process's
  // memory tier, the shared disk tier and this process's GPU tier. Returns
  // the number of disk entries removed. The Redis tier is shared by a
  // cluster and is not changed: its copies stay until remote_ttl_s or
  // Redis's eviction (docs/SCALE_OUT.md), so a later miss here may be served
  // from it again (with the revision in the key, those are the same bytes).
  size_t invalidate_cache(std::optional<std::string> model_id = std::nullopt,
                          std::optional<int64_t> layer_index = std::nullopt);
  // Removes every cached layer from the memory, disk and GPU tiers (not
  // from Redis, as invalidate_cache).
  void clear_cache();
  // Removes the entry of exactly `key` (model, layer, quantization mode and
  // revision) from the memory, disk and GPU tiers (not from Redis, as
  // invalidate_cache); false when it was not cached.
  bool remove_entry(const LayerKey& key);

  // Reads every disk entry and checks it; returns the corrupted ones (and
  // index rows whose file is missing). Changes nothing.
  std::vector<CorruptEntry> verify_cache_integrity();
  // Removes corrupted entries, dead temp files and orphans, drops stale index
  // rows, enforces the byte budget and compacts the index.
  OptimizeReport optimize_cache();

  // Waits until the layers being published to the remote tier in the
  // background are there (the destructor waits too), and adds this process's
  // counters to the cache's lifetime totals (get_stats() and closing the
  // cache do that too).
  void flush();

  CacheStats get_stats();
  // Prints get_stats() in the seed's layout.
  void print_stats(std::ostream& out);
  void print_stats();

  // Every disk entry, most recently used first.
  std::vector<EntryInfo> list_entries();

  // get_stats() and latency histograms (get, put, load, per tier) in the
  // Prometheus text exposition format, for a scrape endpoint.
  std::string metrics_text();

  const LayerCacheOptions& options() const;
  // The directory in use (default applied, "~" expanded).
  const std::string& cache_dir() const;

  // Adds to the bytes_downloaded counter (for sources that fetch remotely).
  void record_download(uint64_t bytes);

 private:
  Status CacheLayer(const LayerKey& key, LayerPtr layer);  // throws for bad arguments
  class Impl;                                              // src/layer_cache_impl.h
  std::unique_ptr<Impl> impl_;
};

// The process-wide cache. The first call creates it (with `options`, or the
// defaults); later calls return the same instance. A later call whose options
// differ from the instance's gets the existing instance and a logged warning.
std::shared_ptr<LayerCache> get_layer_cache(
    std::optional<LayerCacheOptions> options = std::nullopt);

// Drops the process-wide instance (the next get_layer_cache() makes a new one).
void reset_layer_cache();

}  // namespace layercache
