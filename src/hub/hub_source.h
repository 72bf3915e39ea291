// HubSource: the LayerCache's link to the Hub: one HubClient per endpoint and
// token, resolved models remembered for a short while (so that streaming a
// model does not ask the Hub about the revision for every layer), and the
// revision -> commit records kept in <cache_dir>/refs for offline use.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "hub/hub_model.h"
#include "io/env.h"
#include "layercache/download.h"
#include "source/source_load.h"
#include "util/executor.h"

namespace layercache {

class HubSource {
 public:
  // Revision records live in `refs_dir`, read and written through `env`
  // (null: Env::Default()). Downloads (their parallel range requests) and
  // quantization run on `executor` (null: Executor::Default()), which must
  // outlive the source.
  explicit HubSource(std::string refs_dir, Env* env = nullptr, Executor* executor = nullptr);

  // How long a resolved revision is trusted before the Hub is asked again.
  static constexpr std::chrono::seconds kRevisionTtl{60};

  Result<std::shared_ptr<HubModel>> Model(const std::string& repo_id, const std::string& filename,
                                          const DownloadOptions& options);
  // The commit recorded for repo@revision (a commit sha is its own record).
  Result<std::string> RecordedRevision(const std::string& repo_id, const std::string& revision,
                                       const std::string& filename);
  static bool Offline(const DownloadOptions& options);
  // Every commit recorded in refs_dir (none when it does not exist yet).
  Result<std::set<std::string>> RecordedCommits();

  // Layer `layer_index` of `repo_id` (or, `non_layer`, the tensors outside
  // the layers, as layer 0 of kNonLayerQuantizationMode) for the cache of
  // `model_id`: the key (revision = the commit the revision resolved to;
  // quantization mode that of options.quantize, the layer quantized so)
  // and its download, which reports the tensor bytes it fetched to
  // `on_bytes`. Offline (or with the Hub unreachable) the key is that of the
  // revision recorded earlier, with no load. Throws Error (kInvalidArgument)
  // for bad arguments.
  Result<SourceLoad> Resolve(std::string_view model_id, int64_t layer_index,
                             const std::string& repo_id, const std::string& filename,
                             const DownloadOptions& options, bool non_layer,
                             std::function<void(uint64_t)> on_bytes);

 private:
  std::string RefPath(const std::string& repo_id, const std::string& revision,
                      const std::string& filename) const;

  std::string refs_dir_;
  Env* env_;
  Executor* executor_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<HubClient>> clients_;
  struct Memo {
    std::shared_ptr<HubModel> model;
    std::chrono::steady_clock::time_point when;
  };
  std::map<std::string, Memo> models_;
};

}  // namespace layercache
