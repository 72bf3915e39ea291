// A child process for the multi-process tests. Modes:
//   fill DIR MODEL N COUNTER_FILE   get_or_load layers 0..N-1; each load appends
//                                   a line to COUNTER_FILE; every layer is checked
//   node DIR ENDPOINT REPO N REMOTE_URLS MODEL_DIR
//                                   a cluster node: download_and_cache layers 0..N-1
//                                   through the remote tier (URLs comma-separated),
//                                   each checked against MODEL_DIR; prints a NODE line
//   stress DIR ID OPS BUDGET_BYTES [THREADS SECONDS]
//                                   mixed get / cache / invalidate / stats on 24 keys
//                                   from THREADS threads, for OPS operations or SECONDS;
//                                   every layer read is checked against its key,
//                                   bytes on disk <= budget + one entry; prints a
//                                   STRESS line with the operations it checked
// Exits 0 when everything read was right, 1 otherwise (with the reason).
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "layercache/layer_cache.h"
#include "source/checkpoint.h"
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

// What one stress thread did; summed over threads and printed as a
// "STRESS ..." line that the test adds up over processes.
struct StressCounts {
  uint64_t reads = 0, hits = 0, writes = 0, invalidations = 0, samples = 0;
  uint64_t max_disk = 0;
  int bad = 0;
};

// Bytes of entry and temporary files under `dir`, as the file system sees
// them. The walk holds the index's write lock, under which no entry is
// unlinked nor any space reserved, and lists entries/ before tmp/, so that an
// entry renamed from tmp/ meanwhile is not counted twice.
uint64_t EntryBytesOnDisk(const std::string& dir) {
  namespace fs = std::filesystem;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2((dir + "/index.sqlite").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return 0;
  }
  sqlite3_busy_timeout(db, 60'000);
  uint64_t total = 0;
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK) {
    for (const char* sub : {"entries", "tmp"}) {
      std::error_code ec;
      for (fs::recursive_directory_iterator it(dir + "/" + sub, ec), end; !ec && it != end;
           it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.ends_with(".safetensors") && !name.ends_with(".tmp")) continue;
        std::error_code size_ec;
        const uint64_t size = fs::file_size(it->path(), size_ec);
        if (!size_ec) total += size;
      }
    }
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  sqlite3_close(db);
  return total;
}

// One thread of the stress: mixed operations until `ops` are done or the
// deadline passes; every layer read is checked against its key, and the
// bytes on disk are sampled against the budget plus the largest entry.
StressCounts StressThread(LayerCache& cache, const std::string& dir, int id, int ops,
                          uint64_t budget, std::chrono::steady_clock::time_point deadline) {
  std::mt19937 rng(static_cast<unsigned>(id * 7919 + 1));
  StressCounts c;
  // Every entry has the same size: data, header and alignment padding.
  const uint64_t entry = testing::MakeLayer(0, 8 << 10)->nbytes() + 4096 + 4096;
  for (int op = 0; op < ops && std::chrono::steady_clock::now() < deadline; ++op) {
    const int key = static_cast<int>(rng() % 24);
    const std::string model = "stress";
    const uint64_t seed = testing::SeedOf(model, key);
    const int what = static_cast<int>(rng() % 10);
    if (what < 5) {
      LayerPtr l = cache.get_layer(model, key);
      ++c.reads;
      if (l) ++c.hits;
      if (l && !l->ContentEquals(*testing::MakeLayer(seed, 8 << 10))) {
        std::fprintf(stderr, "worker %d: wrong bytes for layer %d\n", id, key);
        ++c.bad;
      }
    } else if (what < 9) {
      ++c.writes;
      if (!cache.cache_layer(model, key, testing::MakeLayer(seed, 8 << 10))) {
        std::fprintf(stderr, "worker %d: cache_layer failed for %d\n", id, key);
        ++c.bad;
      }
    } else if (what == 9 && (op % 2) == 0) {
      ++c.invalidations;
      cache.invalidate_cache(model, key);
    } else {
      const uint64_t used = EntryBytesOnDisk(dir);
      ++c.samples;
      c.max_disk = std::max(c.max_disk, used);
      if (used > budget + entry) {
        std::fprintf(stderr, "worker %d: %llu bytes on disk, over budget %llu + one entry %llu\n",
                     id, static_cast<unsigned long long>(used),
                     static_cast<unsigned long long>(budget),
                     static_cast<unsigned long long>(entry));
        ++c.bad;
      }
    }
  }
  return c;
}

int Stress(const std::string& dir, int id, int ops, uint64_t budget, int threads, int seconds) {
  LayerCacheOptions o;
  o.cache_dir = dir;
  o.max_cache_size_gb = static_cast<double>(budget) / (1024.0 * 1024.0 * 1024.0);
  o.max_memory_cache_size_gb = 64.0 * 1024 / (1024.0 * 1024.0 * 1024.0);
  LayerCache cache(o);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<StressCounts> counts(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      counts[static_cast<size_t>(t)] = StressThread(cache, dir, id * 16 + t, ops, budget, deadline);
    });
  }
  for (auto& t : pool) t.join();
  StressCounts sum;
  for (const StressCounts& c : counts) {
    sum.reads += c.reads;
    sum.hits += c.hits;
    sum.writes += c.writes;
    sum.invalidations += c.invalidations;
    sum.samples += c.samples;
    sum.max_disk = std::max(sum.max_disk, c.max_disk);
    sum.bad += c.bad;
  }
  std::printf(
      "STRESS reads=%llu hits=%llu writes=%llu invalidations=%llu samples=%llu "
      "max_disk=%llu bad=%d\n",
      static_cast<unsigned long long>(sum.reads), static_cast<unsigned long long>(sum.hits),
      static_cast<unsigned long long>(sum.writes),
      static_cast<unsigned long long>(sum.invalidations),
      static_cast<unsigned long long>(sum.samples), static_cast<unsigned long long>(sum.max_disk),
      sum.bad);
  return sum.bad == 0 ? 0 : 1;
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// A node of a cluster: its own cache_dir, the shared remote tier, layers
// 0..n-1 of `repo` downloaded from `endpoint`, each compared with the local
// copy of the model in `model_dir`.
int Node(const std::string& dir, const std::string& endpoint, const std::string& repo, int n,
         const std::string& urls, const std::string& model_dir) {
  LayerCacheOptions o;
  o.cache_dir = dir;
  o.remote_urls = Split(urls, ',');
  o.remote_timeout_ms = 500;
  o.remote_wait_ms = 60'000;
  // Small chunks spread each layer over every master; a test may choose
  // bigger ones (LAYERCACHE_TEST_REMOTE_CHUNK_MB) so that some layers live
  // on some masters only.
  const char* chunk_mb = std::getenv("LAYERCACHE_TEST_REMOTE_CHUNK_MB");
  o.remote_chunk_mb = chunk_mb != nullptr ? std::atoi(chunk_mb) : 1;
  LayerCache cache(o);
  auto local = Checkpoint::Open(model_dir);
  if (!local.ok()) {
    std::fprintf(stderr, "%s\n", local.status().ToString().c_str());
    return 1;
  }
  DownloadOptions d;
  d.endpoint = endpoint;
  d.quiet = true;
  d.connections = 2;
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    auto r = cache.download_and_cache_status("node-model", i, repo, "", d);
    if (!r.ok()) {
      std::fprintf(stderr, "layer %d: %s\n", i, r.status().ToString().c_str());
      ++bad;
      continue;
    }
    if (!(*r)->ContentEquals(**(*local)->ReadLayer(i))) {
      std::fprintf(stderr, "layer %d: wrong bytes\n", i);
      ++bad;
    }
  }
  cache.flush();
  const CacheStats s = cache.get_stats();
  std::printf("NODE remote_hits=%llu lease_waits=%llu errors=%llu publishes=%llu corrupt=%llu\n",
              static_cast<unsigned long long>(s.remote_hits),
              static_cast<unsigned long long>(s.remote_lease_waits),
              static_cast<unsigned long long>(s.remote_errors),
              static_cast<unsigned long long>(s.remote_publishes),
              static_cast<unsigned long long>(s.remote_corrupt));
  return bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "fill" && argc == 6) return Fill(argv[2], argv[3], std::atoi(argv[4]), argv[5]);
    if (mode == "node" && argc == 8) {
      return Node(argv[2], argv[3], argv[4], std::atoi(argv[5]), argv[6], argv[7]);
    }
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
