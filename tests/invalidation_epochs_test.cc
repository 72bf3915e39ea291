// Invalidation epochs (src/disk/invalidation_epochs.h): a copy of a layer held
// outside the disk tier is stale once another process has invalidated or
// replaced its key, and a write-back of such a copy never undoes another
// process's invalidation. The other process is a real one (fork) with its own
// DiskTier on the same directory.
#include "disk/invalidation_epochs.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>

#include "disk/disk_tier.h"
#include "io/file_lock.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::TempDir;

std::unique_ptr<DiskTier> OpenTier(const std::string& dir) {
  DiskTierOptions o;
  o.cache_dir = dir;
  o.capacity_bytes = uint64_t{1} << 30;
  auto tier = DiskTier::Open(o);
  EXPECT_TRUE(tier.ok()) << tier.status().ToString();
  return tier.ok() ? std::move(*tier) : nullptr;
}

// Runs `body` in a child process with its own tier on `dir`; its exit code
// (0: every check passed).
int InOtherProcess(const std::string& dir, const std::function<bool(DiskTier&)>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto tier = OpenTier(dir);
    ::_exit(tier != nullptr && body(*tier) ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(InvalidationEpochs, AWriteBackNeverUndoesAnotherProcesssInvalidation) {
  TempDir dir;
  auto tier = OpenTier(dir.path());
  ASSERT_NE(tier, nullptr);
  const LayerKey key{"org/model", 0, "", ""};
  LayerPtr layer = MakeLayer(0);
  ASSERT_TRUE(tier->Put(key, layer).ok());
  // A copy kept in memory, with the epoch taken when it was put.
  const uint64_t epoch = tier->Epoch(key);
  ASSERT_EQ(InOtherProcess(dir.path(),
                           [&](DiskTier& other) {
                             auto n = other.Invalidate(std::string("org/model"), std::nullopt);
                             return n.ok() && *n == 1;
                           }),
            0);
  EXPECT_NE(tier->Epoch(key), epoch) << "the invalidation is seen by this process";
  EXPECT_FALSE(tier->Contains(key));
  // The copy is evicted from memory: its write-back must not bring it back.
  auto lock = tier->LockKey(key);
  ASSERT_TRUE(lock.ok());
  bool written = true;
  ASSERT_TRUE(tier->WriteBack(key, layer, epoch, *lock, &written).ok());
  EXPECT_FALSE(written);
  EXPECT_FALSE(tier->Contains(key));
  // A copy taken after the invalidation (a reload) is written back.
  ASSERT_TRUE(tier->WriteBack(key, layer, tier->Epoch(key), *lock, &written).ok());
  EXPECT_TRUE(written);
  EXPECT_TRUE(tier->Contains(key));
}

TEST(InvalidationEpochs, PutsAndRemovalsInAnotherProcessMakeCopiesStale) {
  TempDir dir;
  auto tier = OpenTier(dir.path());
  ASSERT_NE(tier, nullptr);
  const LayerKey key{"m", 1, "", ""};
  const LayerKey other_model{"n", 1, "", ""};
  ASSERT_TRUE(tier->Put(key, MakeLayer(1)).ok());
  uint64_t epoch = tier->Epoch(key);
  // A newer version put by another process.
  ASSERT_EQ(InOtherProcess(dir.path(),
                           [&](DiskTier& other) { return other.Put(key, MakeLayer(2)).ok(); }),
            0);
  EXPECT_NE(tier->Epoch(key), epoch);
  // The removal of exactly this key.
  epoch = tier->Epoch(key);
  ASSERT_EQ(InOtherProcess(dir.path(),
                           [&](DiskTier& other) {
                             auto r = other.RemoveKey(key);
                             return r.ok() && *r;
                           }),
            0);
  EXPECT_NE(tier->Epoch(key), epoch);
  // An invalidation of another model leaves this key's epoch alone (unless
  // the two share a slot, which these two do not).
  epoch = tier->Epoch(key);
  ASSERT_EQ(InOtherProcess(dir.path(),
                           [&](DiskTier& other) {
                             return other.Invalidate(std::string("n"), std::nullopt).ok();
                           }),
            0);
  EXPECT_EQ(tier->Epoch(key), epoch);
  (void)other_model;
  // Clearing the cache moves every key's epoch.
  ASSERT_EQ(InOtherProcess(dir.path(), [&](DiskTier& other) { return other.Clear().ok(); }), 0);
  EXPECT_NE(tier->Epoch(key), epoch);
}

// While an invalidation is under way in another process, a write-back does
// not wait and does not commit; once it is over, a copy older than it is not
// written back either, a newer one is.
TEST(InvalidationEpochs, AWriteBackDuringAnInvalidationSkips) {
  TempDir dir;
  auto tier = OpenTier(dir.path());
  ASSERT_NE(tier, nullptr);
  const LayerKey held{"a", 0, "", ""};
  const LayerKey copy{"b", 0, "", ""};
  ASSERT_TRUE(tier->Put(held, MakeLayer(0)).ok());
  const uint64_t epoch = tier->Epoch(copy);
  // The child invalidates model "a" but blocks on `held`'s key lock, which
  // this process holds, so its invalidation stays under way. (The lock is
  // taken after the fork: a child inheriting its descriptor would hold it
  // too.)
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(go[1]);
    char c;
    if (::read(go[0], &c, 1) != 1) ::_exit(2);
    auto child = OpenTier(dir.path());
    auto n = child->Invalidate(std::string("a"), std::nullopt);
    ::_exit(n.ok() && *n == 1 ? 0 : 1);
  }
  ::close(go[0]);
  auto held_lock = tier->LockKey(held);
  ASSERT_TRUE(held_lock.ok());
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  ::close(go[1]);
  // Wait (bounded) until the child holds the write-back guard (the 64 bytes
  // at 2^61 of the locks file, src/disk/disk_tier.cc).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool guarded = false;
  while (!guarded && std::chrono::steady_clock::now() < deadline) {
    auto probe = FileLock::TryLock(Env::Default(), dir / "locks", uint64_t{1} << 61, 64);
    ASSERT_TRUE(probe.ok());
    guarded = !probe->has_value();
    if (!guarded) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(guarded) << "the invalidation never took the write-back guard";
  auto copy_lock = tier->LockKey(copy);
  ASSERT_TRUE(copy_lock.ok());
  bool written = true;
  ASSERT_TRUE(tier->WriteBack(copy, MakeLayer(5), epoch, *copy_lock, &written).ok());
  EXPECT_FALSE(written) << "a write-back committed during an invalidation";
  EXPECT_FALSE(tier->Contains(copy));
  held_lock->Release();
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_FALSE(tier->Contains(held));
  // Once the invalidation is over, a copy with a current epoch is written back.
  ASSERT_TRUE(tier->WriteBack(copy, MakeLayer(5), tier->Epoch(copy), *copy_lock, &written).ok());
  EXPECT_TRUE(written) << "another model's key is written back once the invalidation is over";
}

}  // namespace
}  // namespace layercache
