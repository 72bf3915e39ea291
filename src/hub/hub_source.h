// HubSource: the LayerCache's link to the Hub: one HubClient per endpoint and
// token, resolved models remembered for a short while (so that streaming a
// model does not ask the Hub about the revision for every layer), and the
// revision -> commit records kept in <cache_dir>/refs for offline use.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "hub/hub_model.h"
#include "layercache/download.h"

namespace layercache {

class HubSource {
 public:
  explicit HubSource(std::string refs_dir);

  // How long a resolved revision is trusted before the Hub is asked again.
  static constexpr std::chrono::seconds kRevisionTtl{60};

  Result<std::shared_ptr<HubModel>> Model(const std::string& repo_id, const std::string& filename,
                                          const DownloadOptions& options);
  // The commit recorded for repo@revision (a commit sha is its own record).
  Result<std::string> RecordedRevision(const std::string& repo_id, const std::string& revision,
                                       const std::string& filename);
  static bool Offline(const DownloadOptions& options);

 private:
  std::string RefPath(const std::string& repo_id, const std::string& revision,
                      const std::string& filename) const;

  std::string refs_dir_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<HubClient>> clients_;
  struct Memo {
    std::shared_ptr<HubModel> model;
    std::chrono::steady_clock::time_point when;
  };
  std::map<std::string, Memo> models_;
};

}  // namespace layercache
