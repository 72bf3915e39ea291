// CacheStats: a snapshot of the cache's counters, in the seed's shape.
#pragma once

#include <cstdint>
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
  uint64_t total_hits = 0;    // memory_hits + disk_hits
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
