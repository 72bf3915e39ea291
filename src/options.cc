#include "layercache/options.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "layercache/status.h"
#include "util/path.h"

namespace layercache {
namespace {

constexpr double kBytesPerGiB = 1024.0 * 1024.0 * 1024.0;

uint64_t GiBToBytes(double gb) {
  const double bytes = gb * kBytesPerGiB;
  if (bytes >= 1.8e19) return UINT64_MAX;
  return static_cast<uint64_t>(bytes);
}

}  // namespace

const char* ChecksumAlgorithmName(ChecksumAlgorithm algorithm) {
  switch (algorithm) {
    case ChecksumAlgorithm::kXXH3_128:
      return "xxh3-128";
    case ChecksumAlgorithm::kMD5:
      return "md5";
    case ChecksumAlgorithm::kSHA256:
      return "sha256";
  }
  return "unknown";
}

ChecksumAlgorithm ParseChecksumAlgorithm(const std::string& name) {
  if (name == "xxh3-128" || name == "xxh3" || name == "xxh3_128")
    return ChecksumAlgorithm::kXXH3_128;
  if (name == "md5") return ChecksumAlgorithm::kMD5;
  if (name == "sha256" || name == "sha-256") return ChecksumAlgorithm::kSHA256;
  throw Error(Status::InvalidArgument("unknown checksum algorithm \"" + name +
                                      "\"; use \"xxh3-128\" (default), \"md5\" or \"sha256\""));
}

EvictionPolicy ParseEvictionPolicy(const std::string& name) {
  if (name == "lru") return EvictionPolicy::kLru;
  if (name == "scan-resistant" || name == "scan_resistant") return EvictionPolicy::kScanResistant;
  throw Error(Status::InvalidArgument("unknown eviction policy \"" + name +
                                      "\"; use \"lru\" or \"scan-resistant\""));
}

const char* EvictionPolicyName(EvictionPolicy policy) {
  return policy == EvictionPolicy::kLru ? "lru" : "scan-resistant";
}

DiskReadMode ParseDiskReadMode(const std::string& name) {
  if (name == "auto") return DiskReadMode::kAuto;
  if (name == "buffered") return DiskReadMode::kBuffered;
  if (name == "direct") return DiskReadMode::kDirect;
  if (name == "mapped") return DiskReadMode::kMapped;
  throw Error(Status::InvalidArgument(
      "unknown disk read mode \"" + name +
      "\"; use \"auto\" (default), \"buffered\", \"direct\" or \"mapped\""));
}

const char* DiskReadModeName(DiskReadMode mode) {
  switch (mode) {
    case DiskReadMode::kAuto:
      return "auto";
    case DiskReadMode::kBuffered:
      return "buffered";
    case DiskReadMode::kDirect:
      return "direct";
    case DiskReadMode::kMapped:
      return "mapped";
  }
  return "auto";
}

void LayerCacheOptions::Validate() const {
  if (!std::isfinite(max_cache_size_gb) || max_cache_size_gb <= 0) {
    throw Error(Status::InvalidArgument("max_cache_size_gb must be a positive number of GiB, got " +
                                        std::to_string(max_cache_size_gb)));
  }
  if (!std::isfinite(max_memory_cache_size_gb) || max_memory_cache_size_gb < 0) {
    throw Error(Status::InvalidArgument(
        "max_memory_cache_size_gb must be zero (no memory tier) or a positive number of GiB, got " +
        std::to_string(max_memory_cache_size_gb)));
  }
  if (!std::isfinite(max_gpu_cache_size_gb) || max_gpu_cache_size_gb < 0) {
    throw Error(Status::InvalidArgument(
        "max_gpu_cache_size_gb must be zero (keep no layers on the GPU) or a positive number of "
        "GiB, got " +
        std::to_string(max_gpu_cache_size_gb)));
  }
  if (compression_level < 1 || compression_level > 9) {
    throw Error(Status::InvalidArgument("compression_level must be between 1 and 9, got " +
                                        std::to_string(compression_level)));
  }
  if (ResolvedCacheDir().empty()) throw Error(Status::InvalidArgument("cache_dir is empty"));
  if (prefetch_threads < 1 || prefetch_threads > 64) {
    throw Error(Status::InvalidArgument("prefetch_threads must be between 1 and 64, got " +
                                        std::to_string(prefetch_threads)));
  }
  if (worker_threads < 0 || worker_threads > 1024) {
    throw Error(
        Status::InvalidArgument("worker_threads must be between 0 (one per core) and 1024, got " +
                                std::to_string(worker_threads)));
  }
  if (remote_timeout_ms < 1 || remote_timeout_ms > 600'000) {
    throw Error(Status::InvalidArgument("remote_timeout_ms must be between 1 and 600000, got " +
                                        std::to_string(remote_timeout_ms)));
  }
  if (remote_chunk_mb < 1 || remote_chunk_mb > 256) {
    throw Error(Status::InvalidArgument(
        "remote_chunk_mb must be between 1 and 256 (Redis caps a value at 512 MB), got " +
        std::to_string(remote_chunk_mb)));
  }
  if (remote_lease_ms < 100 || remote_wait_ms < 0 || remote_ttl_s < 0) {
    throw Error(Status::InvalidArgument(
        "remote_lease_ms must be >= 100, remote_wait_ms and remote_ttl_s >= 0"));
  }
}

std::vector<std::string> LayerCacheOptions::ResolvedRemoteUrls() const {
  if (!remote_urls.empty()) return remote_urls;
  std::vector<std::string> urls;
  const char* var = std::getenv("LAYERCACHE_REMOTE");
  if (var == nullptr) return urls;
  std::string current;
  for (const char* p = var;; ++p) {
    if (*p == '\0' || *p == ',' || *p == ' ') {
      if (!current.empty()) urls.push_back(current);
      current.clear();
      if (*p == '\0') break;
    } else {
      current += *p;
    }
  }
  return urls;
}

std::string LayerCacheOptions::ResolvedCacheDir() const {
  std::string dir = cache_dir;
  if (dir.empty()) {
    const char* var = std::getenv("LAYERCACHE_DIR");
    dir = (var != nullptr && *var != '\0') ? var : kDefaultCacheDir;
  }
  dir = ExpandUser(dir);
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

uint64_t LayerCacheOptions::max_disk_bytes() const { return GiBToBytes(max_cache_size_gb); }
uint64_t LayerCacheOptions::max_memory_bytes() const {
  return GiBToBytes(max_memory_cache_size_gb);
}
uint64_t LayerCacheOptions::max_gpu_bytes() const { return GiBToBytes(max_gpu_cache_size_gb); }

}  // namespace layercache
