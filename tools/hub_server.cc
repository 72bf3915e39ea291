#include "hub_server.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "http_server.h"
#include "layercache/download.h"
#include "layercache/hf_cache.h"
#include "layercache/repo_snapshot.h"
#include "layercache/status.h"

namespace layercache {
namespace {

using http::Request;
using http::Response;
using json = nlohmann::json;

constexpr size_t kTreePageSize = 1000;  // entries per page of /tree, as the Hub

bool IsKeyword(const std::string& s) {
  return s == "resolve" || s == "raw" || s == "revision" || s == "tree" || s == "paths-info" ||
         s == "refs";
}

std::string Iso8601(int64_t t) {
  char buf[64];
  const auto tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
  return buf;
}

// An error as the Hub sends it: JSON body {"error": ...}, X-Error-Code (when
// the client needs to tell kinds apart) and X-Error-Message.
void HubError(Response& res, int status, const std::string& code, const std::string& message,
              const std::string& commit = "") {
  res = Response{};
  res.status = status;
  if (!commit.empty()) res.SetHeader("X-Repo-Commit", commit);
  if (!code.empty()) res.SetHeader("X-Error-Code", code);
  std::string header;  // header values: printable ASCII only
  for (char c : message) header.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  res.SetHeader("X-Error-Message", header);
  res.SetHeader("Content-Type", "application/json; charset=utf-8");
  res.body = json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

void PlainNotFound(Response& res) {
  res = Response{};
  res.status = 404;
  res.SetHeader("Content-Type", "text/plain; charset=utf-8");
  res.body = "Not Found\n";
}

void MethodNotAllowed(Response& res, const std::string& allow) {
  HubError(res, 405, "", "method not allowed here (allowed: " + allow + ")");
  res.SetHeader("Allow", allow);
}

void SendJson(Response& res, const json& j, const std::string& commit = "") {
  res.status = 200;
  if (!commit.empty()) res.SetHeader("X-Repo-Commit", commit);
  res.SetHeader("Content-Type", "application/json; charset=utf-8");
  res.body = j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Range header per RFC 9110 section 14: one range (first-last, first-, -suffix)
// is applied; a header that does not parse, with another unit, with last <
// first, or with several ranges is ignored (the whole content, allowed by
// 14.2); one that parses but where no range overlaps the content is 416.
enum class RangeKind { kNone, kRange, kUnsatisfiable };
struct RangeResult {
  RangeKind kind = RangeKind::kNone;
  uint64_t first = 0, last = 0;
};

bool ParseNumber(std::string_view s, uint64_t* v) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) return false;
  uint64_t n = 0;
  for (char c : s) {
    const uint64_t d = static_cast<uint64_t>(c - '0');
    n = n > (UINT64_MAX - d) / 10 ? UINT64_MAX : n * 10 + d;  // saturate: still "beyond the end"
  }
  *v = n;
  return true;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

RangeResult ParseRange(std::string_view header, uint64_t size) {
  RangeResult none;
  header = TrimOws(header);
  const size_t eq = header.find('=');
  if (eq == std::string_view::npos) return none;
  std::string unit(TrimOws(header.substr(0, eq)));
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (unit != "bytes") return none;
  std::vector<RangeResult> ranges;
  std::string_view rest = header.substr(eq + 1);
  size_t specs = 0;
  while (true) {
    const size_t comma = rest.find(',');
    const std::string_view spec = TrimOws(rest.substr(0, comma));
    if (!spec.empty()) {
      ++specs;
      const size_t dash = spec.find('-');
      if (dash == std::string_view::npos) return none;
      const std::string_view a = spec.substr(0, dash), b = spec.substr(dash + 1);
      RangeResult r{RangeKind::kRange, 0, 0};
      if (a.empty()) {  // suffix: the last b bytes
        uint64_t n;
        if (!ParseNumber(b, &n)) return none;
        if (n == 0 || size == 0) {
          r.kind = RangeKind::kUnsatisfiable;
        } else {
          r.first = n >= size ? 0 : size - n;
          r.last = size - 1;
        }
      } else {
        uint64_t first, last = UINT64_MAX;
        if (!ParseNumber(a, &first)) return none;
        if (!b.empty() && !ParseNumber(b, &last)) return none;
        if (last < first) return none;  // invalid range-spec: ignore the header
        if (first >= size) {
          r.kind = RangeKind::kUnsatisfiable;
        } else {
          r.first = first;
          r.last = std::min(last, size - 1);  // clamped to the content
        }
      }
      ranges.push_back(r);
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (specs == 0) return none;
  const bool any = std::any_of(ranges.begin(), ranges.end(),
                               [](const RangeResult& r) { return r.kind == RangeKind::kRange; });
  if (!any) return {RangeKind::kUnsatisfiable, 0, 0};
  if (ranges.size() > 1) return none;  // several ranges: the whole content
  return ranges[0];
}

bool EtagMatches(const std::string& list, const std::string& etag) {
  // If-None-Match: "*" or a comma-separated list of (possibly weak) entity tags.
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    std::string_view t = TrimOws(std::string_view(list).substr(pos, comma - pos));
    if (t == "*") return true;
    if (t.substr(0, 2) == "W/") t.remove_prefix(2);
    if (t.size() >= 2 && t.front() == '"' && t.back() == '"') t = t.substr(1, t.size() - 2);
    if (t == etag) return true;
    pos = comma + 1;
  }
  return false;
}

bool Truthy(const std::string& v) { return v == "1" || v == "true" || v == "True"; }

json TreeEntry(const RepoSnapshot& s, const std::string& path, bool is_dir) {
  if (is_dir)
    return {{"type", "directory"}, {"oid", s.tree_ids.at(path)}, {"size", 0}, {"path", path}};
  const RepoFile& f = s.files.at(path);
  json j = {{"type", "file"}, {"oid", f.blob_id}, {"size", f.size}, {"path", path}};
  if (f.lfs) j["lfs"] = {{"oid", f.sha256}, {"size", f.size}, {"pointerSize", f.pointer.size()}};
  return j;
}

}  // namespace

HubServer::HubServer(HubServerOptions options) : options_(std::move(options)) {}

HubServer::~HubServer() {
  Stop();
  if (log_ != nullptr && log_ != stdout) std::fclose(log_);
}

void HubServer::AddRepo(const std::string& repo_id, const std::string& dir) {
  // The id clients ask for: a Hub repository id ("name" or "org/name"), never "../etc".
  if (Status s = CheckRepoId(repo_id); !s.ok()) throw Error(Status::InvalidArgument(s.message()));
  auto snapshot = RepoSnapshot::FromDirectory(dir);
  if (!snapshot.ok()) throw Error(snapshot.status());
  Repo repo;
  commit_ = (*snapshot)->commit;
  repo.refs["main"] = commit_;
  repo.commits[commit_] = std::move(*snapshot);
  repos_[repo_id] = std::move(repo);
}

Status HubServer::AddHfCacheRepo(const std::string& cache_dir, const std::string& repo_id) {
  auto cached = ReadHfCacheRepo(cache_dir, repo_id);
  if (!cached.ok()) return cached.status();
  Repo repo;
  for (const std::string& commit : cached->commits) {
    auto snapshot = RepoSnapshot::FromHfSnapshot(cached->dir + "/snapshots/" + commit, commit);
    if (!snapshot.ok()) return snapshot.status();
    repo.commits[commit] = std::move(*snapshot);
  }
  for (const auto& [name, commit] : cached->refs)
    if (repo.commits.count(commit) != 0) repo.refs[name] = commit;
  if (repo.commits.empty())
    return Status::NotFound(repo_id + " has no snapshot in the Hugging Face cache " + cache_dir);
  if (auto main = repo.refs.find("main"); main != repo.refs.end()) commit_ = main->second;
  repos_[repo_id] = std::move(repo);
  return Status::OK();
}

Result<size_t> HubServer::AddHfCache(const std::string& cache_dir) {
  auto ids = ListHfCacheRepos(cache_dir);
  if (!ids.ok()) return ids.status();
  size_t n = 0;
  for (const std::string& id : *ids) {
    if (Status s = AddHfCacheRepo(cache_dir, id); !s.ok()) {
      if (s.code() == StatusCode::kNotFound) continue;  // a repository without snapshots
      return s;
    }
    ++n;
  }
  return n;
}

std::map<std::string, std::map<std::string, std::string>> HubServer::revisions() const {
  std::map<std::string, std::map<std::string, std::string>> out;
  for (const auto& [id, repo] : repos_) out[id] = repo.refs;
  return out;
}

int HubServer::Start(const std::string& host, int port) {
  http::ServerOptions o;
  o.threads = options_.threads;
  o.max_connections = options_.max_connections;
  o.request_timeout_ms = options_.request_timeout_ms;
  o.idle_timeout_ms = options_.idle_timeout_ms;
  o.write_timeout_ms = options_.write_timeout_ms;
  if (!options_.access_log.empty()) {
    if (options_.access_log == "-") {
      log_ = stdout;
    } else {
      log_ = std::fopen(options_.access_log.c_str(), "ae");
      if (log_ == nullptr) {
        error_ = "cannot open the access log " + options_.access_log + ": " + std::strerror(errno);
        return -1;
      }
    }
    o.access_log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      std::fprintf(log_, "%s\n", line.c_str());
      std::fflush(log_);
    };
  }
  server_ = std::make_unique<http::Server>(
      [this](const Request& req, Response& res) { Handle(req, res); }, o);
  const int bound = server_->Listen(host, port, &error_);
  if (bound < 0) {
    server_.reset();
    return -1;
  }
  server_->Start();
  return bound;
}

void HubServer::Wait() {
  if (server_) server_->Wait();
}

void HubServer::Stop() {
  if (server_) server_->Stop();
}

uint64_t HubServer::bytes_sent() const { return server_ ? server_->file_bytes_sent() : 0; }

void HubServer::Handle(const Request& req, Response& res) const {
  // Split the raw path on '/', then decode each segment exactly once (a
  // "%2F" inside a segment, as clients encode revisions, stays in it).
  std::vector<std::string> segs;
  {
    std::string_view p = req.path;
    if (p.empty() || p[0] != '/') return PlainNotFound(res);
    p.remove_prefix(1);
    while (true) {
      const size_t slash = p.find('/');
      std::string seg;
      if (!http::PercentDecode(p.substr(0, slash), &seg)) {
        return HubError(res, 400, "", "malformed percent-encoding in the request path");
      }
      if (seg.find('\0') != std::string::npos)
        return HubError(res, 400, "", "NUL character in the request path");
      segs.push_back(std::move(seg));
      if (slash == std::string_view::npos) break;
      p.remove_prefix(slash + 1);
    }
  }
  if (segs.size() >= 2 && segs[0] == "api") return HandleApi(req, res, segs);

  // /{repo}/resolve|raw/{rev}/{path}, repo being "name" or "org/name".
  size_t at = 0;
  if (segs.size() >= 4 && (segs[2] == "resolve" || segs[2] == "raw") &&
      (repos_.count(segs[0] + "/" + segs[1]) != 0 || (segs[1] != "resolve" && segs[1] != "raw"))) {
    at = 2;
  } else if (segs.size() >= 3 && (segs[1] == "resolve" || segs[1] == "raw")) {
    at = 1;
  } else {
    return PlainNotFound(res);
  }
  if (segs[0] == "datasets" || segs[0] == "spaces") {
    return HubError(res, 404, "RepoNotFound",
                    "Repository not found: this mirror serves model repositories only");
  }
  const std::string repo_id = at == 2 ? segs[0] + "/" + segs[1] : segs[0];
  const auto repo = repos_.find(repo_id);
  if (req.method != "GET" && req.method != "HEAD") return MethodNotAllowed(res, "GET, HEAD");
  if (repo == repos_.end())
    return HubError(res, 404, "RepoNotFound", "Repository not found: " + repo_id);
  HandleFile(req, res, repo->second, repo_id, segs, at);
}

void HubServer::HandleFile(const Request& req, Response& res, const Repo& repo,
                           const std::string& repo_id, const std::vector<std::string>& segs,
                           size_t at) const {
  const bool raw = segs[at] == "raw";
  std::string rev = segs[at + 1];
  size_t path_at = at + 2;
  std::string commit;
  if (auto r = repo.refs.find(rev); r != repo.refs.end()) {
    commit = r->second;
  } else if (repo.commits.count(rev) != 0) {
    commit = rev;
  } else {
    // A ref with '/' sent unencoded (resolve/refs/pr/1/config.json): the
    // longest served ref the segments spell.
    std::string joined = rev;
    for (size_t i = at + 2; i + 1 < segs.size(); ++i) {
      joined += "/" + segs[i];
      if (auto ref = repo.refs.find(joined); ref != repo.refs.end()) {
        rev = joined;
        commit = ref->second;
        path_at = i + 1;
      }
    }
    if (commit.empty()) return HubError(res, 404, "RevisionNotFound", "Invalid rev id: " + rev);
  }
  const RepoSnapshot& snap = *repo.commits.at(commit);
  std::string path;
  for (size_t i = path_at; i < segs.size(); ++i) path += (i > path_at ? "/" : "") + segs[i];
  const auto file = snap.files.find(path);
  if (file == snap.files.end()) {
    return HubError(res, 404, "EntryNotFound",
                    path.empty() ? "Entry not found: no file path given"
                                 : "Entry not found: " + path + " in " + repo_id + " at " + commit,
                    commit);
  }
  const RepoFile& f = file->second;
  // /raw/ answers what git stores: the pointer of an LFS file.
  const bool pointer = raw && f.lfs;
  const std::string etag = raw ? f.blob_id : f.etag();
  const uint64_t size = pointer ? f.pointer.size() : f.size;
  res.SetHeader("X-Repo-Commit", commit);
  res.SetHeader("ETag", "\"" + etag + "\"");
  if (f.lfs && !raw) {
    res.SetHeader("X-Linked-Etag", "\"" + f.sha256 + "\"");
    res.SetHeader("X-Linked-Size", std::to_string(f.size));
  }
  res.SetHeader("Accept-Ranges", "bytes");
  const bool text = pointer || path.ends_with(".json") || path.ends_with(".txt") ||
                    path.ends_with(".md") || path.ends_with(".py") || path.ends_with(".model") ||
                    path == ".gitattributes";
  res.SetHeader("Content-Type", text && !(f.lfs && !raw) ? "text/plain; charset=utf-8"
                                                         : "application/octet-stream");

  if (std::string inm = req.Header("If-None-Match"); !inm.empty() && EtagMatches(inm, etag)) {
    res.status = 304;
    return;
  }
  uint64_t first = 0, length = size;
  res.status = 200;
  // Range is defined for GET only (RFC 9110 14.2); If-Range with another
  // validator than our strong ETag means the whole content.
  std::string range = req.method == "GET" ? req.Header("Range") : "";
  if (std::string if_range = req.Header("If-Range");
      !range.empty() && !if_range.empty() && if_range != "\"" + etag + "\"")
    range.clear();
  if (!range.empty()) {
    const RangeResult r = ParseRange(range, size);
    if (r.kind == RangeKind::kUnsatisfiable) {
      HubError(res, 416, "",
               "Requested range not satisfiable: " + range + " (size " + std::to_string(size) + ")",
               commit);
      res.SetHeader("Content-Range", "bytes */" + std::to_string(size));
      return;
    }
    if (r.kind == RangeKind::kRange) {
      res.status = 206;
      first = r.first;
      length = r.last - r.first + 1;
      res.SetHeader("Content-Range", "bytes " + std::to_string(r.first) + "-" +
                                         std::to_string(r.last) + "/" + std::to_string(size));
    }
  }
  if (pointer) {
    res.body = f.pointer.substr(first, length);
  } else {
    res.file_path = f.local_path;
    res.file_offset = first;
    res.file_length = length;
  }
}

void HubServer::HandleApi(const Request& req, Response& res,
                          const std::vector<std::string>& segs) const {
  if (segs[1] == "datasets" || segs[1] == "spaces") {
    return HubError(res, 404, "RepoNotFound",
                    "Repository not found: this mirror serves model repositories only");
  }
  if (segs[1] != "models" || segs.size() < 3) return PlainNotFound(res);
  // The repository: "org/name" if served (or if the second part is no
  // route keyword), else "name".
  size_t n = 1;
  if (segs.size() >= 4 && (repos_.count(segs[2] + "/" + segs[3]) != 0 ||
                           (repos_.count(segs[2]) == 0 && !IsKeyword(segs[3]))))
    n = 2;
  const std::string repo_id = n == 2 ? segs[2] + "/" + segs[3] : segs[2];
  std::vector<std::string> rest(segs.begin() + 2 + static_cast<std::ptrdiff_t>(n), segs.end());
  if (!rest.empty() && rest.back().empty() && (rest.size() == 1 || rest[0] != "tree"))
    rest.pop_back();  // a trailing '/'
  enum { kInfo, kTree, kPathsInfo, kRefs } route;
  if (rest.empty() || (rest.size() == 2 && rest[0] == "revision")) {
    route = kInfo;
  } else if (rest.size() >= 2 && rest[0] == "tree") {
    route = kTree;
  } else if (rest.size() == 2 && rest[0] == "paths-info") {
    route = kPathsInfo;
  } else if (rest.size() == 1 && rest[0] == "refs") {
    route = kRefs;
  } else {
    return PlainNotFound(res);
  }
  if (route == kPathsInfo ? req.method != "POST" : (req.method != "GET" && req.method != "HEAD"))
    return MethodNotAllowed(res, route == kPathsInfo ? "POST" : "GET, HEAD");
  const auto it = repos_.find(repo_id);
  if (it == repos_.end())
    return HubError(res, 404, "RepoNotFound", "Repository not found: " + repo_id);
  const Repo& repo = it->second;

  if (route == kRefs) {
    // Branches are the plain names; "refs/pr/N" (pull requests, as the Hub
    // names them) are listed under pullRequests when asked (include_prs=1,
    // as huggingface_hub's list_repo_refs(include_pull_requests=True) asks).
    json branches = json::array(), pulls = json::array();
    for (const auto& [name, commit] : repo.refs) {
      if (name.rfind("refs/pr/", 0) == 0) {
        pulls.push_back({{"name", name}, {"ref", name}, {"targetCommit", commit}});
      } else if (name.rfind("refs/", 0) != 0) {
        branches.push_back(
            {{"name", name}, {"ref", "refs/heads/" + name}, {"targetCommit", commit}});
      }
    }
    json out = {{"branches", branches}, {"tags", json::array()}, {"converts", json::array()}};
    std::vector<std::pair<std::string, std::string>> query;
    if (!http::ParseForm(req.query, &query))
      return HubError(res, 400, "", "malformed percent-encoding in the query string");
    for (const auto& [k, v] : query)
      if (k == "include_prs" && Truthy(v)) out["pullRequests"] = pulls;
    return SendJson(res, out);
  }

  const std::string rev = route == kInfo ? (rest.empty() ? "main" : rest[1]) : rest[1];
  std::string commit;
  if (auto r = repo.refs.find(rev); r != repo.refs.end()) {
    commit = r->second;
  } else if (repo.commits.count(rev) != 0) {
    commit = rev;
  } else {
    return HubError(res, 404, "RevisionNotFound", "Invalid rev id: " + rev);
  }
  const RepoSnapshot& snap = *repo.commits.at(commit);
  std::vector<std::pair<std::string, std::string>> query;
  if (!http::ParseForm(req.query, &query))
    return HubError(res, 400, "", "malformed percent-encoding in the query string", commit);
  auto param = [&](const std::string& name) -> std::string {
    for (const auto& [k, v] : query)
      if (k == name) return v;
    return "";
  };

  if (route == kInfo) {
    const bool blobs = Truthy(param("blobs"));
    json siblings = json::array();
    for (const auto& [path, f] : snap.files) {
      json s = {{"rfilename", path}};
      if (blobs) {
        s["blobId"] = f.blob_id;
        s["size"] = f.size;
        if (f.lfs)
          s["lfs"] = {{"sha256", f.sha256}, {"size", f.size}, {"pointerSize", f.pointer.size()}};
      }
      siblings.push_back(std::move(s));
    }
    const size_t slash = repo_id.find('/');
    json info = {
        {"_id", commit.substr(0, 24)},
        {"id", repo_id},
        {"modelId", repo_id},
        {"author", slash == std::string::npos ? json(nullptr) : json(repo_id.substr(0, slash))},
        {"sha", commit},
        {"lastModified", Iso8601(snap.mtime)},
        {"createdAt", Iso8601(snap.mtime)},
        {"private", false},
        {"disabled", false},
        {"gated", false},
        {"downloads", 0},
        {"likes", 0},
        {"tags", json::array()},
        {"siblings", siblings}};
    if (blobs) {
      uint64_t used = 0;
      for (const auto& [path, f] : snap.files) used += f.size;
      info["usedStorage"] = used;
    }
    return SendJson(res, info, commit);
  }

  if (route == kTree) {
    std::string dir;
    for (size_t i = 2; i < rest.size(); ++i) dir += (i > 2 ? "/" : "") + rest[i];
    while (!dir.empty() && dir.back() == '/') dir.pop_back();
    if (snap.tree_ids.count(dir) == 0) {
      return HubError(res, 404, "EntryNotFound",
                      snap.files.count(dir) != 0
                          ? "Entry not found: " + dir + " is a file, not a directory"
                          : "Entry not found: no directory " + dir + " at " + commit,
                      commit);
    }
    const bool recursive = Truthy(param("recursive"));
    size_t limit = kTreePageSize, cursor = 0;
    if (std::string l = param("limit"); !l.empty()) {
      uint64_t v;
      if (!ParseNumber(l, &v) || v == 0)
        return HubError(res, 400, "", "limit must be a positive integer", commit);
      limit = static_cast<size_t>(std::min<uint64_t>(v, kTreePageSize));
    }
    if (std::string c = param("cursor"); !c.empty()) {
      uint64_t v;
      if (!ParseNumber(c, &v)) return HubError(res, 400, "", "invalid cursor", commit);
      cursor = static_cast<size_t>(std::min<uint64_t>(v, SIZE_MAX));
    }
    // Entries under `dir`: directories and files, sorted by path.
    std::vector<std::pair<std::string, bool>> entries;
    const std::string prefix = dir.empty() ? "" : dir + "/";
    auto under = [&](const std::string& p) {
      if (p.empty() || p.size() <= prefix.size() || p.compare(0, prefix.size(), prefix) != 0)
        return false;
      return recursive || p.find('/', prefix.size()) == std::string::npos;
    };
    for (const auto& [p, id] : snap.tree_ids)
      if (under(p)) entries.emplace_back(p, true);
    for (const auto& [p, f] : snap.files)
      if (under(p)) entries.emplace_back(p, false);
    std::sort(entries.begin(), entries.end());
    json page = json::array();
    for (size_t i = cursor; i < entries.size() && i < cursor + limit; ++i)
      page.push_back(TreeEntry(snap, entries[i].first, entries[i].second));
    if (cursor + limit < entries.size()) {
      std::string q;
      for (const auto& [k, v] : query) {
        if (k == "cursor") continue;
        q += (q.empty() ? "" : "&") + http::PercentEncode(k) + "=" + http::PercentEncode(v);
      }
      q += (q.empty() ? "" : "&") + std::string("cursor=") + std::to_string(cursor + limit);
      const std::string host = req.Header("Host");
      const std::string base = host.empty() ? "" : "http://" + host;
      res.SetHeader("Link", "<" + base + req.path + "?" + q + ">; rel=\"next\"");
    }
    return SendJson(res, page, commit);
  }

  // paths-info: form (paths=a&paths=b&expand=...) or JSON ({"paths": [...]}).
  std::vector<std::string> paths;
  const std::string type = req.Header("Content-Type");
  if (type.find("json") != std::string::npos) {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return HubError(res, 400, "", "the body is not a JSON object", commit);
    const json& p = body.contains("paths") ? body["paths"] : json();
    if (p.is_string()) {
      paths.push_back(p.get<std::string>());
    } else if (p.is_array()) {
      for (const auto& e : p) {
        if (!e.is_string()) return HubError(res, 400, "", "paths must be strings", commit);
        paths.push_back(e.get<std::string>());
      }
    }
  } else {
    std::vector<std::pair<std::string, std::string>> form;
    if (!http::ParseForm(req.body, &form))
      return HubError(res, 400, "", "malformed form body", commit);
    for (const auto& [k, v] : form)
      if (k == "paths" || k == "paths[]") paths.push_back(v);
  }
  if (paths.empty()) return HubError(res, 400, "", "no paths given (form field 'paths')", commit);
  json out = json::array();
  for (std::string p : paths) {
    while (!p.empty() && p.back() == '/') p.pop_back();
    if (snap.files.count(p) != 0) {
      out.push_back(TreeEntry(snap, p, false));
    } else if (!p.empty() && snap.tree_ids.count(p) != 0) {
      out.push_back(TreeEntry(snap, p, true));
    }
  }
  SendJson(res, out, commit);
}

}  // namespace layercache
