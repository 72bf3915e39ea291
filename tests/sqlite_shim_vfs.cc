#include "sqlite_shim_vfs.h"

#include <unistd.h>

namespace layercache::testing {
namespace {

sqlite3_vfs* g_base = nullptr;  // the VFS the shims forward to

using File = SqliteShimVfs::File;
File* Shim(sqlite3_file* f) { return reinterpret_cast<File*>(f); }
sqlite3_file* Real(sqlite3_file* f) { return Shim(f)->real; }

int Close(sqlite3_file* f) {
  Shim(f)->shim->OnClose(Shim(f));
  return Real(f)->pMethods->xClose(Real(f));
}
int Read(sqlite3_file* f, void* p, int n, sqlite3_int64 off) {
  return Real(f)->pMethods->xRead(Real(f), p, n, off);
}
int Write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
  return Shim(f)->shim->Write(Shim(f), p, n, off);
}
int Truncate(sqlite3_file* f, sqlite3_int64 size) { return Shim(f)->shim->Truncate(Shim(f), size); }
int Sync(sqlite3_file* f, int flags) { return Shim(f)->shim->Sync(Shim(f), flags); }
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
  return Shim(f)->shim->Fetch(Shim(f), off, n, out);
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

SqliteShimVfs* Self(sqlite3_vfs* vfs) { return static_cast<SqliteShimVfs*>(vfs->pAppData); }

int VfsOpen(sqlite3_vfs* vfs, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  File* shim = Shim(f);
  shim->real = reinterpret_cast<sqlite3_file*>(shim + 1);
  shim->state = nullptr;
  shim->shim = Self(vfs);
  const bool existed = name != nullptr && ::access(name, F_OK) == 0;
  const int rc = g_base->xOpen(g_base, name, shim->real, flags, out_flags);
  shim->base.pMethods = shim->real->pMethods != nullptr ? &kMethods : nullptr;
  shim->shim->OnOpen(shim, name, flags, existed, rc);
  return rc;
}
int VfsDelete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  return Self(vfs)->Delete(name, sync_dir);
}
int VfsAccess(sqlite3_vfs*, const char* name, int flags, int* out) {
  return g_base->xAccess(g_base, name, flags, out);
}
int VfsFullPathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return g_base->xFullPathname(g_base, name, n, out);
}

}  // namespace

void SqliteShimVfs::Register(const char* name, bool make_default) {
  if (g_base == nullptr) g_base = sqlite3_vfs_find(nullptr);
  base_ = g_base;
  vfs_ = *base_;
  vfs_.pAppData = this;
  vfs_.zName = name;
  vfs_.szOsFile = static_cast<int>(sizeof(File)) + base_->szOsFile;
  vfs_.xOpen = VfsOpen;
  vfs_.xDelete = VfsDelete;
  vfs_.xAccess = VfsAccess;
  vfs_.xFullPathname = VfsFullPathname;
  sqlite3_vfs_register(&vfs_, make_default ? 1 : 0);
}

void SqliteShimVfs::Unregister() { sqlite3_vfs_unregister(&vfs_); }

}  // namespace layercache::testing
