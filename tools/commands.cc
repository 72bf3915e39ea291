#include "commands.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli_args.h"
#include "layercache/cache_settings.h"
#include "layercache/layer_cache.h"
#include "layercache/progress.h"
#include "layercache/remote.h"
#include "layercache/safetensors.h"
#include "layercache/status.h"
#include "layercache/version.h"

namespace layercache::cli {
namespace {

std::string Shape(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// A budget large enough never to evict (1 PiB).
constexpr double kNoBudgetGb = 1048576.0;

}  // namespace

int TerminalColumns() {
  if (!::isatty(STDOUT_FILENO)) return 0;
  struct winsize ws {};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

std::string LifetimeLine(const CacheStats& s) {
  if (s.lifetime.empty()) return "";
  auto lt = [&](const char* k) {
    auto it = s.lifetime.find(k);
    return it == s.lifetime.end() ? uint64_t{0} : it->second;
  };
  const uint64_t hits = lt("memory_hits") + lt("disk_hits") + lt("remote_hits");
  const uint64_t total = hits + lt("misses");
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "Lifetime (every process that used this cache): %llu hits (memory %llu, disk %llu, "
                "remote %llu), %llu misses (hit ratio %.1f%%), %llu evictions (memory %llu, disk "
                "%llu), %s served, %s downloaded\n",
                static_cast<unsigned long long>(hits),
                static_cast<unsigned long long>(lt("memory_hits")),
                static_cast<unsigned long long>(lt("disk_hits")),
                static_cast<unsigned long long>(lt("remote_hits")),
                static_cast<unsigned long long>(lt("misses")),
                total == 0 ? 0.0 : 100.0 * static_cast<double>(hits) / static_cast<double>(total),
                static_cast<unsigned long long>(lt("memory_evictions") + lt("disk_evictions")),
                static_cast<unsigned long long>(lt("memory_evictions")),
                static_cast<unsigned long long>(lt("disk_evictions")),
                HumanSize(lt("bytes_served")).c_str(), HumanSize(lt("bytes_downloaded")).c_str());
  return buf;
}

LayerCacheOptions ResolveOptions(const Global& g) {
  LayerCacheOptions o = g.options;
  auto stored = ReadCacheSettings(o.cache_dir);
  if (!stored.ok()) throw Error(stored.status());
  if (stored->has_value()) {
    const CacheSettings& s = **stored;
    if (!g.budget_given) o.max_cache_size_gb = s.max_cache_size_gb;
    if (!g.compression_given) o.enable_compression = s.enable_compression;
    if (!g.level_given) o.compression_level = s.compression_level;
    if (!g.checksum_given) o.checksum_algorithm = s.checksum_algorithm;
    o.eviction_policy = s.eviction_policy;
  } else if (std::filesystem::exists(std::filesystem::path(o.ResolvedCacheDir()) /
                                     "index.sqlite")) {
    // A cache made before settings were stored: nobody said what its budget
    // is, so a command does not evict by a default of its own.
    if (!g.budget_given) o.max_cache_size_gb = kNoBudgetGb;
  }
  return o;
}

EvictionReport::EvictionReport(LayerCache& cache) {
  for (const EntryInfo& e : cache.list_entries()) before_[e.key.Digest()] = e.size_bytes;
}

std::string EvictionReport::Describe(LayerCache& cache,
                                     const std::vector<LayerKey>& removed_on_purpose) {
  std::map<std::string, uint64_t> gone = before_;
  for (const EntryInfo& e : cache.list_entries()) gone.erase(e.key.Digest());
  for (const LayerKey& k : removed_on_purpose) gone.erase(k.Digest());
  evicted_entries_ = gone.size();
  evicted_bytes_ = 0;
  for (const auto& [digest, bytes] : gone) evicted_bytes_ += bytes;
  if (gone.empty()) return "";
  const double budget = cache.options().max_cache_size_gb;
  char b[64];
  std::snprintf(b, sizeof b, "%g GiB", budget);
  return "evicted " + std::to_string(evicted_entries_) + " layer" +
         (evicted_entries_ == 1 ? "" : "s") + ", " + HumanSize(evicted_bytes_) + " (disk budget " +
         b + ")";
}

int DescribeRemote(const Global& g);

int Stats(const Global& g, const std::string& format) {
  LayerCache cache(ResolveOptions(g));
  if (format == "prometheus") {
    std::cout << cache.metrics_text();
    return kExitOk;
  }
  CacheStats s = cache.get_stats();
  if (g.json || format == "json") {
    // The library's statistics plus, per quantization mode, the entries and bytes on disk.
    auto j = nlohmann::ordered_json::parse(s.ToJson());
    j["quantization_modes"] = nlohmann::ordered_json::parse(ModeSummaryJson(cache.list_entries()));
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "Cache directory: " << cache.cache_dir() << "\n" << s.ToText();
    std::cout << LifetimeLine(s);
    std::printf("On disk: %s holding %s of tensors (compression ratio %.2f)\n",
                HumanSize(s.disk_cache_bytes).c_str(),
                HumanSize(s.disk_cache_logical_bytes).c_str(), s.disk_compression_ratio());
    PrintModeSummary(cache.list_entries(), std::cout);
  }
  return DescribeRemote(g);
}

// The cluster tier as Redis sees it (with --remote or $LAYERCACHE_REMOTE).
int DescribeRemote(const Global& g) {
  const std::vector<std::string> urls = g.options.ResolvedRemoteUrls();
  if (urls.empty()) return kExitOk;
  auto remote = DescribeRemoteTier(g.options);
  if (!remote.ok()) {
    std::cerr << "remote tier: " << remote.status().message() << "\n";
    return kExitError;
  }
  if (g.json) return kExitOk;  // the counters are in the JSON already
  std::cout << "Remote tier (" << (remote->cluster ? "Redis Cluster" : "Redis") << "):\n";
  for (const RemoteNodeInfo& m : remote->nodes) {
    std::cout << "  " << m.address << ": " << m.layers << " layers, " << HumanSize(m.used_memory)
              << " used of "
              << (m.maxmemory == 0 ? std::string("no maxmemory") : HumanSize(m.maxmemory))
              << ", policy " << m.policy;
    if (m.maxmemory == 0 || m.policy.rfind("allkeys-", 0) != 0) {
      std::cout << "  (expected: maxmemory set and maxmemory-policy allkeys-lru; see "
                   "docs/SCALE_OUT.md)";
    }
    std::cout << "\n";
  }
  return kExitOk;
}

int Verify(const Global& g, const std::string& model) {
  LayerCache cache(ResolveOptions(g));
  auto corrupt = cache.verify_cache_integrity();
  uint64_t checked = 0;
  for (const EntryInfo& e : cache.list_entries()) {
    if (model.empty() || e.key.model_id == model) ++checked;
  }
  std::vector<CorruptEntry> found;
  for (const CorruptEntry& c : corrupt) {
    if (model.empty() || c.key.model_id == model || c.key.model_id.empty()) found.push_back(c);
  }
  if (g.json) {
    nlohmann::ordered_json j;
    j["checked"] = checked + found.size();
    j["corrupted"] = nlohmann::ordered_json::array();
    for (const CorruptEntry& c : found) {
      j["corrupted"].push_back({{"model_id", c.key.model_id},
                                {"layer_index", c.key.layer_index},
                                {"quantization_mode", c.key.quantization_mode},
                                {"revision", c.key.revision},
                                {"path", c.path},
                                {"reason", c.reason}});
    }
    std::cout << j.dump(2) << "\n";
  } else {
    for (const CorruptEntry& c : found) {
      std::cout << "CORRUPT " << (c.key.model_id.empty() ? "?" : c.key.ToString()) << "  " << c.path
                << "\n  " << c.reason << "\n";
    }
    std::cout << checked + found.size() << " entries checked, " << found.size() << " corrupted\n";
  }
  return found.empty() ? kExitOk : kExitNotFound;
}

int Optimize(const Global& g) {
  LayerCache cache(ResolveOptions(g));
  EvictionReport ev(cache);
  OptimizeReport r = cache.optimize_cache();
  const std::string evicted = ev.Describe(cache);
  if (g.json) {
    nlohmann::ordered_json j;
    j["corrupted_removed"] = r.corrupted_removed;
    j["temp_files_removed"] = r.temp_files_removed;
    j["orphans_removed"] = r.orphans_removed;
    j["orphans_adopted"] = r.orphans_adopted;
    j["rows_dropped"] = r.rows_dropped;
    j["evicted"] = r.evicted;
    j["evicted_bytes"] = ev.evicted_bytes();
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  std::cout << "removed " << r.corrupted_removed << " corrupted entries, " << r.temp_files_removed
            << " temp files, " << r.orphans_removed << " unreadable files; adopted "
            << r.orphans_adopted << " entries; dropped " << r.rows_dropped
            << " stale index rows; evicted " << r.evicted << " entries over the budget\n";
  if (!evicted.empty()) std::cout << evicted << "\n";
  return kExitOk;
}

namespace {
int ReportRemoved(const Global& g, size_t n, uint64_t bytes) {
  if (g.json) {
    std::cout << nlohmann::ordered_json{{"removed", n}, {"freed_bytes", bytes}}.dump(2) << "\n";
  } else {
    std::cout << "removed " << n << " entries, freed " << HumanSize(bytes) << "\n";
  }
  return kExitOk;
}
}  // namespace

int Clear(const Global& g) {
  LayerCache cache(ResolveOptions(g));
  const uint64_t before = cache.get_stats().disk_cache_entries;
  const uint64_t bytes = cache.get_stats().disk_cache_bytes;
  cache.clear_cache();
  return ReportRemoved(g, before, bytes);
}

int Invalidate(const Global& g, const std::string& model, std::optional<int64_t> layer,
               const std::string& revision) {
  LayerCache cache(ResolveOptions(g));
  if (!revision.empty() && revision.size() < 7) {
    std::cerr << "layercache: --revision needs a commit or a prefix of at least 7 characters\n";
    return kExitUsage;
  }
  uint64_t bytes = 0;
  size_t n = 0;
  for (const EntryInfo& e : cache.list_entries()) {
    if (e.key.model_id != model || (layer && e.key.layer_index != *layer)) continue;
    if (revision.empty()) {
      bytes += e.size_bytes;
    } else if (e.key.revision.rfind(revision, 0) == 0 && cache.remove_entry(e.key)) {
      bytes += e.size_bytes;
      ++n;
    }
  }
  if (revision.empty()) n = cache.invalidate_cache(model, layer);
  return ReportRemoved(g, n, bytes);
}

int Inspect(const std::string& file, bool json) {
  auto header = ReadSafetensorsHeader(file);
  if (!header.ok()) {
    std::cerr << "invalid: " << header.status().message() << "\n";
    return header.status().IsNotFound() ? kExitError : kExitNotFound;
  }
  auto entry = InspectEntryHeader(*header, file);
  if (json) {
    nlohmann::ordered_json j;
    j["file"] = file;
    j["header_bytes"] = header->header_length;
    j["data_bytes"] = header->data_bytes;
    j["metadata"] = header->metadata;
    if (entry.ok()) {
      j["layercache_entry"] = {
          {"key", entry->key.ToString()},
          {"checksum_algorithm", ChecksumAlgorithmName(entry->checksum_algorithm)},
          {"checksum", entry->checksum}};
    }
    j["tensors"] = nlohmann::ordered_json::array();
    for (const TensorInfo& t : header->tensors) {
      j["tensors"].push_back({{"name", t.name},
                              {"dtype", DTypeName(t.dtype)},
                              {"shape", t.shape},
                              {"data_offsets", {t.offset, t.offset + t.nbytes}}});
    }
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  std::cout << file << ": valid safetensors, " << header->tensors.size() << " tensors, "
            << header->data_bytes << " data bytes, header " << header->header_length << " bytes\n";
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
  return kExitOk;
}

int Put(const Global& g, const std::string& model, int64_t layer_index, const std::string& file,
        const std::string& quant, const std::string& revision, const QuantFlags& qf) {
  auto layer = ReadSafetensorsFile(file);
  if (!layer.ok()) {
    std::cerr << "layercache: " << layer.status().message() << "\n";
    return kExitError;
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
  auto prepared = PrepareForPut(to_cache, quant, qf);
  if (!prepared.ok()) {
    std::cerr << "layercache: " << prepared.status().message() << "\n";
    return kExitUsage;
  }
  to_cache = *prepared;
  LayerKey key{model, layer_index, quant, revision};
  key.Validate();
  LayerCache cache(ResolveOptions(g));
  EvictionReport ev(cache);
  Status s = cache.cache_layer_status(key, to_cache);
  if (!s.ok()) {
    std::cerr << "layercache: " << s.message() << "\n";
    return s.code() == StatusCode::kInvalidArgument ? kExitUsage : kExitError;
  }
  const std::string evicted = ev.Describe(cache);
  if (g.json) {
    std::cout << nlohmann::ordered_json{{"cached", key.ToString()},
                                        {"tensors", to_cache->num_tensors()},
                                        {"bytes", to_cache->nbytes()},
                                        {"evicted", ev.evicted_entries()},
                                        {"evicted_bytes", ev.evicted_bytes()}}
                     .dump(2)
              << "\n";
    return kExitOk;
  }
  std::cout << "cached " << key.ToString() << ": " << to_cache->num_tensors() << " tensors, "
            << HumanSize(to_cache->nbytes()) << "\n";
  if (!evicted.empty()) std::cout << evicted << "\n";
  return kExitOk;
}

int Get(const Global& g, const std::string& model, int64_t layer_index, const std::string& quant,
        const std::string& out, const std::string& revision) {
  LayerCache cache(ResolveOptions(g));
  LayerKey key{model, layer_index, quant, revision};
  LayerPtr layer = cache.get_layer(key);
  if (!layer) {
    std::cerr << "layercache: " << key.ToString() << " is not cached\n";
    return kExitNotFound;
  }
  const bool to_stdout = out == "-";
  Status s =
      to_stdout ? WriteSafetensorsToFd(*layer, STDOUT_FILENO) : WriteSafetensorsFile(*layer, out);
  if (!s.ok()) {
    std::cerr << "layercache: " << s.message() << "\n";
    return s.code() == StatusCode::kInvalidArgument ? kExitUsage : kExitError;
  }
  // The data went to stdout: the report goes to stderr.
  (to_stdout ? std::cerr : std::cout)
      << "wrote " << key.ToString() << " to " << (to_stdout ? "standard output" : out) << " ("
      << layer->nbytes() << " bytes of tensor data)\n";
  return kExitOk;
}

std::vector<int64_t> ParseLayers(const std::string& spec) {
  std::vector<int64_t> out;
  if (spec.empty() || spec == "all") return out;
  constexpr int64_t kMaxListed = 1'000'000;
  const std::string usage =
      "--layers \"" + spec + "\" is not a layer list; use all, 5, 0-27 or 0,3,5-7";
  size_t pos = 0;
  while (pos <= spec.size()) {
    const size_t comma = spec.find(',', pos);
    const std::string part =
        spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const size_t dash = part.find('-');
    if (dash == std::string::npos) {
      out.push_back(ParseIntInRange("--layers", part, 0, INT64_MAX));
    } else {
      if (dash == 0) throw Error(Status::InvalidArgument("--layers: layer indices start at 0"));
      const int64_t a = ParseIntInRange("--layers", part.substr(0, dash), 0, INT64_MAX);
      const int64_t b = ParseIntInRange("--layers", part.substr(dash + 1), 0, INT64_MAX);
      if (b < a) throw Error(Status::InvalidArgument(usage));
      if (b - a >= kMaxListed) {
        throw Error(Status::InvalidArgument("--layers: a range may hold at most " +
                                            std::to_string(kMaxListed) + " layers (got " + part +
                                            ")"));
      }
      for (int64_t i = a; i <= b; ++i) out.push_back(i);
    }
    if (static_cast<int64_t>(out.size()) > kMaxListed) {
      throw Error(
          Status::InvalidArgument("--layers: at most " + std::to_string(kMaxListed) + " layers"));
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

int Fetch(const Global& g, const FetchOptions& f, const DownloadOptions& options) {
  DownloadOptions d = options;
  LayerCache cache(ResolveOptions(g));
  EvictionReport ev(cache);
  const std::string model_id = f.model_id.empty() ? f.repo_id : f.model_id;
  std::vector<int64_t> layers = ParseLayers(f.layers);
  if (layers.empty()) {
    const int64_t n = cache.hub_num_layers(f.repo_id, f.filename, d);
    for (int64_t i = 0; i < n; ++i) layers.push_back(i);
  }
  const bool chatty = !d.quiet && !g.json;
  // One bar for the whole fetch (layers done / total, bytes, rate, ETA), on a
  // terminal (or with --progress); the per-layer bars and summaries stay off.
  // Off a terminal: one line per layer on stdout, nothing on stderr.
  const bool bar = chatty && (::isatty(STDERR_FILENO) != 0 || f.progress);
  DownloadOptions per_layer = d;
  per_layer.quiet = true;
  Progress overall("fetch " + f.repo_id, layers.size(), !bar);
  if (f.progress) overall.ShowOffTerminal();
  uint64_t fetched_bytes = 0, done = 0;
  for (int64_t i : layers) {
    LayerPtr layer = cache.download_and_cache(model_id, i, f.repo_id, f.filename, per_layer);
    fetched_bytes += layer->nbytes();
    overall.Update(++done, fetched_bytes);
    if (!chatty || bar) continue;
    std::cout << "layer " << i << ": " << layer->num_tensors() << " tensors, "
              << HumanSize(layer->nbytes()) << "\n";
  }
  if (bar) overall.Finish();
  if (f.non_layer) {
    LayerPtr extra = cache.download_non_layer_tensors(model_id, f.repo_id, f.filename, per_layer);
    if (chatty) {
      std::cout << "non-layer tensors: " << extra->num_tensors() << " tensors, "
                << HumanSize(extra->nbytes()) << "\n";
    }
  }
  const CacheStats s = cache.get_stats();
  const std::string evicted = ev.Describe(cache);
  if (g.json) {
    std::cout << nlohmann::ordered_json{{"repo_id", f.repo_id},
                                        {"model_id", model_id},
                                        {"layers", layers.size()},
                                        {"bytes_downloaded", s.bytes_downloaded},
                                        {"already_cached", s.memory_hits + s.disk_hits},
                                        {"remote_hits", s.remote_hits},
                                        {"evicted", ev.evicted_entries()},
                                        {"evicted_bytes", ev.evicted_bytes()}}
                     .dump(2)
              << "\n";
    return kExitOk;
  }
  std::cout << "fetched " << layers.size() << " layers of " << f.repo_id << " ("
            << HumanSize(s.bytes_downloaded) << " downloaded, " << s.memory_hits + s.disk_hits
            << " already cached";
  if (s.remote_enabled) {
    std::cout << ", " << s.remote_hits << " from the cluster tier ("
              << HumanSize(s.bytes_from_remote) << ")";
    if (s.remote_errors > 0) std::cout << ", " << s.remote_errors << " Redis errors";
  }
  std::cout << ")\n";
  if (!evicted.empty()) std::cout << evicted << "\n";
  return kExitOk;
}

int Import(const Global& g, const std::string& dir, const std::string& model_id,
           const std::string& layers, const std::string& pattern) {
  const std::vector<int64_t> wanted = ParseLayers(layers);
  LayerCache cache(ResolveOptions(g));
  EvictionReport ev(cache);
  const size_t n =
      cache.import_checkpoint(dir, model_id, wanted, pattern, /*include_non_layer=*/true,
                              /*revision=*/"", g.json ? ProgressCallback() : ProgressBarCallback());
  const std::string evicted = ev.Describe(cache);
  if (g.json) {
    std::cout << nlohmann::ordered_json{{"imported", n},
                                        {"model_id", model_id},
                                        {"evicted", ev.evicted_entries()},
                                        {"evicted_bytes", ev.evicted_bytes()}}
                     .dump(2)
              << "\n";
    return kExitOk;
  }
  std::cout << "imported " << n << " entries of " << dir << " as " << model_id << "\n";
  if (!evicted.empty()) std::cout << evicted << "\n";
  return kExitOk;
}

int Config(const Global& g, const std::vector<std::string>& sets) {
  auto stored = ReadCacheSettings(g.options.cache_dir);
  if (!stored.ok()) throw Error(stored.status());
  const bool had = stored->has_value();
  CacheSettings s = had ? **stored : CacheSettings::FromOptions(g.options);
  for (const std::string& kv : sets) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      throw Error(Status::InvalidArgument("--set takes KEY=VALUE (got \"" + kv + "\")"));
    }
    if (Status st = s.Set(kv.substr(0, eq), kv.substr(eq + 1)); !st.ok()) {
      throw Error(Status::InvalidArgument(st.message()));
    }
  }
  if (!sets.empty()) {
    if (Status st = WriteCacheSettings(g.options.cache_dir, s); !st.ok()) throw Error(st);
  }
  if (g.json) {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(s.ToJson());
    j.erase("format");
    j["stored"] = had || !sets.empty();
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  if (!had && sets.empty()) {
    std::cout << "# no settings stored in this cache; commands use no budget (never evict) "
                 "until one is set with layercache config --set max_cache_size_gb=N\n";
  }
  for (const std::string& k : CacheSettings::Keys()) {
    if (!had && sets.empty() && k == "max_cache_size_gb") continue;
    std::cout << k << "=" << s.Get(k) << "\n";
  }
  return kExitOk;
}

}  // namespace layercache::cli
