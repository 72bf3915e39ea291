// Compression of layer weights: ratio, compress/decompress GB/s per core and
// on all cores, and cold loads of compressed against plain entries, each timed
// in a new process after the page cache was dropped (drop_caches as root,
// else fadvise of the entries, and the output says which).
//   build/bench/compression_bench [--fixtures DIR] [--level 1-9] [--smoke]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_limits.h"
#include "compress/container.h"
#include "layercache/layer_cache.h"
#include "layercache/safetensors.h"

using namespace layercache;
namespace fs = std::filesystem;

namespace {

template <class F>
double Seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <class F>
double MedianSeconds(int reps, F&& f) {
  std::vector<double> v;
  for (int i = 0; i < reps; ++i) v.push_back(Seconds(f));
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

uint16_t ToHalf(float f) {  // float -> IEEE half, round to nearest
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  int exp = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffff;
  if (exp <= 0) return static_cast<uint16_t>(sign | ((mant | 0x800000) >> (1 - exp + 13)));
  return static_cast<uint16_t>(sign | (exp << 10) | ((mant + 0x1000) >> 13));
}

LayerPtr Synthetic(DType dtype, size_t n, int drop_mantissa_bits, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  LayerBuilder b;
  if (dtype == DType::F32) {
    std::vector<uint32_t> v(n);
    for (auto& x : v) {
      float f = normal(rng);
      std::memcpy(&x, &f, 4);
      x &= ~((1u << drop_mantissa_bits) - 1);
    }
    b.add_tensor("w", dtype, {n}, v);
  } else {
    std::vector<uint16_t> v(n);
    for (auto& x : v) {
      float f = normal(rng);
      if (dtype == DType::BF16) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        x = static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
      } else {
        x = ToHalf(f);
      }
      x = static_cast<uint16_t>(x & ~((1u << drop_mantissa_bits) - 1));
    }
    b.add_tensor("w", dtype, {n}, v);
  }
  return b.build();
}

LayerCacheOptions LoadOptions(const std::string& dir, bool compress, int level) {
  LayerCacheOptions o;
  o.cache_dir = dir;
  o.max_memory_cache_size_gb = 0;  // every load reads the disk tier
  o.enable_compression = compress;
  o.compression_level = level;
  return o;
}

// The child of a cold load: opens the cache (untimed), times one get_layer,
// prints its seconds.
int ChildLoad(const std::string& dir, bool compress, int level) {
  LayerCache cache(LoadOptions(dir, compress, level));
  LayerPtr layer;
  const double s = Seconds([&] { layer = cache.get_layer("m", 0); });
  if (!layer) {
    std::fprintf(stderr, "benchmark failed: the cached layer missed in %s\n", dir.c_str());
    return 1;
  }
  std::printf("%.9f\n", s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "--child-load") {
    return ChildLoad(argv[2], std::string(argv[3]) == "1", std::atoi(argv[4]));
  }
  std::string fixtures = "../shared/fixtures/safetensors";
  int level = LayerCacheOptions{}.compression_level;  // the default, 6 (zstd 1)
  bool smoke = false;  // --smoke: 1 MiB cases, one repetition (CI: the benchmark must run)
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--smoke") smoke = true;
    if (i + 1 >= argc) break;
    if (std::string(argv[i]) == "--fixtures") fixtures = argv[i + 1];
    if (std::string(argv[i]) == "--level") level = std::atoi(argv[i + 1]);
  }
  const int reps = smoke ? 1 : 5;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::printf("compression_level %d (zstd %d), chunks of %llu MiB, %u cores; medians of %d runs\n",
              level, ZstdLevelFor(level),
              static_cast<unsigned long long>(kCompressionChunkBytes >> 20), cores, reps);
  std::printf("%-34s %9s %7s %10s %10s %10s %10s\n", "data", "MiB", "ratio", "comp 1c", "comp all",
              "decomp 1c", "decomp all");
  struct Case {
    std::string name;
    LayerPtr layer;
  };
  std::vector<Case> cases;
  const size_t n = smoke ? (1u << 19) : (32u << 20);  // elements
  cases.push_back({"bf16 N(0,0.02)", Synthetic(DType::BF16, n, 0, 1)});
  cases.push_back({"bf16 N(0,0.02), 3 mantissa bits", Synthetic(DType::BF16, n, 4, 2)});
  cases.push_back({"f16 N(0,0.02)", Synthetic(DType::F16, n, 0, 3)});
  cases.push_back({"f32 N(0,0.02)", Synthetic(DType::F32, n / 2, 0, 4)});
  cases.push_back({"f32 N(0,0.02) rounded to bf16", Synthetic(DType::F32, n / 2, 16, 5)});
  if (fs::exists(fixtures)) {
    for (const auto& e : fs::directory_iterator(fixtures)) {
      if (e.path().extension() != ".safetensors" || e.file_size() < 10000) continue;
      auto l = ReadSafetensorsFile(e.path().string());
      if (l.ok()) cases.push_back({"fixture " + e.path().filename().string(), *l});
    }
  }
  double bf16_ratio = 0, bf16_decomp_all = 0;
  for (const Case& c : cases) {
    const double mib = static_cast<double>(c.layer->nbytes()) / (1 << 20);
    AlignedBuffer container = CompressLayerData(*c.layer, level);
    const double ratio =
        static_cast<double>(c.layer->nbytes()) / static_cast<double>(container.size());
    AlignedBuffer out(c.layer->nbytes());
    const double c1 = MedianSeconds(reps, [&] { (void)CompressLayerData(*c.layer, level, 1); });
    const double ca = MedianSeconds(reps, [&] { (void)CompressLayerData(*c.layer, level, 0); });
    auto decompress = [&](unsigned threads) {
      Status st = DecompressLayerData({container.data(), container.size()}, out.data(),
                                      c.layer->nbytes(), threads);
      if (!st.ok()) {
        std::fprintf(stderr, "benchmark failed: %s\n", st.ToString().c_str());
        std::exit(1);
      }
    };
    const double d1 = MedianSeconds(reps, [&] { decompress(1); });
    const double da = MedianSeconds(reps, [&] { decompress(0); });
    if (std::memcmp(out.data(), c.layer->data(), c.layer->nbytes()) != 0) {
      std::fprintf(stderr, "benchmark failed: %s decompressed to different bytes\n",
                   c.name.c_str());
      return 1;
    }
    const double gb = static_cast<double>(c.layer->nbytes()) / 1e9;
    std::printf("%-34s %9.1f %7.3f %8.2f GB/s %8.2f GB/s %8.2f GB/s %8.2f GB/s\n", c.name.c_str(),
                mib, ratio, gb / c1, gb / ca, gb / d1, gb / da);
    if (c.name == "bf16 N(0,0.02)") {
      bf16_ratio = ratio;
      bf16_decomp_all = gb / da;
      std::printf("  goals: ratio >= 1.4 (%s), decompression >= 1.5 GB/s per core (%s)\n",
                  ratio >= 1.4 ? "met" : "NOT met", gb / d1 >= 1.5 ? "met" : "NOT met");
    }
  }

  // Cold loads through the cache: the bf16 case, plain against compressed,
  // each in a new process (this program, run with --child-load) after the
  // page cache was dropped; the drop and the process start are not timed.
  char tmpl[] = "/var/tmp/layercache-zbench-XXXXXX";
  const char* made = ::mkdtemp(tmpl);
  if (made == nullptr) {
    std::fprintf(stderr, "benchmark failed: cannot create a directory in /var/tmp\n");
    return 1;
  }
  const std::string dir = made;
  std::error_code ec;
  const std::string self = fs::read_symlink("/proc/self/exe", ec).string();
  LayerPtr layer = cases[0].layer;
  double plain_s = 0, comp_s = 0;
  std::string how;
  for (bool compress : {false, true}) {
    const std::string cdir = dir + (compress ? "/z" : "/p");
    {
      LayerCache cache(LoadOptions(cdir, compress, level));
      if (Status st = cache.cache_layer_status(LayerKey{"m", 0, "", ""}, layer); !st.ok()) {
        std::fprintf(stderr, "benchmark failed: cannot cache the layer: %s\n",
                     st.ToString().c_str());
        return 1;
      }
    }
    std::vector<double> v;
    for (int r = 0; r < reps; ++r) {
      auto dropped = benchkit::DropCaches({cdir});
      if (!dropped.ok()) {
        std::fprintf(stderr, "benchmark failed: %s\n", dropped.status().ToString().c_str());
        return 1;
      }
      how = *dropped;
      auto out = benchkit::RunCapture(
          {self, "--child-load", cdir, compress ? "1" : "0", std::to_string(level)});
      if (!out.ok()) {
        std::fprintf(stderr, "benchmark failed: %s\n", out.status().ToString().c_str());
        return 1;
      }
      v.push_back(std::stod(*out));
    }
    (compress ? comp_s : plain_s) = benchkit::Median(v);
  }
  const double gb = static_cast<double>(layer->nbytes()) / 1e9;
  std::printf(
      "\ncold load of a %.0f MiB bf16 layer, get_layer in a new process after %s, checksum "
      "verified:\n",
      gb * 1e9 / (1 << 20),
      how == "drop_caches" ? "sync; echo 3 > /proc/sys/vm/drop_caches"
                           : "posix_fadvise(DONTNEED) of the entries (not root: the page "
                             "cache could not be dropped as a whole)");
  std::printf("  plain      %8.1f ms  (%.2f GB/s of tensors)\n", plain_s * 1e3, gb / plain_s);
  std::printf("  compressed %8.1f ms  (%.2f GB/s of tensors)\n", comp_s * 1e3, gb / comp_s);
  // Compression wins when reading the saved bytes takes longer than decompressing:
  // logical/B > logical/(ratio*B) + logical/D  <=>  B < D * (1 - 1/ratio).
  const double breakeven = bf16_decomp_all * (1.0 - 1.0 / bf16_ratio);
  std::printf(
      "  compression wins on disks slower than %.2f GB/s (decompression %.2f GB/s on %u cores, "
      "ratio %.3f)\n",
      breakeven, bf16_decomp_all, cores, bf16_ratio);
  fs::remove_all(dir);
  return 0;
}
