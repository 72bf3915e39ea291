// The disk tier's promises: self-describing entries, checksums, an index that
// can be lost, reconciliation, and corruption that is never served.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <random>

#include "disk/entry_codec.h"
#include "layercache/layer_cache.h"
#include "layercache/quantization.h"
#include "layercache/safetensors.h"
#include "test_support.h"

namespace layercache {
namespace {

namespace fs = std::filesystem;
using testing::MakeLayer;
using testing::TempDir;

LayerCacheOptions Opts(const TempDir& dir) {
  LayerCacheOptions o;
  o.cache_dir = dir.path();
  o.max_cache_size_gb = 1;
  o.max_memory_cache_size_gb = 0;  // every get goes to disk
  return o;
}

std::string OnlyEntryPath(LayerCache& cache) {
  auto entries = cache.list_entries();
  EXPECT_EQ(entries.size(), 1u);
  return entries.empty() ? "" : entries[0].path;
}

void FlipByte(const std::string& path, size_t offset_from_end) {
  auto bytes = testing::ReadBytes(path);
  bytes[bytes.size() - 1 - offset_from_end] ^= std::byte{0x01};
  testing::WriteBytes(path, bytes);
}

TEST(DiskTier, EntryIsAValidSafetensorsFileThatDescribesItself) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  auto layer = quant::QuantizeLayer(*MakeLayer(3), quant::QuantConfig::NF4()).value();
  ASSERT_TRUE(cache.cache_layer("Qwen/Qwen2.5-7B", 3, layer, "nf4"));
  const std::string path = OnlyEntryPath(cache);
  EXPECT_NE(path.find(".safetensors"), std::string::npos);
  EXPECT_EQ(path.find("Qwen"), std::string::npos);  // names never come from user strings
  auto header = ReadSafetensorsHeader(path);
  ASSERT_TRUE(header.ok()) << header.status().ToString();
  EXPECT_EQ(header->data_offset % kEntryDataAlignment, 0u);
  EXPECT_EQ(header->metadata.at("layercache.model_id"), "Qwen/Qwen2.5-7B");
  EXPECT_EQ(header->metadata.at("layercache.layer_index"), "3");
  EXPECT_EQ(header->metadata.at("layercache.quantization_mode"), "nf4");
  EXPECT_EQ(header->metadata.at("layercache.checksum_algorithm"), "xxh3-128");
  EXPECT_EQ(header->metadata.at("seed"), "3");  // the layer's own metadata is kept
  auto read = ReadSafetensorsFile(path);
  ASSERT_TRUE(read.ok());
  for (const auto& t : layer->tensors()) {
    ASSERT_NE((*read)->find(t.name), nullptr);
    EXPECT_TRUE(std::equal(layer->tensor_data(t).begin(), layer->tensor_data(t).end(),
                           (*read)->tensor_data(t.name).begin()));
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0022, 0u) << "entries must not be group/world writable";
}

TEST(DiskTier, FlippedDataByteIsReportedMissedAndRemoved) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(0)));
  ASSERT_TRUE(cache.cache_layer("m", 1, MakeLayer(1)));
  std::string victim;
  for (const auto& e : cache.list_entries()) {
    if (e.key.layer_index == 0) victim = e.path;
  }
  FlipByte(victim, 10);
  auto corrupt = cache.verify_cache_integrity();
  ASSERT_EQ(corrupt.size(), 1u);
  EXPECT_EQ(corrupt[0].key.layer_index, 0);
  EXPECT_EQ(corrupt[0].path, victim);
  EXPECT_NE(corrupt[0].reason.find("checksum mismatch"), std::string::npos) << corrupt[0].reason;
  EXPECT_EQ(cache.verify_cache_integrity().size(), 1u);  // verify changes nothing

  OptimizeReport report = cache.optimize_cache();
  EXPECT_EQ(report.corrupted_removed, 1u);
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
  EXPECT_EQ(cache.get_layer("m", 0), nullptr);
  EXPECT_NE(cache.get_layer("m", 1), nullptr);
}

TEST(DiskTier, GetLayerNeverServesACorruptEntry) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(0)));
  const std::string path = OnlyEntryPath(cache);
  FlipByte(path, 0);
  EXPECT_EQ(cache.get_layer("m", 0), nullptr);
  CacheStats s = cache.get_stats();
  EXPECT_EQ(s.checksum_failures, 1u);
  EXPECT_EQ(s.total_misses, 1u);
  EXPECT_EQ(s.disk_cache_entries, 0u);  // removed
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

TEST(DiskTier, CorruptHeaderAndTruncationAreDetected) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(0)));
  ASSERT_TRUE(cache.cache_layer("m", 1, MakeLayer(1)));
  auto entries = cache.list_entries();
  // Rename a tensor in the header (same length, still valid JSON).
  {
    auto bytes = testing::ReadBytes(entries[0].path);
    std::string s(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    size_t pos = s.find("mlp.weight");
    ASSERT_NE(pos, std::string::npos);
    bytes[pos] = std::byte{'x'};
    testing::WriteBytes(entries[0].path, bytes);
  }
  fs::resize_file(entries[1].path, fs::file_size(entries[1].path) - 100);
  EXPECT_EQ(cache.verify_cache_integrity().size(), 2u);
  EXPECT_EQ(cache.get_layer(entries[0].key), nullptr);
  EXPECT_EQ(cache.get_layer(entries[1].key), nullptr);
  EXPECT_EQ(cache.get_stats().checksum_failures, 2u);
}

TEST(DiskTier, IndexIsRebuiltWhenDeleted) {
  TempDir dir;
  {
    LayerCache cache(Opts(dir));
    for (int i = 0; i < 5; ++i)
      ASSERT_TRUE(cache.cache_layer("m", i, MakeLayer(i), i % 2 ? "awq-label" : ""));
  }
  for (const char* f : {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm"})
    fs::remove(dir / f);
  LayerCache reopened(Opts(dir));
  EXPECT_EQ(reopened.get_stats().disk_cache_entries, 5u);
  for (int i = 0; i < 5; ++i) {
    LayerPtr l =
        reopened.get_layer("m", i, i % 2 ? std::optional<std::string>("awq-label") : std::nullopt);
    ASSERT_NE(l, nullptr) << i;
    EXPECT_TRUE(l->ContentEquals(*MakeLayer(i)));
  }
}

TEST(DiskTier, GarbageIndexIsReplacedAndRebuilt) {
  TempDir dir;
  {
    LayerCache cache(Opts(dir));
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(cache.cache_layer("m", i, MakeLayer(i)));
  }
  fs::remove(dir / "index.sqlite-wal");
  fs::remove(dir / "index.sqlite-shm");
  testing::WriteText(dir / "index.sqlite", std::string(8192, 'g'));
  LayerCache reopened(Opts(dir));
  EXPECT_EQ(reopened.get_stats().disk_cache_entries, 3u);
  EXPECT_NE(reopened.get_layer("m", 2), nullptr);
}

// A cache that stays open while another process finds the index corrupt and
// rebuilds it must follow the new index, not keep writing to the old file.
TEST(DiskTier, ACacheThatKeptTheOldIndexFollowsARebuild) {
  TempDir dir;
  LayerCache first(Opts(dir));
  ASSERT_TRUE(first.cache_layer("m", 0, MakeLayer(0)));
  fs::remove(dir / "index.sqlite-wal");
  fs::remove(dir / "index.sqlite-shm");
  fs::remove(dir / "index.sqlite");
  testing::WriteText(dir / "index.sqlite", std::string(8192, 'g'));
  LayerCache second(Opts(dir));  // finds garbage: rebuilds from the entry files
  EXPECT_EQ(second.get_stats().disk_cache_entries, 1u);
  ASSERT_TRUE(first.cache_layer("m", 1, MakeLayer(1)));
  EXPECT_EQ(second.get_stats().disk_cache_entries, 2u) << "the first cache wrote to the new index";
  EXPECT_EQ(first.get_stats().disk_cache_entries, 2u);
  EXPECT_EQ(first.invalidate_cache("m", 0), 1u);
  EXPECT_EQ(second.get_stats().disk_cache_entries, 1u);
  EXPECT_TRUE(second.verify_cache_integrity().empty());
}

TEST(DiskTier, ReconciliationRemovesTempFilesAndStaleRowsAndAdoptsOrphans) {
  TempDir dir;
  std::string entry_path;
  {
    LayerCache cache(Opts(dir));
    ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(0)));
    ASSERT_TRUE(cache.cache_layer("m", 1, MakeLayer(1)));
    for (const auto& e : cache.list_entries()) {
      if (e.key.layer_index == 1) entry_path = e.path;
    }
  }
  // A temp file left by a writer that died, a row whose file vanished, and an
  // entry file the index does not know.
  testing::WriteText(dir / "tmp/0123456789abcdef0123456789abcdef.deadbeef.tmp", "half a layer");
  fs::remove(entry_path);
  {
    TempDir other;
    LayerCacheOptions o = Opts(other);
    LayerCache elsewhere(o);
    ASSERT_TRUE(elsewhere.cache_layer("m", 9, MakeLayer(9)));
    const std::string src = elsewhere.list_entries()[0].path;
    const std::string rel = src.substr(other.path().size());
    fs::create_directories(fs::path(dir.path() + rel).parent_path());
    fs::copy_file(src, dir.path() + rel);
  }
  LayerCache reopened(Opts(dir));
  EXPECT_TRUE(fs::is_empty(dir / "tmp"));
  EXPECT_EQ(reopened.get_layer("m", 1), nullptr);
  LayerPtr adopted = reopened.get_layer("m", 9);
  ASSERT_NE(adopted, nullptr);
  EXPECT_TRUE(adopted->ContentEquals(*MakeLayer(9)));
  EXPECT_EQ(reopened.get_stats().disk_cache_entries, 2u);
  EXPECT_TRUE(reopened.verify_cache_integrity().empty());
}

TEST(DiskTier, UnreadableStrayFilesAreReportedThenRemovedByOptimize) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(0)));
  const std::string entry = OnlyEntryPath(cache);
  const std::string stray =
      fs::path(entry).parent_path() / "ffffffffffffffffffffffffffffffff.safetensors";
  testing::WriteText(stray, "not an entry");
  EXPECT_EQ(cache.verify_cache_integrity().size(), 1u);
  OptimizeReport r = cache.optimize_cache();
  EXPECT_EQ(r.corrupted_removed, 1u);
  EXPECT_FALSE(fs::exists(stray));
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
  EXPECT_NE(cache.get_layer("m", 0), nullptr);
}

TEST(DiskTier, OptimizeEnforcesASmallerBudget) {
  TempDir dir;
  {
    LayerCache cache(Opts(dir));
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(cache.cache_layer("m", i, MakeLayer(i, 32 << 10)));
  }
  auto o = Opts(dir);
  const uint64_t entry = MakeLayer(0, 32 << 10)->nbytes() + 8192;
  o.max_cache_size_gb = 3.0 * static_cast<double>(entry) / (1024.0 * 1024.0 * 1024.0);
  LayerCache smaller(o);
  EXPECT_EQ(smaller.get_stats().disk_cache_entries, 6u);  // opening evicts nothing
  OptimizeReport r = smaller.optimize_cache();
  EXPECT_EQ(r.evicted, 3u);
  CacheStats s = smaller.get_stats();
  EXPECT_EQ(s.disk_cache_entries, 3u);
  EXPECT_LE(s.disk_cache_bytes, s.max_disk_cache_bytes);
  for (int i = 3; i < 6; ++i) EXPECT_NE(smaller.get_layer("m", i), nullptr) << "newest survive";
}

TEST(DiskTier, ReplacingAnEntryKeepsOneFileAndTheNewBytes) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(1)));
  ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(2)));
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 1u);
  EXPECT_TRUE(cache.get_layer("m", 0)->ContentEquals(*MakeLayer(2)));
  size_t files = 0;
  for (const auto& f : testing::ListFilesRecursively(dir / "entries")) files += f.size() > 0;
  EXPECT_EQ(files, 1u);
}

TEST(DiskTier, UnusableCacheDirIsAClearError) {
  TempDir dir;
  testing::WriteText(dir / "file", "x");
  LayerCacheOptions o;
  o.cache_dir = dir / "file";
  try {
    LayerCache cache(o);
    FAIL() << "opened a cache inside a regular file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir / "file"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace layercache

namespace layercache {
namespace {

TEST(DiskTier, RandomBitFlipsAndTruncationsAreNeverServed) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  std::mt19937_64 rng(2024);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(cache.cache_layer("m", i, MakeLayer(i, 4096)));
  int detected = 0;
  for (int trial = 0; trial < 200; ++trial) {
    auto entries = cache.list_entries();
    ASSERT_FALSE(entries.empty());
    const EntryInfo& e = entries[rng() % entries.size()];
    auto bytes = testing::ReadBytes(e.path);
    if (trial % 4 == 0) {
      bytes.resize(rng() % bytes.size());
    } else {
      bytes[rng() % bytes.size()] ^= std::byte{static_cast<uint8_t>(1u << (rng() % 8))};
    }
    testing::WriteBytes(e.path, bytes);
    LayerPtr got = cache.get_layer(e.key);
    if (got == nullptr) {
      ++detected;
    } else {
      // Only a flip in the header's padding can leave an entry readable: its bytes must be right.
      EXPECT_TRUE(got->ContentEquals(*MakeLayer(static_cast<uint64_t>(e.key.layer_index), 4096)))
          << "trial " << trial << " served wrong bytes";
    }
    ASSERT_TRUE(
        cache.cache_layer(e.key, MakeLayer(static_cast<uint64_t>(e.key.layer_index), 4096)));
  }
  EXPECT_GT(detected, 100);
  // The index too: random bytes anywhere in it cost no entry.
  for (int trial = 0; trial < 5; ++trial) {
    auto bytes = testing::ReadBytes(dir / "index.sqlite");
    for (int k = 0; k < 16; ++k) bytes[rng() % bytes.size()] = static_cast<std::byte>(rng());
    testing::WriteBytes(dir / "index.sqlite", bytes);
    LayerCache reopened(Opts(dir));
    (void)reopened.optimize_cache();
    for (int i = 0; i < 8; ++i) {
      LayerPtr l = reopened.get_layer("m", i);
      ASSERT_NE(l, nullptr) << "index damage lost layer " << i;
      EXPECT_TRUE(l->ContentEquals(*MakeLayer(static_cast<uint64_t>(i), 4096)));
    }
  }
}

}  // namespace
}  // namespace layercache
