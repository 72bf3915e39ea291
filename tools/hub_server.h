// HubServer: serves local model directories over the Hugging Face Hub's file
// protocol ({repo_id}/resolve/{revision}/{path}, HEAD and GET with Range,
// X-Repo-Commit, ETag / X-Linked-Etag / X-Linked-Size, X-Error-Code), so
// that machines without Internet access, or the demo, can stream a model with
// download_and_cache. Binds to 127.0.0.1 unless told otherwise.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace layercache {

class HubServer {
 public:
  HubServer();
  ~HubServer();

  // Serves `dir` as repository `repo_id` (revision "main" and a fixed commit).
  void AddRepo(const std::string& repo_id, const std::string& dir);
  // Starts listening (port 0: any free port); returns the port, or -1.
  int Start(const std::string& host = "127.0.0.1", int port = 0);
  // Blocks serving (for `layercache serve`).
  void Wait();
  void Stop();
  uint64_t bytes_sent() const;
  const std::string& commit() const { return commit_; }

 private:
  struct File {
    std::string path;
    uint64_t size = 0;
    std::string etag;
    bool lfs = false;
  };
  struct Repo {
    std::string dir;
    std::map<std::string, File> files;
  };
  std::unique_ptr<httplib::Server> server_;
  std::map<std::string, Repo> repos_;
  std::string commit_;
  std::thread thread_;
  std::shared_ptr<std::atomic<uint64_t>> sent_;
};

}  // namespace layercache
