// LayerKey: what identifies one cached layer.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace layercache {

struct LayerKey {
  std::string model_id;           // any non-empty UTF-8 string without NUL bytes
  int64_t layer_index = 0;        // >= 0
  std::string quantization_mode;  // "" means none
  std::string revision;           // "" means unspecified; a commit sha for Hub layers

  // Throws std::invalid_argument, saying how to fix it, when the key is unusable.
  void Validate() const;

  // A human-readable form: "qwen-7b/5", "qwen-7b/5[nf4]", "qwen-7b/5@abc123".
  std::string ToString() const;

  // 32 lower-case hex digits (XXH3-128 of a length-prefixed encoding of all
  // four fields). Entry file names derive from this, never from user strings.
  std::string Digest() const;

  friend bool operator==(const LayerKey&, const LayerKey&) = default;
};

struct LayerKeyHash {
  size_t operator()(const LayerKey& key) const;
};

}  // namespace layercache
