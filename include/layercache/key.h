// LayerKey: what identifies one cached layer.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace layercache {

struct LayerKey {
  std::string model_id;           // any non-empty UTF-8 string without NUL bytes
  int64_t layer_index = 0;        // >= 0
  std::string quantization_mode;  // "" means none
  std::string revision;           // "" means unspecified; a commit sha for Hub layers

  // Throws layercache::Error (kInvalidArgument), saying how to fix it, when
  // the key is unusable.
  void Validate() const;

  // A human-readable form: "qwen-7b/5", "qwen-7b/5[nf4]", "qwen-7b/5@abc123".
  std::string ToString() const;

  // 32 lower-case hex digits (XXH3-128 of a length-prefixed encoding of all
  // four fields). Entry file names derive from this, never from user strings.
  std::string Digest() const;

  friend bool operator==(const LayerKey&, const LayerKey&) = default;
};

// A non-owning view of a key, for lookups that must not allocate.
struct LayerKeyRef {
  std::string_view model_id;
  int64_t layer_index = 0;
  std::string_view quantization_mode;
  std::string_view revision;

  LayerKeyRef() = default;
  LayerKeyRef(std::string_view m, int64_t i, std::string_view q = {}, std::string_view r = {})
      : model_id(m), layer_index(i), quantization_mode(q), revision(r) {}
  LayerKeyRef(const LayerKey& k)  // NOLINT(google-explicit-constructor)
      : model_id(k.model_id),
        layer_index(k.layer_index),
        quantization_mode(k.quantization_mode),
        revision(k.revision) {}

  // As LayerKey::Validate.
  void Validate() const;
  LayerKey ToKey() const {
    return {std::string(model_id), layer_index, std::string(quantization_mode),
            std::string(revision)};
  }
  friend bool operator==(const LayerKeyRef&, const LayerKeyRef&) = default;
};

// Hashes and compares LayerKey and LayerKeyRef alike (heterogeneous lookup).
struct LayerKeyHash {
  using is_transparent = void;
  size_t operator()(const LayerKeyRef& key) const;
};
struct LayerKeyEqual {
  using is_transparent = void;
  bool operator()(const LayerKeyRef& a, const LayerKeyRef& b) const { return a == b; }
};

}  // namespace layercache
