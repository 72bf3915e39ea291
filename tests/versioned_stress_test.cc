// The versioned stress: 4 processes x 4 threads put, read and invalidate the
// same 16 keys; every write carries (key, version, writer) in its bytes and
// every read is checked (tests/versioned_worker.cc says exactly what holds).
// Run with the memory tier off (linearizable per key across processes), on
// in one process of 16 threads (linearizable), on in 4 processes (each
// process's own acknowledgements hold: no write-back of another process
// undoes them; older versions than other processes' acknowledgements
// counted) and with the Redis tier.
// LAYERCACHE_STRESS_SECONDS sets the duration (default 10 s per run).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <vector>

#include "layercache/layer_cache.h"
#include "redis_server.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::TempDir;

struct Totals {
  unsigned long long reads = 0, hits = 0, puts = 0, invalidations = 0, torn = 0, stale = 0,
                     bad_misses = 0, xstale = 0, joined = 0, own_stale = 0;
};

std::string Seconds() {
  const char* s = std::getenv("LAYERCACHE_STRESS_SECONDS");
  return s != nullptr && *s != '\0' ? s : "10";
}

// memory: 0 off, 1 on (each process's own acknowledgements checked), 2 on in
// several processes (the same check).
Totals RunVersioned(const TempDir& dir, int processes, int threads, int memory,
                    const std::string& urls = "") {
  testing::WriteText(dir / "shared", "");
  std::vector<std::future<testing::CommandResult>> runs;
  for (int p = 0; p < processes; ++p) {
    runs.push_back(std::async(std::launch::async, [&, p] {
      std::vector<std::string> argv = {
          LAYERCACHE_VERSIONED_WORKER, dir / "cache", dir / "shared",        std::to_string(p),
          std::to_string(threads),     Seconds(),     std::to_string(memory)};
      if (!urls.empty()) argv.push_back(urls);
      return testing::RunCommand(argv);
    }));
  }
  Totals t;
  int reports = 0;
  for (auto& r : runs) {
    auto result = r.get();
    EXPECT_EQ(result.exit_code, 0) << result.out.substr(0, 4000);
    const size_t at = result.out.find("VERSIONED ");
    if (at == std::string::npos) continue;
    Totals one;
    if (std::sscanf(
            result.out.c_str() + at,
            "VERSIONED reads=%llu hits=%llu puts=%llu invalidations=%llu torn=%llu "
            "stale=%llu bad_misses=%llu cross_process_stale=%llu joined=%llu own_stale=%llu",
            &one.reads, &one.hits, &one.puts, &one.invalidations, &one.torn, &one.stale,
            &one.bad_misses, &one.xstale, &one.joined, &one.own_stale) == 10) {
      ++reports;
      t.reads += one.reads, t.hits += one.hits, t.puts += one.puts;
      t.invalidations += one.invalidations, t.torn += one.torn, t.stale += one.stale;
      t.bad_misses += one.bad_misses, t.xstale += one.xstale, t.joined += one.joined;
      t.own_stale += one.own_stale;
    }
  }
  EXPECT_EQ(reports, processes);
  std::printf(
      "versioned stress (%d processes x %d threads, %s s, memory tier %s%s): %llu reads checked "
      "(%llu hits), %llu puts, "
      "%llu invalidations; torn %llu, stale %llu, wrong misses %llu; stale across processes "
      "(memory tier, not a failure) %llu; reads that joined one in flight (checked against their "
      "process only) %llu; older than the process's own acknowledgements (memory tier, several "
      "processes: counted) %llu\n",
      processes, threads, Seconds().c_str(), memory != 0 ? "on" : "off",
      urls.empty() ? "" : ", Redis tier", t.reads, t.hits, t.puts, t.invalidations, t.torn, t.stale,
      t.bad_misses, t.xstale, t.joined, t.own_stale);
  EXPECT_GT(t.hits, 0u);
  EXPECT_GT(t.invalidations, 0u);
  EXPECT_EQ(t.torn, 0u);
  EXPECT_EQ(t.stale, 0u);
  EXPECT_EQ(t.bad_misses, 0u);
  LayerCacheOptions o;
  o.cache_dir = dir / "cache";
  LayerCache cache(o);
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
  return t;
}

TEST(VersionedStress, FourProcessesOfFourThreadsMemoryTierOffLinearizableAcrossProcesses) {
  TempDir dir;
  RunVersioned(dir, 4, 4, /*memory=*/0);
}

TEST(VersionedStress, OneProcessOfSixteenThreadsMemoryTierOnLinearizable) {
  TempDir dir;
  RunVersioned(dir, 1, 16, /*memory=*/1);
}

// Several processes with their memory tiers: every read is one whole version,
// and never older than what its own process acknowledged (a put, or an
// invalidation that another process's write-back of an evicted layer must
// not undo); reads older than other processes' acknowledgements are counted.
TEST(VersionedStress, FourProcessesOfFourThreadsMemoryTierOnNoWriteBackUndoesAnInvalidation) {
  TempDir dir;
  RunVersioned(dir, 4, 4, /*memory=*/2);
}

TEST(VersionedStress, FourProcessesOfFourThreadsWithTheRedisTier) {
  LAYERCACHE_REQUIRE(testing::RedisInstalled(),
                     "redis-server is not installed (scripts/install-deps.sh installs it)");
  TempDir dir;
  testing::RedisServer redis(dir.path(), /*cluster=*/false);
  ASSERT_TRUE(redis.up());
  RunVersioned(dir, 4, 4, /*memory=*/0, redis.url());
}

}  // namespace
}  // namespace layercache
