#include "sqlite_shim_vfs.h"

#include <unistd.h>

namespace layercache::testing {
namespace {

SqliteShimVfs* g_shim = nullptr;
sqlite3_vfs* g_base = nullptr;

using File = SqliteShimVfs::File;
File* Shim(sqlite3_file* f) { return reinterpret_cast<File*>(f); }
sqlite3_file* Real(sqlite3_file* f) { return Shim(f)->real; }

int Close(sqlite3_file* f) {
  g_shim->OnClose(Shim(f));
  return Real(f)->pMethods->xClose(Real(f));
}
int Read(sqlite3_file* f, void* p, int n, sqlite3_int64 off) {
  return Real(f)->pMethods->xRead(Real(f), p, n, off);
}
int Write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
  return g_shim->Write(Shim(f), p, n, off);
}
int Truncate(sqlite3_file* f, sqlite3_int64 size) { return g_shim->Truncate(Shim(f), size); }
int Sync(sqlite3_file* f, int flags) { return g_shim->Sync(Shim(f), flags); }
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
  return g_shim->Fetch(Shim(f), off, n, out);
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

int VfsOpen(sqlite3_vfs*, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  File* shim = Shim(f);
  shim->real = reinterpret_cast<sqlite3_file*>(shim + 1);
  shim->state = nullptr;
  const bool existed = name != nullptr && ::access(name, F_OK) == 0;
  const int rc = g_base->xOpen(g_base, name, shim->real, flags, out_flags);
  shim->base.pMethods = shim->real->pMethods != nullptr ? &kMethods : nullptr;
  g_shim->OnOpen(shim, name, flags, existed, rc);
  return rc;
}
int VfsDelete(sqlite3_vfs*, const char* name, int sync_dir) {
  return g_shim->Delete(name, sync_dir);
}
int VfsAccess(sqlite3_vfs*, const char* name, int flags, int* out) {
  return g_base->xAccess(g_base, name, flags, out);
}
int VfsFullPathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return g_base->xFullPathname(g_base, name, n, out);
}

}  // namespace

void SqliteShimVfs::Register(const char* name) {
  g_shim = this;
  g_base = base_ = sqlite3_vfs_find(nullptr);
  vfs_ = *base_;
  vfs_.zName = name;
  vfs_.szOsFile = static_cast<int>(sizeof(File)) + base_->szOsFile;
  vfs_.xOpen = VfsOpen;
  vfs_.xDelete = VfsDelete;
  vfs_.xAccess = VfsAccess;
  vfs_.xFullPathname = VfsFullPathname;
  sqlite3_vfs_register(&vfs_, /*makeDflt=*/1);
}

}  // namespace layercache::testing
