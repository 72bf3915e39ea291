// The shared executor: every index once, bounded concurrency, no deadlock
// when nested or saturated, exceptions to the caller, tasks run before
// destruction, and a forked child that can use it.
#include "util/executor.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "util/parallel.h"

namespace layercache {
namespace {

// Counts how many run at once, keeping the highest count seen.
struct HighWater {
  std::atomic<int> now{0}, peak{0};
  void Enter() {
    const int n = now.fetch_add(1) + 1;
    for (int p = peak.load(); n > p && !peak.compare_exchange_weak(p, n);) {
    }
  }
  void Leave() { now.fetch_sub(1); }
};

TEST(ExecutorTest, ParallelForRunsEveryIndexExactlyOnce) {
  Executor ex(4);
  for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{7}, size_t{1000}}) {
    for (unsigned par : {0u, 1u, 2u, 3u, 16u}) {
      std::vector<std::atomic<int>> hits(n);
      ex.ParallelFor(n, par, [&](size_t i) { hits[i].fetch_add(1); });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n " << n << " i " << i;
    }
  }
  EXPECT_LE(ex.started(), 4u);
}

TEST(ExecutorTest, FreeParallelForRunsEveryIndexOnTheCurrentExecutor) {
  Executor ex(3);
  Executor::Scope scope(&ex);
  EXPECT_EQ(&Executor::Current(), &ex);
  std::vector<std::atomic<int>> hits(500);
  ParallelFor(hits.size(), 0, [&](size_t i) { hits[i].fetch_add(1); });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  EXPECT_LE(ex.started(), 3u);
}

TEST(ExecutorTest, NestedParallelForOnAOneThreadPoolCompletes) {
  Executor ex(1);
  std::atomic<int> inner{0};
  std::mutex mu;
  std::condition_variable cv;
  int finished = 0;
  const int outer_tasks = 4;
  for (int t = 0; t < outer_tasks; ++t) {
    ex.Submit([&] {
      // On the pool's only worker: the helpers can never start while it runs.
      EXPECT_EQ(&Executor::Current(), &ex);
      ex.ParallelFor(50, 0,
                     [&](size_t) { ex.ParallelFor(3, 0, [&](size_t) { inner.fetch_add(1); }); });
      std::lock_guard lock(mu);
      ++finished;
      cv.notify_all();
    });
  }
  // The caller too, while the worker is busy.
  ex.ParallelFor(10, 0, [&](size_t) { ex.ParallelFor(5, 0, [&](size_t) { inner.fetch_add(1); }); });
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::minutes(2), [&] { return finished == outer_tasks; }));
  EXPECT_EQ(inner.load(), outer_tasks * 50 * 3 + 10 * 5);
}

TEST(ExecutorTest, NeverMoreThanThePoolPlusTheCallersRunAtOnce) {
  const unsigned pool = 3;
  const int callers = 4;
  Executor ex(pool);
  HighWater hw;
  std::vector<std::thread> ts;
  for (int c = 0; c < callers; ++c) {
    ts.emplace_back([&] {
      for (int round = 0; round < 20; ++round) {
        ex.ParallelFor(64, 0, [&](size_t) {
          hw.Enter();
          volatile uint64_t x = 0;
          for (int k = 0; k < 2000; ++k) x = x + k;
          hw.Leave();
        });
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_LE(hw.peak.load(), static_cast<int>(pool) + callers);
  EXPECT_LE(ex.started(), pool);
}

TEST(ExecutorTest, MaxParallelBoundsOneCall) {
  Executor ex(8);
  HighWater hw;
  ex.ParallelFor(200, 2, [&](size_t) {
    hw.Enter();
    volatile uint64_t x = 0;
    for (int k = 0; k < 5000; ++k) x = x + k;
    hw.Leave();
  });
  EXPECT_LE(hw.peak.load(), 2);
}

TEST(ExecutorTest, ExceptionsReachTheCaller) {
  Executor ex(4);
  std::atomic<int> ran{0};
  EXPECT_THROW(ex.ParallelFor(1000, 0,
                              [&](size_t i) {
                                ran.fetch_add(1);
                                if (i == 10) throw std::runtime_error("item 10");
                              }),
               std::runtime_error);
  EXPECT_GE(ran.load(), 1);
  // The executor still works afterwards.
  std::atomic<int> after{0};
  ex.ParallelFor(100, 0, [&](size_t) { after.fetch_add(1); });
  EXPECT_EQ(after.load(), 100);
}

TEST(ExecutorTest, SubmittedTasksAllRunBeforeDestruction) {
  std::atomic<int> ran{0};
  {
    Executor ex(2);
    for (int i = 0; i < 500; ++i) ex.Submit([&] { ran.fetch_add(1); });
  }
  EXPECT_EQ(ran.load(), 500);
}

TEST(ExecutorTest, LimitedRunsEveryTaskWithAtMostItsLimitAtOnce) {
  Executor ex(6);
  HighWater hw;
  std::atomic<int> ran{0};
  {
    Executor::Limited q(ex, 2);
    for (int i = 0; i < 200; ++i) {
      q.Submit([&] {
        hw.Enter();
        volatile uint64_t x = 0;
        for (int k = 0; k < 5000; ++k) x = x + k;
        hw.Leave();
        ran.fetch_add(1);
      });
    }
  }  // waits for every task
  EXPECT_EQ(ran.load(), 200);
  EXPECT_LE(hw.peak.load(), 2);
  EXPECT_GE(hw.peak.load(), 1);
}

TEST(ExecutorTest, AsyncGetRunsItHereWhenNoWorkerIsFree) {
  Executor ex(1);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false, blocked = false;
  ex.Submit([&] {  // occupies the only worker until released
    std::unique_lock lock(mu);
    blocked = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::minutes(2), [&] { return blocked; }));
  }
  auto f = ex.Async([] { return std::this_thread::get_id(); });
  EXPECT_EQ(f.Get(), std::this_thread::get_id());
  // A cancelled one never runs.
  std::atomic<bool> ran{false};
  {
    auto g = ex.Async([&] {
      ran = true;
      return 1;
    });
  }
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  auto h = ex.Async([] { return 42; });
  EXPECT_EQ(h.Get(), 42);
  EXPECT_FALSE(ran.load());
  auto e = ex.Async([]() -> int { throw std::runtime_error("async"); });
  EXPECT_THROW(e.Get(), std::runtime_error);
}

TEST(ExecutorTest, AForkedChildCanUseIt) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer stops a child of a multi-threaded fork that starts threads "
                  "(die_after_fork); the plain and ASan builds run this test";
#endif
  Executor ex(2);
  Executor::Limited q(ex, 1);
  // Workers started in the parent, and one busy at fork time.
  std::atomic<int> warm{0};
  ex.ParallelFor(100, 0, [&](size_t) { warm.fetch_add(1); });
  ASSERT_EQ(warm.load(), 100);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  ex.Submit([&] {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return release; });
  });
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::atomic<int> hits{0};
    ex.ParallelFor(1000, 0, [&](size_t) { hits.fetch_add(1); });
    Executor::Default().ParallelFor(1000, 0, [&](size_t) { hits.fetch_add(1); });
    std::mutex qmu;
    std::condition_variable qcv;
    int queued = 0;
    for (int i = 0; i < 10; ++i) {
      q.Submit([&] {
        std::lock_guard lock(qmu);
        ++queued;
        qcv.notify_all();
      });
    }
    std::atomic<int> submitted{0};
    {
      Executor child(2);
      for (int i = 0; i < 10; ++i) child.Submit([&] { submitted.fetch_add(1); });
    }
    auto f = ex.Async([] { return 7; });
    const int v = f.Get();
    bool all_queued;
    {  // the Limited queue's tasks run on the child's fresh workers
      std::unique_lock lock(qmu);
      all_queued = qcv.wait_for(lock, std::chrono::minutes(2), [&] { return queued == 10; });
    }
    ::_exit(hits.load() == 2000 && submitted.load() == 10 && v == 7 && all_queued ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace layercache
