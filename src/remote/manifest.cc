#include "remote/manifest.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "layercache/status.h"

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

namespace {

// A JSON unsigned integer. nlohmann converts floats and negative numbers
// to integers without a check (undefined behaviour out of range: found by
// remote_entry_fuzz), so the type is checked first.
uint64_t Unsigned(const nlohmann::json& j, const char* name) {
  const nlohmann::json& v = j.at(name);
  if (!v.is_number_unsigned())
    throw Error(Status::Corruption(std::string(name) + " is not a count"));
  return v.get<uint64_t>();
}

}  // namespace

Result<RemoteManifest> ParseRemoteManifest(std::string_view text, const std::string& digest) {
  try {
    const auto j = nlohmann::json::parse(text);
    if (!j.is_object()) return Status::Corruption("manifest is not a JSON object");
    if (Unsigned(j, "format") != static_cast<uint64_t>(kRemoteFormat))
      return Status::Corruption("manifest of another format version");
    RemoteManifest m;
    m.digest = j.at("digest").get<std::string>();
    if (m.digest != digest) return Status::Corruption("manifest of another key");
    m.key = j.value("key", "");
    m.id = j.at("id").get<std::string>();
    m.size = Unsigned(j, "size");
    m.chunk_bytes = Unsigned(j, "chunk_bytes");
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
  } catch (const Error& e) {
    return e.status().WithContext("unreadable manifest");
  } catch (const std::exception& e) {  // nlohmann's parse and type errors
    return Status::Corruption(std::string("unreadable manifest: ") + e.what());
  }
}

}  // namespace layercache
