// PowerLossEnv: a test Env that simulates losing power, in the manner of
// RocksDB's FaultInjectionTestFS. It forwards every call to the real POSIX
// Env and journals, for the files under one directory (the cache), every
// change not yet made durable:
//
//   - file data (appends of the cache's writers, SQLite's writes and
//     truncations) until an fsync of that file;
//   - creations, renames and deletions until an fsync of the directory that
//     holds the name (a rename: of either directory, as a journaling file
//     system commits it whole).
//
// SQLite's files go through a VFS shim that feeds the same journal
// (InstallPowerLossSqliteVfs); it models the unix VFS's own directory fsync
// (the first sync of a newly created journal or WAL syncs its directory).
//
// At the Nth mutating operation (CrashAt(N)), before that operation runs, the
// power goes: the directory is rewritten to hold only what was durable plus,
// in "random prefix" mode, the first K journaled changes (the last of them
// possibly torn: a random prefix of its bytes), as a disk that wrote back
// some of its queue before dying; then the process is SIGKILLed. The next
// process sees exactly what a machine rebooting after the power loss would.
//
// Model limits: directories themselves (mkdir) count as durable at once;
// SQLite's -shm file is dropped (SQLite rebuilds it from the WAL); writes
// not going through the Env or the VFS (none in the cache) are not seen.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "io/env.h"

namespace layercache::testing {

class PowerLossEnv : public EnvWrapper {
 public:
  enum class Mode { kDropUnsynced, kRandomPrefix };

  // Journals changes under `root` (an absolute path), whose current
  // contents count as durable.
  explicit PowerLossEnv(const std::string& root);

  // Lose power just before the Nth mutating operation (1-based; 0: never),
  // keeping what `mode` says, with `seed` choosing the prefix.
  void CrashAt(int n, Mode mode, uint64_t seed) {
    crash_at_ = n;
    mode_ = mode;
    seed_ = seed;
  }
  int mutating_ops() const { return ops_; }

  Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) override {
    return base_->OpenForRead(path);
  }
  Result<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status RemoveDir(const std::string& path) override { return base_->RemoveDir(path); }
  Status SyncDir(const std::string& path) override;
  Status CreateDirs(const std::string& path) override { return base_->CreateDirs(path); }
  Result<std::vector<std::string>> ListDir(const std::string& dir) override {
    return base_->ListDir(dir);
  }
  Result<FileStat> Stat(const std::string& path) override { return base_->Stat(path); }

  // Journal entry points, also used by the SQLite shim. `id` names a file
  // (an inode) for as long as the env lives; 0 is a file outside the root.
  uint64_t OnOpen(const std::string& path, bool created);  // returns the id
  void OnWrite(uint64_t id, uint64_t offset, const void* data, size_t n);
  void OnTruncate(uint64_t id, uint64_t size);
  void OnSyncFile(uint64_t id);
  void OnSyncDir(const std::string& dir);
  void OnRemove(const std::string& path);
  void OnRename(const std::string& from, const std::string& to);
  // Counts a mutating operation; loses power if it is the chosen one.
  void Tick();
  bool Tracked(const std::string& path) const;

 private:
  enum class Kind { kCreate, kWrite, kTruncate, kRename, kRemove, kSyncFile, kSyncDir };
  struct Op {
    Kind kind;
    uint64_t id = 0;
    std::string path, path2;  // kCreate/kRemove: path; kRename: from, to
    uint64_t offset = 0;
    std::string data;
  };
  [[noreturn]] void LosePower();

  Env* base_ = Env::Default();
  std::string root_;
  std::mutex mu_;
  std::map<std::string, uint64_t> initial_names_, names_;  // path -> id
  std::map<uint64_t, std::string> initial_data_;
  std::vector<Op> journal_;
  uint64_t next_id_ = 1;
  int ops_ = 0;
  int crash_at_ = 0;
  Mode mode_ = Mode::kDropUnsynced;
  uint64_t seed_ = 0;
};

// Registers a VFS forwarding to SQLite's default one that journals into
// `env` (and counts SQLite's writes, truncations, syncs and deletions as
// crash points); it becomes the process's default VFS.
void InstallPowerLossSqliteVfs(PowerLossEnv* env);

}  // namespace layercache::testing
