// Minimal leveled logging to stderr. The level comes from $LAYERCACHE_LOG
// (debug, info, warn (default), error, off).
#pragma once

#include <string>

namespace layercache {

enum class LogLevel { kDebug = 0, kInfo, kWarn, kError, kOff };

LogLevel CurrentLogLevel();
void Log(LogLevel level, const std::string& message);

inline void LogWarn(const std::string& m) { Log(LogLevel::kWarn, m); }
inline void LogInfo(const std::string& m) { Log(LogLevel::kInfo, m); }
inline void LogDebug(const std::string& m) { Log(LogLevel::kDebug, m); }

}  // namespace layercache
