// Layer load from the cluster tier (Redis) against the local disk tier and
// against the local HTTP source, in one run:
//   build/bench/remote_bench [--hidden H] [--intermediate I] [--reps R] [--chunk-mb C]
//                            [--cluster]
// 1. starts redis-server on loopback (or 3 of them joined into a Redis
//    Cluster with --cluster) and a Hub-protocol server for a synthetic model;
// 2. limit: raw pipelined GETs of the layer's chunks received straight into
//    one buffer (RedisClient::GetInto, no checksum, no parse); and the same
//    GETs through hiredis's reply objects, for reference;
// 3. remote: RemoteTier::Get (chunks fetched from every master at once,
//    XXH3-64 per chunk and XXH3-128 of the whole verified, parsed);
// 4. disk: get_layer from the local disk tier (page cache warm, memory tier off);
// 5. source: download_and_cache from the local Hub server (HTTP ranges).
// Prints medians and ratios.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "hub_server.h"
#include "layercache/layer_cache.h"
#include "layercache/synthetic_model.h"
#include "remote/remote_tier.h"
#include "source/checkpoint.h"

using namespace layercache;
namespace fs = std::filesystem;

using namespace layercache::bench;

int main(int argc, char** argv) {
  uint64_t hidden = 4096, intermediate = 11008;
  int reps = 5, chunk_mb = 8;
  bool cluster = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::strtoull(argv[++i], nullptr, 10) : 0ull; };
    if (a == "--hidden")
      hidden = next();
    else if (a == "--intermediate")
      intermediate = next();
    else if (a == "--reps")
      reps = static_cast<int>(next());
    else if (a == "--chunk-mb")
      chunk_mb = static_cast<int>(next());
    else if (a == "--cluster")
      cluster = true;
    else {
      std::fprintf(stderr,
                   "usage: remote_bench [--hidden H] [--intermediate I] [--reps R] "
                   "[--chunk-mb C] [--cluster]\n");
      return 2;
    }
  }
  const std::string root =
      fs::temp_directory_path() / ("remote_bench." + std::to_string(::getpid()));
  fs::create_directories(root);
  const std::vector<int> ports =
      cluster ? std::vector<int>{30101, 30102, 30103} : std::vector<int>{30100};
  std::vector<pid_t> servers;
  std::vector<std::string> urls;
  for (int port : ports) {
    const std::string dir = root + "/redis-" + std::to_string(port);
    fs::create_directories(dir);
    std::vector<std::string> args = {"redis-server",
                                     "--port",
                                     std::to_string(port),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--dir",
                                     dir,
                                     "--maxmemory",
                                     "8gb",
                                     "--maxmemory-policy",
                                     "allkeys-lru"};
    if (cluster) args.insert(args.end(), {"--cluster-enabled", "yes"});
    servers.push_back(Spawn(args, true));
    urls.push_back("redis://127.0.0.1:" + std::to_string(port));
  }
  // Wait (bounded) until every server answers PING.
  for (int port : ports) {
    for (int i = 0; i < 500; ++i) {
      if (Wait(Spawn({"redis-cli", "-p", std::to_string(port), "ping"}, true)) == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (cluster) {
    std::vector<std::string> args = {"redis-cli", "--cluster", "create"};
    for (int port : ports) args.push_back("127.0.0.1:" + std::to_string(port));
    args.insert(args.end(), {"--cluster-replicas", "0", "--cluster-yes"});
    if (Wait(Spawn(args, true)) != 0) {
      std::fprintf(stderr, "redis-cli --cluster create failed\n");
      return 1;
    }
    // Wait (bounded) until every node reports cluster_state:ok.
    for (int port : ports) {
      for (int i = 0; i < 1000; ++i) {
        const std::string cmd =
            "redis-cli -p " + std::to_string(port) + " cluster info | grep -q cluster_state:ok";
        if (Wait(Spawn({"sh", "-c", cmd}, true)) == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }

  SyntheticModelSpec spec;
  spec.num_layers = 2;
  spec.layers_per_shard = 1;
  spec.hidden_size = hidden;
  spec.intermediate_size = intermediate;
  auto info = WriteSyntheticModel(root + "/model", spec);
  if (!info.ok()) {
    std::fprintf(stderr, "%s\n", info.status().ToString().c_str());
    return 1;
  }
  HubServer hub;
  hub.AddRepo("acme/model", root + "/model");
  const int hub_port = hub.Start();
  DownloadOptions d;
  d.endpoint = "http://127.0.0.1:" + std::to_string(hub_port);
  d.quiet = true;

  LayerCacheOptions o;
  o.cache_dir = root + "/cache";
  o.max_memory_cache_size_gb = 0;
  o.remote_urls = urls;
  o.remote_chunk_mb = chunk_mb;
  LayerCache cache(o);
  auto first = cache.download_and_cache_status("model", 0, "acme/model", "", d);
  if (!first.ok()) {
    std::fprintf(stderr, "%s\n", first.status().ToString().c_str());
    return 1;
  }
  cache.flush();
  const LayerKey key = cache.list_entries().front().key;
  const uint64_t bytes = (*first)->nbytes();

  RemoteTierOptions ro;
  ro.urls = urls;
  ro.chunk_bytes = static_cast<uint64_t>(chunk_mb) << 20;
  auto remote = RemoteTier::Open(ro);
  if (!remote.ok()) return 1;
  RemoteTier& tier = **remote;
  // The chunk keys, from the manifest.
  auto manifest =
      tier.client().Execute(RedisCommand{{"GET", RemoteTier::ManifestKey(key.Digest())}, 1, {}});
  if (!manifest.ok() || manifest->is_nil()) {
    std::fprintf(stderr, "no manifest in Redis\n");
    return 1;
  }
  const std::string m(manifest->str());
  const std::string id = m.substr(m.find("\"id\":\"") + 6, 16);
  const uint64_t size = std::strtoull(m.c_str() + m.find("\"size\":") + 7, nullptr, 10);
  const uint64_t chunk = static_cast<uint64_t>(chunk_mb) << 20;
  std::vector<RedisCommand> gets;
  for (uint64_t i = 0; i * chunk < size; ++i)
    gets.push_back(
        RedisCommand{{"GET", "lc:v1:" + key.Digest() + ":" + id + ":" + std::to_string(i)}, 1, {}});

  // The transfer limit: the same chunks received straight into one buffer,
  // 8 per pipelined batch, no checksum, no parse.
  std::vector<std::byte> scratch(size);
  std::vector<RedisGetInto> into;
  for (uint64_t i = 0; i * chunk < size; ++i) {
    into.push_back(
        {gets[i].args[1], scratch.data() + i * chunk, std::min(chunk, size - i * chunk)});
  }
  std::vector<double> raw, hiredis, via_tier, disk, source;
  for (int r = 0; r < reps; ++r) {
    raw.push_back(Seconds([&] {
      for (size_t b = 0; b < into.size(); b += 8) {
        std::vector<RedisGetInto> batch(
            into.begin() + static_cast<long>(b),
            into.begin() + static_cast<long>(std::min(into.size(), b + 8)));
        (void)tier.client().GetInto(batch);
      }
    }));
    hiredis.push_back(Seconds([&] {
      for (size_t b = 0; b < gets.size(); b += 8) {
        std::vector<RedisCommand> batch(
            gets.begin() + static_cast<long>(b),
            gets.begin() + static_cast<long>(std::min(gets.size(), b + 8)));
        (void)tier.client().Execute(batch);
      }
    }));
    via_tier.push_back(Seconds([&] {
      if (!tier.Get(key)) std::fprintf(stderr, "remote miss\n");
    }));
    disk.push_back(Seconds([&] {
      if (!cache.get_layer(key)) std::fprintf(stderr, "disk miss\n");
    }));
    LayerCacheOptions so;
    so.cache_dir = root + "/source-" + std::to_string(r);
    so.max_memory_cache_size_gb = 0;
    LayerCache fresh(so);
    source.push_back(Seconds([&] {
      if (!fresh.download_and_cache_status("model", 0, "acme/model", "", d).ok())
        std::fprintf(stderr, "download failed\n");
    }));
  }
  const double gb = static_cast<double>(bytes) / 1e9;
  std::printf("layer %.1f MB, %zu chunks of %d MiB, %s, median of %d\n", bytes / 1e6, gets.size(),
              chunk_mb, cluster ? "Redis Cluster of 3 masters" : "one Redis", reps);
  std::printf("  raw pipelined GETs (limit)     %7.1f ms  %6.2f GB/s\n", Median(raw) * 1e3,
              gb / Median(raw));
  std::printf("  the same through hiredis's replies %5.1f ms  %6.2f GB/s\n", Median(hiredis) * 1e3,
              gb / Median(hiredis));
  std::printf("  remote tier (verified, parsed) %7.1f ms  %6.2f GB/s  %.2f of raw\n",
              Median(via_tier) * 1e3, gb / Median(via_tier), Median(raw) / Median(via_tier));
  std::printf("  local disk tier (warm)         %7.1f ms  %6.2f GB/s\n", Median(disk) * 1e3,
              gb / Median(disk));
  std::printf("  HTTP source (download_and_cache) %5.1f ms  %6.2f GB/s\n", Median(source) * 1e3,
              gb / Median(source));
  std::printf("  remote / source speed-up %.2fx; disk / remote %.2fx\n",
              Median(source) / Median(via_tier), Median(via_tier) / Median(disk));
  for (pid_t p : servers) {
    ::kill(p, SIGKILL);
    Wait(p);
  }
  fs::remove_all(root);
  return 0;
}
