#include "layercache/key.h"

#include <xxhash.h>

#include <cstring>
#include <stdexcept>

#include "layercache/status.h"
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
    throw Error(Status::InvalidArgument(std::string(name) +
                                        " contains a NUL byte; pass a plain text name"));
  }
  if (!IsValidUtf8(value)) {
    throw Error(
        Status::InvalidArgument(std::string(name) + " is not valid UTF-8; pass a UTF-8 string"));
  }
}

}  // namespace

void LayerKey::Validate() const { LayerKeyRef(*this).Validate(); }

void LayerKeyRef::Validate() const {
  if (model_id.empty()) {
    throw Error(
        Status::InvalidArgument("model_id is empty; pass a model name such as \"qwen-7b\""));
  }
  CheckText(model_id, "model_id");
  if (layer_index < 0) {
    throw Error(Status::InvalidArgument("layer_index is " + std::to_string(layer_index) +
                                        "; layer indices start at 0"));
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

namespace {

inline uint64_t Mix(uint64_t a, uint64_t b) {
  const __uint128_t m =
      static_cast<__uint128_t>(a ^ 0xa0761d6478bd642fULL) * (b ^ 0xe7037ed1a0b428dbULL);
  return static_cast<uint64_t>(m) ^ static_cast<uint64_t>(m >> 64);
}

inline uint64_t Read8(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t Read4(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// A fast hash of a short string (wyhash-style: whole words, overlapping
// reads for the tail, no variable-length copy).
inline uint64_t HashBytes(std::string_view s, uint64_t seed) {
  const char* p = s.data();
  const size_t n = s.size();
  uint64_t a, b;
  if (n >= 8) {
    uint64_t h = seed;
    size_t i = 0;
    for (; i + 8 < n; i += 8) h = Mix(h, Read8(p + i));
    a = h;
    b = Read8(p + n - 8);
  } else if (n >= 4) {
    a = seed ^ Read4(p);
    b = Read4(p + n - 4);
  } else if (n > 0) {
    a = seed;
    b = (static_cast<uint64_t>(static_cast<uint8_t>(p[0])) << 16) |
        (static_cast<uint64_t>(static_cast<uint8_t>(p[n >> 1])) << 8) |
        static_cast<uint8_t>(p[n - 1]);
  } else {
    a = seed;
    b = 0;
  }
  return Mix(a ^ n, b);
}

}  // namespace

size_t LayerKeyHash::operator()(const LayerKeyRef& key) const {
  uint64_t h = HashBytes(key.model_id, 0x9e3779b97f4a7c15ULL);
  h = Mix(h, static_cast<uint64_t>(key.layer_index));
  if (!key.quantization_mode.empty()) h = HashBytes(key.quantization_mode, h);
  if (!key.revision.empty()) h = HashBytes(key.revision, h ^ 0x5bd1e995);
  return static_cast<size_t>(h);
}

}  // namespace layercache
