// Fault injection and crash recovery of the disk tier: every failing write
// is reported and loses nothing; a process killed at any of hundreds of
// points leaves a cache that reopens consistent.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "disk/disk_tier.h"
#include "fault_env.h"
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

// The child's workload: rounds of puts (two versions per key), invalidations
// and an optimize, under a budget that forces evictions.
void Workload(const TempDir& dir, FaultInjectionEnv* env, uint64_t capacity) {
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

TEST(Crash, KilledAtEachOfHundredsOfPointsTheCacheReopensConsistent) {
  TempDir dir;
  const uint64_t entry = 8 + 4088 + MakeLayer(0, 2048)->nbytes();
  const uint64_t capacity = 6 * entry + entry / 2;
  int killed = 0;
  for (int n = 1; n <= 320; ++n) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      FaultInjectionEnv env;
      env.CrashAt(n);
      Workload(dir, &env, capacity);
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
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
  std::printf("crash points exercised: %d\n", killed);
}

}  // namespace
}  // namespace layercache
