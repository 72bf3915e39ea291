// TierChain: the tiers of a LayerCache, top (fastest) first, run as one
// cache. Three paths, whatever the tiers are:
//
//   lookup     tiers in order; a hit in tier i is stored in the tiers above
//              it (promotion), a miss or failure looks further down.
//   load       on a miss, one caller per key in this process (SingleFlight)
//              takes every tier's lease in order (Tier::Acquire: another
//              process or node may fill the key meanwhile, and then that
//              layer is promoted instead), runs the loader, and fills every
//              tier, shared ones included.
//   fill       cache_layer(): every tier that is not shared.
// Layers a tier lets go of to make room are written to the next tier down
// when it lacks them (the memory tier "evicts to disk").
//
// Versions in the top tier never go back in time (tests/versioned_stress_test.cc):
// each key (by stripe) has a generation that every put and invalidation
// bumps when it updates the top tier. A layer read from a lower tier goes
// into the top tier only if its key's generation did not move since the read
// began (else a put or invalidation completed meanwhile, and the read may be
// older), and a lookup does not join a flight of an older generation. Only
// layers recorded as put into the top tier are written back when evicted:
// an invalidation drops its keys' records before it removes their entries
// (and a write-back happens under the record's lock), so a layer it
// invalidated is never written back. Across processes, each record carries
// the key's shared epoch (disk/invalidation_epochs.h) from when the layer was
// read or put, and the tier below writes it back only if no process
// invalidated or replaced the key since: docs/RELIABILITY.md.
//
// Counters (hits per tier, misses, bytes served) are striped over cache
// lines so that threads hitting the top tier do not contend. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tier/single_flight.h"
#include "tier/tier.h"

namespace layercache {

class TierChain {
 public:
  static constexpr size_t kMaxTiers = 8;
  using Loader = std::function<Result<LayerPtr>()>;

  // `tiers`: top first; at least one, at most kMaxTiers.
  explicit TierChain(std::vector<std::unique_ptr<Tier>> tiers);

  // The lookup path: the layer, or nullptr on a miss (failures are logged).
  // A hit in the top tier allocates nothing and touches no shared counter.
  // Throws Error (kInvalidArgument) for an invalid key.
  LayerPtr Get(const LayerKeyRef& key);
  // The top tier's copy, counted as a hit; nullptr (counting nothing) when
  // the top tier lacks it. No key check.
  LayerPtr GetFromTop(const LayerKeyRef& key);
  // As Get, after the caller found the top tier without the key (prefetch).
  LayerPtr GetBelowTop(const LayerKey& key);
  // The top tier's copy, if any; counts nothing.
  LayerPtr Peek(const LayerKeyRef& key);
  // Whether a tier that is not shared holds the key.
  bool ContainsLocally(const LayerKey& key);

  // The load path: the cached layer, or `loader`'s (then cached everywhere).
  // Errors from the loader are returned as they are.
  Result<LayerPtr> GetOrLoad(const LayerKey& key, const Loader& loader);

  // The fill path: stores `layer` in every tier that is not shared. Returns
  // the first tier's failure (the other tiers still get the layer).
  Status Put(const LayerKey& key, const LayerPtr& layer);

  // Stores `layer` in the top tier alone, as a new version of `key` (what a
  // front over the chain, the GPU tier, hands back to host memory).
  Status PutTop(const LayerKey& key, const LayerPtr& layer) {
    return Fill(key, layer, 1, nullptr, /*to_shared=*/false, std::nullopt);
  }

  // Every tier's Invalidate (and, `clear`, Clear), lowest first; the
  // counts, in tier order.
  Result<std::vector<size_t>> Invalidate(const std::optional<std::string>& model_id,
                                         const std::optional<int64_t>& layer_index, bool clear);
  // Every tier's Clear, lowest first; the first failure.
  Status Clear();
  // Every tier's Remove of exactly `key`; whether any tier held it.
  Result<bool> Remove(const LayerKey& key);
  void Flush();

  // Sizes and counters of every tier, and the chain's: hits, misses, bytes
  // served, layers cached, write errors (as disk_write_errors).
  void AddStats(CacheStats* stats);

  // Called after each lookup past the top tier with the tier that served it
  // (size() on a miss) and the seconds it took, and for one top-tier hit in
  // kTopHitSample with tier 0. Set before use.
  // Hits in the top tier are sampled: one in kTopHitSample is reported (tier
  // 0), standing for that many.
  static constexpr uint64_t kTopHitSample = 64;
  void set_lookup_observer(std::function<void(size_t tier, double seconds)> observer) {
    observer_ = std::move(observer);
  }

  size_t size() const { return tiers_.size(); }
  Tier& tier(size_t i) { return *tiers_[i]; }

 private:
  using Leases = std::vector<std::unique_ptr<TierLease>>;
  // Looks the key up in tiers [from, size()); promotes a hit (if the key's
  // generation is still `generation`).
  Result<LayerPtr> LookupFrom(size_t from, const LayerKey& key, uint64_t generation,
                              size_t* served_by);
  Result<LayerPtr> LoadAsLeader(const LayerKey& key, const Loader& loader, uint64_t generation);
  // Stores `layer` in tiers [0, upto), lowest first, shared ones only when
  // `to_shared`; `leases` (if any) are the caller's, by tier. `read_at`: the
  // layer was read from tier `upto` when the key's generation was that (the
  // top tier gets it only if it still is); none: a new version (bumps it).
  // `epoch`: the key's shared epoch taken before the read (read_at set); for
  // a new version it is taken after the lower tiers stored it.
  Status Fill(const LayerKey& key, const LayerPtr& layer, size_t upto, Leases* leases,
              bool to_shared, std::optional<uint64_t> read_at,
              std::optional<uint64_t> epoch = std::nullopt);
  // The key's shared epoch from the first local tier below the top that has one.
  std::optional<uint64_t> EpochOf(const LayerKey& key);
  // Writes layers that the top tier let go of to the next tier down that is
  // not shared, unless it has them or they were invalidated or replaced.
  void Demote(const Tier::Evicted& evicted);
  size_t NextLocalBelow(size_t i) const;

  struct alignas(64) Stripe {
    std::mutex mu;
    uint64_t generation = 0;
    // The layers in the top tier that may be written back when evicted,
    // with the key's shared epoch when they were read or put (Tier::SharedEpoch).
    struct Record {
      const Layer* layer;
      std::optional<uint64_t> epoch;
    };
    std::unordered_map<LayerKey, Record, LayerKeyHash> write_back;
  };
  static constexpr size_t kStripes = 64;
  Stripe& StripeOf(const LayerKey& key) { return stripes_[LayerKeyHash()(key) % kStripes]; }
  uint64_t Generation(const LayerKey& key);
  // Before a new version of `key` is written below the top: the old one in
  // the top tier must not be written back over it.
  void ForgetWriteBack(const LayerKey& key);
  // Bumps every stripe's generation and drops the write-back records of the
  // keys being invalidated (one stripe locked at a time).
  void BumpGenerations(const std::function<bool(const LayerKey&)>& invalidated);
  // While an invalidation removes entries from the lower tiers: no layer read
  // from them is promoted and no write-back starts; write-backs begun before
  // finish first (they hold their key's lease, so the invalidation would miss
  // an entry they are about to commit). No lock is held while waiting.
  class InvalidationScope {
   public:
    InvalidationScope(TierChain* chain, std::function<bool(const LayerKey&)> invalidated);
    ~InvalidationScope();
    InvalidationScope(const InvalidationScope&) = delete;
    InvalidationScope& operator=(const InvalidationScope&) = delete;

   private:
    TierChain* chain_;
    std::function<bool(const LayerKey&)> invalidated_;
  };
  std::atomic<int> invalidating_{0};
  std::mutex write_back_mu_;
  std::condition_variable write_back_cv_;
  int write_backs_ = 0;  // in progress

  std::vector<std::unique_ptr<Tier>> tiers_;
  std::function<void(size_t, double)> observer_;
  SingleFlight flights_;
  std::array<Stripe, kStripes> stripes_;

  struct alignas(64) CounterSlot {
    std::array<std::atomic<uint64_t>, kMaxTiers> hits{};
    std::atomic<uint64_t> misses{0};
    std::atomic<uint64_t> bytes_served{0};
  };
  std::array<CounterSlot, 16> slots_;
  CounterSlot& Slot();
  std::atomic<uint64_t> layers_cached_{0};
  std::atomic<uint64_t> write_errors_{0};
};

}  // namespace layercache
