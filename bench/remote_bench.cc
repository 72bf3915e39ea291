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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
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

namespace {

// The servers this run started: killed on every way out (return, Fail's exit,
// the watchdog), so a failed run leaves no redis-server behind for later tests.
std::vector<pid_t> g_servers;
// What the run is doing, for the watchdog's message.
const char* volatile g_step = "starting";
std::string g_root;  // the run's scratch directory, removed on every way out

// Marks the start of a step and re-arms the watchdog.
void Step(const char* what);

void KillServers() {
  for (pid_t p : g_servers) {
    ::kill(p, SIGKILL);
    ::waitpid(p, nullptr, 0);
  }
  g_servers.clear();
  std::error_code ec;
  if (!g_root.empty()) fs::remove_all(g_root, ec);
}

// A run that makes no progress for kWatchdogSeconds says where it stopped and
// exits, instead of hanging until ctest's timeout kills it silently.
constexpr unsigned kWatchdogSeconds = 240;
void OnWatchdog(int) {
  const char head[] = "remote_bench: a step took over 240 s, stuck at: ";
  (void)!::write(2, head, sizeof head - 1);
  (void)!::write(2, g_step, std::strlen(g_step));
  (void)!::write(2, "\n", 1);
  for (pid_t p : g_servers) ::kill(p, SIGKILL);
  ::_exit(1);
}

void Step(const char* what) {
  g_step = what;
  ::alarm(kWatchdogSeconds);
}

bool CanBind(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// A loopback port that is free now and, for a cluster node, whose bus port
// (port + 10000) is free too. Ports are handed out by the kernel, so runs in
// parallel and servers left by other programs do not collide with ours.
int FreePort(bool cluster, const std::vector<int>& taken) {
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      port = ntohs(addr.sin_port);
    if (fd >= 0) ::close(fd);
    if (port <= 0 || std::find(taken.begin(), taken.end(), port) != taken.end()) continue;
    if (!cluster) return port;
    if (port + 10000 <= 65535 && CanBind(port + 10000)) return port;
  }
  Fail("no free loopback port for redis-server");
}

// Runs `cmd` through sh until it succeeds or `seconds` pass; false on timeout.
bool PollUntil(const std::string& cmd, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (Wait(Spawn({"sh", "-c", cmd}, true)) == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a stuck run shows how far it got
  std::atexit(KillServers);
  ::signal(SIGALRM, OnWatchdog);
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
  g_root = root;
  std::vector<int> ports;
  for (int i = 0; i < (cluster ? 3 : 1); ++i) ports.push_back(FreePort(cluster, ports));
  std::vector<std::string> urls;
  Step("starting redis-server");
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
    g_servers.push_back(Spawn(args, true));
    urls.push_back("redis://127.0.0.1:" + std::to_string(port));
  }
  // Wait (bounded) until every server answers PING.
  Step("waiting for redis-server to answer PING");
  for (int port : ports) {
    if (!PollUntil("redis-cli -p " + std::to_string(port) + " ping 2>/dev/null | grep -q PONG", 60))
      Fail("redis-server on port " + std::to_string(port) + " did not answer PING within 60 s");
  }
  if (cluster) {
    Step("redis-cli --cluster create");
    std::vector<std::string> args = {"timeout", "120", "redis-cli", "--cluster", "create"};
    for (int port : ports) args.push_back("127.0.0.1:" + std::to_string(port));
    args.insert(args.end(), {"--cluster-replicas", "0", "--cluster-yes"});
    if (Wait(Spawn(args, true)) != 0) Fail("redis-cli --cluster create failed or took over 120 s");
    // Wait (bounded) until every node reports cluster_state:ok.
    Step("waiting for cluster_state:ok");
    for (int port : ports) {
      if (!PollUntil(
              "redis-cli -p " + std::to_string(port) + " cluster info | grep -q cluster_state:ok",
              60))
        Fail("the Redis Cluster node on port " + std::to_string(port) +
             " did not report cluster_state:ok within 60 s");
    }
  }
  std::printf("redis: %zu server(s) up\n", ports.size());

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
  Step("the first download_and_cache (fills the Redis tier)");
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
  Step("the timed repetitions");
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
  ::alarm(0);
  KillServers();
  return 0;
}
