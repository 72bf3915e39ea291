// `layercache bench`: how fast the cache is on this machine, against this
// machine's limits, measured in one run on the user's own cache directory.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "commands.h"

namespace layercache::cli {

struct BenchOptions {
  std::string shape = "7b";  // 7b, small, or HIDDEN,KV,INTERMEDIATE
  int reps = 3;
  std::string modes = "all";  // all, or a comma list of auto, direct, buffered, mapped
  bool json = false;
  bool keep = false;
  // Internal: time one get_layer in this (new) process and print the seconds.
  std::string child_dir;
  std::string child_mode;
};

// Adds the subcommand to `app`; run it with Bench() when it was given.
CLI::App* AddBenchCommand(CLI::App& app, BenchOptions* o);
int Bench(const Global& g, const BenchOptions& o);

}  // namespace layercache::cli
