// HubModel: one model repository at one resolved revision, from which single
// layers are downloaded with HTTP range requests: only the bytes of the
// layer's tensors travel, fetched in parallel over several connections.
//
// The checkpoint is `filename` when given, else model.safetensors.index.json
// (its weight_map names each tensor's shard; a layer split across shards is
// assembled from all of them) or model.safetensors. Shard headers are read
// lazily, once. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "hub/hub_client.h"
#include "layercache/layer.h"
#include "layercache/progress.h"
#include "source/layer_locator.h"

namespace layercache {

struct LayerDownload {
  LayerPtr layer;
  uint64_t payload_bytes = 0;  // tensor bytes fetched
};

class HubModel {
 public:
  static Result<std::shared_ptr<HubModel>> Open(std::shared_ptr<HubClient> client,
                                                const std::string& repo_id,
                                                const std::string& revision,
                                                const std::string& filename,
                                                const std::string& layer_pattern);

  // What the cache key records as the revision: the commit the revision
  // resolved to (X-Repo-Commit), or "etag:<etag>" from a server that sends no
  // commit, so that changed content never matches an old key.
  const std::string& key_revision() const { return key_revision_; }
  int64_t num_layers() const { return locator_.num_layers(); }
  const std::string& layer_pattern() const { return locator_.pattern(); }

  // Downloads layer `index` with `connections` parallel requests, reporting
  // the bytes received to `progress` (if any) from the calling thread.
  Result<LayerDownload> DownloadLayer(int64_t index, int connections,
                                      const ProgressCallback& progress = nullptr);
  // The tensors outside every layer (embeddings, final norm, lm_head).
  Result<LayerDownload> DownloadNonLayerTensors(int connections,
                                                const ProgressCallback& progress = nullptr);
  // A small file of the repository at the resolved revision (config.json);
  // NotFound when the repository has no such file.
  Result<std::string> FetchFile(const std::string& filename);

 private:
  struct Shard {
    RemoteFile file;
    std::unique_ptr<SafetensorsHeader> header;
  };
  Result<Shard*> LoadShard(const std::string& filename);
  Result<LayerDownload> Download(const std::vector<std::pair<std::string, std::string>>& names,
                                 int connections, const ProgressCallback& progress,
                                 const std::string& label);

  std::shared_ptr<HubClient> client_;
  std::string repo_id_;
  std::string revision_;  // as asked
  std::string pinned_;    // the commit when known, else revision_
  std::string key_revision_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> shard_of_;  // tensor -> shard file
  LayerLocator locator_;
  std::mutex mu_;
  std::map<std::string, Shard> shards_;
};

}  // namespace layercache
