// Many threads on one LayerCache, and several processes on one cache_dir.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <future>
#include <thread>

#include "layercache/layer_cache.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::SeedOf;
using testing::TempDir;

// Operations the stress workers checked, summed over their STRESS lines.
struct StressTotals {
  uint64_t reads = 0, hits = 0, writes = 0, invalidations = 0, samples = 0, max_disk = 0;
};

// Runs the stress worker in 4 processes on dir/cache with `args` after the
// process id, expects each to succeed, and adds up what they checked.
StressTotals RunStressProcesses(const TempDir& dir, const std::vector<std::string>& args) {
  std::vector<std::future<testing::CommandResult>> runs;
  for (int p = 0; p < 4; ++p) {
    runs.push_back(std::async(std::launch::async, [&, p] {
      std::vector<std::string> argv = {testing::WorkerPath(), "stress", dir / "cache",
                                       std::to_string(p)};
      argv.insert(argv.end(), args.begin(), args.end());
      return testing::RunCommand(argv);
    }));
  }
  StressTotals totals;
  int reports = 0;
  for (auto& r : runs) {
    auto result = r.get();
    EXPECT_EQ(result.exit_code, 0) << result.out;
    const size_t at = result.out.find("STRESS ");
    if (at == std::string::npos) continue;
    unsigned long long reads, hits, writes, invalidations, samples, max_disk;
    int bad;
    if (std::sscanf(result.out.c_str() + at,
                    "STRESS reads=%llu hits=%llu writes=%llu invalidations=%llu samples=%llu "
                    "max_disk=%llu bad=%d",
                    &reads, &hits, &writes, &invalidations, &samples, &max_disk, &bad) == 7) {
      ++reports;
      totals.reads += reads;
      totals.hits += hits;
      totals.writes += writes;
      totals.invalidations += invalidations;
      totals.samples += samples;
      totals.max_disk = std::max<uint64_t>(totals.max_disk, max_disk);
    }
  }
  EXPECT_EQ(reports, 4) << "every worker reports what it checked";
  std::printf(
      "stress: %llu reads checked (%llu hits), %llu writes, %llu invalidations, "
      "%llu disk samples, at most %llu bytes on disk\n",
      static_cast<unsigned long long>(totals.reads), static_cast<unsigned long long>(totals.hits),
      static_cast<unsigned long long>(totals.writes),
      static_cast<unsigned long long>(totals.invalidations),
      static_cast<unsigned long long>(totals.samples),
      static_cast<unsigned long long>(totals.max_disk));
  return totals;
}

LayerCacheOptions BudgetOptions(const TempDir& dir, uint64_t budget) {
  LayerCacheOptions o;
  o.cache_dir = dir / "cache";
  o.max_cache_size_gb = static_cast<double>(budget) / (1024.0 * 1024.0 * 1024.0);
  return o;
}

TEST(Concurrency, ManyThreadsMixingEveryOperationReadOnlyRightBytes) {
  TempDir dir;
  LayerCacheOptions o;
  o.cache_dir = dir.path();
  const uint64_t entry = MakeLayer(0, 8 << 10)->nbytes() + 8192;
  o.max_cache_size_gb = 10.0 * static_cast<double>(entry) / (1024.0 * 1024.0 * 1024.0);
  o.max_memory_cache_size_gb = 4.0 * static_cast<double>(entry) / (1024.0 * 1024.0 * 1024.0);
  LayerCache cache(o);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 150; ++i) {
        const int k = (i * 13 + t * 5) % 20;
        const uint64_t seed = SeedOf("t", k);
        switch ((i + t) % 7) {
          case 0:
          case 1:
          case 2:
            if (LayerPtr l = cache.get_layer("t", k);
                l && !l->ContentEquals(*MakeLayer(seed, 8 << 10)))
              ++wrong;
            break;
          case 3:
          case 4:
            cache.cache_layer("t", k, MakeLayer(seed, 8 << 10));
            break;
          case 5: {
            auto r = cache.get_or_load(LayerKey{"t", k, "", ""}, [&]() -> Result<LayerPtr> {
              return MakeLayer(seed, 8 << 10);
            });
            if (!r.ok() || !(*r)->ContentEquals(*MakeLayer(seed, 8 << 10))) ++wrong;
            break;
          }
          case 6:
            if (i % 3 == 0) cache.invalidate_cache("t", k);
            (void)cache.get_stats();
            break;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  CacheStats s = cache.get_stats();
  EXPECT_LE(s.disk_cache_bytes, s.max_disk_cache_bytes);
  EXPECT_LE(s.memory_cache_bytes, s.max_memory_cache_bytes);
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

TEST(MultiProcess, TwoProcessesFillingTheSameLayersLoadEachOnce) {
  TempDir dir;
  const std::string counter = dir / "loads.txt";
  const int layers = 12;
  auto run = [&] {
    return testing::RunCommand({testing::WorkerPath(), "fill", dir / "cache", "shared-model",
                                std::to_string(layers), counter});
  };
  auto a = std::async(std::launch::async, run);
  auto b = std::async(std::launch::async, run);
  auto ra = a.get();
  auto rb = b.get();
  ASSERT_EQ(ra.exit_code, 0) << ra.out;
  ASSERT_EQ(rb.exit_code, 0) << rb.out;
  std::ifstream in(counter);
  std::map<int, int> loads;
  int i;
  while (in >> i) ++loads[i];
  EXPECT_EQ(loads.size(), static_cast<size_t>(layers));
  for (const auto& [layer, n] : loads)
    EXPECT_EQ(n, 1) << "layer " << layer << " was loaded " << n << " times";
  LayerCacheOptions o;
  o.cache_dir = dir / "cache";
  LayerCache cache(o);
  EXPECT_EQ(cache.get_stats().disk_cache_entries, static_cast<uint64_t>(layers));
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

TEST(MultiProcess, FourProcessesUnderATightBudgetStayConsistent) {
  TempDir dir;
  const uint64_t entry = MakeLayer(0, 8 << 10)->nbytes() + 8192;
  const uint64_t budget = 7 * entry;  // about 30% of the 24 keys
  const StressTotals totals = RunStressProcesses(dir, {"300", std::to_string(budget)});
  EXPECT_GT(totals.hits, 0u);
  EXPECT_LE(totals.max_disk, budget + entry);
  LayerCache cache(BudgetOptions(dir, budget));
  EXPECT_LE(cache.get_stats().disk_cache_bytes, budget + entry);
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
  for (const auto& e : cache.list_entries()) {
    LayerPtr l = cache.get_layer(e.key);
    ASSERT_NE(l, nullptr);
    EXPECT_TRUE(l->ContentEquals(*MakeLayer(SeedOf("stress", e.key.layer_index), 8 << 10)));
  }
}

}  // namespace
}  // namespace layercache

namespace layercache {
namespace {

TEST(MultiProcess, FourProcessesOfFourThreadsForSecondsWithEveryReadChecked) {
  TempDir dir;
  const uint64_t entry = MakeLayer(0, 8 << 10)->nbytes() + 8192;
  const uint64_t budget = 7 * entry;  // about 30% of the 24 keys
  const char* env_seconds = std::getenv("LAYERCACHE_STRESS_SECONDS");
  const std::string seconds = env_seconds != nullptr ? env_seconds : "20";
  const StressTotals totals =
      RunStressProcesses(dir, {"1000000", std::to_string(budget), "4", seconds});
  EXPECT_GT(totals.hits, 0u);
  EXPECT_GT(totals.samples, 0u);
  EXPECT_LE(totals.max_disk, budget + entry);
  LayerCache cache(BudgetOptions(dir, budget));
  EXPECT_LE(cache.get_stats().disk_cache_bytes, budget + entry);
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

}  // namespace
}  // namespace layercache
