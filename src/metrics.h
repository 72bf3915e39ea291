// Latency histograms, lifetime counters kept in the cache directory, and the
// Prometheus text exposition of both (LayerCache::metrics_text()).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "layercache/env.h"
#include "layercache/stats.h"

namespace layercache {

// A histogram of durations with fixed buckets (seconds), lock-free to update.
class LatencyHistogram {
 public:
  static constexpr std::array<double, 14> kBounds = {1e-5,  5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01,
                                                     0.025, 0.05, 0.1,  0.25, 1.0,  5.0,  30.0};
  void Observe(double seconds) { Observe(seconds, 1); }
  // One observation standing for `weight` alike (a sampled histogram).
  void Observe(double seconds, uint64_t weight);
  struct Snapshot {
    std::array<uint64_t, kBounds.size() + 1> counts{};  // per bucket; the last is +Inf
    uint64_t count = 0;
    double sum = 0;
  };
  Snapshot Read() const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> counts_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

// The histograms a LayerCache keeps (this process).
struct CacheLatencies {
  // get_layer calls that went past the memory tier, by outcome: served from
  // disk, from the cluster tier, or a miss.
  LatencyHistogram get_disk, get_remote, get_miss;
  // Those served by any other tier of the chain, by its name (made when the
  // chain is built, fixed afterwards).
  std::map<std::string, std::unique_ptr<LatencyHistogram>> get_other;
  // Memory hits, sampled: one in kMemoryHitSample is timed and observed with
  // that weight (reading the clock twice on every hit would cost about as
  // much as the hit itself).
  static constexpr uint64_t kMemoryHitSample = 64;
  LatencyHistogram get_memory;
  LatencyHistogram put_disk;    // writing an entry (and any eviction it causes)
  LatencyHistogram load_hub;    // download_and_cache of a layer not cached
  LatencyHistogram load_other;  // get_or_load's loader
};

// Counters summed over every process that used a cache directory, kept in
// <cache_dir>/metrics.sqlite. Each process adds what it counted since its last
// flush (get_stats() and closing flush).
class LifetimeCounters {
 public:
  // `cache_dir` "" : none kept (Flush and Read do nothing). The database is
  // opened through `env`'s SQLite VFS (Env::sqlite_vfs(); null env: SQLite's
  // default VFS).
  explicit LifetimeCounters(std::string cache_dir, const Env* env = nullptr);
  // Adds the growth of `now`'s counters since the last call, and returns the
  // totals (empty when they cannot be kept: a read-only directory, say).
  std::map<std::string, uint64_t> FlushAndRead(const CacheStats& now);

 private:
  std::string path_;
  const char* vfs_ = nullptr;
  std::mutex mu_;
  std::map<std::string, uint64_t> flushed_;  // what this process has added so far
};

// The counters of CacheStats that lifetime totals are kept for.
std::map<std::string, uint64_t> LifetimeFields(const CacheStats& s);

// Prometheus text exposition format 0.0.4.
std::string MetricsText(const CacheStats& s, const CacheLatencies& l);

}  // namespace layercache
