#include "memory/memory_tier.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <mutex>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace layercache {

uint64_t RecencyStamp() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

MemoryTier::MemoryTier(uint64_t capacity_bytes, EvictionPolicy policy)
    : capacity_(capacity_bytes), advisor_(policy, capacity_bytes) {
  if (policy != EvictionPolicy::kLru) {
    for (Shard& s : shards_) s.pending.reserve(kPendingMax);  // hits never allocate
  }
}

LayerPtr MemoryTier::Lookup(const LayerKeyRef& key) {
  const size_t hash = LayerKeyHash()(key);
  Shard& s = shards_[hash % kShards];
  std::lock_guard lock(s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) return nullptr;
  Entry& e = *it->second;
  const uint64_t stamp = RecencyStamp();
  e.last_access.store(stamp, std::memory_order_relaxed);
  // The advisor hears of hits at the next eviction decision (a miss path),
  // never on this one. Past kPendingMax hits since the last insertion of the
  // shard, the cache is hitting nearly always and the rest are not recorded.
  if (advisor_.policy() != EvictionPolicy::kLru && s.pending.size() < kPendingMax) {
    s.pending.push_back({stamp, hash, e.charge});
  }
  return e.layer;
}

void MemoryTier::DrainPendingAccesses() {
  if (advisor_.policy() == EvictionPolicy::kLru) return;
  std::vector<PendingAccess> all;
  for (Shard& s : shards_) {
    std::lock_guard lock(s.mu);
    all.insert(all.end(), s.pending.begin(), s.pending.end());
    s.pending.clear();
  }
  std::sort(all.begin(), all.end(),
            [](const PendingAccess& a, const PendingAccess& b) { return a.stamp < b.stamp; });
  for (const PendingAccess& a : all) advisor_.Access(a.id, a.charge);
}

Result<LayerPtr> MemoryTier::Get(const LayerKeyRef& key) {
  if (LayerPtr layer = Lookup(key)) return layer;
  return Status(StatusCode::kNotFound, std::string());  // no message: misses are frequent
}

Status MemoryTier::Insert(const LayerKey& key, const LayerPtr& layer,
                          std::unique_ptr<TierLease>* /*lease*/, Evicted* evicted) {
  (void)Insert(key, LayerPtr(layer), evicted);
  return Status::OK();
}

Result<size_t> MemoryTier::Invalidate(const std::optional<std::string>& model_id,
                                      const std::optional<int64_t>& layer_index) {
  return EraseIf([&](const LayerKey& k) {
    return !model_id ||
           (k.model_id == *model_id && (!layer_index || k.layer_index == *layer_index));
  });
}

void MemoryTier::AddStats(CacheStats* stats, uint64_t hits) {
  stats->memory_cache_entries += size();
  stats->memory_cache_bytes += usage();
  stats->max_memory_cache_bytes += capacity();
  stats->memory_evictions += evictions();
  stats->memory_hits += hits;
}

bool MemoryTier::Contains(const LayerKeyRef& key) const {
  const Shard& s = ShardFor(key);
  std::lock_guard lock(s.mu);
  return s.map.find(key) != s.map.end();
}

bool MemoryTier::Insert(const LayerKey& key, LayerPtr layer, Evicted* evicted) {
  const uint64_t charge = layer->nbytes();
  DrainPendingAccesses();
  advisor_.Access(LayerKeyHash()(key), charge);
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
      count_.fetch_sub(1, std::memory_order_relaxed);
      s.map.erase(it);
    }
    auto e = std::make_unique<Entry>();
    e->key = key;
    e->layer = std::move(layer);
    e->charge = charge;
    e->last_access.store(RecencyStamp(), std::memory_order_relaxed);
    s.map.emplace(key, std::move(e));
    usage_.fetch_add(charge, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
  }
  EvictUntilWithinCapacity(key, evicted);
  return true;
}

void MemoryTier::EvictUntilWithinCapacity(const LayerKey& keep, Evicted* evicted) {
  std::lock_guard evict_lock(evict_mu_);
  while (usage_.load(std::memory_order_relaxed) > capacity_) {
    const bool mru = advisor_.PreferMru();
    // The victim: the oldest stamp (LRU) or the newest (MRU), never `keep`.
    size_t victim_shard = kShards;
    const Entry* victim = nullptr;
    LayerKey victim_key;
    uint64_t best = mru ? 0 : std::numeric_limits<uint64_t>::max();
    for (size_t i = 0; i < kShards; ++i) {
      std::lock_guard lock(shards_[i].mu);
      for (const auto& [k, e] : shards_[i].map) {
        if (!mru && k == keep) continue;  // MRU may evict the newcomer itself (a bypass)
        const uint64_t t = e->last_access.load(std::memory_order_relaxed);
        if (mru ? t >= best : t <= best) {
          best = t;
          victim = e.get();
          victim_shard = i;
          victim_key = k;
        }
      }
    }
    if (victim == nullptr) return;  // only `keep` is left
    Shard& s = shards_[victim_shard];
    std::lock_guard lock(s.mu);
    auto it = s.map.find(LayerKeyRef(victim_key));
    if (it == s.map.end() || it->second.get() != victim) continue;  // removed meanwhile
    std::unique_ptr<Entry> e = std::move(it->second);
    s.map.erase(it);
    usage_.fetch_sub(e->charge, std::memory_order_relaxed);
    count_.fetch_sub(1, std::memory_order_relaxed);
    evictions_.fetch_add(1, std::memory_order_relaxed);
    if (evicted != nullptr) evicted->emplace_back(std::move(e->key), std::move(e->layer));
  }
}

bool MemoryTier::Erase(const LayerKeyRef& key) {
  Shard& s = ShardFor(key);
  std::lock_guard lock(s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) return false;
  usage_.fetch_sub(it->second->charge, std::memory_order_relaxed);
  count_.fetch_sub(1, std::memory_order_relaxed);
  s.map.erase(it);
  return true;
}

size_t MemoryTier::EraseIf(const std::function<bool(const LayerKey&)>& pred) {
  size_t erased = 0;
  for (Shard& s : shards_) {
    std::lock_guard lock(s.mu);
    for (auto it = s.map.begin(); it != s.map.end();) {
      if (pred(it->first)) {
        usage_.fetch_sub(it->second->charge, std::memory_order_relaxed);
        count_.fetch_sub(1, std::memory_order_relaxed);
        it = s.map.erase(it);
        ++erased;
      } else {
        ++it;
      }
    }
  }
  return erased;
}

Status MemoryTier::Clear() {
  EraseIf([](const LayerKey&) { return true; });
  return Status::OK();
}

}  // namespace layercache
