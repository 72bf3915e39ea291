// What compression_level does: for each level 1-9, the ratio and the
// compress / decompress speed (one core, GB/s of tensor bytes) of a layer of
// bf16, fp16, fp32 and int8 weights, through the cache's own container
// (byte grouping + zstd). The last column is the machine's memcpy speed
// measured in the same run, the ceiling a decoder could reach.
//   build/bench/compression_levels_bench [--mib N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/container.h"
#include "layercache/layer.h"

using namespace layercache;

namespace {

template <class F>
double MedianSeconds(int reps, F&& f) {
  std::vector<double> v;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    v.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

uint16_t ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

uint16_t ToF16(float f) {  // round to nearest, normal range only (weights are small)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000;
  const int exp = static_cast<int>((u >> 23) & 0xFF) - 127 + 15;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  const uint32_t mant = (u & 0x7FFFFF) + 0x1000;
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13));
}

// Weights ~ N(0, 0.02), as trained linear layers are; int8 as absmax-quantized
// rows of such weights (LLM.int8() style).
LayerPtr Weights(DType dtype, size_t elements, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  const size_t width = dtype == DType::F32 ? 4 : dtype == DType::I8 ? 1 : 2;
  AlignedBuffer buf(elements * width);
  std::byte* out = buf.data();
  if (dtype == DType::I8) {
    const size_t row = 4096;
    std::vector<float> r(row);
    for (size_t i = 0; i < elements; i += row) {
      float absmax = 1e-12f;
      for (size_t k = 0; k < row; ++k) absmax = std::max(absmax, std::fabs(r[k] = dist(rng)));
      for (size_t k = 0; k < row && i + k < elements; ++k) {
        out[i + k] = static_cast<std::byte>(static_cast<int8_t>(std::lround(r[k] / absmax * 127)));
      }
    }
  } else {
    for (size_t i = 0; i < elements; ++i) {
      const float f = dist(rng);
      if (dtype == DType::F32) {
        std::memcpy(out + 4 * i, &f, 4);
      } else {
        const uint16_t h = dtype == DType::BF16 ? ToBf16(f) : ToF16(f);
        std::memcpy(out + 2 * i, &h, 2);
      }
    }
  }
  TensorInfo t;
  t.name = "weight";
  t.dtype = dtype;
  t.shape = {elements};
  t.nbytes = elements * width;
  return Layer::Create({t}, std::move(buf), {}).value();
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--mib") mib = std::stoul(argv[i + 1]);
  }
  const size_t bytes = mib << 20;
  // The machine's limit for a decoder writing `bytes`: memcpy, same run.
  AlignedBuffer a(bytes), b(bytes);
  std::memset(a.data(), 1, bytes);
  std::memset(b.data(), 0, bytes);
  const double memcpy_gbs = static_cast<double>(bytes) / 1e9 /
                            MedianSeconds(5, [&] { std::memcpy(b.data(), a.data(), bytes); });
  std::printf(
      "layers of %zu MiB, weights ~ N(0, 0.02); one core; medians of 5 runs; memcpy %.2f "
      "GB/s\n",
      mib, memcpy_gbs);
  std::printf("%-6s %5s %5s %7s %12s %12s %10s\n", "dtype", "level", "zstd", "ratio", "compress",
              "decompress", "vs memcpy");
  struct Kind {
    const char* name;
    DType dtype;
    size_t width;
  } kinds[] = {{"bf16", DType::BF16, 2},
               {"fp16", DType::F16, 2},
               {"fp32", DType::F32, 4},
               {"int8", DType::I8, 1}};
  uint32_t seed = 1;
  for (const Kind& k : kinds) {
    LayerPtr layer = Weights(k.dtype, bytes / k.width, seed++);
    AlignedBuffer out(layer->nbytes());
    for (int level = 1; level <= 9; ++level) {
      AlignedBuffer c = CompressLayerData(*layer, level, 1);
      const double ratio = static_cast<double>(layer->nbytes()) / static_cast<double>(c.size());
      const double gb = static_cast<double>(layer->nbytes()) / 1e9;
      const double cs = MedianSeconds(level == 9 ? 1 : 3, [&] { (void)CompressLayerData(*layer, level, 1); });
      const double ds = MedianSeconds(5, [&] {
        if (!DecompressLayerData({c.data(), c.size()}, out.data(), layer->nbytes(), 1).ok()) {
          std::fprintf(stderr, "decompression failed\n");
        }
      });
      if (std::memcmp(out.data(), layer->data(), layer->nbytes()) != 0) {
        std::fprintf(stderr, "round trip differs\n");
        return 1;
      }
      std::printf("%-6s %5d %5d %7.3f %7.3f GB/s %7.3f GB/s %9.2f\n", k.name, level,
                  ZstdLevelFor(level), ratio, gb / cs, gb / ds, (gb / ds) / memcpy_gbs);
    }
  }
  return 0;
}
