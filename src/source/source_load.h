// SourceLoad: what a source (the Hub, a local checkpoint) hands LayerCache:
// the key a layer is cached under and how to load it. The facade runs the
// load through its tier chain (get_or_load), so sources know nothing of tiers.
#pragma once

#include <functional>
#include <string>

#include "layercache/key.h"
#include "layercache/layer.h"
#include "layercache/status.h"

namespace layercache {

struct SourceLoad {
  LayerKey key;
  // Null when the source cannot load now (offline, or unreachable): the
  // layer is served from the cache only, else the caller gets `unavailable`.
  std::function<Result<LayerPtr>()> load;
  Status unavailable;
  // Logged when a cached copy is served because the source was unreachable.
  std::string serving_cached_note;
  // The revision as asked ("main", a tag, a commit); "" for local sources.
  std::string requested_revision;
  // The source's small files at the key's revision (config.json), if it has any.
  std::function<Result<std::string>(const std::string& filename)> fetch_file;
};

}  // namespace layercache
