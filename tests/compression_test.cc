// Compressed entries: bit-exact round trips, coexistence with plain entries,
// ratios on realistic weights, and corruption that is detected, never served.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "compress/container.h"
#include "layercache/layer_cache.h"
#include "layercache/safetensors.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::TempDir;

uint16_t Bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<uint16_t>((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}

// Weights shaped like real ones: bf16 from N(0, 0.02).
LayerPtr RealisticLayer(size_t n = 1 << 20, unsigned seed = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<uint16_t> w(n);
  for (auto& v : w) v = Bf16(normal(rng));
  std::vector<float> norm(256, 1.0f);
  return LayerBuilder()
      .add_tensor("mlp.weight", DType::BF16, {n / 256, 256}, w)
      .add_tensor("norm.weight", DType::F32, {256}, norm)
      .build();
}

LayerCacheOptions Opts(const TempDir& dir, bool compress) {
  LayerCacheOptions o;
  o.cache_dir = dir / "cache";
  o.max_memory_cache_size_gb = 0;  // every get reads (and decompresses) the entry
  o.enable_compression = compress;
  o.compression_level = 6;  // the default: zstd 1
  return o;
}

TEST(ByteGrouping, GroupsAndUngroupsEveryWidth) {
  std::vector<std::byte> in(1003);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::byte>(i * 7);
  for (uint32_t w : {1u, 2u, 4u, 8u}) {
    std::vector<std::byte> g(in.size()), back(in.size());
    GroupBytes(in.data(), g.data(), in.size(), w);
    UngroupBytes(g.data(), back.data(), in.size(), w);
    EXPECT_EQ(back, in) << w;
    if (w == 2) {
      EXPECT_EQ(g[1], in[2]);  // plane 0 holds every element's byte 0
    }
  }
}

TEST(Compression, EveryDtypeRoundTripsBitExactly) {
  TempDir dir;
  LayerBuilder b;
  std::mt19937_64 rng(5);
  for (int i = 0; i < kNumDTypes; ++i) {
    const auto dtype = static_cast<DType>(i);
    const std::vector<uint64_t> shape = {64, 40};
    std::vector<std::byte> bytes(*TensorByteSize(dtype, shape));
    for (auto& x : bytes) x = static_cast<std::byte>(rng() & (i % 2 ? 0x0f : 0xff));
    b.add_tensor(std::string("t_") + std::string(DTypeName(dtype)), dtype, shape, bytes);
  }
  b.set_metadata("note", "compressed");
  LayerPtr layer = b.build();
  LayerCache cache(Opts(dir, true));
  ASSERT_TRUE(cache.cache_layer("all", 0, layer));
  LayerPtr back = cache.get_layer("all", 0);
  ASSERT_NE(back, nullptr);
  EXPECT_TRUE(back->ContentEquals(*layer));
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

TEST(Compression, RealisticBf16WeightsShrinkByAThirdAndMore) {
  TempDir dir;
  LayerCache cache(Opts(dir, true));
  LayerPtr layer = RealisticLayer();
  ASSERT_TRUE(cache.cache_layer("m", 0, layer));
  CacheStats s = cache.get_stats();
  EXPECT_EQ(s.disk_cache_logical_bytes, layer->nbytes());
  EXPECT_GT(s.disk_compression_ratio(), 1.3) << "bytes on disk " << s.disk_cache_bytes;
  EXPECT_TRUE(cache.get_layer("m", 0)->ContentEquals(*layer));
  auto entries = cache.list_entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].data_bytes, layer->nbytes());
  EXPECT_LT(entries[0].size_bytes, layer->nbytes());
}

TEST(Compression, IncompressibleChunksAreStoredRaw) {
  std::mt19937_64 rng(9);
  std::vector<uint64_t> noise(1 << 18);
  for (auto& v : noise) v = rng();
  LayerPtr layer = LayerBuilder().add_tensor("noise", DType::U64, {noise.size()}, noise).build();
  AlignedBuffer c = CompressLayerData(*layer, 3);
  EXPECT_LT(c.size(), layer->nbytes() + 4096) << "raw chunks cost only their table entries";
  AlignedBuffer out(layer->nbytes());
  ASSERT_TRUE(DecompressLayerData({c.data(), c.size()}, out.data(), layer->nbytes()).ok());
  EXPECT_EQ(std::memcmp(out.data(), layer->data(), layer->nbytes()), 0);
}

TEST(Compression, CompressedAndPlainEntriesCoexistAndTheOptionCanBeToggled) {
  TempDir dir;
  {
    LayerCache plain(Opts(dir, false));
    ASSERT_TRUE(plain.cache_layer("m", 0, RealisticLayer(1 << 16, 1)));
  }
  {
    LayerCache compressed(Opts(dir, true));
    ASSERT_TRUE(compressed.cache_layer("m", 1, RealisticLayer(1 << 16, 2)));
    EXPECT_TRUE(compressed.get_layer("m", 0)->ContentEquals(*RealisticLayer(1 << 16, 1)));
  }
  LayerCache plain_again(Opts(dir, false));
  EXPECT_TRUE(plain_again.get_layer("m", 1)->ContentEquals(*RealisticLayer(1 << 16, 2)));
  EXPECT_TRUE(plain_again.verify_cache_integrity().empty());
  // `layercache get` exports a compressed entry as plain safetensors.
  auto r = testing::RunCommand({testing::CliPath(), "--cache-dir", dir / "cache", "get", "m", "1",
                                "-o", dir / "out.safetensors"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto exported = ReadSafetensorsFile(dir / "out.safetensors");
  ASSERT_TRUE(exported.ok());
  EXPECT_TRUE((*exported)->ContentEquals(*RealisticLayer(1 << 16, 2)));
}

TEST(Compression, CorruptedCompressedEntriesAreDetectedNeverServed) {
  TempDir dir;
  LayerCache cache(Opts(dir, true));
  ASSERT_TRUE(cache.cache_layer("m", 0, RealisticLayer(1 << 18)));
  const std::string path = cache.list_entries()[0].path;
  auto bytes = testing::ReadBytes(path);
  bytes[bytes.size() - 1000] ^= std::byte{0x10};
  testing::WriteBytes(path, bytes);
  auto corrupt = cache.verify_cache_integrity();
  ASSERT_EQ(corrupt.size(), 1u);
  EXPECT_EQ(cache.get_layer("m", 0), nullptr);
  EXPECT_EQ(cache.get_stats().checksum_failures, 1u);
}

TEST(Compression, ContainerRejectsTamperedChunks) {
  LayerPtr layer = RealisticLayer(1 << 16);
  AlignedBuffer c = CompressLayerData(*layer, 3);
  AlignedBuffer out(layer->nbytes());
  // Flip a byte in the payload (past the 24-byte header and the chunk table).
  c.data()[c.size() - 10] ^= std::byte{0x20};
  Status s = DecompressLayerData({c.data(), c.size()}, out.data(), layer->nbytes());
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_FALSE(DecompressLayerData({c.data(), 10}, out.data(), layer->nbytes()).ok());
  EXPECT_FALSE(DecompressLayerData({c.data(), c.size()}, out.data(), layer->nbytes() - 2).ok());
}

}  // namespace
}  // namespace layercache
