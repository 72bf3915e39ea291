// LayerCacheOptions: the seed's constructor parameters, with its defaults.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layercache/checksum.h"

namespace layercache {

class Env;  // layercache/env.h

// Which entry an eviction removes, in both tiers.
enum class EvictionPolicy {
  kLru,  // the seed's: the least recently used entry
  // The default. Follows LRU, except when the workload sweeps layers
  // 0..N-1 over and over (a forward pass through a model that does not fit),
  // where it evicts the most recently used entry instead and keeps hitting
  // capacity/N of the time, as Belady's optimal policy does (LRU hits
  // nothing there). Decided by simulating both on key-only "ghost" caches;
  // on skewed (Zipf) traffic it equals LRU (docs/PERFORMANCE.md).
  kScanResistant,
};
// "lru" or "scan-resistant"; throws layercache::Error (kInvalidArgument) otherwise.
EvictionPolicy ParseEvictionPolicy(const std::string& name);
const char* EvictionPolicyName(EvictionPolicy policy);

// How the disk tier reads entries (src/disk/entry_reader.h; measured in
// docs/PERFORMANCE.md).
enum class DiskReadMode {
  // The default: the fastest way for the entry's size and state. An entry
  // of 16 MiB or more is served from a private mapping of the file (no copy:
  // a write to it copies that page and never reaches the file); the pages
  // not in the page cache are brought in first, 16 x 2 MiB requests in
  // flight (a cold load at the device's bandwidth, with no fresh memory to
  // zero). A smaller entry: cached 8 MiB chunks are copied out, the others
  // read with O_DIRECT, 16 x 1 MiB requests in flight.
  kAuto,
  kBuffered,  // always through the page cache: repeated loads come from RAM
  kDirect,    // always O_DIRECT for entries of 1 MiB and more
  // Like kAuto, but a smaller entry's chunks not in the page cache are read
  // through it. A large entry is mapped, as with kAuto. The layer then
  // shares the file's pages: the cache never writes entry files in place, but
  // bytes that someone else changed in the file after the checksum was
  // verified would show through (so with kAuto).
  kMapped,
};
// "auto", "buffered", "direct" or "mapped"; throws layercache::Error
// (kInvalidArgument) otherwise.
DiskReadMode ParseDiskReadMode(const std::string& name);
const char* DiskReadModeName(DiskReadMode mode);

struct LayerCacheOptions {
  // Directory for cached layers. Empty means the default: $LAYERCACHE_DIR if
  // set, else ~/.cache/nexus/layers. A leading "~" is expanded.
  std::string cache_dir;
  // Disk tier budget, in GiB (2^30 bytes). Must be > 0.
  double max_cache_size_gb = 50.0;
  // Memory tier budget, in GiB. 0 disables the memory tier.
  double max_memory_cache_size_gb = 2.0;
  // Store new entries compressed: float tensors byte-grouped, then zstd, in
  // chunks (see docs/FORMAT.md). Entries of either kind are always readable.
  bool enable_compression = false;
  // Compression level, 1-9 (1 fastest, 9 smallest): zstd levels -7, -5, -3, -2,
  // -1, 1, 3, 9, 19 for every tensor kind; 6 (zstd 1) is the best measured
  // trade-off (docs/PERFORMANCE.md).
  int compression_level = 6;
  // Keep the index on disk so that the cache survives restarts. When false,
  // the cache starts empty on each open and its files go when it closes.
  bool persist_metadata = true;
  ChecksumAlgorithm checksum_algorithm = ChecksumAlgorithm::kXXH3_128;
  EvictionPolicy eviction_policy = EvictionPolicy::kScanResistant;
  DiskReadMode disk_read_mode = DiskReadMode::kAuto;
  // Prefetches (prefetch(), get_layer_with_prefetch) loading at once, on the
  // cache's workers (worker_threads); 1-64.
  int prefetch_threads = 2;
  // Worker threads of the cache's executor: the one bounded pool that runs
  // all its parallel work (a read's chunk reads, copies and hashing, a
  // write's hashing and compression, Hub range requests, Redis node groups,
  // quantization, remote publishing and prefetch). No thread is started per
  // call; workers start when first needed. 0: one per hardware thread, at
  // least 16 (I/O wants more requests in flight than there are cores: O_DIRECT
  // reads keep 16 in flight); else 1-1024. A thread calling the cache takes
  // part in its own call's work, so a small pool slows a call, never stops it.
  int worker_threads = 0;

  // The cluster tier (docs/SCALE_OUT.md): layers shared between nodes through
  // Redis. One URL for a single server, one or more seed nodes for a Redis
  // Cluster: redis://[user:password@]host:port. Empty: $LAYERCACHE_REMOTE
  // (URLs separated by commas or spaces) if set, else no remote tier.
  std::vector<std::string> remote_urls;
  int remote_timeout_ms = 1000;  // connect, and each read or write; 1-600000
  int remote_chunk_mb = 8;       // layers are stored in chunks of this size; 1-256
  int remote_lease_ms = 15'000;  // a loading node's lease, renewed while it loads; >= 100
  int remote_wait_ms = 300'000;  // longest wait for another node loading a layer; >= 0
  int64_t remote_ttl_s = 0;      // expiry of published layers; 0: none (Redis's LRU); >= 0

  // The GPU tier (docs/DESIGN.md, "GPU tier"): layers asked for on a device
  // (get_layer(key, "cuda:N")) are kept in its memory under this budget, in
  // GiB per device; 0 keeps none (each request copies the layer again).
  double max_gpu_cache_size_gb = 4.0;
  // Keep the memory tier's layers in page-locked (pinned) host memory once
  // they have gone to a GPU, so that the next copy to a device is a direct
  // DMA at full PCIe speed instead of a staged one. Pinned memory cannot be
  // swapped: leave off unless max_memory_cache_size_gb fits in RAM easily.
  bool pin_memory_layers = false;

  // The file-system seam (layercache/env.h): every file the cache opens,
  // reads (plain, O_DIRECT or mapped), writes, locks, renames or removes goes
  // through it, and SQLite opens the index through its sqlite_vfs(). Null:
  // Env::Default(), the real POSIX one. Not owned: it must outlive the
  // LayerCache. For fault injection in tests and for embedding applications
  // that account for or redirect I/O; leave null otherwise.
  Env* env = nullptr;

  // Throws layercache::Error (kInvalidArgument), saying how to fix it, for
  // unusable values.
  void Validate() const;
  // The cache_dir that will be used (default and "~" applied).
  std::string ResolvedCacheDir() const;
  // remote_urls, or those of $LAYERCACHE_REMOTE.
  std::vector<std::string> ResolvedRemoteUrls() const;

  uint64_t max_disk_bytes() const;
  uint64_t max_memory_bytes() const;
  uint64_t max_gpu_bytes() const;

  friend bool operator==(const LayerCacheOptions&, const LayerCacheOptions&) = default;
};

inline constexpr const char* kDefaultCacheDir = "~/.cache/nexus/layers";

}  // namespace layercache
