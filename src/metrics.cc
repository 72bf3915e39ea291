#include "metrics.h"

#include <sqlite3.h>

#include <cmath>
#include <cstdio>
#include <memory>

#include "layercache/version.h"
#include "util/logging.h"
#include "util/path.h"

namespace layercache {

void LatencyHistogram::Observe(double seconds, uint64_t weight) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  counts_[i].fetch_add(weight, std::memory_order_relaxed);
  count_.fetch_add(weight, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(std::llround(std::max(0.0, seconds) * 1e9)) * weight,
                    std::memory_order_relaxed);
}

LatencyHistogram::Snapshot LatencyHistogram::Read() const {
  Snapshot s;
  for (size_t i = 0; i < counts_.size(); ++i)
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
  s.count = 0;
  for (uint64_t c : s.counts) s.count += c;  // consistent with the buckets
  s.sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

std::map<std::string, uint64_t> LifetimeFields(const CacheStats& s) {
  return {{"memory_hits", s.memory_hits},
          {"disk_hits", s.disk_hits},
          {"remote_hits", s.remote_hits},
          {"misses", s.total_misses},
          {"memory_evictions", s.memory_evictions},
          {"disk_evictions", s.disk_evictions},
          {"checksum_failures", s.checksum_failures},
          {"layers_cached", s.layers_cached},
          {"disk_write_errors", s.disk_write_errors},
          {"bytes_served", s.bytes_served},
          {"bytes_downloaded", s.bytes_downloaded},
          {"bytes_read_from_disk", s.bytes_read_from_disk},
          {"bytes_written_to_disk", s.bytes_written_to_disk},
          {"bytes_from_remote", s.bytes_from_remote},
          {"bytes_to_remote", s.bytes_to_remote}};
}

LifetimeCounters::LifetimeCounters(std::string cache_dir, const Env* env)
    : path_(cache_dir.empty() ? "" : JoinPath(cache_dir, "metrics.sqlite")),
      vfs_(env != nullptr ? env->sqlite_vfs() : nullptr) {}

namespace {
struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close(db); }
};
}  // namespace

std::map<std::string, uint64_t> LifetimeCounters::FlushAndRead(const CacheStats& now) {
  std::map<std::string, uint64_t> totals;
  if (path_.empty()) return totals;
  std::lock_guard lock(mu_);
  sqlite3* raw = nullptr;
  if (sqlite3_open_v2(path_.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs_) !=
      SQLITE_OK) {
    LogDebug("lifetime counters: cannot open " + path_);
    sqlite3_close(raw);
    return totals;
  }
  std::unique_ptr<sqlite3, DbCloser> db(raw);
  sqlite3_busy_timeout(raw, 5000);
  auto exec = [&](const char* sql) {
    return sqlite3_exec(raw, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
  };
  // WAL + NORMAL: a crash loses at most the last flushes, never the file.
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  if (!exec(
          "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)") ||
      !exec("BEGIN IMMEDIATE")) {
    LogDebug(std::string("lifetime counters: ") + sqlite3_errmsg(raw));
    return totals;
  }
  const std::map<std::string, uint64_t> fields = LifetimeFields(now);
  sqlite3_stmt* add = nullptr;
  bool ok = sqlite3_prepare_v2(raw,
                               "INSERT INTO counters(name, value) VALUES(?1, ?2) ON CONFLICT(name) "
                               "DO UPDATE SET value = value + ?2",
                               -1, &add, nullptr) == SQLITE_OK;
  std::map<std::string, uint64_t> added;
  for (const auto& [name, value] : fields) {
    if (!ok) break;
    const uint64_t before = flushed_.count(name) ? flushed_[name] : 0;
    if (value <= before) continue;
    sqlite3_bind_text(add, 1, name.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(add, 2, static_cast<sqlite3_int64>(value - before));
    ok = sqlite3_step(add) == SQLITE_DONE;
    sqlite3_reset(add);
    added[name] = value;
  }
  sqlite3_finalize(add);
  if (!ok || !exec("COMMIT")) {
    LogDebug(std::string("lifetime counters: ") + sqlite3_errmsg(raw));
    exec("ROLLBACK");
    return totals;
  }
  for (const auto& [name, value] : added) flushed_[name] = value;
  sqlite3_stmt* read = nullptr;
  if (sqlite3_prepare_v2(raw, "SELECT name, value FROM counters", -1, &read, nullptr) ==
      SQLITE_OK) {
    while (sqlite3_step(read) == SQLITE_ROW) {
      totals[reinterpret_cast<const char*>(sqlite3_column_text(read, 0))] =
          static_cast<uint64_t>(sqlite3_column_int64(read, 1));
    }
  }
  sqlite3_finalize(read);
  for (const auto& [name, value] : fields) totals.emplace(name, 0);
  return totals;
}

namespace {

void Family(std::string* out, const std::string& name, const char* type, const char* help) {
  *out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void Sample(std::string* out, const std::string& name, const std::string& labels, double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.9g", v);
  }
  *out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + buf + "\n";
}

void Histogram(std::string* out, const std::string& name, const std::string& label,
               const LatencyHistogram::Snapshot& h) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.counts.size(); ++i) {
    cumulative += h.counts[i];
    char le[32];
    if (i < LatencyHistogram::kBounds.size()) {
      std::snprintf(le, sizeof le, "%g", LatencyHistogram::kBounds[i]);
    } else {
      std::snprintf(le, sizeof le, "+Inf");
    }
    Sample(out, name + "_bucket", label + ",le=\"" + le + "\"", static_cast<double>(cumulative));
  }
  Sample(out, name + "_sum", label, h.sum);
  Sample(out, name + "_count", label, static_cast<double>(h.count));
}

}  // namespace

std::string MetricsText(const CacheStats& s, const CacheLatencies& l) {
  std::string out;
  auto d = [](uint64_t v) { return static_cast<double>(v); };
  Family(&out, "layercache_hits_total", "counter", "Layers served, by tier (this process).");
  Sample(&out, "layercache_hits_total", "tier=\"memory\"", d(s.memory_hits));
  Sample(&out, "layercache_hits_total", "tier=\"disk\"", d(s.disk_hits));
  Sample(&out, "layercache_hits_total", "tier=\"remote\"", d(s.remote_hits));
  Family(&out, "layercache_misses_total", "counter",
         "get_layer calls that found nothing (this process).");
  Sample(&out, "layercache_misses_total", "", d(s.total_misses));
  Family(&out, "layercache_evictions_total", "counter", "Entries evicted, by tier (this process).");
  Sample(&out, "layercache_evictions_total", "tier=\"memory\"", d(s.memory_evictions));
  Sample(&out, "layercache_evictions_total", "tier=\"disk\"", d(s.disk_evictions));
  Family(&out, "layercache_checksum_failures_total", "counter",
         "Disk entries found corrupt when read (this process).");
  Sample(&out, "layercache_checksum_failures_total", "", d(s.checksum_failures));
  Family(&out, "layercache_layers_cached_total", "counter",
         "Successful cache_layer calls (this process).");
  Sample(&out, "layercache_layers_cached_total", "", d(s.layers_cached));
  Family(&out, "layercache_bytes_total", "counter",
         "Bytes moved, by direction (this process): served to callers, downloaded from the Hub, "
         "read from and written to disk, fetched from and published to the cluster tier.");
  Sample(&out, "layercache_bytes_total", "direction=\"served\"", d(s.bytes_served));
  Sample(&out, "layercache_bytes_total", "direction=\"downloaded\"", d(s.bytes_downloaded));
  Sample(&out, "layercache_bytes_total", "direction=\"disk_read\"", d(s.bytes_read_from_disk));
  Sample(&out, "layercache_bytes_total", "direction=\"disk_written\"", d(s.bytes_written_to_disk));
  Sample(&out, "layercache_bytes_total", "direction=\"remote_read\"", d(s.bytes_from_remote));
  Sample(&out, "layercache_bytes_total", "direction=\"remote_written\"", d(s.bytes_to_remote));
  if (!s.lifetime.empty()) {
    auto lt = [&](const char* k) {
      auto it = s.lifetime.find(k);
      return it == s.lifetime.end() ? 0.0 : static_cast<double>(it->second);
    };
    Family(&out, "layercache_lifetime_hits_total", "counter",
           "Layers served, by tier, by every process over the cache's life.");
    Sample(&out, "layercache_lifetime_hits_total", "tier=\"memory\"", lt("memory_hits"));
    Sample(&out, "layercache_lifetime_hits_total", "tier=\"disk\"", lt("disk_hits"));
    Sample(&out, "layercache_lifetime_hits_total", "tier=\"remote\"", lt("remote_hits"));
    Family(&out, "layercache_lifetime_misses_total", "counter",
           "Misses by every process over the cache's life.");
    Sample(&out, "layercache_lifetime_misses_total", "", lt("misses"));
    Family(&out, "layercache_lifetime_evictions_total", "counter",
           "Evictions, by tier, by every process over the cache's life.");
    Sample(&out, "layercache_lifetime_evictions_total", "tier=\"memory\"", lt("memory_evictions"));
    Sample(&out, "layercache_lifetime_evictions_total", "tier=\"disk\"", lt("disk_evictions"));
    Family(&out, "layercache_lifetime_bytes_total", "counter",
           "Bytes moved, by direction, by every process over the cache's life.");
    Sample(&out, "layercache_lifetime_bytes_total", "direction=\"served\"", lt("bytes_served"));
    Sample(&out, "layercache_lifetime_bytes_total", "direction=\"downloaded\"",
           lt("bytes_downloaded"));
    Sample(&out, "layercache_lifetime_bytes_total", "direction=\"disk_read\"",
           lt("bytes_read_from_disk"));
    Sample(&out, "layercache_lifetime_bytes_total", "direction=\"disk_written\"",
           lt("bytes_written_to_disk"));
    Sample(&out, "layercache_lifetime_bytes_total", "direction=\"remote_read\"",
           lt("bytes_from_remote"));
    Sample(&out, "layercache_lifetime_bytes_total", "direction=\"remote_written\"",
           lt("bytes_to_remote"));
  }
  Family(&out, "layercache_entries", "gauge", "Entries held, by tier.");
  Sample(&out, "layercache_entries", "tier=\"memory\"", d(s.memory_cache_entries));
  Sample(&out, "layercache_entries", "tier=\"disk\"", d(s.disk_cache_entries));
  Family(&out, "layercache_size_bytes", "gauge", "Bytes held, by tier (disk: file bytes).");
  Sample(&out, "layercache_size_bytes", "tier=\"memory\"", d(s.memory_cache_bytes));
  Sample(&out, "layercache_size_bytes", "tier=\"disk\"", d(s.disk_cache_bytes));
  Family(&out, "layercache_capacity_bytes", "gauge", "Budget, by tier.");
  Sample(&out, "layercache_capacity_bytes", "tier=\"memory\"", d(s.max_memory_cache_bytes));
  Sample(&out, "layercache_capacity_bytes", "tier=\"disk\"", d(s.max_disk_cache_bytes));
  Family(&out, "layercache_get_duration_seconds", "histogram",
         "get_layer calls by the tier that answered (miss: none); memory hits are sampled, "
         "1 in 64 timed, each standing for 64.");
  Histogram(&out, "layercache_get_duration_seconds", "tier=\"memory\"", l.get_memory.Read());
  Histogram(&out, "layercache_get_duration_seconds", "tier=\"disk\"", l.get_disk.Read());
  Histogram(&out, "layercache_get_duration_seconds", "tier=\"remote\"", l.get_remote.Read());
  for (const auto& [name, h] : l.get_other) {
    Histogram(&out, "layercache_get_duration_seconds", "tier=\"" + name + "\"", h->Read());
  }
  Histogram(&out, "layercache_get_duration_seconds", "tier=\"miss\"", l.get_miss.Read());
  Family(&out, "layercache_put_duration_seconds", "histogram",
         "Writing an entry to a tier (with the evictions it causes).");
  Histogram(&out, "layercache_put_duration_seconds", "tier=\"disk\"", l.put_disk.Read());
  Family(&out, "layercache_load_duration_seconds", "histogram",
         "Loading a layer that was not cached, by source.");
  Histogram(&out, "layercache_load_duration_seconds", "source=\"hub\"", l.load_hub.Read());
  Histogram(&out, "layercache_load_duration_seconds", "source=\"loader\"", l.load_other.Read());
  Family(&out, "layercache_info", "gauge", "The library version.");
  Sample(&out, "layercache_info", std::string("version=\"") + LAYERCACHE_VERSION + "\"", 1);
  return out;
}

}  // namespace layercache
