// Layer download throughput against raw curl, in one run, from the same local
// Hub-protocol server:
//   build/bench/download_bench [--layers N] [--hidden H] [--intermediate I] [--reps R]
// 1. writes a synthetic Llama-shaped model and serves it on loopback;
// 2. limit: the curl CLI fetching each layer's byte range (one process,
//    one connection, --next per range), output to /dev/null; the limit is
//    the sum of curl's own per-transfer times (-w %{time_total}), so that
//    curl's process start-up is not counted against it (the wall time with
//    start-up is printed too);
// 3. ours: HubModel::DownloadLayer for every layer into memory, with 1 and
//    with 8 connections; and download_and_cache (transfer + checksummed,
//    fsynced disk entry) for reference.
// Prints medians and ratios to the curl limit. A failed transfer stops the
// benchmark (never timed as a result).
// Smoke run (CI): --layers 2 --hidden 64 --intermediate 128 --reps 1
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.h"
#include "hub/hub_model.h"
#include "hub_server.h"
#include "layercache/layer_cache.h"
#include "layercache/safetensors.h"
#include "layercache/synthetic_model.h"

using namespace layercache;
namespace fs = std::filesystem;

using namespace layercache::bench;

int main(int argc, char** argv) {
  int64_t layers = 6;
  uint64_t hidden = 1536, intermediate = 4096;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--layers") layers = std::atoll(argv[i + 1]);
    if (a == "--hidden") hidden = std::strtoull(argv[i + 1], nullptr, 10);
    if (a == "--intermediate") intermediate = std::strtoull(argv[i + 1], nullptr, 10);
    if (a == "--reps") reps = std::atoi(argv[i + 1]);
  }
  char tmpl[] = "/tmp/layercache-bench-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  SyntheticModelSpec spec;
  spec.num_layers = layers;
  spec.hidden_size = hidden;
  spec.intermediate_size = intermediate;
  spec.num_attention_heads = 16;
  spec.num_key_value_heads = 4;
  spec.layers_per_shard = 3;
  auto info = WriteSyntheticModel(dir + "/model", spec);
  if (!info.ok()) {
    std::fprintf(stderr, "%s\n", info.status().ToString().c_str());
    return 1;
  }
  HubServer server;
  server.AddRepo("bench/model", dir + "/model");
  const int port = server.Start();
  const std::string endpoint = "http://127.0.0.1:" + std::to_string(port);

  // Each layer's byte range in its shard (contiguous: the reference writer's order).
  std::vector<std::string> curl = {"curl", "-s", "--fail"};
  uint64_t total = 0;
  for (const auto& e : fs::directory_iterator(dir + "/model")) {
    if (e.path().extension() != ".safetensors") continue;
    auto header = ReadSafetensorsHeader(e.path().string());
    for (int64_t i = 0; i < layers; ++i) {
      const std::string prefix = "model.layers." + std::to_string(i) + ".";
      uint64_t lo = UINT64_MAX, hi = 0;
      for (const auto& t : header->tensors) {
        if (t.name.rfind(prefix, 0) != 0) continue;
        lo = std::min(lo, header->data_offset + t.offset);
        hi = std::max(hi, header->data_offset + t.offset + t.nbytes);
      }
      if (hi == 0) continue;
      if (curl.size() > 3) curl.push_back("--next");
      curl.insert(curl.end(),
                  {"-s", "--fail", "-o", "/dev/null", "-w", "%{time_total}\n", "-r",
                   std::to_string(lo) + "-" + std::to_string(hi - 1),
                   endpoint + "/bench/model/resolve/main/" + e.path().filename().string()});
      total += hi - lo;
    }
  }
  std::printf("model: %lld layers, %.1f MiB per layer, %.1f MiB of layers; server %s\n",
              static_cast<long long>(layers),
              static_cast<double>(info->bytes_per_layer) / (1 << 20),
              static_cast<double>(total) / (1 << 20), endpoint.c_str());
  Run({"sh", "-c",
       "cat " + dir + "/model/*.safetensors > /dev/null"});  // page cache warm for all runs

  std::vector<double> curl_s, curl_wall_s, ours1_s, ours8_s, cached_s;
  for (int r = 0; r < reps; ++r) {
    int status = 0;
    std::string times;
    curl_wall_s.push_back(Seconds([&] { times = Capture(curl, &status); }));
    if (status != 0) Fail("curl exited with status " + std::to_string(status));
    double sum = 0;
    for (size_t pos = 0, nl; (nl = times.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      sum += std::strtod(times.c_str() + pos, nullptr);
    }
    curl_s.push_back(sum);
    for (int connections : {1, 8}) {
      auto client = std::make_shared<HubClient>(HubSettings{endpoint, "", false, {}});
      auto model = HubModel::Open(client, "bench/model", "main", "", "");
      if (!model.ok()) Fail(model.status().ToString());
      if (auto warm = (*model)->DownloadLayer(0, connections); !warm.ok()) {
        Fail(warm.status().ToString());  // shard headers in
      }
      const double s = Seconds([&] {
        for (int64_t i = 0; i < layers; ++i) {
          auto d = (*model)->DownloadLayer(i, connections);
          if (!d.ok()) Fail(d.status().ToString());
        }
      });
      (connections == 1 ? ours1_s : ours8_s).push_back(s);
    }
    LayerCacheOptions o;
    o.cache_dir = dir + "/cache" + std::to_string(r);
    o.max_memory_cache_size_gb = 0;
    LayerCache cache(o);
    DownloadOptions d;
    d.endpoint = endpoint;
    d.quiet = true;
    cache.hub_num_layers("bench/model", "", d);
    cached_s.push_back(Seconds([&] {
      for (int64_t i = 0; i < layers; ++i) {
        auto l = cache.download_and_cache_status("bench", i, "bench/model", "", d);
        if (!l.ok()) Fail(l.status().ToString());
      }
    }));
    fs::remove_all(o.cache_dir);
  }
  const double mib = static_cast<double>(total) / (1 << 20);
  const double limit = Median(curl_s);
  auto line = [&](const char* name, double s) {
    std::printf("%-44s %8.1f ms  %8.1f MiB/s  ratio to curl %.2f\n", name, s * 1e3, mib / s,
                limit / s);
  };
  std::printf("medians of %d runs:\n", reps);
  line("limit: curl, same ranges, 1 connection", limit);
  line("  (curl's wall time, process start-up included)", Median(curl_wall_s));
  line("ours: DownloadLayer, 1 connection", Median(ours1_s));
  line("ours: DownloadLayer, 8 connections", Median(ours8_s));
  line("ours: download_and_cache (+ fsynced entry)", Median(cached_s));
  server.Stop();
  fs::remove_all(dir);
  return 0;
}
