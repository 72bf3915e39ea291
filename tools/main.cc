// layercache: inspect and manage a layer cache from the shell.
#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.h"
#include "layercache/status.h"
#include "serve_command.h"

int main(int argc, char** argv) {
  using namespace layercache;
  CLI::App app{"layercache: a two-tier (memory + SSD) cache of model layers"};
  app.require_subcommand(1);
  cli::Global g;
  app.add_option("--cache-dir", g.options.cache_dir,
                 "cache directory (default: $LAYERCACHE_DIR or ~/.cache/nexus/layers)");
  app.add_option("--max-cache-size-gb", g.options.max_cache_size_gb,
                 "disk budget in GiB, enforced by put and optimize (default 50)");
  std::string checksum = "xxh3-128";
  app.add_option("--checksum", checksum, "checksum for new entries: xxh3-128, md5 or sha256");
  app.add_flag("--compress", g.options.enable_compression,
               "store new entries compressed (zstd, byte-grouped)");
  app.add_option("--compression-level", g.options.compression_level, "1-9 (default 6)");
  app.add_option("--remote", g.options.remote_urls,
                 "Redis of the cluster tier, redis://[user:password@]host:port; repeat for "
                 "Redis Cluster seeds (default: $LAYERCACHE_REMOTE)");
  app.add_option("--remote-timeout-ms", g.options.remote_timeout_ms,
                 "Redis connect and read timeout (default 1000)");

  auto* stats = app.add_subcommand("stats", "print cache statistics");
  stats->add_flag("--json", g.json, "print JSON (the get_stats() shape)");
  auto* ls = app.add_subcommand("ls", "list the cached layers");
  ls->add_flag("--json", g.json, "print JSON");
  app.add_subcommand("verify", "check every entry; lists corrupted ones and exits 1 if any");
  app.add_subcommand("optimize",
                     "remove corrupted entries, temp files and orphans; enforce the budget");
  app.add_subcommand("clear", "remove every cached layer");

  auto* inv = app.add_subcommand("invalidate", "remove a model's layers (or one layer)");
  std::string model;
  int64_t layer_value = 0;
  inv->add_option("MODEL", model, "model id")->required();
  auto* layer_opt = inv->add_option("--layer", layer_value, "only this layer index");

  auto* inspect = app.add_subcommand("inspect", "validate a safetensors file and list its tensors");
  std::string file;
  bool inspect_json = false;
  inspect->add_option("FILE", file, "safetensors file")->required();
  inspect->add_flag("--json", inspect_json, "print JSON");

  std::string quant;
  int64_t layer = 0;
  auto* put = app.add_subcommand("put", "cache a layer read from a safetensors file");
  put->add_option("MODEL", model, "model id")->required();
  put->add_option("LAYER", layer, "layer index")->required();
  put->add_option("FILE", file, "safetensors file holding the layer's tensors")->required();
  put->add_option("--quant", quant, "quantization mode (part of the key)");
  put->add_option("--max-cache-size-gb", g.options.max_cache_size_gb, "disk budget in GiB");

  std::string out;
  auto* get =
      app.add_subcommand("get", "write a cached layer as a safetensors file (exit 1 on a miss)");
  get->add_option("MODEL", model, "model id")->required();
  get->add_option("LAYER", layer, "layer index")->required();
  get->add_option("--quant", quant, "quantization mode (part of the key)");
  get->add_option("-o,--output", out, "output file")->required();

  cli::FetchOptions fo;
  DownloadOptions dl;
  auto* fetch =
      app.add_subcommand("fetch", "download layers from the Hugging Face Hub into the cache");
  fetch->add_option("REPO_ID", fo.repo_id, "Hub repository, e.g. Qwen/Qwen2.5-7B")->required();
  fetch->add_option("--layers", fo.layers, "all (default), 5, 0-27 or 0,3,5-7");
  fetch->add_option("--revision", dl.revision, "branch, tag or commit (default main)");
  fetch->add_option("--model-id", fo.model_id, "cache under this model id (default: the repo id)");
  fetch->add_option("--filename", fo.filename, "read this shard only");
  fetch->add_option("--connections", dl.connections, "parallel connections (default 8)");
  fetch->add_option("--layer-pattern", dl.layer_pattern,
                    "e.g. decoder.block.{i}. (default: detected)");
  fetch->add_flag("--non-layer", fo.non_layer, "also fetch embeddings, final norm and lm_head");
  fetch->add_flag("--quiet", dl.quiet, "no progress bar");

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
  serve->add_option("--port", so.port, "port 0-65535 (default 0: any free port)");
  serve->add_option("--threads", so.threads, "requests served at once (default 16)");
  serve->add_option("--max-connections", so.max_connections,
                    "open connections; more are answered 503 (default 256)");
  serve->add_option("--timeout", so.timeout_s,
                    "seconds to receive a request (default 30; idle keep-alive: 15)");
  serve->add_option("--access-log", so.access_log,
                    "append one line per request to FILE (-: stdout)");

  cli::DemoOptions d;
  auto* demo =
      app.add_subcommand("demo", "stream a synthetic Llama-shaped model through the cache");
  demo->add_option("--layers", d.layers, "number of decoder layers (default 12)");
  demo->add_option("--hidden", d.hidden, "hidden size (default 768)");
  demo->add_option("--intermediate", d.intermediate, "MLP size (default 2048)");
  demo->add_option("--passes", d.passes, "forward passes (default 3: cold, disk-warm, memory-hot)");
  demo->add_option("--workdir", d.workdir,
                   "where to put the model and cache (default: a temp dir)");
  demo->add_flag("--keep", d.keep, "keep the work directory afterwards");

  CLI11_PARSE(app, argc, argv);
  try {
    g.options.checksum_algorithm = ParseChecksumAlgorithm(checksum);
    if (*stats) return cli::Stats(g);
    if (*ls) return cli::List(g);
    if (app.got_subcommand("verify")) return cli::Verify(g);
    if (app.got_subcommand("optimize")) return cli::Optimize(g);
    if (app.got_subcommand("clear")) return cli::Clear(g);
    if (*inv) {
      return cli::Invalidate(
          g, model, layer_opt->count() ? std::optional<int64_t>(layer_value) : std::nullopt);
    }
    if (*inspect) return cli::Inspect(file, inspect_json);
    if (*put) return cli::Put(g, model, layer, file, quant);
    if (*get) return cli::Get(g, model, layer, quant, out);
    if (*demo) return cli::Demo(d);
    if (*fetch) return cli::Fetch(g, fo, dl);
    if (*import) {
      if (import_hf->count() > 0) {
        if (import_repo.empty() || !import_dir.empty())
          throw std::invalid_argument("import --hf-cache needs --repo-id and no DIR");
        return cli::ImportHfCache(g, import_hf_cache, import_repo, import_revision, import_model,
                                  import_layers, import_pattern);
      }
      if (import_dir.empty() || import_model.empty())
        throw std::invalid_argument("import needs DIR and --model-id (or --hf-cache --repo-id)");
      return cli::Import(g, import_dir, import_model, import_layers, import_pattern);
    }
    if (*serve) {
      so.use_hf_cache = serve_hf->count() > 0;
      return cli::Serve(so);
    }
  } catch (const std::invalid_argument& e) {
    std::cerr << "layercache: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "layercache: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
