#include "util/logging.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "layercache/status.h"

namespace layercache {
namespace {

std::atomic<int>& Level() {
  static std::atomic<int> level = [] {
    const char* v = std::getenv("LAYERCACHE_LOG");
    if (v == nullptr || *v == '\0') return static_cast<int>(LogLevel::kWarn);
    try {
      return static_cast<int>(ParseLogLevel(v));
    } catch (const Error& e) {
      std::fprintf(stderr, "layercache warning: LAYERCACHE_LOG: %s; using warn\n",
                   e.status().message().c_str());
      return static_cast<int>(LogLevel::kWarn);
    }
  }();
  return level;
}

std::mutex g_sink_mu;
std::shared_ptr<const LogSink> g_sink;  // null: stderr

}  // namespace

LogLevel ParseLogLevel(const std::string& name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  if (name == "off") return LogLevel::kOff;
  throw Error(Status::InvalidArgument("unknown log level \"" + name +
                                      "\"; use debug, info, warn, error or off"));
}

const char* LogLevelName(LogLevel level) {
  static const char* kNames[] = {"debug", "info", "warning", "error", "off"};
  return kNames[static_cast<int>(level)];
}

LogLevel CurrentLogLevel() {
  return static_cast<LogLevel>(Level().load(std::memory_order_relaxed));
}
LogLevel GetLogLevel() { return CurrentLogLevel(); }
void SetLogLevel(LogLevel level) { Level().store(static_cast<int>(level)); }

void SetLogSink(LogSink sink) {
  std::shared_ptr<const LogSink> s =
      sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
  std::lock_guard lock(g_sink_mu);
  g_sink = std::move(s);
}

void Log(LogLevel level, const std::string& message) {
  if (level < CurrentLogLevel() || level == LogLevel::kOff) return;
  std::shared_ptr<const LogSink> sink;
  {
    std::lock_guard lock(g_sink_mu);
    sink = g_sink;
  }
  if (sink) {
    (*sink)(level, message);  // not under the lock: a sink may take its own locks
    return;
  }
  // One fprintf per line keeps lines from different threads whole.
  std::fprintf(stderr, "layercache %s: %s\n", LogLevelName(level), message.c_str());
}

}  // namespace layercache
