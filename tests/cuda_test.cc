// The GPU tier on a real CUDA device. Needs a build with CUDA
// (-DLAYERCACHE_CUDA=ON or the toolkit found) and a device; elsewhere each
// test skips saying "no CUDA device" (the one skip allowed in CI), unless
// LAYERCACHE_REQUIRE_CUDA=1 (scripts/gpu-check.sh sets it), which makes a
// missing device a failure.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "disk/disk_tier.h"
#include "gpu/device_runtime.h"
#include "gpu/gpu_tier.h"
#include "test_layers.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::TempDir;

constexpr uint64_t kMiB = 1u << 20;

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto rt = CudaRuntime();
    std::string why;
    if (!rt.ok()) {
      why = "no CUDA device: " + rt.status().message();
    } else if ((*rt)->DeviceCount() == 0) {
      why = "no CUDA device: " + (*rt)->Name() + " sees none (no GPU or no driver)";
    }
    if (!why.empty()) {
      const char* require = std::getenv("LAYERCACHE_REQUIRE_CUDA");
      if (require != nullptr && std::string(require) == "1") FAIL() << why;
      GTEST_SKIP() << why;
    }
    rt_ = *rt;
  }
  std::vector<std::byte> Back(const DeviceLayer& d) {
    std::vector<std::byte> out(d.nbytes());
    EXPECT_TRUE(rt_->CopyToHost(d.device(), out.data(), d.data(), out.size()).ok());
    return out;
  }
  std::shared_ptr<DeviceRuntime> rt_;
};

TEST_F(CudaTest, HostLayerRoundTrips) {
  GpuTier tier(rt_, {.capacity_bytes = 256 * kMiB});
  LayerPtr host = MakeLayer(1, 50 * kMiB);
  auto d = tier.LoadFromHost({"m", 1, "none", "r"}, 0, *host, nullptr);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_TRUE((*d)->synchronize().ok());
  auto bytes = Back(**d);
  EXPECT_EQ(std::memcmp(bytes.data(), host->data(), host->nbytes()), 0);
  auto pinned = tier.CopyToHost(**d, true);
  ASSERT_TRUE(pinned.ok());
  EXPECT_TRUE(rt_->IsPinned((*pinned)->data()));
  EXPECT_FALSE(rt_->IsPinned(host->data()));
  EXPECT_TRUE((*pinned)->ContentEquals(*host));
}

TEST_F(CudaTest, DiskEntryRoundTripsDirectAndBuffered) {
  TempDir dir;
  LayerPtr host = MakeLayer(2, 100 * kMiB + 4096 * 3 + 10);
  LayerKey key{"m", 2, "none", "r"};
  auto disk = DiskTier::Open({.cache_dir = dir.path(), .capacity_bytes = 1ull << 32});
  ASSERT_TRUE(disk.ok());
  ASSERT_TRUE((*disk)->Put(key, host).ok());
  for (bool direct : {false, true}) {
    GpuTier tier(rt_, {.capacity_bytes = 256 * kMiB, .direct_io = direct});
    auto d = tier.LoadFromFile(key, 0, Env::Default(), (*disk)->EntryPath(key.Digest()),
                               key.Digest(), nullptr);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    auto bytes = Back(**d);
    EXPECT_EQ(std::memcmp(bytes.data(), host->data(), host->nbytes()), 0) << direct;
  }
}

TEST_F(CudaTest, InvalidOrdinalAndOutOfMemory) {
  GpuTier tier(rt_, {.capacity_bytes = 1ull << 50});
  EXPECT_EQ(tier.CheckDevice(rt_->DeviceCount()).code(), StatusCode::kInvalidArgument);
  auto total = rt_->TotalMemory(0);
  ASSERT_TRUE(total.ok());
  auto huge = rt_->Allocate(0, *total * 2);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kNoSpace) << huge.status().ToString();
  // The failed allocation leaves the device usable.
  LayerPtr host = MakeLayer(3, 8 * kMiB);
  EXPECT_TRUE(tier.LoadFromHost({"m", 3, "none", "r"}, 0, *host, nullptr).ok());
}

}  // namespace
}  // namespace layercache
