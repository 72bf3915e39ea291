// layercache: inspect and manage a layer cache from the shell.
#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.h"
#include "layercache/status.h"

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
  auto* import = app.add_subcommand("import", "cache the layers of a local checkpoint directory");
  import
      ->add_option("DIR", import_dir,
                   "directory with model.safetensors or model.safetensors.index.json")
      ->required();
  import->add_option("--model-id", import_model, "model id to cache under")->required();
  import->add_option("--layers", import_layers, "all (default), 5, 0-27 or 0,3,5-7");
  import->add_option("--layer-pattern", import_pattern,
                     "e.g. model.layers.{i}. (default: detected)");

  std::string serve_dir, serve_repo, serve_host = "127.0.0.1";
  int serve_port = 0;
  auto* serve = app.add_subcommand("serve", "serve a local model directory over the Hub protocol");
  serve->add_option("DIR", serve_dir, "model directory")->required();
  serve->add_option("--repo-id", serve_repo, "repository id to serve it as")->required();
  serve->add_option("--host", serve_host, "address to listen on (default 127.0.0.1)");
  serve->add_option("--port", serve_port, "port (default: any free port)");

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
    if (*import) return cli::Import(g, import_dir, import_model, import_layers, import_pattern);
    if (*serve) return cli::Serve(serve_dir, serve_repo, serve_host, serve_port);
  } catch (const std::invalid_argument& e) {
    std::cerr << "layercache: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "layercache: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
