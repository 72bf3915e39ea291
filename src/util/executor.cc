#include "util/executor.h"

#include <pthread.h>

#include <set>
#include <system_error>

namespace layercache {

unsigned HardwareThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

unsigned Executor::DefaultThreads() { return std::max(kMinDefaultThreads, HardwareThreads()); }

struct Executor::State {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> tasks;
  std::vector<std::thread> workers;
  unsigned idle = 0;
  bool stop = false;
};

struct Executor::Limited::State {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> tasks;
  unsigned running = 0;  // pumps queued or running on the executor
};

namespace {

thread_local Executor* t_scope = nullptr;   // innermost Executor::Scope
thread_local Executor* t_worker = nullptr;  // the executor whose worker this is

}  // namespace

// Every live executor and Limited queue, so that a forked child can give
// each a fresh state: the child has none of the parent's threads, and any
// mutex another thread held at fork() stays locked there forever.
struct ForkRegistry {
  std::mutex mu;
  std::set<Executor*> executors;
  std::set<Executor::Limited*> queues;

  static ForkRegistry& Get() {
    static ForkRegistry* r = [] {
      auto* reg = new ForkRegistry;  // never destroyed: used by atfork handlers
      ::pthread_atfork([] { Get().mu.lock(); }, [] { Get().mu.unlock(); },
                       [] {
                         ForkRegistry& g = Get();
                         // Only this thread exists now. The old states are
                         // left as they are (their locks may be held).
                         for (Executor* e : g.executors) e->state_ = new Executor::State;
                         for (Executor::Limited* q : g.queues) {
                           new std::shared_ptr<Executor::Limited::State>(std::move(q->state_));
                           q->state_ = std::make_shared<Executor::Limited::State>();
                         }
                         g.mu.unlock();
                       });
      return reg;
    }();
    return *r;
  }
};

Executor::Executor(unsigned threads)
    : threads_(std::min(kMaxThreads, threads == 0 ? DefaultThreads() : threads)),
      state_(new State) {
  ForkRegistry& r = ForkRegistry::Get();
  std::lock_guard lock(r.mu);
  r.executors.insert(this);
}

Executor::~Executor() {
  {
    ForkRegistry& r = ForkRegistry::Get();
    std::lock_guard lock(r.mu);
    r.executors.erase(this);
  }
  State* st = state_;
  {
    std::lock_guard lock(st->mu);
    st->stop = true;
  }
  st->cv.notify_all();
  bool own_worker = false;
  for (auto& w : st->workers) {
    if (w.get_id() == std::this_thread::get_id()) {
      w.detach();  // destroyed by one of its own tasks: that worker still uses the state
      own_worker = true;
    } else {
      w.join();
    }
  }
  if (!own_worker) delete st;
}

Executor& Executor::Default() {
  static Executor* d = new Executor(0);  // never destroyed: workers may outlive main()
  return *d;
}

Executor& Executor::Current() {
  if (t_scope != nullptr) return *t_scope;
  if (t_worker != nullptr) return *t_worker;
  return Default();
}

Executor::Scope::Scope(Executor* executor) : previous_(t_scope), set_(executor != nullptr) {
  if (set_) t_scope = executor;
}

Executor::Scope::~Scope() {
  if (set_) t_scope = previous_;
}

unsigned Executor::started() const {
  std::lock_guard lock(state_->mu);
  return static_cast<unsigned>(state_->workers.size());
}

void Executor::WorkerLoop(Executor* self, State* st) {
  t_worker = self;
  std::unique_lock lock(st->mu);
  for (;;) {
    if (st->tasks.empty()) {
      if (st->stop) return;
      ++st->idle;
      st->cv.wait(lock, [st] { return st->stop || !st->tasks.empty(); });
      --st->idle;
      continue;
    }
    std::function<void()> task = std::move(st->tasks.front());
    st->tasks.pop_front();
    lock.unlock();
    task();
    task = nullptr;  // its captures go before the next task
    lock.lock();
  }
}

void Executor::Submit(std::function<void()> task) {
  State* st = state_;
  std::unique_lock lock(st->mu);
  st->tasks.push_back(std::move(task));
  if (st->tasks.size() > st->idle && st->workers.size() < threads_) {
    try {
      st->workers.emplace_back(&Executor::WorkerLoop, this, st);
    } catch (const std::system_error&) {
      // No thread to be had (a limit on threads): run it here if nobody else can.
      if (st->workers.empty()) {
        std::function<void()> t = std::move(st->tasks.back());
        st->tasks.pop_back();
        lock.unlock();
        t();
        return;
      }
    }
  }
  lock.unlock();
  st->cv.notify_one();
}

namespace {

struct ForState {
  size_t n = 0;
  void (*call)(void*, size_t) = nullptr;
  void* fn = nullptr;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::condition_variable cv;
  unsigned active = 0;  // helpers taking items
  bool closed = false;  // the caller has returned: late helpers do nothing
  std::exception_ptr error;

  void RunItems() {
    for (size_t i; !failed.load(std::memory_order_relaxed) &&
                   (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      try {
        call(fn, i);
      } catch (...) {
        std::lock_guard lock(mu);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  }
};

}  // namespace

void Executor::ParallelForImpl(size_t n, unsigned max_parallel, void (*call)(void*, size_t),
                               void* fn, std::chrono::milliseconds period,
                               const std::function<void()>* tick) {
  if (n == 0) return;
  size_t parallel = max_parallel == 0 ? size_t{threads_} + 1 : max_parallel;
  parallel = std::min({parallel, n, size_t{threads_} + 1});
  if (parallel <= 1) {
    for (size_t i = 0; i < n; ++i) call(fn, i);
    return;
  }
  auto st = std::make_shared<ForState>();
  st->n = n;
  st->call = call;
  st->fn = fn;
  for (size_t h = 1; h < parallel; ++h) {
    Submit([st] {
      {
        std::lock_guard lock(st->mu);
        if (st->closed || st->next.load(std::memory_order_relaxed) >= st->n) return;
        ++st->active;
      }
      st->RunItems();
      std::lock_guard lock(st->mu);
      if (--st->active == 0) st->cv.notify_all();
    });
  }
  st->RunItems();
  std::unique_lock lock(st->mu);
  if (tick != nullptr && *tick) {
    while (st->active != 0) {
      st->cv.wait_for(lock, period);
      if (st->active == 0) break;
      lock.unlock();
      (*tick)();
      lock.lock();
    }
  } else {
    st->cv.wait(lock, [&] { return st->active == 0; });
  }
  st->closed = true;
  if (st->error) std::rethrow_exception(st->error);
}

// ---- Limited ----------------------------------------------------------------

Executor::Limited::Limited(Executor& executor, unsigned max_running)
    : executor_(executor),
      max_running_(std::max(1u, max_running)),
      state_(std::make_shared<State>()) {
  ForkRegistry& r = ForkRegistry::Get();
  std::lock_guard lock(r.mu);
  r.queues.insert(this);
}

Executor::Limited::~Limited() {
  {
    ForkRegistry& r = ForkRegistry::Get();
    std::lock_guard lock(r.mu);
    r.queues.erase(this);
  }
  std::unique_lock lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->tasks.empty() && state_->running == 0; });
}

void Executor::Limited::Pump(const std::shared_ptr<State>& st) {
  std::unique_lock lock(st->mu);
  while (!st->tasks.empty()) {
    std::function<void()> task = std::move(st->tasks.front());
    st->tasks.pop_front();
    lock.unlock();
    task();
    task = nullptr;
    lock.lock();
  }
  --st->running;
  st->cv.notify_all();
}

void Executor::Limited::Submit(std::function<void()> task) {
  std::shared_ptr<State> st = state_;
  bool start = false;
  {
    std::lock_guard lock(st->mu);
    st->tasks.push_back(std::move(task));
    if (st->running < max_running_) {
      ++st->running;
      start = true;
    }
  }
  if (start) executor_.Submit([st] { Pump(st); });
}

}  // namespace layercache
