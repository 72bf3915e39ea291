// `layercache bench` as a user runs it: --json reports the limits measured in
// the run and every path as a ratio to them, and the benchmark's folder is
// gone afterwards; on a file system without room for its entries it refuses
// before writing anything (exit 3). As root these drop the page cache, so
// they run serially (tests/CMakeLists.txt).
#include <gtest/gtest.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "test_support.h"

namespace layercache {
namespace {

namespace fs = std::filesystem;
using testing::CliPath;
using testing::RunCommand;
using testing::TempDir;

// Entries left by a run: the benchmark's private folders start with ".bench-".
int BenchFolders(const std::string& dir) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename().string().rfind(".bench-", 0) == 0) ++n;
  }
  return n;
}

TEST(BenchCli, JsonReportsLimitsAndEveryPathAndCleansUp) {
  TempDir dir;
  const std::string cache = dir / "cache";
  auto r = RunCommand({CliPath(), "--cache-dir", cache, "bench", "--layer", "256,64,768", "--reps",
                       "1", "--modes", "auto,direct", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r.out;

  // q, o: 256 x 256; k, v: 64 x 256; gate, up, down: 768 x 256; bf16.
  EXPECT_EQ(j["layer"]["bytes"].get<uint64_t>(),
            2u * (2 * 256 * 256 + 2 * 64 * 256 + 3 * 768 * 256));
  EXPECT_EQ(j["reps"].get<int>(), 1);
  EXPECT_EQ(j["cache_dir"].get<std::string>(), cache);
  const std::string how = j["cold_method"].get<std::string>();
  if (::geteuid() == 0 && ::access("/proc/sys/vm/drop_caches", W_OK) == 0) {
    EXPECT_EQ(how, "drop_caches");
  } else {
    EXPECT_EQ(how, "fadvise");
  }

  const auto& limits = j["limits"];
  const double memcpy_gbps = limits["memcpy_gbps"].get<double>();
  EXPECT_GT(memcpy_gbps, 0);
  EXPECT_GE(limits["cores"].get<int>(), 1);
  double device_gbps = 0;
  if (limits["device_gbps"].is_null()) {  // a file system without O_DIRECT (tmpfs)
    EXPECT_FALSE(limits["device_error"].get<std::string>().empty());
    EXPECT_NE(j["verdict"].get<std::string>().find("no O_DIRECT"), std::string::npos);
  } else {
    device_gbps = limits["device_gbps"].get<double>();
    const double best = std::max({limits["device_sequential_gbps"].get<double>(),
                                  limits["device_qd16_gbps"].get<double>(),
                                  limits["device_qd32_gbps"].get<double>()});
    EXPECT_GT(best, 0);
    EXPECT_DOUBLE_EQ(device_gbps, best) << "the device limit is the best way measured";
    EXPECT_NE(j["verdict"].get<std::string>().find("your disk gives"), std::string::npos);
  }

  // cold and warm for each mode asked, with ratios to the limit they name.
  std::set<std::string> seen;
  for (const auto& row : j["results"]) {
    const std::string path = row["path"].get<std::string>();
    const std::string mode = row["disk_read_mode"].get<std::string>();
    seen.insert(path + "/" + mode);
    const double s = row["seconds"].get<double>();
    const double gbps = row["gbps"].get<double>();
    EXPECT_GT(s, 0) << path << " " << mode;
    EXPECT_NEAR(gbps, j["layer"]["bytes"].get<double>() / s / 1e9, gbps * 1e-9);
    const std::string to = row["ratio_to"].get<std::string>();
    EXPECT_EQ(to, path == "cold" ? "device" : "memcpy");
    const double limit = to == "device" ? device_gbps : memcpy_gbps;
    if (limit > 0) {
      EXPECT_NEAR(row["ratio"].get<double>(), gbps / limit, 1e-9 * gbps / limit);
    }
  }
  EXPECT_EQ(seen, (std::set<std::string>{"cold/auto", "warm/auto", "cold/direct", "warm/direct"}));
  EXPECT_GT(j["memory_hit_ns"].get<double>(), 0);
  EXPECT_EQ(BenchFolders(cache), 0) << "the benchmark removes its folder";
}

// Free bytes for an unprivileged user on the file system holding `dir`.
uint64_t FreeBytes(const std::string& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

TEST(BenchCli, RefusesACacheDirectoryWithoutRoomAndWritesNothing) {
  // The largest shape it accepts needs about 137 GB of entries: more than the
  // test's file system or /dev/shm (half the memory) hold on ordinary machines.
  const uint64_t h = 65536, kv = 65536, inter = 262144;
  const uint64_t need = 2 * (2 * h * h + 2 * kv * h + 3 * inter * h);
  TempDir tmp;
  std::string cache = tmp / "cache";
  fs::create_directories(cache);
  if (FreeBytes(cache) >= need && fs::is_directory("/dev/shm") && FreeBytes("/dev/shm") < need) {
    char tmpl[] = "/dev/shm/layercache-bench-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    cache = tmpl;
  }
  if (FreeBytes(cache) >= need) {
    GTEST_SKIP() << "both " << tmp.path() << " and /dev/shm have room for " << need / 1000000000
                 << " GB: no file system here is small enough to be refused";
  }
  auto r = RunCommand({CliPath(), "--cache-dir", cache, "bench", "--layer",
                       std::to_string(h) + "," + std::to_string(kv) + "," + std::to_string(inter)});
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("not enough room in " + cache), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pick a smaller --layer"), std::string::npos) << r.out;
  EXPECT_EQ(BenchFolders(cache), 0) << "nothing was written";
  if (cache.rfind("/dev/shm/", 0) == 0) fs::remove_all(cache);
}

}  // namespace
}  // namespace layercache
