// Network file systems: detected by statfs (or forced with
// LAYERCACHE_NETWORK_FS), the index then runs in rollback-journal mode (no
// WAL, which needs memory shared across processes, impossible across hosts).
#include "io/network_fs.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "disk/disk_tier.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::TempDir;

std::string JournalMode(const std::string& db_path) {
  sqlite3* db = nullptr;
  std::string mode;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      mode = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return mode;
}

TEST(NetworkFs, MagicNumbersOfNetworkFileSystemsAreKnownAndLocalOnesAreNot) {
  EXPECT_EQ(NetworkFileSystemName(0x6969), "nfs");
  EXPECT_EQ(NetworkFileSystemName(0xFF534D42), "cifs");
  EXPECT_EQ(NetworkFileSystemName(0xFE534D42), "smb2");
  EXPECT_EQ(NetworkFileSystemName(0x65735546), "fuse");
  EXPECT_EQ(NetworkFileSystemName(0x01021997), "9p");
  EXPECT_EQ(NetworkFileSystemName(0xEF53), "");      // ext4
  EXPECT_EQ(NetworkFileSystemName(0x58465342), "");  // xfs
  EXPECT_EQ(NetworkFileSystemName(0x01021994), "");  // tmpfs
}

TEST(NetworkFs, ALocalDirectoryUsesWal) {
  ::unsetenv("LAYERCACHE_NETWORK_FS");
  TempDir dir;
  ASSERT_FALSE(DescribeFileSystem(dir.path()).network)
      << "the test's temporary directory is on " << DescribeFileSystem(dir.path()).name;
  DiskTierOptions o;
  o.cache_dir = dir / "cache";
  o.capacity_bytes = 1 << 20;
  auto tier = DiskTier::Open(o);
  ASSERT_TRUE(tier.ok());
  EXPECT_FALSE((*tier)->network_fs());
  ASSERT_TRUE((*tier)->Put(LayerKey{"m", 0, "", ""}, MakeLayer(1, 2048)).ok());
  EXPECT_EQ(JournalMode(dir / "cache/index.sqlite"), "wal");
}

// Forced detection: the index is in rollback-journal mode, never leaves a
// WAL, and the cache works, from two processes at once too.
TEST(NetworkFs, OnANetworkFileSystemTheIndexUsesARollbackJournalAndWorks) {
  TempDir dir;
  ::setenv("LAYERCACHE_NETWORK_FS", "1", 1);
  ASSERT_TRUE(DescribeFileSystem(dir.path()).network);
  DiskTierOptions o;
  o.cache_dir = dir / "cache";
  o.capacity_bytes = 1 << 20;
  {
    auto tier = DiskTier::Open(o);
    ASSERT_TRUE(tier.ok()) << tier.status().ToString();
    EXPECT_TRUE((*tier)->network_fs());
    // Two processes writing and reading the same cache.
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto child = DiskTier::Open(o);
      bool ok = child.ok();
      for (int i = 0; ok && i < 20; ++i)
        ok = (*child)->Put(LayerKey{"m", 100 + i, "", ""}, MakeLayer(100 + i, 2048)).ok();
      ::_exit(ok ? 0 : 1);
    }
    for (int i = 0; i < 20; ++i)
      ASSERT_TRUE((*tier)->Put(LayerKey{"m", i, "", ""}, MakeLayer(i, 2048)).ok());
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_FALSE(std::filesystem::exists(dir / "cache/index.sqlite-wal"));
    EXPECT_EQ(JournalMode(dir / "cache/index.sqlite"), "delete");
    auto rows = (*tier)->List();
    ASSERT_TRUE(rows.ok());
    EXPECT_EQ(rows->size(), 40u);
    for (int i : {0, 19, 100, 119}) {
      auto layer = (*tier)->Get(LayerKey{"m", i, "", ""});
      ASSERT_TRUE(layer.ok()) << i;
      EXPECT_TRUE((*layer)->ContentEquals(*MakeLayer(i, 2048)));
    }
    ASSERT_TRUE((*tier)->Invalidate(std::string("m"), 0).ok());
    auto corrupt = (*tier)->Verify();
    ASSERT_TRUE(corrupt.ok());
    EXPECT_TRUE(corrupt->empty());
  }
  // A cache first used on a local disk (WAL) and then through a network
  // mount switches its index to the rollback journal.
  ::unsetenv("LAYERCACHE_NETWORK_FS");
  DiskTierOptions local = o;
  local.cache_dir = dir / "moved";
  {
    auto tier = DiskTier::Open(local);
    ASSERT_TRUE(tier.ok());
    ASSERT_TRUE((*tier)->Put(LayerKey{"m", 1, "", ""}, MakeLayer(1, 2048)).ok());
  }
  ::setenv("LAYERCACHE_NETWORK_FS", "1", 1);
  {
    auto tier = DiskTier::Open(local);
    ASSERT_TRUE(tier.ok()) << tier.status().ToString();
    auto layer = (*tier)->Get(LayerKey{"m", 1, "", ""});
    ASSERT_TRUE(layer.ok());
    EXPECT_EQ(JournalMode(dir / "moved/index.sqlite"), "delete");
  }
  ::unsetenv("LAYERCACHE_NETWORK_FS");
}

}  // namespace
}  // namespace layercache
