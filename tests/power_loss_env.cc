#include "power_loss_env.h"

#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace layercache::testing {

namespace fs = std::filesystem;

namespace {

std::string Normal(const std::string& path) { return fs::path(path).lexically_normal().string(); }
std::string Parent(const std::string& path) { return fs::path(path).parent_path().string(); }
bool IsShm(const std::string& path) {
  return path.size() > 4 && path.compare(path.size() - 4, 4, "-shm") == 0;
}

class PowerLossFile : public WritableFile {
 public:
  PowerLossFile(PowerLossEnv* env, std::unique_ptr<WritableFile> base, uint64_t id)
      : env_(env), base_(std::move(base)), id_(id) {}
  Status Append(std::span<const std::byte> data) override {
    if (id_ != 0) env_->Tick();
    Status s = base_->Append(data);
    if (s.ok() && id_ != 0) env_->OnWrite(id_, offset_, data.data(), data.size());
    offset_ += data.size();
    return s;
  }
  Status Sync() override {
    if (id_ == 0) return base_->Sync();
    // Durability is the journal's business: the real fsync would only cost time.
    env_->Tick();
    env_->OnSyncFile(id_);
    return Status::OK();
  }
  Status Close() override { return base_->Close(); }

 private:
  PowerLossEnv* env_;
  std::unique_ptr<WritableFile> base_;
  uint64_t id_;
  uint64_t offset_ = 0;
};

}  // namespace

PowerLossEnv::PowerLossEnv(const std::string& root) : root_(Normal(root)) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file() || !Tracked(it->path().string())) continue;
    std::ifstream in(it->path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    const uint64_t id = next_id_++;
    initial_names_[Normal(it->path().string())] = id;
    initial_data_[id] = bytes.str();
  }
  names_ = initial_names_;
}

bool PowerLossEnv::Tracked(const std::string& path) const {
  const std::string p = Normal(path);
  return p.size() > root_.size() && p.compare(0, root_.size(), root_) == 0 &&
         p[root_.size()] == '/' && !IsShm(p);
}

void PowerLossEnv::Tick() {
  int n;
  {
    std::lock_guard lock(mu_);
    n = ++ops_;
  }
  if (n == crash_at_) LosePower();
}

uint64_t PowerLossEnv::OnOpen(const std::string& path, bool created) {
  if (!Tracked(path)) return 0;
  const std::string p = Normal(path);
  std::lock_guard lock(mu_);
  if (!created) {
    auto it = names_.find(p);
    if (it != names_.end()) return it->second;
  }
  const uint64_t id = next_id_++;
  names_[p] = id;
  journal_.push_back(Op{Kind::kCreate, id, p, "", 0, ""});
  return id;
}

void PowerLossEnv::OnWrite(uint64_t id, uint64_t offset, const void* data, size_t n) {
  if (id == 0) return;
  std::lock_guard lock(mu_);
  journal_.push_back(
      Op{Kind::kWrite, id, "", "", offset, std::string(static_cast<const char*>(data), n)});
}

void PowerLossEnv::OnTruncate(uint64_t id, uint64_t size) {
  if (id == 0) return;
  std::lock_guard lock(mu_);
  journal_.push_back(Op{Kind::kTruncate, id, "", "", size, ""});
}

void PowerLossEnv::OnSyncFile(uint64_t id) {
  if (id == 0) return;
  std::lock_guard lock(mu_);
  journal_.push_back(Op{Kind::kSyncFile, id, "", "", 0, ""});
}

void PowerLossEnv::OnSyncDir(const std::string& dir) {
  std::lock_guard lock(mu_);
  journal_.push_back(Op{Kind::kSyncDir, 0, Normal(dir), "", 0, ""});
}

void PowerLossEnv::OnRemove(const std::string& path) {
  if (!Tracked(path)) return;
  const std::string p = Normal(path);
  std::lock_guard lock(mu_);
  auto it = names_.find(p);
  if (it == names_.end()) return;
  journal_.push_back(Op{Kind::kRemove, it->second, p, "", 0, ""});
  names_.erase(it);
}

void PowerLossEnv::OnRename(const std::string& from, const std::string& to) {
  if (!Tracked(from) || !Tracked(to)) return;
  const std::string f = Normal(from), t = Normal(to);
  std::lock_guard lock(mu_);
  auto it = names_.find(f);
  if (it == names_.end()) return;
  const uint64_t id = it->second;
  names_.erase(it);
  names_[t] = id;
  journal_.push_back(Op{Kind::kRename, id, f, t, 0, ""});
}

Result<std::unique_ptr<WritableFile>> PowerLossEnv::CreateNew(const std::string& path) {
  const bool tracked = Tracked(path);
  if (tracked) Tick();
  auto file = base_->CreateNew(path);
  if (!file.ok()) return file.status();
  const uint64_t id = tracked ? OnOpen(path, /*created=*/true) : 0;
  return std::unique_ptr<WritableFile>(new PowerLossFile(this, std::move(*file), id));
}

Status PowerLossEnv::Rename(const std::string& from, const std::string& to) {
  if (Tracked(to)) Tick();
  Status s = base_->Rename(from, to);
  if (s.ok()) OnRename(from, to);
  return s;
}

Status PowerLossEnv::Remove(const std::string& path) {
  if (Tracked(path)) Tick();
  Status s = base_->Remove(path);
  if (s.ok()) OnRemove(path);
  return s;
}

Status PowerLossEnv::SyncDir(const std::string& path) {
  const bool tracked = Normal(path) == root_ || Tracked(path);
  if (!tracked) return base_->SyncDir(path);
  Tick();
  if (!base_->Stat(path).ok()) return base_->SyncDir(path);  // the same error
  OnSyncDir(path);
  return Status::OK();
}

void PowerLossEnv::LosePower() {
  std::lock_guard lock(mu_);
  const size_t n = journal_.size();
  std::mt19937_64 rng(seed_);
  const size_t keep = mode_ == Mode::kRandomPrefix ? rng() % (n + 1) : 0;
  // What a later fsync made durable: data by an fsync of its file, a name by
  // an fsync of its directory.
  std::vector<bool> durable(n, false);
  std::set<uint64_t> synced_files;
  std::set<std::string> synced_dirs;
  for (size_t i = n; i-- > 0;) {
    const Op& op = journal_[i];
    switch (op.kind) {
      case Kind::kSyncFile:
        synced_files.insert(op.id);
        break;
      case Kind::kSyncDir:
        synced_dirs.insert(op.path);
        break;
      case Kind::kWrite:
      case Kind::kTruncate:
        durable[i] = synced_files.count(op.id) != 0;
        break;
      case Kind::kCreate:
      case Kind::kRemove:
        durable[i] = synced_dirs.count(Parent(op.path)) != 0;
        break;
      case Kind::kRename:
        durable[i] =
            synced_dirs.count(Parent(op.path)) != 0 || synced_dirs.count(Parent(op.path2)) != 0;
        break;
    }
    if (i < keep) durable[i] = true;
  }
  // The first change not kept, when a write, may be torn.
  size_t torn_bytes = 0;
  if (mode_ == Mode::kRandomPrefix && keep < n && journal_[keep].kind == Kind::kWrite &&
      !durable[keep] && !journal_[keep].data.empty())
    torn_bytes = rng() % journal_[keep].data.size();
  std::map<std::string, uint64_t> names = initial_names_;
  std::map<uint64_t, std::string> data = initial_data_;
  for (size_t i = 0; i < n; ++i) {
    const Op& op = journal_[i];
    const bool torn = i == keep && torn_bytes > 0;
    if (!durable[i] && !torn) continue;
    switch (op.kind) {
      case Kind::kCreate:
        names[op.path] = op.id;
        data.try_emplace(op.id);
        break;
      case Kind::kWrite: {
        std::string& d = data[op.id];
        const size_t len = torn ? torn_bytes : op.data.size();
        if (d.size() < op.offset + len) d.resize(op.offset + len, '\0');
        std::memcpy(d.data() + op.offset, op.data.data(), len);
        break;
      }
      case Kind::kTruncate:
        data[op.id].resize(op.offset, '\0');
        break;
      case Kind::kRename: {
        auto it = names.find(op.path);
        if (it != names.end() && it->second == op.id) names.erase(it);
        names[op.path2] = op.id;
        break;
      }
      case Kind::kRemove: {
        auto it = names.find(op.path);
        if (it != names.end() && it->second == op.id) names.erase(it);
        break;
      }
      case Kind::kSyncFile:
      case Kind::kSyncDir:
        break;
    }
  }
  // The reboot: every file the journal knows is replaced by its durable
  // image; SQLite's shared-memory file goes (it lives in RAM); the rest (lock
  // files) stays.
  std::vector<fs::path> doomed;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    const std::string p = Normal(it->path().string());
    if (IsShm(p) || names_.count(p) != 0 || initial_names_.count(p) != 0 || names.count(p) != 0)
      doomed.push_back(it->path());
  }
  for (const fs::path& p : doomed) fs::remove(p, ec);
  for (const auto& [path, id] : names) {
    fs::create_directories(Parent(path), ec);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const std::string& bytes = data[id];
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  ::raise(SIGKILL);
  ::_exit(137);
}

// ---- SQLite ------------------------------------------------------------------

namespace {

PowerLossEnv* g_env = nullptr;
sqlite3_vfs* g_base = nullptr;
sqlite3_vfs g_vfs;

struct ShimFile {
  sqlite3_file base;
  sqlite3_file* real;
  uint64_t id;
  bool dir_sync_pending;  // the unix VFS syncs the directory at the first sync
  char* dir;
};

ShimFile* Shim(sqlite3_file* f) { return reinterpret_cast<ShimFile*>(f); }
sqlite3_file* Real(sqlite3_file* f) { return Shim(f)->real; }

int Close(sqlite3_file* f) {
  std::free(Shim(f)->dir);
  Shim(f)->dir = nullptr;
  return Real(f)->pMethods->xClose(Real(f));
}
int Read(sqlite3_file* f, void* p, int n, sqlite3_int64 off) {
  return Real(f)->pMethods->xRead(Real(f), p, n, off);
}
int Write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
  if (Shim(f)->id != 0) g_env->Tick();
  const int rc = Real(f)->pMethods->xWrite(Real(f), p, n, off);
  if (rc == SQLITE_OK)
    g_env->OnWrite(Shim(f)->id, static_cast<uint64_t>(off), p, static_cast<size_t>(n));
  return rc;
}
int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  if (Shim(f)->id != 0) g_env->Tick();
  const int rc = Real(f)->pMethods->xTruncate(Real(f), size);
  if (rc == SQLITE_OK) g_env->OnTruncate(Shim(f)->id, static_cast<uint64_t>(size));
  return rc;
}
int Sync(sqlite3_file* f, int flags) {
  if (Shim(f)->id == 0) return Real(f)->pMethods->xSync(Real(f), flags);
  g_env->Tick();
  const int rc = SQLITE_OK;  // the journal decides what is durable
  {
    g_env->OnSyncFile(Shim(f)->id);
    if (Shim(f)->dir_sync_pending && Shim(f)->id != 0) {
      Shim(f)->dir_sync_pending = false;
      g_env->OnSyncDir(Shim(f)->dir);
    }
  }
  return rc;
}
int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  return Real(f)->pMethods->xFileSize(Real(f), size);
}
int Lock(sqlite3_file* f, int level) { return Real(f)->pMethods->xLock(Real(f), level); }
int Unlock(sqlite3_file* f, int level) { return Real(f)->pMethods->xUnlock(Real(f), level); }
int CheckReservedLock(sqlite3_file* f, int* out) {
  return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
}
int FileControl(sqlite3_file* f, int op, void* arg) {
  return Real(f)->pMethods->xFileControl(Real(f), op, arg);
}
int SectorSize(sqlite3_file* f) { return Real(f)->pMethods->xSectorSize(Real(f)); }
int DeviceCharacteristics(sqlite3_file* f) {
  return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
}
int ShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  return Real(f)->pMethods->xShmMap(Real(f), region, size, extend, out);
}
int ShmLock(sqlite3_file* f, int offset, int n, int flags) {
  return Real(f)->pMethods->xShmLock(Real(f), offset, n, flags);
}
void ShmBarrier(sqlite3_file* f) { Real(f)->pMethods->xShmBarrier(Real(f)); }
int ShmUnmap(sqlite3_file* f, int del) { return Real(f)->pMethods->xShmUnmap(Real(f), del); }
int Fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
  // No memory-mapped reads: every byte SQLite reads is one it read through us.
  (void)f, (void)off, (void)n;
  *out = nullptr;
  return SQLITE_OK;
}
int Unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
  return Real(f)->pMethods->xUnfetch(Real(f), off, p);
}

const sqlite3_io_methods kMethods = {3,
                                     Close,
                                     Read,
                                     Write,
                                     Truncate,
                                     Sync,
                                     FileSize,
                                     Lock,
                                     Unlock,
                                     CheckReservedLock,
                                     FileControl,
                                     SectorSize,
                                     DeviceCharacteristics,
                                     ShmMap,
                                     ShmLock,
                                     ShmBarrier,
                                     ShmUnmap,
                                     Fetch,
                                     Unfetch};

int Open(sqlite3_vfs*, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  auto* shim = Shim(f);
  shim->real = reinterpret_cast<sqlite3_file*>(shim + 1);
  shim->id = 0;
  shim->dir_sync_pending = false;
  shim->dir = nullptr;
  const bool existed = name != nullptr && ::access(name, F_OK) == 0;
  const int rc = g_base->xOpen(g_base, name, shim->real, flags, out_flags);
  shim->base.pMethods = shim->real->pMethods != nullptr ? &kMethods : nullptr;
  if (rc == SQLITE_OK && name != nullptr && g_env->Tracked(name)) {
    shim->id = g_env->OnOpen(name, !existed);
    const bool create = (flags & SQLITE_OPEN_CREATE) != 0;
    const bool journal =
        (flags & (SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_SUPER_JOURNAL | SQLITE_OPEN_WAL)) != 0;
    shim->dir_sync_pending = create && journal;
    shim->dir = ::strdup(fs::path(name).parent_path().c_str());
  }
  return rc;
}
int Delete(sqlite3_vfs*, const char* name, int sync_dir) {
  const bool tracked = g_env->Tracked(name);
  if (tracked) g_env->Tick();
  const int rc = g_base->xDelete(g_base, name, sync_dir);
  if (rc == SQLITE_OK && tracked) {
    g_env->OnRemove(name);
    if (sync_dir) g_env->OnSyncDir(fs::path(name).parent_path().string());
  }
  return rc;
}
int Access(sqlite3_vfs*, const char* name, int flags, int* out) {
  return g_base->xAccess(g_base, name, flags, out);
}
int FullPathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return g_base->xFullPathname(g_base, name, n, out);
}

}  // namespace

void InstallPowerLossSqliteVfs(PowerLossEnv* env) {
  g_env = env;
  g_base = sqlite3_vfs_find(nullptr);
  g_vfs = *g_base;
  g_vfs.zName = "layercache-power-loss";
  g_vfs.szOsFile = static_cast<int>(sizeof(ShimFile)) + g_base->szOsFile;
  g_vfs.xOpen = Open;
  g_vfs.xDelete = Delete;
  g_vfs.xAccess = Access;
  g_vfs.xFullPathname = FullPathname;
  sqlite3_vfs_register(&g_vfs, /*makeDflt=*/1);
}

}  // namespace layercache::testing
