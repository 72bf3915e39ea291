#include "hub/hub_client.h"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <optional>

#include "io/env.h"
#include "layercache/checksum.h"
#include "util/path.h"

namespace layercache {
namespace {

constexpr uint64_t kFirstHeaderRead = 100'000;

// A size header: a plain decimal count; nullopt otherwise (std::stoull threw
// a standard exception out of the library at a malformed answer).
std::optional<uint64_t> ParseSize(const std::string& text) {
  uint64_t v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || p != end) return std::nullopt;
  return v;
}

std::string GetEnv(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

// "https://host:port/path" -> "https://host:port"; "" when not absolute.
std::string Origin(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return "";
  const size_t slash = url.find('/', scheme + 3);
  return url.substr(0, slash);
}

bool IsHex(const std::string& s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

HubSettings HubSettings::Resolve(HubSettings s) {
  if (s.endpoint.empty()) s.endpoint = GetEnv("HF_ENDPOINT");
  if (s.endpoint.empty()) s.endpoint = "https://huggingface.co";
  while (!s.endpoint.empty() && s.endpoint.back() == '/') s.endpoint.pop_back();
  if (s.token.empty()) s.token = GetEnv("HF_TOKEN");
  if (s.token.empty()) {
    std::string path = GetEnv("HF_TOKEN_PATH");
    if (path.empty()) {
      const std::string home = GetEnv("HF_HOME");
      path = home.empty() ? ExpandUser("~/.cache/huggingface/token") : JoinPath(home, "token");
    }
    auto text = ReadFileToString(Env::Default(), path);
    if (text.ok()) {
      std::string t = *text;
      while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
      s.token = t;
    }
  }
  const std::string offline = GetEnv("HF_HUB_OFFLINE");
  if (offline == "1" || offline == "true" || offline == "TRUE" || offline == "yes")
    s.offline = true;
  return s;
}

Status CheckRepoId(const std::string& repo_id) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("repo_id \"" + repo_id + "\" is not a Hub repository id (" +
                                   why + "); use \"name\" or \"org/name\"");
  };
  if (repo_id.empty() || repo_id.size() > 200) return bad("empty or too long");
  int slashes = 0;
  for (char c : repo_id) {
    if (c == '/') {
      ++slashes;
    } else if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return bad("character '" + std::string(1, c) + "' is not allowed");
    }
  }
  if (slashes > 1) return bad("more than one '/'");
  if (repo_id.find("..") != std::string::npos) return bad("\"..\" is not allowed");
  if (repo_id.front() == '/' || repo_id.back() == '/' || repo_id.front() == '.' ||
      repo_id.find("/.") != std::string::npos) {
    return bad("leading or trailing separator");
  }
  return Status::OK();
}

std::string PercentEncode(const std::string& s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

HubClient::HubClient(HubSettings settings) : settings_(HubSettings::Resolve(std::move(settings))) {}

std::unique_ptr<HttpClient> HubClient::Checkout() {
  {
    std::lock_guard lock(mu_);
    for (auto& c : pool_) {
      if (c) return std::move(c);
    }
  }
  return std::make_unique<HttpClient>(settings_.http);
}

void HubClient::Return(std::unique_ptr<HttpClient> client) {
  std::lock_guard lock(mu_);
  for (auto& c : pool_) {
    if (!c) {
      c = std::move(client);
      return;
    }
  }
  pool_.push_back(std::move(client));
}

uint64_t HubClient::wire_bytes() const {
  std::lock_guard lock(mu_);
  uint64_t n = 0;
  for (const auto& c : pool_) n += c ? c->wire_bytes() : 0;
  return n;
}

uint64_t HubClient::retries() const {
  std::lock_guard lock(mu_);
  uint64_t n = 0;
  for (const auto& c : pool_) n += c ? c->retries() : 0;
  return n;
}

HttpHeaders HubClient::HeadersFor(const RemoteFile& file) const {
  HttpHeaders h = {"Accept-Encoding: identity"};
  if (file.send_auth && !settings_.token.empty())
    h.push_back("Authorization: Bearer " + settings_.token);
  return h;
}

Status HubClient::MapError(const HttpResponse& r, const std::string& repo_id,
                           const std::string& revision, const std::string& filename) const {
  const std::string code = r.header("x-error-code");
  const std::string where = repo_id + "@" + revision;
  const std::string token_hint =
      settings_.token.empty() ? " (no token was sent: set HF_TOKEN if the repository is private)"
                              : " (the token was sent: check that it can read this repository)";
  if (code == "RepoNotFound") {
    return Status::NotFound("repository " + repo_id + " not found on " + settings_.endpoint +
                            token_hint);
  }
  if (code == "GatedRepo") {
    return Status::IOError(
        "repository " + repo_id +
        " is gated: accept its terms on the Hub and use a token that has access" + token_hint);
  }
  if (code == "RevisionNotFound") {
    return Status::NotFound("revision \"" + revision + "\" not found in " + repo_id);
  }
  if (code == "EntryNotFound")
    return Status::NotFound("file " + filename + " not found in " + where);
  if (r.status == 401) {
    return Status::IOError("unauthorized for " + where +
                           ": the repository is private, gated or missing" + token_hint);
  }
  if (r.status == 403) return Status::IOError("forbidden: " + where + "/" + filename + token_hint);
  if (r.status == 404) return Status::NotFound(filename + " not found in " + where);
  return Status::IOError("the Hub answered " + std::to_string(r.status) + " for " + where + "/" +
                         filename + (r.body.empty() ? "" : ": " + r.body.substr(0, 200)));
}

Result<RemoteFile> HubClient::Stat(const std::string& repo_id, const std::string& revision,
                                   const std::string& filename, bool* entry_missing) {
  if (entry_missing != nullptr) *entry_missing = false;
  if (Status s = CheckRepoId(repo_id); !s.ok()) return s;
  if (settings_.offline) {
    return Status::IOError("HF_HUB_OFFLINE is set: cannot ask the Hub about " + repo_id + "/" +
                           filename);
  }
  RemoteFile f;
  f.repo_id = repo_id;
  f.revision = revision;
  f.filename = filename;
  std::string url = settings_.endpoint + "/" + repo_id + "/resolve/" +
                    PercentEncode(revision, false) + "/" + PercentEncode(filename, true);
  const std::string endpoint_origin = Origin(settings_.endpoint);
  auto client = Checkout();
  for (int hop = 0; hop < 10; ++hop) {
    f.send_auth = Origin(url).empty() || Origin(url) == endpoint_origin;
    auto r = client->Request("HEAD", url, HeadersFor(f));
    if (!r.ok()) {
      Return(std::move(client));
      return r.status();
    }
    if (r->status >= 300 && r->status < 400) {
      const std::string location = r->header("location");
      if (f.commit.empty()) f.commit = r->header("x-repo-commit");
      if (f.etag.empty()) f.etag = NormalizeEtag(r->header("x-linked-etag"));
      if (f.size == 0 && !r->header("x-linked-size").empty()) {
        const auto size = ParseSize(r->header("x-linked-size"));
        if (!size) {
          Return(std::move(client));
          return Status::IOError("the Hub answered with a malformed X-Linked-Size for " + url);
        }
        f.size = *size;
      }
      if (location.empty()) {
        Return(std::move(client));
        return Status::IOError("redirect without Location for " + url);
      }
      if (!Origin(location).empty()) {
        // An absolute redirect: a CDN. The metadata is in this answer; the
        // bytes come from there, without our token unless it is our host.
        f.download_url = location;
        f.send_auth = Origin(location) == endpoint_origin;
        Return(std::move(client));
        if (f.size == 0) return Status::IOError("no X-Linked-Size in the redirect for " + url);
        return f;
      }
      url = endpoint_origin + (location.front() == '/' ? "" : "/") + location;
      continue;
    }
    Return(std::move(client));
    if (r->status >= 400) {
      const std::string code = r->header("x-error-code");
      if (entry_missing != nullptr) {
        *entry_missing = code == "EntryNotFound" || (r->status == 404 && code.empty());
      }
      return MapError(*r, repo_id, revision, filename);
    }
    if (f.commit.empty()) f.commit = r->header("x-repo-commit");
    if (f.etag.empty()) {
      f.etag = NormalizeEtag(r->header("x-linked-etag"));
      if (f.etag.empty()) f.etag = NormalizeEtag(r->header("etag"));
    }
    if (f.size == 0) {
      std::string size = r->header("x-linked-size");
      if (size.empty()) size = r->header("content-length");
      if (size.empty()) return Status::IOError("the Hub gave no size for " + url);
      const auto parsed = ParseSize(size);
      if (!parsed) return Status::IOError("the Hub answered with a malformed size for " + url);
      f.size = *parsed;
    }
    f.download_url = url;
    return f;
  }
  Return(std::move(client));
  return Status::IOError("too many redirects for " + url);
}

Result<std::string> HubClient::FetchSmallFile(const RemoteFile& file) {
  if (file.size > (64u << 20))
    return Status::InvalidArgument(file.filename + " is too large to fetch whole");
  std::string body(file.size, '\0');
  Status s = FetchRange(file, 0, file.size, reinterpret_cast<std::byte*>(body.data()));
  if (!s.ok()) return s;
  if (IsHex(file.etag, 40) && GitBlobSha1Hex(body) != file.etag) {
    return Status::Corruption(file.repo_id + "/" + file.filename +
                              ": content does not match its git sha1 " + file.etag);
  }
  if (IsHex(file.etag, 64) &&
      ChecksumHex(ChecksumAlgorithm::kSHA256, std::as_bytes(std::span<const char>(body))) !=
          file.etag) {
    return Status::Corruption(file.repo_id + "/" + file.filename +
                              ": content does not match its sha256 " + file.etag);
  }
  return body;
}

Status HubClient::FetchRange(const RemoteFile& file, uint64_t offset, uint64_t length,
                             std::byte* dst, const std::function<void(uint64_t)>& on_bytes) {
  if (offset + length > file.size) {
    return Status::Corruption(file.filename + ": range " + std::to_string(offset) + "+" +
                              std::to_string(length) + " lies past its end (" +
                              std::to_string(file.size) + " bytes)");
  }
  auto client = Checkout();
  Status s = client->GetRange(file.download_url, HeadersFor(file), offset, length, dst, file.etag,
                              on_bytes);
  Return(std::move(client));
  return s.WithContext(file.repo_id + "/" + file.filename);
}

Result<SafetensorsHeader> HubClient::FetchHeader(const RemoteFile& file) {
  const std::string what = file.repo_id + "@" + file.revision + "/" + file.filename;
  const uint64_t first = std::min<uint64_t>(file.size, kFirstHeaderRead);
  std::string head(first, '\0');
  if (Status s = FetchRange(file, 0, first, reinterpret_cast<std::byte*>(head.data())); !s.ok())
    return s;
  auto n = ParseSafetensorsHeaderLength(
      std::as_bytes(std::span<const char>(head)).first(std::min<size_t>(8, head.size())), file.size,
      what);
  if (!n.ok()) return n.status();
  std::string text;
  if (8 + *n <= head.size()) {
    text = head.substr(8, *n);
  } else {
    text.assign(*n, '\0');
    if (Status s = FetchRange(file, 8, *n, reinterpret_cast<std::byte*>(text.data())); !s.ok())
      return s;
  }
  return ParseSafetensorsHeader(text, file.size, what);
}

}  // namespace layercache
