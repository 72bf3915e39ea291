// The bridge from the C++ library's log sink to Python's `logging` module
// (layercache/_logbridge.py drives it).
//
// The sink runs on whatever thread logs, C++ worker threads included, and
// possibly while that thread holds a lock of the cache. It therefore never
// touches Python: it appends the record to a bounded queue and returns. A
// Python thread waits on the queue (with the GIL released) and emits the
// records to logging.getLogger("layercache"). No thread ever waits for the
// GIL while holding a cache lock, and nothing waits for Python at interpreter
// shutdown: the package's atexit hook closes the queue and restores the
// default sink (stderr) before the interpreter goes away.
#include <pthread.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "layercache/logging.h"

namespace py = pybind11;

namespace layercache {
namespace {

constexpr size_t kMaxQueued = 10000;  // beyond: counted as dropped, reported once drained

struct LogQueue {
  std::mutex mu;
  std::condition_variable cv;  // records arrived, closed, or records emitted
  std::deque<std::pair<int, std::string>> records;
  uint64_t pushed = 0;   // records accepted (dropped ones included)
  uint64_t handled = 0;  // records taken and reported done (or dropped)
  uint64_t dropped = 0;  // not yet reported
  bool closed = false;
};

// Leaked on purpose: C++ threads may still log while the module is torn down.
// Replaced in a forked child, where the parent's lock may have been held.
LogQueue* g_queue = new LogQueue;

void Push(LogLevel level, const std::string& message) {
  LogQueue* q = g_queue;
  {
    std::lock_guard lock(q->mu);
    ++q->pushed;
    if (q->records.size() >= kMaxQueued) {
      ++q->dropped;
      ++q->handled;
    } else {
      q->records.emplace_back(static_cast<int>(level), message);
    }
  }
  q->cv.notify_all();
}

std::vector<std::pair<int, std::string>> TakeLocked(LogQueue* q) {
  std::vector<std::pair<int, std::string>> out;
  if (q->dropped != 0) {
    out.emplace_back(static_cast<int>(LogLevel::kWarn),
                     std::to_string(q->dropped) + " log messages were dropped (more than " +
                         std::to_string(kMaxQueued) + " waiting for Python's logging)");
    q->dropped = 0;
    ++q->pushed;  // the report itself is one more record to handle
  }
  out.reserve(out.size() + q->records.size());
  for (auto& r : q->records) out.push_back(std::move(r));
  q->records.clear();
  return out;
}

void ForkPrepare() { g_queue->mu.lock(); }
void ForkParent() { g_queue->mu.unlock(); }
void ForkChild() {
  // Only this thread exists in the child: start over with a fresh queue (the
  // old one's mutex is held and its condition variable has waiters that do
  // not exist here). The child's Python side starts a new drain thread.
  g_queue = new LogQueue;
}

}  // namespace

void RegisterLogBindings(py::module_& parent) {
  static std::once_flag atfork_once;
  std::call_once(atfork_once, [] { ::pthread_atfork(ForkPrepare, ForkParent, ForkChild); });

  py::module_ m = parent.def_submodule("log", "the C++ log sink's queue (layercache._logbridge)");
  m.def(
      "install", [] { SetLogSink(Push); }, "Routes the library's messages into the queue.");
  m.def(
      "uninstall", [] { SetLogSink({}); },
      "Restores the default sink (one line on stderr per message).");
  m.def(
      "wait",
      [](double timeout_s) -> py::object {
        std::vector<std::pair<int, std::string>> out;
        bool closed;
        {
          py::gil_scoped_release release;
          LogQueue* q = g_queue;
          std::unique_lock lock(q->mu);
          const auto ms = static_cast<int64_t>(timeout_s * 1000);
          q->cv.wait_for(lock, std::chrono::milliseconds(ms < 0 ? 0 : ms),
                         [q] { return q->closed || !q->records.empty() || q->dropped != 0; });
          out = TakeLocked(q);
          closed = q->closed;
        }
        if (out.empty() && closed) return py::none();
        return py::cast(out);
      },
      py::arg("timeout_s"),
      "Waits up to timeout_s for records; returns [(level, message)], or None once closed and "
      "empty. Report each batch with done(len(batch)) once emitted.");
  m.def(
      "done",
      [](uint64_t n) {
        LogQueue* q = g_queue;
        {
          std::lock_guard lock(q->mu);
          q->handled += n;
        }
        q->cv.notify_all();
      },
      py::arg("n"));
  m.def(
      "flush",
      [](double timeout_s) {
        py::gil_scoped_release release;
        LogQueue* q = g_queue;
        std::unique_lock lock(q->mu);
        const uint64_t target = q->pushed;
        const auto ms = static_cast<int64_t>(timeout_s * 1000);
        return q->cv.wait_for(lock, std::chrono::milliseconds(ms < 0 ? 0 : ms),
                              [q, target] { return q->handled >= target; });
      },
      py::arg("timeout_s"),
      "Waits until every record queued before the call was emitted (by the drain thread); "
      "False on timeout.");
  m.def(
      "close",
      [] {
        LogQueue* q = g_queue;
        {
          std::lock_guard lock(q->mu);
          q->closed = true;
        }
        q->cv.notify_all();
      },
      "Wakes the drain thread for the last time: wait() returns what is left, then None.");
  m.def(
      "set_level", [](const std::string& name) { SetLogLevel(ParseLogLevel(name)); },
      py::arg("level"), "debug, info, warn(ing), error or off; ValueError otherwise.");
  m.def("get_level", [] { return std::string(LogLevelName(GetLogLevel())); });
  m.def(
      "parse_level", [](const std::string& name) { return static_cast<int>(ParseLogLevel(name)); },
      py::arg("level"));
  m.def(
      "emit",
      [](const std::string& level, const std::string& message, int threads) {
        // Through the library's logger (level filter, sink), from the calling
        // thread or from `threads` new C++ threads at once: for tests.
        const LogLevel l = ParseLogLevel(level);
        py::gil_scoped_release release;
        if (threads <= 0) return Log(l, message);
        std::vector<std::thread> ts;
        for (int i = 0; i < threads; ++i)
          ts.emplace_back([l, message, i] { Log(l, message + " #" + std::to_string(i)); });
        for (auto& t : ts) t.join();
      },
      py::arg("level"), py::arg("message"), py::arg("threads") = 0);
}

}  // namespace layercache
