// The `layercache` command-line tool's subcommands.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

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
