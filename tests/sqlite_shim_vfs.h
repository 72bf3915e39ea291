// A SQLite VFS that forwards every call to the default VFS, for tests that
// watch what SQLite does to its files: the crash test counts SQLite's writes
// as crash points (sqlite_crash_vfs.cc), the power-loss test journals them
// (power_loss_env.cc). A test derives from SqliteShimVfs, overrides the calls
// it watches (each default forwards) and registers it as the process's
// default VFS; databases opened afterwards go through it.
#pragma once

#include <sqlite3.h>

namespace layercache::testing {

class SqliteShimVfs {
 public:
  // One file opened through the shim. `state` belongs to the derived class:
  // set it in OnOpen, free it in OnClose.
  struct File {
    sqlite3_file base;
    sqlite3_file* real;
    void* state;
    SqliteShimVfs* shim;  // the shim it was opened through
  };

  virtual ~SqliteShimVfs() = default;

  // Registers this object under `name` (which must outlive it), as SQLite's
  // default VFS when `make_default` (one such shim per process; call once),
  // else for databases opened with that VFS name (Env::sqlite_vfs()).
  void Register(const char* name, bool make_default = true);
  // Undoes a Register(); no database may be open through it.
  void Unregister();

  // Called after the real open (whatever its result); `existed`: the file was
  // there before.
  virtual void OnOpen(File* f, const char* name, int flags, bool existed, int rc) {
    (void)f, (void)name, (void)flags, (void)existed, (void)rc;
  }
  virtual void OnClose(File* f) { (void)f; }
  virtual int Write(File* f, const void* p, int n, sqlite3_int64 off) {
    return f->real->pMethods->xWrite(f->real, p, n, off);
  }
  virtual int Truncate(File* f, sqlite3_int64 size) {
    return f->real->pMethods->xTruncate(f->real, size);
  }
  virtual int Sync(File* f, int flags) { return f->real->pMethods->xSync(f->real, flags); }
  virtual int Fetch(File* f, sqlite3_int64 off, int n, void** out) {
    return f->real->pMethods->xFetch(f->real, off, n, out);
  }
  virtual int Delete(const char* name, int sync_dir) {
    return base_->xDelete(base_, name, sync_dir);
  }

 protected:
  sqlite3_vfs* base() const { return base_; }

 private:
  sqlite3_vfs* base_ = nullptr;
  sqlite3_vfs vfs_{};
};

}  // namespace layercache::testing
