#include "hub/hub_source.h"

#include <xxhash.h>

#include <cstdlib>

#include "io/env.h"
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

HubSource::HubSource(std::string refs_dir) : refs_dir_(std::move(refs_dir)) {}

bool HubSource::Offline(const DownloadOptions& options) { return SettingsFor(options).offline; }

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
  auto text = ReadFileToString(Env::Default(), RefPath(repo_id, revision, filename));
  if (!text.ok()) {
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
  // Remember the commit for offline use (best effort).
  if (Env::Default()->CreateDirs(refs_dir_).ok()) {
    const std::string& rev = (*model)->key_revision();
    (void)WriteFileAtomically(Env::Default(), RefPath(repo_id, revision, filename),
                              {std::as_bytes(std::span<const char>(rev))});
  }
  std::lock_guard lock(mu_);
  models_[memo_key] = Memo{*model, std::chrono::steady_clock::now()};
  return *model;
}

}  // namespace layercache
