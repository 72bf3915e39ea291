// ModelRefs: what the cache keeps about a model beside its layers, in
// <cache_dir>/model-refs/<xxh3 of the model id>/:
//
//   ref                 the commit the model's default revision ("main") last
//                       resolved to in this cache, as the Hub cache's
//                       refs/main. A layer asked for without a revision is
//                       looked up under it first (then under "", for layers
//                       cached with cache_layer), so download_and_cache then
//                       get_layer(model_id, i) hits, in any process, offline.
//   config@<rev>.json   the model's config.json at that revision ("" for
//                       imported checkpoints): fetched with the model or read
//                       from the checkpoint directory; Python builds callable
//                       layers from it (docs/PYTHON.md).
//
// Files are written atomically and best effort (a read-only cache just
// records nothing; the first failure is logged as a warning). Thread-safe. Other processes' records
// are seen within kRecheck.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "io/env.h"

namespace layercache {

class ModelRefs {
 public:
  ModelRefs(Env* env, std::string dir);

  static constexpr std::chrono::milliseconds kRecheck{1000};

  // Records `commit` as what model_id's default revision resolved to.
  void Record(std::string_view model_id, const std::string& commit);
  // The commit recorded for model_id, or "" when none.
  std::string Default(std::string_view model_id);

  // Stores / reads the model's config.json at `revision` ("" : unversioned;
  // Config(model, "") tries the default revision's first). Config returns ""
  // when none is stored.
  void SaveConfig(std::string_view model_id, const std::string& revision, std::string_view json);
  std::string Config(std::string_view model_id, const std::string& revision);
  bool HasConfig(std::string_view model_id, const std::string& revision);

 private:
  std::string ModelDir(std::string_view model_id) const;
  std::string ConfigPath(std::string_view model_id, const std::string& revision) const;
  void Report(const std::string& what, const Status& s);

  Env* env_;
  std::string dir_;
  std::mutex mu_;
  struct Memo {
    std::string commit;
    std::chrono::steady_clock::time_point when;
  };
  std::map<std::string, Memo, std::less<>> memo_;
  std::atomic<bool> warned_{false};
};

}  // namespace layercache
