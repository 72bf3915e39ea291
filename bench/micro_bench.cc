// Google Benchmark micro-benchmarks: memory-tier hits and checksums.
//   build/bench/micro_bench --benchmark_min_time=0.5
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstring>
#include <vector>

#include "layercache/checksum.h"
#include "layercache/layer.h"
#include "layercache/layer_cache.h"
#include "memory/memory_tier.h"

namespace {

using namespace layercache;

LayerPtr SmallLayer() {
  std::vector<float> v(256, 1.0f);
  return LayerBuilder().add_tensor("w", DType::F32, {256}, v).build();
}

void BM_MemoryHit(benchmark::State& state) {
  static MemoryTier* tier = [] {
    auto* t = new MemoryTier(uint64_t{1} << 30);
    for (int i = 0; i < 64; ++i)
      t->Insert(LayerKey{"bench-model", i, "", ""}, SmallLayer(), nullptr);
    return t;
  }();
  LayerKey key{"bench-model", state.thread_index() % 64, "", ""};
  for (auto _ : state) benchmark::DoNotOptimize(tier->Lookup(key));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MemoryHit)->Threads(1)->Threads(2)->UseRealTime();

// The public get_layer() on a memory-tier hit: key check, lookup, counters,
// LayerPtr copy and release.
void BM_GetLayerHit(benchmark::State& state) {
  static LayerCache* cache = [] {
    char tmpl[] = "/tmp/layercache-micro-XXXXXX";
    LayerCacheOptions o;
    o.cache_dir = ::mkdtemp(tmpl);
    o.persist_metadata = false;
    auto* c = new LayerCache(o);
    for (int i = 0; i < 64; ++i) c->cache_layer("bench-model", i, SmallLayer());
    return c;
  }();
  const int64_t layer = state.thread_index() % 64;
  for (auto _ : state) benchmark::DoNotOptimize(cache->get_layer("bench-model", layer));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GetLayerHit)->Threads(1)->Threads(2)->UseRealTime();

void BM_Checksum(benchmark::State& state) {
  std::vector<std::byte> data(size_t{64} << 20);
  std::memset(data.data(), 0x5a, data.size());
  const auto algorithm = static_cast<ChecksumAlgorithm>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(ChecksumHex(algorithm, data));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * data.size()));
  state.SetLabel(ChecksumAlgorithmName(algorithm));
}
BENCHMARK(BM_Checksum)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
