// A child process for the multi-process tests. Modes:
//   fill DIR MODEL N COUNTER_FILE   get_or_load layers 0..N-1; each load appends
//                                   a line to COUNTER_FILE; every layer is checked
//   stress DIR ID OPS BUDGET_BYTES [THREADS SECONDS]
//                                   mixed get / cache / invalidate / stats on 24 keys
//                                   from THREADS threads, for OPS operations or SECONDS;
//                                   every layer read is checked against its key
// Exits 0 when everything read was right, 1 otherwise (with the reason).
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "layercache/layer_cache.h"
#include "test_layers.h"

using namespace layercache;

namespace {

int Fill(const std::string& dir, const std::string& model, int n, const std::string& counter) {
  LayerCacheOptions o;
  o.cache_dir = dir;
  o.max_cache_size_gb = 1;
  LayerCache cache(o);
  for (int i = 0; i < n; ++i) {
    auto r = cache.get_or_load(LayerKey{model, i, "", ""}, [&]() -> Result<LayerPtr> {
      int fd = ::open(counter.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
      std::string line = std::to_string(i) + "\n";
      if (fd < 0 || ::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        return Status::IOError("cannot write counter");
      }
      ::close(fd);
      return testing::MakeLayer(testing::SeedOf(model, i), 16 << 10);
    });
    if (!r.ok()) {
      std::fprintf(stderr, "layer %d: %s\n", i, r.status().ToString().c_str());
      return 1;
    }
    if (!(*r)->ContentEquals(*testing::MakeLayer(testing::SeedOf(model, i), 16 << 10))) {
      std::fprintf(stderr, "layer %d: wrong bytes\n", i);
      return 1;
    }
  }
  return 0;
}

// One thread of the stress: mixed operations until `ops` are done or the
// deadline passes; every layer read is checked against its key, and disk
// usage is sampled against the budget plus the writers that may be in flight.
int StressThread(LayerCache& cache, int id, int ops, uint64_t budget,
                 std::chrono::steady_clock::time_point deadline, int writers) {
  std::mt19937 rng(static_cast<unsigned>(id * 7919 + 1));
  int bad = 0;
  const uint64_t entry = testing::MakeLayer(0, 8 << 10)->nbytes() + 4096 + 4096;
  for (int op = 0; op < ops && std::chrono::steady_clock::now() < deadline; ++op) {
    const int key = static_cast<int>(rng() % 24);
    const std::string model = "stress";
    const uint64_t seed = testing::SeedOf(model, key);
    const int what = static_cast<int>(rng() % 10);
    if (what < 5) {
      LayerPtr l = cache.get_layer(model, key);
      if (l && !l->ContentEquals(*testing::MakeLayer(seed, 8 << 10))) {
        std::fprintf(stderr, "worker %d: wrong bytes for layer %d\n", id, key);
        ++bad;
      }
    } else if (what < 9) {
      if (!cache.cache_layer(model, key, testing::MakeLayer(seed, 8 << 10))) {
        std::fprintf(stderr, "worker %d: cache_layer failed for %d\n", id, key);
        ++bad;
      }
    } else if (what == 9 && (op % 2) == 0) {
      cache.invalidate_cache(model, key);
    } else {
      const uint64_t used = cache.get_stats().disk_cache_bytes;
      if (used > budget + static_cast<uint64_t>(writers) * entry) {
        std::fprintf(stderr, "worker %d: disk usage %llu over budget %llu + writers in flight\n",
                     id, static_cast<unsigned long long>(used),
                     static_cast<unsigned long long>(budget));
        ++bad;
      }
    }
  }
  return bad;
}

int Stress(const std::string& dir, int id, int ops, uint64_t budget, int threads, int seconds) {
  LayerCacheOptions o;
  o.cache_dir = dir;
  o.max_cache_size_gb = static_cast<double>(budget) / (1024.0 * 1024.0 * 1024.0);
  o.max_memory_cache_size_gb = 64.0 * 1024 / (1024.0 * 1024.0 * 1024.0);
  LayerCache cache(o);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::atomic<int> bad{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back(
        [&, t] { bad += StressThread(cache, id * 16 + t, ops, budget, deadline, 4 * threads); });
  }
  for (auto& t : pool) t.join();
  return bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "fill" && argc == 6) return Fill(argv[2], argv[3], std::atoi(argv[4]), argv[5]);
    if (mode == "stress" && (argc == 6 || argc == 8)) {
      return Stress(argv[2], std::atoi(argv[3]), std::atoi(argv[4]),
                    std::strtoull(argv[5], nullptr, 10), argc == 8 ? std::atoi(argv[6]) : 1,
                    argc == 8 ? std::atoi(argv[7]) : 3600);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: multiprocess_worker fill|stress ...\n");
  return 2;
}
