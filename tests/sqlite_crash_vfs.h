// A SQLite VFS for the crash test: it forwards to the default VFS and counts
// every write, truncate, sync and delete SQLite makes as one mutating
// operation of a FaultInjectionEnv, so that the env's CrashAt(N) can kill
// the process inside SQLite's own transactions (index updates and rebuilds),
// not only at the cache's file operations.
#pragma once

#include "fault_env.h"

namespace layercache::testing {

// Registers the VFS as SQLite's default for this process; databases opened
// afterwards go through it. Call once, in the process to be crashed.
void InstallCrashingSqliteVfs(FaultInjectionEnv* env);

}  // namespace layercache::testing
