// The `layercache` CLI as the ecosystem expects it (issue 16): special files
// as outputs, strict numbers, the cache's own settings, ls/rm/prune, --json
// everywhere and one set of exit codes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "test_support.h"

namespace layercache {
namespace {

using testing::CliPath;
using testing::TempDir;

struct CliRun {
  int exit_code = -1;
  std::string out;  // stdout only
  std::string err;
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs the CLI with stdout and stderr captured apart (stdin: /dev/null, not a terminal).
CliRun Cli(const TempDir& dir, std::vector<std::string> args, bool with_cache_dir = true) {
  if (with_cache_dir) args.insert(args.begin(), {"--cache-dir", dir / "cache"});
  args.insert(args.begin(), CliPath());
  const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int in = ::open("/dev/null", O_RDONLY);
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0);
    ::dup2(o, 1);
    ::dup2(e, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  CliRun r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadText(out);
  r.err = ReadText(err);
  return r;
}

std::string Fixture(const char* name) {
  return testing::FixturePath(std::string("safetensors/") + name);
}

void Put(const TempDir& dir, const std::string& model, int layer,
         std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"put", model, std::to_string(layer),
                                   Fixture("burn_multi_layer.safetensors")};
  args.insert(args.end(), extra.begin(), extra.end());
  CliRun r = Cli(dir, args);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
}

// ---- 1. outputs: never destroy what it did not create ------------------------

TEST(CliOutput, FifoIsWrittenInPlaceNotReplaced) {
  TempDir dir;
  Put(dir, "m", 0);
  const std::string fifo = dir / "pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string received;
  std::thread reader([&] { received = ReadText(fifo); });
  CliRun r = Cli(dir, {"get", "m", "0", "-o", fifo});
  reader.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced";
  Cli(dir, {"get", "m", "0", "-o", dir / "file.safetensors"});
  EXPECT_EQ(received, ReadText(dir / "file.safetensors"));
  EXPECT_GT(received.size(), 8u);
}

TEST(CliOutput, CharacterDeviceIsWrittenInPlace) {
  TempDir dir;
  Put(dir, "m", 0);
  std::string dev = dir / "null";
  // Our own null device node where we may make one (root); otherwise the real
  // /dev/null, which is only examined, never replaced by a working CLI.
  if (::mknod(dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0) dev = "/dev/null";
  struct stat before {};
  ASSERT_EQ(::lstat(dev.c_str(), &before), 0);
  ASSERT_TRUE(S_ISCHR(before.st_mode));
  CliRun r = Cli(dir, {"get", "m", "0", "-o", dev});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  struct stat after {};
  ASSERT_EQ(::lstat(dev.c_str(), &after), 0);
  EXPECT_TRUE(S_ISCHR(after.st_mode));
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(before.st_rdev, after.st_rdev);
}

TEST(CliOutput, DashIsStandardOutput) {
  TempDir dir;
  Put(dir, "m", 0);
  CliRun r = Cli(dir, {"get", "m", "0", "-o", "-"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Cli(dir, {"get", "m", "0", "-o", dir / "f"});
  EXPECT_EQ(r.out, ReadText(dir / "f"));
  EXPECT_NE(r.err.find("standard output"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "-"));
}

TEST(CliOutput, SymlinkIsWrittenThroughAndDanglingOneRefused) {
  TempDir dir;
  Put(dir, "m", 0);
  const std::string target = dir / "target", link = dir / "link";
  { std::ofstream(target) << "old"; }
  ASSERT_EQ(::chmod(target.c_str(), 0600), 0);
  ASSERT_EQ(::symlink("target", link.c_str()), 0);
  CliRun r = Cli(dir, {"get", "m", "0", "-o", link});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  Cli(dir, {"get", "m", "0", "-o", dir / "f"});
  EXPECT_EQ(ReadText(target), ReadText(dir / "f"));
  struct stat st {};
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the replaced file keeps its permission bits";

  const std::string dangling = dir / "dangling";
  ASSERT_EQ(::symlink("nowhere", dangling.c_str()), 0);
  r = Cli(dir, {"get", "m", "0", "-o", dangling});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("symbolic link"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "nowhere"));
}

TEST(CliOutput, DirectoryIsRefusedAndLeftAlone) {
  TempDir dir;
  Put(dir, "m", 0);
  std::filesystem::create_directory(dir / "d");
  { std::ofstream(dir / "d/keep") << "x"; }
  CliRun r = Cli(dir, {"get", "m", "0", "-o", dir / "d"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("directory"), std::string::npos) << r.err;
  EXPECT_EQ(ReadText(dir / "d/keep"), "x");
  // No temp file left beside it.
  EXPECT_EQ(std::count_if(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator(),
                          [](const auto& e) {
                            return e.path().filename().string().find(".tmp.") != std::string::npos;
                          }),
            0);
}

// ---- 2. strict arguments, global options anywhere, exit codes -------------------

TEST(CliArgs, OutOfRangeNumbersAreUsageErrorsNamingTheRange) {
  TempDir dir;
  Put(dir, "m", 0);
  struct Case {
    std::vector<std::string> args;
    std::string says;
  } cases[] = {
      {{"put", "burn", "99999999999999999999", Fixture("samples_f.safetensors")},
       "0..9223372036854775807"},
      {{"invalidate", "m", "--layer", "99999999999999999999"}, "0..9223372036854775807"},
      {{"--compression-level", "10", "ls"}, "1..9"},
      {{"ls", "--compression-level", "0"}, "1..9"},
      {{"--max-cache-size-gb", "1e400", "ls"}, "(0, 1048576]"},
      {{"--max-cache-size-gb", "0", "ls"}, "(0, 1048576]"},
      {{"--max-cache-size-gb", "nan", "ls"}, "(0, 1048576]"},
      {{"serve", dir.path(), "--repo-id", "a/b", "--port", "70000"}, "0..65535"},
      {{"fetch", "a/b", "--connections", "0"}, "1..64"},
      {{"fetch", "a/b", "--layers", "0-99999999999"}, "at most"},
      {{"config", "--set", "compression_level=12"}, "1..9"},
      {{"config", "--set", "max_cache_size_gb=-1"}, "(0, 1048576]"},
      {{"config", "--set", "nope=1"}, "unknown setting"},
      {{"ls", "--sort", "sideways"}, "sort by"},
      {{"ls", "--filter", "size>lots"}, "size"},
  };
  for (const Case& c : cases) {
    CliRun r = Cli(dir, c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args[0] << " " << c.args[1] << "\n" << r.out << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
  }
  // Nothing was removed or cached by the refused commands.
  auto ls = nlohmann::json::parse(Cli(dir, {"ls", "--json"}).out);
  ASSERT_EQ(ls.size(), 1u);
  EXPECT_EQ(ls[0]["layer_index"], 0);
}

TEST(CliArgs, GlobalOptionsBeforeOrAfterTheSubcommand) {
  TempDir dir;
  Put(dir, "m", 0);
  CliRun before = Cli(dir, {"--cache-dir", dir / "cache", "--json", "ls"}, false);
  CliRun after = Cli(dir, {"ls", "--cache-dir", dir / "cache", "--json"}, false);
  ASSERT_EQ(before.exit_code, 0) << before.err;
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(nlohmann::json::parse(before.out).size(), 1u);
  EXPECT_EQ(before.out, after.out);
}

TEST(CliArgs, ExitCodesAreTheDocumentedOnes) {
  TempDir dir;
  EXPECT_EQ(Cli(dir, {"--version"}).exit_code, 0);
  EXPECT_NE(Cli(dir, {"--version"}).out.find("layercache "), std::string::npos);
  EXPECT_EQ(Cli(dir, {"no-such-command"}).exit_code, 2);
  EXPECT_EQ(Cli(dir, {"ls", "--no-such-option"}).exit_code, 2);
  EXPECT_EQ(Cli(dir, {"get", "m", "0", "-o", dir / "x"}).exit_code, 1);  // a miss
  EXPECT_EQ(Cli(dir, {"put", "m", "0", dir / "missing.safetensors"}).exit_code, 3);
  EXPECT_EQ(Cli(dir, {"rm", "not-cached", "-y"}).exit_code, 1);
}

// ---- 3. the cache owns its settings ------------------------------------------

TEST(CliSettings, NewCacheRecordsItsSettingsAndCommandsUseThem) {
  TempDir dir;
  // Created with a 0.00005 GiB (~53 KB) budget: recorded as the cache's.
  CliRun r = Cli(dir, {"--max-cache-size-gb", "0.00005", "config", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Put(dir, "m", 0, {"--max-cache-size-gb", "0.00005"});
  auto cfg = nlohmann::json::parse(Cli(dir, {"config", "--json"}).out);
  EXPECT_EQ(cfg["max_cache_size_gb"], 0.00005);
  EXPECT_EQ(cfg["stored"], true);
  // Each entry is ~21 KB: a put without a budget uses the stored one and
  // reports what it evicted.
  for (int i = 1; i <= 3; ++i) Put(dir, "m", i);
  CliRun put = Cli(dir, {"put", "m", "4", Fixture("burn_multi_layer.safetensors")});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  EXPECT_NE(put.out.find("evicted 1 layer"), std::string::npos) << put.out;
  // Raising the stored budget: no more evictions by plain commands.
  ASSERT_EQ(Cli(dir, {"config", "--set", "max_cache_size_gb=200"}).exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(Cli(dir, {"config", "--json"}).out)["max_cache_size_gb"], 200);
  const size_t before = nlohmann::json::parse(Cli(dir, {"ls", "--json"}).out).size();
  for (int i = 5; i <= 8; ++i) Put(dir, "m", i);
  EXPECT_EQ(nlohmann::json::parse(Cli(dir, {"ls", "--json"}).out).size(), before + 4);
  // An explicit budget applies to that call only, and its evictions are reported.
  CliRun small = Cli(dir, {"--max-cache-size-gb", "0.00005", "--json", "put", "m", "9",
                           Fixture("burn_multi_layer.safetensors")});
  ASSERT_EQ(small.exit_code, 0) << small.err;
  auto j = nlohmann::json::parse(small.out);
  EXPECT_GT(j["evicted"].get<int>(), 0);
  EXPECT_GT(j["evicted_bytes"].get<int>(), 0);
  EXPECT_EQ(nlohmann::json::parse(Cli(dir, {"config", "--json"}).out)["max_cache_size_gb"], 200);
}

TEST(CliSettings, ACacheWithoutStoredSettingsIsNeverEvictedByADefault) {
  TempDir dir;
  for (int i = 0; i < 4; ++i) Put(dir, "m", i, {"--max-cache-size-gb", "1"});
  // As a cache made before settings existed.
  std::filesystem::remove(dir / "cache/settings.json");
  CliRun cfg = Cli(dir, {"config"});
  EXPECT_NE(cfg.out.find("no settings stored"), std::string::npos) << cfg.out;
  Put(dir, "m", 4);
  EXPECT_EQ(nlohmann::json::parse(Cli(dir, {"ls", "--json"}).out).size(), 5u);
  EXPECT_FALSE(std::filesystem::exists(dir / "cache/settings.json"));
  EXPECT_EQ(Cli(dir, {"optimize"}).exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(Cli(dir, {"ls", "--json"}).out).size(), 5u);
}

// ---- 5. ls, rm, prune, verify, --json everywhere --------------------------------

TEST(CliCache, LsShowsRevisionsFiltersSortsAndSummarises) {
  TempDir dir;
  Put(dir, "org/model", 0, {"--revision", "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"});
  Put(dir, "org/model", 1, {"--revision", "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"});
  Put(dir, "org/model", 1, {"--quant", "a-very-long-quantization-mode-name"});
  CliRun small = Cli(dir, {"put", "tiny", "0", Fixture("samples_f.safetensors")});
  ASSERT_EQ(small.exit_code, 0);
  CliRun ls = Cli(dir, {"ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_NE(ls.out.find("REVISION"), std::string::npos);
  EXPECT_NE(ls.out.find("1111111aaaaa"), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("just now"), std::string::npos);
  EXPECT_NE(ls.out.find("4 entries, 2 models"), std::string::npos) << ls.out;
  // Every row of the entry table has the header's column count where the
  // header begins each column.
  std::istringstream lines(ls.out);
  std::string header;
  std::getline(lines, header);
  const size_t size_col = header.find("SIZE") + 4;  // right-aligned: ends where SIZE ends
  std::string row;
  while (std::getline(lines, row) && !row.empty()) {
    ASSERT_GE(row.size(), size_col) << row;
    EXPECT_TRUE(row.substr(size_col - 1, 1) == "B") << "misaligned: " << row << "\n" << header;
  }
  auto big = nlohmann::json::parse(Cli(dir, {"ls", "--json", "--filter", "size>10K"}).out);
  EXPECT_EQ(big.size(), 3u);
  auto one = nlohmann::json::parse(
      Cli(dir, {"ls", "--json", "--filter", "model=org/*", "--filter", "revision=2222222"}).out);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0]["layer_index"], 1);
  auto sorted = nlohmann::json::parse(Cli(dir, {"ls", "--json", "--sort", "size:asc"}).out);
  EXPECT_EQ(sorted[0]["model_id"], "tiny");
  EXPECT_TRUE(
      nlohmann::json::parse(Cli(dir, {"ls", "--json", "--filter", "accessed>1d"}).out).empty());
  auto models = nlohmann::json::parse(Cli(dir, {"ls", "--models", "--json"}).out);
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0]["model_id"], "org/model");
  EXPECT_EQ(models[0]["entries"], 3);
  CliRun q = Cli(dir, {"ls", "-q", "--filter", "model=tiny"});
  EXPECT_EQ(q.out, sorted[0]["id"].get<std::string>() + "\n");
}

TEST(CliCache, RmByModelLayerRevisionQuantWithDryRun) {
  TempDir dir;
  Put(dir, "org/model", 0, {"--revision", "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"});
  Put(dir, "org/model", 1, {"--revision", "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"});
  Put(dir, "org/model", 1, {"--revision", "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"});
  Put(dir, "org/model", 1,
      {"--quant", "int8", "--quantize"});  // a plain file under int8 is refused
  Put(dir, "other", 0);
  auto count = [&] { return nlohmann::json::parse(Cli(dir, {"ls", "--json"}).out).size(); };
  CliRun dry = Cli(dir, {"rm", "org/model", "--revision", "1111111", "--dry-run", "--json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  auto j = nlohmann::json::parse(dry.out);
  EXPECT_EQ(j["entries"].size(), 2u);
  EXPECT_EQ(j["removed"], 0);
  EXPECT_GT(j["would_free_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(count(), 5u);
  CliRun rm = Cli(dir, {"rm", "org/model", "--revision", "1111111", "--layers", "1", "-y"});
  EXPECT_NE(rm.out.find("removed 1 entries, freed"), std::string::npos) << rm.out;
  EXPECT_EQ(count(), 4u);
  rm = Cli(dir, {"rm", "org/model", "--quant", "int8", "-y", "--json"});
  EXPECT_EQ(nlohmann::json::parse(rm.out)["removed"], 1);
  const std::string id =
      nlohmann::json::parse(Cli(dir, {"ls", "--json", "--filter", "model=other"}).out)[0]["id"];
  rm = Cli(dir, {"rm", id, "-y"});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_EQ(count(), 2u);
  EXPECT_EQ(Cli(dir, {"rm", "--revision", "12", "org/model"}).exit_code, 2);
}

TEST(CliCache, PruneRemovesOldUnreferencedRevisionsAndStaleEntries) {
  TempDir dir;
  Put(dir, "org/model", 0, {"--revision", "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"});
  Put(dir, "org/model", 1, {"--revision", "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"});
  Put(dir, "org/model", 0, {"--revision", "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"});
  Put(dir, "local", 0);
  CliRun dry = Cli(dir, {"prune", "--dry-run", "--json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  auto j = nlohmann::json::parse(dry.out);
  ASSERT_EQ(j["entries"].size(), 2u);
  for (const auto& e : j["entries"])
    EXPECT_EQ(e["revision"], "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  // A branch still pointing at the old commit keeps it.
  std::filesystem::create_directories(dir / "cache/refs");
  {
    std::ofstream(dir / "cache/refs/0123456789abcdef")
        << "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  }
  EXPECT_TRUE(
      nlohmann::json::parse(Cli(dir, {"prune", "--dry-run", "--json"}).out)["entries"].empty());
  std::filesystem::remove(dir / "cache/refs/0123456789abcdef");
  // Unreadable records: prune refuses, rather than treating every revision
  // as unreferenced, and removes nothing.
  std::filesystem::create_directories(dir / "cache/refs/not-a-record");
  CliRun refused = Cli(dir, {"prune", "-y"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("revision records"), std::string::npos) << refused.err;
  EXPECT_EQ(nlohmann::json::parse(Cli(dir, {"ls", "--json"}).out).size(), 4u);
  std::filesystem::remove(dir / "cache/refs/not-a-record");
  CliRun prune = Cli(dir, {"prune", "-y"});
  EXPECT_NE(prune.out.find("removed 2 entries"), std::string::npos) << prune.out;
  // Nothing is older than a day; everything is older than 0 seconds... after a second.
  EXPECT_TRUE(
      nlohmann::json::parse(Cli(dir, {"prune", "--older-than", "1d", "--json"}).out)["entries"]
          .empty());
  EXPECT_EQ(Cli(dir, {"prune", "--older-than", "soon"}).exit_code, 2);
}

TEST(CliCache, VerifyScopedToAModelWithJson) {
  TempDir dir;
  Put(dir, "a", 0);
  Put(dir, "b", 0);
  auto entries = nlohmann::json::parse(Cli(dir, {"ls", "--json", "--filter", "model=b"}).out);
  const std::string path = entries[0]["path"];
  auto bytes = testing::ReadBytes(path);
  bytes[bytes.size() - 3] ^= std::byte{1};
  testing::WriteBytes(path, bytes);
  CliRun a = Cli(dir, {"verify", "a", "--json"});
  EXPECT_EQ(a.exit_code, 0) << a.out;
  EXPECT_EQ(nlohmann::json::parse(a.out)["checked"], 1);
  CliRun b = Cli(dir, {"verify", "b", "--json"});
  EXPECT_EQ(b.exit_code, 1);
  auto j = nlohmann::json::parse(b.out);
  ASSERT_EQ(j["corrupted"].size(), 1u);
  EXPECT_EQ(j["corrupted"][0]["model_id"], "b");
}

TEST(CliCache, EveryReportingCommandPrintsJson) {
  TempDir dir;
  const std::string f = Fixture("burn_multi_layer.safetensors");
  std::vector<std::vector<std::string>> commands = {
      {"put", "m", "0", f},
      {"put", "m", "1", f},
      {"stats"},
      {"ls"},
      {"ls", "--models"},
      {"verify"},
      {"config"},
      {"inspect", f},
      {"optimize"},
      {"invalidate", "m", "--layer", "1"},
      {"rm", "m", "--dry-run"},
      {"prune"},
      {"clear"},
  };
  for (auto args : commands) {
    args.push_back("--json");
    CliRun r = Cli(dir, args);
    ASSERT_EQ(r.exit_code, 0) << args[0] << ": " << r.err;
    EXPECT_TRUE(nlohmann::json::accept(r.out)) << args[0] << ": " << r.out;
  }
}

}  // namespace
}  // namespace layercache
