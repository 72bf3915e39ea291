// Executor: one bounded pool of worker threads for the library's
// per-operation parallelism (chunk hashing and copies of a disk read or
// write, range downloads, Redis node groups, quantization kernels, prefetch,
// remote publishing). Nothing in the library starts threads per call; it
// runs its parts on an executor.
//
// - A LayerCache owns one, sized by LayerCacheOptions::worker_threads, and
//   hands it to its tiers, so one cache's parallelism is bounded by one pool.
//   Code without a cache (free functions, the CLI) uses Executor::Default().
// - Executor::Current() is what parallel code runs on: the executor of the
//   innermost Executor::Scope on this thread, else the executor whose worker
//   this thread is, else Default(). Work started inside a pool task therefore
//   stays on that pool.
// - Workers start on demand (an executor nobody uses has no threads) up to
//   threads(); they are never more.
// - ParallelFor is fork-join and the CALLING thread takes part: helpers are
//   queued tasks that take items only if they start before the items run
//   out. A saturated pool or a nested ParallelFor in a pool task can
//   therefore never deadlock (in the worst case the caller runs every item).
// - Fork: a child process inherits no worker threads. Every executor (and
//   Limited queue) starts afresh in the child (pthread_atfork); work the
//   parent had queued stays the parent's.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace layercache {

// One per hardware thread (at least 1).
unsigned HardwareThreads();

struct ForkRegistry;

class Executor {
 public:
  // The worker count a pool gets for `threads` 0: the hardware threads, but
  // at least kMinDefaultThreads, since much of the work is I/O that wants
  // more requests in flight than there are cores (O_DIRECT reads at queue
  // depth 16, range downloads, Redis node groups).
  static constexpr unsigned kMinDefaultThreads = 16;
  static constexpr unsigned kMaxThreads = 1024;
  static unsigned DefaultThreads();

  // `threads` workers at most (0: DefaultThreads(); capped at kMaxThreads).
  explicit Executor(unsigned threads = 0);
  // Runs the tasks already queued, then joins the workers.
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // The process-wide executor (DefaultThreads() workers), for code that has
  // no cache. Never destroyed.
  static Executor& Default();
  // See the top of this file.
  static Executor& Current();

  // Makes `executor` Current() on this thread while it lives (null: no change).
  class Scope {
   public:
    explicit Scope(Executor* executor);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Executor* previous_;
    bool set_;
  };

  unsigned threads() const { return threads_; }
  // Workers started so far (for tests and stats).
  unsigned started() const;

  // Queues `task` for a worker. A task should not block on work queued
  // behind it; to wait for parts, use ParallelFor or Async.
  void Submit(std::function<void()> task);

  // Runs fn(i) for every i in [0, n) exactly once, on at most `max_parallel`
  // threads at once, the caller included (0: threads() + 1), and returns
  // when all have returned. If fn throws, items not yet started are skipped
  // and the first exception is rethrown here after the running ones return.
  template <class F>
  void ParallelFor(size_t n, unsigned max_parallel, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    ParallelForImpl(
        n, max_parallel, [](void* f, size_t i) { (*static_cast<Fn*>(f))(i); },
        const_cast<void*>(static_cast<const void*>(&fn)), {}, nullptr);
  }
  // The same, and while the caller, out of items, waits for helpers still
  // running theirs, it calls tick() every `period` (e.g. to report progress
  // from the caller's thread).
  template <class F>
  void ParallelFor(size_t n, unsigned max_parallel, F&& fn, std::chrono::milliseconds period,
                   const std::function<void()>& tick) {
    using Fn = std::remove_reference_t<F>;
    ParallelForImpl(
        n, max_parallel, [](void* f, size_t i) { (*static_cast<Fn*>(f))(i); },
        const_cast<void*>(static_cast<const void*>(&fn)), period, &tick);
  }

  // A result computed by Async: Get() returns it, running the function on
  // the calling thread if no worker has started it yet (so waiting never
  // depends on a free worker). Destroying a Future whose function has not
  // started cancels it; one whose function runs waits for it.
  template <class R>
  class Future {
   public:
    Future() = default;
    Future(Future&&) noexcept = default;
    Future& operator=(Future&& other) noexcept {
      if (this != &other) {
        Abandon();
        state_ = std::move(other.state_);
      }
      return *this;
    }
    ~Future() { Abandon(); }
    bool valid() const { return state_ != nullptr; }
    R Get() {
      auto st = std::move(state_);
      st->Run();
      std::unique_lock lock(st->mu);
      st->cv.wait(lock, [&] { return st->phase == Phase::kDone; });
      if (st->error) std::rethrow_exception(st->error);
      return std::move(*st->value);
    }

   private:
    friend class Executor;
    enum class Phase { kPending, kRunning, kDone, kCancelled };
    struct State {
      std::mutex mu;
      std::condition_variable cv;
      Phase phase = Phase::kPending;
      std::function<R()> fn;
      std::optional<R> value;
      std::exception_ptr error;
      void Run() {
        {
          std::lock_guard lock(mu);
          if (phase != Phase::kPending) return;
          phase = Phase::kRunning;
        }
        std::optional<R> v;
        std::exception_ptr e;
        try {
          v.emplace(fn());
        } catch (...) {
          e = std::current_exception();
        }
        std::lock_guard lock(mu);
        value = std::move(v);
        error = e;
        fn = nullptr;
        phase = Phase::kDone;
        cv.notify_all();
      }
    };
    void Abandon() {
      if (!state_) return;
      std::unique_lock lock(state_->mu);
      if (state_->phase == Phase::kPending) {
        state_->phase = Phase::kCancelled;
        state_->fn = nullptr;
      } else {
        state_->cv.wait(lock, [&] { return state_->phase == Phase::kDone; });
      }
      lock.unlock();
      state_.reset();
    }
    std::shared_ptr<State> state_;
  };

  // Starts fn() on a worker; see Future.
  template <class F, class R = std::invoke_result_t<F&>>
  Future<R> Async(F&& fn) {
    static_assert(!std::is_void_v<R>, "Async needs a result");
    Future<R> f;
    f.state_ = std::make_shared<typename Future<R>::State>();
    f.state_->fn = std::forward<F>(fn);
    Submit([st = f.state_] { st->Run(); });
    return f;
  }

  // A queue on an executor that runs at most `max_running` of its tasks at
  // once, in order (e.g. prefetch keeps its prefetch_threads limit while
  // running on the cache's shared workers). Destruction waits until every
  // task submitted has run.
  class Limited {
   public:
    Limited(Executor& executor, unsigned max_running);
    ~Limited();
    Limited(const Limited&) = delete;
    Limited& operator=(const Limited&) = delete;
    void Submit(std::function<void()> task);
    unsigned max_running() const { return max_running_; }

   private:
    friend class Executor;
    friend struct ForkRegistry;
    struct State;
    static void Pump(const std::shared_ptr<State>& st);
    Executor& executor_;
    const unsigned max_running_;
    std::shared_ptr<State> state_;
  };

 private:
  struct State;
  friend struct ForkRegistry;
  void ParallelForImpl(size_t n, unsigned max_parallel, void (*call)(void*, size_t), void* fn,
                       std::chrono::milliseconds period, const std::function<void()>* tick);
  static void WorkerLoop(Executor* self, State* st);

  const unsigned threads_;
  State* state_;  // replaced (the old one left alone) in a forked child
};

}  // namespace layercache
