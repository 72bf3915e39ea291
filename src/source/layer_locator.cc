#include "source/layer_locator.h"

#include <algorithm>
#include <charconv>

namespace layercache {

const std::vector<std::string>& DefaultLayerPatterns() {
  static const std::vector<std::string> kLayerPatterns = {
      "model.layers.{i}.",                 // Llama, Qwen, Mistral, Gemma, Granite, Phi-3, Mixtral
      "model.language_model.layers.{i}.",  // multimodal wrappers (Gemma 3, Llama 4)
      "language_model.model.layers.{i}.",  // LLaVA-style wrappers
      "transformer.h.{i}.",                // GPT-2, Falcon, BLOOM, GPT-J
      "gpt_neox.layers.{i}.",              // GPT-NeoX, Pythia
      "model.decoder.layers.{i}.",         // OPT, Whisper decoder
      "transformer.blocks.{i}.",           // MPT
      "transformer.layers.{i}.",           // ChatGLM-style
      "encoder.block.{i}.",                // T5 encoder (decoder: pass "decoder.block.{i}.")
      "decoder.block.{i}.",                // T5 decoder-only checkpoints
      "layers.{i}.",                       // Phi-1/2 (old), Mistral reference format
      "h.{i}.",                            // GPT-2 without the transformer. prefix
      "blocks.{i}.",                       // RWKV and others
  };
  return kLayerPatterns;
}

Result<LayerLocator> LayerLocator::Create(const std::vector<std::string>& names,
                                          const std::string& pattern) {
  auto build = [&](const std::string& p) -> Result<LayerLocator> {
    const size_t pos = p.find("{i}");
    if (pos == std::string::npos || p.find("{i}", pos + 3) != std::string::npos) {
      return Status::InvalidArgument(
          "layer pattern \"" + p +
          "\" must contain \"{i}\" exactly once, e.g. \"model.layers.{i}.\"");
    }
    LayerLocator l;
    l.pattern_ = p;
    l.before_ = p.substr(0, pos);
    l.after_ = p.substr(pos + 3);
    int64_t max_index = -1;
    for (const std::string& n : names) {
      int64_t i;
      std::string local;
      if (l.Match(n, &i, &local)) max_index = std::max(max_index, i);
    }
    l.num_layers_ = max_index + 1;
    return l;
  };
  if (!pattern.empty()) return build(pattern);
  for (const std::string& p : DefaultLayerPatterns()) {
    auto l = build(p);
    if (l.ok() && l->num_layers() > 0) return l;
  }
  return Status::NotFound(
      "no tensor name matches a known layer pattern (such as \"model.layers.{i}.\"); "
      "pass the pattern with layer_pattern");
}

bool LayerLocator::Match(const std::string& name, int64_t* index, std::string* local) const {
  if (!name.starts_with(before_)) return false;
  const char* begin = name.data() + before_.size();
  const char* end = name.data() + name.size();
  int64_t i = 0;
  auto [ptr, ec] = std::from_chars(begin, end, i);
  if (ec != std::errc() || ptr == begin || i < 0) return false;
  const std::string_view rest(ptr, static_cast<size_t>(end - ptr));
  if (!rest.starts_with(after_)) return false;
  *index = i;
  *local = std::string(rest.substr(after_.size()));
  if (local->empty()) *local = std::string(rest);
  return true;
}

std::vector<std::pair<std::string, std::string>> LayerLocator::LayerTensors(
    const std::vector<std::string>& names, int64_t index) const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& n : names) {
    int64_t i;
    std::string local;
    if (Match(n, &i, &local) && i == index) out.emplace_back(n, local);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> LayerLocator::NonLayerTensors(
    const std::vector<std::string>& names) const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& n : names) {
    int64_t i;
    std::string local;
    if (!Match(n, &i, &local)) out.emplace_back(n, n);
  }
  return out;
}

}  // namespace layercache
