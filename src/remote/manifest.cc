#include "remote/manifest.h"

#include <nlohmann/json.hpp>

namespace layercache {

std::string SerializeRemoteManifest(const RemoteManifest& m) {
  nlohmann::ordered_json j;
  j["format"] = kRemoteFormat;
  j["digest"] = m.digest;
  j["key"] = m.key;
  j["id"] = m.id;
  j["size"] = m.size;
  j["chunk_bytes"] = m.chunk_bytes;
  j["xxh3_64"] = m.chunk_sums;
  j["xxh3_128"] = m.sum;
  return j.dump();
}

Result<RemoteManifest> ParseRemoteManifest(std::string_view text, const std::string& digest) {
  try {
    const auto j = nlohmann::json::parse(text);
    if (!j.is_object()) return Status::Corruption("manifest is not a JSON object");
    if (j.at("format").get<int>() != kRemoteFormat)
      return Status::Corruption("manifest of another format version");
    RemoteManifest m;
    m.digest = j.at("digest").get<std::string>();
    if (m.digest != digest) return Status::Corruption("manifest of another key");
    m.key = j.value("key", "");
    m.id = j.at("id").get<std::string>();
    m.size = j.at("size").get<uint64_t>();
    m.chunk_bytes = j.at("chunk_bytes").get<uint64_t>();
    m.chunk_sums = j.at("xxh3_64").get<std::vector<std::string>>();
    m.sum = j.at("xxh3_128").get<std::string>();
    if (m.id.empty() || m.id.size() > 64 ||
        m.id.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return Status::Corruption("manifest with a bad publication id");
    }
    if (m.chunk_bytes == 0 || m.chunk_bytes > kMaxRemoteChunkBytes || m.size == 0 ||
        m.chunk_sums.size() != m.chunks()) {
      return Status::Corruption("manifest with inconsistent sizes");
    }
    return m;
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("unreadable manifest: ") + e.what());
  }
}

}  // namespace layercache
