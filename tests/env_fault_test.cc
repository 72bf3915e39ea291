// Fault injection through the public LayerCache (LayerCacheOptions::env):
// every read path of an entry (plain read(), O_DIRECT, mappings), lock files,
// the index (through the Env's SQLite VFS), the Hub's revision records and
// model refs, checkpoint reads, and a full disk during a put. Each fault gives
// a clear error (a Status, an exception or a logged warning naming it), no
// wrong bytes are ever served, nothing acknowledged is lost, and `verify` is
// clean once the fault is gone.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "fault_env.h"
#include "layercache/layer_cache.h"
#include "layercache/logging.h"
#include "layercache/synthetic_model.h"
#include "mock_hub.h"
#include "sqlite_crash_vfs.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::FaultInjectionEnv;
using testing::FaultOp;
using testing::MakeLayer;
using testing::Residency;
using testing::TempDir;

// Collects the warnings the library logs while it lives.
class LogCapture {
 public:
  LogCapture() {
    SetLogSink([this](LogLevel level, const std::string& message) {
      if (level < LogLevel::kWarn) return;
      std::lock_guard lock(mu_);
      lines_.push_back(message);
    });
  }
  ~LogCapture() { SetLogSink(nullptr); }
  bool Has(const std::string& a, const std::string& b = "") {
    std::lock_guard lock(mu_);
    for (const std::string& l : lines_) {
      if (l.find(a) != std::string::npos && l.find(b) != std::string::npos) return true;
    }
    return false;
  }
  std::string All() {
    std::lock_guard lock(mu_);
    std::string out;
    for (const std::string& l : lines_) out += l + "\n";
    return out;
  }
  void Clear() {
    std::lock_guard lock(mu_);
    lines_.clear();
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

LayerCacheOptions Opts(const TempDir& dir, Env* env, DiskReadMode mode = DiskReadMode::kAuto) {
  LayerCacheOptions o;
  o.cache_dir = dir / "cache";
  o.max_cache_size_gb = 1;
  o.max_memory_cache_size_gb = 0;  // every get reads the disk entry
  o.disk_read_mode = mode;
  o.env = env;
  return o;
}

LayerKey K(int64_t i) { return LayerKey{"envfault", i, "", ""}; }

bool NoTempFiles(const TempDir& dir) {
  std::error_code ec;
  return std::filesystem::is_empty(dir / "cache/tmp", ec) && !ec;
}

// One read path, the residency that steers the reader onto it, the layer size
// it needs, and the fault to inject there.
enum class Path { kPlain, kDirect, kPopulate, kMapped };

struct ReadCase {
  const char* name;
  DiskReadMode mode;
  Residency residency;
  uint64_t bytes;
  Path path;
  FaultOp fault;
  int err;
  // How a get under the fault ends: a miss with a warning naming the fault
  // (an I/O error), a miss counted as a checksum failure (bad bytes caught),
  // or the right layer (the reader took another way).
  enum Outcome { kIoError, kCorrupt, kServed } outcome;
  const char* says;  // in the warning of an I/O error
};

uint64_t PathCount(const FaultInjectionEnv& env, Path path) {
  switch (path) {
    case Path::kPlain:
      return env.plain_reads();
    case Path::kDirect:
      return env.direct_reads();
    case Path::kPopulate:
      return env.map_reads();
    case Path::kMapped:
      return env.mappings();
  }
  return 0;
}

TEST(EnvFaults, ReadFaultsOnThePlainDirectAndMappedPathsNeverServeWrongBytes) {
  constexpr uint64_t kMiB = 1u << 20;
  using R = ReadCase;
  const ReadCase cases[] = {
      // Entries under 1 MiB: one read().
      {"plain EIO", DiskReadMode::kAuto, Residency::kReal, 64 << 10, Path::kPlain, FaultOp::kRead,
       EIO, R::kIoError, "injected fault"},
      {"plain short read", DiskReadMode::kAuto, Residency::kReal, 64 << 10, Path::kPlain,
       FaultOp::kShortRead, 0, R::kIoError, "file ends at byte"},
      // Through the page cache, in chunks (buffered mode).
      {"buffered EIO", DiskReadMode::kBuffered, Residency::kNone, 12 * kMiB, Path::kPlain,
       FaultOp::kRead, EIO, R::kIoError, "injected fault"},
      {"buffered short read", DiskReadMode::kBuffered, Residency::kNone, 12 * kMiB, Path::kPlain,
       FaultOp::kShortRead, 0, R::kIoError, "file ends at byte"},
      // Not cached, under 16 MiB (auto) or any size (direct): O_DIRECT.
      {"direct EIO", DiskReadMode::kAuto, Residency::kNone, 12 * kMiB, Path::kDirect,
       FaultOp::kDirectRead, EIO, R::kIoError, "injected fault"},
      {"direct short read", DiskReadMode::kDirect, Residency::kNone, 20 * kMiB, Path::kDirect,
       FaultOp::kShortRead, 0, R::kIoError, "file ends at byte"},
      // Not cached, 16 MiB and more (auto): mapped, pages read in.
      {"populate EIO", DiskReadMode::kAuto, Residency::kNone, 20 * kMiB, Path::kPopulate,
       FaultOp::kMapRead, EIO, R::kIoError, "injected fault"},
      {"populate past the end", DiskReadMode::kAuto, Residency::kNone, 20 * kMiB, Path::kPopulate,
       FaultOp::kShortRead, 0, R::kIoError, "ends before them"},
      {"populate mapping refused", DiskReadMode::kAuto, Residency::kNone, 20 * kMiB,
       Path::kPopulate, FaultOp::kMapRefused, ENOMEM, R::kServed, ""},
      // Cached: the whole entry mapped (16 MiB and more), or chunks copied out
      // of a mapping.
      {"mapped, corrupt page", DiskReadMode::kAuto, Residency::kAll, 20 * kMiB, Path::kMapped,
       FaultOp::kMapCorrupt, 0, R::kCorrupt, ""},
      {"copied from a mapping, corrupt page", DiskReadMode::kAuto, Residency::kAll, 12 * kMiB,
       Path::kMapped, FaultOp::kMapCorrupt, 0, R::kCorrupt, ""},
      {"mapping refused", DiskReadMode::kMapped, Residency::kAll, 20 * kMiB, Path::kMapped,
       FaultOp::kMapRefused, ENOMEM, R::kServed, ""},
  };
  for (const ReadCase& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    FaultInjectionEnv env;
    LogCapture log;
    LayerCache cache(Opts(dir, &env, c.mode));
    const LayerPtr layer = MakeLayer(7, c.bytes);
    ASSERT_TRUE(cache.cache_layer_status(K(1), layer).ok());
    env.SetResidency(c.residency);

    // The path is really taken: a clean read goes through it.
    const uint64_t before = PathCount(env, c.path);
    LayerPtr clean = cache.get_layer(K(1));
    ASSERT_NE(clean, nullptr);
    ASSERT_TRUE(clean->ContentEquals(*layer));
    ASSERT_GT(PathCount(env, c.path), before) << "the read did not take the intended path";

    env.FailOn(c.fault, c.err, "/entries/");
    const uint64_t failures = cache.get_stats().checksum_failures;
    LayerPtr got = cache.get_layer(K(1));
    EXPECT_GT(env.faults_injected(), 0);
    switch (c.outcome) {
      case ReadCase::kIoError:
        EXPECT_EQ(got, nullptr);
        // EIO is named as the injected fault; a short read as the short
        // file it looks like.
        EXPECT_TRUE(log.Has(c.says, "envfault")) << log.All();
        EXPECT_EQ(cache.get_stats().checksum_failures, failures)
            << "an I/O error is not corruption";
        break;
      case ReadCase::kCorrupt:
        EXPECT_EQ(got, nullptr) << "bad bytes were served";
        EXPECT_EQ(cache.get_stats().checksum_failures, failures + 1);
        break;
      case ReadCase::kServed:
        ASSERT_NE(got, nullptr);
        EXPECT_TRUE(got->ContentEquals(*layer));
        break;
    }
    if (got != nullptr) {
      EXPECT_TRUE(got->ContentEquals(*layer)) << "wrong bytes served";
    }

    // get_or_load under the fault: the loader's layer, or a clear error;
    // never other bytes.
    std::atomic<int> loads{0};
    auto loaded = cache.get_or_load(K(1), [&]() -> Result<LayerPtr> {
      ++loads;
      return layer;
    });
    if (loaded.ok()) {
      EXPECT_TRUE((*loaded)->ContentEquals(*layer));
    } else {
      EXPECT_EQ(loaded.status().code(), StatusCode::kIOError) << loaded.status().ToString();
    }

    env.Clear();
    env.SetResidency(Residency::kReal);
    // An I/O error loses nothing: the entry is still there (or was written
    // again by the loader); a corrupt read dropped it and the loader put it
    // back. Either way the right bytes, and a clean cache.
    LayerPtr after = cache.get_layer(K(1));
    ASSERT_NE(after, nullptr);
    EXPECT_TRUE(after->ContentEquals(*layer));
    EXPECT_TRUE(cache.verify_cache_integrity().empty());
    EXPECT_TRUE(NoTempFiles(dir));
  }
}

TEST(EnvFaults, LockFileFaultsAreReportedAndLoseNothing) {
  TempDir dir;
  FaultInjectionEnv env;
  // Opening the cache takes a lock: a lock file that cannot be opened fails
  // the constructor with the reason.
  env.FailOn(FaultOp::kLockOpen, EACCES);
  try {
    LayerCache cache(Opts(dir, &env));
    ADD_FAILURE() << "the cache opened without its lock file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open lock file"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("injected fault"), std::string::npos) << e.what();
  }
  env.Clear();

  LayerCache cache(Opts(dir, &env));
  const LayerPtr first = MakeLayer(1, 256 << 10);
  ASSERT_TRUE(cache.cache_layer_status(K(1), first).ok());
  ASSERT_GT(env.locks(), 0u) << "lock files do not go through the Env";

  for (FaultOp op : {FaultOp::kLockOpen, FaultOp::kLock}) {
    SCOPED_TRACE(op == FaultOp::kLock ? "lock" : "open lock file");
    env.FailOn(op, op == FaultOp::kLock ? ENOLCK : EIO);
    // A put needs the key's lock: a clear error, nothing written.
    Status put = cache.cache_layer_status(K(2), MakeLayer(2, 256 << 10));
    EXPECT_FALSE(put.ok());
    EXPECT_NE(put.message().find("injected fault"), std::string::npos) << put.ToString();
    // A load needs it too (single-flight across processes).
    auto loaded = cache.get_or_load(K(3), [] { return Result<LayerPtr>(MakeLayer(3, 4096)); });
    if (loaded.ok()) {
      EXPECT_TRUE((*loaded)->ContentEquals(*MakeLayer(3, 4096)));
    } else {
      EXPECT_NE(loaded.status().message().find("injected fault"), std::string::npos)
          << loaded.status().ToString();
    }
    // What was cached is still served.
    LayerPtr got = cache.get_layer(K(1));
    ASSERT_NE(got, nullptr);
    EXPECT_TRUE(got->ContentEquals(*first));
    env.Clear();
  }
  EXPECT_GT(env.faults_injected(), 0);
  ASSERT_TRUE(cache.cache_layer_status(K(2), MakeLayer(2, 256 << 10)).ok());
  EXPECT_TRUE(cache.get_layer(K(2))->ContentEquals(*MakeLayer(2, 256 << 10)));
  EXPECT_TRUE(cache.get_layer(K(1))->ContentEquals(*first));
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
  EXPECT_TRUE(NoTempFiles(dir));
}

TEST(EnvFaults, AFullDiskDuringAPutIsReportedAndTheOldVersionSurvives) {
  for (FaultOp op : {FaultOp::kCreate, FaultOp::kAppend, FaultOp::kShortAppend}) {
    SCOPED_TRACE(static_cast<int>(op));
    TempDir dir;
    FaultInjectionEnv env;
    LayerCache cache(Opts(dir, &env));
    const LayerPtr v1 = MakeLayer(10, 2 << 20);
    ASSERT_TRUE(cache.cache_layer_status(K(1), v1).ok());
    env.FailOn(op, ENOSPC, "/cache/");
    Status s = cache.cache_layer_status(K(1), MakeLayer(11, 2 << 20));
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kNoSpace) << s.ToString();
    EXPECT_NE(s.message().find("envfault/1"), std::string::npos) << s.ToString();
    EXPECT_FALSE(cache.cache_layer(K(2), MakeLayer(12, 4096)));
    env.Clear();
    LayerPtr got = cache.get_layer(K(1));
    ASSERT_NE(got, nullptr);
    EXPECT_TRUE(got->ContentEquals(*v1)) << "a failed replacement lost the old version";
    EXPECT_EQ(cache.get_layer(K(2)), nullptr);
    EXPECT_TRUE(NoTempFiles(dir));
    EXPECT_TRUE(cache.verify_cache_integrity().empty());
    EXPECT_GE(cache.get_stats().disk_write_errors, 2u);
    ASSERT_TRUE(cache.cache_layer_status(K(2), MakeLayer(12, 4096)).ok());
  }
}

TEST(EnvFaults, IndexWritesGoThroughTheEnvsSqliteVfs) {
  TempDir dir;
  FaultInjectionEnv env;
  testing::ScopedFaultSqliteVfs vfs(&env);  // outlives the cache below
  const LayerPtr kept = MakeLayer(20, 64 << 10);
  {
    LayerCache cache(Opts(dir, &env));
    ASSERT_TRUE(cache.cache_layer_status(K(1), kept).ok());
    const int ops = env.mutating_ops();
    ASSERT_TRUE(cache.cache_layer_status(K(9), MakeLayer(29, 4096)).ok());
    ASSERT_TRUE(cache.remove_entry(K(9)));
    EXPECT_GT(env.mutating_ops(), ops);
    env.FailOn(FaultOp::kSqlite, ENOSPC);
    Status s = cache.cache_layer_status(K(2), MakeLayer(21, 64 << 10));
    EXPECT_FALSE(s.ok()) << "an index write failed unseen";
    EXPECT_GT(env.faults_injected(), 0) << "the index does not use the Env's VFS";
    LayerPtr got = cache.get_layer(K(1));
    ASSERT_NE(got, nullptr);
    EXPECT_TRUE(got->ContentEquals(*kept));
    env.Clear();
  }
  LayerCache reopened(Opts(dir, &env));
  LayerPtr got = reopened.get_layer(K(1));
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(got->ContentEquals(*kept));
  EXPECT_TRUE(reopened.verify_cache_integrity().empty());
}

TEST(EnvFaults, CheckpointReadFaultsFailTheImportWithTheReason) {
  TempDir model;
  SyntheticModelSpec spec;
  spec.num_layers = 3;
  ASSERT_TRUE(WriteSyntheticModel(model.path(), spec).ok());
  TempDir dir;
  FaultInjectionEnv env;
  LayerCache cache(Opts(dir, &env));
  env.FailOn(FaultOp::kRead, EIO, model.path());
  try {
    cache.import_checkpoint(model.path(), "ckpt");
    ADD_FAILURE() << "the import read its checkpoint past a fault";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("injected fault"), std::string::npos) << e.what();
  }
  EXPECT_GT(env.faults_injected(), 0) << "checkpoint reads do not go through the Env";
  env.Clear();
  EXPECT_EQ(cache.import_checkpoint(model.path(), "ckpt", {0, 1, 2}, "", false), 3u);
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

TEST(EnvFaults, AFailingRevisionRecordIsLoggedAndTheDownloadStillServed) {
  TempDir model;
  SyntheticModelSpec spec;
  spec.num_layers = 2;
  ASSERT_TRUE(WriteSyntheticModel(model.path(), spec).ok());
  testing::MockHub hub("acme/faulty", model.path());
  DownloadOptions online;
  online.endpoint = hub.endpoint();
  online.quiet = true;
  DownloadOptions offline = online;
  offline.offline = true;

  TempDir dir;
  FaultInjectionEnv env;
  LogCapture log;
  LayerCache cache(Opts(dir, &env));
  // Both records of the commit (the Hub's refs/ and model-refs/) fail.
  env.FailOn(FaultOp::kCreate, ENOSPC, "refs/");
  auto layer = cache.download_and_cache_status("faulty", 0, "acme/faulty", "", online);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_GT(env.faults_injected(), 0) << "the Hub's records do not go through the Env";
  EXPECT_TRUE(log.Has("cannot record", "injected fault")) << log.All();
  // Offline, the cache cannot know which commit "main" was: it says so.
  auto off = cache.download_and_cache_status("faulty", 0, "acme/faulty", "", offline);
  EXPECT_FALSE(off.ok());
  EXPECT_NE(off.status().message().find("no record"), std::string::npos) << off.status().ToString();
  env.Clear();
  // Recorded once the disk works again.
  ASSERT_TRUE(cache.download_and_cache_status("faulty", 1, "acme/faulty", "", online).ok());
  auto again = cache.download_and_cache_status("faulty", 0, "acme/faulty", "", offline);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)->ContentEquals(**layer));
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

}  // namespace
}  // namespace layercache
