// The `layercache` command-line tool's subcommands.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "layercache/layer_cache.h"
#include "layercache/options.h"

namespace layercache::cli {

struct Global {
  LayerCacheOptions options;
  bool json = false;
};

int Stats(const Global& g);
int List(const Global& g);
int Verify(const Global& g);
int Optimize(const Global& g);
int Clear(const Global& g);
int Invalidate(const Global& g, const std::string& model, std::optional<int64_t> layer);
int Inspect(const std::string& file, bool json);
int Put(const Global& g, const std::string& model, int64_t layer, const std::string& file,
        const std::string& quant);
int Get(const Global& g, const std::string& model, int64_t layer, const std::string& quant,
        const std::string& out);

// "all" (empty result), "5", "0-27", "0,3,5-7". Throws std::invalid_argument.
std::vector<int64_t> ParseLayers(const std::string& spec);

struct FetchOptions {
  std::string repo_id;
  std::string layers = "all";
  std::string model_id;  // "" : the repo id
  std::string filename;
  bool non_layer = false;
};
int Fetch(const Global& g, const FetchOptions& f, const DownloadOptions& d);
int Import(const Global& g, const std::string& dir, const std::string& model_id,
           const std::string& layers, const std::string& pattern);

struct DemoOptions {
  int64_t layers = 12;
  uint64_t hidden = 768;
  uint64_t intermediate = 2048;
  int passes = 3;
  bool keep = false;
  std::string workdir;  // empty: a fresh temp dir
};
int Demo(const DemoOptions& d);

}  // namespace layercache::cli
