#include "memory/memory_tier.h"

#include <gtest/gtest.h>

#include <thread>

#include "test_support.h"

namespace layercache {
namespace {

LayerKey K(int64_t i) { return LayerKey{"m", i, "", ""}; }

TEST(MemoryTier, EvictsTheLeastRecentlyUsedFirstAndReportsIt) {
  auto layer = testing::MakeLayer(1, 1000);
  const uint64_t size = layer->nbytes();
  MemoryTier tier(3 * size);
  MemoryTier::Evicted evicted;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(tier.Insert(K(i), testing::MakeLayer(i, 1000), &evicted));
  EXPECT_TRUE(evicted.empty());
  ASSERT_NE(tier.Lookup(K(0)), nullptr);  // 1 is now the oldest
  ASSERT_TRUE(tier.Insert(K(3), testing::MakeLayer(3, 1000), &evicted));
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].first, K(1));
  EXPECT_EQ(tier.Lookup(K(1)), nullptr);
  EXPECT_NE(tier.Lookup(K(0)), nullptr);
  EXPECT_EQ(tier.size(), 3u);
  EXPECT_EQ(tier.usage(), 3 * size);
  EXPECT_EQ(tier.evictions(), 1u);
}

TEST(MemoryTier, EvictionAcrossShardsIsGlobalLru) {
  auto probe = testing::MakeLayer(0, 1000);
  MemoryTier tier(10 * probe->nbytes());
  for (int i = 0; i < 10; ++i) tier.Insert(K(i), testing::MakeLayer(i, 1000), nullptr);
  for (int i = 9; i >= 0; --i) ASSERT_NE(tier.Lookup(K(i)), nullptr);  // 9 oldest ... 0 newest
  MemoryTier::Evicted evicted;
  for (int i = 10; i < 15; ++i) tier.Insert(K(i), testing::MakeLayer(i, 1000), &evicted);
  ASSERT_EQ(evicted.size(), 5u);
  for (int j = 0; j < 5; ++j) EXPECT_EQ(evicted[static_cast<size_t>(j)].first, K(9 - j));
}

TEST(MemoryTier, NeverExceedsItsBudgetAndRefusesOversizedLayers) {
  auto layer = testing::MakeLayer(1, 1000);
  MemoryTier tier(layer->nbytes() / 2);
  EXPECT_FALSE(tier.Insert(K(0), layer, nullptr));
  EXPECT_EQ(tier.usage(), 0u);
  EXPECT_EQ(tier.Lookup(K(0)), nullptr);
}

TEST(MemoryTier, EvictedLayersStayValidForTheirHolders) {
  auto probe = testing::MakeLayer(0, 1000);
  MemoryTier tier(probe->nbytes());
  tier.Insert(K(0), testing::MakeLayer(0, 1000), nullptr);
  LayerPtr held = tier.Lookup(K(0));
  tier.Insert(K(1), testing::MakeLayer(1, 1000), nullptr);
  EXPECT_EQ(tier.Lookup(K(0)), nullptr);
  EXPECT_TRUE(held->ContentEquals(*testing::MakeLayer(0, 1000)));
}

TEST(MemoryTier, ReplaceEraseAndEraseIfKeepUsageExact) {
  MemoryTier tier(1 << 20);
  tier.Insert(K(0), testing::MakeLayer(0, 1000), nullptr);
  tier.Insert(K(0), testing::MakeLayer(0, 4000), nullptr);
  EXPECT_EQ(tier.size(), 1u);
  EXPECT_EQ(tier.usage(), testing::MakeLayer(0, 4000)->nbytes());
  tier.Insert(K(1), testing::MakeLayer(1, 1000), nullptr);
  tier.Insert(LayerKey{"other", 1, "", ""}, testing::MakeLayer(2, 1000), nullptr);
  EXPECT_EQ(tier.EraseIf([](const LayerKey& k) { return k.model_id == "m"; }), 2u);
  EXPECT_EQ(tier.size(), 1u);
  EXPECT_TRUE(tier.Erase(LayerKey{"other", 1, "", ""}));
  EXPECT_EQ(tier.usage(), 0u);
}

TEST(MemoryTier, ConcurrentInsertsAndLookupsKeepTheBudget) {
  auto probe = testing::MakeLayer(0, 2000);
  MemoryTier tier(20 * probe->nbytes());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 400; ++i) {
        const int64_t k = (i * 7 + t) % 50;
        if (LayerPtr l = tier.Lookup(K(k))) {
          EXPECT_TRUE(l->ContentEquals(*testing::MakeLayer(static_cast<uint64_t>(k), 2000)));
        } else {
          tier.Insert(K(k), testing::MakeLayer(static_cast<uint64_t>(k), 2000), nullptr);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(tier.usage(), tier.capacity());
  EXPECT_LE(tier.size(), 20u);
}

}  // namespace
}  // namespace layercache
