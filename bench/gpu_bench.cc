// gpu_bench: the GPU tier against the machine's limits, measured in the same
// run (docs/PERFORMANCE.md, "GPU tier"). Needs a CUDA build and a GPU.
//
//   gpu_bench --dir /nvme/scratch [--device 0] [--runs 5] [--layers 8]
//
// Prints, each a median of --runs:
//   h2d_pinned / h2d_pageable   one 466 MB cudaMemcpyAsync (the PCIe limits)
//   disk_read_direct            O_DIRECT reads of the entry file, 4 x 8 MiB in flight
//   cold_disk_to_gpu            GpuTier::LoadFromFile (O_DIRECT) of a 7B-class layer
//                               ratio vs min(disk_read_direct, h2d_pinned); goal >= 0.85
//   warm_host_to_gpu_pinned     from a page-locked host layer; ratio vs h2d_pinned, goal >= 0.9
//   warm_host_to_gpu_staged     from a pageable host layer, through the staging pool
//   gpu_hit                     GpuTier::Lookup of a cached layer (ns)
//   streaming                   --layers layers, GPU budget of 2, next layer prefetched while a
//                               kernel "computes" for about one load time: total vs
//                               layers x max(compute, load); goal: ratio close to 1
#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "disk/disk_tier.h"
#include "gpu/device_runtime.h"
#include "gpu/gpu_tier.h"
#include "util/parallel.h"

extern "C" cudaError_t layercache_bench_spin(cudaStream_t stream, long long cycles, int blocks);

namespace layercache {
namespace {

using bench::Median;
using bench::Seconds;

constexpr uint64_t kMiB = 1u << 20;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "gpu_bench: %s\n", what.c_str());
  std::exit(1);
}

template <class T>
T Check(Result<T> r, const char* what) {
  if (!r.ok()) Die(std::string(what) + ": " + r.status().ToString());
  return std::move(*r);
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}

// A Qwen2.5-7B decoder layer (hidden 3584, 28 heads, 4 KV heads,
// intermediate 18944), BF16: 466 MB.
LayerPtr SevenBLayer(uint64_t seed) {
  const uint64_t h = 3584, kv = 512, ff = 18944;
  std::vector<TensorSpec> specs = {
      {"self_attn.q_proj.weight", DType::BF16, {h, h}},
      {"self_attn.k_proj.weight", DType::BF16, {kv, h}},
      {"self_attn.v_proj.weight", DType::BF16, {kv, h}},
      {"self_attn.o_proj.weight", DType::BF16, {h, h}},
      {"self_attn.q_proj.bias", DType::BF16, {h}},
      {"self_attn.k_proj.bias", DType::BF16, {kv}},
      {"self_attn.v_proj.bias", DType::BF16, {kv}},
      {"mlp.gate_proj.weight", DType::BF16, {ff, h}},
      {"mlp.up_proj.weight", DType::BF16, {ff, h}},
      {"mlp.down_proj.weight", DType::BF16, {h, ff}},
      {"input_layernorm.weight", DType::BF16, {h}},
      {"post_attention_layernorm.weight", DType::BF16, {h}},
  };
  auto plan = Check(PlanLayout(specs), "layout");
  const uint64_t n = plan.back().offset + plan.back().nbytes;
  AlignedBuffer buf(n);
  auto* words = reinterpret_cast<uint64_t*>(buf.data());
  ParallelFor(64, 0, [&](size_t part) {
    const uint64_t per = n / 8 / 64;
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + part;
    for (uint64_t i = part * per; i < (part + 1) * per; ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      words[i] = x;
    }
  });
  return Check(Layer::Create(std::move(plan), std::move(buf), {}), "layer");
}

double GBps(uint64_t bytes, double seconds) { return bytes / seconds / 1e9; }

struct Args {
  std::string dir;
  int device = 0;
  int runs = 5;
  int layers = 8;
};

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + k);
      return argv[++i];
    };
    if (k == "--dir") {
      a.dir = next();
    } else if (k == "--device") {
      a.device = std::stoi(next());
    } else if (k == "--runs") {
      a.runs = std::stoi(next());
    } else if (k == "--layers") {
      a.layers = std::stoi(next());
    } else {
      Die("unknown argument " + k + " (see the comment at the top of bench/gpu_bench.cc)");
    }
  }
  if (a.dir.empty()) Die("--dir DIR (a scratch directory on the disk to measure) is required");
  return a;
}

void Report(const char* name, double value, const char* unit, double limit = 0,
            const char* limit_name = "", double goal = 0) {
  if (limit > 0) {
    std::printf("%-26s %10.2f %-5s  ratio %.3f vs %s %.2f%s\n", name, value, unit, value / limit,
                limit_name, limit,
                goal > 0 ? (value / limit >= goal ? "  (goal met)" : "  (BELOW GOAL)") : "");
  } else {
    std::printf("%-26s %10.2f %s\n", name, value, unit);
  }
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  auto rt = Check(CudaRuntime(), "CUDA");
  if (Status s = rt->CheckOrdinal(args.device); !s.ok()) Die(s.ToString());
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, args.device);
  std::printf("device: cuda:%d %s, %d SMs, %.1f GiB; %s\n", args.device, prop.name,
              prop.multiProcessorCount, prop.totalGlobalMem / double(1 << 30), rt->Name().c_str());
  const int dev = args.device;

  // ---- the limits: one big copy, pinned and pageable ----
  LayerPtr layer = SevenBLayer(1);
  const uint64_t n = layer->nbytes();
  std::printf("layer: %zu tensors, %.1f MB\n", layer->num_tensors(), n / 1e6);
  void* dbuf = Check(rt->Allocate(dev, n), "device buffer");
  void* pinned = Check(rt->AllocatePinned(n), "pinned buffer");
  std::memcpy(pinned, layer->data(), n);
  DeviceStream stream = Check(rt->CreateStream(dev), "stream");
  DeviceEvent event = Check(rt->CreateEvent(dev), "event");
  auto copy_once = [&](const void* src) {
    return Seconds([&] {
      Check(rt->CopyToDeviceAsync(dev, dbuf, src, n, stream), "copy");
      Check(rt->RecordEvent(dev, event, stream), "record");
      Check(rt->WaitEvent(dev, event), "wait");
    });
  };
  std::vector<double> tp, tg;
  copy_once(pinned);  // warm-up
  for (int r = 0; r < args.runs; ++r) tp.push_back(copy_once(pinned));
  for (int r = 0; r < args.runs; ++r) tg.push_back(copy_once(layer->data()));
  const double h2d_pinned = GBps(n, Median(tp));
  Report("h2d_pinned", h2d_pinned, "GB/s");
  Report("h2d_pageable", GBps(n, Median(tg)), "GB/s");
  rt->Free(dev, dbuf);
  rt->FreePinned(pinned);

  // ---- the disk: an entry file, read with O_DIRECT ----
  const LayerKey key{"bench/qwen2.5-7b-class", 0, "none", "bench"};
  auto disk =
      Check(DiskTier::Open({.cache_dir = args.dir, .capacity_bytes = 64ull << 30}), "disk tier");
  Check(disk->Put(key, layer), "writing the entry");
  const std::string path = disk->EntryPath(key.Digest());
  std::vector<double> tr;
  for (int r = 0; r < args.runs; ++r) {
    auto f = Check(Env::Default()->OpenForRead(path), "open");
    const uint64_t size = (f->size() + 4095) / 4096 * 4096;
    AlignedBuffer sink(size);
    tr.push_back(Seconds([&] {
      const uint64_t chunk = 8 * kMiB;
      ParallelFor((size + chunk - 1) / chunk, 4, [&](size_t i) {
        const uint64_t off = i * chunk;
        auto got = f->ReadDirect(off, std::min(chunk, size - off), sink.data() + off);
        if (!got.ok()) Die("O_DIRECT read: " + got.status().ToString());
      });
    }));
    tr.back() = tr.back() * n / size;  // per byte of the data section
  }
  const double disk_limit = GBps(n, Median(tr));
  Report("disk_read_direct", disk_limit, "GB/s");

  // ---- cold disk -> GPU ----
  const double cold_limit = std::min(disk_limit, h2d_pinned);
  std::vector<double> tc;
  for (int r = 0; r < args.runs; ++r) {
    GpuTier tier(rt, {.capacity_bytes = 4 * n, .direct_io = true});
    DeviceLayerPtr d;
    tc.push_back(Seconds([&] {
      d = Check(tier.LoadFromFile(key, dev, Env::Default(), path, key.Digest(), nullptr),
                "cold load");
    }));
  }
  Report("cold_disk_to_gpu", GBps(n, Median(tc)), "GB/s", cold_limit, "min(disk, h2d_pinned)",
         0.85);

  // ---- warm host -> GPU ----
  GpuTier tier(rt, {.capacity_bytes = 4 * n});
  DeviceLayerPtr first = Check(tier.LoadFromHost(key, dev, *layer, nullptr), "load");
  LayerPtr pinned_layer = Check(tier.CopyToHost(*first, /*pinned=*/true), "pinned copy");
  if (!pinned_layer->ContentEquals(*layer)) Die("the device copy differs from the host layer");
  first.reset();
  std::vector<double> tw, ts;
  for (int r = 0; r < args.runs; ++r) {
    tier.Clear();
    tw.push_back(
        Seconds([&] { Check(tier.LoadFromHost(key, dev, *pinned_layer, nullptr), "warm"); }));
  }
  for (int r = 0; r < args.runs; ++r) {
    tier.Clear();
    ts.push_back(Seconds([&] { Check(tier.LoadFromHost(key, dev, *layer, nullptr), "staged"); }));
  }
  Report("warm_host_to_gpu_pinned", GBps(n, Median(tw)), "GB/s", h2d_pinned, "h2d_pinned", 0.9);
  Report("warm_host_to_gpu_staged", GBps(n, Median(ts)), "GB/s", h2d_pinned, "h2d_pinned");

  // ---- GPU-tier hit ----
  {
    auto d = Check(tier.LoadFromHost(key, dev, *pinned_layer, nullptr), "load");
    const int iters = 200000;
    const double s = Seconds([&] {
      for (int i = 0; i < iters; ++i) {
        if (!tier.Lookup(key, dev)) Die("a cached layer missed");
      }
    });
    Report("gpu_hit", s / iters * 1e9, "ns");
  }
  tier.Clear();
  pinned_layer.reset();

  // ---- streaming: load layer i+1 while layer i computes ----
  std::vector<LayerKey> keys;
  for (int i = 0; i < args.layers; ++i) {
    keys.push_back({"bench/stream", i, "none", "bench"});
    Check(disk->Put(keys.back(), SevenBLayer(100 + i)), "writing a streaming layer");
  }
  // Calibrate the kernel: cycles per second.
  cudaStream_t compute = nullptr;
  cudaSetDevice(dev);
  cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking);
  const int blocks = prop.multiProcessorCount * 2;
  auto spin = [&](long long cycles) {
    if (cudaError_t e = layercache_bench_spin(compute, cycles, blocks); e != cudaSuccess) {
      Die(std::string("kernel: ") + cudaGetErrorString(e));
    }
  };
  spin(1000);
  cudaStreamSynchronize(compute);
  const long long probe = 200'000'000;
  const double probe_s = Seconds([&] {
    spin(probe);
    cudaStreamSynchronize(compute);
  });
  const double load_s = n / (GBps(n, Median(tc)) * 1e9);
  const long long cycles = static_cast<long long>(probe / probe_s * load_s);
  const double compute_s = Seconds([&] {
    spin(cycles);
    cudaStreamSynchronize(compute);
  });
  std::vector<double> tsw;
  for (int r = 0; r < std::min(args.runs, 3); ++r) {
    GpuTier st(rt, {.capacity_bytes = 2 * n, .direct_io = true});
    auto load = [&](int i) {
      return st.LoadFromFile(keys[i], dev, Env::Default(), disk->EntryPath(keys[i].Digest()),
                             keys[i].Digest(), nullptr);
    };
    tsw.push_back(Seconds([&] {
      std::future<Result<DeviceLayerPtr>> next = std::async(std::launch::async, load, 0);
      for (int i = 0; i < args.layers; ++i) {
        DeviceLayerPtr cur = Check(next.get(), "streamed load");
        if (i + 1 < args.layers) next = std::async(std::launch::async, load, i + 1);
        Check(cur->wait_on(compute), "wait_on");
        spin(cycles);
        cudaStreamSynchronize(compute);  // the layer's compute is done before it can go
      }
    }));
  }
  const double ideal = args.layers * std::max(compute_s, load_s);
  std::printf("streaming: %d layers, compute %.1f ms and load %.1f ms per layer\n", args.layers,
              compute_s * 1e3, load_s * 1e3);
  Report("streaming_pass", Median(tsw), "s", 0);
  std::printf("%-26s %10.3f        (layers x max(compute, load) = %.3f s / measured; goal ~1)\n",
              "streaming_ratio", ideal / Median(tsw), ideal);
  cudaStreamDestroy(compute);
  rt->DestroyEvent(dev, event);
  rt->DestroyStream(dev, stream);
  return 0;
}

}  // namespace
}  // namespace layercache

int main(int argc, char** argv) { return layercache::Main(argc, argv); }
