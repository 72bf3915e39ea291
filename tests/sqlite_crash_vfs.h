// A SQLite VFS for the crash test: it forwards to the default VFS and counts
// every write, truncate, sync and delete SQLite makes as one mutating
// operation of a FaultInjectionEnv, so that the env's CrashAt(N) can kill
// the process inside SQLite's own transactions (index updates and rebuilds),
// not only at the cache's file operations.
#pragma once

#include <memory>
#include <string>

#include "fault_env.h"
#include "sqlite_shim_vfs.h"

namespace layercache::testing {

// Registers the VFS as SQLite's default for this process; databases opened
// afterwards go through it. Call once, in the process to be crashed.
void InstallCrashingSqliteVfs(FaultInjectionEnv* env);

// Registers such a VFS for `env` alone (not as the default) and makes it
// `env`'s sqlite_vfs(), so that a cache given `env` (LayerCacheOptions::env)
// opens its index through it; undone at destruction, which must come after
// the cache is closed.
class ScopedFaultSqliteVfs {
 public:
  explicit ScopedFaultSqliteVfs(FaultInjectionEnv* env);
  ~ScopedFaultSqliteVfs();
  ScopedFaultSqliteVfs(const ScopedFaultSqliteVfs&) = delete;
  ScopedFaultSqliteVfs& operator=(const ScopedFaultSqliteVfs&) = delete;

 private:
  FaultInjectionEnv* env_;
  std::string name_;
  std::unique_ptr<SqliteShimVfs> vfs_;
};

}  // namespace layercache::testing
