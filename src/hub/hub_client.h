// HubClient: the Hugging Face Hub protocol, as huggingface_hub speaks it.
//
//   file URL   {endpoint}/{repo_id}/resolve/{revision}/{filename}
//   metadata   HEAD with Accept-Encoding: identity; only relative redirects
//              are followed; X-Repo-Commit gives the commit, X-Linked-Etag
//              (else ETag) the content hash, X-Linked-Size (else
//              Content-Length of a non-redirect) the size. An absolute
//              redirect points at a CDN, which is then downloaded from
//              without the Authorization header.
//   errors     X-Error-Code RepoNotFound, RevisionNotFound, EntryNotFound,
//              GatedRepo; 401 for private, gated or missing repos.
//
// Settings come from HubOptions, defaulting to the environment: HF_ENDPOINT
// (https://huggingface.co), HF_TOKEN or the token file ($HF_TOKEN_PATH,
// $HF_HOME/token, ~/.cache/huggingface/token), HF_HUB_OFFLINE=1. The token
// is sent only to the endpoint's host and is never logged or stored.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "hub/http_client.h"
#include "layercache/download.h"
#include "layercache/safetensors.h"
#include "layercache/status.h"

namespace layercache {

struct HubSettings {
  std::string endpoint;  // "" : $HF_ENDPOINT or https://huggingface.co
  std::string token;     // "" : $HF_TOKEN or the token file
  bool offline = false;  // also true when HF_HUB_OFFLINE=1
  HttpOptions http;

  // Fills the empty fields from the environment.
  static HubSettings Resolve(HubSettings given);
};

// What HEAD told us about one file.
struct RemoteFile {
  std::string repo_id;
  std::string revision;
  std::string filename;
  std::string commit;  // X-Repo-Commit ("" if the server sent none)
  std::string etag;    // normalized; sha256 for LFS files, git sha1 otherwise
  uint64_t size = 0;
  std::string download_url;  // where to GET the bytes
  bool send_auth = true;     // false when download_url is on another host
};

// Percent-encodes with no safe characters (for revisions: refs/pr/1 ->
// refs%2Fpr%2F1); `keep_slash` keeps '/' (for file paths).
std::string PercentEncode(const std::string& s, bool keep_slash);

class HubClient {
 public:
  explicit HubClient(HubSettings settings);

  const HubSettings& settings() const { return settings_; }

  // HEAD of a file; maps the Hub's errors to clear messages. When the file
  // alone is missing (the repository and revision exist), `*entry_missing`
  // is set.
  Result<RemoteFile> Stat(const std::string& repo_id, const std::string& revision,
                          const std::string& filename, bool* entry_missing = nullptr);
  // GETs a whole (small) file and checks it against its ETag when that is a
  // git sha1 or a sha256.
  Result<std::string> FetchSmallFile(const RemoteFile& file);
  // Reads a safetensors header with range requests: the first 100,000 bytes,
  // then the rest of the header if it is longer.
  Result<SafetensorsHeader> FetchHeader(const RemoteFile& file);

  // One byte range of a file into `dst`, on a pooled connection.
  Status FetchRange(const RemoteFile& file, uint64_t offset, uint64_t length, std::byte* dst,
                    const std::function<void(uint64_t)>& on_bytes = nullptr);

  // Total bytes received from the network, and retries made, by this client.
  uint64_t wire_bytes() const;
  uint64_t retries() const;

  // The headers to send to `url` (Authorization only to the endpoint's host).
  HttpHeaders HeadersFor(const RemoteFile& file) const;

 private:
  std::unique_ptr<HttpClient> Checkout();
  void Return(std::unique_ptr<HttpClient> client);
  Status MapError(const HttpResponse& r, const std::string& repo_id, const std::string& revision,
                  const std::string& filename) const;

  HubSettings settings_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<HttpClient>> pool_;  // idle clients (null slots are checked out)
};

}  // namespace layercache
