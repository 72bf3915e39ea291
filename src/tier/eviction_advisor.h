// EvictionAdvisor: decides, at each eviction, whether to evict the least
// recently used entry (LRU) or the most recently used one (MRU).
//
// Layer streaming sweeps layers 0..N-1 again and again. When the model does
// not fit, LRU evicts each layer just before it is needed again and hits
// nothing; MRU keeps a fixed subset and hits capacity/N of the time, which is
// what Belady's optimal policy gets on such sweeps. On skewed (Zipf-like)
// workloads LRU is the better choice. The advisor runs both policies on
// key-only "ghost" caches of the same byte capacity, scores each by its
// recent hits (exponentially decayed) and advises the one that is winning, so
// it follows LRU except when the workload is scanning. Policy kLru (the
// seed's) always says LRU; kScanResistant is the default. Thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "layercache/options.h"

namespace layercache {

class EvictionAdvisor {
 public:
  EvictionAdvisor(EvictionPolicy policy, uint64_t capacity_bytes);

  // Records an access to the entry `id` (a hash of its key) of `bytes`.
  void Access(uint64_t id, uint64_t bytes);
  // Whether the next victim should be the most recently used entry.
  bool PreferMru() const;
  EvictionPolicy policy() const { return policy_; }

 private:
  // A key-only cache simulation.
  class Ghost {
   public:
    Ghost(uint64_t capacity, bool mru) : capacity_(capacity), mru_(mru) {}
    bool Access(uint64_t id, uint64_t bytes);  // true on a ghost hit

   private:
    uint64_t capacity_;
    bool mru_;
    uint64_t used_ = 0;
    std::list<std::pair<uint64_t, uint64_t>> order_;  // front = most recent; (id, bytes)
    std::unordered_map<uint64_t, std::list<std::pair<uint64_t, uint64_t>>::iterator> where_;
  };

  EvictionPolicy policy_;
  mutable std::mutex mu_;
  Ghost lru_;
  Ghost mru_;
  double lru_score_ = 0;
  double mru_score_ = 0;
};

}  // namespace layercache
