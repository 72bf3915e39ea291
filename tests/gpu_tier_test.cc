// The GPU tier's logic on the simulated device (tests/sim_device.h): copies,
// budgets and eviction, the pinned staging pool, the order of reads and
// copies in the disk -> device pipeline, and faults. Runs everywhere.
#include "gpu/gpu_tier.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>

#include "disk/disk_tier.h"
#include "gpu/device_runtime.h"
#include "layercache/layer_cache.h"
#include "sim_device.h"
#include "test_layers.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::SimDevice;
using testing::TempDir;

constexpr uint64_t kMiB = 1u << 20;

LayerKey Key(int64_t i) { return LayerKey{"sim-model", i, "none", "r1"}; }

// The device bytes of `layer`, copied back.
std::vector<std::byte> DeviceBytes(SimDevice& sim, const DeviceLayer& layer) {
  std::vector<std::byte> out(layer.nbytes());
  EXPECT_TRUE(sim.CopyToHost(layer.device(), out.data(), layer.data(), out.size()).ok());
  return out;
}

bool SameBytes(SimDevice& sim, const DeviceLayer& d, const Layer& h) {
  auto bytes = DeviceBytes(sim, d);
  return d.nbytes() == h.nbytes() && std::memcmp(bytes.data(), h.data(), h.nbytes()) == 0;
}

size_t Count(const std::vector<std::string>& log, const std::string& prefix) {
  return std::count_if(log.begin(), log.end(),
                       [&](const std::string& s) { return s.starts_with(prefix); });
}

// An Env whose files note each read in the simulator's log ("read +<data
// offset> <bytes>") and can fail the read of a given data offset.
class NotingEnv : public EnvWrapper {
 public:
  NotingEnv(SimDevice* sim, uint64_t data_base)
      : EnvWrapper(Env::Default()), sim_(sim), base_(data_base) {}
  std::atomic<int64_t> fail_at{-1};  // data offset whose read fails with EIO

  class File : public RandomAccessFile {
   public:
    File(std::unique_ptr<RandomAccessFile> f, NotingEnv* env) : f_(std::move(f)), env_(env) {}
    Status Read(uint64_t offset, size_t n, std::byte* dst) override {
      if (offset >= env_->base_) {
        const int64_t rel = static_cast<int64_t>(offset - env_->base_);
        env_->sim_->Note("read +" + std::to_string(rel) + " " + std::to_string(n));
        if (rel == env_->fail_at) return ErrnoStatus("injected read fault", EIO);
      }
      return f_->Read(offset, n, dst);
    }
    uint64_t size() const override { return f_->size(); }
    uint64_t inode() const override { return f_->inode(); }

   private:
    std::unique_ptr<RandomAccessFile> f_;
    NotingEnv* env_;
  };

  Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) override {
    auto f = Env::Default()->OpenForRead(path);
    if (!f.ok()) return f.status();
    return std::unique_ptr<RandomAccessFile>(std::make_unique<File>(std::move(*f), this));
  }
  Result<std::unique_ptr<WritableFile>> CreateNew(const std::string& p) override {
    return Env::Default()->CreateNew(p);
  }
  Status Rename(const std::string& a, const std::string& b) override {
    return Env::Default()->Rename(a, b);
  }
  Status Remove(const std::string& p) override { return Env::Default()->Remove(p); }
  Status RemoveDir(const std::string& p) override { return Env::Default()->RemoveDir(p); }
  Status SyncDir(const std::string& p) override { return Env::Default()->SyncDir(p); }
  Status CreateDirs(const std::string& p) override { return Env::Default()->CreateDirs(p); }
  Result<std::vector<std::string>> ListDir(const std::string& d) override {
    return Env::Default()->ListDir(d);
  }
  Result<FileStat> Stat(const std::string& p) override { return Env::Default()->Stat(p); }

 private:
  SimDevice* sim_;
  uint64_t base_;
};

class GpuTierTest : public ::testing::Test {
 protected:
  std::shared_ptr<SimDevice> sim_ = std::make_shared<SimDevice>(2, 1024 * kMiB);

  std::unique_ptr<GpuTier> MakeTier(uint64_t capacity, GpuTierOptions o = {}) {
    o.capacity_bytes = capacity;
    return std::make_unique<GpuTier>(sim_, o);
  }

  // A disk tier in `dir` holding `layer` under `key`; returns the entry path.
  std::string WriteEntry(const TempDir& dir, const LayerKey& key, const LayerPtr& layer,
                         ChecksumAlgorithm algorithm = ChecksumAlgorithm::kXXH3_128) {
    auto disk = DiskTier::Open(
        {.cache_dir = dir.path(), .capacity_bytes = 1ull << 32, .algorithm = algorithm});
    EXPECT_TRUE(disk.ok()) << disk.status().ToString();
    EXPECT_TRUE((*disk)->Put(key, layer).ok());
    return (*disk)->EntryPath(key.Digest());
  }

  // The file offset of an entry's data section.
  static uint64_t DataBase(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    return 8 + n;
  }
};

TEST_F(GpuTierTest, PageableHostLayerIsStagedThroughPinnedBuffers) {
  auto tier = MakeTier(64 * kMiB);
  LayerPtr host = MakeLayer(1, 20 * kMiB);  // three staging chunks
  auto d = tier->LoadFromHost(Key(1), 0, *host, nullptr);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_TRUE(SameBytes(*sim_, **d, *host));
  EXPECT_EQ((*d)->tensors().size(), host->tensors().size());
  EXPECT_EQ((*d)->metadata(), host->metadata());
  EXPECT_EQ(static_cast<std::byte*>((*d)->tensor_data("norm.weight")),
            static_cast<std::byte*>((*d)->data()) + host->find("norm.weight")->offset);
  const auto log = sim_->log();
  EXPECT_EQ(Count(log, "h2d"), 3u);
  for (const auto& op : log) {
    if (op.starts_with("h2d")) {
      EXPECT_TRUE(op.ends_with("pinned")) << op;
    }
  }
  EXPECT_EQ(tier->Lookup(Key(1), 0), *d);
  EXPECT_EQ(tier->Lookup(Key(1), 1), nullptr);  // another device
  EXPECT_TRUE(sim_->violations().empty());
}

TEST_F(GpuTierTest, PinnedHostLayerIsCopiedDirectly) {
  auto tier = MakeTier(64 * kMiB);
  LayerPtr pageable = MakeLayer(2, 10 * kMiB);
  auto d = tier->LoadFromHost(Key(2), 0, *pageable, nullptr);
  ASSERT_TRUE(d.ok());
  auto pinned = tier->CopyToHost(**d, /*pinned=*/true);
  ASSERT_TRUE(pinned.ok()) << pinned.status().ToString();
  EXPECT_TRUE((*pinned)->ContentEquals(*pageable));
  EXPECT_TRUE(sim_->IsPinned((*pinned)->data()));

  // A second tier has no staging buffers yet: a pinned layer needs none.
  auto tier2 = MakeTier(64 * kMiB);
  const size_t pinned_before = sim_->pinned_allocations();
  sim_->ClearLog();
  auto d2 = tier2->LoadFromHost(Key(2), 1, **pinned, nullptr);
  ASSERT_TRUE(d2.ok());
  EXPECT_EQ(sim_->pinned_allocations(), pinned_before);
  EXPECT_TRUE(SameBytes(*sim_, **d2, *pageable));
  for (const auto& op : sim_->log()) {
    if (op.starts_with("h2d")) {
      EXPECT_TRUE(op.ends_with("pinned")) << op;
    }
  }
  pinned->reset();
  EXPECT_EQ(sim_->pinned_allocations(), pinned_before - 1);  // freed with its layer
}

TEST_F(GpuTierTest, BudgetEvictsLeastRecentlyUsedAndHandsEvictedBack) {
  std::vector<LayerPtr> host;
  for (int i = 0; i < 4; ++i) host.push_back(MakeLayer(10 + i, 4 * kMiB));
  auto tier = MakeTier(3 * host[0]->nbytes());
  GpuTier::Evicted evicted;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(tier->LoadFromHost(Key(i), 0, *host[i], &evicted).ok());
  EXPECT_TRUE(evicted.empty());
  ASSERT_NE(tier->Lookup(Key(0), 0), nullptr);  // 0 is now newer than 1
  ASSERT_TRUE(tier->LoadFromHost(Key(3), 0, *host[3], &evicted).ok());
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].first, Key(1));
  EXPECT_TRUE(SameBytes(*sim_, *evicted[0].second, *host[1]));  // still usable by its holder
  EXPECT_EQ(tier->Lookup(Key(1), 0), nullptr);
  EXPECT_NE(tier->Lookup(Key(0), 0), nullptr);
  EXPECT_LE(tier->usage(0), tier->capacity());
  EXPECT_EQ(tier->size(), 3u);
  EXPECT_EQ(tier->evictions(), 1u);
  const uint64_t used = sim_->used(0);
  evicted.clear();  // the last reference: its device memory goes
  EXPECT_EQ(sim_->used(0), used - host[1]->nbytes());
}

TEST_F(GpuTierTest, LayerLargerThanBudgetIsServedButNotKept) {
  auto tier = MakeTier(4 * kMiB);
  LayerPtr big = MakeLayer(3, 8 * kMiB);
  auto d = tier->LoadFromHost(Key(3), 0, *big, nullptr);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(SameBytes(*sim_, **d, *big));
  EXPECT_EQ(tier->Lookup(Key(3), 0), nullptr);
  EXPECT_EQ(tier->usage(0), 0u);
}

TEST_F(GpuTierTest, ScanResistantPolicyKeepsHittingDuringSweeps) {
  // 8 layers, room for 4, swept in order: LRU hits nothing, the
  // scan-resistant policy keeps a fixed set.
  auto hits_with = [&](EvictionPolicy policy) {
    auto tier = MakeTier(4 * kMiB, {.eviction_policy = policy});
    std::vector<LayerPtr> host;
    for (int i = 0; i < 8; ++i) host.push_back(MakeLayer(20 + i, kMiB - 4096));
    int hits = 0;
    for (int pass = 0; pass < 6; ++pass) {
      for (int i = 0; i < 8; ++i) {
        if (tier->Lookup(Key(i), 0)) {
          ++hits;
        } else {
          GpuTier::Evicted ev;
          EXPECT_TRUE(tier->LoadFromHost(Key(i), 0, *host[i], &ev).ok());
        }
        EXPECT_LE(tier->usage(0), tier->capacity());
      }
    }
    return hits;
  };
  EXPECT_EQ(hits_with(EvictionPolicy::kLru), 0);
  EXPECT_GE(hits_with(EvictionPolicy::kScanResistant), 8);
}

TEST_F(GpuTierTest, DiskEntryIsPipelinedThroughTheStagingBuffers) {
  TempDir dir;
  LayerPtr host = MakeLayer(4, 4 * 8 * kMiB + 123 * 1024);  // five 8 MiB chunks, the last short
  const std::string path = WriteEntry(dir, Key(4), host);
  NotingEnv env(sim_.get(), DataBase(path));
  // One reader and two staging buffers: the order is fixed.
  auto tier = MakeTier(256 * kMiB, {.staging_buffers = 2, .io_threads = 1});
  sim_->ClearLog();
  auto d = tier->LoadFromFile(Key(4), 0, &env, path, Key(4).Digest(), nullptr);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  // The copies ran after the reads that filled the buffers had moved on; had
  // a buffer been refilled before its copy ran, the device would differ.
  EXPECT_TRUE(SameBytes(*sim_, **d, *host));
  EXPECT_TRUE((*d)->metadata() == host->metadata());

  std::vector<std::string> ops;
  for (const auto& op : sim_->log()) {
    if (op.starts_with("read") || op.starts_with("h2d") || op == "wait") ops.push_back(op);
  }
  const std::string c = std::to_string(8 * kMiB);
  const std::string last = std::to_string(host->nbytes() - 4 * 8 * kMiB);
  const std::vector<std::string> expected = {
      "read +0 " + c,
      "h2d +0 " + c + " pinned",
      "read +" + std::to_string(8 * kMiB) + " " + c,
      "h2d +" + std::to_string(8 * kMiB) + " " + c + " pinned",
      "wait",  // buffer 0's copy must be done before chunk 2 overwrites it
      "read +" + std::to_string(16 * kMiB) + " " + c,
      "h2d +" + std::to_string(16 * kMiB) + " " + c + " pinned",
      "wait",
      "read +" + std::to_string(24 * kMiB) + " " + c,
      "h2d +" + std::to_string(24 * kMiB) + " " + c + " pinned",
      "wait",
      "read +" + std::to_string(32 * kMiB) + " " + last,
      "h2d +" + std::to_string(32 * kMiB) + " " + last + " pinned",
      "wait",  // the layer's ready event: cached only once every copy is done
  };
  EXPECT_EQ(ops, expected);
  EXPECT_NE(tier->Lookup(Key(4), 0), nullptr);
  EXPECT_TRUE(sim_->violations().empty());
}

TEST_F(GpuTierTest, DiskEntryWithManyReadersAndMd5) {
  TempDir dir;
  for (auto algorithm : {ChecksumAlgorithm::kXXH3_128, ChecksumAlgorithm::kMD5}) {
    LayerPtr host = MakeLayer(5, 40 * kMiB);
    const std::string path = WriteEntry(dir, Key(5), host, algorithm);
    auto tier = MakeTier(256 * kMiB, {.staging_buffers = 3, .io_threads = 4});
    auto d = tier->LoadFromFile(Key(5), 0, Env::Default(), path, Key(5).Digest(), nullptr);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_TRUE(SameBytes(*sim_, **d, *host)) << ChecksumAlgorithmName(algorithm);
  }
  EXPECT_TRUE(sim_->violations().empty());
}

TEST_F(GpuTierTest, CorruptEntryIsNotCachedAndLeavesNothingOnTheDevice) {
  TempDir dir;
  LayerPtr host = MakeLayer(6, 20 * kMiB);
  const std::string path = WriteEntry(dir, Key(6), host);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(DataBase(path) + 12 * kMiB));
    f.put('\x5a');
  }
  auto tier = MakeTier(256 * kMiB);
  auto d = tier->LoadFromFile(Key(6), 0, Env::Default(), path, Key(6).Digest(), nullptr);
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(d.status().IsCorruption()) << d.status().ToString();
  EXPECT_NE(d.status().message().find("checksum mismatch"), std::string::npos);
  EXPECT_EQ(tier->Lookup(Key(6), 0), nullptr);
  EXPECT_EQ(tier->usage(0), 0u);
  EXPECT_EQ(sim_->live_allocations(), 0u);
  EXPECT_TRUE(sim_->violations().empty());
}

TEST_F(GpuTierTest, MissingAndCompressedEntriesSayWhy) {
  TempDir dir;
  auto tier = MakeTier(256 * kMiB);
  auto missing = tier->LoadFromFile(Key(7), 0, Env::Default(), dir / "nope.safetensors",
                                    Key(7).Digest(), nullptr);
  EXPECT_TRUE(missing.status().IsNotFound()) << missing.status().ToString();

  auto disk = DiskTier::Open(
      {.cache_dir = dir.path(), .capacity_bytes = 1ull << 32, .compression_level = 3});
  ASSERT_TRUE(disk.ok());
  ASSERT_TRUE((*disk)->Put(Key(7), MakeLayer(7, kMiB)).ok());
  auto compressed = tier->LoadFromFile(
      Key(7), 0, Env::Default(), (*disk)->EntryPath(Key(7).Digest()), Key(7).Digest(), nullptr);
  EXPECT_EQ(compressed.status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(sim_->live_allocations(), 0u);
}

TEST_F(GpuTierTest, ReadErrorMidPipelineCachesNothing) {
  TempDir dir;
  LayerPtr host = MakeLayer(8, 40 * kMiB);
  const std::string path = WriteEntry(dir, Key(8), host);
  NotingEnv env(sim_.get(), DataBase(path));
  env.fail_at = 16 * kMiB;  // the third chunk
  auto tier = MakeTier(256 * kMiB, {.staging_buffers = 2, .io_threads = 2});
  auto d = tier->LoadFromFile(Key(8), 0, &env, path, Key(8).Digest(), nullptr);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kIOError);
  EXPECT_NE(d.status().message().find("injected read fault"), std::string::npos);
  EXPECT_EQ(tier->Lookup(Key(8), 0), nullptr);
  EXPECT_EQ(sim_->live_allocations(), 0u);
  EXPECT_TRUE(sim_->violations().empty());
  env.fail_at = -1;  // the fault gone, the same load works
  auto again = tier->LoadFromFile(Key(8), 0, &env, path, Key(8).Digest(), nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(SameBytes(*sim_, **again, *host));
}

TEST_F(GpuTierTest, CopyErrorMidCopyCachesNothingAndServesNothing) {
  TempDir dir;
  LayerPtr host = MakeLayer(9, 30 * kMiB);
  const std::string path = WriteEntry(dir, Key(9), host);
  for (bool when_run : {false, true}) {
    auto tier = MakeTier(256 * kMiB);
    sim_->FailCopy(2, when_run);  // the second chunk's copy
    auto d = tier->LoadFromFile(Key(9), 0, Env::Default(), path, Key(9).Digest(), nullptr);
    ASSERT_FALSE(d.ok()) << "when_run=" << when_run;
    EXPECT_EQ(d.status().code(), StatusCode::kIOError);
    EXPECT_NE(d.status().message().find("injected copy error"), std::string::npos);
    EXPECT_NE(d.status().message().find("cuda:0"), std::string::npos);
    EXPECT_EQ(tier->Lookup(Key(9), 0), nullptr);
    EXPECT_EQ(tier->usage(0), 0u);
    EXPECT_EQ(sim_->live_allocations(), 0u);

    sim_->FailCopy(3, when_run);  // the same from a host layer
    auto h = tier->LoadFromHost(Key(9), 0, *host, nullptr);
    ASSERT_FALSE(h.ok());
    EXPECT_EQ(tier->Lookup(Key(9), 0), nullptr);
    EXPECT_EQ(sim_->live_allocations(), 0u);

    auto ok = tier->LoadFromFile(Key(9), 0, Env::Default(), path, Key(9).Digest(), nullptr);
    ASSERT_TRUE(ok.ok()) << ok.status().ToString();
    EXPECT_TRUE(SameBytes(*sim_, **ok, *host));
  }
  EXPECT_TRUE(sim_->violations().empty());
}

TEST_F(GpuTierTest, OutOfDeviceMemoryEvictsAndRetriesThenSaysSo) {
  // The device holds 2.5 layers; the budget would allow 10.
  sim_ = std::make_shared<SimDevice>(1, 10 * kMiB);
  auto tier = MakeTier(40 * kMiB);
  std::vector<LayerPtr> host;
  for (int i = 0; i < 4; ++i) host.push_back(MakeLayer(30 + i, 4 * kMiB));
  GpuTier::Evicted evicted;
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(tier->LoadFromHost(Key(i), 0, *host[i], &evicted).ok());
  evicted.clear();
  auto third = tier->LoadFromHost(Key(2), 0, *host[2], &evicted);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_TRUE(SameBytes(*sim_, **third, *host[2]));
  EXPECT_EQ(tier->Lookup(Key(0), 0), nullptr);  // evicted to make device memory
  EXPECT_NE(tier->Lookup(Key(1), 0), nullptr);

  // Every cached layer is held by a caller: nothing to free, a clear error.
  auto held1 = tier->Lookup(Key(1), 0);
  auto d = tier->LoadFromHost(Key(3), 0, *host[3], &evicted);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kNoSpace);
  EXPECT_NE(d.status().message().find("out of memory on cuda:0"), std::string::npos)
      << d.status().ToString();
  EXPECT_EQ(tier->usage(0), 0u);  // both were evicted trying
  held1.reset();
  third = Status::NotFound("dropped");
  evicted.clear();
  auto retry = tier->LoadFromHost(Key(3), 0, *host[3], &evicted);
  EXPECT_TRUE(retry.ok()) << retry.status().ToString();
}

TEST_F(GpuTierTest, InvalidOrdinalIsAClearError) {
  auto tier = MakeTier(64 * kMiB);
  LayerPtr host = MakeLayer(40, kMiB);
  auto d = tier->LoadFromHost(Key(40), 2, *host, nullptr);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("cuda:2 does not exist"), std::string::npos);
  EXPECT_NE(d.status().message().find("cuda:0 to cuda:1"), std::string::npos);
  EXPECT_EQ(tier->CheckDevice(-1).code(), StatusCode::kInvalidArgument);

  auto none = std::make_shared<SimDevice>(0, 0);
  GpuTier tier0(none, {.capacity_bytes = kMiB});
  EXPECT_NE(tier0.CheckDevice(0).message().find("sees no GPU"), std::string::npos);
}

TEST_F(GpuTierTest, ConcurrentLoadsStayWithinTheBudget) {
  auto tier = MakeTier(12 * kMiB);
  std::vector<LayerPtr> host;
  for (int i = 0; i < 8; ++i) host.push_back(MakeLayer(50 + i, 2 * kMiB));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        const int i = (t * 3 + round) % 8;
        DeviceLayerPtr d = tier->Lookup(Key(i), 0);
        if (!d) {
          auto r = tier->LoadFromHost(Key(i), 0, *host[i], nullptr);
          if (!r.ok()) {
            ++failures;
            continue;
          }
          d = *r;
        }
        if (!SameBytes(*sim_, *d, *host[i])) ++failures;
        if (tier->usage(0) > tier->capacity()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(sim_->violations().empty());
}

TEST(CudaRuntimeTest, BuildWithoutCudaSaysSo) {
  auto rt = CudaRuntime();
  if (BuiltWithCuda()) {
    ASSERT_TRUE(rt.ok());
    // No device here is fine; an ordinal past the count is refused.
    EXPECT_EQ((*rt)->CheckOrdinal((*rt)->DeviceCount()).code(), StatusCode::kInvalidArgument);
  } else {
    ASSERT_FALSE(rt.ok());
    EXPECT_EQ(rt.status().code(), StatusCode::kUnsupported);
    EXPECT_NE(rt.status().message().find("LAYERCACHE_CUDA=ON"), std::string::npos);
  }
}

}  // namespace
}  // namespace layercache

// ---- LayerCache's device calls, on the simulated device ----

namespace layercache {
namespace {

class LayerCacheGpuTest : public ::testing::Test {
 protected:
  void SetUp() override { SetDefaultDeviceRuntime(sim_); }
  void TearDown() override { SetDefaultDeviceRuntime(nullptr); }

  LayerCacheOptions Options(double gpu_gb = 1.0) {
    LayerCacheOptions o;
    o.cache_dir = dir_.path();
    o.max_cache_size_gb = 1;
    o.max_memory_cache_size_gb = 0.5;
    o.max_gpu_cache_size_gb = gpu_gb;
    return o;
  }
  bool SameBytes(const DeviceLayerPtr& d, const LayerPtr& h) {
    if (!d || !h || d->nbytes() != h->nbytes()) return false;
    std::vector<std::byte> out(d->nbytes());
    EXPECT_TRUE(sim_->CopyToHost(d->device(), out.data(), d->data(), out.size()).ok());
    return std::memcmp(out.data(), h->data(), out.size()) == 0;
  }
  bool InMemory(LayerCache& cache, const LayerKey& key) {
    for (const EntryInfo& e : cache.list_entries()) {
      if (e.key == key) return e.in_memory;
    }
    return false;
  }

  std::shared_ptr<SimDevice> sim_ = std::make_shared<SimDevice>(2, 1024 * kMiB);
  TempDir dir_;
};

TEST_F(LayerCacheGpuTest, FromDiskFromMemoryAndHits) {
  const LayerKey a{"m", 0, "", ""}, b{"m", 1, "", ""};
  LayerPtr la = MakeLayer(100, 9 * kMiB), lb = MakeLayer(101, 3 * kMiB);
  {
    LayerCache writer(Options());
    ASSERT_TRUE(writer.cache_layer(a, la));
    ASSERT_TRUE(writer.cache_layer(b, lb));
    // In memory here: copied from the memory tier.
    DeviceLayerPtr d = writer.get_layer(b, "cuda:1");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->device(), 1);
    EXPECT_TRUE(SameBytes(d, lb));
    EXPECT_EQ(writer.get_layer(b, "cuda:1"), d);  // a GPU-tier hit: the same layer
  }
  LayerCache cache(Options());  // a fresh memory tier: from the disk entry
  sim_->ClearLog();
  DeviceLayerPtr d = cache.get_layer(a, "cuda");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->device(), 0);
  EXPECT_TRUE(SameBytes(d, la));
  EXPECT_EQ(Count(sim_->log(), "h2d"), 2u);  // two 8 MiB chunks, staged
  EXPECT_FALSE(InMemory(cache, a));          // not through the memory tier
  EXPECT_EQ(cache.get_layer(a, "cuda:0"), d);
  EXPECT_EQ(cache.get_layer(LayerKey{"m", 7, "", ""}, "cuda:0"), nullptr);  // a miss
  auto miss = cache.get_layer_status(LayerKey{"m", 7, "", ""}, "cuda:0");
  EXPECT_TRUE(miss.status().IsNotFound());
}

TEST_F(LayerCacheGpuTest, BadDevicesAreClearErrors) {
  LayerCache cache(Options());
  const LayerKey k{"m", 0, "", ""};
  for (const char* bad : {"tpu:0", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "cpu"}) {
    SCOPED_TRACE(bad);
    EXPECT_INVALID_ARGUMENT(cache.get_layer(k, bad));
  }
  try {
    cache.get_layer(k, "cuda:2");
    FAIL() << "cuda:2 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda:2 does not exist"), std::string::npos) << e.what();
  }
  EXPECT_INVALID_ARGUMENT(cache.get_layer("m", 0, std::nullopt, "cuda:0"));
  EXPECT_INVALID_ARGUMENT(cache.prefetch({k}, "cuda:9"));
}

TEST_F(LayerCacheGpuTest, WithoutTheSimulatorTheBuildSaysWhatIsMissing) {
  SetDefaultDeviceRuntime(nullptr);  // the real CUDA runtime, or none
  LayerCache cache(Options());
  const LayerKey k{"m", 0, "", ""};
  if (!BuiltWithCuda()) {
    try {
      cache.get_layer(k, "cuda:0");
      FAIL() << "a build without CUDA served a device";
    } catch (const Error& e) {
      EXPECT_EQ(e.status().code(), StatusCode::kUnsupported);
      EXPECT_NE(std::string(e.what()).find("no CUDA support"), std::string::npos);
    }
  } else if (CudaRuntime().value()->DeviceCount() == 0) {
    try {
      cache.get_layer(k, "cuda:0");
      FAIL() << "a machine without a GPU served a device";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find("sees no GPU"), std::string::npos) << e.what();
    }
  } else {
    EXPECT_EQ(cache.get_layer(k, "cuda:0"), nullptr);  // a real GPU: a plain miss
  }
}

TEST_F(LayerCacheGpuTest, CorruptEntryIsAMissAndNothingReachesTheDevice) {
  const LayerKey k{"m", 3, "", ""};
  LayerPtr l = MakeLayer(103, 2 * kMiB);
  std::string path;
  {
    LayerCache writer(Options());
    ASSERT_TRUE(writer.cache_layer(k, l));
    path = writer.list_entries().at(0).path;
  }
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-100, std::ios::end);
    f.put('\x01');
  }
  LayerCache cache(Options());
  EXPECT_EQ(cache.get_layer(k, "cuda:0"), nullptr);
  EXPECT_EQ(sim_->live_allocations(), 0u);
  EXPECT_EQ(cache.get_stats().checksum_failures, 1u);  // the disk tier removed and counted it
  EXPECT_TRUE(cache.list_entries().empty());
}

TEST_F(LayerCacheGpuTest, EvictedGoBackToMemoryAndPrefetchFillsTheDevice) {
  std::vector<LayerKey> keys;
  std::vector<LayerPtr> layers;
  for (int i = 0; i < 3; ++i) {
    keys.push_back({"p", i, "", ""});
    layers.push_back(MakeLayer(200 + i, 2 * kMiB));
  }
  {
    LayerCache writer(Options());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(writer.cache_layer(keys[i], layers[i]));
  }
  // Room on the GPU for one layer; a fresh memory tier.
  LayerCache cache(Options(3.0 / 1024));
  ASSERT_NE(cache.get_layer(keys[0], "cuda:0"), nullptr);
  EXPECT_FALSE(InMemory(cache, keys[0]));
  ASSERT_NE(cache.get_layer(keys[1], "cuda:0"), nullptr);  // evicts 0 from the GPU...
  EXPECT_TRUE(InMemory(cache, keys[0]));                   // ...into host memory
  auto back = cache.get_layer(keys[0]);
  ASSERT_NE(back, nullptr);
  EXPECT_TRUE(back->ContentEquals(*layers[0]));

  auto futures = cache.prefetch({keys[2]}, "cuda:0");
  ASSERT_EQ(futures.size(), 1u);
  DeviceLayerPtr pre = futures[0].get();
  ASSERT_NE(pre, nullptr);
  EXPECT_TRUE(SameBytes(pre, layers[2]));
  EXPECT_EQ(cache.get_layer(keys[2], "cuda:0"), pre);  // served by the GPU tier

  // Prefetches layer 0 (wrapping), which may evict 2 from a one-layer GPU
  // budget first: the layer served is 2's, whichever copy.
  DeviceLayerPtr d = cache.get_layer_with_prefetch(keys[2], 3, "cuda:0", 1);
  EXPECT_TRUE(SameBytes(d, layers[2]));
  EXPECT_INVALID_ARGUMENT(cache.get_layer_with_prefetch(keys[2], 2, "cuda:0"));
}

TEST_F(LayerCacheGpuTest, PinnedMemoryLayersAreCopiedDirectly) {
  LayerCacheOptions o = Options();
  o.pin_memory_layers = true;
  LayerCache cache(o);
  const LayerKey k{"m", 4, "", ""};
  LayerPtr l = MakeLayer(104, 20 * kMiB);
  ASSERT_TRUE(cache.cache_layer(k, l));
  EXPECT_FALSE(sim_->IsPinned(cache.get_layer(k)->data()));
  ASSERT_NE(cache.get_layer(k, "cuda:0"), nullptr);
  LayerPtr host = cache.get_layer(k);
  EXPECT_TRUE(sim_->IsPinned(host->data()));  // the memory tier now holds a pinned copy
  EXPECT_TRUE(host->ContentEquals(*l));
  // The next device gets it with no staging buffer at all.
  const size_t pinned_before = sim_->pinned_allocations();
  ASSERT_NE(cache.get_layer(k, "cuda:1"), nullptr);
  EXPECT_EQ(sim_->pinned_allocations(), pinned_before);
}

TEST_F(LayerCacheGpuTest, ReplacedAndRemovedLayersLeaveTheDevice) {
  LayerCache cache(Options());
  const LayerKey a{"m", 0, "", ""}, b{"m", 1, "", ""}, c{"n", 0, "", ""};
  LayerPtr old_a = MakeLayer(110, 2 * kMiB), new_a = MakeLayer(111, 2 * kMiB);
  ASSERT_TRUE(cache.cache_layer(a, old_a));
  ASSERT_TRUE(cache.cache_layer(b, MakeLayer(112, 2 * kMiB)));
  ASSERT_TRUE(cache.cache_layer(c, MakeLayer(113, 2 * kMiB)));
  for (const LayerKey& k : {a, b, c}) ASSERT_NE(cache.get_layer(k, "cuda:0"), nullptr);
  const uint64_t three = sim_->used(0);
  ASSERT_GE(three, 6 * kMiB);

  // cache_layer replaces: the device serves the new bytes, never the old.
  ASSERT_TRUE(cache.cache_layer(a, new_a));
  DeviceLayerPtr d = cache.get_layer(a, "cuda:0");
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(SameBytes(d, new_a));
  EXPECT_FALSE(SameBytes(d, old_a));
  d.reset();

  // invalidate_cache(model, layer): that layer leaves the device too.
  EXPECT_EQ(cache.invalidate_cache("m", 0), 1u);
  EXPECT_EQ(cache.get_layer(a, "cuda:0"), nullptr);
  EXPECT_NE(cache.get_layer(b, "cuda:0"), nullptr);
  // remove_entry: the same.
  EXPECT_TRUE(cache.remove_entry(b));
  EXPECT_EQ(cache.get_layer(b, "cuda:0"), nullptr);
  EXPECT_LT(sim_->used(0), three);  // their device memory is released
  // clear_cache: everything.
  cache.clear_cache();
  EXPECT_EQ(cache.get_layer(c, "cuda:0"), nullptr);
  EXPECT_EQ(sim_->used(0), 0u);
}

TEST_F(LayerCacheGpuTest, OptionsAreValidated) {
  LayerCacheOptions o = Options();
  o.max_gpu_cache_size_gb = -1;
  EXPECT_INVALID_ARGUMENT(o.Validate());
  o.max_gpu_cache_size_gb = std::nan("");
  EXPECT_INVALID_ARGUMENT(o.Validate());
  o.max_gpu_cache_size_gb = 0;
  EXPECT_NO_THROW(o.Validate());
}

}  // namespace
}  // namespace layercache
