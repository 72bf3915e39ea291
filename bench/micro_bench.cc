// Google Benchmark micro-benchmarks: memory-tier hits and checksums.
//   build/bench/micro_bench --benchmark_min_time=0.5
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstring>
#include <vector>

#include "layercache/checksum.h"
#include "layercache/layer.h"
#include "layercache/layer_cache.h"
#include "layercache/synthetic_model.h"
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

// get_layer() without a revision on a memory-tier hit for a model that has
// a default revision (imported under a commit, as a download of "main"
// records it): the default-revision lookup is on this path.
void BM_GetLayerHitDefaultRevision(benchmark::State& state) {
  static LayerCache* cache = [] {
    char tmpl[] = "/tmp/layercache-micro-rev-XXXXXX";
    const std::string root = ::mkdtemp(tmpl);
    SyntheticModelSpec spec;
    spec.num_layers = 4;
    spec.hidden_size = 64;
    spec.intermediate_size = 128;
    spec.vocab_size = 64;
    if (!WriteSyntheticModel(root + "/model", spec).ok()) std::abort();
    LayerCacheOptions o;
    o.cache_dir = root + "/cache";
    auto* c = new LayerCache(o);
    c->import_checkpoint(root + "/model", "bench-rev-model", {}, "", false,
                         "0123456789abcdef0123456789abcdef01234567");
    for (int i = 0; i < 4; ++i) {
      if (!c->get_layer("bench-rev-model", i)) std::abort();  // into the memory tier
    }
    return c;
  }();
  const int64_t layer = state.thread_index() % 4;
  for (auto _ : state) benchmark::DoNotOptimize(cache->get_layer("bench-rev-model", layer));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GetLayerHitDefaultRevision)->Threads(1)->Threads(2)->UseRealTime();

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
