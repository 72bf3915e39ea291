#include "power_loss_env.h"

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "sqlite_shim_vfs.h"

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

PowerLossEnv::PowerLossEnv(const std::string& root)
    : EnvWrapper(Env::Default()), root_(Normal(root)) {
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

// SQLite's writes, truncations and deletions of tracked files are journaled;
// its syncs make them durable in the journal (the real fsync is skipped: the
// journal decides what survives).
class PowerLossVfs : public SqliteShimVfs {
 public:
  explicit PowerLossVfs(PowerLossEnv* env) : env_(env) {}

  struct State {
    uint64_t id = 0;
    bool dir_sync_pending = false;  // the unix VFS syncs the directory at the first sync
    std::string dir;
  };

  void OnOpen(File* f, const char* name, int flags, bool existed, int rc) override {
    if (rc != SQLITE_OK || name == nullptr || !env_->Tracked(name)) return;
    auto* st = new State;
    st->id = env_->OnOpen(name, !existed);
    const bool create = (flags & SQLITE_OPEN_CREATE) != 0;
    const bool journal =
        (flags & (SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_SUPER_JOURNAL | SQLITE_OPEN_WAL)) != 0;
    st->dir_sync_pending = create && journal;
    st->dir = fs::path(name).parent_path().string();
    f->state = st;
  }
  void OnClose(File* f) override {
    delete static_cast<State*>(f->state);
    f->state = nullptr;
  }
  int Write(File* f, const void* p, int n, sqlite3_int64 off) override {
    const uint64_t id = Id(f);
    if (id != 0) env_->Tick();
    const int rc = SqliteShimVfs::Write(f, p, n, off);
    if (rc == SQLITE_OK) env_->OnWrite(id, static_cast<uint64_t>(off), p, static_cast<size_t>(n));
    return rc;
  }
  int Truncate(File* f, sqlite3_int64 size) override {
    const uint64_t id = Id(f);
    if (id != 0) env_->Tick();
    const int rc = SqliteShimVfs::Truncate(f, size);
    if (rc == SQLITE_OK) env_->OnTruncate(id, static_cast<uint64_t>(size));
    return rc;
  }
  int Sync(File* f, int flags) override {
    auto* st = static_cast<State*>(f->state);
    if (st == nullptr || st->id == 0) return SqliteShimVfs::Sync(f, flags);
    env_->Tick();
    env_->OnSyncFile(st->id);
    if (st->dir_sync_pending) {
      st->dir_sync_pending = false;
      env_->OnSyncDir(st->dir);
    }
    return SQLITE_OK;
  }
  int Fetch(File*, sqlite3_int64, int, void** out) override {
    // No memory-mapped reads: every byte SQLite reads is one it read through us.
    *out = nullptr;
    return SQLITE_OK;
  }
  int Delete(const char* name, int sync_dir) override {
    const bool tracked = env_->Tracked(name);
    if (tracked) env_->Tick();
    const int rc = SqliteShimVfs::Delete(name, sync_dir);
    if (rc == SQLITE_OK && tracked) {
      env_->OnRemove(name);
      if (sync_dir) env_->OnSyncDir(fs::path(name).parent_path().string());
    }
    return rc;
  }

 private:
  static uint64_t Id(File* f) {
    return f->state != nullptr ? static_cast<State*>(f->state)->id : 0;
  }
  PowerLossEnv* env_;
};

}  // namespace

void InstallPowerLossSqliteVfs(PowerLossEnv* env) {
  static PowerLossVfs* vfs = new PowerLossVfs(env);  // lives as long as SQLite may call it
  vfs->Register("layercache-power-loss");
}

}  // namespace layercache::testing
