// SingleFlight: one load per key at a time in this process. The first caller
// for a key runs the work; callers that arrive while it runs wait for it and
// share its result. (Across processes and nodes, tiers' leases do the same:
// Tier::Acquire.)
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <mutex>
#include <unordered_map>

#include "layercache/key.h"
#include "layercache/layer.h"
#include "layercache/status.h"

namespace layercache {

class SingleFlight {
 public:
  using Value = Result<LayerPtr>;

  // Runs `work` for `key`, or, when a call for `key` that began at the same
  // `generation` is already running, waits for it and returns its result
  // (`*joined` tells which). A call of an older generation (one that began
  // before a put or invalidation of the key completed) is not joined: its
  // result may be older than what the caller was told; `work` then runs
  // alone. An exception thrown by `work` reaches its caller and every waiter.
  Value Do(const LayerKey& key, uint64_t generation, const std::function<Value()>& work,
           bool* joined);

 private:
  struct Flight {
    std::shared_future<Value> result;
    uint64_t generation = 0;
  };
  std::mutex mu_;
  std::unordered_map<LayerKey, Flight, LayerKeyHash> flights_;
};

}  // namespace layercache
