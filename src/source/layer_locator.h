// LayerLocator: which tensors of a checkpoint belong to layer i.
//
// Layer tensors are named "<prefix><i>.<rest>" (for Llama "model.layers.5.
// self_attn.q_proj.weight"). The prefix is detected from the tensor names by
// trying the patterns of common architectures in order (see kLayerPatterns in
// layer_locator.cc), or given by the user as a pattern containing "{i}", such
// as "decoder.block.{i}." for a T5 decoder. A layer's tensors are returned
// under their names with the matched part removed ("self_attn.q_proj.weight"),
// so that they load straight into one decoder layer module; every other tensor
// (embeddings, final norm, lm_head) is a "non-layer" tensor, kept under its
// full name.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "layercache/status.h"

namespace layercache {

// The patterns tried, in order, when none is given.
const std::vector<std::string>& DefaultLayerPatterns();

class LayerLocator {
 public:
  // `pattern` empty: detect from `names`. A pattern must contain "{i}" once.
  static Result<LayerLocator> Create(const std::vector<std::string>& names,
                                     const std::string& pattern = "");

  const std::string& pattern() const { return pattern_; }
  int64_t num_layers() const { return num_layers_; }

  // If `name` is a tensor of some layer, sets its index and local name.
  bool Match(const std::string& name, int64_t* index, std::string* local) const;

  // (full name, local name) of layer `index`'s tensors, in `names` order.
  std::vector<std::pair<std::string, std::string>> LayerTensors(
      const std::vector<std::string>& names, int64_t index) const;
  // (full name, full name) of the tensors outside every layer.
  std::vector<std::pair<std::string, std::string>> NonLayerTensors(
      const std::vector<std::string>& names) const;

 private:
  std::string pattern_;
  std::string before_;  // pattern text before "{i}"
  std::string after_;   // pattern text after "{i}"
  int64_t num_layers_ = 0;
};

}  // namespace layercache
