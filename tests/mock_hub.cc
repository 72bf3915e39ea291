#include "mock_hub.h"

#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "layercache/checksum.h"

namespace layercache::testing {
namespace {

std::string FileEtag(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return ChecksumHex(ChecksumAlgorithm::kSHA256, std::as_bytes(std::span<const char>(content)));
}

}  // namespace

MockHub::MockHub(std::string repo_id, std::string dir)
    : repo_id_(std::move(repo_id)),
      dir_(std::move(dir)),
      commit_("0123456789abcdef0123456789abcdef01234567"),
      hub_(std::make_unique<httplib::Server>()),
      cdn_(std::make_unique<httplib::Server>()) {
  // Serves `path` of dir_ with the faults; `on_cdn` for the CDN server.
  auto serve = [this](const httplib::Request& req, httplib::Response& res, const std::string& rel,
                      bool on_cdn) {
    const std::string path = dir_ + "/" + rel;
    if (rel.empty() || rel.find("..") != std::string::npos ||
        !std::filesystem::is_regular_file(path)) {
      res.status = 404;
      res.set_header("X-Error-Code", "EntryNotFound");
      return;
    }
    const bool lfs = rel.ends_with(".safetensors");
    const std::string etag = FileEtag(path);
    if (!on_cdn) {
      res.set_header("X-Repo-Commit", commit_);
      if (lfs) {
        res.set_header("X-Linked-Etag", "\"" + etag + "\"");
        res.set_header("X-Linked-Size", std::to_string(std::filesystem::file_size(path)));
      }
      if (lfs && faults.cdn) {
        res.status = 302;
        res.set_header("Location", "http://127.0.0.1:" + std::to_string(cdn_port_) + "/cdn/" + rel);
        return;
      }
    }
    const bool is_get = req.method == "GET";
    res.set_header("ETag",
                   "\"" + ((is_get && faults.wrong_etag) ? std::string(64, 'e') : etag) + "\"");
    const uint64_t size = std::filesystem::file_size(path);
    if (is_get && faults.ignore_range) {
      // A chunked answer cannot be cut to ranges: the whole file, with 200,
      // as a server that ignores Range sends it.
      res.status = 200;
      res.set_chunked_content_provider(
          "application/octet-stream", [this, path](size_t offset, httplib::DataSink& sink) {
            std::ifstream in(path, std::ios::binary);
            in.seekg(static_cast<std::streamoff>(offset));
            std::vector<char> buf(64 << 10);
            in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
            const auto n = static_cast<size_t>(in.gcount());
            if (n == 0) {
              sink.done();
              return true;
            }
            sent_ += n;
            return sink.write(buf.data(), n);
          });
      return;
    }
    const bool drop = is_get && faults.drop_bodies.fetch_sub(1) > 0;
    if (!drop) faults.drop_bodies = std::max(0, faults.drop_bodies.load());
    const uint64_t drop_after = faults.drop_after_bytes;
    const int slow = faults.slow_ms_per_chunk;
    res.set_content_provider(size, "application/octet-stream",
                             [this, path, drop, drop_after, slow](size_t offset, size_t length,
                                                                  httplib::DataSink& sink) {
                               std::ifstream in(path, std::ios::binary);
                               in.seekg(static_cast<std::streamoff>(offset));
                               std::vector<char> buf(64 << 10);
                               uint64_t written = 0;
                               while (written < length) {
                                 size_t n = std::min<uint64_t>(buf.size(), length - written);
                                 if (drop && written + n > drop_after) {
                                   n = drop_after - written;
                                   in.read(buf.data(), static_cast<std::streamsize>(n));
                                   sink.write(buf.data(), n);
                                   sent_ += n;
                                   return false;  // cut the connection mid-body
                                 }
                                 in.read(buf.data(), static_cast<std::streamsize>(n));
                                 if (slow > 0)
                                   std::this_thread::sleep_for(std::chrono::milliseconds(slow));
                                 if (!sink.write(buf.data(), n)) return false;
                                 sent_ += n;
                                 written += n;
                               }
                               return true;
                             });
  };
  hub_->Get(R"(/(.+)/resolve/([^/]+)/(.+))",
            [this, serve](const httplib::Request& req, httplib::Response& res) {
              ++requests_;
              const std::string repo = req.matches[1];
              const std::string revision = req.matches[2];
              if (faults.fail_requests.fetch_sub(1) > 0) {
                res.status = faults.fail_status;
                if (!faults.retry_after.empty()) res.set_header("Retry-After", faults.retry_after);
                return;
              }
              faults.fail_requests = std::max(0, faults.fail_requests.load());
              if (faults.gated) {
                res.status = 401;
                res.set_header("X-Error-Code", "GatedRepo");
                return;
              }
              if (!faults.require_token.empty() &&
                  req.get_header_value("Authorization") != "Bearer " + faults.require_token) {
                res.status = 401;
                res.set_header("X-Error-Code", "RepoNotFound");
                return;
              }
              if (repo != repo_id_) {
                res.status = 401;
                res.set_header("X-Error-Code", "RepoNotFound");
                return;
              }
              if (revision != "main" && revision != commit_) {
                res.status = 404;
                res.set_header("X-Error-Code", "RevisionNotFound");
                return;
              }
              serve(req, res, req.matches[3], /*on_cdn=*/false);
            });
  cdn_->Get(R"(/cdn/(.+))", [this, serve](const httplib::Request& req, httplib::Response& res) {
    ++cdn_requests_;
    if (req.has_header("Authorization")) ++cdn_auth_;
    serve(req, res, req.matches[1], /*on_cdn=*/true);
  });
  port_ = hub_->bind_to_any_port("127.0.0.1");
  cdn_port_ = cdn_->bind_to_any_port("127.0.0.1");
  hub_thread_ = std::thread([this] { hub_->listen_after_bind(); });
  cdn_thread_ = std::thread([this] { cdn_->listen_after_bind(); });
}

MockHub::~MockHub() {
  hub_->stop();
  cdn_->stop();
  hub_thread_.join();
  cdn_thread_.join();
}

}  // namespace layercache::testing
