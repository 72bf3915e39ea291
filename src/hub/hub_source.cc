#include "hub/hub_source.h"

#include <xxhash.h>

#include <cstdlib>
#include <stdexcept>

#include "hub/hub_client.h"
#include "io/env.h"
#include "layercache/quantization.h"
#include "layercache/status.h"
#include "util/logging.h"
#include "util/path.h"

namespace layercache {
namespace {

HubSettings SettingsFor(const DownloadOptions& o) {
  HubSettings s;
  s.endpoint = o.endpoint;
  s.token = o.token;
  s.offline = o.offline;
  s.http.verify_tls = o.verify_tls;
  s.http.ca_bundle = o.ca_bundle;
  for (const char* var : {"CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"}) {
    const char* v = std::getenv(var);
    if (s.http.ca_bundle.empty() && v != nullptr && *v != '\0') s.http.ca_bundle = v;
  }
  s.http.max_retries = o.max_retries;
  return HubSettings::Resolve(s);
}

}  // namespace

HubSource::HubSource(std::string refs_dir, Env* env, Executor* executor)
    : refs_dir_(std::move(refs_dir)),
      env_(env != nullptr ? env : Env::Default()),
      executor_(executor != nullptr ? executor : &Executor::Default()) {}

bool HubSource::Offline(const DownloadOptions& options) { return SettingsFor(options).offline; }

Result<std::set<std::string>> HubSource::RecordedCommits() {
  std::set<std::string> out;
  auto names = env_->ListDir(refs_dir_);
  if (!names.ok()) {
    if (names.status().IsNotFound()) return out;
    return names.status();
  }
  for (const std::string& name : *names) {
    auto commit = ReadFileToString(env_, JoinPath(refs_dir_, name));
    if (!commit.ok()) {
      if (commit.status().IsNotFound()) continue;  // replaced or removed meanwhile
      return commit.status();
    }
    if (!commit->empty()) out.insert(*commit);
  }
  return out;
}

std::string HubSource::RefPath(const std::string& repo_id, const std::string& revision,
                               const std::string& filename) const {
  const std::string key = repo_id + '\0' + revision + '\0' + filename;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(key.data(), key.size())));
  return JoinPath(refs_dir_, hex);
}

Result<std::string> HubSource::RecordedRevision(const std::string& repo_id,
                                                const std::string& revision,
                                                const std::string& filename) {
  auto text = ReadFileToString(env_, RefPath(repo_id, revision, filename));
  if (!text.ok()) {
    if (!text.status().IsNotFound()) {
      LogWarn("cannot read the record of " + repo_id + "@" + revision + ": " +
              text.status().message());
    }
    return Status::NotFound("offline (HF_HUB_OFFLINE) and no record of " + repo_id + "@" +
                            revision + ": download it once while online");
  }
  return *text;
}

Result<std::shared_ptr<HubModel>> HubSource::Model(const std::string& repo_id,
                                                   const std::string& filename,
                                                   const DownloadOptions& options) {
  const HubSettings settings = SettingsFor(options);
  const std::string revision = options.revision.empty() ? "main" : options.revision;
  // One client per endpoint, token and connection settings.
  const std::string client_key = settings.endpoint + '\0' + settings.token + '\0' +
                                 (settings.http.verify_tls ? "v" : "-") + settings.http.ca_bundle +
                                 '\0' + std::to_string(settings.http.max_retries);
  const std::string memo_key = client_key + '\0' + repo_id + '\0' + revision + '\0' + filename +
                               '\0' + options.layer_pattern;
  std::shared_ptr<HubClient> client;
  {
    std::lock_guard lock(mu_);
    auto it = models_.find(memo_key);
    if (it != models_.end() && std::chrono::steady_clock::now() - it->second.when < kRevisionTtl) {
      return it->second.model;
    }
    auto& c = clients_[client_key];
    if (!c) c = std::make_shared<HubClient>(settings);
    client = c;
  }
  auto model = HubModel::Open(client, repo_id, revision, filename, options.layer_pattern);
  if (!model.ok()) return model.status();
  // Remember the commit for offline use (best effort: the download itself
  // does not need it; a failure is logged and offline use says it has no
  // record).
  const std::string& rev = (*model)->key_revision();
  Status recorded = env_->CreateDirs(refs_dir_);
  if (recorded.ok()) {
    recorded = WriteFileAtomically(env_, RefPath(repo_id, revision, filename),
                                   {std::as_bytes(std::span<const char>(rev))});
  }
  if (!recorded.ok()) {
    LogWarn("cannot record " + repo_id + "@" + revision + " -> " + rev +
            " for offline use: " + recorded.message());
  }
  std::lock_guard lock(mu_);
  // Not remembered when unrecorded: the next call records it.
  if (recorded.ok()) models_[memo_key] = Memo{*model, std::chrono::steady_clock::now()};
  return *model;
}

Result<SourceLoad> HubSource::Resolve(std::string_view model_id, int64_t layer_index,
                                      const std::string& repo_id, const std::string& filename,
                                      const DownloadOptions& options, bool non_layer,
                                      std::function<void(uint64_t)> on_bytes) {
  SourceLoad out;
  LayerKey& key = out.key;
  key.model_id = std::string(model_id);
  key.layer_index = non_layer ? 0 : layer_index;
  key.quantization_mode = non_layer ? kNonLayerQuantizationMode : "";
  const bool quantize = !non_layer && options.quantize.has_value();
  if (quantize) {
    options.quantize->Validate();
    key.quantization_mode = std::string(quant::QuantModeName(options.quantize->mode));
  }
  key.Validate();
  if (Status s = CheckRepoId(repo_id); !s.ok()) throw Error(Status::InvalidArgument(s.message()));
  if (options.connections < 1 || options.connections > 64) {
    throw Error(Status::InvalidArgument("connections must be between 1 and 64, got " +
                                        std::to_string(options.connections)));
  }
  const std::string revision = options.revision.empty() ? "main" : options.revision;
  out.requested_revision = revision;
  // Without the Hub: the commit recorded for the revision, served from the cache only.
  auto from_record = [&](const Status& why) -> Result<SourceLoad> {
    const bool commit = revision.size() == 40 &&
                        revision.find_first_not_of("0123456789abcdef") == std::string::npos;
    auto recorded =
        commit ? Result<std::string>(revision) : RecordedRevision(repo_id, revision, filename);
    if (!recorded.ok()) return why.ok() ? recorded.status() : why;
    key.revision = *recorded;
    out.unavailable =
        why.ok()
            ? Status::NotFound("offline (HF_HUB_OFFLINE) and " + key.ToString() + " is not cached")
            : why;
    if (!why.ok()) {
      out.serving_cached_note =
          why.message() + "; serving the cached copy of " + repo_id + "@" + revision;
    }
    return std::move(out);
  };
  if (Offline(options)) return from_record(Status::OK());
  auto model = Model(repo_id, filename, options);
  if (!model.ok()) {
    // The Hub is unreachable: a layer cached earlier is still good.
    if (model.status().code() == StatusCode::kIOError) return from_record(model.status());
    return model.status();
  }
  key.revision = (*model)->key_revision();
  out.fetch_file = [model = *model](const std::string& name) { return model->FetchFile(name); };
  out.load = [model = *model, layer_index, non_layer, options, quantize,
              on_bytes = std::move(on_bytes), executor = executor_]() -> Result<LayerPtr> {
    Executor::Scope scope(executor);
    const ProgressCallback& progress = options.quiet ? ProgressCallback() : options.progress;
    auto d = non_layer ? model->DownloadNonLayerTensors(options.connections, progress)
                       : model->DownloadLayer(layer_index, options.connections, progress);
    if (!d.ok()) return d.status();
    if (on_bytes) on_bytes(d->payload_bytes);
    if (quantize) return quant::QuantizeLayer(*d->layer, *options.quantize);
    return d->layer;
  };
  return out;
}

}  // namespace layercache
