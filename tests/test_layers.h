// Deterministic test layers: the bytes of a layer follow from its key, so any
// process can check what it reads against what must have been written.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layercache/layer.h"

namespace layercache::testing {

inline uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

inline uint64_t SeedOf(const std::string& model, int64_t index, uint64_t version = 0) {
  uint64_t h = 1469598103934665603ULL;
  for (char c : model) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ULL;
  return Mix(h ^ Mix(static_cast<uint64_t>(index) + 0x9e37 * (version + 1)));
}

// A Llama-ish layer of about `bytes` bytes: a bf16 matrix, an f32 vector and
// an i64 scalar, filled from `seed`.
inline LayerPtr MakeLayer(uint64_t seed, uint64_t bytes = 4096) {
  const uint64_t cols = 64;
  const uint64_t rows = std::max<uint64_t>(1, bytes / 2 / cols);
  std::vector<uint16_t> w(rows * cols);
  uint64_t s = seed;
  for (auto& v : w) v = static_cast<uint16_t>((s = Mix(s + 1)) & 0xffff);
  std::vector<float> norm(cols);
  for (uint64_t i = 0; i < cols; ++i)
    norm[i] = static_cast<float>(seed % 1000) + static_cast<float>(i);
  std::vector<int64_t> step{static_cast<int64_t>(seed & 0x7fffffff)};
  return LayerBuilder()
      .add_tensor("mlp.weight", DType::BF16, {rows, cols}, w)
      .add_tensor("norm.weight", DType::F32, {cols}, norm)
      .add_tensor("step", DType::I64, {}, step)
      .set_metadata("seed", std::to_string(seed))
      .build();
}

}  // namespace layercache::testing
