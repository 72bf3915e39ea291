// The error contract (include/layercache/status.h, layer_cache.h "Errors"):
// the library throws one type, layercache::Error, and a fault has the same
// code (and message) whether it reaches the caller through a throwing call or
// through its *_status twin, which never throws.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "gpu/device_runtime.h"
#include "layercache/cache_settings.h"
#include "layercache/layer_cache.h"
#include "layercache/logging.h"
#include "layercache/quantization.h"
#include "layercache/synthetic_model.h"
#include "mock_hub.h"
#include "sim_device.h"
#include "test_layers.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::MockHub;
using testing::TempDir;
using testing::WriteText;

constexpr const char* kRepo = "acme/tiny-llama";
constexpr uint64_t kMiB = 1 << 20;

// The status variant returns `expected` without throwing; the throwing
// variant throws layercache::Error with the same code and message.
void ExpectOneError(const std::string& fault, StatusCode expected,
                    const std::function<Status()>& status_variant,
                    const std::function<void()>& throwing_variant) {
  SCOPED_TRACE(fault);
  Status returned;
  try {
    returned = status_variant();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "the status variant threw: " << e.what();
    return;
  }
  EXPECT_STREQ(StatusCodeName(returned.code()), StatusCodeName(expected)) << returned.ToString();
  try {
    throwing_variant();
    ADD_FAILURE() << "the throwing variant threw nothing";
  } catch (const Error& e) {
    EXPECT_STREQ(StatusCodeName(e.code()), StatusCodeName(expected)) << e.what();
    EXPECT_EQ(e.status().message(), returned.message());
    EXPECT_EQ(std::string(e.what()), e.status().ToString());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "the throwing variant threw another type than layercache::Error: " << e.what();
  }
}

template <class T>
Status StatusOf(const Result<T>& r) {
  return r.ok() ? Status::OK() : r.status();
}

class ErrorContractTest : public ::testing::Test {
 protected:
  void SetUp() override { SetDefaultDeviceRuntime(sim_); }
  void TearDown() override { SetDefaultDeviceRuntime(nullptr); }

  LayerCacheOptions Options() {
    LayerCacheOptions o;
    o.cache_dir = dir_ / "cache";
    o.max_cache_size_gb = 1;
    o.max_memory_cache_size_gb = 0.25;
    o.max_gpu_cache_size_gb = 0.25;
    return o;
  }
  static DownloadOptions From(const MockHub& hub) {
    DownloadOptions d;
    d.endpoint = hub.endpoint();
    d.quiet = true;
    d.max_retries = 1;
    return d;
  }

  std::shared_ptr<testing::SimDevice> sim_ = std::make_shared<testing::SimDevice>(2, 256 * kMiB);
  TempDir dir_;
};

TEST_F(ErrorContractTest, ArgumentFaultsHaveOneCodeOnBothPaths) {
  LayerCache cache(Options());
  const LayerKey good{"m", 0, "", ""};

  // A null layer, and a layer with reserved metadata.
  ExpectOneError(
      "null layer", StatusCode::kInvalidArgument,
      [&] { return cache.cache_layer_status(good, nullptr); },
      [&] { cache.cache_layer(good, nullptr); });
  auto loaded = cache.get_or_load(good, [] { return LayerPtr(); });
  EXPECT_EQ(loaded.status().code(), StatusCode::kInvalidArgument) << loaded.status().ToString();
  auto reserved = LayerBuilder().set_metadata("layercache.model_id", "x").build();
  ExpectOneError(
      "reserved metadata", StatusCode::kInvalidArgument,
      [&] { return cache.cache_layer_status(good, reserved); },
      [&] { cache.cache_layer(good, reserved); });

  // Bad keys: an empty model, a negative index, a NUL byte, invalid UTF-8.
  for (const LayerKey& bad :
       {LayerKey{"", 0, "", ""}, LayerKey{"m", -1, "", ""},
        LayerKey{std::string("a\0b", 3), 0, "", ""}, LayerKey{"m\xff", 0, "", ""}}) {
    ExpectOneError(
        "bad key " + bad.ToString(), StatusCode::kInvalidArgument,
        [&] { return cache.cache_layer_status(bad, MakeLayer(1)); },
        [&] { cache.cache_layer(bad, MakeLayer(1)); });
    Result<LayerPtr> by_loader = Status::NotFound("not run");
    EXPECT_NO_THROW(by_loader = cache.get_or_load(bad, [] { return MakeLayer(1); }));
    EXPECT_EQ(by_loader.status().code(), StatusCode::kInvalidArgument)
        << by_loader.status().ToString();
    ExpectOneError(
        "bad key on a device " + bad.ToString(), StatusCode::kInvalidArgument,
        [&] { return StatusOf(cache.get_layer_status(bad, "cuda:0")); },
        [&] { cache.get_layer(bad, "cuda:0"); });
    ExpectOneError(
        "bad key to download " + bad.ToString(), StatusCode::kInvalidArgument,
        [&] {
          return StatusOf(cache.download_and_cache_status(bad.model_id, bad.layer_index, kRepo));
        },
        [&] { cache.download_and_cache(bad.model_id, bad.layer_index, kRepo); });
  }

  // Bad device strings, and an ordinal the (simulated) machine lacks.
  for (const char* device : {"tpu:0", "cuda:", "cuda:x", "cuda:-1", "cpu", "cuda:9"}) {
    ExpectOneError(
        std::string("device ") + device, StatusCode::kInvalidArgument,
        [&] { return StatusOf(cache.get_layer_status(good, device)); },
        [&] { cache.get_layer(good, device); });
  }

  // Bad download options and a hostile repository id (no Hub is asked).
  DownloadOptions no_connections;
  no_connections.connections = 0;
  ExpectOneError(
      "connections = 0", StatusCode::kInvalidArgument,
      [&] { return StatusOf(cache.download_and_cache_status("m", 0, kRepo, "", no_connections)); },
      [&] { cache.download_and_cache("m", 0, kRepo, "", no_connections); });
  DownloadOptions bad_blocksize;
  bad_blocksize.quantize = quant::QuantConfig::NF4();
  bad_blocksize.quantize->blocksize = 3;
  ExpectOneError(
      "nf4 blocksize 3", StatusCode::kInvalidArgument,
      [&] { return StatusOf(cache.download_and_cache_status("m", 0, kRepo, "", bad_blocksize)); },
      [&] { cache.download_and_cache("m", 0, kRepo, "", bad_blocksize); });
  for (const char* repo : {"../../etc/passwd", "a/b/c", ""}) {
    ExpectOneError(
        std::string("repository id \"") + repo + "\"", StatusCode::kInvalidArgument,
        [&] { return StatusOf(cache.download_and_cache_status("m", 0, repo)); },
        [&] { cache.download_and_cache("m", 0, repo); });
  }
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);  // none of it cached anything
}

TEST_F(ErrorContractTest, OptionFaultsThrowErrorWithInvalidArgument) {
  // No status twin: the constructor and Validate throw kInvalidArgument, and
  // the message says how to fix the option.
  auto o = Options();
  o.compression_level = 10;
  EXPECT_INVALID_ARGUMENT(o.Validate());
  EXPECT_INVALID_ARGUMENT(LayerCache{o});
  try {
    LayerCache c(o);
  } catch (const Error& e) {
    EXPECT_NE(e.status().message().find("between 1 and 9"), std::string::npos) << e.what();
  }
  EXPECT_INVALID_ARGUMENT(ParseEvictionPolicy("mru"));
  EXPECT_INVALID_ARGUMENT(ParseDiskReadMode("sideways"));
  EXPECT_INVALID_ARGUMENT(ParseChecksumAlgorithm("crc32"));
  EXPECT_INVALID_ARGUMENT(ParseLogLevel("loud"));
  EXPECT_INVALID_ARGUMENT(LayerBuilder().add_tensor("t", DType::F32, {4}, std::vector<float>(3)));
  EXPECT_ERROR_CODE(MakeLayer(1)->tensor_data("no such tensor"), StatusCode::kNotFound);
}

TEST_F(ErrorContractTest, StoredFaultsHaveOneCodeOnBothPaths) {
  // A missing repository and a missing file on the Hub: kNotFound.
  TempDir model;
  SyntheticModelSpec spec;
  spec.num_layers = 2;
  spec.layers_per_shard = 1;
  ASSERT_TRUE(WriteSyntheticModel(model.path(), spec).ok());
  {
    MockHub hub(kRepo, model.path());
    LayerCache cache(Options());
    ExpectOneError(
        "missing repository", StatusCode::kNotFound,
        [&] {
          return StatusOf(cache.download_and_cache_status("m", 0, "acme/none", "", From(hub)));
        },
        [&] { cache.download_and_cache("m", 0, "acme/none", "", From(hub)); });
    ExpectOneError(
        "missing file", StatusCode::kNotFound,
        [&] {
          return StatusOf(
              cache.download_and_cache_status("m", 0, kRepo, "nope.safetensors", From(hub)));
        },
        [&] { cache.download_and_cache("m", 0, kRepo, "nope.safetensors", From(hub)); });
  }

  // Corrupt shards (a header length past the end of the file): kCorruption.
  int corrupted = 0;
  for (const auto& e : std::filesystem::directory_iterator(model.path())) {
    if (e.path().extension() != ".safetensors") continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.write("\xff\xff\xff\xff\xff\xff\xff\x7f", 8);
    ++corrupted;
  }
  ASSERT_GT(corrupted, 0);
  {
    MockHub hub(kRepo, model.path());
    LayerCache cache(Options());
    ExpectOneError(
        "corrupt shard", StatusCode::kCorruption,
        [&] { return StatusOf(cache.download_and_cache_status("m", 0, kRepo, "", From(hub))); },
        [&] { cache.download_and_cache("m", 0, kRepo, "", From(hub)); });
    EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);
  }

  // A corrupt cached entry is a miss on both paths (kNotFound / nullptr),
  // never bad bytes and never an exception.
  const LayerKey k{"m", 3, "", ""};
  std::string path;
  {
    LayerCache writer(Options());
    ASSERT_TRUE(writer.cache_layer(k, MakeLayer(7, kMiB)));
    path = writer.list_entries().at(0).path;
  }
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-100, std::ios::end);
    f.put('\x01');
  }
  {
    LayerCache cache(Options());
    auto on_device = cache.get_layer_status(k, "cuda:0");
    EXPECT_TRUE(on_device.status().IsNotFound()) << on_device.status().ToString();
    EXPECT_EQ(cache.get_layer(k, "cuda:0"), nullptr);
    EXPECT_EQ(cache.get_layer(k), nullptr);
    EXPECT_EQ(cache.get_stats().checksum_failures, 1u);
  }

  // A malformed settings.json: kCorruption naming the file, not nlohmann's
  // exception (the CLI and Python read it through ReadCacheSettings).
  WriteText(dir_ / "cache/settings.json", "{not json");
  auto settings = ReadCacheSettings(dir_ / "cache");
  ASSERT_FALSE(settings.ok());
  EXPECT_EQ(settings.status().code(), StatusCode::kCorruption) << settings.status().ToString();
  EXPECT_NE(settings.status().message().find("settings.json"), std::string::npos);
  WriteText(dir_ / "cache/settings.json", "{\"compression_level\": \"eleven\"}");
  settings = ReadCacheSettings(dir_ / "cache");
  ASSERT_FALSE(settings.ok());
  EXPECT_EQ(settings.status().code(), StatusCode::kCorruption) << settings.status().ToString();
  EXPECT_EQ(settings.status().message().find("invalid_argument"), std::string::npos)
      << settings.status().message();
}

// A layer whose "quantization" record is malformed in a way nlohmann only
// notices on access (a "nested" that is not a boolean, a bitsandbytes quant
// state whose dtype is not a string): kInvalidArgument, not a JSON exception
// out of cache_layer.
TEST_F(ErrorContractTest, MalformedQuantizationRecordsAreInvalidArguments) {
  LayerCache cache(Options());
  std::vector<float> v(4, 1.0f);
  const std::string state = R"({"blocksize": 64, "shape": [4], "dtype": 5})";
  const std::vector<LayerPtr> layers = {
      LayerBuilder()
          .add_tensor("w", DType::F32, {4}, v)
          .set_metadata(quant::kQuantMetadataKey,
                        R"({"mode": "nf4", "blocksize": 64, "nested": "yes", "tensors": {}})")
          .build(),
      LayerBuilder()
          .add_tensor("w", DType::F32, {4}, v)
          .add_tensor("w.quant_state.bitsandbytes__nf4", DType::U8, {state.size()},
                      std::span<const std::byte>(reinterpret_cast<const std::byte*>(state.data()),
                                                 state.size()))
          .build(),
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    SCOPED_TRACE(i);
    auto info = quant::GetQuantInfo(*layers[i]);
    ASSERT_FALSE(info.ok());
    EXPECT_EQ(info.status().code(), StatusCode::kInvalidArgument) << info.status().ToString();
    const LayerKey k{"m", static_cast<int64_t>(i), "nf4", ""};
    Status s;
    EXPECT_NO_THROW(s = cache.cache_layer_status(k, layers[i]));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    bool stored = true;
    EXPECT_NO_THROW(stored = cache.cache_layer(k, layers[i]));  // the seed's bool: false
    EXPECT_FALSE(stored);
  }
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);
}

// A Hub whose answers are malformed (a size header that is not a number,
// or one too large for 64 bits): kIOError on both paths. std::stoull used
// to let std::invalid_argument / std::out_of_range escape download_and_cache.
TEST_F(ErrorContractTest, MalformedHubAnswersAreIoErrorsNotStandardExceptions) {
  for (const char* size : {"abc", "99999999999999999999999", "-1"}) {
    httplib::Server hub;
    hub.Get(".*", [&](const httplib::Request&, httplib::Response& res) {
      res.status = 200;
      res.set_header("X-Repo-Commit", std::string(40, 'a'));
      res.set_header("ETag", "\"e\"");
      res.set_header("X-Linked-Size", size);
      res.set_content("", "application/octet-stream");
    });
    const int port = hub.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port, 0);
    std::thread serving([&] { hub.listen_after_bind(); });
    DownloadOptions o;
    o.endpoint = "http://127.0.0.1:" + std::to_string(port);
    o.quiet = true;
    o.max_retries = 0;
    {
      LayerCache cache(Options());
      ExpectOneError(
          std::string("X-Linked-Size: ") + size, StatusCode::kIOError,
          [&] {
            return StatusOf(cache.download_and_cache_status("m", 0, kRepo, "model.safetensors", o));
          },
          [&] { cache.download_and_cache("m", 0, kRepo, "model.safetensors", o); });
    }
    hub.stop();
    serving.join();
  }
}

}  // namespace
}  // namespace layercache
