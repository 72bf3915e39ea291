// LayerCache's side of the stored settings (include/layercache/cache_settings.h).
#pragma once

#include <string>

#include "layercache/options.h"

namespace layercache {

// Whether `cache_dir` holds a cache index already (called before opening).
bool CacheIndexExists(const std::string& cache_dir, Env* env = nullptr);
// Records the settings of `options` in `cache_dir` unless some are stored;
// a failure is logged, not fatal (the cache works without the file).
void RecordSettingsOfNewCache(const std::string& cache_dir, const LayerCacheOptions& options);

}  // namespace layercache
