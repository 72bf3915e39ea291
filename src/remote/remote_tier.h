// RemoteTier: layers shared by the nodes of a cluster through Redis (one
// server or a Redis Cluster). See docs/SCALE_OUT.md.
//
// Layout, under the prefix "lc:v1:" (v1: the layout's version):
//   lc:v1:<digest>:m              the manifest (JSON): key, size, chunk size,
//                                 publication id, XXH3-64 of every chunk,
//                                 XXH3-128 of the whole
//   lc:v1:<digest>:<id>:<i>       chunk i of publication <id>: a slice of the
//                                 layer as a safetensors file
//   lc:v1:<digest>:lease          who is loading the layer from the source
// <digest> is the LayerKey's digest (model, layer, quantization, revision).
// Chunk keys carry no hash tag, so a layer's chunks spread over every master
// of a cluster and are fetched from all of them at once. A manifest is
// written only after all its chunks; a missing or corrupt chunk makes the
// entry a miss (and its manifest is deleted so that it is published again).
//
// Every failure (Redis down, slow, full, a broken connection) is a miss plus
// a logged warning and a counted error; a circuit breaker per Redis node
// (remote/redis_client.h) stops using a node for a while after repeated
// failures, so that the masters that answer are still used while one fails
// over.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "layercache/key.h"
#include "layercache/layer.h"
#include "layercache/options.h"
#include "layercache/status.h"
#include "remote/redis_client.h"
#include "tier/tier.h"
#include "util/executor.h"

namespace layercache {

struct RemoteTierOptions {
  std::vector<std::string> urls;  // redis://[user:password@]host:port, one or more seeds
  int timeout_ms = 1000;          // connect, and each read or write
  uint64_t chunk_bytes = 8ull << 20;
  int lease_ms = 15'000;  // renewed every lease_ms / 3 while loading
  int wait_ms = 300'000;  // longest wait for another node's load
  int64_t ttl_s = 0;      // expiry of published keys; 0: none (rely on maxmemory-policy)
  // The pool its parallel work runs on (node groups, the fetch pipeline,
  // publishing); null: Executor::Default(). Must outlive the tier.
  Executor* executor = nullptr;

  // The remote_* fields of the cache's options (URLs resolved from
  // $LAYERCACHE_REMOTE when the options have none).
  static RemoteTierOptions From(const LayerCacheOptions& options);
};

struct RemoteStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t publishes = 0;
  uint64_t lease_waits = 0;
  uint64_t errors = 0;
  uint64_t corrupt = 0;        // entries found incomplete or corrupt (not served)
  uint64_t breaker_opens = 0;  // a node's breaker opened
  bool breaker_open = false;   // some node is set aside now
  uint64_t redirections = 0;   // Redis Cluster MOVED / ASK followed
};

class RemoteTier : public Tier {
 public:
  // Validates the URLs (no connection yet: Redis being down is not an error).
  static Result<std::unique_ptr<RemoteTier>> Open(const RemoteTierOptions& options);
  ~RemoteTier() override;

  // ---- Tier ----
  const char* name() const override { return "remote"; }
  // Fetch(); every failure is a miss (NotFound), counted and logged there.
  Result<LayerPtr> Get(const LayerKeyRef& key) override;
  bool Contains(const LayerKey& key) override;  // a manifest is there
  // PublishAsync() with the lease from Acquire(); returns at once.
  Status Insert(const LayerKey& key, const LayerPtr& layer, std::unique_ptr<TierLease>* lease,
                Evicted* evicted) override;
  // TryAcquireLease(); when another node holds it, WaitForPeer().
  Result<Claim> Acquire(const LayerKey& key) override;
  bool shared() const override { return true; }
  // Published layers stay until they expire (remote_ttl_s) or Redis evicts
  // them: invalidation does not reach other nodes. Returns 0.
  Result<size_t> Invalidate(const std::optional<std::string>& model_id,
                            const std::optional<int64_t>& layer_index) override;
  Result<bool> Remove(const LayerKey& /*key*/) override { return false; }  // as Invalidate
  Status Clear() override { return Status::OK(); }
  void Flush() override;
  void AddStats(CacheStats* stats, uint64_t hits) override;

  // The layer if the remote tier holds a complete, intact copy; nullopt on a
  // miss, or when Redis cannot be used now.
  // `count_miss`: whether a missing manifest counts as a miss in stats().
  std::optional<LayerPtr> Fetch(const LayerKey& key, bool count_miss = true);
  // Publishes in the background (then releases `lease`, if any).
  class Lease;
  void PublishAsync(const LayerKey& key, LayerPtr layer, std::unique_ptr<Lease> lease);
  Status Publish(const LayerKey& key, const Layer& layer);
  // (Flush() waits until every background publication has finished.)

  // Cluster-wide single flight. Acquire: the lease if nobody holds it
  // (renewed in the background until released); nullptr when another node
  // holds it or Redis cannot be used.
  std::unique_ptr<Lease> TryAcquireLease(const LayerKey& key, bool* held_elsewhere);
  // Waits while another node holds the lease and no manifest is there, up
  // to wait_ms; returns the layer once published, nullopt when the holder
  // gave up or died (the caller loads it then).
  std::optional<LayerPtr> WaitForPeer(const LayerKey& key);

  RemoteStats stats() const;

  // What the Redis masters hold and how they are set up, for `layercache
  // stats`: layers (manifests), memory used, maxmemory and its policy.
  struct MasterInfo {
    std::string address;
    uint64_t layers = 0;
    uint64_t used_memory = 0;
    uint64_t maxmemory = 0;
    std::string policy;
  };
  Result<std::vector<MasterInfo>> Describe();
  RedisClient& client() { return *client_; }
  static std::string ManifestKey(const std::string& digest);
  static std::string LeaseKey(const std::string& digest);

 private:
  explicit RemoteTier(const RemoteTierOptions& options, std::vector<RedisEndpoint> seeds);
  // Runs commands if the breaker allows; counts and logs failures.
  Result<std::vector<RedisReply>> Run(const std::vector<RedisCommand>& commands);
  void Miss(const std::string& why, const std::string& digest, bool corrupt);
  // Counts a failed Redis operation; returns `failure`.
  Status Failed(const Status& failure);

  RemoteTierOptions options_;
  std::unique_ptr<RedisClient> client_;
  std::string node_id_;  // this process, in lease values

  std::atomic<uint64_t> hits_{0}, misses_{0}, bytes_read_{0}, bytes_written_{0}, publishes_{0},
      lease_waits_{0}, errors_{0}, corrupt_{0};

  std::mutex pending_mu_;
  std::condition_variable pending_cv_;
  int pending_ = 0;

  // Every lease this tier holds, renewed by one thread (started with the
  // first lease, stopped with the tier), not one thread per load.
  uint64_t AddLease(std::string key, std::string token);
  void DropLease(uint64_t id);
  void RenewLeases();
  std::mutex leases_mu_;
  std::condition_variable leases_cv_;
  std::map<uint64_t, std::pair<std::string, std::string>> leases_;  // id -> (key, token)
  uint64_t next_lease_ = 0;
  bool stop_renewing_ = false;
  std::thread renewer_;
  Executor* executor_;
  // At most 2 publishes at once, on executor_; last: its tasks use the members above.
  std::unique_ptr<Executor::Limited> publisher_;
};

// A held lease, renewed by the tier's renewing thread while it lives;
// released when destroyed. Must not outlive its tier.
class RemoteTier::Lease : public TierLease {
 public:
  Lease(RemoteTier* tier, std::string key, std::string token);
  ~Lease() override;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

 private:
  RemoteTier* tier_;
  std::string key_;
  std::string token_;
  uint64_t id_;
};

}  // namespace layercache
