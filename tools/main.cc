// layercache: inspect and manage a layer cache from the shell.
//
// Exit codes, the same for every command (README "Exit codes"): 0 success;
// 1 a miss or corruption found (get, verify, inspect); 2 bad arguments;
// 3 any other error (I/O, network, an unreadable input file).
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <stdexcept>

#include "bench_command.h"
#include "cli_args.h"
#include "commands.h"
#include "layercache/logging.h"
#include "layercache/status.h"
#include "layercache/version.h"
#include "serve_command.h"

int main(int argc, char** argv) {
  using namespace layercache;
  using cli::AddDouble;
  using cli::AddInt;
  constexpr int64_t kMaxLayer = INT64_MAX;
  // An unknown $LAYERCACHE_LOG is a usage error here (the library alone
  // reports it and uses warn).
  if (const char* env = std::getenv("LAYERCACHE_LOG"); env != nullptr && *env != '\0') {
    try {
      SetLogLevel(ParseLogLevel(env));
    } catch (const Error& e) {
      std::cerr << "layercache: LAYERCACHE_LOG: " << e.status().message() << "\n";
      return 2;
    }
  }
  CLI::App app{"layercache: a memory, SSD and Redis cache of model layers"};
  app.require_subcommand(1);
  // Global options are accepted before or after the subcommand.
  app.fallthrough();
  app.set_version_flag("--version", std::string("layercache ") + LAYERCACHE_VERSION);
  cli::Global g;
  app.add_option("--cache-dir", g.options.cache_dir,
                 "cache directory (default: $LAYERCACHE_DIR or ~/.cache/nexus/layers)");
  auto* budget_opt =
      AddDouble(&app, "--max-cache-size-gb", &g.options.max_cache_size_gb, 0, 1048576, true,
                "disk budget in GiB for this command only (default: the cache's "
                "stored budget, see `layercache config`)");
  auto* mem_opt = AddDouble(&app, "--max-memory-cache-size-gb", &g.options.max_memory_cache_size_gb,
                            0, 1048576, false, "memory tier budget in GiB (default 2)");
  std::string checksum;
  auto* checksum_opt =
      app.add_option("--checksum", checksum, "checksum for new entries: xxh3-128, md5 or sha256");
  auto* compress_opt = app.add_flag("--compress", g.options.enable_compression,
                                    "store new entries compressed (zstd, byte-grouped)");
  auto* level_opt = AddInt(&app, "--compression-level", &g.options.compression_level, 1, 9,
                           "zstd level of new compressed entries, 1-9");
  app.add_option("--remote", g.options.remote_urls,
                 "Redis of the cluster tier, redis://[user:password@]host:port; repeat for "
                 "Redis Cluster seeds (default: $LAYERCACHE_REMOTE)");
  AddInt(&app, "--remote-timeout-ms", &g.options.remote_timeout_ms, 1, 3'600'000,
         "Redis connect and read timeout (default 1000)");
  app.add_flag("--json", g.json, "print JSON (reporting commands)");

  auto* stats = app.add_subcommand("stats", "print cache statistics");
  stats->add_flag("--json", g.json, "print JSON (the get_stats() shape)");
  std::string stats_format = "text";
  stats->add_option("--format", stats_format, "text (default), json or prometheus")
      ->check(CLI::IsMember({"text", "json", "prometheus"}));
  cli::ListOptions lo;
  auto* ls = app.add_subcommand("ls", "list the cached layers, with a per-model summary");
  ls->add_flag("--json", g.json, "print JSON");
  ls->add_option("--sort", lo.sort,
                 "model (default), layer, size, accessed or created; :asc or :desc");
  ls->add_option("--filter", lo.filters,
                 "model=GLOB, quant=Q, revision=R, size>500M, size<1G, accessed>30d (not read "
                 "for 30 days), accessed<1h; repeat to combine");
  ls->add_flag("-q,--quiet", lo.quiet, "print entry ids only (for rm)");
  ls->add_flag("--models", lo.models, "the per-model summary only");

  std::string verify_model;
  auto* verify = app.add_subcommand(
      "verify", "check every entry (or one model's); lists corrupted ones and exits 1 if any");
  verify->add_option("MODEL", verify_model, "only this model's entries");
  verify->add_flag("--json", g.json, "print JSON");

  cli::RemoveOptions ro;
  std::string rm_quant, rm_revision;
  auto* rm = app.add_subcommand("rm", "remove models, layers, revisions or quantizations");
  rm->add_option("TARGETS", ro.targets, "model ids, or entry ids as ls -q prints")->required();
  rm->add_option("--layers", ro.layers, "only these layers: 5, 0-27 or 0,3,5-7");
  auto* rm_quant_opt =
      rm->add_option("--quant", rm_quant, "only this quantization mode (none: unquantized)");
  auto* rm_rev_opt = rm->add_option("--revision", rm_revision,
                                    "only this revision (a commit prefix of 7+ characters)");
  rm->add_flag("--dry-run", ro.dry_run, "list what would be removed, remove nothing");
  rm->add_flag("-y,--yes", ro.yes, "do not ask for confirmation on a terminal");
  rm->add_flag("--json", g.json, "print JSON");

  cli::PruneOptions po;
  auto* prune = app.add_subcommand(
      "prune",
      "remove old revisions no branch or tag refers to (the newest revision of a model is "
      "kept) and, with --older-than, entries not read for that long");
  prune->add_option("MODELS", po.models, "only these models (default: every model)");
  prune->add_option("--older-than", po.older_than, "e.g. 30d, 12h, 2w");
  prune->add_flag("--keep-revisions", po.keep_revisions,
                  "with --older-than: do not remove old revisions");
  prune->add_flag("--dry-run", po.dry_run, "list what would be removed, remove nothing");
  prune->add_flag("-y,--yes", po.yes, "do not ask for confirmation on a terminal");
  prune->add_flag("--json", g.json, "print JSON");

  std::vector<std::string> config_sets;
  auto* config = app.add_subcommand(
      "config", "show the settings stored in the cache, or change them with --set KEY=VALUE");
  config->add_option("--set", config_sets,
                     "max_cache_size_gb, enable_compression, compression_level, "
                     "checksum_algorithm or eviction_policy; repeatable");
  config->add_flag("--json", g.json, "print JSON");
  auto* optimize = app.add_subcommand(
      "optimize", "remove corrupted entries, temp files and orphans; enforce the budget");
  optimize->add_flag("--json", g.json, "print JSON");
  auto* clear = app.add_subcommand("clear", "remove every cached layer");
  clear->add_flag("--json", g.json, "print JSON");

  auto* inv = app.add_subcommand("invalidate", "remove a model's layers (or one layer)");
  std::string model;
  int64_t layer_value = 0;
  inv->add_option("MODEL", model, "model id")->required();
  auto* layer_opt = AddInt(inv, "--layer", &layer_value, 0, kMaxLayer, "only this layer index");
  inv->add_flag("--json", g.json, "print JSON");
  std::string inv_revision;
  inv->add_option("--revision", inv_revision,
                  "only the entries of this revision (a commit, or a prefix of 7+ characters)");

  auto* inspect = app.add_subcommand("inspect", "validate a safetensors file and list its tensors");
  std::string file;
  inspect->add_option("FILE", file, "safetensors file")->required();
  inspect->add_flag("--json", g.json, "print JSON");

  std::string quant;
  int64_t layer = 0;
  auto* put = app.add_subcommand("put", "cache a layer read from a safetensors file");
  put->add_option("MODEL", model, "model id")->required();
  AddInt(put, "LAYER", &layer, 0, kMaxLayer, "layer index")->required();
  put->add_option("FILE", file, "safetensors file holding the layer's tensors")->required();
  put->add_option("--quant", quant, "quantization mode (part of the key): nf4, int8 or a label");
  cli::QuantFlags qf;
  put->add_flag("--quantize", qf.quantize,
                "quantize the file's layer with --quant (nf4 or int8) before caching it");
  put->add_option("--blocksize", qf.blocksize, "nf4 block size (default 64)");
  put->add_flag("--double-quant", qf.double_quant, "nf4: quantize the absmax values too");
  std::string revision;
  put->add_option("--revision", revision, "revision (part of the key; default none)");
  put->add_flag("--json", g.json, "print JSON");

  std::string out;
  auto* get =
      app.add_subcommand("get", "write a cached layer as a safetensors file (exit 1 on a miss)");
  get->add_option("MODEL", model, "model id")->required();
  AddInt(get, "LAYER", &layer, 0, kMaxLayer, "layer index")->required();
  get->add_option("--quant", quant, "quantization mode (part of the key)");
  get->add_option("-o,--output", out,
                  "output file; - for standard output. A regular file is replaced atomically; "
                  "a device or FIFO is written in place; a symlink is written through")
      ->required();
  std::string get_revision;
  get->add_option("--revision", get_revision,
                  "the commit the layer was cached under (default: the one the model's default "
                  "revision last resolved to in this cache, else none)");

  cli::FetchOptions fo;
  DownloadOptions dl;
  auto* fetch =
      app.add_subcommand("fetch", "download layers from the Hugging Face Hub into the cache");
  fetch->add_option("REPO_ID", fo.repo_id, "Hub repository, e.g. Qwen/Qwen2.5-7B")->required();
  fetch->add_option("--layers", fo.layers, "all (default), 5, 0-27 or 0,3,5-7");
  fetch->add_option("--revision", dl.revision, "branch, tag or commit (default main)");
  fetch->add_option("--model-id", fo.model_id, "cache under this model id (default: the repo id)");
  fetch->add_option("--filename", fo.filename, "read this shard only");
  AddInt(fetch, "--connections", &dl.connections, 1, 64, "parallel connections (default 8)");
  fetch->add_option("--layer-pattern", dl.layer_pattern,
                    "e.g. decoder.block.{i}. (default: detected)");
  fetch->add_flag("--non-layer", fo.non_layer, "also fetch embeddings, final norm and lm_head");
  fetch->add_flag("--quiet", dl.quiet, "no progress bar");
  fetch->add_flag("--progress", fo.progress,
                  "show progress on stderr even when it is no terminal (plain lines)");
  std::string fetch_quant;
  cli::QuantFlags fetch_qf;
  fetch->add_option("--quant", fetch_quant,
                    "quantize each layer (nf4 or int8) before caching it; cached under that mode");
  fetch->add_option("--blocksize", fetch_qf.blocksize, "nf4 block size (default 64)");
  fetch->add_flag("--double-quant", fetch_qf.double_quant, "nf4: quantize the absmax values too");
  fetch->add_flag("--json", g.json, "print JSON");

  std::string import_dir, import_model, import_layers = "all", import_pattern;
  std::string import_hf_cache, import_repo, import_revision = "main";
  auto* import = app.add_subcommand(
      "import", "cache the layers of a local checkpoint directory or of a Hugging Face cache");
  import->add_option("DIR", import_dir,
                     "directory with model.safetensors or model.safetensors.index.json");
  import->add_option("--model-id", import_model,
                     "model id to cache under (default with --hf-cache: the repo id)");
  auto* import_hf = import
                        ->add_option("--hf-cache", import_hf_cache,
                                     "read REPO_ID from this Hugging Face cache (no value: "
                                     "$HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub)")
                        ->expected(0, 1);
  import->add_option("--repo-id", import_repo, "with --hf-cache: the repository, e.g. org/name");
  import->add_option("--revision", import_revision,
                     "with --hf-cache: branch, ref or commit (default main); the commit is "
                     "the revision of the cache keys");
  import->add_option("--layers", import_layers, "all (default), 5, 0-27 or 0,3,5-7");
  import->add_option("--layer-pattern", import_pattern,
                     "e.g. model.layers.{i}. (default: detected)");
  import->add_flag("--json", g.json, "print JSON");

  cli::ServeOptions so;
  auto* serve = app.add_subcommand(
      "serve", "serve model directories or a Hugging Face cache as a Hub mirror (HF_ENDPOINT)");
  serve->add_option("DIR", so.dir, "model directory (with --repo-id)");
  serve->add_option("--repo-id", so.repo_id,
                    "repository id to serve DIR as; with --hf-cache: serve only this one");
  serve->add_option("--repo", so.repos, "ID=DIR: one more repository (repeatable)");
  auto* serve_hf =
      serve
          ->add_option("--hf-cache", so.hf_cache,
                       "serve the model repositories of this Hugging Face cache (no "
                       "value: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub)")
          ->expected(0, 1);
  serve->add_option("--host", so.host,
                    "address to listen on (default 127.0.0.1: this machine only)");
  AddInt(serve, "--port", &so.port, 0, 65535, "port 0-65535 (default 0: any free port)");
  AddInt(serve, "--threads", &so.threads, 1, 1024, "requests served at once (default 16)");
  AddInt(serve, "--max-connections", &so.max_connections, 1, 65536,
         "open connections; more are answered 503 (default 256)");
  AddInt(serve, "--timeout", &so.timeout_s, 1, 3600,
         "seconds to receive a request (default 30; idle keep-alive: 15)");
  serve->add_option("--access-log", so.access_log,
                    "append one line per request to FILE (-: stdout)");

  cli::DemoOptions d;
  auto* demo =
      app.add_subcommand("demo", "stream a synthetic Llama-shaped model through the cache");
  AddInt(demo, "--layers", &d.layers, 1, 100000, "number of decoder layers (default 12)");
  int64_t hidden = static_cast<int64_t>(d.hidden), inter = static_cast<int64_t>(d.intermediate);
  AddInt(demo, "--hidden", &hidden, 1, 65536, "hidden size (default 768)");
  AddInt(demo, "--intermediate", &inter, 1, 262144, "MLP size (default 2048)");
  AddInt(demo, "--passes", &d.passes, 1, 1000,
         "forward passes (default 3: cold, disk-warm, memory-hot)");
  demo->add_option("--workdir", d.workdir,
                   "where to put the model and cache (default: a temp dir)");
  demo->add_flag("--keep", d.keep, "keep the work directory afterwards");

  cli::BenchOptions bench_options;
  auto* bench = cli::AddBenchCommand(app, &bench_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, the version or the error
    return code == 0 ? cli::kExitOk : cli::kExitUsage;
  }
  d.hidden = static_cast<uint64_t>(hidden);
  d.intermediate = static_cast<uint64_t>(inter);
  g.budget_given = budget_opt->count() > 0;
  g.memory_budget_given = mem_opt->count() > 0;
  g.compression_given = compress_opt->count() > 0;
  g.level_given = level_opt->count() > 0;
  g.checksum_given = checksum_opt->count() > 0;
  try {
    if (g.checksum_given) g.options.checksum_algorithm = ParseChecksumAlgorithm(checksum);
    if (*stats) return cli::Stats(g, stats_format);
    if (*ls) return cli::List(g, lo);
    if (*verify) return cli::Verify(g, verify_model);
    if (*rm) {
      if (rm_quant_opt->count()) ro.quant = rm_quant;
      if (rm_rev_opt->count()) ro.revision = rm_revision;
      return cli::Remove(g, ro);
    }
    if (*prune) return cli::Prune(g, po);
    if (*config) return cli::Config(g, config_sets);
    if (*optimize) return cli::Optimize(g);
    if (*clear) return cli::Clear(g);
    if (*inv) {
      return cli::Invalidate(
          g, model, layer_opt->count() ? std::optional<int64_t>(layer_value) : std::nullopt,
          inv_revision);
    }
    if (*inspect) return cli::Inspect(file, g.json);
    if (*put) return cli::Put(g, model, layer, file, quant, revision, qf);
    if (*get) return cli::Get(g, model, layer, quant, out, get_revision);
    if (*demo) return cli::Demo(d);
    if (*bench) return cli::Bench(g, bench_options);
    if (*fetch) {
      if (!fetch_quant.empty()) dl.quantize = cli::QuantConfigFor(fetch_quant, fetch_qf);
      return cli::Fetch(g, fo, dl);
    }
    if (*import) {
      if (import_hf->count() > 0) {
        if (import_repo.empty())
          throw Error(Status::InvalidArgument(
              "import --hf-cache needs --repo-id ID (the repository to import)"));
        if (!import_dir.empty())
          throw Error(Status::InvalidArgument(
              "import --hf-cache takes the cache folder as --hf-cache's value, not "
              "a DIR argument"));
        return cli::ImportHfCache(g, import_hf_cache, import_repo, import_revision, import_model,
                                  import_layers, import_pattern);
      }
      if (import_dir.empty() || import_model.empty())
        throw Error(
            Status::InvalidArgument("import needs DIR and --model-id (or --hf-cache --repo-id)"));
      return cli::Import(g, import_dir, import_model, import_layers, import_pattern);
    }
    if (*serve) {
      so.use_hf_cache = serve_hf->count() > 0;
      return cli::Serve(so);
    }
  } catch (const Error& e) {
    // A usage error (kInvalidArgument) prints its message alone, which says
    // how to fix the command; other failures keep the code's name
    // ("io_error: ...").
    if (e.code() == StatusCode::kInvalidArgument) {
      std::cerr << "layercache: " << e.status().message() << "\n";
      return cli::kExitUsage;
    }
    std::cerr << "layercache: " << e.what() << "\n";
    return cli::kExitError;
  } catch (const std::exception& e) {
    std::cerr << "layercache: " << e.what() << "\n";
    return cli::kExitError;
  }
  return cli::kExitOk;
}
