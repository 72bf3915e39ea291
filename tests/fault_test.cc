// Fault injection and crash recovery of the disk tier: every failing write
// is reported and loses nothing; a process killed at any of hundreds of
// points leaves a cache that reopens consistent.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "disk/disk_tier.h"
#include "fault_env.h"
#include "sqlite_crash_vfs.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::FaultInjectionEnv;
using testing::FaultOp;
using testing::MakeLayer;
using testing::SeedOf;
using testing::TempDir;

DiskTierOptions Opts(const TempDir& dir, Env* env, uint64_t capacity = 1u << 20) {
  DiskTierOptions o;
  o.cache_dir = dir / "cache";
  o.capacity_bytes = capacity;
  o.env = env;
  return o;
}

LayerKey K(int64_t i) { return LayerKey{"fault", i, "", ""}; }

bool TmpIsEmpty(const TempDir& dir) { return std::filesystem::is_empty(dir / "cache/tmp"); }

TEST(Faults, EveryFailingWriteIsReportedAndLosesNothing) {
  struct Case {
    FaultOp op;
    int err;
  };
  for (Case c : {Case{FaultOp::kCreate, ENOSPC}, Case{FaultOp::kAppend, ENOSPC},
                 Case{FaultOp::kShortAppend, ENOSPC}, Case{FaultOp::kSync, EIO},
                 Case{FaultOp::kRename, ENOSPC}, Case{FaultOp::kSyncDir, EIO}}) {
    SCOPED_TRACE(static_cast<int>(c.op));
    TempDir dir;
    FaultInjectionEnv env;
    auto tier = DiskTier::Open(Opts(dir, &env));
    ASSERT_TRUE(tier.ok()) << tier.status().ToString();
    LayerPtr before = MakeLayer(1, 2048);
    ASSERT_TRUE((*tier)->Put(K(0), before).ok());
    env.FailOn(c.op, c.err);
    Status s = (*tier)->Put(K(1), MakeLayer(2, 2048));
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("injected fault"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("cannot cache fault/1"), std::string::npos) << s.message();
    if (c.err == ENOSPC) {
      EXPECT_EQ(s.code(), StatusCode::kNoSpace);
    }
    // Replacing an entry fails the same way and keeps the old one.
    EXPECT_FALSE((*tier)->Put(K(0), MakeLayer(3, 2048)).ok());
    EXPECT_GT(env.faults_injected(), 0);
    env.Clear();
    auto old = (*tier)->Get(K(0));
    ASSERT_TRUE(old.ok()) << old.status().ToString();
    if (c.op != FaultOp::kSyncDir) {
      EXPECT_TRUE((*old)->ContentEquals(*before));
      EXPECT_TRUE((*tier)->Get(K(1)).status().IsNotFound());
    } else {
      // The rename happened before the directory fsync failed: either copy is whole.
      EXPECT_TRUE((*old)->ContentEquals(*before) || (*old)->ContentEquals(*MakeLayer(3, 2048)));
    }
    EXPECT_TRUE(TmpIsEmpty(dir)) << "a failed write must not leave its temp file";
    auto corrupt = (*tier)->Verify();
    ASSERT_TRUE(corrupt.ok());
    EXPECT_TRUE(corrupt->empty());
    EXPECT_TRUE((*tier)->Put(K(1), MakeLayer(2, 2048)).ok())
        << "the cache works again once the fault is gone";
  }
}

TEST(Faults, ReadErrorsAreReportedAsErrorsAndTheEntryIsKept) {
  TempDir dir;
  FaultInjectionEnv env;
  auto tier = DiskTier::Open(Opts(dir, &env));
  ASSERT_TRUE(tier.ok());
  ASSERT_TRUE((*tier)->Put(K(0), MakeLayer(1, 2048)).ok());
  env.FailOn(FaultOp::kRead, EIO);
  auto r = (*tier)->Get(K(0));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError) << r.status().ToString();
  EXPECT_EQ((*tier)->checksum_failures(), 0u);
  env.Clear();
  auto again = (*tier)->Get(K(0));
  ASSERT_TRUE(again.ok()) << "an I/O error must not remove a good entry";
  EXPECT_TRUE((*again)->ContentEquals(*MakeLayer(1, 2048)));
}

// SQLite's own writes failing (a full disk under the index): the put says
// so, and every entry cached before is still served. Runs in a child, since
// the failing VFS becomes the process's default.
TEST(Faults, AFailingIndexWriteIsReportedAndLosesNothing) {
  TempDir dir;
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FaultInjectionEnv env;
    testing::InstallCrashingSqliteVfs(&env);
    auto tier = DiskTier::Open(Opts(dir, &env));
    if (!tier.ok() || !(*tier)->Put(K(0), MakeLayer(1, 2048)).ok()) ::_exit(2);
    env.FailOn(FaultOp::kSqlite, ENOSPC);
    Status s = (*tier)->Put(K(1), MakeLayer(2, 2048));
    if (s.ok() || s.message().find("cannot cache") == std::string::npos) ::_exit(3);
    env.Clear();
    auto old = (*tier)->Get(K(0));
    if (!old.ok() || !(*old)->ContentEquals(*MakeLayer(1, 2048))) ::_exit(4);
    ::_exit(env.faults_injected() > 0 ? 0 : 5);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: setup, 3: no clear error, 4: lost entry, 5: no fault";
  auto tier = DiskTier::Open(Opts(dir, Env::Default()));
  ASSERT_TRUE(tier.ok());
  auto corrupt = (*tier)->Verify();
  ASSERT_TRUE(corrupt.ok());
  EXPECT_TRUE(corrupt->empty());
  auto old = (*tier)->Get(K(0));
  ASSERT_TRUE(old.ok());
  EXPECT_TRUE((*old)->ContentEquals(*MakeLayer(1, 2048)));
}

// The child's workload: an index rebuild (the index is deleted first, so
// opening rebuilds it from the entry files), rounds of puts (two versions
// per key), invalidations and an optimize, under a budget that forces
// evictions.
void Workload(const TempDir& dir, FaultInjectionEnv* env, uint64_t capacity) {
  for (const char* f : {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm"})
    std::filesystem::remove(std::filesystem::path(dir / "cache") / f);
  auto tier = DiskTier::Open(Opts(dir, env, capacity));
  if (!tier.ok()) return;
  for (int round = 0; round < 4; ++round) {
    for (int k = 0; k < 10; ++k) {
      (void)(*tier)->Put(K(k), MakeLayer(SeedOf("fault", k, round % 2), 2048));
      if (k % 4 == round % 4) (void)(*tier)->Invalidate(std::string("fault"), k);
    }
  }
  (void)(*tier)->Optimize();
}

// Runs the workload in a child whose file operations, SQLite's included,
// count as crash points; kills it at the `crash_at`th (0: never). Returns
// the child's wait status; the child writes its operation count to `count`.
int RunChild(const TempDir& dir, uint64_t capacity, int crash_at, const std::string& count) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    FaultInjectionEnv env;
    testing::InstallCrashingSqliteVfs(&env);
    env.CrashAt(crash_at);
    Workload(dir, &env, capacity);
    std::FILE* f = std::fopen(count.c_str(), "w");
    if (f != nullptr) {
      std::fprintf(f, "%d\n", env.mutating_ops());
      std::fclose(f);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

TEST(Crash, KilledAtEachOfHundredsOfPointsTheCacheReopensConsistent) {
  TempDir dir;
  const uint64_t entry = 8 + 4088 + MakeLayer(0, 2048)->nbytes();
  const uint64_t capacity = 6 * entry + entry / 2;
  // A run without a crash counts the workload's operations: the kill points
  // are every one of the first 150 (the index rebuild, the first puts) and
  // then evenly spaced to the end (optimize), about 330 in all.
  const std::string count_file = dir / "ops";
  ASSERT_EQ(RunChild(dir, capacity, 0, count_file), 0);
  int total_ops = 0;
  {
    std::FILE* f = std::fopen(count_file.c_str(), "r");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fscanf(f, "%d", &total_ops), 1);
    std::fclose(f);
  }
  ASSERT_GT(total_ops, 300) << "the workload must offer hundreds of crash points";
  std::vector<int> points;
  for (int n = 1; n <= 150; ++n) points.push_back(n);
  const int stride = std::max(1, (total_ops - 150) / 180);
  for (int n = 150 + stride; n <= total_ops; n += stride) points.push_back(n);
  int killed = 0;
  for (const int n : points) {
    const int status = RunChild(dir, capacity, n, count_file);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ++killed;
    // Reopen: every layer served is one of the versions that were put.
    auto tier = DiskTier::Open(Opts(dir, Env::Default(), capacity));
    ASSERT_TRUE(tier.ok()) << "after a kill at op " << n << ": " << tier.status().ToString();
    auto rows = (*tier)->List();
    ASSERT_TRUE(rows.ok());
    for (const IndexRow& row : *rows) {
      auto layer = (*tier)->Get(row.key);
      if (!layer.ok()) {
        ADD_FAILURE() << "kill at op " << n << ": " << row.key.ToString() << ": "
                      << layer.status().ToString();
        continue;
      }
      const bool v0 =
          (*layer)->ContentEquals(*MakeLayer(SeedOf("fault", row.key.layer_index, 0), 2048));
      const bool v1 =
          (*layer)->ContentEquals(*MakeLayer(SeedOf("fault", row.key.layer_index, 1), 2048));
      EXPECT_TRUE(v0 || v1) << "kill at op " << n << " served bytes that were never put";
    }
    auto report = (*tier)->Optimize();
    ASSERT_TRUE(report.ok());
    auto corrupt = (*tier)->Verify();
    ASSERT_TRUE(corrupt.ok());
    EXPECT_TRUE(corrupt->empty()) << "kill at op " << n;
    EXPECT_TRUE(TmpIsEmpty(dir)) << "kill at op " << n << ": a temp file survived optimize";
    auto totals = (*tier)->Totals();
    ASSERT_TRUE(totals.ok());
    EXPECT_LE(totals->file_bytes, capacity) << "kill at op " << n;
  }
  EXPECT_GE(killed, 200) << "the workload must offer at least 200 crash points";
  std::printf("crash points exercised: %d of a workload of %d operations (SQLite's included)\n",
              killed, total_ops);
}

}  // namespace
}  // namespace layercache
