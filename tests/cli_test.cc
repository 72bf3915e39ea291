// The `layercache` command-line tool, run as a user would run it.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "layercache/safetensors.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::CliPath;
using testing::RunCommand;
using testing::TempDir;

testing::CommandResult Cli(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), {CliPath(), "--cache-dir", dir / "cache"});
  return RunCommand(args);
}

TEST(Cli, PutGetRoundTripIsByteIdenticalToTheReferenceWriter) {
  LAYERCACHE_REQUIRE_FIXTURES();
  TempDir dir;
  const std::string src = testing::FixturePath("safetensors/burn_multi_layer.safetensors");
  auto put = Cli(dir, {"put", "burn/model", "3", src, "--quant", "fp32"});
  ASSERT_EQ(put.exit_code, 0) << put.out;
  auto get = Cli(dir, {"get", "burn/model", "3", "--quant", "fp32", "-o", dir / "out.safetensors"});
  ASSERT_EQ(get.exit_code, 0) << get.out;
  EXPECT_EQ(testing::ReadBytes(dir / "out.safetensors"), testing::ReadBytes(src));
  {  // the report counts the tensors' bytes (the file also holds its 8-byte length and header)
    const auto bytes = testing::ReadBytes(dir / "out.safetensors");
    ASSERT_GT(bytes.size(), 8u);
    uint64_t header = 0;
    for (int i = 7; i >= 0; --i) header = (header << 8) | static_cast<uint8_t>(bytes[i]);
    const uint64_t data = bytes.size() - 8 - header;
    EXPECT_NE(get.out.find("(" + std::to_string(data) + " bytes of tensor data)"),
              std::string::npos)
        << get.out;
  }
  auto miss = Cli(dir, {"get", "burn/model", "4", "-o", dir / "miss.safetensors"});
  EXPECT_EQ(miss.exit_code, 1);
  EXPECT_NE(miss.out.find("not cached"), std::string::npos);
}

TEST(Cli, LsAndStatsReportEntriesAsJson) {
  LAYERCACHE_REQUIRE_FIXTURES();
  TempDir dir;
  ASSERT_EQ(
      Cli(dir, {"put", "m", "0", testing::FixturePath("safetensors/samples_overall.safetensors")})
          .exit_code,
      0);
  ASSERT_EQ(
      Cli(dir, {"put", "m", "1", testing::FixturePath("safetensors/candle_jfk_codes.safetensors")})
          .exit_code,
      0);
  auto ls = Cli(dir, {"ls", "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.out;
  auto entries = nlohmann::json::parse(ls.out);
  ASSERT_EQ(entries.size(), 2u);
  for (const char* k : {"model_id", "layer_index", "quantization_mode", "tier", "size_bytes",
                        "last_access", "checksum"}) {
    EXPECT_TRUE(entries[0].contains(k)) << k;
  }
  auto text = Cli(dir, {"ls"});
  EXPECT_NE(text.out.find("2 entries"), std::string::npos) << text.out;
  auto stats = Cli(dir, {"stats", "--json"});
  ASSERT_EQ(stats.exit_code, 0) << stats.out;
  EXPECT_EQ(nlohmann::json::parse(stats.out)["disk_cache_entries"], 2);
  auto pretty = Cli(dir, {"stats"});
  EXPECT_NE(pretty.out.find("Layer Cache Statistics"), std::string::npos);
}

TEST(Cli, VerifyExitsOneOnCorruptionAndOptimizeRepairs) {
  LAYERCACHE_REQUIRE_FIXTURES();
  TempDir dir;
  ASSERT_EQ(
      Cli(dir, {"put", "m", "0", testing::FixturePath("safetensors/burn_multi_layer.safetensors")})
          .exit_code,
      0);
  ASSERT_EQ(Cli(dir, {"verify"}).exit_code, 0);
  auto ls = nlohmann::json::parse(Cli(dir, {"ls", "--json"}).out);
  const std::string path = ls[0]["path"];
  auto bytes = testing::ReadBytes(path);
  bytes[bytes.size() - 5] ^= std::byte{0x40};
  testing::WriteBytes(path, bytes);
  auto verify = Cli(dir, {"verify"});
  EXPECT_EQ(verify.exit_code, 1);
  EXPECT_NE(verify.out.find("CORRUPT m/0"), std::string::npos) << verify.out;
  ASSERT_EQ(Cli(dir, {"optimize"}).exit_code, 0);
  EXPECT_EQ(Cli(dir, {"verify"}).exit_code, 0);
}

TEST(Cli, InvalidateAndClearRemoveEntries) {
  LAYERCACHE_REQUIRE_FIXTURES();
  TempDir dir;
  const std::string f = testing::FixturePath("safetensors/samples_f.safetensors");
  for (const char* l : {"0", "1", "2"}) ASSERT_EQ(Cli(dir, {"put", "m", l, f}).exit_code, 0);
  ASSERT_EQ(Cli(dir, {"put", "other", "0", f}).exit_code, 0);
  auto inv = Cli(dir, {"invalidate", "m", "--layer", "1"});
  EXPECT_NE(inv.out.find("removed 1"), std::string::npos) << inv.out;
  inv = Cli(dir, {"invalidate", "m"});
  EXPECT_NE(inv.out.find("removed 2"), std::string::npos) << inv.out;
  auto clear = Cli(dir, {"clear"});
  EXPECT_NE(clear.out.find("removed 1"), std::string::npos) << clear.out;
  EXPECT_EQ(nlohmann::json::parse(Cli(dir, {"ls", "--json"}).out).size(), 0u);
}

TEST(Cli, InspectListsTensorsOrExplainsWhyAFileIsInvalid) {
  LAYERCACHE_REQUIRE_FIXTURES();
  TempDir dir;
  auto ok = RunCommand(
      {CliPath(), "inspect", testing::FixturePath("safetensors/samples_overall.safetensors")});
  EXPECT_EQ(ok.exit_code, 0);
  EXPECT_NE(ok.out.find("9 tensors"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("F64"), std::string::npos);
  auto lfs =
      RunCommand({CliPath(), "inspect", testing::FixturePath("hub/lfs_pointer_model.safetensors")});
  EXPECT_NE(lfs.exit_code, 0);
  EXPECT_NE(lfs.out.find("Git LFS pointer"), std::string::npos) << lfs.out;
  auto put_bad =
      Cli(dir, {"put", "m", "0", testing::FixturePath("hub/lfs_pointer_model.safetensors")});
  EXPECT_EQ(put_bad.exit_code, 3);  // an unreadable input: a runtime error
}

TEST(Cli, BadArgumentsFailWithAMessage) {
  LAYERCACHE_REQUIRE_FIXTURES();
  TempDir dir;
  auto r = Cli(dir, {"put", "m", "-1", testing::FixturePath("safetensors/samples_f.safetensors")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("LAYER must be an integer in 0.."), std::string::npos) << r.out;
  auto budget =
      RunCommand({CliPath(), "--cache-dir", dir / "c", "--max-cache-size-gb", "-2", "stats"});
  EXPECT_EQ(budget.exit_code, 2);
  EXPECT_NE(budget.out.find("max-cache-size-gb must be a number in (0, 1048576]"),
            std::string::npos)
      << budget.out;
}

TEST(Cli, DemoStreamsASyntheticModelAndChecksEveryByte) {
  TempDir dir;
  auto r = RunCommand({CliPath(), "demo", "--layers", "8", "--hidden", "128", "--intermediate",
                       "256", "--workdir", dir / "work"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("pass 1 download"), std::string::npos);
  EXPECT_NE(r.out.find("pass 2 disk"), std::string::npos);
  EXPECT_NE(r.out.find("pass 3 memory"), std::string::npos);
  EXPECT_NE(r.out.find("Cache Hits: 16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Hit Ratio: 100.0%"), std::string::npos) << r.out;
  // print_stats counts the last LayerCache of the run (reopened after the download pass); the
  // lifetime line covers every pass: 8 downloads, then 16 hits, and what pass 1 downloaded.
  EXPECT_NE(r.out.find("Lifetime (every process that used this cache): 16 hits"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("8 misses"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("0 B downloaded"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("iB downloaded\n"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir / "work/model/model.safetensors.index.json"));
}

}  // namespace
}  // namespace layercache
