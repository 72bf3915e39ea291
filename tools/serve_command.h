// `layercache serve` and `layercache import --hf-cache`: options and entry points.
#pragma once

#include <string>
#include <vector>

#include "commands.h"

namespace layercache::cli {

struct ServeOptions {
  std::string dir;                 // a model directory (with repo_id)
  std::string repo_id;             // its repository id; with hf_cache: serve only this one
  std::vector<std::string> repos;  // more "ID=DIR" pairs
  bool use_hf_cache = false;       // --hf-cache given
  std::string hf_cache;            // its value ("" : HF_HUB_CACHE, HF_HOME/hub, ~/.cache/...)
  std::string host = "127.0.0.1";
  int port = 0;
  int threads = 16;
  int max_connections = 256;
  int timeout_s = 30;
  std::string access_log;
};

int Serve(const ServeOptions& o);

// Imports `repo_id` at `revision` from the Hugging Face cache, keyed by the
// snapshot's commit.
int ImportHfCache(const Global& g, const std::string& cache_dir, const std::string& repo_id,
                  const std::string& revision, const std::string& model_id,
                  const std::string& layers, const std::string& pattern);

}  // namespace layercache::cli
