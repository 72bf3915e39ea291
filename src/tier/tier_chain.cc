#include "tier/tier_chain.h"

#include <chrono>
#include <stdexcept>

#include "layercache/status.h"
#include "util/logging.h"

namespace layercache {

TierChain::TierChain(std::vector<std::unique_ptr<Tier>> tiers) : tiers_(std::move(tiers)) {
  if (tiers_.empty() || tiers_.size() > kMaxTiers) {
    throw Error(
        Status::InvalidArgument("a tier chain holds 1 to " + std::to_string(kMaxTiers) + " tiers"));
  }
}

TierChain::CounterSlot& TierChain::Slot() {
  // Threads take slots round-robin (thread ids are stack addresses, whose
  // low bits are all alike, so hashing them would put every thread in one slot).
  static std::atomic<size_t> next_slot{0};
  thread_local const size_t index = next_slot.fetch_add(1, std::memory_order_relaxed);
  return slots_[index % slots_.size()];
}

LayerPtr TierChain::Peek(const LayerKeyRef& key) {
  auto hit = tiers_[0]->Get(key);
  return hit.ok() ? std::move(*hit) : nullptr;
}

bool TierChain::ContainsLocally(const LayerKey& key) {
  for (auto& tier : tiers_) {
    if (!tier->shared() && tier->Contains(key)) return true;
  }
  return false;
}

LayerPtr TierChain::GetFromTop(const LayerKeyRef& key) {
  auto hit = tiers_[0]->Get(key);
  if (!hit.ok()) return nullptr;
  CounterSlot& c = Slot();
  c.hits[0].fetch_add(1, std::memory_order_relaxed);
  c.bytes_served.fetch_add((*hit)->nbytes(), std::memory_order_relaxed);
  return std::move(*hit);
}

LayerPtr TierChain::Get(const LayerKeyRef& key) {
  // The cheap checks here; the text checks (NUL bytes, UTF-8) only on a
  // miss: a key that fails them was never cached, so it cannot hit.
  if (key.model_id.empty() || key.layer_index < 0) key.Validate();  // throws
  // One top-tier hit in kTopHitSample is timed (two clock reads would cost as
  // much as the hit): when this slot's hit count is one short of a multiple.
  CounterSlot& c = Slot();
  const bool timed =
      observer_ && (c.hits[0].load(std::memory_order_relaxed) % kTopHitSample) == kTopHitSample - 1;
  const auto t0 =
      timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  if (auto hit = tiers_[0]->Get(key); hit.ok()) {
    c.hits[0].fetch_add(1, std::memory_order_relaxed);
    c.bytes_served.fetch_add((*hit)->nbytes(), std::memory_order_relaxed);
    if (timed)
      observer_(0, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return std::move(*hit);
  }
  key.Validate();
  return GetBelowTop(key.ToKey());
}

LayerPtr TierChain::GetBelowTop(const LayerKey& key) {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t generation = Generation(key);
  bool joined = false;
  size_t served_by = 1;  // a joined load: as if from the tier below the top
  Result<LayerPtr> r = flights_.Do(
      key, generation, [&] { return LookupFrom(1, key, generation, &served_by); }, &joined);
  if (observer_) {
    observer_(r.ok() && *r ? served_by : tiers_.size(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  CounterSlot& c = Slot();
  if (r.ok() && *r) {
    // A caller that joined another's load finds the layer in the top tier.
    if (joined) c.hits[0].fetch_add(1, std::memory_order_relaxed);
    c.bytes_served.fetch_add((*r)->nbytes(), std::memory_order_relaxed);
    return std::move(*r);
  }
  c.misses.fetch_add(1, std::memory_order_relaxed);
  return nullptr;
}

std::optional<uint64_t> TierChain::EpochOf(const LayerKey& key) {
  for (size_t i = 1; i < tiers_.size(); ++i) {
    if (tiers_[i]->shared()) continue;
    if (auto e = tiers_[i]->SharedEpoch(key)) return e;
  }
  return std::nullopt;
}

Result<LayerPtr> TierChain::LookupFrom(size_t from, const LayerKey& key, uint64_t generation,
                                       size_t* served_by) {
  const std::optional<uint64_t> epoch = EpochOf(key);  // before the read
  for (size_t i = from; i < tiers_.size(); ++i) {
    auto r = tiers_[i]->Get(key);
    if (r.ok()) {
      *served_by = i;
      Slot().hits[i].fetch_add(1, std::memory_order_relaxed);
      if (Status s = Fill(key, *r, i, nullptr, /*to_shared=*/false, generation, epoch); !s.ok()) {
        LogWarn(s.message() + " (the layer is served from memory)");
      }
      return r;
    }
    if (!r.status().IsNotFound() && !r.status().IsCorruption()) {
      LogWarn("cannot read " + key.ToString() + " from the " + tiers_[i]->name() +
              " tier: " + r.status().message());
    }
  }
  return Status(StatusCode::kNotFound, key.ToString() + " is not cached");
}

Result<LayerPtr> TierChain::GetOrLoad(const LayerKey& key, const Loader& loader) {
  for (;;) {
    if (LayerPtr layer = Get(LayerKeyRef(key))) return layer;
    const uint64_t generation = Generation(key);
    bool joined = false;
    Result<LayerPtr> r = flights_.Do(
        key, generation, [&] { return LoadAsLeader(key, loader, generation); }, &joined);
    // Another caller's lookup that missed: look again (and perhaps lead).
    if (joined && !r.ok() && r.status().IsNotFound()) continue;
    return r;
  }
}

Result<LayerPtr> TierChain::LoadAsLeader(const LayerKey& key, const Loader& loader,
                                         uint64_t generation) {
  Leases leases(tiers_.size());
  const std::optional<uint64_t> epoch = EpochOf(key);  // before a filled claim is read
  for (size_t i = 0; i < tiers_.size(); ++i) {
    auto claim = tiers_[i]->Acquire(key);
    if (!claim.ok()) return claim.status();
    leases[i] = std::move(claim->lease);
    if (claim->filled) {
      // Another process or node stored it while we waited for the lease.
      Status s = Fill(key, claim->filled, i, &leases, /*to_shared=*/false, generation, epoch);
      if (!s.ok()) LogWarn(s.message() + " (the layer is served from memory)");
      return claim->filled;
    }
  }
  Result<LayerPtr> loaded = loader();
  if (!loaded.ok()) return loaded.status();
  Status s = Fill(key, *loaded, tiers_.size(), &leases, /*to_shared=*/true, std::nullopt);
  if (s.ok()) {
    layers_cached_.fetch_add(1, std::memory_order_relaxed);
  } else {
    LogWarn(s.message() + " (the layer is served from memory)");
  }
  return loaded;
}

Status TierChain::Put(const LayerKey& key, const LayerPtr& layer) {
  Status s = Fill(key, layer, tiers_.size(), nullptr, /*to_shared=*/false, std::nullopt);
  if (s.ok()) layers_cached_.fetch_add(1, std::memory_order_relaxed);
  return s;
}

Status TierChain::Fill(const LayerKey& key, const LayerPtr& layer, size_t upto, Leases* leases,
                       bool to_shared, std::optional<uint64_t> read_at,
                       std::optional<uint64_t> epoch) {
  Status first;
  auto note = [&](Status s) {
    if (s.ok()) return;
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    if (first.ok()) first = std::move(s);
  };
  if (upto > 1) ForgetWriteBack(key);
  for (size_t i = upto; i-- > 1;) {
    if (tiers_[i]->shared() && !to_shared) continue;
    Tier::Evicted dropped;  // below the top, evictions drop their layers
    note(tiers_[i]->Insert(key, layer, leases ? &(*leases)[i] : nullptr, &dropped));
  }
  if (upto == 0) return first;
  // A new version: the epoch once the tiers below hold it.
  if (!read_at) epoch = EpochOf(key);
  // Leases go before the stripe is taken: an invalidation holds every stripe
  // while it waits for leases (locks are taken stripe, then lease).
  if (leases) {
    for (auto& lease : *leases) lease.reset();
  }
  Tier::Evicted evicted;
  {
    Stripe& s = StripeOf(key);
    std::lock_guard lock(s.mu);
    // A put or invalidation came after the read, or one is under way.
    if (read_at && (s.generation != *read_at || invalidating_.load() > 0)) return first;
    if (!read_at) ++s.generation;
    note(tiers_[0]->Insert(key, layer, leases ? &(*leases)[0] : nullptr, &evicted));
    s.write_back[key] = Stripe::Record{layer.get(), epoch};
  }
  Demote(evicted);
  return first;
}

size_t TierChain::NextLocalBelow(size_t i) const {
  size_t below = i + 1;
  while (below < tiers_.size() && tiers_[below]->shared()) ++below;
  return below;
}

// A layer evicted from the top tier goes to the next local tier if it is
// there no more and nothing since made that wrong: a put of its key (the
// record is gone), an invalidation (the same, or one in progress). Under the
// key's lease, taken without waiting (its holder writes a newer version).
void TierChain::Demote(const Tier::Evicted& evicted) {
  const size_t below = NextLocalBelow(0);
  if (evicted.empty() || below == tiers_.size()) return;
  Tier& to = *tiers_[below];
  for (const auto& [k, l] : evicted) {
    auto lease = to.TryLease(k);
    if (!lease.ok() || !lease->has_value()) continue;
    std::optional<uint64_t> epoch;
    {
      Stripe& s = StripeOf(k);
      std::lock_guard lock(s.mu);
      auto it = s.write_back.find(k);
      if (it == s.write_back.end() || it->second.layer != l.get()) continue;  // invalidated since
      epoch = it->second.epoch;
      s.write_back.erase(it);
      if (invalidating_.load() > 0) continue;
      std::lock_guard wb(write_back_mu_);
      ++write_backs_;
    }
    {
      // Skipped when another process invalidated or replaced the key since
      // the layer was read or put (its shared epoch moved).
      bool written = false;
      if (Status st = to.WriteBack(k, l, epoch, &**lease, &written); !st.ok()) {
        LogWarn("layer " + k.ToString() + " evicted from the " + tiers_[0]->name() +
                " tier could not be written to the " + to.name() + " tier: " + st.message());
      }
    }
    {
      std::lock_guard wb(write_back_mu_);
      --write_backs_;
    }
    write_back_cv_.notify_all();
  }
}

uint64_t TierChain::Generation(const LayerKey& key) {
  Stripe& s = StripeOf(key);
  std::lock_guard lock(s.mu);
  return s.generation;
}

void TierChain::ForgetWriteBack(const LayerKey& key) {
  Stripe& s = StripeOf(key);
  std::lock_guard lock(s.mu);
  s.write_back.erase(key);
}

void TierChain::BumpGenerations(const std::function<bool(const LayerKey&)>& invalidated) {
  for (Stripe& s : stripes_) {
    std::lock_guard lock(s.mu);
    ++s.generation;
    std::erase_if(s.write_back, [&](const auto& kv) { return invalidated(kv.first); });
  }
}

TierChain::InvalidationScope::InvalidationScope(TierChain* chain,
                                                std::function<bool(const LayerKey&)> invalidated)
    : chain_(chain), invalidated_(std::move(invalidated)) {
  chain_->invalidating_.fetch_add(1);
  chain_->BumpGenerations(invalidated_);
  std::unique_lock lock(chain_->write_back_mu_);
  chain_->write_back_cv_.wait(lock, [&] { return chain_->write_backs_ == 0; });
}

TierChain::InvalidationScope::~InvalidationScope() {
  chain_->BumpGenerations(invalidated_);
  chain_->invalidating_.fetch_sub(1);
}

// Within an InvalidationScope (no promotion, no write-back meanwhile): the
// lower tiers, then the top. A read of a lower tier that began before is not
// promoted afterwards (its generation is gone); one promoted before is
// erased from the top tier after.
Result<std::vector<size_t>> TierChain::Invalidate(const std::optional<std::string>& model_id,
                                                  const std::optional<int64_t>& layer_index,
                                                  bool clear) {
  auto matches = [&](const LayerKey& k) {
    return !model_id ||
           (k.model_id == *model_id && (!layer_index || k.layer_index == *layer_index));
  };
  std::vector<size_t> counts(tiers_.size());
  auto invalidate = [&](size_t i) -> Status {
    auto n = tiers_[i]->Invalidate(model_id, layer_index);
    if (!n.ok()) return n.status();
    counts[i] = *n;
    return clear ? tiers_[i]->Clear() : Status::OK();
  };
  Status failed;
  {
    InvalidationScope scope(this, matches);
    for (size_t i = tiers_.size(); i-- > 1 && failed.ok();) failed = invalidate(i);
  }
  if (Status s = invalidate(0); failed.ok()) failed = s;
  if (!failed.ok()) return failed;
  return counts;
}

Status TierChain::Clear() {
  Status first;
  {
    InvalidationScope scope(this, [](const LayerKey&) { return true; });
    for (size_t i = tiers_.size(); i-- > 1;) {
      if (Status s = tiers_[i]->Clear(); !s.ok() && first.ok()) first = std::move(s);
    }
  }
  if (Status s = tiers_[0]->Clear(); !s.ok() && first.ok()) first = std::move(s);
  return first;
}

Result<bool> TierChain::Remove(const LayerKey& key) {
  auto forget = [&] {
    Stripe& s = StripeOf(key);
    std::lock_guard lock(s.mu);
    ++s.generation;
    s.write_back.erase(key);
  };
  bool any = false;
  forget();
  for (size_t i = tiers_.size(); i-- > 1;) {
    auto r = tiers_[i]->Remove(key);
    if (!r.ok()) return r.status();
    any = any || *r;
  }
  forget();
  auto top = tiers_[0]->Remove(key);
  if (!top.ok()) return top.status();
  return any || *top;
}

void TierChain::Flush() {
  for (auto& tier : tiers_) tier->Flush();
}

void TierChain::AddStats(CacheStats* stats) {
  std::array<uint64_t, kMaxTiers> hits{};
  for (const CounterSlot& c : slots_) {
    for (size_t i = 0; i < tiers_.size(); ++i) hits[i] += c.hits[i].load(std::memory_order_relaxed);
    stats->total_misses += c.misses.load(std::memory_order_relaxed);
    stats->bytes_served += c.bytes_served.load(std::memory_order_relaxed);
  }
  for (size_t i = 0; i < tiers_.size(); ++i) {
    tiers_[i]->AddStats(stats, hits[i]);
    stats->hits_by_tier[tiers_[i]->name()] += hits[i];
  }
  stats->layers_cached += layers_cached_.load(std::memory_order_relaxed);
  stats->disk_write_errors += write_errors_.load(std::memory_order_relaxed);
}

}  // namespace layercache
