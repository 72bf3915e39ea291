#include "layercache/cache_settings.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "io/env.h"
#include "util/path.h"

namespace layercache {

CacheSettings CacheSettings::FromOptions(const LayerCacheOptions& o) {
  CacheSettings s;
  s.max_cache_size_gb = o.max_cache_size_gb;
  s.enable_compression = o.enable_compression;
  s.compression_level = o.compression_level;
  s.checksum_algorithm = o.checksum_algorithm;
  s.eviction_policy = o.eviction_policy;
  return s;
}

void CacheSettings::ApplyTo(LayerCacheOptions* o) const {
  o->max_cache_size_gb = max_cache_size_gb;
  o->enable_compression = enable_compression;
  o->compression_level = compression_level;
  o->checksum_algorithm = checksum_algorithm;
  o->eviction_policy = eviction_policy;
}

const std::vector<std::string>& CacheSettings::Keys() {
  static const std::vector<std::string> kKeys = {"max_cache_size_gb", "enable_compression",
                                                 "compression_level", "checksum_algorithm",
                                                 "eviction_policy"};
  return kKeys;
}

std::string CacheSettings::Get(const std::string& key) const {
  if (key == "max_cache_size_gb") {
    nlohmann::json j = max_cache_size_gb;
    return j.dump();
  }
  if (key == "enable_compression") return enable_compression ? "true" : "false";
  if (key == "compression_level") return std::to_string(compression_level);
  if (key == "checksum_algorithm") return ChecksumAlgorithmName(checksum_algorithm);
  if (key == "eviction_policy") return EvictionPolicyName(eviction_policy);
  return "";
}

Status CacheSettings::Set(const std::string& key, const std::string& value) {
  try {
    if (key == "max_cache_size_gb") {
      size_t used = 0;
      double v = -1;
      try {
        v = std::stod(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != value.size() || !std::isfinite(v) || v <= 0 || v > 1048576) {
        return Status::InvalidArgument(
            "max_cache_size_gb must be a number in (0, 1048576] GiB "
            "(got \"" +
            value + "\")");
      }
      max_cache_size_gb = v;
    } else if (key == "enable_compression") {
      if (value == "true" || value == "1" || value == "on") {
        enable_compression = true;
      } else if (value == "false" || value == "0" || value == "off") {
        enable_compression = false;
      } else {
        return Status::InvalidArgument("enable_compression must be true or false (got \"" + value +
                                       "\")");
      }
    } else if (key == "compression_level") {
      if (value.size() != 1 || value[0] < '1' || value[0] > '9') {
        return Status::InvalidArgument("compression_level must be an integer in 1..9 (got \"" +
                                       value + "\")");
      }
      compression_level = value[0] - '0';
    } else if (key == "checksum_algorithm") {
      checksum_algorithm = ParseChecksumAlgorithm(value);
    } else if (key == "eviction_policy") {
      eviction_policy = ParseEvictionPolicy(value);
    } else {
      std::string keys;
      for (const std::string& k : Keys()) keys += (keys.empty() ? "" : ", ") + k;
      return Status::InvalidArgument("unknown setting \"" + key + "\"; the settings are " + keys);
    }
  } catch (const Error& e) {  // the option parsers' kInvalidArgument
    return e.status();
  }
  return Status::OK();
}

std::string CacheSettings::ToJson() const {
  nlohmann::ordered_json j;
  j["format"] = 1;
  j["max_cache_size_gb"] = max_cache_size_gb;
  j["enable_compression"] = enable_compression;
  j["compression_level"] = compression_level;
  j["checksum_algorithm"] = ChecksumAlgorithmName(checksum_algorithm);
  j["eviction_policy"] = EvictionPolicyName(eviction_policy);
  return j.dump(2) + "\n";
}

Result<std::optional<CacheSettings>> ReadCacheSettings(const std::string& cache_dir, Env* env) {
  LayerCacheOptions o;
  o.cache_dir = cache_dir;
  const std::string path = JoinPath(o.ResolvedCacheDir(), kCacheSettingsFile);
  auto text = ReadFileToString(env != nullptr ? env : Env::Default(), path);
  if (!text.ok()) {
    if (text.status().IsNotFound()) return std::optional<CacheSettings>();
    return text.status();
  }
  CacheSettings s;
  try {
    const nlohmann::json j = nlohmann::json::parse(*text);
    if (!j.is_object()) throw Error(Status::Corruption("not a JSON object"));
    for (const std::string& key : CacheSettings::Keys()) {
      if (!j.contains(key)) continue;
      const nlohmann::json& v = j[key];
      std::string value;
      if (v.is_string()) {
        value = v.get<std::string>();
      } else if (v.is_boolean()) {
        value = v.get<bool>() ? "true" : "false";
      } else if (v.is_number()) {
        value = v.dump();
      } else {
        throw Error(Status::Corruption(key + " has the wrong type"));
      }
      if (Status st = s.Set(key, value); !st.ok()) throw Error(st);
    }
  } catch (const std::exception& e) {  // nlohmann's parse errors, or the checks above
    const auto* error = dynamic_cast<const Error*>(&e);
    return Status::Corruption(path + " is not a valid settings file (" +
                              (error != nullptr ? error->status().message() : e.what()) +
                              "); fix or remove it, or rewrite it with layercache config --set");
  }
  return std::optional<CacheSettings>(s);
}

Status WriteCacheSettings(const std::string& cache_dir, const CacheSettings& settings, Env* env) {
  if (env == nullptr) env = Env::Default();
  LayerCacheOptions o;
  o.cache_dir = cache_dir;
  const std::string dir = o.ResolvedCacheDir();
  if (Status s = env->CreateDirs(dir); !s.ok()) return s;
  const std::string json = settings.ToJson();
  return WriteFileAtomically(env, JoinPath(dir, kCacheSettingsFile),
                             {std::as_bytes(std::span<const char>(json))});
}

LayerCacheOptions StoredOptions(LayerCacheOptions options) {
  auto stored = ReadCacheSettings(options.cache_dir, options.env);
  if (!stored.ok()) throw Error(stored.status());
  if (stored->has_value()) (*stored)->ApplyTo(&options);
  return options;
}

}  // namespace layercache

#include "cache_settings_internal.h"
#include "layercache/status.h"
#include "util/logging.h"

namespace layercache {

bool CacheIndexExists(const std::string& cache_dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  return env->Stat(JoinPath(cache_dir, "index.sqlite")).ok();
}

void RecordSettingsOfNewCache(const std::string& cache_dir, const LayerCacheOptions& options) {
  Env* env = options.env != nullptr ? options.env : Env::Default();
  if (env->Stat(JoinPath(cache_dir, kCacheSettingsFile)).ok()) return;
  Status s = WriteCacheSettings(cache_dir, CacheSettings::FromOptions(options), env);
  if (!s.ok()) LogWarn("cannot record the settings of the new cache: " + s.message());
}

}  // namespace layercache
