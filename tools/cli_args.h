// Strict parsing of the command line's numbers: a value out of range or not
// wholly a number is a usage error naming the accepted range, never clamped.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace layercache::cli {

// The exit codes of every `layercache` command (README "Exit codes").
inline constexpr int kExitOk = 0;
inline constexpr int kExitNotFound = 1;  // a miss, or corruption found (get, verify, inspect)
inline constexpr int kExitUsage = 2;     // bad arguments or options
inline constexpr int kExitError = 3;     // anything else: I/O, network, unreadable input

// Throws Error(Status::InvalidArgument("NAME must be an integer in LO..HI (got TEXT)")).
int64_t ParseIntInRange(const std::string& name, const std::string& text, int64_t lo, int64_t hi);
// Finite decimal in [lo, hi] (lo exclusive when lo_open).
double ParseDoubleInRange(const std::string& name, const std::string& text, double lo, double hi,
                          bool lo_open);

// Options whose values are checked by the functions above while parsing.
CLI::Option* AddInt(CLI::App* app, const std::string& flags, int64_t* target, int64_t lo,
                    int64_t hi, const std::string& help);
CLI::Option* AddInt(CLI::App* app, const std::string& flags, int* target, int lo, int hi,
                    const std::string& help);
CLI::Option* AddDouble(CLI::App* app, const std::string& flags, double* target, double lo,
                       double hi, bool lo_open, const std::string& help);

// "1.5 GiB"-style sizes: 1024-based, B, KiB, MiB, GiB, TiB.
std::string HumanSize(uint64_t bytes);
// Parses "500M", "2G", "1.5GiB", "1234" (bytes). Throws Error (kInvalidArgument).
uint64_t ParseSize(const std::string& name, const std::string& text);
// Parses "30d", "12h", "90m", "45s", "2w" into seconds. Throws Error (kInvalidArgument).
int64_t ParseAge(const std::string& name, const std::string& text);
// "3 minutes ago", "2 days ago", "just now".
std::string RelativeTime(int64_t then_ns, int64_t now_ns);

}  // namespace layercache::cli
