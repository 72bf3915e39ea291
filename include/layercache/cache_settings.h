// Settings a cache directory keeps for itself, in <cache_dir>/settings.json:
// the disk budget, compression, compression level, checksum and eviction
// policy of the cache, whoever opens it.
//
// When they apply:
//  - A LayerCache that creates a cache directory (no index there yet) records
//    the settings of its options there: "to this cache from now on".
//  - Otherwise LayerCache(options) uses its options for this process only and
//    leaves the stored settings alone. StoredOptions() gives the options a
//    caller should start from to honour the cache's settings; the `layercache`
//    CLI always does, unless an option on its command line overrides one for
//    that call only.
//  - `layercache config --set KEY=VALUE` (or WriteCacheSettings) changes them.
// A cache created before settings existed has none: the CLI then never evicts
// (no budget) until one is set.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "layercache/options.h"
#include "layercache/status.h"

namespace layercache {

struct CacheSettings {
  double max_cache_size_gb = 50.0;
  bool enable_compression = false;
  int compression_level = 6;
  ChecksumAlgorithm checksum_algorithm = ChecksumAlgorithm::kXXH3_128;
  EvictionPolicy eviction_policy = EvictionPolicy::kLru;

  static CacheSettings FromOptions(const LayerCacheOptions& options);
  // Copies these settings into `options`.
  void ApplyTo(LayerCacheOptions* options) const;
  // Sets one setting from text: max_cache_size_gb, enable_compression
  // (true/false), compression_level (1-9), checksum_algorithm (xxh3-128, md5,
  // sha256), eviction_policy (lru, scan-resistant). kInvalidArgument, naming
  // the accepted values, otherwise.
  Status Set(const std::string& key, const std::string& value);
  // The keys above, in order.
  static const std::vector<std::string>& Keys();
  // The value of `key` as text (as Set accepts it).
  std::string Get(const std::string& key) const;

  std::string ToJson() const;
  friend bool operator==(const CacheSettings&, const CacheSettings&) = default;
};

// The settings stored in `cache_dir` ("" : the default directory); nullopt
// when none are (a new directory, or one made before settings existed).
// kCorruption for a file that cannot be parsed. Files go through `env`
// (null: Env::Default()).
Result<std::optional<CacheSettings>> ReadCacheSettings(const std::string& cache_dir,
                                                       Env* env = nullptr);
// Stores `settings` in `cache_dir` (created if needed), atomically.
Status WriteCacheSettings(const std::string& cache_dir, const CacheSettings& settings,
                          Env* env = nullptr);

// `options` with the stored settings of its cache directory applied (the
// options unchanged where none are stored); read through options.env.
LayerCacheOptions StoredOptions(LayerCacheOptions options = {});

inline constexpr const char* kCacheSettingsFile = "settings.json";

}  // namespace layercache
