// CacheStats: a snapshot of the cache's counters, in the seed's shape.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace layercache {

struct CacheStats {
  // Sizes. Disk figures are for the whole cache_dir (all processes sharing
  // it); memory figures are this process's memory tier.
  uint64_t disk_cache_entries = 0;
  uint64_t memory_cache_entries = 0;
  uint64_t disk_cache_bytes = 0;          // bytes on disk
  uint64_t disk_cache_logical_bytes = 0;  // tensor bytes those entries hold
  uint64_t memory_cache_bytes = 0;
  uint64_t max_disk_cache_bytes = 0;
  uint64_t max_memory_cache_bytes = 0;

  // Counters since this LayerCache was opened.
  // memory_hits + disk_hits + remote_hits, plus the hits of any other tier
  // of the chain (hits_by_tier).
  uint64_t total_hits = 0;
  uint64_t total_misses = 0;  // get_layer calls that found nothing
  uint64_t memory_hits = 0;
  uint64_t disk_hits = 0;
  uint64_t memory_evictions = 0;
  uint64_t disk_evictions = 0;
  uint64_t checksum_failures = 0;  // entries found corrupt when read
  uint64_t bytes_served = 0;       // tensor bytes returned by hits
  uint64_t bytes_downloaded = 0;   // bytes fetched from a remote source
  uint64_t bytes_read_from_disk = 0;
  uint64_t bytes_written_to_disk = 0;
  uint64_t layers_cached = 0;      // successful cache_layer calls
  uint64_t disk_write_errors = 0;  // failed entry writes

  // The cluster tier (Redis), when configured.
  bool remote_enabled = false;
  uint64_t remote_hits = 0;           // layers found complete and intact in Redis
  uint64_t remote_misses = 0;         // lookups that found nothing usable there
  uint64_t bytes_from_remote = 0;     // bytes fetched from Redis
  uint64_t bytes_to_remote = 0;       // bytes published to Redis
  uint64_t remote_publishes = 0;      // layers this process published
  uint64_t remote_lease_waits = 0;    // loads that waited for another node's
  uint64_t remote_errors = 0;         // failed Redis operations (timeouts, refused, ...)
  uint64_t remote_corrupt = 0;        // entries with a missing or corrupt chunk (not served)
  uint64_t remote_breaker_opens = 0;  // times Redis was set aside after errors
  bool remote_breaker_open = false;   // set aside now
  uint64_t remote_redirections = 0;   // Redis Cluster MOVED / ASK redirections followed

  // get_layer hits by the tier of the chain that served them, under the
  // tier's name ("memory", "disk", "remote", or that of a tier added to the
  // chain); kept in the process only (not in to_json / print_stats).
  std::map<std::string, uint64_t> hits_by_tier;

  // The counters above summed over every process that has used this cache
  // directory (kept in <cache_dir>/metrics.sqlite; empty without
  // persist_metadata or when the directory is read-only): memory_hits,
  // disk_hits, remote_hits, misses, memory_evictions, disk_evictions,
  // checksum_failures, layers_cached, disk_write_errors, bytes_served,
  // bytes_downloaded, bytes_read_from_disk, bytes_written_to_disk,
  // bytes_from_remote, bytes_to_remote.
  std::map<std::string, uint64_t> lifetime;

  uint64_t total_evictions() const { return memory_evictions + disk_evictions; }
  // hits / (hits + misses), 0 when there was no lookup.
  double cache_hit_ratio() const;
  // logical / on-disk bytes (1 without compression; 0 when empty).
  double disk_compression_ratio() const;

  // The seed's JSON keys (disk_cache_entries ... performance.cache_hit_ratio)
  // plus the extra counters. Sizes in GiB, rounded to 3 decimals.
  std::string ToJson(int indent = 2) const;
  // The seed's print_stats() layout.
  std::string ToText() const;
};

}  // namespace layercache
