// RedisClient: a thread-safe client for one Redis server or a Redis Cluster,
// on Debian's hiredis (0.14). Commands are pipelined per node; in a cluster
// each goes to the master of its key's hash slot (CRC16, hash tags), the slot
// map comes from CLUSTER SLOTS, and MOVED / ASK redirections are followed.
// Connections are pooled per node; a broken one is dropped, not reused.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "layercache/status.h"

struct redisContext;
struct redisReply;

namespace layercache {

struct RedisEndpoint {
  std::string host;
  int port = 6379;
  std::string user;  // Redis 6+ ACL user ("" : the default user)
  std::string password;
  std::string Address() const { return host + ":" + std::to_string(port); }
};

// redis://[[user]:password@]host[:port][/] ; rediss:// is refused with the
// reason (Debian's hiredis 0.14 has no TLS). The password is never logged.
Result<RedisEndpoint> ParseRedisUrl(const std::string& url);
// `url` with its user and password replaced by "***", for messages.
std::string RedactRedisUrl(const std::string& url);

// The cluster hash slot of `key` (CRC16-XMODEM mod 16384 of the key, or of
// its {hash tag} when it has a non-empty one).
uint16_t RedisKeySlot(std::string_view key);

// One reply, owning hiredis's reply object.
class RedisReply {
 public:
  RedisReply() = default;
  explicit RedisReply(redisReply* r);
  bool is_nil() const;
  bool is_error() const;
  bool is_string() const;  // bulk string or status
  bool is_integer() const;
  std::string_view str() const;  // string, status or error text
  long long integer() const;
  const redisReply* raw() const { return reply_.get(); }

 private:
  struct Free {
    void operator()(redisReply* r) const;
  };
  std::shared_ptr<redisReply> reply_;
};

// One command: its arguments and which of them is the key (for routing).
struct RedisCommand {
  std::vector<std::string> args;
  size_t key_arg = 1;
  // Large values are passed by view to avoid a copy (kept alive by the caller).
  std::string_view value;  // appended as the last argument when not empty
};

// A GET whose value is read from the socket straight into caller memory
// (no copy through hiredis), when it has the expected length.
struct RedisGetInto {
  std::string key;
  std::byte* dst = nullptr;
  uint64_t expected = 0;
};
struct RedisGetOutcome {
  enum Kind { kOk, kNil, kWrongSize, kError } kind = kError;
  uint64_t size = 0;  // the value's length (kOk, kWrongSize)
  std::string error;  // kError: the error reply
};

// Trips after `threshold` consecutive failures; stays open for a cool-down
// that doubles (up to a minute) while probes keep failing.
class CircuitBreaker {
 public:
  explicit CircuitBreaker(int threshold = 3) : threshold_(threshold) {}
  bool Allow();
  void Success();
  // True when this failure opened the breaker.
  bool Failure();
  bool open() const;

 private:
  using Clock = std::chrono::steady_clock;
  mutable std::mutex mu_;
  int threshold_;
  int failures_ = 0;
  bool open_ = false;
  bool probing_ = false;
  Clock::duration cooldown_ = std::chrono::seconds(1);
  Clock::time_point retry_at_{};
};

struct RedisClientOptions {
  std::vector<RedisEndpoint> seeds;
  int connect_timeout_ms = 500;
  int timeout_ms = 1000;  // per read or write on a connection
};

class RedisClient {
 public:
  explicit RedisClient(RedisClientOptions options);
  ~RedisClient();

  // Runs `commands` (pipelined per node, nodes in parallel) and returns one
  // reply per command, in order; an error reply (other than a redirection,
  // which is followed) is returned as such. Fails only when a node cannot be
  // reached or a connection breaks.
  Result<std::vector<RedisReply>> Execute(const std::vector<RedisCommand>& commands);
  Result<RedisReply> Execute(const RedisCommand& command);
  // GETs pipelined per node (nodes in parallel), each value read straight
  // into its destination when it has the expected length. Redirections are
  // followed (through Execute, with a copy). Fails only when a node cannot
  // be reached or a connection breaks.
  Result<std::vector<RedisGetOutcome>> GetInto(const std::vector<RedisGetInto>& gets);
  // Runs one command on the node at `address` ("host:port"), wherever keys live.
  Result<RedisReply> ExecuteOn(const std::string& address, const RedisCommand& command);

  // True once the first contact found a cluster (cluster_enabled).
  bool is_cluster() const { return cluster_.load(); }
  // The masters known from the slot map (the seed when not a cluster).
  Result<std::vector<std::string>> Masters();
  // Redirections followed so far (MOVED + ASK), for tests and stats.
  uint64_t redirections() const { return redirections_.load(); }

  // Each node has a circuit breaker: after 3 failures in a row (no
  // connection, a broken one, an error reply such as CLUSTERDOWN, LOADING or
  // OOM) commands for that node fail at once for a cool-down (1 s, doubling
  // to a minute while probes fail), and the slot map is asked for again, so
  // that a promoted replica is found; the other nodes are used meanwhile.
  uint64_t breaker_opens() const { return breaker_opens_.load(); }
  // The nodes set aside now.
  std::vector<std::string> PausedNodes() const;

 private:
  class Connection;
  struct Group {  // commands for one node
    std::string node;
    std::vector<size_t> indices;
  };

  Status EnsureTopology();
  Status RefreshSlots();
  std::string NodeFor(std::string_view key);
  // Groups items 0..n-1 by the node serving key_of(i) and runs `run` for
  // each group, groups in parallel; the first failure.
  Status RunByNode(size_t n, const std::function<std::string(size_t)>& key_of,
                   const std::function<Status(const Group&)>& run);
  Result<std::unique_ptr<Connection>> Take(const std::string& node);
  void Give(const std::string& node, std::unique_ptr<Connection> c);
  // Runs commands on one node (with ASKING first when `asking`).
  Result<std::vector<RedisReply>> RunOn(const std::string& node,
                                        const std::vector<const RedisCommand*>& commands,
                                        bool asking);
  RedisEndpoint EndpointFor(const std::string& node) const;
  CircuitBreaker& BreakerFor(const std::string& node);
  // OK when `node` may be used now (its breaker is closed, or this call is
  // its probe); then Record must follow with the outcome.
  Status Admit(const std::string& node);
  void Record(const std::string& node, const Status& outcome);

  RedisClientOptions options_;
  std::atomic<bool> cluster_{false};
  std::atomic<bool> topology_known_{false};
  std::atomic<uint64_t> redirections_{0};

  mutable std::mutex mu_;               // guards the slot map, the pools and the breakers
  std::array<int32_t, 16384> slots_{};  // index into nodes_, -1: unknown
  std::vector<std::string> nodes_;
  std::unordered_map<std::string, std::vector<std::unique_ptr<Connection>>> idle_;
  std::unordered_map<std::string, std::unique_ptr<CircuitBreaker>> breakers_;
  std::atomic<uint64_t> breaker_opens_{0};
};

}  // namespace layercache
