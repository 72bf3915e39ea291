// ModelRefs: the default revision's record, read on every get_layer() path
// without a revision (src/source/model_refs.h).
#include "source/model_refs.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

namespace layercache {
namespace {

using testing::TempDir;

TEST(ModelRefsTest, RecordIsSeenAtOnceAndByAnotherInstanceWithinTheRecheck) {
  TempDir dir;
  ModelRefs a(Env::Default(), dir.path());
  ModelRefs b(Env::Default(), dir.path());  // as another process would
  EXPECT_EQ(a.Default("org/model"), "");
  EXPECT_EQ(b.Default("org/model"), "");
  a.Record("org/model", "1111111111111111111111111111111111111111");
  EXPECT_EQ(a.Default("org/model"), "1111111111111111111111111111111111111111");
  EXPECT_EQ(a.Default("org/other"), "");
  // b re-reads the file once its record is older than kRecheck.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (b.Default("org/model").empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(b.Default("org/model"), "1111111111111111111111111111111111111111");
  a.Record("org/model", "2222222222222222222222222222222222222222");
  EXPECT_EQ(a.Default("org/model"), "2222222222222222222222222222222222222222");
}

TEST(ModelRefsTest, ReadersAndWritersOfManyModelsConcurrently) {
  TempDir dir;
  ModelRefs refs(Env::Default(), dir.path());
  constexpr int kModels = 200;  // more than the buckets: chains
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        for (int m = 0; m < kModels; ++m) {
          const std::string c = refs.Default("m" + std::to_string(m));
          // Only what a writer records: "" or the model's own commits.
          const std::string own = "c" + std::to_string(m) + "_";
          if (!c.empty() && c.substr(0, own.size()) != own) bad.fetch_add(1);
        }
      }
    });
  }
  for (int round = 0; round < 3; ++round) {
    for (int m = 0; m < kModels; ++m) {
      refs.Record("m" + std::to_string(m), "c" + std::to_string(m) + "_" + std::to_string(round));
    }
  }
  stop.store(true);
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  for (int m = 0; m < kModels; ++m) {
    EXPECT_EQ(refs.Default("m" + std::to_string(m)), "c" + std::to_string(m) + "_2");
  }
}

}  // namespace
}  // namespace layercache
