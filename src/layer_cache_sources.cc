// LayerCache's sources: Hub downloads and checkpoint imports. Each source
// resolves a key and hands back a load (source/source_load.h); the facade
// runs it through GetOrLoad, so downloads are single-flight and land in
// every tier like any other load.
#include "hub/hub_source.h"
#include "io/env.h"
#include "layer_cache_impl.h"
#include "layercache/status.h"
#include "source/checkpoint_import.h"
#include "source/model_refs.h"
#include "util/logging.h"
#include "util/path.h"

namespace layercache {

Result<LayerPtr> LayerCache::Impl::Download(std::string_view model_id, int64_t layer_index,
                                            const std::string& repo_id, const std::string& filename,
                                            const DownloadOptions& options, bool non_layer) {
  uint64_t downloaded = 0;  // by source->load, on this thread
  auto source = hub_->Resolve(model_id, layer_index, repo_id, filename, options, non_layer,
                              [this, &downloaded](uint64_t bytes) {
                                RecordDownload(bytes);
                                downloaded = bytes;
                              });
  if (!source.ok()) return source.status();
  if (source->load) {
    LogDebug("download_and_cache " + source->key.ToString() + " from " + repo_id + "@" +
             options.revision);
    auto result = GetOrLoad(source->key, [&]() -> Result<LayerPtr> {
      const auto t0 = std::chrono::steady_clock::now();
      Result<LayerPtr> r = source->load();
      const double took = SecondsSince(t0);
      latencies_.load_hub.Observe(took);
      if (r.ok()) {
        LogDebug("downloaded " + source->key.ToString() + ": " + std::to_string(downloaded) +
                 " bytes in " + std::to_string(took) + " s");
      }
      return r;
    });
    if (result.ok()) NoteModel(*source);
    return result;
  }
  // Offline, or the Hub is unreachable: what the cache holds.
  if (LayerPtr layer = Get(LayerKeyRef(source->key))) {
    if (!source->serving_cached_note.empty()) LogWarn(source->serving_cached_note);
    return layer;
  }
  return source->unavailable;
}

// After a download: the default revision's commit and the config.json.
void LayerCache::Impl::NoteModel(const SourceLoad& source) {
  const LayerKey& key = source.key;
  if (source.requested_revision == "main") refs_->Record(key.model_id, key.revision);
  if (!source.fetch_file || refs_->HasConfig(key.model_id, key.revision)) return;
  auto json = source.fetch_file("config.json");
  if (json.ok()) refs_->SaveConfig(key.model_id, key.revision, *json);
}

int64_t LayerCache::Impl::HubNumLayers(const std::string& repo_id, const std::string& filename,
                                       const DownloadOptions& options) {
  if (Status s = CheckRepoId(repo_id); !s.ok()) throw Error(Status::InvalidArgument(s.message()));
  auto model = hub_->Model(repo_id, filename, options);
  if (!model.ok()) throw Error(model.status());
  return (*model)->num_layers();
}

size_t LayerCache::Impl::Import(const std::string& dir, std::string_view model_id,
                                const std::vector<int64_t>& layers, const std::string& pattern,
                                bool include_non_layer, const std::string& revision,
                                const ProgressCallback& progress) {
  auto plan =
      PlanCheckpointImport(dir, model_id, layers, pattern, include_non_layer, revision, env_);
  if (!plan.ok()) throw Error(plan.status());
  ProgressUpdate update;
  update.label = "import";
  update.total = plan->size();
  for (const SourceLoad& item : *plan) {
    Result<LayerPtr> layer = item.load();
    if (!layer.ok()) throw Error(layer.status());
    if (Status s = Put(item.key, *layer); !s.ok()) throw Error(s);
    update.bytes += (*layer)->nbytes();
    update.finished = ++update.done == update.total;
    if (progress) progress(update);
  }
  if (auto json = ReadFileToString(env_, JoinPath(dir, "config.json")); json.ok()) {
    refs_->SaveConfig(model_id, revision, *json);
  }
  // A snapshot imported under its commit (a Hugging Face cache's refs/main)
  // becomes the model's default revision, as a download of "main" does.
  if (!revision.empty()) refs_->Record(model_id, revision);
  return update.done;
}

std::set<std::string> LayerCache::referenced_revisions() {
  auto commits = impl_->hub().RecordedCommits();
  if (!commits.ok()) throw Error(commits.status().WithContext("reading the Hub revision records"));
  return std::move(*commits);
}

}  // namespace layercache
