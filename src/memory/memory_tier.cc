#include "memory/memory_tier.h"

#include <limits>

namespace layercache {

MemoryTier::MemoryTier(uint64_t capacity_bytes) : capacity_(capacity_bytes) {}

LayerPtr MemoryTier::Lookup(const LayerKey& key) {
  Shard& s = ShardFor(key);
  std::lock_guard lock(s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) return nullptr;
  it->second->tick = tick_.fetch_add(1, std::memory_order_relaxed);
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return it->second->layer;
}

bool MemoryTier::Contains(const LayerKey& key) const {
  const Shard& s = ShardFor(key);
  std::lock_guard lock(s.mu);
  return s.map.count(key) != 0;
}

bool MemoryTier::Insert(const LayerKey& key, LayerPtr layer, Evicted* evicted) {
  const uint64_t charge = layer->nbytes();
  if (charge > capacity_) {
    Erase(key);  // a stale smaller version must not stay behind
    return false;
  }
  {
    Shard& s = ShardFor(key);
    std::lock_guard lock(s.mu);
    auto it = s.map.find(key);
    if (it != s.map.end()) {
      usage_.fetch_sub(it->second->charge, std::memory_order_relaxed);
      s.lru.erase(it->second);
      s.map.erase(it);
      count_.fetch_sub(1, std::memory_order_relaxed);
    }
    s.lru.push_front(
        Entry{key, std::move(layer), charge, tick_.fetch_add(1, std::memory_order_relaxed)});
    s.map.emplace(key, s.lru.begin());
    usage_.fetch_add(charge, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
  }
  EvictUntilWithinCapacity(evicted);
  return true;
}

void MemoryTier::EvictUntilWithinCapacity(Evicted* evicted) {
  std::lock_guard evict_lock(evict_mu_);
  while (usage_.load(std::memory_order_relaxed) > capacity_) {
    // Find the shard whose tail is the oldest entry overall.
    size_t victim = kShards;
    uint64_t oldest = std::numeric_limits<uint64_t>::max();
    for (size_t i = 0; i < kShards; ++i) {
      std::lock_guard lock(shards_[i].mu);
      if (!shards_[i].lru.empty() && shards_[i].lru.back().tick < oldest) {
        oldest = shards_[i].lru.back().tick;
        victim = i;
      }
    }
    if (victim == kShards) return;  // nothing left to evict
    Shard& s = shards_[victim];
    std::lock_guard lock(s.mu);
    if (s.lru.empty() || s.lru.back().tick != oldest) continue;  // touched meanwhile
    Entry& e = s.lru.back();
    usage_.fetch_sub(e.charge, std::memory_order_relaxed);
    count_.fetch_sub(1, std::memory_order_relaxed);
    evictions_.fetch_add(1, std::memory_order_relaxed);
    if (evicted != nullptr) evicted->emplace_back(e.key, std::move(e.layer));
    s.map.erase(e.key);
    s.lru.pop_back();
  }
}

bool MemoryTier::Erase(const LayerKey& key) {
  Shard& s = ShardFor(key);
  std::lock_guard lock(s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) return false;
  usage_.fetch_sub(it->second->charge, std::memory_order_relaxed);
  count_.fetch_sub(1, std::memory_order_relaxed);
  s.lru.erase(it->second);
  s.map.erase(it);
  return true;
}

size_t MemoryTier::EraseIf(const std::function<bool(const LayerKey&)>& pred) {
  size_t erased = 0;
  for (Shard& s : shards_) {
    std::lock_guard lock(s.mu);
    for (auto it = s.lru.begin(); it != s.lru.end();) {
      if (pred(it->key)) {
        usage_.fetch_sub(it->charge, std::memory_order_relaxed);
        count_.fetch_sub(1, std::memory_order_relaxed);
        s.map.erase(it->key);
        it = s.lru.erase(it);
        ++erased;
      } else {
        ++it;
      }
    }
  }
  return erased;
}

void MemoryTier::Clear() {
  EraseIf([](const LayerKey&) { return true; });
}

}  // namespace layercache
