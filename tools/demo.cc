// `layercache demo`: writes a synthetic Llama-shaped checkpoint (bf16, sharded
// safetensors + model.safetensors.index.json), then streams its layers through
// the cache for several forward passes: cold (from the checkpoint), disk-warm
// (a fresh process view: memory empty, disk full) and memory-hot. Every layer
// served is checked against the bytes of the first pass.
#include <xxhash.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <vector>

#include "commands.h"
#include "hub_server.h"
#include "layercache/layer_cache.h"
#include "layercache/progress.h"
#include "layercache/synthetic_model.h"

namespace layercache::cli {
namespace {

uint64_t Fingerprint(const Layer& layer) { return XXH3_64bits(layer.data(), layer.nbytes()); }

struct PassResult {
  std::string name;
  double seconds = 0;
  uint64_t bytes = 0;
};

}  // namespace

int Demo(const DemoOptions& d) {
  namespace fs = std::filesystem;
  std::string work = d.workdir;
  if (work.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "layercache-demo-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::cerr << "layercache demo: cannot create a temp directory\n";
      return 1;
    }
    work = tmpl;
  }
  const std::string model_dir = work + "/model";
  const std::string cache_dir = work + "/cache";
  const std::string model_id = "demo/llama-synthetic";

  SyntheticModelSpec spec;
  spec.num_layers = d.layers;
  spec.hidden_size = d.hidden;
  spec.intermediate_size = d.intermediate;
  spec.num_attention_heads = 12;
  while (spec.hidden_size % spec.num_attention_heads != 0) --spec.num_attention_heads;
  spec.num_key_value_heads = std::max<uint64_t>(1, spec.num_attention_heads / 4);
  spec.vocab_size = 4096;
  std::cout << "== layercache demo ==\n"
            << "work directory: " << work << "\n"
            << "writing a synthetic Llama-shaped checkpoint: " << spec.num_layers
            << " layers, hidden " << spec.hidden_size << ", MLP " << spec.intermediate_size
            << ", bf16\n";
  auto info = WriteSyntheticModel(model_dir, spec);
  if (!info.ok()) {
    std::cerr << "layercache demo: " << info.status().message() << "\n";
    return 1;
  }
  std::cout << "  " << info->num_shards << " shards + model.safetensors.index.json, "
            << Progress::HumanBytes(static_cast<double>(info->total_bytes)) << " in all, "
            << Progress::HumanBytes(static_cast<double>(info->bytes_per_layer)) << " per layer\n";
  const int64_t n = spec.num_layers;

  // Serve the model over the Hub protocol on loopback, and stream it from there.
  const std::string repo_id = "demo/llama-synthetic";
  HubServer server;
  server.AddRepo(repo_id, model_dir);
  const int port = server.Start("127.0.0.1", 0);
  if (port < 0) {
    std::cerr << "layercache demo: cannot start the local Hub server\n";
    return 1;
  }
  DownloadOptions download;
  download.endpoint = "http://127.0.0.1:" + std::to_string(port);
  download.quiet = true;
  std::cout << "serving it over the Hub protocol at " << download.endpoint << " as " << repo_id
            << "\n";

  LayerCacheOptions options;
  options.cache_dir = cache_dir;
  const double gib = 1024.0 * 1024.0 * 1024.0;
  options.max_cache_size_gb = std::max(1.0, 2.0 * static_cast<double>(info->total_bytes) / gib);
  options.max_memory_cache_size_gb =
      std::max(0.25, 1.25 * static_cast<double>(info->total_bytes) / gib);
  std::cout << "cache: " << cache_dir << " (disk budget " << options.max_cache_size_gb
            << " GiB, memory budget " << options.max_memory_cache_size_gb << " GiB)\n\n";

  std::vector<uint64_t> fingerprints(static_cast<size_t>(n));
  std::vector<PassResult> passes;
  auto cache = std::make_unique<LayerCache>(options);
  for (int pass = 0; pass < std::max(1, d.passes); ++pass) {
    std::string name = pass == 0   ? "pass 1 download"
                       : pass == 1 ? "pass 2 disk"
                                   : "pass " + std::to_string(pass + 1) + " memory";
    if (pass == 1) {
      // A restart: the memory tier is gone, the disk tier persists.
      cache.reset();
      cache = std::make_unique<LayerCache>(options);
    }
    std::cout.flush();
    Progress progress(name, static_cast<uint64_t>(n), /*quiet=*/false, stdout);
    uint64_t bytes = 0;
    double fetch_seconds = 0;
    for (int64_t i = 0; i < n; ++i) {
      LayerKey key{model_id, i, "", server.commit()};
      LayerPtr layer;
      const auto t0 = std::chrono::steady_clock::now();
      if (pass == 0) {
        auto loaded = cache->download_and_cache_status(model_id, i, repo_id, "", download);
        if (!loaded.ok()) {
          std::cerr << "\nlayercache demo: " << loaded.status().message() << "\n";
          return 1;
        }
        layer = *loaded;
        fetch_seconds +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        fingerprints[static_cast<size_t>(i)] = Fingerprint(*layer);
      } else {
        layer = cache->get_layer(key);
        fetch_seconds +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!layer) {
          std::cerr << "\nlayercache demo: layer " << i << " missing from the cache in " << name
                    << "\n";
          return 1;
        }
        if (Fingerprint(*layer) != fingerprints[static_cast<size_t>(i)]) {
          std::cerr << "\nlayercache demo: layer " << i << " came back with different bytes\n";
          return 1;
        }
      }
      bytes += layer->nbytes();
      progress.Update(static_cast<uint64_t>(i + 1), bytes);
    }
    progress.Finish();
    passes.push_back({name, fetch_seconds, bytes});
  }
  std::cout << "\ntime spent getting layers per pass (" << n
            << " layers; every later pass checked byte for byte against pass 1):\n";
  for (const PassResult& p : passes) {
    std::printf("  %-16s %10.3f ms  %10.1f us/layer  %10.1fx faster than pass 1\n", p.name.c_str(),
                p.seconds * 1e3, p.seconds * 1e6 / static_cast<double>(n),
                passes[0].seconds / p.seconds);
  }
  std::printf("\nthe Hub server sent %s for %s of layers (headers and the index included)\n",
              Progress::HumanBytes(static_cast<double>(server.bytes_sent())).c_str(),
              Progress::HumanBytes(static_cast<double>(passes[0].bytes)).c_str());
  std::fflush(stdout);
  std::cout << "\n";
  // print_stats() counts this process's last LayerCache (passes 2 on: it was
  // reopened to empty the memory tier); the lifetime figures cover every pass.
  std::cout << "statistics of the cache as reopened after pass 1 (so no download is counted here;\n"
               "the lifetime line below covers every pass, the download included):\n";
  std::fflush(stdout);
  cache->print_stats();
  std::cout << LifetimeLine(cache->get_stats());
  cache.reset();
  if (!d.keep && d.workdir.empty()) {
    std::error_code ec;
    fs::remove_all(work, ec);
  } else {
    std::cout << "kept " << work << "\n";
  }
  return 0;
}

}  // namespace layercache::cli
