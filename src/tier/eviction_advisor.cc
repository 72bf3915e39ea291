#include "tier/eviction_advisor.h"

namespace layercache {
namespace {

// Each access weighs 1; older ones fade with this factor (a window of about
// a thousand accesses).
constexpr double kDecay = 0.999;

}  // namespace

EvictionAdvisor::EvictionAdvisor(EvictionPolicy policy, uint64_t capacity_bytes)
    : policy_(policy), lru_(capacity_bytes, false), mru_(capacity_bytes, true) {}

bool EvictionAdvisor::Ghost::Access(uint64_t id, uint64_t bytes) {
  auto it = where_.find(id);
  if (it != where_.end()) {
    used_ -= it->second->second;
    order_.erase(it->second);
    where_.erase(it);
    order_.emplace_front(id, bytes);
    where_[id] = order_.begin();
    used_ += bytes;
    return true;
  }
  if (bytes > capacity_) return false;
  // Make room by the ghost's own policy, then insert as most recent.
  while (used_ + bytes > capacity_ && !order_.empty()) {
    auto victim = mru_ ? order_.begin() : std::prev(order_.end());
    used_ -= victim->second;
    where_.erase(victim->first);
    order_.erase(victim);
  }
  order_.emplace_front(id, bytes);
  where_[id] = order_.begin();
  used_ += bytes;
  return false;
}

void EvictionAdvisor::Access(uint64_t id, uint64_t bytes) {
  if (policy_ == EvictionPolicy::kLru) return;
  std::lock_guard lock(mu_);
  lru_score_ = lru_score_ * kDecay + (lru_.Access(id, bytes) ? 1.0 : 0.0);
  mru_score_ = mru_score_ * kDecay + (mru_.Access(id, bytes) ? 1.0 : 0.0);
}

bool EvictionAdvisor::PreferMru() const {
  if (policy_ == EvictionPolicy::kLru) return false;
  std::lock_guard lock(mu_);
  return mru_score_ > lru_score_ * 1.05 + 0.5;
}

}  // namespace layercache
