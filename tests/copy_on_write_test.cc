// Copy-on-write views of layers (layercache/copy_on_write.h): writes to a
// view reach neither the layer nor another view, nor a layer built later in
// the reused memory, nor another process after fork().
#include "layercache/copy_on_write.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "layercache/layer_cache.h"
#include "test_support.h"
#include "util/file_backing.h"

namespace layercache {
namespace {

class FileBacked : public ::testing::Test {
 protected:
  void SetUp() override { SetFileBackedBuffers(true); }
  void TearDown() override { SetFileBackedBuffers(false); }
};

LayerPtr Filled(size_t n, uint8_t value) {
  std::vector<uint8_t> bytes(n, value);
  return LayerBuilder().add_tensor("w", DType::U8, {n}, bytes).build();
}

bool All(const std::byte* p, size_t n, uint8_t value) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != std::byte{value}) return false;
  }
  return true;
}

TEST_F(FileBacked, WritesToAViewStayInIt) {
  const size_t n = (3 << 20) + 123;
  LayerPtr layer = Filled(n, 7);
  auto a = MapCopyOnWrite(layer);
  auto b = MapCopyOnWrite(layer);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a->data(), layer->data());
  EXPECT_EQ(a->size(), n);
  EXPECT_TRUE(All(a->data(), n, 7));
  std::memset(a->data(), 9, n);
  a->data()[n - 1] = std::byte{1};
  EXPECT_TRUE(All(layer->data(), n, 7));
  EXPECT_TRUE(All(b->data(), n, 7));
  EXPECT_TRUE(All(MapCopyOnWrite(layer)->data(), n, 7));
}

TEST_F(FileBacked, SmallAndUnbackedLayersHaveNoView) {
  EXPECT_EQ(MapCopyOnWrite(Filled(1000, 1)), nullptr);  // under 1 MiB: a heap buffer
  SetFileBackedBuffers(false);
  EXPECT_EQ(MapCopyOnWrite(Filled(4 << 20, 1)), nullptr);  // allocated while off
  EXPECT_EQ(MapCopyOnWrite(nullptr), nullptr);
}

TEST_F(FileBacked, AViewKeepsItsBytesWhileTheMemoryIsReusedForOtherLayers) {
  const size_t n = 4 << 20;
  LayerPtr layer = Filled(n, 3);
  auto view = MapCopyOnWrite(layer);
  ASSERT_NE(view, nullptr);
  const std::byte* where = layer->data();
  layer.reset();  // the view holds it: its region is not reused
  for (int i = 0; i < 8; ++i) {
    LayerPtr other = Filled(n, static_cast<uint8_t>(100 + i));
    EXPECT_NE(other->data(), where);
  }
  EXPECT_TRUE(All(view->data(), n, 3));
  view.reset();
  // Now it may be: the pool hands the region out again, rewritten.
  LayerPtr again = Filled(n, 5);
  EXPECT_TRUE(All(again->data(), n, 5));
  EXPECT_TRUE(All(MapCopyOnWrite(again)->data(), n, 5));
}

TEST_F(FileBacked, RegionsAreForgottenWhenTheirLayersGo) {
  const size_t before = file_backing::RegisteredRegions();
  {
    LayerPtr a = Filled(2 << 20, 1);
    LayerPtr b = Filled(6 << 20, 2);
    EXPECT_EQ(file_backing::RegisteredRegions(), before + 2);
  }
  EXPECT_EQ(file_backing::RegisteredRegions(), before);
}

TEST_F(FileBacked, EntryFilesMappedByTheDiskTierAreViewedCopyOnWrite) {
  testing::TempDir dir;
  LayerCacheOptions o;
  o.cache_dir = dir.path();
  o.max_memory_cache_size_gb = 0;
  o.disk_read_mode = DiskReadMode::kMapped;
  const size_t n = 32 << 20;  // over the mapping threshold
  {
    LayerCache cache(o);
    ASSERT_TRUE(cache.cache_layer("m", 0, Filled(n, 11)));
  }
  LayerCache cache(o);
  LayerPtr got = cache.get_layer("m", 0);
  ASSERT_NE(got, nullptr);
  auto view = MapCopyOnWrite(got);
  ASSERT_NE(view, nullptr);
  std::memset(view->data(), 0, n);
  EXPECT_TRUE(All(got->data(), n, 11));
  LayerPtr again = cache.get_layer("m", 0);
  EXPECT_TRUE(All(again->data(), n, 11));
  EXPECT_TRUE(cache.verify_cache_integrity().empty());
}

// After fork() the processes share the memory file: neither may rewrite or
// release a region that existed at the fork.
TEST_F(FileBacked, AChildKeepsItsLayersWhileTheParentChurns) {
  const size_t n = 4 << 20;
  LayerPtr shared = Filled(n, 42);
  auto view = MapCopyOnWrite(shared);
  ASSERT_NE(view, nullptr);
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    char c;
    bool ok = ::read(go[0], &c, 1) == 1;  // after the parent released and reused memory
    ok = ok && All(shared->data(), n, 42) && All(view->data(), n, 42);
    _exit(ok ? 0 : 1);
  }
  // The parent lets go of the layer; without the fork its region would be
  // pooled and rewritten by the next layers.
  view.reset();
  shared.reset();
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(All(Filled(n, 2)->data(), n, 2));
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(FileBacked, TheParentsLayersSurviveAChildThatWritesAndChurns) {
  const size_t n = 4 << 20;
  LayerPtr mine = Filled(n, 77);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    bool ok = true;
    auto v = MapCopyOnWrite(mine);
    ok = v != nullptr;
    if (ok) std::memset(v->data(), 0, n);
    v.reset();
    mine.reset();  // released in the child: not reused, not punched
    for (int i = 0; i < 8; ++i) ok = ok && All(Filled(n, 5)->data(), n, 5);
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(All(mine->data(), n, 77));
}

}  // namespace
}  // namespace layercache
