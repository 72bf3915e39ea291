// The layer-streaming macro benchmark: in one run, the limits of this machine
// (the device: best of a one-request sequential O_DIRECT read and 16 / 32
// requests in flight, of the same entry file; memcpy on every core) and our
// loads as ratios to them: cold and warm get_layer in a NEW process for every
// disk_read_mode and checksum (cold: after `sync; echo 3 >
// /proc/sys/vm/drop_caches` as root, else fadvise, and it says so), memory
// hits, streaming with and without prefetch; then trace-driven eviction
// against Belady's optimum.
//   build/bench/layer_bench [--small] [--reps N] [--seed-path] [--traces-only] [--smoke]
// --small uses a 61 MB layer instead of the 7B-class 466 MB one;
// --traces-only runs the eviction traces alone;
// --seed-path also times torch.load + hashlib.md5 (Debian's python3-torch);
// --smoke: a 2 MB layer, one repetition, short traces (CI runs it so that the
// benchmark cannot rot; its numbers mean nothing).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_limits.h"
#include "bench_util.h"
#include "layercache/layer_cache.h"
#include "layercache/safetensors.h"
#include "memory/memory_tier.h"

using namespace layercache;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A 7B-class decoder layer (Qwen2-7B shapes), bf16 random bits.
bool g_tiny = false;  // --smoke

LayerPtr MakeLayer(bool small, uint64_t seed) {
  uint64_t h = small ? 1280 : 3584, kv = small ? 256 : 512, inter = small ? 6912 : 18944;
  if (g_tiny) h = 256, kv = 64, inter = 768;
  std::mt19937_64 rng(seed);
  LayerBuilder b;
  auto add = [&](const std::string& name, uint64_t rows, uint64_t cols) {
    std::vector<uint64_t> v(rows * cols / 4);
    for (auto& x : v) x = rng() & 0x3fff3fff3fff3fffULL;
    b.add_tensor(name, DType::BF16, {rows, cols}, std::as_bytes(std::span<const uint64_t>(v)));
  };
  add("self_attn.q_proj.weight", h, h);
  add("self_attn.k_proj.weight", kv, h);
  add("self_attn.v_proj.weight", kv, h);
  add("self_attn.o_proj.weight", h, h);
  add("mlp.gate_proj.weight", inter, h);
  add("mlp.up_proj.weight", inter, h);
  add("mlp.down_proj.weight", h, inter);
  return b.build();
}

// A get_layer in a new process (this program, run with --child-load): its
// seconds. The parent drops the page cache first for a cold load.
double ChildLoad(const std::string& self, const std::string& dir, DiskReadMode mode) {
  auto out = benchkit::RunCapture({self, "--child-load", dir, DiskReadModeName(mode)});
  if (!out.ok()) {
    std::fprintf(stderr, "child load failed: %s\n", out.status().ToString().c_str());
    std::exit(1);
  }
  return std::stod(*out);
}

void Spin(double seconds) {
  const auto t0 = Clock::now();
  while (Since(t0) < seconds) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool small = false, seed_path = false, traces_only = false, smoke = false;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--child-load" && i + 2 < argc) {  // internal: one timed get_layer
      LayerCacheOptions c;
      c.cache_dir = argv[i + 1];
      c.max_cache_size_gb = 100;
      c.max_memory_cache_size_gb = 0;
      c.disk_read_mode = ParseDiskReadMode(argv[i + 2]);
      LayerCache cache(c);
      const auto t0 = Clock::now();
      LayerPtr l = cache.get_layer("bench", 0);
      const double s = Since(t0);
      if (!l) return 1;
      std::printf("%.9f\n", s);
      return 0;
    }
    if (a == "--small") small = true;
    if (a == "--seed-path") seed_path = true;
    if (a == "--traces-only") traces_only = true;
    if (a == "--smoke") smoke = g_tiny = true;
    if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
  }
  if (smoke) reps = 1;
  ::unsetenv("LAYERCACHE_REMOTE");  // the local tiers are measured
  std::string self;
  {
    std::error_code ec;
    self = fs::read_symlink("/proc/self/exe", ec).string();
  }
  char tmpl[] = "/var/tmp/layercache-lbench-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  LayerPtr layer = MakeLayer(small, 1);
  const double gb = static_cast<double>(layer->nbytes()) / 1e9;
  std::printf("layer: %.1f MB bf16 (%s); %d reps, medians; work dir %s\n", gb * 1e3,
              smoke   ? "--smoke"
              : small ? "--small"
                      : "7B-class",
              reps, dir.c_str());

  LayerCacheOptions o;
  o.cache_dir = dir + "/cache";
  o.max_cache_size_gb = 100;
  o.max_memory_cache_size_gb = 0;
  {
    LayerCache writer(o);
    if (!writer.cache_layer("bench", 0, layer)) {
      std::fprintf(stderr, "cannot write the entry\n");
      return 1;
    }
  }
  std::string entry;
  for (const auto& e : fs::recursive_directory_iterator(o.cache_dir + "/entries")) {
    if (e.is_regular_file()) entry = e.path().string();
  }

  if (!traces_only) {
    // --- limits ---------------------------------------------------------------
    auto device = benchkit::MeasureDeviceLimit(entry, reps);
    const double memcpy_gbps = benchkit::MeasureMemcpyGBps(layer->nbytes(), reps);
    const double device_gbps = device.ok() ? device->best() : 0;
    std::printf("\nlimits (same run, same entry file)\n");
    if (device.ok()) {
      std::printf("  device: sequential O_DIRECT, 16 MiB requests   %6.2f GB/s\n",
                  device->sequential_gbps);
      std::printf("  device: O_DIRECT, 16 x 1 MiB in flight         %6.2f GB/s\n",
                  device->qd16_gbps);
      std::printf("  device: O_DIRECT, 32 x 512 KiB in flight       %6.2f GB/s\n",
                  device->qd32_gbps);
    } else {
      std::printf("  device: %s\n", device.status().ToString().c_str());
    }
    std::printf("  memcpy on %u cores                              %6.2f GB/s\n",
                std::thread::hardware_concurrency(), memcpy_gbps);

    // --- disk loads, each in a new process ---------------------------------------
    std::string how = "?";
    auto cold = [&](const std::string& d, DiskReadMode mode) {
      std::vector<double> v;
      for (int r = 0; r < reps; ++r) {
        auto h = benchkit::DropCaches({d});
        how = h.ok() ? *h : h.status().ToString();
        v.push_back(ChildLoad(self, d, mode));
      }
      return benchkit::Median(v);
    };
    auto warm = [&](const std::string& d, DiskReadMode mode) {
      std::vector<double> v;
      for (int r = 0; r < reps; ++r) {
        bench::ReadTree(d + "/entries");
        v.push_back(ChildLoad(self, d, mode));
      }
      return benchkit::Median(v);
    };
    std::printf(
        "\ndisk tier: get_layer timed in a new process, checksum verified, memory tier off\n");
    auto line = [&](const std::string& what, double s, bool vs_device) {
      const double lim = vs_device ? device_gbps : memcpy_gbps;
      std::printf("  %-38s %8.1f ms  %6.2f GB/s  %.2f of %s\n", what.c_str(), s * 1e3, gb / s,
                  lim > 0 ? gb / s / lim : 0.0, vs_device ? "device" : "memcpy");
    };
    for (DiskReadMode m : {DiskReadMode::kAuto, DiskReadMode::kDirect, DiskReadMode::kBuffered,
                           DiskReadMode::kMapped}) {
      const std::string name = DiskReadModeName(m);
      line("cold, " + name + (m == DiskReadMode::kAuto ? " (default)" : ""), cold(o.cache_dir, m),
           true);
      line("warm, " + name + (m == DiskReadMode::kAuto ? " (default)" : ""), warm(o.cache_dir, m),
           false);
    }
    for (ChecksumAlgorithm algorithm : {ChecksumAlgorithm::kSHA256, ChecksumAlgorithm::kMD5}) {
      LayerCacheOptions oa = o;
      oa.cache_dir = dir + "/cache-" + ChecksumAlgorithmName(algorithm);
      oa.checksum_algorithm = algorithm;
      {
        LayerCache w(oa);
        if (!w.cache_layer("bench", 0, layer)) return 1;
      }
      line(std::string("cold, auto, ") + ChecksumAlgorithmName(algorithm),
           cold(oa.cache_dir, DiskReadMode::kAuto), true);
    }
    std::printf("  (cold: a new process after %s)\n",
                how == "drop_caches" ? "sync; echo 3 > /proc/sys/vm/drop_caches"
                                     : "posix_fadvise(DONTNEED) of the entries: not root, the "
                                       "page cache was not dropped as a whole");

    // --- memory hits ------------------------------------------------------------
    {
      LayerCacheOptions om = o;
      om.max_memory_cache_size_gb = 64;
      LayerCache cache(om);
      for (int i = 0; i < 8; ++i) cache.cache_layer("hot", i, MakeLayer(true, 100 + i));
      const int n = smoke ? 20'000 : 2'000'000;
      auto hits_per_s = [&](int threads) {
        std::atomic<bool> go{false};
        std::vector<std::thread> ts;
        std::vector<double> secs(static_cast<size_t>(threads));
        for (int t = 0; t < threads; ++t) {
          ts.emplace_back([&, t] {
            while (!go) {
            }
            const auto t0 = Clock::now();
            for (int i = 0; i < n; ++i) {
              LayerPtr l = cache.get_layer("hot", t);
              if (!l) std::abort();
            }
            secs[static_cast<size_t>(t)] = Since(t0);
          });
        }
        go = true;
        for (auto& t : ts) t.join();
        return threads * n / *std::max_element(secs.begin(), secs.end());
      };
      std::vector<double> one, two;
      for (int r = 0; r < reps; ++r) {
        one.push_back(hits_per_s(1));
        two.push_back(hits_per_s(2));
      }
      std::sort(one.begin(), one.end());
      std::sort(two.begin(), two.end());
      const double h1 = one[one.size() / 2], h2 = two[two.size() / 2];
      std::printf(
          "\nmemory tier (get_layer hit, release included)\n  1 thread   %6.1f ns per hit\n  2 "
          "threads  %6.1f "
          "M hits/s together = %.2fx one thread\n",
          1e9 / h1, h2 / 1e6, h2 / h1);
    }

    // --- streaming ----------------------------------------------------------------
    {
      const int layers = 16;
      LayerCacheOptions os = o;
      os.cache_dir = dir + "/stream";
      os.max_memory_cache_size_gb = 0.001;  // holds ~nothing: every pass streams from disk
      os.prefetch_threads = 1;
      LayerPtr small_layer = MakeLayer(true, 7);
      {
        LayerCache w(os);
        for (int i = 0; i < layers; ++i) w.cache_layer("s", i, small_layer);
      }
      LayerCacheOptions os_mem = os;
      os_mem.max_memory_cache_size_gb =
          2.5 * static_cast<double>(small_layer->nbytes()) / (1 << 30);
      LayerCache cache(os_mem);
      // Load time per layer (cold), then compute = load.
      const double load = bench::MedianSeconds(reps, [&] {
        bench::EvictTree(os.cache_dir + "/entries");
        LayerCache fresh(os);
        (void)fresh.get_layer("s", 3);
      });
      auto pass = [&](bool prefetch) {
        bench::EvictTree(os.cache_dir + "/entries");
        LayerCache c(os_mem);
        const auto t0 = Clock::now();
        for (int i = 0; i < layers; ++i) {
          LayerPtr l =
              prefetch ? c.get_layer_with_prefetch("s", i, layers, 1) : c.get_layer("s", i);
          if (!l) std::abort();
          Spin(load);  // "compute" as long as a load
        }
        return Since(t0);
      };
      std::vector<double> without, with;
      for (int r = 0; r < reps; ++r) {
        without.push_back(pass(false));
        with.push_back(pass(true));
      }
      std::sort(without.begin(), without.end());
      std::sort(with.begin(), with.end());
      const double bound = layers * load;  // max(total compute, total load)
      std::printf(
          "\nstreaming %d layers of %.1f MB from disk, compute per layer = load per layer = %.1f "
          "ms\n",
          layers, static_cast<double>(small_layer->nbytes()) / 1e6, load * 1e3);
      std::printf("  no prefetch          %8.1f ms  = %.2f x max(compute, load)\n",
                  without[without.size() / 2] * 1e3, without[without.size() / 2] / bound);
      std::printf("  prefetch lookahead 1 %8.1f ms  = %.2f x max(compute, load)\n",
                  with[with.size() / 2] * 1e3, with[with.size() / 2] / bound);
    }

  }  // !traces_only

  // --- eviction traces ------------------------------------------------------------
  {
    std::printf("\neviction on traces (memory tier; hit ratios)\n");
    std::printf("  %-34s %8s %8s %8s\n", "trace", "lru", "scan-r.", "belady");
    auto run = [](EvictionPolicy policy, const std::vector<int>& trace, int capacity) {
      auto probe =
          LayerBuilder().add_tensor("w", DType::U8, {1000}, std::vector<uint8_t>(1000)).build();
      MemoryTier tier(static_cast<uint64_t>(capacity) * probe->nbytes(), policy);
      int hits = 0;
      for (int k : trace) {
        if (tier.Lookup(LayerKey{"t", k, "", ""})) {
          ++hits;
        } else {
          tier.Insert(LayerKey{"t", k, "", ""}, probe, nullptr);
        }
      }
      return static_cast<double>(hits) / static_cast<double>(trace.size());
    };
    auto belady = [](const std::vector<int>& trace, int capacity) {
      std::map<int, std::vector<size_t>> uses;
      for (size_t i = 0; i < trace.size(); ++i) uses[trace[i]].push_back(i);
      std::map<int, size_t> next_use;  // key -> index into uses
      std::vector<int> cache;
      int hits = 0;
      for (size_t i = 0; i < trace.size(); ++i) {
        const int k = trace[i];
        ++next_use[k];
        auto nextof = [&](int key) {
          const auto& u = uses[key];
          const size_t j = next_use[key];
          return j < u.size() ? u[j] : SIZE_MAX;
        };
        if (std::find(cache.begin(), cache.end(), k) != cache.end()) {
          ++hits;
          continue;
        }
        if (static_cast<int>(cache.size()) < capacity) {
          cache.push_back(k);
          continue;
        }
        auto victim = std::max_element(cache.begin(), cache.end(),
                                       [&](int a, int b) { return nextof(a) < nextof(b); });
        if (nextof(*victim) > nextof(k)) *victim = k;  // bypass when k is needed last
      }
      return static_cast<double>(hits) / static_cast<double>(trace.size());
    };
    struct T {
      std::string name;
      std::vector<int> trace;
      int capacity;
    };
    std::vector<T> traces;
    for (auto [n, c] : std::vector<std::pair<int, int>>{{32, 8}, {32, 24}, {80, 20}, {28, 27}}) {
      std::vector<int> t;
      for (int p = 0; p < 40; ++p) {
        for (int i = 0; i < n; ++i) t.push_back(i);
      }
      traces.push_back(
          {"sweeps of " + std::to_string(n) + " layers, room for " + std::to_string(c), t, c});
    }
    {
      std::mt19937 rng(5);
      std::vector<double> cdf(500);
      double sum = 0;
      for (int k = 0; k < 500; ++k)
        cdf[static_cast<size_t>(k)] = (sum += 1.0 / std::pow(k + 1, 0.9));
      std::uniform_real_distribution<double> u(0, sum);
      std::vector<int> t;
      for (int i = 0; i < 30000; ++i) {
        t.push_back(
            static_cast<int>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin()));
      }
      traces.push_back({"zipf(0.9) over 500, room for 50", t, 50});  // reused below
    }
    // Mixes: phases of sweeps and of skewed traffic, and the two interleaved
    // (a model streamed while another, hot, serves requests).
    const std::vector<int> zipf = traces.back().trace;
    {
      std::vector<int> t;
      size_t z = 0;
      for (int phase = 0; phase < 6; ++phase) {
        if (phase % 2 == 0) {
          for (int p = 0; p < 10; ++p) {
            for (int i = 0; i < 80; ++i) t.push_back(1000 + i);
          }
        } else {
          for (int i = 0; i < 2000; ++i) t.push_back(zipf[z++ % zipf.size()]);
        }
      }
      traces.push_back({"phases: sweeps(80) / zipf, room 50", t, 50});
    }
    {
      std::vector<int> t;
      std::mt19937 rng(11);
      size_t z = 0;
      int next_layer = 0;
      for (int i = 0; i < 12000; ++i) {
        if (rng() % 10 < 7) {
          t.push_back(1000 + next_layer);
          next_layer = (next_layer + 1) % 64;
        } else {
          t.push_back(zipf[z++ % zipf.size()]);
        }
      }
      traces.push_back({"70% sweeps(64) + 30% zipf, room 40", t, 40});
    }
    for (const T& t : traces) {
      const double l = run(EvictionPolicy::kLru, t.trace, t.capacity);
      const double s = run(EvictionPolicy::kScanResistant, t.trace, t.capacity);
      const double b = belady(t.trace, t.capacity);
      std::printf("  %-34s %8.3f %8.3f %8.3f   scan-resistant/belady %.2f, /lru %.2f\n",
                  t.name.c_str(), l, s, b, s / b, l > 0 ? s / l : 0.0);
    }

    // The disk tier on shorter traces (each miss writes and fsyncs an entry).
    std::printf("\neviction on traces (disk tier, memory tier off; hit ratios)\n");
    std::printf("  %-34s %8s %8s %8s\n", "trace", "lru", "scan-r.", "belady");
    auto run_disk = [&](EvictionPolicy policy, const std::vector<int>& trace, int capacity) {
      LayerPtr probe =
          LayerBuilder().add_tensor("w", DType::U8, {1000}, std::vector<uint8_t>(1000)).build();
      LayerCacheOptions od;
      od.cache_dir = dir + "/trace-" + std::to_string(static_cast<int>(policy)) + "-" +
                     std::to_string(capacity);
      od.max_memory_cache_size_gb = 0;
      od.eviction_policy = policy;
      const uint64_t entry_bytes =
          4096 + 1000;  // header padded so that the data starts at 4096, then the data
      od.max_cache_size_gb =
          (static_cast<double>(capacity) + 0.5) * entry_bytes / (1024.0 * 1024.0 * 1024.0);
      LayerCache cache(od);
      int hits = 0;
      for (int k : trace) {
        if (cache.get_layer("t", k)) {
          ++hits;
        } else {
          cache.cache_layer("t", k, probe);
        }
      }
      fs::remove_all(od.cache_dir);
      return static_cast<double>(hits) / static_cast<double>(trace.size());
    };
    std::vector<T> disk_traces;
    for (auto [n, c] : std::vector<std::pair<int, int>>{{16, 4}, {16, 12}, {40, 10}}) {
      std::vector<int> t;
      for (int p = 0; p < (smoke ? 2 : 30); ++p) {
        for (int i = 0; i < n; ++i) t.push_back(i);
      }
      disk_traces.push_back(
          {"sweeps of " + std::to_string(n) + " layers, room for " + std::to_string(c), t, c});
    }
    disk_traces.push_back({"zipf(0.9) over 500, room for 50",
                           std::vector<int>(zipf.begin(), zipf.begin() + (smoke ? 200 : 3000)),
                           50});
    {
      std::vector<int> t;  // phases, shorter: every miss writes an entry
      size_t z = 0;
      for (int phase = 0; phase < 4; ++phase) {
        if (phase % 2 == 0) {
          for (int p = 0; p < (smoke ? 1 : 8); ++p) {
            for (int i = 0; i < 16; ++i) t.push_back(1000 + i);
          }
        } else {
          for (int i = 0; i < (smoke ? 50 : 600); ++i) t.push_back(zipf[z++ % zipf.size()]);
        }
      }
      disk_traces.push_back({"phases: sweeps(16) / zipf, room 12", t, 12});
    }
    for (const T& t : disk_traces) {
      const double l = run_disk(EvictionPolicy::kLru, t.trace, t.capacity);
      const double s = run_disk(EvictionPolicy::kScanResistant, t.trace, t.capacity);
      const double b = belady(t.trace, t.capacity);
      std::printf("  %-34s %8.3f %8.3f %8.3f   scan-resistant/belady %.2f, /lru %.2f\n",
                  t.name.c_str(), l, s, b, s / b, l > 0 ? s / l : 0.0);
    }
  }

  // --- the seed's path -------------------------------------------------------------
  if (seed_path && !smoke) {
    const std::string script =
        "import hashlib, sys, time, torch\n"
        "t = {}\n"
        "import safetensors_free as sf\n";
    (void)script;
    const std::string pt = dir + "/layer.pt";
    const std::string py =
        "import hashlib, os, sys, time, torch\n"
        "d = {f't{i}': torch.empty(0) for i in range(0)}\n"
        "n = int(sys.argv[2]); torch.save({'w': torch.zeros(n // 2, dtype=torch.bfloat16)}, "
        "sys.argv[1])\n"
        "ts = []\n"
        "for _ in range(int(sys.argv[3])):\n"
        "    fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, "
        "os.POSIX_FADV_DONTNEED); os.close(fd)\n"
        "    t0 = time.perf_counter(); data = open(sys.argv[1], 'rb').read(); "
        "hashlib.md5(data).hexdigest()\n"
        "    import io; torch.load(io.BytesIO(data)); ts.append(time.perf_counter() - t0)\n"
        "ts.sort(); print(ts[len(ts) // 2])\n";
    const std::string cmd = "/usr/bin/python3 -c \"$(cat <<'EOF'\n" + py + "EOF\n)\" " + pt + " " +
                            std::to_string(layer->nbytes()) + " " + std::to_string(reps);
    FILE* p = ::popen(cmd.c_str(), "r");
    double s = 0;
    if (p != nullptr && std::fscanf(p, "%lf", &s) == 1 && s > 0) {
      std::printf(
          "\nthe seed's path (torch.load of a .pt + hashlib.md5, page cache dropped)\n  %8.1f ms  "
          "%6.2f GB/s\n",
          s * 1e3, gb / s);
    } else {
      std::printf("\nthe seed's path: /usr/bin/python3 with torch is not available\n");
    }
    if (p != nullptr) ::pclose(p);
  }
  fs::remove_all(dir);
  return 0;
}
