// The process-wide LayerCache: get_layer_cache() and reset_layer_cache().
#include <mutex>

#include "layercache/layer_cache.h"
#include "util/logging.h"

namespace layercache {
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

}  // namespace layercache
