// The seed's API on LayerCache: every method, its arguments and its returns.
#include "layercache/layer_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::TempDir;

LayerCacheOptions Opts(const TempDir& dir, double disk_gb = 1.0, double mem_gb = 0.1) {
  LayerCacheOptions o;
  o.cache_dir = dir.path();
  o.max_cache_size_gb = disk_gb;
  o.max_memory_cache_size_gb = mem_gb;
  return o;
}

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

TEST(LayerCache, StatusVariantsNeverThrowAndOneFaultIsOneError) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  // A null layer: kInvalidArgument from cache_layer_status and from a loader
  // of get_or_load alike; the throwing call throws Error with that code.
  Status given;
  EXPECT_NO_THROW(given = cache.cache_layer_status(LayerKey{"m", 0, "", ""}, nullptr));
  EXPECT_EQ(given.code(), StatusCode::kInvalidArgument) << given.ToString();
  auto loaded = cache.get_or_load(LayerKey{"m", 0, "", ""}, [] { return LayerPtr(); });
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kInvalidArgument) << loaded.status().ToString();
  EXPECT_INVALID_ARGUMENT(cache.cache_layer(LayerKey{"m", 0, "", ""}, nullptr));
  // A bad key: a Status, not an exception.
  Status bad_key;
  EXPECT_NO_THROW(bad_key = cache.cache_layer_status(LayerKey{"", 0, "", ""}, MakeLayer(0)));
  EXPECT_EQ(bad_key.code(), StatusCode::kInvalidArgument) << bad_key.ToString();
  EXPECT_INVALID_ARGUMENT(cache.cache_layer(LayerKey{"", 0, "", ""}, MakeLayer(0)));
  Result<DeviceLayerPtr> device = Status::NotFound("not run");
  EXPECT_NO_THROW(device = cache.get_layer_status(LayerKey{"", -1, "", ""}, "cuda:0"));
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), StatusCode::kInvalidArgument);
  // A hostile repository id: download_and_cache_status returns it (no Hub is asked).
  Result<LayerPtr> dl = Status::NotFound("not run");
  EXPECT_NO_THROW(dl = cache.download_and_cache_status("m", 0, "../../etc/passwd"));
  ASSERT_FALSE(dl.ok());
  EXPECT_EQ(dl.status().code(), StatusCode::kInvalidArgument) << dl.status().ToString();
  EXPECT_INVALID_ARGUMENT(cache.download_and_cache("m", 0, "../../etc/passwd"));
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);  // nothing was cached
}

TEST(LayerCache, MissThenCacheThenHitFromMemory) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  EXPECT_EQ(cache.get_layer("qwen-7b", 5), nullptr);
  auto layer = MakeLayer(5);
  EXPECT_TRUE(cache.cache_layer("qwen-7b", 5, layer));
  LayerPtr got = cache.get_layer("qwen-7b", 5);
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(got->ContentEquals(*layer));
  CacheStats s = cache.get_stats();
  EXPECT_EQ(s.total_hits, 1u);
  EXPECT_EQ(s.memory_hits, 1u);
  EXPECT_EQ(s.total_misses, 1u);
  EXPECT_EQ(s.disk_cache_entries, 1u);
  EXPECT_EQ(s.memory_cache_entries, 1u);
  EXPECT_EQ(s.bytes_served, layer->nbytes());
  EXPECT_DOUBLE_EQ(s.cache_hit_ratio(), 0.5);
}

TEST(LayerCache, QuantizationModeAndRevisionArePartOfTheKey) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  ASSERT_TRUE(cache.cache_layer("m", 1, MakeLayer(1), "awq-label"));
  EXPECT_EQ(cache.get_layer("m", 1), nullptr);
  ASSERT_NE(cache.get_layer("m", 1, "awq-label"), nullptr);
  ASSERT_TRUE(cache.cache_layer(LayerKey{"m", 1, "", "abc"}, MakeLayer(2)));
  EXPECT_TRUE(cache.get_layer(LayerKey{"m", 1, "", "abc"})->ContentEquals(*MakeLayer(2)));
  EXPECT_EQ(cache.get_layer(LayerKey{"m", 1, "", "def"}), nullptr);
}

TEST(LayerCache, SurvivesARestartThroughTheDiskTier) {
  TempDir dir;
  {
    LayerCache cache(Opts(dir));
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(cache.cache_layer("m", i, MakeLayer(i)));
  }
  LayerCache reopened(Opts(dir));
  EXPECT_EQ(reopened.get_stats().disk_cache_entries, 4u);
  for (int i = 0; i < 4; ++i) {
    LayerPtr l = reopened.get_layer("m", i);
    ASSERT_NE(l, nullptr);
    EXPECT_TRUE(l->ContentEquals(*MakeLayer(i)));
  }
  CacheStats s = reopened.get_stats();
  EXPECT_EQ(s.disk_hits, 4u);
  EXPECT_EQ(s.memory_cache_entries, 4u);  // promoted
  ASSERT_NE(reopened.get_layer("m", 0), nullptr);
  EXPECT_EQ(reopened.get_stats().memory_hits, 1u);
}

TEST(LayerCache, DiskBudgetEvictsLeastRecentlyUsedEntries) {
  TempDir dir;
  auto probe = MakeLayer(0, 64 << 10);
  const double entry_gb = (static_cast<double>(probe->nbytes()) + 8192) / kGiB;
  LayerCache cache(Opts(dir, 3.5 * entry_gb, 0));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cache.cache_layer("m", i, MakeLayer(i, 64 << 10)));
  ASSERT_NE(cache.get_layer("m", 0), nullptr);  // 1 becomes the LRU entry
  ASSERT_TRUE(cache.cache_layer("m", 3, MakeLayer(3, 64 << 10)));
  EXPECT_EQ(cache.get_layer("m", 1), nullptr);
  for (int i : {0, 2, 3}) EXPECT_NE(cache.get_layer("m", i), nullptr) << i;
  CacheStats s = cache.get_stats();
  EXPECT_EQ(s.disk_cache_entries, 3u);
  EXPECT_LE(s.disk_cache_bytes, s.max_disk_cache_bytes);
  EXPECT_EQ(s.disk_evictions, 1u);
  EXPECT_EQ(s.total_evictions(), 1u);
}

TEST(LayerCache, RefusesALayerLargerThanTheDiskBudgetButKeepsItInMemory) {
  TempDir dir;
  LayerCache cache(Opts(dir, 1000.0 / kGiB, 0.1));
  auto layer = MakeLayer(1, 8192);
  Status s = cache.cache_layer_status(LayerKey{"m", 0, "", ""}, layer);
  EXPECT_EQ(s.code(), StatusCode::kNoSpace);
  EXPECT_NE(s.message().find("max_cache_size_gb"), std::string::npos);
  EXPECT_FALSE(cache.cache_layer("m", 0, layer));
  EXPECT_NE(cache.get_layer("m", 0), nullptr);
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);
}

TEST(LayerCache, MemoryEvictionWritesBackLayersNoLongerOnDisk) {
  TempDir dir;
  auto probe = MakeLayer(0, 64 << 10);
  const double entry_gb = (static_cast<double>(probe->nbytes()) + 8192) / kGiB;
  // Memory holds 2 layers, disk holds 1: layer 0 is evicted from disk while
  // still in memory; when memory evicts it, it goes back to disk.
  LayerCache cache(Opts(dir, 1.5 * entry_gb, 2.5 * static_cast<double>(probe->nbytes()) / kGiB));
  ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(0, 64 << 10)));
  ASSERT_TRUE(cache.cache_layer("m", 1, MakeLayer(1, 64 << 10)));  // disk evicts 0
  EXPECT_EQ(cache.list_entries().size(), 1u);
  EXPECT_EQ(cache.list_entries()[0].key.layer_index, 1);
  ASSERT_TRUE(cache.cache_layer("m", 2, MakeLayer(2, 64 << 10)));  // memory evicts 0 -> disk
  auto entries = cache.list_entries();
  bool zero_on_disk = false;
  for (const auto& e : entries) zero_on_disk |= e.key.layer_index == 0;
  EXPECT_TRUE(zero_on_disk);
}

TEST(LayerCache, InvalidateOneLayerOneModelOrEverything) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(cache.cache_layer("a", i, MakeLayer(i)));
    ASSERT_TRUE(cache.cache_layer("b", i, MakeLayer(10 + i)));
  }
  ASSERT_TRUE(cache.cache_layer("a", 1, MakeLayer(1), "awq-label"));
  EXPECT_EQ(cache.invalidate_cache("a", 1), 2u);  // both quantization modes
  EXPECT_EQ(cache.get_layer("a", 1), nullptr);
  EXPECT_EQ(cache.get_layer("a", 1, "awq-label"), nullptr);
  EXPECT_NE(cache.get_layer("a", 0), nullptr);
  EXPECT_EQ(cache.invalidate_cache("a"), 2u);
  EXPECT_EQ(cache.get_layer("a", 0), nullptr);
  EXPECT_NE(cache.get_layer("b", 2), nullptr);
  cache.invalidate_cache();
  EXPECT_EQ(cache.get_layer("b", 2), nullptr);
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);
  EXPECT_EQ(cache.get_stats().memory_cache_entries, 0u);
}

TEST(LayerCache, ClearCacheEmptiesBothTiersAndTheDirectory) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(cache.cache_layer("m", i, MakeLayer(i)));
  cache.clear_cache();
  CacheStats s = cache.get_stats();
  EXPECT_EQ(s.disk_cache_entries, 0u);
  EXPECT_EQ(s.memory_cache_entries, 0u);
  for (const auto& f : testing::ListFilesRecursively(dir.path())) {
    EXPECT_EQ(f.find("entries/"), std::string::npos) << f;
  }
}

TEST(LayerCache, GetStatsHasTheSeedsJsonShape) {
  TempDir dir;
  LayerCache cache(Opts(dir, 50.0, 2.0));
  cache.cache_layer("m", 0, MakeLayer(0));
  cache.get_layer("m", 0);
  cache.get_layer("m", 1);
  auto j = nlohmann::json::parse(cache.get_stats().ToJson());
  for (const char* k :
       {"disk_cache_entries", "memory_cache_entries", "disk_cache_size_gb", "memory_cache_size_gb",
        "max_disk_cache_size_gb", "max_memory_cache_size_gb"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  for (const char* k : {"total_hits", "total_misses", "total_evictions", "cache_hit_ratio"}) {
    EXPECT_TRUE(j["performance"].contains(k)) << k;
  }
  EXPECT_EQ(j["disk_cache_entries"], 1);
  EXPECT_EQ(j["max_disk_cache_size_gb"], 50.0);
  EXPECT_EQ(j["max_memory_cache_size_gb"], 2.0);
  EXPECT_EQ(j["performance"]["total_hits"], 1);
  EXPECT_EQ(j["performance"]["total_misses"], 1);
  EXPECT_EQ(j["performance"]["cache_hit_ratio"], 0.5);
}

TEST(LayerCache, PrintStatsFollowsTheSeedLayout) {
  TempDir dir;
  LayerCache cache(Opts(dir, 50.0, 2.0));
  cache.cache_layer("m", 0, MakeLayer(0));
  cache.get_layer("m", 0);
  std::ostringstream out;
  cache.print_stats(out);
  const std::string rule(60, '=');
  const std::string expected =
      rule + "\nLayer Cache Statistics\n" + rule +
      "\nDisk Cache Entries: 1\nMemory Cache Entries: 1\n"
      "Disk Cache Size: 0.0 GB / 50.0 GB\nMemory Cache Size: 0.0 GB / 2.0 GB\n\n"
      "Performance:\n  Cache Hits: 1\n  Cache Misses: 0\n  Hit Ratio: 100.0%\n"
      "  Evictions: 0\n  Data Downloaded: 0.0 GB\n  Data Served from Cache: 0.0 GB\n" +
      rule + "\n";
  EXPECT_EQ(out.str(), expected);
}

TEST(LayerCache, InvalidArgumentsThrowWithAHint) {
  TempDir dir;
  auto expect_invalid = [&](LayerCacheOptions o, const char* hint) {
    try {
      LayerCache c(o);
      ADD_FAILURE() << "no exception for " << hint;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find(hint), std::string::npos) << e.what();
    }
  };
  auto o = Opts(dir);
  o.max_cache_size_gb = -1;
  expect_invalid(o, "max_cache_size_gb");
  o = Opts(dir);
  o.max_memory_cache_size_gb = -0.5;
  expect_invalid(o, "max_memory_cache_size_gb");
  o = Opts(dir);
  o.compression_level = 10;
  expect_invalid(o, "between 1 and 9");
  o = Opts(dir);
  o.worker_threads = -1;
  expect_invalid(o, "worker_threads");
  o.worker_threads = 1025;
  expect_invalid(o, "worker_threads");

  LayerCache cache(Opts(dir));
  EXPECT_INVALID_ARGUMENT(cache.get_layer("", 0));
  EXPECT_INVALID_ARGUMENT(cache.get_layer("m", -1));
  EXPECT_INVALID_ARGUMENT(cache.cache_layer("m", -3, MakeLayer(1)));
  EXPECT_INVALID_ARGUMENT(cache.cache_layer("m", 0, nullptr));
  EXPECT_INVALID_ARGUMENT(cache.get_layer("m", 0, std::nullopt, "cuda:0"));
  EXPECT_INVALID_ARGUMENT(cache.invalidate_cache(std::nullopt, 3));
  EXPECT_INVALID_ARGUMENT(cache.get_layer(std::string("a\0b", 3), 0));
  auto reserved = LayerBuilder().set_metadata("layercache.model_id", "x").build();
  EXPECT_INVALID_ARGUMENT(cache.cache_layer("m", 0, reserved));
}

TEST(LayerCache, DefaultDirectoryComesFromLayercacheDirOrHome) {
  TempDir dir;
  ::setenv("LAYERCACHE_DIR", (dir / "from-env").c_str(), 1);
  EXPECT_EQ(LayerCacheOptions{}.ResolvedCacheDir(), dir / "from-env");
  ::unsetenv("LAYERCACHE_DIR");
  const char* old_home = std::getenv("HOME");
  std::string saved = old_home ? old_home : "";
  ::setenv("HOME", dir.path().c_str(), 1);
  EXPECT_EQ(LayerCacheOptions{}.ResolvedCacheDir(), dir / ".cache/nexus/layers");
  LayerCacheOptions tilde;
  tilde.cache_dir = "~/x";
  EXPECT_EQ(tilde.ResolvedCacheDir(), dir / "x");
  ::setenv("HOME", saved.c_str(), 1);
}

TEST(LayerCache, PersistMetadataFalseStartsEmptyAndLeavesNothingBehind) {
  TempDir dir;
  auto o = Opts(dir);
  o.persist_metadata = false;
  {
    LayerCache cache(o);
    ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(0)));
    ASSERT_NE(cache.get_layer("m", 0), nullptr);
    EXPECT_EQ(cache.get_stats().disk_cache_entries, 1u);
  }
  {
    LayerCache cache(o);
    EXPECT_EQ(cache.get_layer("m", 0), nullptr);
    EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);
  }
  for (const auto& f : testing::ListFilesRecursively(dir.path())) {
    EXPECT_EQ(f.find(".safetensors"), std::string::npos) << f;
  }
  // A persistent cache in the same directory is unaffected.
  LayerCache persistent(Opts(dir));
  EXPECT_EQ(persistent.get_stats().disk_cache_entries, 0u);
}

TEST(LayerCache, ChecksumAlgorithmsAreSelectable) {
  for (auto algorithm :
       {ChecksumAlgorithm::kMD5, ChecksumAlgorithm::kSHA256, ChecksumAlgorithm::kXXH3_128}) {
    TempDir dir;
    auto o = Opts(dir);
    o.checksum_algorithm = algorithm;
    {
      LayerCache cache(o);
      ASSERT_TRUE(cache.cache_layer("m", 0, MakeLayer(0)));
      auto entries = cache.list_entries();
      ASSERT_EQ(entries.size(), 1u);
      EXPECT_EQ(entries[0].checksum_algorithm, ChecksumAlgorithmName(algorithm));
      const size_t hex = algorithm == ChecksumAlgorithm::kSHA256 ? 64 : 32;
      EXPECT_EQ(entries[0].checksum.size(), hex);
    }
    LayerCache reopened(Opts(dir));  // reads entries whatever algorithm wrote them
    ASSERT_NE(reopened.get_layer("m", 0), nullptr);
    EXPECT_TRUE(reopened.verify_cache_integrity().empty());
  }
}

TEST(LayerCache, GetOrLoadRunsTheLoaderOncePerKeyAcrossThreads) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  std::atomic<int> loads{0};
  std::vector<std::thread> threads;
  std::vector<LayerPtr> results(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto r = cache.get_or_load(LayerKey{"m", 7, "", ""}, [&]() -> Result<LayerPtr> {
        loads.fetch_add(1);
        return MakeLayer(7);
      });
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      results[static_cast<size_t>(t)] = *r;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(loads.load(), 1);
  for (const auto& r : results) EXPECT_TRUE(r->ContentEquals(*MakeLayer(7)));
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 1u);
}

// One worker for everything (chunk reads and hashing, prefetch of two at
// once, loads from several threads): slower, never stuck, every byte right.
TEST(LayerCache, OneWorkerThreadServesPrefetchesLoadsAndChunkedReads) {
  TempDir dir;
  constexpr uint64_t kBytes = 20ull << 20;  // three 8 MiB chunks: a parallel read
  {
    LayerCache writer(Opts(dir));
    for (int i = 0; i < 3; ++i) writer.cache_layer("w", i, MakeLayer(100 + i, kBytes));
  }
  auto o = Opts(dir, 1.0, 0.001);  // layers too large for memory: every get reads the disk
  o.worker_threads = 1;
  o.prefetch_threads = 2;
  LayerCache cache(o);
  auto futures = cache.prefetch("w", {0, 1, 2});
  std::vector<std::thread> readers;
  std::atomic<int> right{0};
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        LayerPtr l = cache.get_layer("w", (i + t) % 3);
        if (l && l->ContentEquals(*MakeLayer(100 + (i + t) % 3, kBytes))) right.fetch_add(1);
      }
      auto r = cache.get_or_load(LayerKey{"w", 10 + t, "", ""},
                                 [&]() -> Result<LayerPtr> { return MakeLayer(200 + t, kBytes); });
      if (r.ok() && (*r)->ContentEquals(*MakeLayer(200 + t, kBytes))) right.fetch_add(1);
    });
  }
  for (auto& r : readers) r.join();
  EXPECT_EQ(right.load(), 3 * 3 + 3);
  for (size_t i = 0; i < futures.size(); ++i) {
    LayerPtr l = futures[i].get();
    ASSERT_NE(l, nullptr) << i;
    EXPECT_TRUE(l->ContentEquals(*MakeLayer(100 + i, kBytes))) << i;
  }
}

TEST(LayerCache, GetOrLoadReturnsTheLoadersErrorAndCachesNothing) {
  TempDir dir;
  LayerCache cache(Opts(dir));
  auto r = cache.get_or_load(LayerKey{"m", 0, "", ""},
                             []() -> Result<LayerPtr> { return Status::IOError("network down"); });
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("network down"), std::string::npos);
  auto thrown = cache.get_or_load(LayerKey{"m", 0, "", ""},
                                  []() -> Result<LayerPtr> { throw std::runtime_error("boom"); });
  ASSERT_FALSE(thrown.ok());
  EXPECT_NE(thrown.status().message().find("boom"), std::string::npos);
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);
}

TEST(LayerCache, GlobalSingletonIsSharedAndKeepsItsFirstOptions) {
  TempDir dir;
  reset_layer_cache();
  auto a = get_layer_cache(Opts(dir, 100.0));
  auto b = get_layer_cache();
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(b->options().max_cache_size_gb, 100.0);
  auto c = get_layer_cache(Opts(dir, 5.0));
  EXPECT_EQ(c.get(), a.get());
  a->cache_layer("m", 1, MakeLayer(1));
  EXPECT_NE(b->get_layer("m", 1), nullptr);
  reset_layer_cache();
  EXPECT_NE(get_layer_cache(Opts(dir)).get(), nullptr);
  reset_layer_cache();
}

TEST(LayerCache, HostileModelIdsNeverCreateAnythingOutsideTheCacheDir) {
  TempDir outer;
  const std::string cache_dir = outer / "cache";
  LayerCacheOptions o;
  o.cache_dir = cache_dir;
  o.max_cache_size_gb = 1;
  LayerCache cache(o);
  const std::vector<std::string> ids = {
      "../../x", "/etc/passwd", "../escape/..", "a/../../b", std::string(10000, 'A'),
      "..",      ".",           "~/home",       "con",       "a\\b"};
  for (const std::string& id : ids) {
    ASSERT_TRUE(cache.cache_layer(id, 0, MakeLayer(1), "../../q")) << id.substr(0, 20);
    ASSERT_NE(cache.get_layer(id, 0, "../../q"), nullptr);
  }
  EXPECT_EQ(cache.get_stats().disk_cache_entries, ids.size());
  for (const auto& f : testing::ListFilesRecursively(outer.path())) {
    EXPECT_EQ(f.rfind("cache/", 0), 0u) << f;
  }
  // The ids round-trip through the index untouched.
  std::set<std::string> listed;
  for (const auto& e : cache.list_entries()) listed.insert(e.key.model_id);
  EXPECT_EQ(listed, std::set<std::string>(ids.begin(), ids.end()));
}

}  // namespace
}  // namespace layercache

namespace layercache {
namespace {

TEST(LayerCache, EmptyLayersAndZeroSizedTensorsRoundTrip) {
  testing::TempDir dir;
  LayerCacheOptions o;
  o.cache_dir = dir.path();
  o.max_memory_cache_size_gb = 0;
  LayerCache cache(o);
  ASSERT_TRUE(cache.cache_layer("m", 0, LayerBuilder().set_metadata("only", "metadata").build()));
  std::vector<float> none;
  ASSERT_TRUE(cache.cache_layer(
      "m", 1, LayerBuilder().add_tensor("empty", DType::F32, {0, 4}, none).build()));
  LayerPtr a = cache.get_layer("m", 0);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->num_tensors(), 0u);
  EXPECT_EQ(a->metadata().at("only"), "metadata");
  LayerPtr b = cache.get_layer("m", 1);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->find("empty")->shape, (std::vector<uint64_t>{0, 4}));
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

}  // namespace
}  // namespace layercache
