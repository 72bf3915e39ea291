// HubServer: a Hugging Face Hub mirror for `layercache serve`. It serves model
// repositories, each read from a plain directory (one revision, "main") or
// from the Hugging Face cache (every ref and snapshot in it), over the routes
// Hub clients use:
//   GET|HEAD /{repo}/resolve/{rev}/{path}   file content (Range per RFC 9110)
//   GET|HEAD /{repo}/raw/{rev}/{path}       as stored in git (LFS pointer for LFS files)
//   GET|HEAD /api/models/{repo}[/revision/{rev}]    model info (sha, siblings; ?blobs=true)
//   GET|HEAD /api/models/{repo}/tree/{rev}[/{path}] (?recursive=, ?limit=, Link pagination)
//   POST     /api/models/{repo}/paths-info/{rev}    (form or JSON: paths, expand)
//   GET|HEAD /api/models/{repo}/refs
// with the Hub's headers (X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size)
// and errors (JSON body, X-Error-Code, X-Error-Message). Anything else is a
// plain 404. See docs/MIRROR.md.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "layercache/status.h"

namespace layercache {

namespace http {
class Server;
struct Request;
struct Response;
}  // namespace http

struct RepoSnapshot;

struct HubServerOptions {
  int threads = 16;           // requests served at once
  int max_connections = 256;  // open connections; more are answered 503
  int request_timeout_ms = 30000;
  int idle_timeout_ms = 15000;
  int write_timeout_ms = 60000;
  std::string access_log;  // file to append one line per request to ("-": stdout; "": none)
};

class HubServer {
 public:
  explicit HubServer(HubServerOptions options = {});
  ~HubServer();

  // Serves `dir` as repository `repo_id`, revision "main" (a commit id
  // derived from the content). Throws layercache::Error when it cannot be read.
  void AddRepo(const std::string& repo_id, const std::string& dir);
  // Serves every ref and snapshot of `repo_id` in the Hugging Face cache
  // `cache_dir`, under the commits huggingface_hub recorded.
  Status AddHfCacheRepo(const std::string& cache_dir, const std::string& repo_id);
  // Every model repository of a Hugging Face cache; returns how many.
  Result<size_t> AddHfCache(const std::string& cache_dir);

  // Starts listening (port 0: any free port) and serving; returns the port,
  // or -1 with last_error() saying why (e.g. the port is busy).
  int Start(const std::string& host = "127.0.0.1", int port = 0);
  const std::string& last_error() const { return error_; }
  // Blocks serving (for `layercache serve`).
  void Wait();
  void Stop();
  uint64_t bytes_sent() const;
  // The commit "main" of the repository added last.
  const std::string& commit() const { return commit_; }
  // Repository id -> (revision name -> commit).
  std::map<std::string, std::map<std::string, std::string>> revisions() const;

 private:
  struct Repo {
    std::map<std::string, std::string> refs;  // name -> commit
    std::map<std::string, std::shared_ptr<const RepoSnapshot>> commits;
  };
  void Handle(const http::Request& req, http::Response& res) const;
  void HandleFile(const http::Request& req, http::Response& res, const Repo& repo,
                  const std::string& repo_id, const std::vector<std::string>& segs,
                  size_t at) const;
  void HandleApi(const http::Request& req, http::Response& res,
                 const std::vector<std::string>& segs) const;

  HubServerOptions options_;
  std::unique_ptr<http::Server> server_;
  std::map<std::string, Repo> repos_;
  std::string commit_;
  std::string error_;
  std::FILE* log_ = nullptr;
  std::mutex log_mu_;
};

}  // namespace layercache
