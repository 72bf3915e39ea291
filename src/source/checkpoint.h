// Checkpoint: a local model directory in safetensors form, read layer by
// layer without loading whole shards.
//
// A directory holds either `model.safetensors` or `model.safetensors.index.json`
// (whose `weight_map` names the shard of each tensor). Layer i is the set of
// tensors whose names start with the model's layer prefix and index, e.g.
// "model.layers.5."; the prefix is detected from the tensor names (see
// LayerPrefixes()). A layer's tensors are returned under their names with that
// prefix removed ("self_attn.q_proj.weight"), so they load straight into one
// decoder layer's module; a layer split across shards is assembled from all of
// them. The tensors outside every layer (embeddings, final norm, lm_head) are
// returned by ReadNonLayerTensors() under their full names.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "layercache/layer.h"
#include "layercache/safetensors.h"
#include "layercache/status.h"

namespace layercache {

// The layer-name prefixes recognised, in detection order: "model.layers."
// (Llama, Qwen, Mistral, Gemma, Granite, Phi-3), "transformer.h." (GPT-2,
// Falcon), "gpt_neox.layers.", "model.decoder.layers." (OPT), "layers."...
const std::vector<std::string>& LayerPrefixes();

class Checkpoint {
 public:
  static Result<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  // Number of layers (highest index + 1); 0 when no prefix matched.
  int64_t num_layers() const { return num_layers_; }
  const std::string& layer_prefix() const { return prefix_; }
  uint64_t total_bytes() const { return total_bytes_; }

  // Layer `index` (tensor names relative to "<prefix><index>.").
  Result<LayerPtr> ReadLayer(int64_t index) const;
  // Embeddings, final norm, lm_head and anything else outside the layers.
  Result<LayerPtr> ReadNonLayerTensors() const;

 private:
  struct Location {
    std::string shard;  // file name inside dir_
    const TensorInfo* info = nullptr;
  };
  Result<LayerPtr> ReadTensors(const std::vector<std::pair<std::string, std::string>>& names) const;

  std::string dir_;
  std::map<std::string, SafetensorsHeader> headers_;  // by shard file name
  std::map<std::string, Location> tensors_;           // by full tensor name
  std::string prefix_;
  int64_t num_layers_ = 0;
  uint64_t total_bytes_ = 0;
};

// Rejects shard names that could escape the model directory.
Status CheckShardName(const std::string& name);

}  // namespace layercache
