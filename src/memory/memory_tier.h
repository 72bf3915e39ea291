// MemoryTier: the hot tier. A sharded map from LayerKey to LayerPtr with a
// byte budget charged by each layer's size.
//
// Hits are cheap and scale across threads: a hit takes the lock of one of 16
// shards (briefly: a hash lookup), stamps the entry with the time (a relaxed
// store to the entry alone: no list to splice, no counter shared by all
// threads) and copies the LayerPtr; the lookup itself needs no allocation
// (LayerKeyRef). Eviction,
// which happens when a layer is inserted, scans the stamps for the victim: the
// least recently used entry overall (exact LRU across shards), or, when the
// EvictionAdvisor says the workload is sweeping, the most recently used one
// (possibly the layer being inserted: a bypass, as Belady's policy would do).
// Eviction only drops the tier's reference: a holder keeps its layer.
// Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "layercache/key.h"
#include "layercache/layer.h"
#include "tier/eviction_advisor.h"
#include "tier/tier.h"

namespace layercache {

class MemoryTier : public Tier {
 public:
  explicit MemoryTier(uint64_t capacity_bytes, EvictionPolicy policy = EvictionPolicy::kLru);

  using Evicted = Tier::Evicted;

  // ---- Tier ----
  const char* name() const override { return "memory"; }
  Result<LayerPtr> Get(const LayerKeyRef& key) override;
  bool Contains(const LayerKey& key) override { return Contains(LayerKeyRef(key)); }
  // A layer larger than the whole budget is not kept (and is no error).
  Status Insert(const LayerKey& key, const LayerPtr& layer, std::unique_ptr<TierLease>* lease,
                Evicted* evicted) override;
  Result<size_t> Invalidate(const std::optional<std::string>& model_id,
                            const std::optional<int64_t>& layer_index) override;
  Result<bool> Remove(const LayerKey& key) override { return Erase(LayerKeyRef(key)); }
  Status Clear() override;
  void AddStats(CacheStats* stats, uint64_t hits) override;

  // The layer for `key` (now the most recently used), or nullptr.
  LayerPtr Lookup(const LayerKeyRef& key);
  bool Contains(const LayerKeyRef& key) const;

  // Inserts or replaces. Returns false (and keeps nothing) when the layer
  // alone exceeds the capacity. Entries evicted to make room are appended to
  // `evicted`, in eviction order.
  bool Insert(const LayerKey& key, LayerPtr layer, Evicted* evicted);

  bool Erase(const LayerKeyRef& key);
  // Erases every entry for which `pred` is true; returns how many.
  size_t EraseIf(const std::function<bool(const LayerKey&)>& pred);

  uint64_t usage() const { return usage_.load(std::memory_order_relaxed); }
  uint64_t capacity() const { return capacity_; }
  size_t size() const { return count_.load(std::memory_order_relaxed); }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  EvictionAdvisor& advisor() { return advisor_; }

 private:
  struct Entry {
    LayerKey key;
    LayerPtr layer;
    uint64_t charge = 0;
    std::atomic<uint64_t> last_access{0};
  };
  // A hit seen by the EvictionAdvisor later: (time stamp, key hash, charge).
  struct PendingAccess {
    uint64_t stamp;
    uint64_t id;
    uint64_t charge;
  };
  struct alignas(64) Shard {
    mutable std::mutex mu;
    std::unordered_map<LayerKey, std::unique_ptr<Entry>, LayerKeyHash, LayerKeyEqual> map;
    // Hits not yet told to the advisor (a policy other than LRU): a hit
    // appends here under the shard lock it holds anyway (no allocation: the
    // room is reserved), instead of updating the advisor's ghost caches; they
    // are told in time order before each eviction decision.
    std::vector<PendingAccess> pending;
  };
  static constexpr size_t kPendingMax = 1024;
  static constexpr size_t kShards = 16;

  Shard& ShardFor(const LayerKeyRef& key) { return shards_[LayerKeyHash()(key) % kShards]; }
  const Shard& ShardFor(const LayerKeyRef& key) const {
    return shards_[LayerKeyHash()(key) % kShards];
  }
  void EvictUntilWithinCapacity(const LayerKey& keep, Evicted* evicted);
  // Tells the advisor every pending hit, in time order.
  void DrainPendingAccesses();

  const uint64_t capacity_;
  std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> usage_{0};
  std::atomic<size_t> count_{0};
  std::atomic<uint64_t> evictions_{0};
  std::mutex evict_mu_;
  EvictionAdvisor advisor_;
};

// A monotonic time stamp for recency (the TSC on x86-64: a few ns, no shared
// write).
uint64_t RecencyStamp();

}  // namespace layercache
