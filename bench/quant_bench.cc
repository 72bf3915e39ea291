// Quantized layers in one run: a 7B-class decoder layer (Llama-2-7B shapes,
// bf16 N(0, 0.02) weights) cached as bf16, nf4, nf4 nested and int8:
//   - on-disk bytes per mode and the ratio to bf16;
//   - cold load: get_layer timed in a NEW process after the page cache was
//     dropped (`sync; echo 3 > /proc/sys/vm/drop_caches` as root, else
//     posix_fadvise of the entries, and it says which), default options;
//     cold load + dequantization to bf16 the same way; warm load in a new
//     process with the entry in the page cache; each with the raw O_DIRECT
//     read of the same file (dropped first) as the limit;
//   - dequantization throughput per core (one thread) in GB/s of bf16
//     output, against single-thread memcpy of the same output size;
//   - quantization time and the round-trip error of each mode.
//   build/bench/quant_bench [--small] [--reps N]
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "bench_limits.h"
#include "bench_util.h"
#include "layercache/layer_cache.h"
#include "layercache/quantization.h"

using namespace layercache;
using namespace layercache::quant;
namespace fs = std::filesystem;

namespace {

LayerPtr MakeLayer(bool small) {
  const uint64_t h = small ? 1024 : 4096, inter = small ? 2752 : 11008;
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 0.02f);
  LayerBuilder b;
  auto add = [&](const std::string& name, std::vector<uint64_t> shape, bool ones = false) {
    uint64_t n = 1;
    for (uint64_t s : shape) n *= s;
    std::vector<uint16_t> v(n);
    for (auto& x : v) x = FloatToBF16(ones ? 1.0f : d(rng));
    b.add_tensor(name, DType::BF16, shape, v);
  };
  add("input_layernorm.weight", {h}, true);
  add("self_attn.q_proj.weight", {h, h});
  add("self_attn.k_proj.weight", {h, h});
  add("self_attn.v_proj.weight", {h, h});
  add("self_attn.o_proj.weight", {h, h});
  add("post_attention_layernorm.weight", {h}, true);
  add("mlp.gate_proj.weight", {inter, h});
  add("mlp.up_proj.weight", {inter, h});
  add("mlp.down_proj.weight", {h, inter});
  return b.build();
}

double RawDirectRead(const std::string& path, AlignedBuffer& buf) {
  (void)benchkit::DropCaches({path});
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) fd = ::open(path.c_str(), O_RDONLY);
  return bench::Seconds([&] {
    uint64_t off = 0;
    for (;;) {
      const ssize_t r = ::pread(fd, buf.data(), 8u << 20, static_cast<off_t>(off));
      if (r <= 0) break;
      off += static_cast<uint64_t>(r);
    }
    ::close(fd);
  });
}

double RelRmsError(const Layer& a, const Layer& b) {
  double err = 0, ref = 0;
  for (const TensorInfo& t : a.tensors()) {
    const TensorInfo* u = b.find(t.name);
    if (u == nullptr || t.dtype != DType::BF16 || u->dtype != DType::BF16 || t.shape.size() != 2)
      continue;
    auto x = a.tensor_data(t);
    auto y = b.tensor_data(*u);
    const uint16_t* px = reinterpret_cast<const uint16_t*>(x.data());
    const uint16_t* py = reinterpret_cast<const uint16_t*>(y.data());
    for (uint64_t i = 0; i < t.num_elements(); ++i) {
      const double p = BF16ToFloat(px[i]), q = BF16ToFloat(py[i]);
      err += (p - q) * (p - q);
      ref += p * p;
    }
  }
  return std::sqrt(err / ref);
}

}  // namespace

// --child-load DIR MODE DEQUANT: one get_layer("bench", 0, MODE) with the
// default options (MODE "-": bf16), then DequantizeLayer to bf16 when DEQUANT
// is 1; prints its seconds.
int ChildLoad(char** argv) {
  LayerCacheOptions o;
  o.cache_dir = argv[0];
  o.max_cache_size_gb = 100;
  const std::string mode = argv[1];
  const bool dequant = std::string(argv[2]) == "1";
  LayerCache cache(o);
  LayerPtr got;
  const double s = bench::Seconds([&] {
    got =
        cache.get_layer("bench", 0, mode == "-" ? std::nullopt : std::optional<std::string>(mode));
    if (got && dequant) got = DequantizeLayer(*got, DType::BF16).value();
  });
  if (!got) return 1;
  std::printf("%.9f\n", s);
  return 0;
}

double TimedChild(const std::string& self, const std::string& dir, const std::string& mode,
                  bool dequant) {
  auto out = benchkit::RunCapture({self, "--child-load", dir, mode, dequant ? "1" : "0"});
  if (!out.ok()) bench::Fail("child load: " + out.status().ToString());
  return std::stod(*out);
}

int main(int argc, char** argv) {
  bool small = false;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--child-load" && i + 3 < argc) return ChildLoad(argv + i + 1);
    if (a == "--small") small = true;
    if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
  }
  std::string self;
  {
    std::error_code ec;
    self = fs::read_symlink("/proc/self/exe", ec).string();
  }
  char tmpl[] = "/var/tmp/layercache-qbench-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  LayerPtr layer = MakeLayer(small);
  std::printf("layer: %s, %.1f MB bf16; kernel %s; %d reps, medians; work dir %s\n",
              small ? "--small (h 1024, i 2752)" : "Llama-2-7B shapes (h 4096, i 11008)",
              static_cast<double>(layer->nbytes()) / 1e6, std::string(KernelName()).c_str(), reps,
              dir.c_str());

  // --- dequantization per core ---------------------------------------------
  {
    const TensorInfo* t = layer->find("mlp.up_proj.weight");
    const uint64_t n = t->num_elements();
    std::vector<uint8_t> packed((n + 1) / 2);
    std::vector<float> absmax(NumBlocks(n, 64));
    std::vector<int8_t> q(n);
    std::vector<float> scb(t->shape[0]);
    const auto* src = layer->tensor_data(*t).data();
    const double qt1 = bench::MedianSeconds(
        reps, [&] { (void)QuantizeNF4(DType::BF16, src, n, 64, packed.data(), absmax.data(), 1); });
    (void)QuantizeInt8(DType::BF16, src, t->shape[0], t->shape[1], q.data(), scb.data(), 1);
    AlignedBuffer out(n * 4);
    AlignedBuffer copy_src(n * 2);
    std::memcpy(copy_src.data(), src, n * 2);
    auto time_it = [&](auto&& f) { return bench::MedianSeconds(reps, f); };
    const double memcpy_s = time_it([&] { std::memcpy(out.data(), copy_src.data(), n * 2); });
    std::printf("\nper core (one thread), tensor %s [%llu x %llu], %llu elements\n",
                t->name.c_str(), static_cast<unsigned long long>(t->shape[0]),
                static_cast<unsigned long long>(t->shape[1]), static_cast<unsigned long long>(n));
    std::printf("  memcpy of %.1f MB (the limit)         %7.2f GB/s\n", n * 2 / 1e6,
                n * 2 / memcpy_s / 1e9);
    for (DType d : {DType::BF16, DType::F16, DType::F32}) {
      const uint64_t w = d == DType::F32 ? 4 : 2;
      const double s = time_it(
          [&] { (void)DequantizeNF4(packed.data(), absmax.data(), n, 64, d, out.data(), 1); });
      std::printf("  nf4  -> %-4s dequantize               %7.2f GB/s of output  (%.2f x memcpy)\n",
                  std::string(DTypeName(d)).c_str(), n * w / s / 1e9,
                  (n * 2 / memcpy_s) > 0 ? (n * w / s) / (n * 2 / memcpy_s) : 0);
    }
    for (DType d : {DType::BF16, DType::F32}) {
      const uint64_t w = d == DType::F32 ? 4 : 2;
      const double s = time_it([&] {
        (void)DequantizeInt8(q.data(), scb.data(), t->shape[0], t->shape[1], d, out.data(), 1);
      });
      std::printf("  int8 -> %-4s dequantize               %7.2f GB/s of output  (%.2f x memcpy)\n",
                  std::string(DTypeName(d)).c_str(), n * w / s / 1e9,
                  (n * w / s) / (n * 2 / memcpy_s));
    }
    std::printf("  nf4 quantize (bf16 input)             %7.2f GB/s of input\n", n * 2 / qt1 / 1e9);
  }

  // --- the cache, per mode ---------------------------------------------------
  struct Mode {
    const char* name;
    std::optional<QuantConfig> config;
  };
  std::vector<Mode> modes = {{"bf16", std::nullopt},
                             {"nf4", QuantConfig::NF4(false)},
                             {"nf4-nested", QuantConfig::NF4(true)},
                             {"int8", QuantConfig::Int8()}};
  AlignedBuffer scratch(layer->nbytes() + (16u << 20));
  uint64_t bf16_bytes = 0;
  double bf16_cold = 0;
  std::string how = "?";
  std::printf("\n%-11s %10s %7s %9s %10s %12s %14s %10s %9s\n", "mode", "on disk", "ratio",
              "quantize", "raw read", "cold load", "cold+dequant", "warm load", "rel err");
  // Each mode quantized and stored first; then every repetition measures the modes one after
  // the other, so that a noisy disk or a busy machine weighs on all of them alike.
  struct Run {
    const Mode* mode;
    std::string cache_dir, entry, child_mode;
    uint64_t size = 0;
    double quant_s = 0, err = 0;
    std::vector<double> raw, cold, cold_deq, warm;
  };
  std::vector<Run> runs;
  for (const Mode& m : modes) {
    Run run;
    run.mode = &m;
    LayerPtr stored = layer;
    if (m.config) {
      run.quant_s = bench::Seconds([&] { stored = QuantizeLayer(*layer, *m.config).value(); });
    }
    LayerCacheOptions o;
    o.cache_dir = run.cache_dir = dir + "/" + m.name;
    o.max_cache_size_gb = 100;
    const std::string qm = m.config ? std::string(QuantModeName(m.config->mode)) : "";
    {
      LayerCache cache(o);
      cache.cache_layer("bench", 0, stored,
                        qm.empty() ? std::nullopt : std::optional<std::string>(qm));
      LayerPtr got =
          cache.get_layer("bench", 0, qm.empty() ? std::nullopt : std::optional<std::string>(qm));
      if (got && m.config)
        run.err = RelRmsError(*layer, *DequantizeLayer(*got, DType::BF16).value());
    }
    for (const auto& e : fs::recursive_directory_iterator(o.cache_dir + "/entries")) {
      if (e.is_regular_file()) run.entry = e.path().string();
    }
    run.size = fs::file_size(run.entry);
    run.child_mode = qm.empty() ? "-" : qm;
    runs.push_back(std::move(run));
  }
  for (int r = 0; r < reps; ++r) {
    for (Run& run : runs) {
      run.raw.push_back(RawDirectRead(run.entry, scratch));
      auto h = benchkit::DropCaches({run.cache_dir});
      how = h.ok() ? *h : h.status().ToString();
      run.cold.push_back(TimedChild(self, run.cache_dir, run.child_mode, false));
      (void)benchkit::DropCaches({run.cache_dir});
      run.cold_deq.push_back(
          TimedChild(self, run.cache_dir, run.child_mode, run.mode->config.has_value()));
      bench::ReadTree(run.cache_dir + "/entries");
      run.warm.push_back(TimedChild(self, run.cache_dir, run.child_mode, false));
    }
  }
  for (const Run& run : runs) {
    if (!run.mode->config) {
      bf16_bytes = run.size;
      bf16_cold = bench::Median(run.cold);
    }
    std::printf("%-11s %8.1fMB %6.2fx %7.0fms %8.1fms %7.1fms %4.2fx %9.1fms %8.1fms %8.4f\n",
                run.mode->name, run.size / 1e6, static_cast<double>(bf16_bytes) / run.size,
                run.quant_s * 1e3, bench::Median(run.raw) * 1e3, bench::Median(run.cold) * 1e3,
                bf16_cold / bench::Median(run.cold), bench::Median(run.cold_deq) * 1e3,
                bench::Median(run.warm) * 1e3, run.err);
  }
  std::printf("cold load, each repetition (ms):\n");
  for (const Run& run : runs) {
    std::printf("  %-11s", run.mode->name);
    for (double c : run.cold) std::printf(" %7.1f", c * 1e3);
    std::printf("\n");
  }
  std::printf(
      "\nratio = bf16 bytes / mode bytes; cold load = get_layer in a new process (default "
      "options) after %s;\nthe x after it = bf16 cold load / this mode's; cold+dequant = the same, "
      "then DequantizeLayer to bf16 (all threads);\nwarm load = a new process, the entry in the "
      "page cache; raw read = O_DIRECT read of the entry file, dropped first;\nrel err = RMS(w - "
      "w')/RMS(w)\n",
      how == "drop_caches" ? "sync; echo 3 > /proc/sys/vm/drop_caches"
                           : "posix_fadvise(DONTNEED) of the entry (not root: the page cache was "
                             "not dropped as a whole)");
  fs::remove_all(dir);
  return 0;
}
