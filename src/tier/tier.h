// Tier: what every level of the cache (memory, disk, the Redis cluster tier)
// offers the chain that LayerCache runs over them (tier/tier_chain.h).
//
// A lookup says hit (the layer), miss (NotFound), bad entry (Corruption: the
// tier dropped it and counted it) or failure (any other Status); the chain
// treats all but a hit as "look further down". An insert stores a layer; a
// tier that lets layers go to make room reports those that nobody below
// holds, and the chain writes them to the next tier down. A tier that can
// make other processes or nodes wait while one of them loads a missing key
// offers a lease (Acquire).
//
// A new tier implements this interface and is listed in LayerCache's chain
// (src/layer_cache.cc), top (fastest) first.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "layercache/key.h"
#include "layercache/layer.h"
#include "layercache/stats.h"
#include "layercache/status.h"

namespace layercache {

// A tier's hold on one key while its layer is loaded from the source;
// released when destroyed.
class TierLease {
 public:
  virtual ~TierLease() = default;
};

class Tier {
 public:
  using Evicted = std::vector<std::pair<LayerKey, LayerPtr>>;

  // What Acquire() found: the lease (null when the tier has none to give),
  // and the layer when another holder stored it while this caller waited.
  struct Claim {
    std::unique_ptr<TierLease> lease;
    LayerPtr filled;
  };

  virtual ~Tier() = default;

  // "memory", "disk", "remote": for messages.
  virtual const char* name() const = 0;

  // Hit: the layer. Miss: NotFound (cheap: no message). A bad entry, now
  // removed: Corruption. Anything else: the failure, the entry kept.
  virtual Result<LayerPtr> Get(const LayerKeyRef& key) = 0;
  virtual bool Contains(const LayerKey& key) = 0;

  // Stores `layer` under `key` (replacing what was there). `lease` is this
  // tier's lease on the key when the caller holds one (the tier may take it
  // over). Layers let go to make room that this tier alone held are appended
  // to `evicted`. A tier that declines a layer (larger than its budget, a
  // tier that is only filled asynchronously) returns OK.
  virtual Status Insert(const LayerKey& key, const LayerPtr& layer,
                        std::unique_ptr<TierLease>* lease, Evicted* evicted) = 0;

  // Before a missing key is loaded from the source: waits while another
  // process or node loads it, and returns this caller's lease (or the layer
  // that the other one stored). Default: no lease.
  virtual Result<Claim> Acquire(const LayerKey& key) {
    (void)key;
    return Claim{};
  }

  // The key's lease if nobody holds it now, without waiting (for writes
  // that may be skipped: write-backs); nullopt when someone holds it.
  // Default: no lease needed (an empty one).
  virtual Result<std::optional<std::unique_ptr<TierLease>>> TryLease(const LayerKey& key) {
    (void)key;
    return std::optional<std::unique_ptr<TierLease>>(std::unique_ptr<TierLease>());
  }

  // The key's invalidation epoch, when the tier shares one with the other
  // processes using it (the disk tier: disk/invalidation_epochs.h); nullopt
  // otherwise. A copy of a layer kept in a tier above records it when it was
  // read (taken before the read) or put (after).
  virtual std::optional<uint64_t> SharedEpoch(const LayerKey& key) {
    (void)key;
    return std::nullopt;
  }

  // Writes back a layer that a tier above let go of, under `lease` (from
  // TryLease), if this tier lacks the key and, when `epoch` is set, no
  // process invalidated or replaced the key since that epoch. *written says
  // whether it was stored. Default: Contains, then Insert.
  virtual Status WriteBack(const LayerKey& key, const LayerPtr& layer,
                           std::optional<uint64_t> epoch, std::unique_ptr<TierLease>* lease,
                           bool* written) {
    (void)epoch;
    *written = false;
    if (Contains(key)) return Status::OK();
    Evicted dropped;
    Status s = Insert(key, layer, lease, &dropped);
    *written = s.ok();
    return s;
  }

  // Whether the tier is shared with other nodes: such a tier receives layers
  // loaded from a source (get_or_load, downloads), not those given to
  // cache_layer() nor those it served itself.
  virtual bool shared() const { return false; }

  // Removes one layer (every quantization mode and revision), one model, or
  // (no model_id) everything; returns how many entries went.
  virtual Result<size_t> Invalidate(const std::optional<std::string>& model_id,
                                    const std::optional<int64_t>& layer_index) = 0;

  // Removes the entry of exactly `key`; whether there was one.
  virtual Result<bool> Remove(const LayerKey& key) = 0;

  // Removes everything the tier holds (on disk: files the index lacks too).
  virtual Status Clear() = 0;

  // Waits for background work (asynchronous publication) to finish.
  virtual void Flush() {}

  // Adds the tier's sizes and counters to `stats`; `hits` is the number of
  // lookups the chain served from this tier.
  virtual void AddStats(CacheStats* stats, uint64_t hits) = 0;
};

}  // namespace layercache
