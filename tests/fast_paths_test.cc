// Prefetching, single-flight loads, scan-resistant eviction and direct reads.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <random>
#include <thread>

#include "layercache/layer_cache.h"
#include "memory/memory_tier.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::TempDir;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

LayerCacheOptions Opts(const TempDir& dir, double mem_layers = 100,
                       uint64_t layer_bytes = 64 << 10) {
  LayerCacheOptions o;
  o.cache_dir = dir / "cache";
  o.max_cache_size_gb = 1;
  o.max_memory_cache_size_gb =
      mem_layers * static_cast<double>(MakeLayer(0, layer_bytes)->nbytes()) / kGiB;
  return o;
}

TEST(Prefetch, LoadsLayersFromDiskIntoMemoryInTheBackground) {
  TempDir dir;
  {
    LayerCache writer(Opts(dir));
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(writer.cache_layer("m", i, MakeLayer(i, 64 << 10)));
  }
  LayerCache cache(Opts(dir));
  auto futures = cache.prefetch("m", {0, 1, 2, 3});
  ASSERT_EQ(futures.size(), 4u);
  for (int i = 0; i < 4; ++i)
    EXPECT_TRUE(futures[static_cast<size_t>(i)].get()->ContentEquals(*MakeLayer(i, 64 << 10)));
  const uint64_t read = cache.get_stats().bytes_read_from_disk;
  for (int i = 0; i < 4; ++i) ASSERT_NE(cache.get_layer("m", i), nullptr);
  CacheStats s = cache.get_stats();
  EXPECT_EQ(s.bytes_read_from_disk, read) << "prefetched layers must not be read again";
  EXPECT_EQ(s.memory_cache_entries, 4u);
  auto missing = cache.prefetch("m", {42});
  EXPECT_EQ(missing[0].get(), nullptr);
}

TEST(Prefetch, GetLayerWaitsForTheLoadInFlightInsteadOfRepeatingIt) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  std::atomic<int> loads{0};
  std::promise<void> started, release;
  std::shared_future<void> gate = release.get_future().share();
  auto futures = cache.prefetch("m", {7}, std::nullopt, [&](int64_t i) -> Result<LayerPtr> {
    ++loads;
    started.set_value();
    gate.wait();
    return MakeLayer(static_cast<uint64_t>(i), 64 << 10);
  });
  started.get_future().wait();  // the load is in flight
  auto getter = std::async(std::launch::async, [&] { return cache.get_layer("m", 7); });
  release.set_value();
  LayerPtr got = getter.get();
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(got->ContentEquals(*MakeLayer(7, 64 << 10)));
  EXPECT_EQ(futures[0].get(), got);
  EXPECT_EQ(loads.load(), 1);
}

TEST(Prefetch, GetLayerWithPrefetchWrapsAroundTheModel) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  std::atomic<int> loads{0};
  auto loader = [&](int64_t i) -> Result<LayerPtr> {
    ++loads;
    return MakeLayer(static_cast<uint64_t>(i), 64 << 10);
  };
  LayerPtr last = cache.get_layer_with_prefetch("m", 3, 4, 2, std::nullopt, loader);
  EXPECT_TRUE(last->ContentEquals(*MakeLayer(3, 64 << 10)));
  // Layers 0 and 1 were prefetched: wait for them through the futures.
  for (auto& f : cache.prefetch("m", {0, 1}, std::nullopt, loader)) EXPECT_NE(f.get(), nullptr);
  EXPECT_EQ(loads.load(), 3);
  EXPECT_INVALID_ARGUMENT(cache.get_layer_with_prefetch("m", 4, 4));
}

double SweepHitRatio(EvictionPolicy policy, int layers, int capacity, int passes) {
  auto probe = MakeLayer(0, 4096);
  MemoryTier tier(static_cast<uint64_t>(capacity) * probe->nbytes(), policy);
  std::vector<LayerPtr> model;
  for (int i = 0; i < layers; ++i) model.push_back(MakeLayer(static_cast<uint64_t>(i), 4096));
  int hits = 0, lookups = 0;
  for (int p = 0; p < passes; ++p) {
    for (int i = 0; i < layers; ++i) {
      ++lookups;
      if (tier.Lookup(LayerKey{"m", i, "", ""})) {
        ++hits;
      } else {
        tier.Insert(LayerKey{"m", i, "", ""}, model[static_cast<size_t>(i)], nullptr);
      }
    }
  }
  return static_cast<double>(hits) / lookups;
}

TEST(Eviction, ScanResistantPolicyKeepsHittingOnRepeatedSweeps) {
  EXPECT_EQ(SweepHitRatio(EvictionPolicy::kLru, 10, 4, 30), 0.0) << "LRU thrashes on sweeps";
  const double scan = SweepHitRatio(EvictionPolicy::kScanResistant, 10, 4, 30);
  // Belady's optimum on a cyclic sweep of 10 with room for 4 is (4-1)/(10-1) = 0.333.
  EXPECT_GT(scan, 0.9 * 3.0 / 9.0) << scan;
}

TEST(Eviction, ScanResistantPolicyFollowsLruOnSkewedTraffic) {
  auto run = [](EvictionPolicy policy) {
    auto probe = MakeLayer(0, 4096);
    MemoryTier tier(20 * probe->nbytes(), policy);
    std::mt19937 rng(3);
    // Zipf(1.0) over 200 keys by inverse CDF.
    std::vector<double> cdf(200);
    double sum = 0;
    for (int k = 0; k < 200; ++k) cdf[static_cast<size_t>(k)] = (sum += 1.0 / (k + 1));
    std::uniform_real_distribution<double> u(0, sum);
    int hits = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
      const int k =
          static_cast<int>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
      if (tier.Lookup(LayerKey{"z", k, "", ""})) {
        ++hits;
      } else {
        tier.Insert(LayerKey{"z", k, "", ""}, probe, nullptr);
      }
    }
    return static_cast<double>(hits) / n;
  };
  const double lru = run(EvictionPolicy::kLru);
  const double scan = run(EvictionPolicy::kScanResistant);
  EXPECT_GT(scan, lru * 0.95) << "lru " << lru << " scan-resistant " << scan;
}

TEST(Eviction, DiskTierUsesThePolicyToo) {
  TempDir dir;
  auto o = Opts(dir, 0);
  o.eviction_policy = EvictionPolicy::kScanResistant;
  const uint64_t entry = MakeLayer(0, 16 << 10)->nbytes() + 8192;
  o.max_cache_size_gb = 4.5 * static_cast<double>(entry) / kGiB;
  LayerCache cache(o);
  for (int pass = 0; pass < 12; ++pass) {
    for (int i = 0; i < 10; ++i) {
      if (!cache.get_layer("m", i))
        cache.cache_layer("m", i, MakeLayer(static_cast<uint64_t>(i), 16 << 10));
    }
  }
  CacheStats s = cache.get_stats();
  EXPECT_GT(s.disk_hits, 12u * 10u / 5u) << "hits " << s.disk_hits;
  EXPECT_LE(s.disk_cache_bytes, s.max_disk_cache_bytes);
}

TEST(DirectReads, LargeEntriesReadBackIdenticallyWithODirect) {
  TempDir dir;
  auto o = Opts(dir, 0);
  o.disk_read_mode = DiskReadMode::kDirect;
  LayerCache cache(o);
  for (uint64_t bytes : {uint64_t{3} << 20, uint64_t{20} << 20, (uint64_t{17} << 20) + 6}) {
    std::vector<uint8_t> data(bytes);
    std::mt19937_64 rng(bytes);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    LayerPtr layer = LayerBuilder().add_tensor("w", DType::U8, {bytes}, data).build();
    ASSERT_TRUE(cache.cache_layer("d", static_cast<int64_t>(bytes % 1000), layer));
    LayerPtr back = cache.get_layer("d", static_cast<int64_t>(bytes % 1000));
    ASSERT_NE(back, nullptr);
    EXPECT_TRUE(back->ContentEquals(*layer)) << bytes;
  }
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

TEST(MappedReads, ResidentEntriesAreMappedAndVerified) {
  TempDir dir;
  auto o = Opts(dir, 0);
  o.disk_read_mode = DiskReadMode::kMapped;
  LayerCache cache(o);
  std::vector<uint8_t> data(20u << 20);
  std::mt19937_64 rng(1);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  LayerPtr layer = LayerBuilder().add_tensor("w", DType::U8, {data.size()}, data).build();
  ASSERT_TRUE(cache.cache_layer("m", 0, layer));
  for (int i = 0; i < 2; ++i) {  // cold (read), then warm (mapped)
    LayerPtr back = cache.get_layer("m", 0);
    ASSERT_NE(back, nullptr);
    EXPECT_TRUE(back->ContentEquals(*layer));
  }
  // A corrupted file is still caught when mapped.
  const std::string path = cache.list_entries()[0].path;
  auto bytes = testing::ReadBytes(path);
  bytes[bytes.size() / 2] ^= std::byte{1};
  testing::WriteBytes(path, bytes);
  EXPECT_EQ(cache.get_layer("m", 0), nullptr);
}

}  // namespace
}  // namespace layercache
