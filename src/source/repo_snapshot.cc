#include "layercache/repo_snapshot.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "layercache/checksum.h"
#include "layercache/hf_cache.h"
#include "layercache/status.h"

namespace layercache {
namespace {

namespace fs = std::filesystem;

std::string Hex(const unsigned char* d, unsigned n) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; ++i) {
    s.push_back(kHex[d[i] >> 4]);
    s.push_back(kHex[d[i] & 15]);
  }
  return s;
}

class Sha {
 public:
  explicit Sha(const EVP_MD* md) : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, md, nullptr) != 1)
      throw Error(Status::Unsupported("OpenSSL cannot initialise the SHA digest"));
  }
  ~Sha() { EVP_MD_CTX_free(ctx_); }
  Sha(const Sha&) = delete;
  Sha& operator=(const Sha&) = delete;
  void Update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  std::string Hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(ctx_, out, &n);
    return layercache::Hex(out, n);
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

bool IsHex(const std::string& s, size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// sha256 (LFS) or git blob id of a file's content, streamed.
Status HashFile(RepoFile* f) {
  std::ifstream in(f->local_path, std::ios::binary);
  if (!in) return Status::IOError("cannot read " + f->local_path);
  Sha sha(f->lfs ? EVP_sha256() : EVP_sha1());
  if (!f->lfs) sha.Update("blob " + std::to_string(f->size) + std::string(1, '\0'));
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<size_t>(in.gcount());
    sha.Update(buf.data(), n);
    total += n;
  }
  if (in.bad() || total != f->size)
    return Status::IOError(f->local_path + " changed or could not be read while hashing");
  if (f->lfs) {
    f->sha256 = sha.Hex();
  } else {
    f->blob_id = sha.Hex();
  }
  return Status::OK();
}

void FinishLfs(RepoFile* f) {
  f->pointer = LfsPointer(f->sha256, f->size);
  f->blob_id = GitBlobSha1Hex(f->pointer);
}

// Git tree ids of every directory, bottom-up, as git computes them.
void ComputeTrees(RepoSnapshot* s) {
  struct Entry {
    std::string name;
    bool dir;
    std::string id;
  };
  std::map<std::string, std::vector<Entry>> dirs;  // dir -> entries
  dirs[""];
  for (const auto& [path, f] : s->files) {
    std::string p = path;
    size_t slash = p.rfind('/');
    dirs[slash == std::string::npos ? "" : p.substr(0, slash)].push_back(
        {slash == std::string::npos ? p : p.substr(slash + 1), false, f.blob_id});
    while (slash != std::string::npos) {
      p = p.substr(0, slash);
      slash = p.rfind('/');
      const std::string parent = slash == std::string::npos ? "" : p.substr(0, slash);
      const std::string name = slash == std::string::npos ? p : p.substr(slash + 1);
      auto& v = dirs[parent];
      if (std::none_of(v.begin(), v.end(), [&](const Entry& e) { return e.dir && e.name == name; }))
        v.push_back({name, true, ""});
      dirs[p];
    }
  }
  // Deepest directories first (longer paths have more '/').
  std::vector<std::string> order;
  for (const auto& [d, v] : dirs) order.push_back(d);
  std::sort(order.begin(), order.end(), [](const std::string& a, const std::string& b) {
    const auto da = a.empty() ? 0 : std::count(a.begin(), a.end(), '/') + 1;
    const auto db = b.empty() ? 0 : std::count(b.begin(), b.end(), '/') + 1;
    return da > db;
  });
  for (const std::string& d : order) {
    auto& entries = dirs[d];
    for (auto& e : entries)
      if (e.dir) e.id = s->tree_ids[d.empty() ? e.name : d + "/" + e.name];
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return (a.dir ? a.name + "/" : a.name) < (b.dir ? b.name + "/" : b.name);
    });
    std::string body;
    for (const auto& e : entries)
      body += (e.dir ? "40000 " : "100644 ") + e.name + std::string(1, '\0') + Unhex(e.id);
    Sha sha(EVP_sha1());
    sha.Update("tree " + std::to_string(body.size()) + std::string(1, '\0'));
    sha.Update(body);
    s->tree_ids[d] = sha.Hex();
  }
}

// Walks `dir` (following symlinks), calling add(relative path, entry).
template <class F>
Status Walk(const std::string& dir, F add) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::NotFound(dir + " is not a directory");
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();  // "m/" lists like "m"
  const fs::path root = fs::path(d).lexically_normal();
  fs::recursive_directory_iterator it(root, fs::directory_options::follow_directory_symlink, ec);
  if (ec) return Status::IOError("cannot list " + dir + ": " + ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return Status::IOError("cannot list " + dir + ": " + ec.message());
    // Lexically: fs::relative would resolve a snapshot's symlink to its blob.
    const std::string r = it->path().lexically_relative(root).generic_string();
    if (r.empty() || r == "." || r.rfind("..", 0) == 0)
      return Status::IOError("cannot list " + dir + ": unexpected entry " + it->path().string());
    if (r == ".git" || r.rfind(".git/", 0) == 0 || r == ".cache" || r.rfind(".cache/", 0) == 0) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec)) continue;  // directories, broken links, special files
    if (Status s = add(r, *it); !s.ok()) return s;
  }
  return Status::OK();
}

int64_t MtimeOf(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_mtime) : 0;
}

}  // namespace

bool IsLfsFile(const std::string& path, uint64_t size) {
  if (size > (10u << 20)) return true;
  static const char* kExt[] = {
      ".7z",      ".arrow",   ".bin",    ".bz2",     ".ckpt", ".ftz", ".gz",   ".h5",
      ".joblib",  ".mlmodel", ".model",  ".msgpack", ".npy",  ".npz", ".onnx", ".ot",
      ".parquet", ".pb",      ".pickle", ".pkl",     ".pt",   ".pth", ".rar",  ".safetensors",
      ".tar",     ".tflite",  ".tgz",    ".wasm",    ".xz",   ".zip", ".zst",  ".gguf"};
  const std::string name =
      path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  for (const char* e : kExt) {
    const std::string ext = e;
    if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
      return true;
  }
  return name.find("tfevents") != std::string::npos || name.find(".tar.") != std::string::npos ||
         name.find(".lfs.") != std::string::npos || path.rfind("saved_model/", 0) == 0;
}

std::string LfsPointer(const std::string& sha256, uint64_t size) {
  return "version https://git-lfs.github.com/spec/v1\noid sha256:" + sha256 + "\nsize " +
         std::to_string(size) + "\n";
}

Result<std::shared_ptr<RepoSnapshot>> RepoSnapshot::FromDirectory(const std::string& dir,
                                                                  const std::string& commit) {
  auto s = std::make_shared<RepoSnapshot>();
  Status st = Walk(dir, [&](const std::string& rel, const fs::directory_entry& e) -> Status {
    RepoFile f;
    f.path = rel;
    f.local_path = e.path().string();
    std::error_code ec;
    f.size = e.file_size(ec);
    if (ec) return Status::IOError("cannot stat " + f.local_path + ": " + ec.message());
    f.lfs = IsLfsFile(rel, f.size);
    if (Status h = HashFile(&f); !h.ok()) return h;
    if (f.lfs) FinishLfs(&f);
    s->mtime = std::max(s->mtime, MtimeOf(f.local_path));
    s->files[rel] = std::move(f);
    return Status::OK();
  });
  if (!st.ok()) return st;
  ComputeTrees(s.get());
  s->commit = commit;
  if (s->commit.empty()) {
    // A stable id for the directory's content, shaped like a commit id.
    Sha sha(EVP_sha1());
    sha.Update("layercache directory snapshot\ntree " + s->tree_ids[""] + "\n");
    s->commit = sha.Hex();
  }
  return s;
}

Result<std::shared_ptr<RepoSnapshot>> RepoSnapshot::FromHfSnapshot(const std::string& dir,
                                                                   const std::string& commit) {
  auto s = std::make_shared<RepoSnapshot>();
  s->commit = commit;
  // Files must stay inside the repository's folder (<repo>/snapshots/<commit>/
  // -> <repo>/blobs/): a link elsewhere in a shared cache is not served.
  std::error_code rec;
  const std::string repo_root = fs::canonical(fs::path(dir) / ".." / "..", rec).string() + "/";
  if (rec) return Status::IOError("cannot resolve " + dir + ": " + rec.message());
  Status st = Walk(dir, [&](const std::string& rel, const fs::directory_entry& e) -> Status {
    RepoFile f;
    f.path = rel;
    std::error_code ec;
    const std::string real = fs::canonical(e.path(), ec).string();
    if (ec || real.compare(0, repo_root.size(), repo_root) != 0) return Status::OK();
    f.local_path = real;  // pinned: a link changed later does not change what is served
    f.size = e.file_size(ec);
    if (ec) return Status::IOError("cannot stat " + f.local_path + ": " + ec.message());
    std::string blob;
    if (e.is_symlink(ec)) blob = fs::read_symlink(e.path(), ec).filename().string();
    if (IsHex(blob, 64)) {
      f.lfs = true;
      f.sha256 = blob;
    } else if (IsHex(blob, 40)) {
      f.lfs = false;
      f.blob_id = blob;
    } else {
      f.lfs = IsLfsFile(rel, f.size);
      if (Status h = HashFile(&f); !h.ok()) return h;
    }
    if (f.lfs) FinishLfs(&f);
    s->mtime = std::max(s->mtime, MtimeOf(f.local_path));
    s->files[rel] = std::move(f);
    return Status::OK();
  });
  if (!st.ok()) return st;
  ComputeTrees(s.get());
  return s;
}

}  // namespace layercache
