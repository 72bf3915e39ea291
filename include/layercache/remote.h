// The cluster tier (Redis) seen from outside a cache: what the servers hold
// and how they are set up (`layercache stats`). The tier's counters are in
// CacheStats (remote_*); see docs/SCALE_OUT.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layercache/options.h"
#include "layercache/status.h"

namespace layercache {

// One Redis master.
struct RemoteNodeInfo {
  std::string address;       // host:port
  uint64_t layers = 0;       // layers published there (manifests)
  uint64_t used_memory = 0;  // bytes, as INFO memory reports them
  uint64_t maxmemory = 0;    // 0: no limit set
  std::string policy;        // maxmemory-policy; the tier expects allkeys-lru
};

struct RemoteTierInfo {
  bool cluster = false;  // a Redis Cluster (else one server)
  std::vector<RemoteNodeInfo> nodes;
};

// Connects to the remote tier of `options` (remote_urls, else
// $LAYERCACHE_REMOTE, with remote_timeout_ms) and describes its masters.
// Status::InvalidArgument when no remote tier is configured or a URL is
// malformed; Status::IOError when Redis cannot be reached.
Result<RemoteTierInfo> DescribeRemoteTier(const LayerCacheOptions& options);

}  // namespace layercache
