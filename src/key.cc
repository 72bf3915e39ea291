#include "layercache/key.h"

#include <xxhash.h>

#include <stdexcept>

#include "util/utf8.h"

namespace layercache {
namespace {

void AppendField(std::string* out, const std::string& field) {
  const uint64_t n = field.size();
  out->append(reinterpret_cast<const char*>(&n), sizeof n);
  out->append(field);
}

std::string Encode(const LayerKey& key) {
  std::string out = "layercache-key-v1";
  AppendField(&out, key.model_id);
  AppendField(&out, std::to_string(key.layer_index));
  AppendField(&out, key.quantization_mode);
  AppendField(&out, key.revision);
  return out;
}

void CheckText(std::string_view value, const char* name) {
  if (value.find('\0') != std::string_view::npos) {
    throw std::invalid_argument(std::string(name) + " contains a NUL byte; pass a plain text name");
  }
  if (!IsValidUtf8(value)) {
    throw std::invalid_argument(std::string(name) + " is not valid UTF-8; pass a UTF-8 string");
  }
}

}  // namespace

void LayerKey::Validate() const { LayerKeyRef(*this).Validate(); }

void LayerKeyRef::Validate() const {
  if (model_id.empty()) {
    throw std::invalid_argument("model_id is empty; pass a model name such as \"qwen-7b\"");
  }
  CheckText(model_id, "model_id");
  if (layer_index < 0) {
    throw std::invalid_argument("layer_index is " + std::to_string(layer_index) +
                                "; layer indices start at 0");
  }
  CheckText(quantization_mode, "quantization_mode");
  CheckText(revision, "revision");
}

std::string LayerKey::ToString() const {
  std::string out = model_id + "/" + std::to_string(layer_index);
  if (!quantization_mode.empty()) out += "[" + quantization_mode + "]";
  if (!revision.empty()) out += "@" + revision;
  return out;
}

std::string LayerKey::Digest() const {
  const std::string encoded = Encode(*this);
  XXH128_hash_t h = XXH3_128bits(encoded.data(), encoded.size());
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(32);
  for (unsigned char b : c.digest) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

size_t LayerKeyHash::operator()(const LayerKeyRef& key) const {
  uint64_t h = XXH3_64bits(key.model_id.data(), key.model_id.size());
  h ^= std::hash<int64_t>()(key.layer_index) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= XXH3_64bits(key.quantization_mode.data(), key.quantization_mode.size()) + (h << 6);
  h ^= XXH3_64bits(key.revision.data(), key.revision.size()) + (h >> 3);
  return static_cast<size_t>(h);
}

}  // namespace layercache
