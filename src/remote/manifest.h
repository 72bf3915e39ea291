// The manifest of a layer in the cluster tier: what a reader needs to fetch
// and check its chunks (docs/SCALE_OUT.md, "Layout in Redis").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "layercache/status.h"

namespace layercache {

inline constexpr int kRemoteFormat = 1;
inline constexpr uint64_t kMaxRemoteChunkBytes = 512ull << 20;  // Redis's value cap

struct RemoteManifest {
  std::string digest;  // the LayerKey's digest
  std::string key;     // the key, readable (for people looking at Redis)
  std::string id;      // publication id, part of the chunk keys
  uint64_t size = 0;   // bytes of the serialized layer (a safetensors file)
  uint64_t chunk_bytes = 0;
  std::vector<std::string> chunk_sums;  // XXH3-64 of each chunk, hex
  std::string sum;                      // XXH3-128 of the whole, hex

  uint64_t chunks() const { return size / chunk_bytes + (size % chunk_bytes != 0 ? 1 : 0); }
};

std::string SerializeRemoteManifest(const RemoteManifest& m);
// Parses and checks a manifest found under `digest`'s key: the format
// version, the digest, a safe publication id, and sizes that agree.
Result<RemoteManifest> ParseRemoteManifest(std::string_view text, const std::string& digest);

}  // namespace layercache
