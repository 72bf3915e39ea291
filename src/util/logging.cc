#include "util/logging.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace layercache {

LogLevel CurrentLogLevel() {
  static const LogLevel level = [] {
    const char* v = std::getenv("LAYERCACHE_LOG");
    if (v == nullptr) return LogLevel::kWarn;
    if (std::strcmp(v, "debug") == 0) return LogLevel::kDebug;
    if (std::strcmp(v, "info") == 0) return LogLevel::kInfo;
    if (std::strcmp(v, "error") == 0) return LogLevel::kError;
    if (std::strcmp(v, "off") == 0) return LogLevel::kOff;
    return LogLevel::kWarn;
  }();
  return level;
}

void Log(LogLevel level, const std::string& message) {
  if (level < CurrentLogLevel() || level == LogLevel::kOff) return;
  static const char* kNames[] = {"debug", "info", "warning", "error"};
  // One fprintf per line keeps lines from different threads whole.
  std::fprintf(stderr, "layercache %s: %s\n", kNames[static_cast<int>(level)], message.c_str());
}

}  // namespace layercache
