// Power loss, simulated as RocksDB's FaultInjectionTestFS does (see
// power_loss_env.h): a child process runs a workload on a disk tier whose
// every file operation, SQLite's included, goes through a PowerLossEnv; at
// its Nth operation the power goes (what was not made durable by an fsync is
// dropped, or a random prefix of it kept, the last write possibly torn) and
// the child dies. The parent then reopens the cache as a rebooted machine
// would and checks:
//
//   - only bytes that were put are served, for each key one of the versions
//     the history allows (the last acknowledged one, or the one in flight);
//   - no entry is lost that `Put` reported done (unless a later put may
//     have evicted it), and no entry that `Invalidate` reported removed comes
//     back;
//   - `optimize` then leaves `verify` clean, no temp file, the budget kept;
//   - the index is rebuildable: deleted, it is rebuilt from the entry files
//     and the same keys are served with the same bytes.
//
// The workload: an index rebuild (the child starts by deleting the index),
// four rounds of puts of a new version of 10 keys under a budget of 6.5
// entries (so evictions happen), invalidations, and an optimize.
//
// Each fsync of the cache is needed; removing one makes this test fail
// (tried, one at a time, on a run of 383 power losses; failures counted):
//   - src/disk/disk_tier.cc, Put: `(*file)->Sync()` of the entry file before
//     its rename: renames made durable by the directory fsync expose entry
//     files whose bytes were lost: 221 failures, "acknowledged put lost" and
//     reads of 0-byte entries reported as corruption (never served).
//   - src/disk/disk_tier.cc, Put: `env_->SyncDir(dir)` after the rename: the
//     new name is lost: 62 failures, "acknowledged put lost" (and once the
//     replaced version served again).
//   - src/disk/disk_tier.cc, RemoveLocked (invalidate): `env_->SyncDir(...)`
//     after removing the entry file: 453 failures, "an invalidated or evicted
//     entry came back".
//   - src/disk/disk_tier.cc, SyncRemovals (evictions, two call sites): 207
//     failures, "an invalidated or evicted entry came back".
// The last two did not exist: this test found that invalidations and
// evictions were not durable, so that an invalidated version came back after
// a power loss.
// SQLite's own syncs (WAL, checkpoint) are SQLite's: with
// `PRAGMA synchronous=NORMAL` a commit may be lost at power loss, which the
// cache tolerates (reads find entries by name; reconciliation re-indexes).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "disk/disk_tier.h"
#include "power_loss_env.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::PowerLossEnv;
using testing::SeedOf;
using testing::TempDir;

constexpr int kKeys = 10;
constexpr int kRounds = 4;

DiskTierOptions Opts(const std::string& root, Env* env, uint64_t capacity) {
  DiskTierOptions o;
  o.cache_dir = root;
  o.capacity_bytes = capacity;
  o.env = env;
  return o;
}

LayerKey K(int64_t i) { return LayerKey{"power", i, "", ""}; }
LayerPtr Version(int k, int v) { return MakeLayer(SeedOf("power", k, v), 2048); }

void RemoveIndex(const std::string& root) {
  for (const char* f : {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm"})
    std::filesystem::remove(std::filesystem::path(root) / f);
}

// One line per event, appended with write(2): the page cache keeps it when
// the process dies, and it is not part of the cache's directory.
class AckLog {
 public:
  explicit AckLog(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644)) {}
  ~AckLog() { ::close(fd_); }
  void operator()(const std::string& line) {
    const std::string l = line + "\n";
    if (::write(fd_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) ::_exit(3);
  }

 private:
  int fd_;
};

// After each completed operation: "s" and the keys the index lists (a read:
// no crash point), which is what the history promises from then on.
void LogPresent(DiskTier& tier, AckLog& ack) {
  auto rows = tier.List();
  if (!rows.ok()) return ack("fail list " + rows.status().ToString());
  std::string line = "s";
  for (const IndexRow& row : *rows) line += " " + std::to_string(row.key.layer_index);
  ack(line);
}

void Workload(const std::string& root, PowerLossEnv* env, uint64_t capacity, AckLog& ack) {
  ack("b open");
  auto tier = DiskTier::Open(Opts(root, env, capacity));
  if (!tier.ok()) {
    ack("fail open " + tier.status().ToString());
    return;
  }
  ack("open");
  LogPresent(**tier, ack);
  for (int round = 0; round < kRounds; ++round) {
    for (int k = 0; k < kKeys; ++k) {
      ack("b put " + std::to_string(k) + " " + std::to_string(round));
      Status s = (*tier)->Put(K(k), Version(k, round));
      ack(s.ok() ? "put " + std::to_string(k) + " " + std::to_string(round)
                 : "fail put " + s.ToString());
      LogPresent(**tier, ack);
      if (k % 4 == round % 4) {
        ack("b inv " + std::to_string(k));
        auto n = (*tier)->Invalidate(std::string("power"), k);
        ack(n.ok() ? "inv " + std::to_string(k) : "fail inv " + n.status().ToString());
        LogPresent(**tier, ack);
      }
    }
  }
  ack("b opt");
  auto r = (*tier)->Optimize();
  ack(r.ok() ? "opt" : "fail opt " + r.status().ToString());
  LogPresent(**tier, ack);
}

// Runs the workload in a child that loses power at its `crash_at`th
// operation (0: never; then it writes its operation count to `count`).
int RunChild(const std::string& root, uint64_t capacity, int crash_at, PowerLossEnv::Mode mode,
             const std::string& acks, const std::string& count) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    RemoveIndex(root);  // the workload begins with a rebuild
    PowerLossEnv env(root);
    testing::InstallPowerLossSqliteVfs(&env);
    env.CrashAt(crash_at, mode, static_cast<uint64_t>(crash_at) * 7919u);
    {
      AckLog ack(acks);
      Workload(root, &env, capacity, ack);
    }
    std::FILE* f = std::fopen(count.c_str(), "w");
    if (f != nullptr) {
      std::fprintf(f, "%d\n", env.mutating_ops());
      std::fclose(f);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// What the history of acknowledged operations allows for each key.
struct Expectation {
  std::vector<int> state = std::vector<int>(kKeys, -1);  // version, -1: absent
  std::optional<int> inflight_key;
  int inflight_version = -1;     // -1: an invalidation
  bool inflight_evicts = false;  // a put, an open or an optimize: may evict
  std::vector<std::string> failures;
};

Expectation Replay(const std::vector<int>& before, const std::string& acks) {
  Expectation e;
  e.state = before;
  std::vector<int> last_put = before;
  std::ifstream in(acks);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string w, what;
    words >> w;
    if (w == "fail") {
      e.failures.push_back(line);
    } else if (w == "b") {
      words >> what;
      e.inflight_key.reset();
      e.inflight_evicts = what != "inv";
      if (what == "put") {
        int k, v;
        words >> k >> v;
        e.inflight_key = k;
        e.inflight_version = v;
      } else if (what == "inv") {
        int k;
        words >> k;
        e.inflight_key = k;
        e.inflight_version = -1;
      }
    } else if (w == "put") {
      int k, v;
      words >> k >> v;
      last_put[k] = v;
    } else if (w == "s") {
      // Completed: what the index lists is what must survive.
      std::vector<int> present(kKeys, -1);
      int k;
      while (words >> k) present[k] = last_put[k];
      e.state = present;
      e.inflight_key.reset();
      e.inflight_evicts = false;
    }
  }
  return e;
}

// The version of key k that `layer` holds; -2 when it is none of them.
int WhichVersion(int k, const Layer& layer) {
  for (int v = 0; v < kRounds; ++v)
    if (layer.ContentEquals(*Version(k, v))) return v;
  return -2;
}

// Reads every key: its version, -1 for a miss; failures are reported.
std::vector<int> Served(DiskTier& tier, int n, const char* when) {
  std::vector<int> served(kKeys, -1);
  for (int k = 0; k < kKeys; ++k) {
    auto layer = tier.Get(K(k));
    if (!layer.ok()) {
      EXPECT_TRUE(layer.status().IsNotFound())
          << "power loss at op " << n << ", " << when << ": key " << k << ": "
          << layer.status().ToString();
      continue;
    }
    served[k] = WhichVersion(k, **layer);
    EXPECT_NE(served[k], -2) << "power loss at op " << n << ", " << when << ": key " << k
                             << ": served bytes that were never put";
  }
  return served;
}

TEST(PowerLoss, AtHundredsOfPointsNothingUnsyncedIsTrustedAndNothingAcknowledgedIsLost) {
  TempDir dir;
  const std::string root = dir / "cache";
  const std::string acks = dir / "acks";
  const std::string count_file = dir / "ops";
  const uint64_t entry = 8 + 4088 + Version(0, 0)->nbytes();
  const uint64_t capacity = 6 * entry + entry / 2;
  ASSERT_TRUE(DiskTier::Open(Opts(root, Env::Default(), capacity)).ok());

  ASSERT_EQ(RunChild(root, capacity, 0, PowerLossEnv::Mode::kDropUnsynced, acks, count_file), 0);
  int total_ops = 0;
  {
    std::FILE* f = std::fopen(count_file.c_str(), "r");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fscanf(f, "%d", &total_ops), 1);
    std::fclose(f);
  }
  ASSERT_GT(total_ops, 300) << "the workload must offer hundreds of crash points";
  // Every one of the first 150 operations (the rebuild, the first puts),
  // then evenly spaced ones to the end (evictions, invalidations, optimize).
  std::vector<int> points;
  for (int n = 1; n <= 150; ++n) points.push_back(n);
  const int stride = std::max(1, (total_ops - 150) / 200);
  for (int n = 150 + stride; n <= total_ops; n += stride) points.push_back(n);

  // What the cache held when the child started: all of it durable.
  std::vector<int> before;
  {
    auto tier = DiskTier::Open(Opts(root, Env::Default(), capacity));
    ASSERT_TRUE(tier.ok());
    before = Served(**tier, 0, "after the run without a crash");
  }
  int lost_power = 0, dropped = 0, prefixes = 0, missing_allowed = 0;
  for (const int n : points) {
    const auto mode =
        n % 2 == 0 ? PowerLossEnv::Mode::kDropUnsynced : PowerLossEnv::Mode::kRandomPrefix;
    const int status = RunChild(root, capacity, n, mode, acks, count_file);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "op " << n << ": the child was to lose power; status " << status;
    ++lost_power;
    ++(mode == PowerLossEnv::Mode::kDropUnsynced ? dropped : prefixes);
    const Expectation e = Replay(before, acks);
    EXPECT_TRUE(e.failures.empty()) << "op " << n << ": " << e.failures.front();

    // The reboot: reopen and read every key.
    auto tier = DiskTier::Open(Opts(root, Env::Default(), capacity));
    ASSERT_TRUE(tier.ok()) << "after power loss at op " << n << ": " << tier.status().ToString();
    std::vector<int> served = Served(**tier, n, "after reboot");
    for (int k = 0; k < kKeys; ++k) {
      const bool inflight = e.inflight_key == k;
      if (served[k] >= 0) {
        const bool allowed =
            served[k] == e.state[k] || (inflight && served[k] == e.inflight_version);
        EXPECT_TRUE(allowed || e.state[k] >= 0 || inflight)
            << "power loss at op " << n << ": key " << k
            << ": an invalidated or evicted entry came back (version " << served[k] << ")";
        EXPECT_TRUE(allowed || e.state[k] < 0)
            << "power loss at op " << n << ": key " << k << ": served version " << served[k]
            << ", but the last acknowledged put was version " << e.state[k];
      } else if (e.state[k] >= 0) {
        const bool allowed = e.inflight_evicts || inflight;
        EXPECT_TRUE(allowed) << "power loss at op " << n << ": key " << k
                             << ": acknowledged put lost (version " << e.state[k] << ")";
        if (allowed) ++missing_allowed;
      }
    }
    // Repair, then verify.
    auto report = (*tier)->Optimize();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    auto corrupt = (*tier)->Verify();
    ASSERT_TRUE(corrupt.ok());
    EXPECT_TRUE(corrupt->empty()) << "power loss at op " << n << ": verify after optimize";
    EXPECT_TRUE(std::filesystem::is_empty(root + "/tmp"))
        << "power loss at op " << n << ": a temp file survived optimize";
    auto totals = (*tier)->Totals();
    ASSERT_TRUE(totals.ok());
    EXPECT_LE(totals->file_bytes, capacity) << "power loss at op " << n;
    // Entries whose eviction the power loss undid are over the budget:
    // optimize evicts again; nothing else changes.
    std::vector<int> after_optimize = Served(**tier, n, "after optimize");
    for (int k = 0; k < kKeys; ++k)
      EXPECT_TRUE(after_optimize[k] == served[k] || after_optimize[k] == -1)
          << "power loss at op " << n << ": key " << k << ": optimize changed version " << served[k]
          << " to " << after_optimize[k];
    served = after_optimize;
    auto listed = (*tier)->List();
    ASSERT_TRUE(listed.ok());
    EXPECT_EQ(listed->size(), static_cast<size_t>(std::count_if(served.begin(), served.end(),
                                                                [](int v) { return v >= 0; })))
        << "power loss at op " << n << ": after optimize the index lists every entry";
    tier->reset();
    // The index is rebuildable from the entry files.
    RemoveIndex(root);
    auto rebuilt = DiskTier::Open(Opts(root, Env::Default(), capacity));
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().ToString();
    EXPECT_EQ(Served(**rebuilt, n, "after an index rebuild"), served)
        << "power loss at op " << n << ": the rebuilt index serves other bytes";
    before = served;
  }
  EXPECT_GE(lost_power, 300);
  std::printf(
      "power lost at %d points of a workload of %d operations (SQLite's included): %d dropping "
      "everything unsynced, %d keeping a random prefix; %d entries legitimately gone (evicted "
      "or in flight)\n",
      lost_power, total_ops, dropped, prefixes, missing_allowed);
}

}  // namespace
}  // namespace layercache
