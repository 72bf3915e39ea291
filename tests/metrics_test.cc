// Lifetime counters, latency histograms, the Prometheus text and the logging API.
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "layercache/layer_cache.h"
#include "layercache/logging.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::TempDir;

LayerPtr Small() {
  TensorInfo t;
  t.name = "w";
  t.dtype = DType::F32;
  t.shape = {256};
  t.nbytes = 1024;
  AlignedBuffer b(1024);
  std::memset(b.data(), 7, 1024);
  return Layer::Create({t}, std::move(b), {}).value();
}

LayerCacheOptions Opts(const TempDir& dir) {
  LayerCacheOptions o;
  o.cache_dir = dir / "c";
  o.max_memory_cache_size_gb = 0;  // every hit is a disk hit
  return o;
}

TEST(Lifetime, CountersSurviveTheProcessAndAddUp) {
  TempDir dir;
  {
    LayerCache a(Opts(dir));
    ASSERT_TRUE(a.cache_layer("m", 0, Small()));
    ASSERT_NE(a.get_layer("m", 0), nullptr);
  }  // closing flushes
  LayerCache b(Opts(dir));
  ASSERT_NE(b.get_layer("m", 0), nullptr);
  EXPECT_EQ(b.get_layer("m", 1), nullptr);
  CacheStats s = b.get_stats();
  EXPECT_EQ(s.disk_hits, 1u);  // this process
  EXPECT_EQ(s.lifetime.at("disk_hits"), 2u);
  EXPECT_EQ(s.lifetime.at("misses"), 1u);
  EXPECT_EQ(s.lifetime.at("layers_cached"), 1u);
  // A second get_stats adds nothing twice.
  EXPECT_EQ(b.get_stats().lifetime.at("disk_hits"), 2u);
  EXPECT_NE(s.ToJson().find("\"lifetime\""), std::string::npos);
  EXPECT_EQ(s.ToText().find("Lifetime"), std::string::npos);  // print_stats keeps the seed layout
}

TEST(Metrics, TextHasCountersGaugesAndHistograms) {
  TempDir dir;
  LayerCache c(Opts(dir));
  ASSERT_TRUE(c.cache_layer("m", 0, Small()));
  ASSERT_NE(c.get_layer("m", 0), nullptr);
  const std::string t = c.metrics_text();
  EXPECT_NE(t.find("# TYPE layercache_hits_total counter\n"), std::string::npos) << t;
  EXPECT_NE(t.find("layercache_hits_total{tier=\"disk\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("# TYPE layercache_get_duration_seconds histogram\n"), std::string::npos);
  EXPECT_NE(t.find("layercache_get_duration_seconds_count{tier=\"disk\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("layercache_get_duration_seconds_bucket{tier=\"disk\",le=\"+Inf\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("layercache_put_duration_seconds_count{tier=\"disk\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("layercache_lifetime_hits_total{tier=\"disk\"} 1\n"), std::string::npos);
  EXPECT_EQ(t.back(), '\n');
}

// Memory hits are timed one in 64, each timing standing for 64 hits: the
// histogram's count follows the hit counter in steps of 64.
uint64_t SampleCount(const std::string& text, const std::string& series) {
  const size_t at = text.find(series + " ");
  if (at == std::string::npos) return UINT64_MAX;
  return std::stoull(text.substr(at + series.size() + 1));
}

TEST(Metrics, MemoryHitsAreSampledIntoTheGetHistogram) {
  TempDir dir;
  LayerCacheOptions o = Opts(dir);
  o.max_memory_cache_size_gb = 1;
  LayerCache c(o);
  ASSERT_TRUE(c.cache_layer("m", 0, Small()));
  constexpr uint64_t kHits = 64 * 20;
  for (uint64_t i = 0; i < kHits; ++i) ASSERT_NE(c.get_layer("m", 0), nullptr);
  ASSERT_EQ(c.get_stats().memory_hits, kHits);
  const std::string t = c.metrics_text();
  const uint64_t n = SampleCount(t, "layercache_get_duration_seconds_count{tier=\"memory\"}");
  EXPECT_EQ(n % 64, 0u) << t;
  EXPECT_GE(n, kHits - 64) << t;
  EXPECT_LE(n, kHits) << t;
  // Every sampled hit took well under a second (the +Inf bucket holds them all,
  // the 1 s one too).
  EXPECT_EQ(SampleCount(t, "layercache_get_duration_seconds_bucket{tier=\"memory\",le=\"1\"}"), n)
      << t;
}

TEST(Logging, LevelAndSinkAreTheCallersToSet) {
  const LogLevel before = GetLogLevel();
  std::mutex mu;
  std::vector<std::pair<LogLevel, std::string>> got;
  SetLogSink([&](LogLevel l, const std::string& m) {
    std::lock_guard lock(mu);
    got.emplace_back(l, m);
  });
  SetLogLevel(LogLevel::kDebug);
  {
    TempDir dir;
    LayerCache c(Opts(dir));
    // A layer that does not fit the budget: its failure is logged.
    LayerCacheOptions tiny = Opts(dir);
    tiny.cache_dir = dir / "tiny";
    tiny.max_cache_size_gb = 1e-7;
    LayerCache t(tiny);
    EXPECT_FALSE(t.cache_layer("m", 0, Small()));
  }
  SetLogSink(nullptr);
  SetLogLevel(before);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().first, LogLevel::kWarn);
  EXPECT_EQ(ParseLogLevel("warning"), LogLevel::kWarn);
  EXPECT_INVALID_ARGUMENT(ParseLogLevel("loud"));
}

TEST(Logging, UnknownLayercacheLogIsReported) {
  auto r = testing::RunCommand({"/usr/bin/env", "LAYERCACHE_LOG=loud", testing::CliPath(),
                                "--cache-dir", "/nonexistent/x", "put", "m", "0", "/nonexistent"});
  EXPECT_NE(r.out.find("LAYERCACHE_LOG"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("debug, info, warn, error or off"), std::string::npos) << r.out;
  EXPECT_EQ(r.exit_code, 2) << r.out;  // a usage error, before doing anything
}

}  // namespace
}  // namespace layercache
