#include "layercache/stats.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "layercache/version.h"

namespace layercache {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

double Round3(double v) { return std::round(v * 1000.0) / 1000.0; }
double Gb(uint64_t bytes) { return Round3(static_cast<double>(bytes) / kGiB); }

std::string Format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

}  // namespace

double CacheStats::cache_hit_ratio() const {
  const uint64_t lookups = total_hits + total_misses;
  return lookups == 0 ? 0.0 : static_cast<double>(total_hits) / static_cast<double>(lookups);
}

double CacheStats::disk_compression_ratio() const {
  return disk_cache_bytes == 0 ? 0.0
                               : static_cast<double>(disk_cache_logical_bytes) /
                                     static_cast<double>(disk_cache_bytes);
}

std::string CacheStats::ToJson(int indent) const {
  nlohmann::ordered_json j;
  j["disk_cache_entries"] = disk_cache_entries;
  j["memory_cache_entries"] = memory_cache_entries;
  j["disk_cache_size_gb"] = Gb(disk_cache_bytes);
  j["memory_cache_size_gb"] = Gb(memory_cache_bytes);
  j["max_disk_cache_size_gb"] = Gb(max_disk_cache_bytes);
  j["max_memory_cache_size_gb"] = Gb(max_memory_cache_bytes);
  nlohmann::ordered_json p;
  p["total_hits"] = total_hits;
  p["total_misses"] = total_misses;
  p["total_evictions"] = total_evictions();
  p["cache_hit_ratio"] = Round3(cache_hit_ratio());
  p["memory_hits"] = memory_hits;
  p["disk_hits"] = disk_hits;
  p["memory_evictions"] = memory_evictions;
  p["disk_evictions"] = disk_evictions;
  p["checksum_failures"] = checksum_failures;
  p["layers_cached"] = layers_cached;
  p["disk_write_errors"] = disk_write_errors;
  p["bytes_served"] = bytes_served;
  p["bytes_downloaded"] = bytes_downloaded;
  p["bytes_read_from_disk"] = bytes_read_from_disk;
  p["bytes_written_to_disk"] = bytes_written_to_disk;
  p["data_served_gb"] = Gb(bytes_served);
  p["data_downloaded_gb"] = Gb(bytes_downloaded);
  j["performance"] = std::move(p);
  if (remote_enabled) {
    nlohmann::ordered_json r;
    r["remote_hits"] = remote_hits;
    r["remote_misses"] = remote_misses;
    r["bytes_from_remote"] = bytes_from_remote;
    r["bytes_to_remote"] = bytes_to_remote;
    r["remote_publishes"] = remote_publishes;
    r["remote_lease_waits"] = remote_lease_waits;
    r["remote_errors"] = remote_errors;
    r["remote_corrupt"] = remote_corrupt;
    r["remote_breaker_opens"] = remote_breaker_opens;
    r["remote_breaker_open"] = remote_breaker_open;
    r["remote_redirections"] = remote_redirections;
    j["remote"] = std::move(r);
  }
  j["disk_cache_bytes"] = disk_cache_bytes;
  j["disk_cache_logical_bytes"] = disk_cache_logical_bytes;
  j["disk_compression_ratio"] = Round3(disk_compression_ratio());
  j["memory_cache_bytes"] = memory_cache_bytes;
  j["max_disk_cache_bytes"] = max_disk_cache_bytes;
  j["max_memory_cache_bytes"] = max_memory_cache_bytes;
  if (!lifetime.empty()) {
    // Every process that used this cache directory (this one included).
    nlohmann::ordered_json l;
    for (const auto& [name, value] : lifetime) l[name] = value;
    j["lifetime"] = std::move(l);
  }
  j["version"] = LAYERCACHE_VERSION;
  return j.dump(indent);
}

std::string CacheStats::ToText() const {
  const std::string rule(60, '=');
  auto gb1 = [](uint64_t b) { return Format("%.1f", static_cast<double>(b) / kGiB); };
  std::string out;
  out += rule + "\n";
  out += "Layer Cache Statistics\n";
  out += rule + "\n";
  out += "Disk Cache Entries: " + std::to_string(disk_cache_entries) + "\n";
  out += "Memory Cache Entries: " + std::to_string(memory_cache_entries) + "\n";
  out +=
      "Disk Cache Size: " + gb1(disk_cache_bytes) + " GB / " + gb1(max_disk_cache_bytes) + " GB\n";
  out += "Memory Cache Size: " + gb1(memory_cache_bytes) + " GB / " + gb1(max_memory_cache_bytes) +
         " GB\n";
  out += "\n";
  out += "Performance:\n";
  out += "  Cache Hits: " + std::to_string(total_hits) + "\n";
  out += "  Cache Misses: " + std::to_string(total_misses) + "\n";
  out += "  Hit Ratio: " + Format("%.1f", cache_hit_ratio() * 100.0) + "%\n";
  out += "  Evictions: " + std::to_string(total_evictions()) + "\n";
  out += "  Data Downloaded: " + gb1(bytes_downloaded) + " GB\n";
  out += "  Data Served from Cache: " + gb1(bytes_served) + " GB\n";
  if (remote_enabled) {
    out += "\n";
    out += "Remote Tier (Redis):\n";
    out += "  Remote Hits: " + std::to_string(remote_hits) + "\n";
    out += "  Remote Misses: " + std::to_string(remote_misses) + "\n";
    out += "  Data from Remote: " + gb1(bytes_from_remote) + " GB\n";
    out += "  Data Published: " + gb1(bytes_to_remote) + " GB (" +
           std::to_string(remote_publishes) + " layers)\n";
    out += "  Lease Waits: " + std::to_string(remote_lease_waits) + "\n";
    out += "  Remote Errors: " + std::to_string(remote_errors) +
           (remote_breaker_open ? " (Redis set aside for now)" : "") + "\n";
    out += "  Corrupt Entries Refused: " + std::to_string(remote_corrupt) + "\n";
  }
  out += rule + "\n";
  return out;
}

}  // namespace layercache
