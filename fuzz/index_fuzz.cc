// libFuzzer target: the sharded-checkpoint index parser (model.safetensors.index.json).
// It must not crash, and every shard name it accepts must be a plain file name.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "source/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace layercache;
  auto map = ParseWeightMap(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!map.ok()) return 0;
  for (const auto& [tensor, shard] : *map) {
    if (shard.find("..") != std::string::npos || shard.empty() || shard[0] == '/') std::abort();
  }
  return 0;
}
