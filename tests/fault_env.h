// FaultInjectionEnv: a test Env over the real POSIX one that fails on command
// (ENOSPC, EIO, short writes and reads, refused or corrupt mappings, lock
// failures) or kills the process at its Nth mutating operation, in the manner
// of RocksDB's FaultInjectionTestFS. It covers every way the cache touches a
// file: the three read paths of entries (plain read(), O_DIRECT, mappings),
// writes, renames, removals, lock files and, through a SQLite VFS that
// Env::sqlite_vfs() names (ScopedFaultSqliteVfs, sqlite_crash_vfs.h), the
// index.
#pragma once

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <mutex>
#include <string>

#include "io/env.h"

namespace layercache::testing {

enum class FaultOp {
  kNone,
  kCreate,
  kAppend,
  kShortAppend,
  kSync,
  kRename,
  kSyncDir,
  kRead,  // plain reads (RandomAccessFile::Read)
  kRemove,
  kSqlite,  // a write, truncate, sync or delete by SQLite (sqlite_crash_vfs.h)
  // Files seem to end halfway: a plain read past the half fails as a short
  // file does, an O_DIRECT read stops there, populating a mapping past it
  // fails.
  kShortRead,
  kDirectRead,  // O_DIRECT reads (RandomAccessFile::ReadDirect)
  kMapRead,     // reading a mapping's pages in (RandomAccessFile::Populate)
  kMapRefused,  // mappings cannot be made (the reader must read instead)
  kMapCorrupt,  // a mapping shows one flipped byte (a bad page under it)
  kLockOpen,    // opening a lock file
  kLock,        // taking a lock on an open lock file
};

// What CachedPages answers: the truth, or a forced answer that steers the
// entry reader (DiskReadMode::kAuto) onto one path.
enum class Residency {
  kReal,
  kNone,     // nothing cached: chunks are read with O_DIRECT
  kAll,      // everything cached: entries are mapped (copied out of a mapping)
  kUnknown,  // cannot tell (-1)
};

class FaultInjectionEnv : public EnvWrapper {
 public:
  FaultInjectionEnv() : EnvWrapper(Env::Default()) {}

  // Fail every `op` with `err` (ENOSPC, EIO, ...) until Clear(); only on
  // paths containing `path_part` when it is not empty.
  void FailOn(FaultOp op, int err, const std::string& path_part = "") {
    {
      std::lock_guard lock(mu_);
      path_part_ = path_part;
    }
    fail_errno_ = err;
    fail_op_ = op;
  }
  void Clear() { fail_op_ = FaultOp::kNone; }
  void SetResidency(Residency r) { residency_ = r; }
  // Files offer only plain reads: no residency, no O_DIRECT, no mapping.
  void PlainReadsOnly(bool on) { plain_only_ = on; }
  // SIGKILL this process at the Nth mutating operation (1-based; 0: never).
  void CrashAt(int n) { crash_at_ = n; }
  int mutating_ops() const { return ops_; }
  int faults_injected() const { return injected_; }
  // Reads and mappings that reached the real files, by path.
  uint64_t plain_reads() const { return plain_reads_; }
  uint64_t direct_reads() const { return direct_reads_; }
  uint64_t mappings() const { return mappings_; }
  uint64_t map_reads() const { return map_reads_; }
  uint64_t locks() const { return locks_; }

  Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) override;
  Result<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) override;
  Status Rename(const std::string& from, const std::string& to) override {
    if (Status s = Mutate(FaultOp::kRename, "rename " + from); !s.ok()) return s;
    return target()->Rename(from, to);
  }
  Status Remove(const std::string& path) override {
    if (Status s = Mutate(FaultOp::kRemove, "remove " + path); !s.ok()) return s;
    return target()->Remove(path);
  }
  Status SyncDir(const std::string& path) override {
    if (Status s = Mutate(FaultOp::kSyncDir, "fsync " + path); !s.ok()) return s;
    return target()->SyncDir(path);
  }
  Result<std::unique_ptr<FileLockHandle>> LockFile(const std::string& path, uint64_t offset,
                                                   uint64_t length, bool wait,
                                                   bool create) override;
  const char* sqlite_vfs() const override { return sqlite_vfs_.load(); }
  void set_sqlite_vfs(const char* name) { sqlite_vfs_ = name; }

  // Counts a mutating operation (crashing if it is the chosen one) and fails
  // it if `op` is the injected fault.
  Status Mutate(FaultOp op, const std::string& what) {
    if (++ops_ == crash_at_) ::raise(SIGKILL);
    return Inject(op, what);
  }
  // Fails a non-mutating operation (a read, a lock) if `op` is the injected
  // fault for `what`.
  Status Inject(FaultOp op, const std::string& what) {
    if (!Failing(op, what)) return Status::OK();
    ++injected_;
    return ErrnoStatus("injected fault: " + what, fail_errno_);
  }
  bool Failing(FaultOp op, const std::string& what = "") const {
    if (fail_op_ != op) return false;
    std::lock_guard lock(mu_);
    return path_part_.empty() || what.find(path_part_) != std::string::npos;
  }
  int fail_errno() const { return fail_errno_; }
  void CountInjected() { ++injected_; }
  Residency residency() const { return residency_; }
  bool plain_only() const { return plain_only_; }
  void CountPlainRead() { ++plain_reads_; }
  void CountDirectRead() { ++direct_reads_; }
  void CountMapping() { ++mappings_; }
  void CountMapRead() { ++map_reads_; }

 private:
  mutable std::mutex mu_;
  std::string path_part_;
  std::atomic<FaultOp> fail_op_{FaultOp::kNone};
  std::atomic<int> fail_errno_{0};
  std::atomic<Residency> residency_{Residency::kReal};
  std::atomic<bool> plain_only_{false};
  std::atomic<const char*> sqlite_vfs_{nullptr};
  std::atomic<int> crash_at_{0};
  std::atomic<int> ops_{0};
  std::atomic<int> injected_{0};
  std::atomic<uint64_t> plain_reads_{0}, direct_reads_{0}, mappings_{0}, map_reads_{0}, locks_{0};
};

}  // namespace layercache::testing
