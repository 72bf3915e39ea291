// A child process of the versioned stress (tests/versioned_stress_test.cc).
//
//   versioned_worker DIR SHARED ID THREADS SECONDS MEMORY [REMOTE_URLS]
//
// THREADS threads put, read and invalidate 16 keys of one LayerCache on DIR
// (memory tier on when MEMORY is 1; the Redis tier when REMOTE_URLS is given)
// for SECONDS. Every write of a key carries (key, version, writer) in its
// bytes: a "stamp" tensor, and weights generated from the three, so that a
// reader can tell exactly which write it got, and whether it got all of it.
//
// SHARED is a file that every process maps: a global clock (one atomic
// counter; a version is the tick at which its put started) and, per key, what
// was acknowledged. A read is checked against what was acknowledged before it
// started:
//
//   - the bytes are exactly one write of this key (never torn, never a mix);
//   - not stale: if put P of the key was acknowledged before the read began,
//     the read returns no version whose put ended before P started; if an
//     invalidation I was acknowledged before the read began, no version whose
//     put ended before I started (linearizability of each key);
//   - a miss is allowed only when an invalidation of the key ended after the
//     last acknowledged put started, or is in flight (the disk budget is large:
//     nothing is evicted).
//
// Whose acknowledgements count (the guarantee the cache gives):
//   - this process's own, always: within a process each key is linearizable
//     (a read that begins after a put or invalidation returned never returns
//     an older version, memory tier on or off);
//   - every process's, when the memory tier is off and no read of the same key
//     was in flight in this process when the read began (a read may join one
//     in flight, single-flight, and then gets what that one found);
//   - with the memory tier on, a process's memory tier is not told of other
//     processes' writes: it may serve a version older than one another process
//     acknowledged, until it evicts or invalidates it. Those reads are counted
//     (cross_process_stale) and reported, not failed. But no process undoes
//     another's invalidation or put: a layer evicted from memory is written
//     back to disk only if no process invalidated or replaced its key since it
//     was read or put (the shared invalidation epochs, src/disk/
//     invalidation_epochs.h), so every process's own acknowledgements hold
//     with several processes too (MEMORY 2 checks them, as MEMORY 1 does).
//
// Prints "VERSIONED reads=.. hits=.. puts=.. invalidations=.. torn=.. stale=..
// bad_misses=.. cross_process_stale=.. joined=.. own_stale=.." and exits 0 when nothing was wrong.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "layercache/layer_cache.h"
#include "test_layers.h"

using namespace layercache;

namespace {

constexpr int kKeys = 16;
constexpr uint64_t kMaxVersions = 1u << 21;

struct KeyState {
  std::atomic<uint64_t> put_floor{0};  // max start tick of an acknowledged put
  std::atomic<uint64_t> inv_floor{0};  // max start tick of an acknowledged invalidation
  std::atomic<uint64_t> inv_end{0};    // max end tick of an invalidation
  std::atomic<int64_t> inv_inflight{0};
  std::atomic<int64_t> reading{0};  // this process's reads of the key in flight
};

struct Shared {
  std::atomic<uint64_t> clock{0};
  KeyState keys[kKeys];
  std::atomic<uint64_t> end_tick[kMaxVersions];  // of the put that wrote each version
};

void AtomicMax(std::atomic<uint64_t>& a, uint64_t v) {
  uint64_t cur = a.load();
  while (cur < v && !a.compare_exchange_weak(cur, v)) {
  }
}

LayerPtr Versioned(int64_t key, uint64_t version, int64_t writer) {
  const uint64_t seed = testing::Mix(testing::SeedOf("versioned", key, version) ^
                                     static_cast<uint64_t>(writer) * 0x9e3779b97f4a7c15ULL);
  LayerPtr base = testing::MakeLayer(seed, 8 << 10);
  std::vector<int64_t> stamp{key, static_cast<int64_t>(version), writer};
  std::vector<uint16_t> w(base->tensor_data("mlp.weight").size() / 2);
  std::memcpy(w.data(), base->tensor_data("mlp.weight").data(), w.size() * 2);
  return LayerBuilder()
      .add_tensor("mlp.weight", DType::BF16, {w.size() / 64, 64}, w)
      .add_tensor("stamp", DType::I64, {3}, stamp)
      .set_metadata("writer", std::to_string(writer))
      .build();
}

struct Counts {
  uint64_t reads = 0, hits = 0, puts = 0, invalidations = 0;
  uint64_t torn = 0, stale = 0, bad_misses = 0, xstale = 0, joined = 0, own_stale = 0;
};

// Which version `layer` is, when it is exactly one write of `key`; 0 if not.
uint64_t VersionOf(int64_t key, const Layer& layer) {
  const TensorInfo* t = layer.find("stamp");
  if (t == nullptr || t->nbytes != 24) return 0;
  int64_t stamp[3];
  std::memcpy(stamp, layer.tensor_data(*t).data(), 24);
  if (stamp[0] != key || stamp[1] <= 0) return 0;
  LayerPtr expected = Versioned(key, static_cast<uint64_t>(stamp[1]), stamp[2]);
  return layer.ContentEquals(*expected) ? static_cast<uint64_t>(stamp[1]) : 0;
}

// Checks a read of `key` that began with floors (put, inv) read from `ks`:
// returns "" or what was wrong.
const char* Check(const KeyState& ks, uint64_t put_floor, uint64_t inv_floor, uint64_t version,
                  bool hit, const Shared& shared) {
  if (hit) {
    const uint64_t end = shared.end_tick[version % kMaxVersions].load();
    if (end != 0 && (end < put_floor || end < inv_floor)) return "stale";
    return "";
  }
  if (put_floor == 0) return "";
  if (ks.inv_inflight.load() > 0 || ks.inv_end.load() > put_floor) return "";
  return "miss";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8) {
    std::fprintf(stderr, "usage: versioned_worker DIR SHARED ID THREADS SECONDS MEMORY [URLS]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int id = std::atoi(argv[3]);
  const int threads = std::atoi(argv[4]);
  const int seconds = std::atoi(argv[5]);
  // MEMORY: 0 off; 1 or 2 on, this process's acknowledgements checked (2: one
  // of several processes, whose write-backs must not undo them).
  const int memory_mode = std::atoi(argv[6]);
  const bool memory = memory_mode != 0;
  const int fd = ::open(argv[2], O_RDWR);
  if (fd < 0 || ::ftruncate(fd, sizeof(Shared)) != 0) {
    std::perror(argv[2]);
    return 2;
  }
  void* p = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return 2;
  auto* shared = static_cast<Shared*>(p);  // zero-filled file: every atomic is 0
  static KeyState local[kKeys];            // this process's acknowledgements

  LayerCacheOptions o;
  o.cache_dir = dir;
  o.max_cache_size_gb = 1;  // no eviction: a miss means an invalidation
  o.max_memory_cache_size_gb = memory ? 64.0 * 1024 / (1 << 30) : 0;  // 64 KiB: some evict
  if (argc == 8) {
    std::string urls = argv[7];
    for (size_t pos = 0; pos < urls.size();) {
      size_t comma = urls.find(',', pos);
      if (comma == std::string::npos) comma = urls.size();
      o.remote_urls.push_back(urls.substr(pos, comma - pos));
      pos = comma + 1;
    }
    o.remote_timeout_ms = 500;
    o.remote_chunk_mb = 1;
  }
  LayerCache cache(o);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<Counts> counts(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      Counts& c = counts[static_cast<size_t>(t)];
      const int64_t writer = id * 100 + t;
      std::mt19937 rng(static_cast<unsigned>(writer * 7919 + 17));
      while (std::chrono::steady_clock::now() < deadline) {
        const int key = static_cast<int>(rng() % kKeys);
        KeyState& ks = shared->keys[key];
        KeyState& mine = local[key];
        const int what = static_cast<int>(rng() % 20);
        if (what < 10) {
          const uint64_t put_floor = ks.put_floor.load(), inv_floor = ks.inv_floor.load();
          const uint64_t my_put = mine.put_floor.load(), my_inv = mine.inv_floor.load();
          // A read may join one of the same key already in flight in this
          // process (single-flight) and get what that one found: the
          // cross-process check applies to reads that began alone.
          const bool alone = mine.reading.fetch_add(1) == 0;
          LayerPtr l = cache.get_layer("versioned", key);
          mine.reading.fetch_sub(1);
          ++c.reads;
          uint64_t v = 0;
          if (l) {
            ++c.hits;
            v = VersionOf(key, *l);
            if (v == 0) {
              ++c.torn;
              std::fprintf(stderr, "worker %d: key %d: bytes that are not one write of it\n", id,
                           key);
              continue;
            }
          }
          const std::string global = Check(ks, put_floor, inv_floor, v, l != nullptr, *shared);
          // Misses: any process's invalidation explains one.
          const std::string own = Check(ks, my_put, my_inv, v, l != nullptr, *shared);
          std::string wrong = memory || !alone || !own.empty() ? own : global;
          if (memory && !global.empty()) ++c.xstale;
          if (!memory && !alone) ++c.joined;
          if (wrong == "stale") {
            ++c.stale;
            std::fprintf(stderr,
                         "worker %d: key %d: version %llu (put ended at %llu) read after a put "
                         "started at %llu / an invalidation started at %llu was acknowledged\n",
                         id, key, static_cast<unsigned long long>(v),
                         static_cast<unsigned long long>(shared->end_tick[v % kMaxVersions].load()),
                         static_cast<unsigned long long>(memory ? my_put : put_floor),
                         static_cast<unsigned long long>(memory ? my_inv : inv_floor));
          } else if (wrong == "miss") {
            ++c.bad_misses;
            std::fprintf(stderr, "worker %d: key %d: a miss after an acknowledged put\n", id, key);
          }
        } else if (what < 18) {
          const uint64_t v = shared->clock.fetch_add(1) + 1;
          if (v >= kMaxVersions) break;  // the table is full: stop writing
          if (!cache.cache_layer("versioned", key, Versioned(key, v, writer))) {
            std::fprintf(stderr, "worker %d: cache_layer failed\n", id);
            ++c.bad_misses;
          }
          shared->end_tick[v].store(shared->clock.fetch_add(1) + 1);
          AtomicMax(ks.put_floor, v);
          AtomicMax(mine.put_floor, v);
          ++c.puts;
        } else {
          ks.inv_inflight.fetch_add(1);
          mine.inv_inflight.fetch_add(1);
          const uint64_t start = shared->clock.fetch_add(1) + 1;
          cache.invalidate_cache("versioned", key);
          const uint64_t end = shared->clock.fetch_add(1) + 1;
          AtomicMax(ks.inv_end, end);
          AtomicMax(mine.inv_end, end);
          AtomicMax(ks.inv_floor, start);
          AtomicMax(mine.inv_floor, start);
          ks.inv_inflight.fetch_sub(1);
          mine.inv_inflight.fetch_sub(1);
          ++c.invalidations;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  Counts s;
  for (const Counts& c : counts) {
    s.reads += c.reads, s.hits += c.hits, s.puts += c.puts, s.invalidations += c.invalidations;
    s.torn += c.torn, s.stale += c.stale, s.bad_misses += c.bad_misses, s.xstale += c.xstale,
        s.joined += c.joined, s.own_stale += c.own_stale;
  }
  std::printf(
      "VERSIONED reads=%llu hits=%llu puts=%llu invalidations=%llu torn=%llu stale=%llu "
      "bad_misses=%llu cross_process_stale=%llu joined=%llu own_stale=%llu\n",
      static_cast<unsigned long long>(s.reads), static_cast<unsigned long long>(s.hits),
      static_cast<unsigned long long>(s.puts), static_cast<unsigned long long>(s.invalidations),
      static_cast<unsigned long long>(s.torn), static_cast<unsigned long long>(s.stale),
      static_cast<unsigned long long>(s.bad_misses), static_cast<unsigned long long>(s.xstale),
      static_cast<unsigned long long>(s.joined), static_cast<unsigned long long>(s.own_stale));
  return s.torn + s.stale + s.bad_misses == 0 ? 0 : 1;
}
