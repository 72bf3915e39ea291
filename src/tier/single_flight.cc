#include "tier/single_flight.h"

namespace layercache {

SingleFlight::Value SingleFlight::Do(const LayerKey& key, uint64_t generation,
                                     const std::function<Value()>& work, bool* joined) {
  std::promise<Value> promise;
  *joined = false;
  {
    std::unique_lock lock(mu_);
    auto it = flights_.find(key);
    if (it != flights_.end()) {
      if (it->second.generation != generation) {
        lock.unlock();
        return work();  // alone: the flight running is of an older generation
      }
      std::shared_future<Value> running = it->second.result;
      lock.unlock();
      *joined = true;
      return running.get();
    }
    flights_.emplace(key, Flight{promise.get_future().share(), generation});
  }
  auto finish = [&] {
    std::lock_guard lock(mu_);
    flights_.erase(key);
  };
  try {
    Value result = work();
    promise.set_value(result);
    finish();
    return result;
  } catch (...) {
    promise.set_exception(std::current_exception());
    finish();
    throw;
  }
}

}  // namespace layercache
