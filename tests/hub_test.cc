// download_and_cache against a Hub-protocol server: the product's own
// HubServer, and a mock hub that injects faults.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "hub_server.h"
#include "layercache/layer_cache.h"
#include "layercache/synthetic_model.h"
#include "mock_hub.h"
#include "source/checkpoint.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MockHub;
using testing::TempDir;

constexpr const char* kRepo = "acme/tiny-llama";

// A sharded synthetic model of 8 layers of about 1.4 MiB.
struct Model {
  TempDir dir;
  SyntheticModelInfo info;
  std::unique_ptr<Checkpoint> local;
  Model() {
    SyntheticModelSpec spec;
    spec.num_layers = 8;
    spec.layers_per_shard = 3;
    info = WriteSyntheticModel(dir.path(), spec).value();
    local = Checkpoint::Open(dir.path()).value();
  }
  LayerPtr Layer(int64_t i) const { return *local->ReadLayer(i); }
};

LayerCacheOptions CacheIn(const TempDir& dir) {
  LayerCacheOptions o;
  o.cache_dir = dir / "cache";
  o.max_cache_size_gb = 1;
  return o;
}

DownloadOptions From(const std::string& endpoint) {
  DownloadOptions d;
  d.endpoint = endpoint;
  d.quiet = true;
  d.max_retries = 4;
  return d;
}

uint64_t HeaderReadBytes(const Model& m, int shards) {
  (void)m;
  return static_cast<uint64_t>(shards) * 100'000;
}

TEST(HubDownload, FetchesOnlyTheLayersBytesAndCachesThem) {
  Model m;
  HubServer server;
  server.AddRepo(kRepo, m.dir.path());
  const int port = server.Start();
  ASSERT_GT(port, 0);
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  const auto opts = From("http://127.0.0.1:" + std::to_string(port));
  const uint64_t index_bytes = std::filesystem::file_size(m.dir / "model.safetensors.index.json");

  LayerPtr layer = cache.download_and_cache("tiny", 4, kRepo, "", opts);
  ASSERT_NE(layer, nullptr);
  EXPECT_TRUE(layer->ContentEquals(*m.Layer(4)));
  const uint64_t sent = server.bytes_sent();
  EXPECT_LE(sent, layer->nbytes() + layer->nbytes() / 100 + HeaderReadBytes(m, 1) + index_bytes)
      << "a layer download must not fetch other layers' bytes";
  EXPECT_GE(sent, layer->nbytes());

  // Cached under the resolved commit; a second call sends nothing.
  auto entries = cache.list_entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].key.revision, server.commit());
  LayerPtr again = cache.download_and_cache("tiny", 4, kRepo, "", opts);
  EXPECT_TRUE(again->ContentEquals(*layer));
  EXPECT_EQ(server.bytes_sent(), sent);
  EXPECT_EQ(cache.get_stats().bytes_downloaded, layer->nbytes());

  // The remaining layers, and the tensors outside the layers.
  for (int i = 0; i < 8; ++i) {
    EXPECT_TRUE(cache.download_and_cache("tiny", i, kRepo, "", opts)->ContentEquals(*m.Layer(i)))
        << i;
  }
  LayerPtr extra = cache.download_non_layer_tensors("tiny", kRepo, "", opts);
  EXPECT_NE(extra->find("model.embed_tokens.weight"), nullptr);
  EXPECT_NE(extra->find("lm_head.weight"), nullptr);
  EXPECT_EQ(cache.hub_num_layers(kRepo, "", opts), 8);
}

// A cache with one worker: a download's connections run as parts on it and
// on the calling thread, which alone reports progress (progress callbacks
// are not thread-safe), and the last report says the whole layer arrived.
TEST(HubDownload, OneWorkerThreadDownloadsAndOnlyTheCallerReportsProgress) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  hub.faults.slow_ms_per_chunk = 20;  // parts outlast the 100 ms between reports: some come mid-way
  TempDir cache_dir;
  LayerCacheOptions o = CacheIn(cache_dir);
  o.worker_threads = 1;
  LayerCache cache(o);
  DownloadOptions opts = From(hub.endpoint());
  opts.quiet = false;
  opts.connections = 8;
  const std::thread::id caller = std::this_thread::get_id();
  int reports = 0, elsewhere = 0;
  ProgressUpdate last;
  opts.progress = [&](const ProgressUpdate& u) {
    ++reports;
    if (std::this_thread::get_id() != caller) ++elsewhere;
    last = u;
  };
  for (int i = 0; i < 3; ++i) {
    LayerPtr layer = cache.download_and_cache("tiny", i, kRepo, "", opts);
    ASSERT_NE(layer, nullptr) << i;
    EXPECT_TRUE(layer->ContentEquals(*m.Layer(i))) << i;
    EXPECT_TRUE(last.finished) << i;
    EXPECT_EQ(last.done, last.total) << i;
    EXPECT_GT(last.total, 0u) << i;
  }
  EXPECT_GE(reports, 3);  // at least each layer's last report
  EXPECT_EQ(elsewhere, 0) << "of " << reports << " reports";
}

TEST(HubDownload, WithAFilenameReadsOnlyThatShard) {
  Model m;
  HubServer server;
  server.AddRepo(kRepo, m.dir.path());
  const int port = server.Start();
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  LayerPtr layer = cache.download_and_cache("tiny", 1, kRepo, "model-00001-of-00003.safetensors",
                                            From("http://127.0.0.1:" + std::to_string(port)));
  EXPECT_TRUE(layer->ContentEquals(*m.Layer(1)));
  EXPECT_THROW(cache.download_and_cache("tiny", 5, kRepo, "model-00001-of-00003.safetensors",
                                        From("http://127.0.0.1:" + std::to_string(port))),
               Error);
}

TEST(HubDownload, AssemblesALayerSplitAcrossShards) {
  LAYERCACHE_REQUIRE_FIXTURES();
  // Tiny shards holding every tensor of the real Granite index where it says.
  TempDir model;
  const std::string index_path =
      testing::FixturePath("hub/granite_moe_model.safetensors.index.json");
  std::filesystem::copy_file(index_path, model / "model.safetensors.index.json");
  auto doc = nlohmann::json::parse(testing::ReadBytes(index_path));
  std::map<std::string, LayerBuilder> shards;
  int n = 0;
  for (auto it = doc["weight_map"].begin(); it != doc["weight_map"].end(); ++it) {
    std::vector<float> v(1024, static_cast<float>(n++));
    shards[it.value().get<std::string>()].add_tensor(it.key(), DType::F32, {1024}, v);
  }
  for (auto& [name, b] : shards) ASSERT_TRUE(WriteSafetensorsFile(*b.build(), model / name).ok());
  MockHub hub("ibm/granite-moe", model.path());
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  LayerPtr layer =
      cache.download_and_cache("granite", 22, "ibm/granite-moe", "", From(hub.endpoint()));
  auto local = (*Checkpoint::Open(model.path()))->ReadLayer(22);
  ASSERT_TRUE(local.ok());
  EXPECT_TRUE(layer->ContentEquals(**local));
  EXPECT_NE(layer->find("self_attn.q_proj.weight"), nullptr);
  EXPECT_NE(layer->find("block_sparse_moe.router.layer.weight"), nullptr);
}

TEST(HubDownload, HubErrorsBecomeClearMessages) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  auto message = [&](const std::string& repo, DownloadOptions o, const std::string& file = "") {
    auto r = cache.download_and_cache_status("tiny", 0, repo, file, o);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.status().message();
  };
  EXPECT_NE(message("acme/missing", From(hub.endpoint())).find("not found"), std::string::npos);
  auto bad_rev = From(hub.endpoint());
  bad_rev.revision = "no-such-branch";
  EXPECT_NE(message(kRepo, bad_rev).find("revision \"no-such-branch\" not found"),
            std::string::npos);
  EXPECT_NE(message(kRepo, From(hub.endpoint()), "nope.safetensors").find("not found"),
            std::string::npos);
  hub.faults.gated = true;
  EXPECT_NE(message(kRepo, From(hub.endpoint())).find("gated"), std::string::npos);
  hub.faults.gated = false;
  hub.faults.require_token = "s3cret";
  const std::string unauthorized = message(kRepo, From(hub.endpoint()));
  EXPECT_NE(unauthorized.find("HF_TOKEN"), std::string::npos) << unauthorized;
  auto with_token = From(hub.endpoint());
  with_token.token = "s3cret";
  EXPECT_TRUE(cache.download_and_cache_status("tiny", 0, kRepo, "", with_token).ok());
  EXPECT_INVALID_ARGUMENT(
      cache.download_and_cache("tiny", 0, "../../etc", "", From(hub.endpoint())));
  EXPECT_INVALID_ARGUMENT(cache.download_and_cache("tiny", 0, "a/b/c", "", From(hub.endpoint())));
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 1u);
}

TEST(HubDownload, RetriesServerErrorsAndRateLimits) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  hub.faults.fail_requests = 2;
  hub.faults.fail_status = 503;
  EXPECT_TRUE(cache.download_and_cache("tiny", 0, kRepo, "", From(hub.endpoint()))
                  ->ContentEquals(*m.Layer(0)));
  hub.faults.fail_requests = 1;
  hub.faults.fail_status = 429;
  hub.faults.retry_after = "1";
  EXPECT_TRUE(cache.download_and_cache("tiny", 1, kRepo, "", From(hub.endpoint()))
                  ->ContentEquals(*m.Layer(1)));
  const int before = hub.file_requests();
  hub.faults.fail_requests = 100;  // more than the retries
  hub.faults.fail_status = 500;
  hub.faults.retry_after = "";
  auto failed = cache.download_and_cache_status("tiny", 2, kRepo, "", From(hub.endpoint()));
  EXPECT_FALSE(failed.ok());
  EXPECT_GT(hub.file_requests(), before + 1);
  hub.faults.fail_requests = 0;
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 2u);
}

TEST(HubDownload, ResumesADroppedConnectionWhereItStopped) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  auto opts = From(hub.endpoint());
  opts.connections = 1;
  LayerPtr warm = cache.download_and_cache("tiny", 0, kRepo, "", opts);  // headers fetched
  const uint64_t before = hub.body_bytes_sent();
  hub.faults.drop_after_bytes = 300'000;
  hub.faults.drop_bodies = 3;
  LayerPtr layer = cache.download_and_cache("tiny", 1, kRepo, "", opts);
  EXPECT_TRUE(layer->ContentEquals(*m.Layer(1)));
  // Resumed, not restarted: about the layer's bytes went over the wire.
  EXPECT_LE(hub.body_bytes_sent() - before, layer->nbytes() + layer->nbytes() / 100);
  (void)warm;
}

TEST(HubDownload, HandlesAServerThatIgnoresRange) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  hub.faults.ignore_range = true;
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  for (int i : {0, 4, 7}) {
    EXPECT_TRUE(cache.download_and_cache("tiny", i, kRepo, "", From(hub.endpoint()))
                    ->ContentEquals(*m.Layer(i)));
  }
}

TEST(HubDownload, ContentThatChangesUnderfootIsNeverCached) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  hub.faults.wrong_etag = true;
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  auto r = cache.download_and_cache_status("tiny", 3, kRepo, "", From(hub.endpoint()));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("changed on the server"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);
  EXPECT_EQ(cache.get_layer(LayerKey{"tiny", 3, "", hub.commit()}), nullptr);
}

TEST(HubDownload, CdnRedirectDropsTheToken) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  hub.faults.cdn = true;
  hub.faults.require_token = "tok";
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  auto opts = From(hub.endpoint());
  opts.token = "tok";
  EXPECT_TRUE(cache.download_and_cache("tiny", 6, kRepo, "", opts)->ContentEquals(*m.Layer(6)));
  EXPECT_GT(hub.cdn_requests(), 0);
  EXPECT_EQ(hub.cdn_requests_with_auth(), 0) << "the token must not leave the Hub's host";
}

TEST(HubDownload, SlowServerStillCompletes) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  hub.faults.slow_ms_per_chunk = 2;
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  EXPECT_TRUE(cache.download_and_cache("tiny", 2, kRepo, "", From(hub.endpoint()))
                  ->ContentEquals(*m.Layer(2)));
}

TEST(HubDownload, OfflineServesWhatIsCachedAndSaysWhatIsNot) {
  Model m;
  TempDir cache_dir;
  {
    MockHub hub(kRepo, m.dir.path());
    LayerCache cache(CacheIn(cache_dir));
    ASSERT_NE(cache.download_and_cache("tiny", 0, kRepo, "", From(hub.endpoint())), nullptr);
  }
  LayerCache cache(CacheIn(cache_dir));
  auto offline = From("http://127.0.0.1:1");
  offline.offline = true;
  EXPECT_TRUE(cache.download_and_cache("tiny", 0, kRepo, "", offline)->ContentEquals(*m.Layer(0)));
  auto missing = cache.download_and_cache_status("tiny", 1, kRepo, "", offline);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("not cached"), std::string::npos);
  // Online but the server is gone: the cached copy is still served.
  EXPECT_TRUE(cache.download_and_cache("tiny", 0, kRepo, "", From("http://127.0.0.1:1"))
                  ->ContentEquals(*m.Layer(0)));
}

TEST(HubDownload, ShardNamesThatEscapeAreRejected) {
  TempDir model;
  nlohmann::json idx;
  idx["weight_map"]["model.layers.0.w"] = "../../etc/passwd";
  testing::WriteText(model / "model.safetensors.index.json", idx.dump());
  MockHub hub(kRepo, model.path());
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  auto r = cache.download_and_cache_status("x", 0, kRepo, "", From(hub.endpoint()));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("shard name"), std::string::npos) << r.status().message();
}

TEST(HubDownload, TwoProcessesAskingForTheSameLayersDownloadThemOnce) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  TempDir cache_dir;
  auto run = [&] {
    return testing::RunCommand({testing::CliPath(), "--cache-dir", cache_dir / "cache", "fetch",
                                kRepo, "--layers", "0-7", "--quiet", "--model-id", "tiny"});
  };
  ::setenv("HF_ENDPOINT", hub.endpoint().c_str(), 1);
  auto a = std::async(std::launch::async, run);
  auto b = std::async(std::launch::async, run);
  auto ra = a.get();
  auto rb = b.get();
  ::unsetenv("HF_ENDPOINT");
  ASSERT_EQ(ra.exit_code, 0) << ra.out;
  ASSERT_EQ(rb.exit_code, 0) << rb.out;
  const uint64_t layers = m.info.bytes_per_layer * 8;
  const uint64_t headers =
      3 * 2 * 100'000 + 2 * std::filesystem::file_size(m.dir / "model.safetensors.index.json");
  EXPECT_LE(hub.body_bytes_sent(), layers + layers / 100 + headers)
      << "each layer must cross the wire once";
  LayerCache cache(CacheIn(cache_dir));
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 8u);
}

TEST(ImportCheckpoint, CachesEveryLayerOfALocalModel) {
  Model m;
  TempDir cache_dir;
  LayerCache cache(CacheIn(cache_dir));
  EXPECT_EQ(cache.import_checkpoint(m.dir.path(), "local-tiny"),
            9u);  // 8 layers + non-layer tensors
  for (int i = 0; i < 8; ++i)
    EXPECT_TRUE(cache.get_layer("local-tiny", i)->ContentEquals(*m.Layer(i)));
  EXPECT_NE(cache.get_layer("local-tiny", 0, kNonLayerQuantizationMode), nullptr);
  auto r = testing::RunCommand({testing::CliPath(), "--cache-dir", cache_dir / "cli", "import",
                                m.dir.path(), "--model-id", "cli-tiny", "--layers", "2-3"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("imported 3 entries"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace layercache

namespace layercache {
namespace {

TEST(HubDownload, TheTokenIsNeverLoggedNorStored) {
  Model m;
  MockHub hub(kRepo, m.dir.path());
  const std::string token = "hf_SECRETtoken1234567890";
  hub.faults.require_token = token;
  TempDir cache_dir;
  ::setenv("HF_ENDPOINT", hub.endpoint().c_str(), 1);
  ::setenv("HF_TOKEN", token.c_str(), 1);
  ::setenv("LAYERCACHE_LOG", "debug", 1);
  auto ok = testing::RunCommand({testing::CliPath(), "--cache-dir", cache_dir / "cache", "fetch",
                                 kRepo, "--layers", "0-1", "--model-id", "tiny"});
  ::setenv("HF_TOKEN", "hf_WRONGtoken", 1);
  auto bad = testing::RunCommand({testing::CliPath(), "--cache-dir", cache_dir / "other", "fetch",
                                  kRepo, "--layers", "2", "--model-id", "tiny"});
  ::unsetenv("HF_ENDPOINT");
  ::unsetenv("HF_TOKEN");
  ::unsetenv("LAYERCACHE_LOG");
  ASSERT_EQ(ok.exit_code, 0) << ok.out;
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_EQ(ok.out.find("SECRET"), std::string::npos) << ok.out;
  EXPECT_EQ(bad.out.find("WRONG"), std::string::npos) << bad.out;
  for (const auto& f : testing::ListFilesRecursively(cache_dir.path())) {
    auto bytes = testing::ReadBytes(cache_dir / f);
    const std::string content(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    EXPECT_EQ(content.find("SECRET"), std::string::npos) << "the token was written to " << f;
  }
}

}  // namespace
}  // namespace layercache
