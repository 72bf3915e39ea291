// Layer load from the cluster tier (Redis) against the local disk tier and
// against the local HTTP source, in one run:
//   build/bench/remote_bench [--hidden H] [--intermediate I] [--reps R] [--chunk-mb C]
//                            [--cluster]
// 1. starts redis-server on loopback (or 3 of them joined into a Redis
//    Cluster with --cluster) and a Hub-protocol server for a synthetic model;
// 2. limit: raw pipelined GETs of the layer's chunks received straight into
//    one buffer (RedisClient::GetInto, no checksum, no parse); and the same
//    GETs through hiredis's reply objects, for reference;
// 3. remote: RemoteTier::Fetch (chunks fetched from every master at once,
//    XXH3-64 per chunk and XXH3-128 of the whole verified, parsed);
// 4. disk: get_layer from the local disk tier (page cache warm, memory tier off);
// 5. source: download_and_cache from the local Hub server (HTTP ranges).
// Like is compared with like, both ways: the remote tier's Get against the
// source's transfer alone (HubModel::DownloadLayer into memory, no local
// write), and download_and_cache (transfer + checksummed, fsynced local entry)
// against get_layer through a fresh cache whose disk tier is empty (remote
// hit + the same local write). Any failure inside a timed loop stops the
// benchmark. Prints medians and ratios.
// Smoke run (CI): --hidden 64 --intermediate 128 --reps 1 --chunk-mb 1
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
#include "hub/hub_model.h"
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
  // Ports of our own (runs in parallel, e.g. under ctest -j, do not collide).
  const int base = 30100 + static_cast<int>(::getpid() % 700) * 4;
  const std::vector<int> ports =
      cluster ? std::vector<int>{base + 1, base + 2, base + 3} : std::vector<int>{base};
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
  std::vector<double> raw, hiredis, via_tier, disk, source, transfer_only, remote_to_disk;
  for (int r = 0; r < reps; ++r) {
    raw.push_back(Seconds([&] {
      for (size_t b = 0; b < into.size(); b += 8) {
        std::vector<RedisGetInto> batch(
            into.begin() + static_cast<long>(b),
            into.begin() + static_cast<long>(std::min(into.size(), b + 8)));
        auto got = tier.client().GetInto(batch);
        if (!got.ok()) Fail(got.status().ToString());
        for (const RedisGetOutcome& g : *got) {
          if (g.kind != RedisGetOutcome::kOk) Fail("a chunk GET failed: " + g.error);
        }
      }
    }));
    hiredis.push_back(Seconds([&] {
      for (size_t b = 0; b < gets.size(); b += 8) {
        std::vector<RedisCommand> batch(
            gets.begin() + static_cast<long>(b),
            gets.begin() + static_cast<long>(std::min(gets.size(), b + 8)));
        auto replies = tier.client().Execute(batch);
        if (!replies.ok()) Fail(replies.status().ToString());
        for (const auto& reply : *replies) {
          if (reply.is_nil()) Fail("a chunk is missing");
        }
      }
    }));
    via_tier.push_back(Seconds([&] {
      if (!tier.Fetch(key)) Fail("remote miss");
    }));
    disk.push_back(Seconds([&] {
      if (!cache.get_layer(key)) Fail("disk miss");
    }));
    {
      LayerCacheOptions so;
      so.cache_dir = root + "/source-" + std::to_string(r);
      so.max_memory_cache_size_gb = 0;
      LayerCache fresh(so);
      source.push_back(Seconds([&] {
        auto l = fresh.download_and_cache_status("model", 0, "acme/model", "", d);
        if (!l.ok()) Fail(l.status().ToString());
      }));
    }
    {
      auto client = std::make_shared<HubClient>(HubSettings{d.endpoint, "", false, {}});
      transfer_only.push_back(Seconds([&] {
        auto model = HubModel::Open(client, "acme/model", "main", "", "");
        if (!model.ok()) Fail(model.status().ToString());
        auto l = (*model)->DownloadLayer(0, d.connections);
        if (!l.ok()) Fail(l.status().ToString());
      }));
    }
    {
      LayerCacheOptions ro2 = o;
      ro2.cache_dir = root + "/remote-fresh-" + std::to_string(r);
      LayerCache fresh(ro2);
      remote_to_disk.push_back(Seconds([&] {
        if (!fresh.get_layer(key)) Fail("remote miss through a fresh cache");
      }));
      fresh.flush();
    }
  }
  const double gb = static_cast<double>(bytes) / 1e9;
  std::printf("layer %.1f MB, %zu chunks of %d MiB, %s, median of %d\n", bytes / 1e6, gets.size(),
              chunk_mb, cluster ? "Redis Cluster of 3 masters" : "one Redis", reps);
  auto line = [&](const char* what, const std::vector<double>& v) {
    std::printf("  %-52s %8.1f ms  %6.2f GB/s\n", what, Median(v) * 1e3, gb / Median(v));
  };
  line("raw pipelined GETs (limit)", raw);
  line("the same through hiredis's replies", hiredis);
  line("remote tier Get (verified, parsed)", via_tier);
  std::printf("    = %.2f of raw\n", Median(raw) / Median(via_tier));
  line("local disk tier get_layer (page cache warm)", disk);
  std::printf("into memory, no local write:\n");
  line("  remote tier Get", via_tier);
  line("  HTTP source transfer (HubModel::DownloadLayer)", transfer_only);
  std::printf("    remote is %.2fx faster\n", Median(transfer_only) / Median(via_tier));
  std::printf("into memory and the local disk tier (checksummed, fsynced entry):\n");
  line("  get_layer, fresh cache, remote hit", remote_to_disk);
  line("  download_and_cache from the HTTP source", source);
  std::printf("    remote is %.2fx faster\n", Median(source) / Median(remote_to_disk));
  for (pid_t p : servers) {
    ::kill(p, SIGKILL);
    Wait(p);
  }
  fs::remove_all(root);
  return 0;
}
