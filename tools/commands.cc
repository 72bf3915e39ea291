#include "commands.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "layercache/layer_cache.h"
#include "layercache/progress.h"
#include "layercache/remote.h"
#include "layercache/safetensors.h"

namespace layercache::cli {
namespace {

std::string FormatTime(int64_t ns) {
  std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string Shape(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

int DescribeRemote(const Global& g);

int Stats(const Global& g) {
  LayerCache cache(g.options);
  CacheStats s = cache.get_stats();
  if (g.json) {
    std::cout << s.ToJson() << "\n";
  } else {
    std::cout << "Cache directory: " << cache.cache_dir() << "\n" << s.ToText();
    std::printf("On disk: %s holding %s of tensors (compression ratio %.2f)\n",
                Progress::HumanBytes(static_cast<double>(s.disk_cache_bytes)).c_str(),
                Progress::HumanBytes(static_cast<double>(s.disk_cache_logical_bytes)).c_str(),
                s.disk_compression_ratio());
  }
  return DescribeRemote(g);
}

// The cluster tier as Redis sees it (with --remote or $LAYERCACHE_REMOTE).
int DescribeRemote(const Global& g) {
  const std::vector<std::string> urls = g.options.ResolvedRemoteUrls();
  if (urls.empty()) return 0;
  auto remote = DescribeRemoteTier(g.options);
  if (!remote.ok()) {
    std::cerr << "remote tier: " << remote.status().message() << "\n";
    return 1;
  }
  if (g.json) return 0;  // the counters are in the JSON already
  std::cout << "Remote tier (" << (remote->cluster ? "Redis Cluster" : "Redis") << "):\n";
  for (const RemoteNodeInfo& m : remote->nodes) {
    std::cout << "  " << m.address << ": " << m.layers << " layers, "
              << Progress::HumanBytes(static_cast<double>(m.used_memory)) << " used of "
              << (m.maxmemory == 0 ? std::string("no maxmemory")
                                   : Progress::HumanBytes(static_cast<double>(m.maxmemory)))
              << ", policy " << m.policy;
    if (m.maxmemory == 0 || m.policy.rfind("allkeys-", 0) != 0) {
      std::cout << "  (expected: maxmemory set and maxmemory-policy allkeys-lru; see "
                   "docs/SCALE_OUT.md)";
    }
    std::cout << "\n";
  }
  return 0;
}

int List(const Global& g) {
  LayerCache cache(g.options);
  auto entries = cache.list_entries();
  if (g.json) {
    nlohmann::ordered_json arr = nlohmann::ordered_json::array();
    for (const EntryInfo& e : entries) {
      nlohmann::ordered_json j;
      j["model_id"] = e.key.model_id;
      j["layer_index"] = e.key.layer_index;
      j["quantization_mode"] = e.key.quantization_mode.empty()
                                   ? nlohmann::ordered_json()
                                   : nlohmann::ordered_json(e.key.quantization_mode);
      j["revision"] = e.key.revision;
      j["tier"] = e.in_memory ? "memory+disk" : "disk";
      j["size_bytes"] = e.size_bytes;
      j["data_bytes"] = e.data_bytes;
      j["compression_ratio"] =
          e.size_bytes == 0 ? 0.0
                            : static_cast<double>(e.data_bytes) / static_cast<double>(e.size_bytes);
      j["last_access"] = FormatTime(e.last_access_ns);
      j["last_access_ns"] = e.last_access_ns;
      j["checksum_algorithm"] = e.checksum_algorithm;
      j["checksum"] = e.checksum;
      j["path"] = e.path;
      arr.push_back(std::move(j));
    }
    std::cout << arr.dump(2) << "\n";
    return 0;
  }
  std::cout << std::left << std::setw(28) << "MODEL" << std::right << std::setw(6) << "LAYER"
            << "  " << std::left << std::setw(8) << "QUANT" << std::setw(6) << "TIER" << std::right
            << std::setw(12) << "SIZE"
            << "  " << std::left << std::setw(20) << "LAST ACCESS"
            << "CHECKSUM\n";
  for (const EntryInfo& e : entries) {
    std::cout << std::left << std::setw(28) << e.key.model_id << std::right << std::setw(6)
              << e.key.layer_index << "  " << std::left << std::setw(8)
              << (e.key.quantization_mode.empty() ? "-" : e.key.quantization_mode) << std::setw(6)
              << (e.in_memory ? "mem" : "disk") << std::right << std::setw(12)
              << Progress::HumanBytes(static_cast<double>(e.size_bytes)) << std::setw(12)
              << Progress::HumanBytes(static_cast<double>(e.data_bytes)) << std::setw(7)
              << std::fixed << std::setprecision(2)
              << (e.size_bytes == 0
                      ? 0.0
                      : static_cast<double>(e.data_bytes) / static_cast<double>(e.size_bytes))
              << "  " << std::left << std::setw(20) << FormatTime(e.last_access_ns)
              << e.checksum_algorithm << ":" << e.checksum << "\n";
  }
  std::cout << entries.size() << " entries\n";
  return 0;
}

int Verify(const Global& g) {
  LayerCache cache(g.options);
  auto corrupt = cache.verify_cache_integrity();
  for (const CorruptEntry& c : corrupt) {
    std::cout << "CORRUPT " << (c.key.model_id.empty() ? "?" : c.key.ToString()) << "  " << c.path
              << "\n  " << c.reason << "\n";
  }
  const uint64_t entries = cache.get_stats().disk_cache_entries;
  std::cout << entries << " entries checked, " << corrupt.size() << " corrupted\n";
  return corrupt.empty() ? 0 : 1;
}

int Optimize(const Global& g) {
  LayerCache cache(g.options);
  OptimizeReport r = cache.optimize_cache();
  std::cout << "removed " << r.corrupted_removed << " corrupted entries, " << r.temp_files_removed
            << " temp files, " << r.orphans_removed << " unreadable files; adopted "
            << r.orphans_adopted << " entries; dropped " << r.rows_dropped
            << " stale index rows; evicted " << r.evicted << " entries over the budget\n";
  return 0;
}

int Clear(const Global& g) {
  LayerCache cache(g.options);
  const uint64_t before = cache.get_stats().disk_cache_entries;
  cache.clear_cache();
  std::cout << "removed " << before << " entries\n";
  return 0;
}

int Invalidate(const Global& g, const std::string& model, std::optional<int64_t> layer) {
  LayerCache cache(g.options);
  size_t n = cache.invalidate_cache(model, layer);
  std::cout << "removed " << n << " entries\n";
  return 0;
}

int Inspect(const std::string& file, bool json) {
  auto header = ReadSafetensorsHeader(file);
  if (!header.ok()) {
    std::cerr << "invalid: " << header.status().message() << "\n";
    return 1;
  }
  if (json) {
    nlohmann::ordered_json j;
    j["file"] = file;
    j["header_bytes"] = header->header_length;
    j["data_bytes"] = header->data_bytes;
    j["metadata"] = header->metadata;
    j["tensors"] = nlohmann::ordered_json::array();
    for (const TensorInfo& t : header->tensors) {
      j["tensors"].push_back({{"name", t.name},
                              {"dtype", DTypeName(t.dtype)},
                              {"shape", t.shape},
                              {"data_offsets", {t.offset, t.offset + t.nbytes}}});
    }
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << file << ": valid safetensors, " << header->tensors.size() << " tensors, "
            << header->data_bytes << " data bytes, header " << header->header_length << " bytes\n";
  auto entry = InspectEntryHeader(*header, file);
  if (entry.ok()) {
    std::cout << "layercache entry for " << entry->key.ToString() << " ("
              << ChecksumAlgorithmName(entry->checksum_algorithm) << " " << entry->checksum
              << ")\n";
  }
  for (const auto& [k, v] : header->metadata) std::cout << "  metadata " << k << " = " << v << "\n";
  for (const TensorInfo& t : header->tensors) {
    std::cout << "  " << std::left << std::setw(48) << t.name << std::setw(12) << DTypeName(t.dtype)
              << std::setw(20) << Shape(t.shape) << "[" << t.offset << ", " << t.offset + t.nbytes
              << ")\n";
  }
  return 0;
}

int Put(const Global& g, const std::string& model, int64_t layer_index, const std::string& file,
        const std::string& quant) {
  auto layer = ReadSafetensorsFile(file);
  if (!layer.ok()) {
    std::cerr << "layercache: " << layer.status().message() << "\n";
    return 1;
  }
  LayerPtr to_cache = *layer;
  if (HasReservedMetadata((*layer)->metadata())) {
    // A file exported from a cache entry: keep the user's metadata only.
    std::vector<TensorInfo> tensors = (*layer)->tensors();
    AlignedBuffer copy((*layer)->nbytes());
    if ((*layer)->nbytes() != 0) std::memcpy(copy.data(), (*layer)->data(), (*layer)->nbytes());
    to_cache = Layer::Create(std::move(tensors), std::move(copy),
                             StripReservedMetadata((*layer)->metadata()))
                   .value();
  }
  LayerCache cache(g.options);
  LayerKey key{model, layer_index, quant, ""};
  Status s = cache.cache_layer_status(key, to_cache);
  if (!s.ok()) {
    std::cerr << "layercache: " << s.message() << "\n";
    return 1;
  }
  std::cout << "cached " << key.ToString() << ": " << to_cache->num_tensors() << " tensors, "
            << to_cache->nbytes() << " bytes\n";
  return 0;
}

int Get(const Global& g, const std::string& model, int64_t layer_index, const std::string& quant,
        const std::string& out) {
  LayerCache cache(g.options);
  LayerKey key{model, layer_index, quant, ""};
  LayerPtr layer = cache.get_layer(key);
  if (!layer) {
    std::cerr << "layercache: " << key.ToString() << " is not cached\n";
    return 1;
  }
  if (Status s = WriteSafetensorsFile(*layer, out); !s.ok()) {
    std::cerr << "layercache: " << s.message() << "\n";
    return 1;
  }
  std::cout << "wrote " << key.ToString() << " to " << out << " (" << layer->nbytes()
            << " bytes)\n";
  return 0;
}

std::vector<int64_t> ParseLayers(const std::string& spec) {
  std::vector<int64_t> out;
  if (spec.empty() || spec == "all") return out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    const size_t comma = spec.find(',', pos);
    const std::string part =
        spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const size_t dash = part.find('-');
    try {
      size_t used = 0;
      if (dash == std::string::npos) {
        out.push_back(std::stoll(part, &used));
        if (used != part.size()) throw std::invalid_argument(part);
      } else {
        const int64_t a = std::stoll(part.substr(0, dash));
        const int64_t b = std::stoll(part.substr(dash + 1), &used);
        if (used != part.size() - dash - 1 || b < a) throw std::invalid_argument(part);
        for (int64_t i = a; i <= b; ++i) out.push_back(i);
      }
    } catch (const std::exception&) {
      throw std::invalid_argument("--layers \"" + spec +
                                  "\" is not a layer list; use all, 5, 0-27 or 0,3,5-7");
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  for (int64_t i : out) {
    if (i < 0) throw std::invalid_argument("--layers: layer indices start at 0");
  }
  return out;
}

int Fetch(const Global& g, const FetchOptions& f, const DownloadOptions& d) {
  LayerCache cache(g.options);
  const std::string model_id = f.model_id.empty() ? f.repo_id : f.model_id;
  std::vector<int64_t> layers = ParseLayers(f.layers);
  if (layers.empty()) {
    const int64_t n = cache.hub_num_layers(f.repo_id, f.filename, d);
    for (int64_t i = 0; i < n; ++i) layers.push_back(i);
  }
  for (int64_t i : layers) {
    LayerPtr layer = cache.download_and_cache(model_id, i, f.repo_id, f.filename, d);
    if (d.quiet) continue;
    std::cout << "layer " << i << ": " << layer->num_tensors() << " tensors, "
              << Progress::HumanBytes(static_cast<double>(layer->nbytes())) << "\n";
  }
  if (f.non_layer) {
    LayerPtr extra = cache.download_non_layer_tensors(model_id, f.repo_id, f.filename, d);
    if (!d.quiet) {
      std::cout << "non-layer tensors: " << extra->num_tensors() << " tensors, "
                << Progress::HumanBytes(static_cast<double>(extra->nbytes())) << "\n";
    }
  }
  const CacheStats s = cache.get_stats();
  std::cout << "fetched " << layers.size() << " layers of " << f.repo_id << " ("
            << Progress::HumanBytes(static_cast<double>(s.bytes_downloaded)) << " downloaded, "
            << s.memory_hits + s.disk_hits << " already cached";
  if (s.remote_enabled) {
    std::cout << ", " << s.remote_hits << " from the cluster tier ("
              << Progress::HumanBytes(static_cast<double>(s.bytes_from_remote)) << ")";
    if (s.remote_errors > 0) std::cout << ", " << s.remote_errors << " Redis errors";
  }
  std::cout << ")\n";
  return 0;
}

int Import(const Global& g, const std::string& dir, const std::string& model_id,
           const std::string& layers, const std::string& pattern) {
  LayerCache cache(g.options);
  const size_t n = cache.import_checkpoint(dir, model_id, ParseLayers(layers), pattern);
  std::cout << "imported " << n << " entries of " << dir << " as " << model_id << "\n";
  return 0;
}

}  // namespace layercache::cli
