// Checkpoint: a local model directory in safetensors form, read layer by
// layer without loading whole shards.
//
// A directory holds either `model.safetensors` or `model.safetensors.index.json`
// (whose `weight_map` names the shard of each tensor). Layer i is the set of
// tensors whose names start with the model's layer prefix and index, e.g.
// "model.layers.5."; the pattern is detected from the tensor names (see
// LayerLocator) or given. A layer's tensors are returned under their names with that
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
#include "source/layer_locator.h"

namespace layercache {

class Checkpoint {
 public:
  // `layer_pattern` as for LayerLocator ("" detects it).
  // Every file is read through `env` (null: Env::Default()), which must
  // outlive the checkpoint.
  static Result<std::unique_ptr<Checkpoint>> Open(const std::string& dir,
                                                  const std::string& layer_pattern = "",
                                                  Env* env = nullptr);

  // Number of layers (highest index + 1).
  int64_t num_layers() const { return locator_.num_layers(); }
  const std::string& layer_pattern() const { return locator_.pattern(); }
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
  Env* env_ = nullptr;
  std::map<std::string, SafetensorsHeader> headers_;  // by shard file name
  std::map<std::string, Location> tensors_;           // by full tensor name
  std::vector<std::string> names_;
  LayerLocator locator_;
  uint64_t total_bytes_ = 0;
};

// Rejects shard names that could escape the model directory.
Status CheckShardName(const std::string& name);

// Parses a model.safetensors.index.json: its weight_map (tensor -> shard
// file), every shard name checked. `what` names the file in errors.
Result<std::map<std::string, std::string>> ParseWeightMap(const std::string& text,
                                                          const std::string& what);

}  // namespace layercache
