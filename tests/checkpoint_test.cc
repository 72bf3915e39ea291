// Local checkpoints: synthetic Llama-shaped models and the real Granite index.
#include "source/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "layercache/synthetic_model.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::TempDir;

TEST(Checkpoint, ReadsEachLayerOfAShardedSyntheticModel) {
  TempDir dir;
  SyntheticModelSpec spec;
  spec.num_layers = 5;
  spec.layers_per_shard = 2;
  auto info = WriteSyntheticModel(dir.path(), spec);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->num_shards, 3);
  auto cp = Checkpoint::Open(dir.path());
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  EXPECT_EQ((*cp)->num_layers(), 5);
  EXPECT_EQ((*cp)->layer_pattern(), "model.layers.{i}.");
  auto all = ReadSafetensorsFile(dir / "model-00002-of-00003.safetensors");
  ASSERT_TRUE(all.ok());
  auto layer = (*cp)->ReadLayer(3);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ((*layer)->num_tensors(), 9u);
  EXPECT_EQ((*layer)->nbytes(), info->bytes_per_layer);
  const TensorInfo* q = (*layer)->find("self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  auto expected = (*all)->tensor_data("model.layers.3.self_attn.q_proj.weight");
  auto got = (*layer)->tensor_data(*q);
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), got.begin(), got.end()));
  auto rest = (*cp)->ReadNonLayerTensors();
  ASSERT_TRUE(rest.ok());
  EXPECT_NE((*rest)->find("model.embed_tokens.weight"), nullptr);
  EXPECT_NE((*rest)->find("lm_head.weight"), nullptr);
  EXPECT_NE((*rest)->find("model.norm.weight"), nullptr);
  EXPECT_FALSE((*cp)->ReadLayer(5).ok());
}

// Builds tiny shards holding every tensor of the real Granite index in the
// shard the index names, then reads layer 22, which is split across both.
TEST(Checkpoint, AssemblesALayerSplitAcrossShardsFromTheGraniteIndex) {
  LAYERCACHE_REQUIRE_FIXTURES();
  TempDir dir;
  const std::string index_path =
      testing::FixturePath("hub/granite_moe_model.safetensors.index.json");
  std::filesystem::copy_file(index_path, dir / "model.safetensors.index.json");
  auto doc = nlohmann::json::parse(testing::ReadBytes(index_path));
  std::map<std::string, LayerBuilder> shards;
  int n = 0;
  for (auto it = doc["weight_map"].begin(); it != doc["weight_map"].end(); ++it) {
    std::vector<float> v = {static_cast<float>(n++), 1.0f};
    shards[it.value().get<std::string>()].add_tensor(it.key(), DType::F32, {2}, v);
  }
  std::set<std::string> shard_of_22;
  for (auto it = doc["weight_map"].begin(); it != doc["weight_map"].end(); ++it) {
    if (it.key().rfind("model.layers.22.", 0) == 0)
      shard_of_22.insert(it.value().get<std::string>());
  }
  ASSERT_EQ(shard_of_22.size(), 2u) << "the fixture's layer 22 spans two shards";
  for (auto& [name, b] : shards) ASSERT_TRUE(WriteSafetensorsFile(*b.build(), dir / name).ok());
  auto cp = Checkpoint::Open(dir.path());
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  EXPECT_EQ((*cp)->num_layers(), 24);
  auto layer = (*cp)->ReadLayer(22);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  size_t expected = 0;
  for (auto it = doc["weight_map"].begin(); it != doc["weight_map"].end(); ++it) {
    expected += it.key().rfind("model.layers.22.", 0) == 0;
  }
  EXPECT_EQ((*layer)->num_tensors(), expected);
  EXPECT_NE((*layer)->find("self_attn.q_proj.weight"), nullptr);
  EXPECT_NE((*layer)->find("block_sparse_moe.router.layer.weight"), nullptr);
}

TEST(Checkpoint, RejectsShardNamesThatEscapeTheDirectory) {
  for (const char* bad :
       {"../evil.safetensors", "/etc/passwd", "http://x/y.safetensors", "a/../../b"}) {
    TempDir dir;
    nlohmann::json idx;
    idx["weight_map"]["model.layers.0.w"] = bad;
    testing::WriteText(dir / "model.safetensors.index.json", idx.dump());
    auto cp = Checkpoint::Open(dir.path());
    ASSERT_FALSE(cp.ok()) << bad;
    EXPECT_NE(cp.status().message().find("shard name"), std::string::npos) << cp.status().message();
  }
}

TEST(Checkpoint, MissingModelAndLfsPointerAreClearErrors) {
  LAYERCACHE_REQUIRE_FIXTURES();
  TempDir dir;
  auto none = Checkpoint::Open(dir.path());
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("model.safetensors"), std::string::npos);
  std::filesystem::copy_file(testing::FixturePath("hub/lfs_pointer_model.safetensors"),
                             dir / "model.safetensors");
  auto lfs = Checkpoint::Open(dir.path());
  ASSERT_FALSE(lfs.ok());
  EXPECT_NE(lfs.status().message().find("Git LFS pointer"), std::string::npos)
      << lfs.status().message();
}

}  // namespace
}  // namespace layercache
