#include "sqlite_crash_vfs.h"

#include "sqlite_shim_vfs.h"

namespace layercache::testing {
namespace {

// Each write, truncate, sync and delete is a crash point; SQLite sees an I/O
// error if the env injects one.
class CrashingVfs : public SqliteShimVfs {
 public:
  explicit CrashingVfs(FaultInjectionEnv* env) : env_(env) {}

  int Write(File* f, const void* p, int n, sqlite3_int64 off) override {
    if (int rc = Count("sqlite write"); rc != SQLITE_OK) return rc;
    return SqliteShimVfs::Write(f, p, n, off);
  }
  int Truncate(File* f, sqlite3_int64 size) override {
    if (int rc = Count("sqlite truncate"); rc != SQLITE_OK) return rc;
    return SqliteShimVfs::Truncate(f, size);
  }
  int Sync(File* f, int flags) override {
    if (int rc = Count("sqlite sync"); rc != SQLITE_OK) return rc;
    return SqliteShimVfs::Sync(f, flags);
  }
  int Delete(const char* name, int sync_dir) override {
    if (int rc = Count("sqlite delete"); rc != SQLITE_OK) return rc;
    return SqliteShimVfs::Delete(name, sync_dir);
  }

 private:
  int Count(const char* what) {
    return env_->Mutate(FaultOp::kSqlite, what).ok() ? SQLITE_OK : SQLITE_IOERR;
  }
  FaultInjectionEnv* env_;
};

}  // namespace

void InstallCrashingSqliteVfs(FaultInjectionEnv* env) {
  static CrashingVfs* vfs = new CrashingVfs(env);  // lives as long as SQLite may call it
  vfs->Register("layercache-crash");
}

ScopedFaultSqliteVfs::ScopedFaultSqliteVfs(FaultInjectionEnv* env)
    : env_(env),
      name_("layercache-fault-" + std::to_string(reinterpret_cast<uintptr_t>(env))),
      vfs_(std::make_unique<CrashingVfs>(env)) {
  vfs_->Register(name_.c_str(), /*make_default=*/false);
  env_->set_sqlite_vfs(name_.c_str());
}

ScopedFaultSqliteVfs::~ScopedFaultSqliteVfs() {
  env_->set_sqlite_vfs(nullptr);
  vfs_->Unregister();
}

}  // namespace layercache::testing
