// The `layercache` command-line tool's subcommands.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "layercache/layer_cache.h"
#include "layercache/options.h"
#include "quant_cli.h"

namespace layercache::cli {

struct Global {
  LayerCacheOptions options;
  bool json = false;
  // Which cache settings the command line gave (they override the cache's
  // stored settings for this call only).
  bool budget_given = false;
  bool memory_budget_given = false;
  bool compression_given = false;
  bool level_given = false;
  bool checksum_given = false;
};

// The lifetime figures of `s` (every process that used the cache) as one
// line, "" when the cache keeps none.
std::string LifetimeLine(const CacheStats& s);
// The options a command opens the cache with: the cache's stored settings
// (include/layercache/cache_settings.h), overridden by the command line. A
// cache without stored settings gets no budget (never evicts) unless the
// command line gives one; a new cache records the command line's settings.
LayerCacheOptions ResolveOptions(const Global& g);

// Entries present before a command, to report what it evicted afterwards.
class EvictionReport {
 public:
  explicit EvictionReport(LayerCache& cache);
  // Entries gone since the constructor that the command did not remove
  // itself, as "evicted 2 layers, 3.1 GiB (budget 50 GiB)"; "" when none.
  // Also counts them for Json().
  std::string Describe(LayerCache& cache, const std::vector<LayerKey>& removed_on_purpose = {});
  uint64_t evicted_entries() const { return evicted_entries_; }
  uint64_t evicted_bytes() const { return evicted_bytes_; }

 private:
  std::map<std::string, uint64_t> before_;  // digest -> bytes
  uint64_t evicted_entries_ = 0;
  uint64_t evicted_bytes_ = 0;
};

// format: text, json or prometheus.
int Stats(const Global& g, const std::string& format);
int Verify(const Global& g, const std::string& model);
int Optimize(const Global& g);
int Clear(const Global& g);
int Invalidate(const Global& g, const std::string& model, std::optional<int64_t> layer,
               const std::string& revision = "");
int Inspect(const std::string& file, bool json);
int Put(const Global& g, const std::string& model, int64_t layer, const std::string& file,
        const std::string& quant, const std::string& revision, const QuantFlags& qf = {});
int Get(const Global& g, const std::string& model, int64_t layer, const std::string& quant,
        const std::string& out, const std::string& revision = "");

// `ls`: sort keys model, layer, size, accessed, created (":asc"/":desc");
// filters model=GLOB, quant=Q, revision=R, size>N, size<N, accessed>AGE,
// accessed<AGE (every filter must hold).
struct ListOptions {
  std::string sort = "model";
  std::vector<std::string> filters;
  bool quiet = false;   // entry ids only
  bool models = false;  // the per-model summary only
};
int List(const Global& g, const ListOptions& o);

// `rm`: targets are model ids or entry ids (as `ls -q` prints), narrowed by
// layers, quantization mode and revision.
struct RemoveOptions {
  std::vector<std::string> targets;
  std::string layers;                   // "" : all
  std::optional<std::string> quant;     // "" : none
  std::optional<std::string> revision;  // prefix of at least 7 characters, or ""
  bool dry_run = false;
  bool yes = false;
};
int Remove(const Global& g, const RemoveOptions& o);

// `prune`: old revisions nothing refers to, and/or entries not read for a while.
struct PruneOptions {
  std::string older_than;  // "" : no age limit
  bool keep_revisions = false;
  std::vector<std::string> models;  // "" : every model
  bool dry_run = false;
  bool yes = false;
};
int Prune(const Global& g, const PruneOptions& o);

// `config`: prints the stored settings; sets them with KEY=VALUE pairs.
int Config(const Global& g, const std::vector<std::string>& sets);

// "all" (empty result), "5", "0-27", "0,3,5-7". Throws Error (kInvalidArgument).
std::vector<int64_t> ParseLayers(const std::string& spec);

struct FetchOptions {
  std::string repo_id;
  std::string layers = "all";
  std::string model_id;  // "" : the repo id
  std::string filename;
  bool non_layer = false;
  bool progress = false;  // the bar on stderr also when it is no terminal
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

// Columns of the terminal on stdout (0 when it is not a terminal).
int TerminalColumns();

}  // namespace layercache::cli
