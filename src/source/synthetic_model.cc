#include "layercache/synthetic_model.h"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "io/env.h"
#include "layercache/layer.h"
#include "layercache/safetensors.h"
#include "util/path.h"

namespace layercache {
namespace {

// xoshiro-style generator; approximate normal from the sum of uniforms.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

std::vector<std::byte> RandomBf16(uint64_t count, Rng* rng) {
  std::vector<uint16_t> v(count);
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t r = rng->Next();
    // Sum of 4 uniforms in [0,1): mean 2, variance 1/3.
    float u =
        static_cast<float>((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48)) /
        65536.0f;
    v[i] = ToBf16((u - 2.0f) * 1.7320508f * 0.02f);
  }
  std::vector<std::byte> out(count * 2);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<std::byte> OnesBf16(uint64_t count) {
  std::vector<uint16_t> v(count, ToBf16(1.0f));
  std::vector<std::byte> out(count * 2);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

}  // namespace

Result<SyntheticModelInfo> WriteSyntheticModel(const std::string& dir,
                                               const SyntheticModelSpec& spec) {
  if (spec.num_layers <= 0 || spec.hidden_size == 0 || spec.layers_per_shard <= 0 ||
      spec.num_attention_heads == 0 || spec.hidden_size % spec.num_attention_heads != 0) {
    return Status::InvalidArgument(
        "synthetic model: layers, hidden size and heads must be positive, "
        "and hidden size divisible by the number of heads");
  }
  Env* env = Env::Default();
  if (Status s = env->CreateDirs(dir); !s.ok()) return s;
  Rng rng{spec.seed * 0x9E3779B97F4A7C15ULL + 1};
  const uint64_t h = spec.hidden_size;
  const uint64_t kv = h / spec.num_attention_heads * spec.num_key_value_heads;
  const uint64_t inter = spec.intermediate_size;
  SyntheticModelInfo info;
  info.num_shards = (spec.num_layers + spec.layers_per_shard - 1) / spec.layers_per_shard;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (int64_t shard = 0; shard < info.num_shards; ++shard) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05lld-of-%05lld.safetensors",
                  static_cast<long long>(shard + 1), static_cast<long long>(info.num_shards));
    LayerBuilder b;
    auto add = [&](const std::string& n, std::vector<uint64_t> shape,
                   std::vector<std::byte> bytes) {
      b.add_tensor(n, DType::BF16, std::move(shape), bytes);
      weight_map[n] = name;
      info.total_bytes += bytes.size();
    };
    if (shard == 0)
      add("model.embed_tokens.weight", {spec.vocab_size, h}, RandomBf16(spec.vocab_size * h, &rng));
    const int64_t first = shard * spec.layers_per_shard;
    const int64_t last = std::min(spec.num_layers, first + spec.layers_per_shard);
    for (int64_t i = first; i < last; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      add(p + "input_layernorm.weight", {h}, OnesBf16(h));
      add(p + "self_attn.q_proj.weight", {h, h}, RandomBf16(h * h, &rng));
      add(p + "self_attn.k_proj.weight", {kv, h}, RandomBf16(kv * h, &rng));
      add(p + "self_attn.v_proj.weight", {kv, h}, RandomBf16(kv * h, &rng));
      add(p + "self_attn.o_proj.weight", {h, h}, RandomBf16(h * h, &rng));
      add(p + "post_attention_layernorm.weight", {h}, OnesBf16(h));
      add(p + "mlp.gate_proj.weight", {inter, h}, RandomBf16(inter * h, &rng));
      add(p + "mlp.up_proj.weight", {inter, h}, RandomBf16(inter * h, &rng));
      add(p + "mlp.down_proj.weight", {h, inter}, RandomBf16(h * inter, &rng));
    }
    if (shard == info.num_shards - 1) {
      add("model.norm.weight", {h}, OnesBf16(h));
      add("lm_head.weight", {spec.vocab_size, h}, RandomBf16(spec.vocab_size * h, &rng));
    }
    b.set_metadata("format", "pt");
    LayerPtr shard_layer = b.build();
    if (Status s = WriteSafetensorsFile(*shard_layer, JoinPath(dir, name)); !s.ok()) return s;
  }
  info.bytes_per_layer = 2 * (2 * h + 2 * h * h + 2 * kv * h + 3 * inter * h);
  nlohmann::ordered_json index;
  index["metadata"]["total_size"] = info.total_bytes;
  index["weight_map"] = weight_map;
  nlohmann::ordered_json config;
  config["architectures"] = {"LlamaForCausalLM"};
  config["model_type"] = "llama";
  config["hidden_size"] = h;
  config["intermediate_size"] = inter;
  config["num_hidden_layers"] = spec.num_layers;
  config["num_attention_heads"] = spec.num_attention_heads;
  config["num_key_value_heads"] = spec.num_key_value_heads;
  config["vocab_size"] = spec.vocab_size;
  config["torch_dtype"] = "bfloat16";
  for (const auto& [file, doc] :
       {std::pair{"model.safetensors.index.json", &index}, std::pair{"config.json", &config}}) {
    const std::string text = doc->dump(2) + "\n";
    if (Status s = WriteFileAtomically(env, JoinPath(dir, file),
                                       {std::as_bytes(std::span<const char>(text))});
        !s.ok()) {
      return s;
    }
  }
  return info;
}

}  // namespace layercache
