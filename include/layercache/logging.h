// What the library says about itself (a corrupt entry removed, a write that
// failed, a download retried) and where it goes.
//
// By default, messages at or above the level go to stderr as one line each,
// "layercache warning: ...". The level starts from $LAYERCACHE_LOG (debug,
// info, warn, error or off; default warn); in the library an unknown value is
// reported once on stderr and the default used (the `layercache` CLI and the
// Python package refuse it). The Python package routes messages to the
// `logging` module's "layercache" logger.
#pragma once

#include <functional>
#include <string>

namespace layercache {

enum class LogLevel { kDebug = 0, kInfo, kWarn, kError, kOff };

// "debug", "info", "warn" (or "warning"), "error", "off"; throws
// layercache::Error (kInvalidArgument) naming them otherwise.
LogLevel ParseLogLevel(const std::string& name);
// "debug", "info", "warning", "error", "off".
const char* LogLevelName(LogLevel level);

LogLevel GetLogLevel();
void SetLogLevel(LogLevel level);

// Receives each message at or above the level. It may be called from several
// threads at once and must not call back into the cache.
using LogSink = std::function<void(LogLevel level, const std::string& message)>;
// Replaces the sink; an empty function restores the default (stderr).
void SetLogSink(LogSink sink);

// Sends a message through the level filter and the sink, as the library's
// own messages go (for an application that wants its messages beside them).
void Log(LogLevel level, const std::string& message);

}  // namespace layercache
