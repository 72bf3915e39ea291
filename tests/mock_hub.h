// MockHub: a fault-injecting server that speaks the Hugging Face Hub's file
// protocol for tests (X-Repo-Commit, X-Linked-Etag, X-Linked-Size, absolute
// redirects to a second "CDN" port, X-Error-Code), serving one directory.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace layercache::testing {

struct MockHubFaults {
  std::atomic<int> fail_requests{0};  // answer the next N file requests with fail_status
  int fail_status = 500;
  std::string retry_after;          // sent with fail_status when not empty
  std::atomic<int> drop_bodies{0};  // cut the next N bodies after drop_after_bytes
  uint64_t drop_after_bytes = 4096;
  std::atomic<bool> ignore_range{false};  // answer Range requests with 200 and the whole file
  std::atomic<bool> wrong_etag{false};    // GETs carry an ETag that differs from HEAD's
  std::atomic<int> slow_ms_per_chunk{0};  // delay per 64 KiB sent
  std::string require_token;              // 401 unless "Authorization: Bearer <token>"
  std::atomic<bool> gated{false};         // 401 with X-Error-Code GatedRepo
  std::atomic<bool> cdn{false};           // .safetensors GETs/HEADs redirect to the CDN port
};

class MockHub {
 public:
  MockHub(std::string repo_id, std::string dir);
  ~MockHub();

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& commit() const { return commit_; }
  MockHubFaults faults;

  uint64_t body_bytes_sent() const { return sent_; }
  int file_requests() const { return requests_; }
  int cdn_requests() const { return cdn_requests_; }
  int cdn_requests_with_auth() const { return cdn_auth_; }

 private:
  std::string repo_id_;
  std::string dir_;
  std::string commit_;
  std::unique_ptr<httplib::Server> hub_;
  std::unique_ptr<httplib::Server> cdn_;
  int port_ = 0;
  int cdn_port_ = 0;
  std::thread hub_thread_;
  std::thread cdn_thread_;
  std::atomic<uint64_t> sent_{0};
  std::atomic<int> requests_{0};
  std::atomic<int> cdn_requests_{0};
  std::atomic<int> cdn_auth_{0};
};

}  // namespace layercache::testing
