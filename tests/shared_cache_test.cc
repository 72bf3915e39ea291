// A cache shared by several users (the seed's "Multi-User Setup"), tested
// with a second uid: `nobody`, through setpriv, running the installed CLI.
//
//   - read-only: a cache written by root in a directory `nobody` may read but
//     not write: ls, stats, verify work (reporting), get serves hits and
//     reports misses, put and optimize fail with a clear error, and nothing
//     in the cache changes;
//   - a group cache: created by root with umask 002 in a setgid directory of
//     a group; `nobody`, a member of that group (and umask 002), can put,
//     invalidate and verify in it.
//
// Needs root (to switch users): CI runs as root; elsewhere it is skipped,
// saying so.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "layercache/safetensors.h"
#include "test_support.h"

namespace layercache {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr const char* kSetpriv = "/usr/bin/setpriv";
constexpr int kGroup = 100;  // "users" on Debian

// The CLI, copied where nobody may run it (the build folder may be under a
// home nobody cannot enter).
std::string g_cli;

// Runs the CLI as nobody (with `group` as a supplementary group when >= 0)
// under umask `umask`.
testing::CommandResult AsNobody(const std::vector<std::string>& args, int group = -1,
                                const std::string& umask = "022") {
  std::string cmd = "umask " + umask + "; exec " + kSetpriv + " --reuid=65534 --regid=65534 " +
                    (group >= 0 ? "--groups=" + std::to_string(group) : "--clear-groups") + " " +
                    g_cli;
  for (const std::string& a : args) cmd += " '" + a + "'";
  return testing::RunCommand({"/bin/sh", "-c", cmd});
}

testing::CommandResult AsRoot(const std::vector<std::string>& args,
                              const std::string& umask = "022") {
  std::string cmd = "umask " + umask + "; exec " + g_cli;
  for (const std::string& a : args) cmd += " '" + a + "'";
  return testing::RunCommand({"/bin/sh", "-c", cmd});
}

// Every file under `dir` with its size and modification time.
std::map<std::string, std::pair<uintmax_t, int64_t>> Snapshot(const std::string& dir) {
  std::map<std::string, std::pair<uintmax_t, int64_t>> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    ::lstat(e.path().c_str(), &st);
    out[e.path().string()] = {
        static_cast<uintmax_t>(st.st_size),
        static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
  }
  return out;
}

// A model layer written by the tests' own writer.
std::string WriteLayerFile(const TempDir& dir, const std::string& name, uint64_t seed) {
  const std::string path = dir / name;
  EXPECT_TRUE(WriteSafetensorsFile(*testing::MakeLayer(seed, 4096), path).ok());
  return path;
}

#define REQUIRE_ROOT_AND_SETPRIV()                                                            \
  LAYERCACHE_REQUIRE(::geteuid() == 0 && fs::exists(kSetpriv),                                \
                     "needs root and setpriv (util-linux) to run commands as a second user, " \
                     "nobody")

TEST(SharedCache, AUserWhoCannotWriteListsVerifiesAndReadsAndChangesNothing) {
  REQUIRE_ROOT_AND_SETPRIV();
  TempDir dir;
  fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
  g_cli = dir / "layercache";
  fs::copy_file(testing::CliPath(), g_cli);
  fs::permissions(g_cli, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                             fs::perms::others_read | fs::perms::others_exec);
  const std::string cache = dir / "cache";
  const std::string l0 = WriteLayerFile(dir, "l0.safetensors", 1);
  const std::string l1 = WriteLayerFile(dir, "l1.safetensors", 2);
  ASSERT_EQ(AsRoot({"--cache-dir", cache, "put", "m", "0", l0}).exit_code, 0);
  ASSERT_EQ(AsRoot({"--cache-dir", cache, "put", "m", "1", l1}).exit_code, 0);
  fs::create_directories(dir / "out");
  ASSERT_EQ(::chown((dir / "out").c_str(), 65534, 65534), 0);
  const auto before = Snapshot(cache);

  auto ls = AsNobody({"--cache-dir", cache, "--json", "ls"});
  EXPECT_EQ(ls.exit_code, 0) << ls.out;
  EXPECT_NE(ls.out.find("\"layer_index\": 0"), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("\"layer_index\": 1"), std::string::npos) << ls.out;
  auto stats = AsNobody({"--cache-dir", cache, "stats"});
  EXPECT_EQ(stats.exit_code, 0) << stats.out;
  EXPECT_NE(stats.out.find("Disk Cache Entries: 2"), std::string::npos) << stats.out;
  auto verify = AsNobody({"--cache-dir", cache, "verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_NE(verify.out.find("2 entries checked, 0 corrupted"), std::string::npos) << verify.out;
  auto hit = AsNobody({"--cache-dir", cache, "get", "m", "0", "--output", dir / "out/l0"});
  EXPECT_EQ(hit.exit_code, 0) << hit.out;
  EXPECT_EQ(testing::ReadBytes(dir / "out/l0"), testing::ReadBytes(l0)) << "a disk hit, served";
  auto miss = AsNobody({"--cache-dir", cache, "get", "m", "5", "--output", dir / "out/l5"});
  EXPECT_EQ(miss.exit_code, 1) << miss.out;
  EXPECT_NE(miss.out.find("not cached"), std::string::npos) << miss.out;
  auto put = AsNobody({"--cache-dir", cache, "put", "m", "2", l0});
  EXPECT_NE(put.exit_code, 0) << put.out;
  EXPECT_NE(put.out.find("read-only for this user"), std::string::npos) << put.out;
  auto optimize = AsNobody({"--cache-dir", cache, "optimize"});
  EXPECT_NE(optimize.exit_code, 0) << optimize.out;
  EXPECT_NE(optimize.out.find("read-only for this user"), std::string::npos) << optimize.out;
  EXPECT_EQ(Snapshot(cache), before) << "a reader without write access changed the cache";
  // The owner still works with it.
  EXPECT_EQ(AsRoot({"--cache-dir", cache, "put", "m", "2", l1}).exit_code, 0);
  EXPECT_EQ(AsRoot({"--cache-dir", cache, "verify"}).exit_code, 0);
}

TEST(SharedCache, ACacheCreatedForAGroupIsWritableByTheGroup) {
  REQUIRE_ROOT_AND_SETPRIV();
  TempDir dir;
  fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
  g_cli = dir / "layercache";
  fs::copy_file(testing::CliPath(), g_cli);
  fs::permissions(g_cli, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                             fs::perms::others_read | fs::perms::others_exec);
  // The administrator's setup (README, "Multi-user setup"): a setgid
  // directory of the group, and umask 002 for its members.
  const std::string shared = dir / "shared";
  fs::create_directories(shared);
  ASSERT_EQ(::chown(shared.c_str(), 0, kGroup), 0);
  ASSERT_EQ(::chmod(shared.c_str(), 02775), 0);
  const std::string cache = shared + "/cache";
  const std::string l0 = WriteLayerFile(dir, "l0.safetensors", 1);
  const std::string l1 = WriteLayerFile(dir, "l1.safetensors", 2);
  ASSERT_EQ(AsRoot({"--cache-dir", cache, "put", "m", "0", l0}, "002").exit_code, 0);

  auto put = AsNobody({"--cache-dir", cache, "put", "m", "1", l1}, kGroup, "002");
  EXPECT_EQ(put.exit_code, 0) << put.out;
  auto inv = AsNobody({"--cache-dir", cache, "invalidate", "m", "--layer", "0"}, kGroup, "002");
  EXPECT_EQ(inv.exit_code, 0) << inv.out;
  auto verify = AsNobody({"--cache-dir", cache, "verify"}, kGroup, "002");
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  auto ls = AsRoot({"--cache-dir", cache, "--json", "ls"}, "002");
  EXPECT_EQ(ls.exit_code, 0) << ls.out;
  EXPECT_EQ(ls.out.find("\"layer_index\": 0"), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("\"layer_index\": 1"), std::string::npos) << ls.out;
  // Everything in it belongs to the group and is group-writable where it
  // must be (directories, the index, the lock file).
  for (const auto& e : fs::recursive_directory_iterator(cache)) {
    struct stat st {};
    ::lstat(e.path().c_str(), &st);
    EXPECT_EQ(st.st_gid, static_cast<gid_t>(kGroup)) << e.path();
    if (S_ISDIR(st.st_mode) || e.path().filename() == "locks" ||
        e.path().filename() == "index.sqlite") {
      EXPECT_TRUE(st.st_mode & S_IWGRP) << e.path();
    }
  }
}

}  // namespace
}  // namespace layercache
