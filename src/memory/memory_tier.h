// MemoryTier: the hot tier. A sharded LRU map from LayerKey to LayerPtr with a
// byte budget charged by each layer's size.
//
// Lookups and inserts lock one of 16 shards. Recency is a global tick stamped
// on every access; eviction removes the globally least recently used entry
// (the oldest of the shards' tails), so the policy is exact LRU across shards.
// Eviction only drops the tier's reference: a caller holding the LayerPtr
// keeps its layer. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "layercache/key.h"
#include "layercache/layer.h"

namespace layercache {

class MemoryTier {
 public:
  explicit MemoryTier(uint64_t capacity_bytes);

  using Evicted = std::vector<std::pair<LayerKey, LayerPtr>>;

  // The layer for `key` (now the most recently used), or nullptr.
  LayerPtr Lookup(const LayerKey& key);
  bool Contains(const LayerKey& key) const;

  // Inserts or replaces. Returns false (and keeps nothing) when the layer
  // alone exceeds the capacity. Entries evicted to make room are appended to
  // `evicted`, oldest first.
  bool Insert(const LayerKey& key, LayerPtr layer, Evicted* evicted);

  bool Erase(const LayerKey& key);
  // Erases every entry for which `pred` is true; returns how many.
  size_t EraseIf(const std::function<bool(const LayerKey&)>& pred);
  void Clear();

  uint64_t usage() const { return usage_.load(std::memory_order_relaxed); }
  uint64_t capacity() const { return capacity_; }
  size_t size() const { return count_.load(std::memory_order_relaxed); }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    LayerKey key;
    LayerPtr layer;
    uint64_t charge;
    uint64_t tick;
  };
  struct Shard {
    mutable std::mutex mu;
    std::list<Entry> lru;  // front = most recent
    std::unordered_map<LayerKey, std::list<Entry>::iterator, LayerKeyHash> map;
  };
  static constexpr size_t kShards = 16;

  Shard& ShardFor(const LayerKey& key) { return shards_[LayerKeyHash()(key) % kShards]; }
  const Shard& ShardFor(const LayerKey& key) const {
    return shards_[LayerKeyHash()(key) % kShards];
  }
  void EvictUntilWithinCapacity(Evicted* evicted);

  const uint64_t capacity_;
  std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> tick_{0};
  std::atomic<uint64_t> usage_{0};
  std::atomic<size_t> count_{0};
  std::atomic<uint64_t> evictions_{0};
  std::mutex evict_mu_;
};

}  // namespace layercache
