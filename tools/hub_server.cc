#include "hub_server.h"

#include <httplib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "layercache/checksum.h"
#include "layercache/options.h"

namespace layercache {
namespace {

namespace fs = std::filesystem;

std::string EtagOf(const std::string& path, bool lfs) {
  std::ifstream in(path, std::ios::binary);
  if (!lfs) {
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return GitBlobSha1Hex(content);
  }
  auto hasher = NewHasher(ChecksumAlgorithm::kSHA256);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    hasher->Update(
        std::as_bytes(std::span<const char>(buf.data(), static_cast<size_t>(in.gcount()))));
  }
  return hasher->FinalHex();
}

std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

HubServer::HubServer()
    : server_(std::make_unique<httplib::Server>()),
      sent_(std::make_shared<std::atomic<uint64_t>>(0)) {
  commit_ = std::string(40, '0');
}

HubServer::~HubServer() { Stop(); }

void HubServer::AddRepo(const std::string& repo_id, const std::string& dir) {
  Repo repo;
  repo.dir = dir;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    File f;
    f.path = e.path().string();
    f.size = e.file_size();
    f.lfs = e.path().extension() == ".safetensors" || f.size > (10u << 20);
    f.etag = EtagOf(f.path, f.lfs);
    repo.files[fs::relative(e.path(), dir).string()] = std::move(f);
  }
  // A stable commit id derived from the content, as a Hub commit would be.
  std::string all;
  for (const auto& [name, f] : repo.files) all += name + f.etag;
  commit_ = GitBlobSha1Hex(all + commit_);
  repos_[repo_id] = std::move(repo);
}

int HubServer::Start(const std::string& host, int port) {
  auto handler = [this](const httplib::Request& req, httplib::Response& res) {
    // /{org}/{name}/resolve/{revision}/{path} or /{name}/resolve/{revision}/{path}
    const std::string target = req.matches[0];
    const size_t r = target.find("/resolve/");
    auto error = [&](int status, const char* code, const std::string& message) {
      res.status = status;
      res.set_header("X-Error-Code", code);
      res.set_content(message, "text/plain");
    };
    if (r == std::string::npos) return error(404, "EntryNotFound", "not a resolve URL");
    const std::string repo_id = PercentDecode(target.substr(1, r - 1));
    const std::string rest = target.substr(r + 9);
    const size_t slash = rest.find('/');
    const std::string revision = PercentDecode(rest.substr(0, slash));
    const std::string path =
        slash == std::string::npos ? "" : PercentDecode(rest.substr(slash + 1));
    auto repo = repos_.find(repo_id);
    if (repo == repos_.end()) return error(404, "RepoNotFound", "Repository not found");
    if (revision != "main" && revision != commit_)
      return error(404, "RevisionNotFound", "Revision not found");
    auto file = repo->second.files.find(path);
    if (file == repo->second.files.end()) return error(404, "EntryNotFound", "Entry not found");
    const File& f = file->second;
    res.set_header("X-Repo-Commit", commit_);
    res.set_header("ETag", "\"" + f.etag + "\"");
    if (f.lfs) {
      res.set_header("X-Linked-Etag", "\"" + f.etag + "\"");
      res.set_header("X-Linked-Size", std::to_string(f.size));
    }
    res.set_header("Accept-Ranges", "bytes");
    auto sent = sent_;
    const std::string p = f.path;
    res.set_content_provider(f.size, "application/octet-stream",
                             [p, sent](size_t offset, size_t length, httplib::DataSink& sink) {
                               std::ifstream in(p, std::ios::binary);
                               in.seekg(static_cast<std::streamoff>(offset));
                               std::vector<char> buf(std::min<size_t>(length, 1 << 20));
                               size_t left = length;
                               while (left > 0 && in) {
                                 const size_t n = std::min(left, buf.size());
                                 in.read(buf.data(), static_cast<std::streamsize>(n));
                                 const auto got = static_cast<size_t>(in.gcount());
                                 if (got == 0 || !sink.write(buf.data(), got)) return false;
                                 sent->fetch_add(got, std::memory_order_relaxed);
                                 left -= got;
                               }
                               return left == 0;
                             });
  };
  server_->Get(R"(/.+)", handler);
  const int bound =
      port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (bound < 0) return -1;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void HubServer::Wait() {
  if (thread_.joinable()) thread_.join();
}

void HubServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

uint64_t HubServer::bytes_sent() const { return sent_->load(); }

}  // namespace layercache
