// Writes a synthetic Llama-shaped checkpoint (bf16 weights drawn from a normal
// distribution with std 0.02, norms at 1.0) as sharded safetensors with a
// model.safetensors.index.json and a config.json, as Hugging Face checkpoints
// are laid out. Used by the demo, the tests and the benchmarks.
#pragma once

#include <cstdint>
#include <string>

#include "layercache/status.h"

namespace layercache {

struct SyntheticModelSpec {
  int64_t num_layers = 8;
  uint64_t hidden_size = 256;
  uint64_t intermediate_size = 688;
  uint64_t num_attention_heads = 8;
  uint64_t num_key_value_heads = 4;
  uint64_t vocab_size = 1024;
  int64_t layers_per_shard = 4;
  uint64_t seed = 42;
};

struct SyntheticModelInfo {
  int64_t num_shards = 0;
  uint64_t total_bytes = 0;      // tensor bytes, all shards
  uint64_t bytes_per_layer = 0;  // tensor bytes of one decoder layer
};

Result<SyntheticModelInfo> WriteSyntheticModel(const std::string& dir,
                                               const SyntheticModelSpec& spec);

}  // namespace layercache
