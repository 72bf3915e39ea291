// FaultInjectionEnv: a test Env over the real POSIX one that fails on command
// (ENOSPC, EIO, short writes) or kills the process at its Nth mutating
// operation, in the manner of RocksDB's FaultInjectionTestFS.
#pragma once

#include <signal.h>

#include <atomic>
#include <cerrno>
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
  kRead,
  kRemove,
  kSqlite  // a write, truncate, sync or delete by SQLite (sqlite_crash_vfs.h)
};

class FaultInjectionEnv : public Env {
 public:
  // Fail every `op` with `err` (ENOSPC, EIO, ...) until Clear().
  void FailOn(FaultOp op, int err) {
    fail_op_ = op;
    fail_errno_ = err;
  }
  void Clear() { fail_op_ = FaultOp::kNone; }
  // SIGKILL this process at the Nth mutating operation (1-based; 0: never).
  void CrashAt(int n) { crash_at_ = n; }
  int mutating_ops() const { return ops_; }
  int faults_injected() const { return injected_; }

  Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) override;
  Result<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) override;
  Status Rename(const std::string& from, const std::string& to) override {
    if (Status s = Mutate(FaultOp::kRename, "rename " + from); !s.ok()) return s;
    return base_->Rename(from, to);
  }
  Status Remove(const std::string& path) override {
    if (Status s = Mutate(FaultOp::kRemove, "remove " + path); !s.ok()) return s;
    return base_->Remove(path);
  }
  Status RemoveDir(const std::string& path) override { return base_->RemoveDir(path); }
  Status SyncDir(const std::string& path) override {
    if (Status s = Mutate(FaultOp::kSyncDir, "fsync " + path); !s.ok()) return s;
    return base_->SyncDir(path);
  }
  Status CreateDirs(const std::string& path) override { return base_->CreateDirs(path); }
  Result<std::vector<std::string>> ListDir(const std::string& dir) override {
    return base_->ListDir(dir);
  }
  Result<FileStat> Stat(const std::string& path) override { return base_->Stat(path); }

  // Counts a mutating operation (crashing if it is the chosen one) and fails
  // it if `op` is the injected fault.
  Status Mutate(FaultOp op, const std::string& what) {
    if (++ops_ == crash_at_) ::raise(SIGKILL);
    if (fail_op_ == op) {
      ++injected_;
      return ErrnoStatus("injected fault: " + what, fail_errno_);
    }
    return Status::OK();
  }
  bool Failing(FaultOp op) const { return fail_op_ == op; }
  int fail_errno() const { return fail_errno_; }

 private:
  Env* base_ = Env::Default();
  std::atomic<FaultOp> fail_op_{FaultOp::kNone};
  std::atomic<int> fail_errno_{0};
  std::atomic<int> crash_at_{0};
  std::atomic<int> ops_{0};
  std::atomic<int> injected_{0};
};

}  // namespace layercache::testing
