// TierChain with a tier it was not written for: a test-only map tier listed
// under the memory tier. Issue #12: a new tier is one class and one line in
// the chain; its hits, promotions, invalidations and statistics then work
// like the built-in tiers'.
#include "tier/tier_chain.h"

#include <gtest/gtest.h>

#include <unordered_map>
#include <mutex>

#include "memory/memory_tier.h"
#include "test_layers.h"

namespace layercache {
namespace {

using testing::MakeLayer;
constexpr uint64_t kMiB = 1 << 20;

// An unbounded map: the smallest complete Tier.
class MapTier : public Tier {
 public:
  const char* name() const override { return "map"; }
  Result<LayerPtr> Get(const LayerKeyRef& key) override {
    std::lock_guard lock(mu_);
    auto it = layers_.find(key.ToKey());
    if (it == layers_.end()) return Status::NotFound(key.ToKey().ToString());
    return it->second;
  }
  bool Contains(const LayerKey& key) override {
    std::lock_guard lock(mu_);
    return layers_.count(key) != 0;
  }
  Status Insert(const LayerKey& key, const LayerPtr& layer, std::unique_ptr<TierLease>*,
                Evicted*) override {
    std::lock_guard lock(mu_);
    layers_[key] = layer;
    return Status::OK();
  }
  Result<size_t> Invalidate(const std::optional<std::string>& model_id,
                            const std::optional<int64_t>& layer_index) override {
    std::lock_guard lock(mu_);
    return std::erase_if(layers_, [&](const auto& kv) {
      return (!model_id || kv.first.model_id == *model_id) &&
             (!layer_index || kv.first.layer_index == *layer_index);
    });
  }
  Result<bool> Remove(const LayerKey& key) override {
    std::lock_guard lock(mu_);
    return layers_.erase(key) != 0;
  }
  Status Clear() override {
    std::lock_guard lock(mu_);
    layers_.clear();
    return Status::OK();
  }
  void AddStats(CacheStats*, uint64_t) override {}

 private:
  std::mutex mu_;
  std::unordered_map<LayerKey, LayerPtr, LayerKeyHash, std::equal_to<>> layers_;
};

TEST(TierChain, ANewTierServesPromotesInvalidatesAndIsCountedByName) {
  auto memory = std::make_unique<MemoryTier>(64 * kMiB);
  MemoryTier* top = memory.get();
  std::vector<std::unique_ptr<Tier>> tiers;
  tiers.push_back(std::move(memory));
  tiers.push_back(std::make_unique<MapTier>());  // the one line
  TierChain chain(std::move(tiers));
  std::vector<size_t> served;
  chain.set_lookup_observer([&](size_t tier, double) { served.push_back(tier); });

  const LayerKey a{"m", 0, "", ""}, b{"m", 1, "", ""};
  const LayerPtr la = MakeLayer(1, kMiB), lb = MakeLayer(2, kMiB);
  ASSERT_TRUE(chain.Put(a, la).ok());
  ASSERT_TRUE(chain.Put(b, lb).ok());
  ASSERT_TRUE(chain.tier(1).Contains(a));  // filled below the top too

  // Served by the map tier once the memory tier has let it go, and promoted.
  ASSERT_TRUE(top->Remove(a).ok());
  LayerPtr got = chain.Get(LayerKeyRef(a));
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(got->ContentEquals(*la));
  ASSERT_EQ(served.size(), 1u);
  EXPECT_EQ(served[0], 1u);  // the map tier
  EXPECT_NE(top->Lookup(LayerKeyRef(a)), nullptr);

  CacheStats s;
  chain.AddStats(&s);
  EXPECT_EQ(s.hits_by_tier["map"], 1u);
  EXPECT_EQ(s.hits_by_tier["memory"], 0u);

  // Invalidation reaches it, in tier order.
  auto removed = chain.Invalidate(std::string("m"), int64_t{1}, /*clear=*/false);
  ASSERT_TRUE(removed.ok());
  ASSERT_EQ(removed->size(), 2u);
  EXPECT_EQ((*removed)[1], 1u);
  EXPECT_FALSE(chain.tier(1).Contains(b));
  EXPECT_EQ(chain.Get(LayerKeyRef(b)), nullptr);
  CacheStats after;
  chain.AddStats(&after);
  EXPECT_EQ(after.total_misses, 1u);
}

}  // namespace
}  // namespace layercache
