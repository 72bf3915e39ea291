// Leveled logging (the public side is include/layercache/logging.h).
#pragma once

#include <string>

#include "layercache/logging.h"

namespace layercache {

LogLevel CurrentLogLevel();
void Log(LogLevel level, const std::string& message);

inline void LogWarn(const std::string& m) { Log(LogLevel::kWarn, m); }
inline void LogInfo(const std::string& m) { Log(LogLevel::kInfo, m); }
inline void LogDebug(const std::string& m) { Log(LogLevel::kDebug, m); }

}  // namespace layercache
