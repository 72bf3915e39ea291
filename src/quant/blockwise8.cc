// The nested ("double") quantization step, bit for bit as bitsandbytes runs it
// on the CPU:
//  - offset = absmax.mean(), which PyTorch computes in float32 with its
//    cascade sum (aten/src/ATen/native/cpu/SumKernel.cpp: 8-lane vectors,
//    4-way interleaved rows, 4 levels of partial sums; above 32768 values one
//    chunk per intra-op thread, the chunks' sums added in a second pass), then
//    divides by n in float32;
//  - the 8-bit blockwise step with the dynamic map picks codes through
//    bitsandbytes' 65536-bin lookup table (csrc/cpu_ops.cpp,
//    quantize_cpu_impl): bin = (clamp(x * (1 / absmax), -1, 1) + 1) * 0.5 *
//    65535 + 0.5 truncated, table[bin] = the number of float32 midpoints of
//    neighbouring map values below the bin's left edge; an all-zero block
//    gets code 0.
// Built with -ffp-contract=off: every step rounds to float32 as written.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "layercache/quantization.h"

namespace layercache::quant {
namespace {

constexpr int kLutSize = 65536;
constexpr int64_t kTorchGrainSize = 32768;  // at::internal::GRAIN_SIZE
constexpr int64_t kTorchLanes = 8;          // Vectorized<float>::size() of the sum kernel

const std::array<uint8_t, kLutSize>& DynamicLut() {
  static const std::array<uint8_t, kLutSize> lut = [] {
    const auto& code = DynamicMap();
    std::array<float, 255> mid{};
    for (int i = 0; i < 255; ++i) mid[i] = 0.5f * (code[i] + code[i + 1]);
    std::array<uint8_t, kLutSize> t{};
    int c = 0;
    for (int i = 0; i < kLutSize; ++i) {
      const float val = -1.0f + (2.0f * static_cast<float>(i)) / static_cast<float>(kLutSize - 1);
      while (c < 255 && mid[c] < val) ++c;
      t[i] = static_cast<uint8_t>(c);
    }
    return t;
  }();
  return lut;
}

inline uint16_t LutIndex(float v) {
  v = std::clamp(v, -1.0f, 1.0f);
  const float t = (v + 1.0f) * 0.5f;
  return static_cast<uint16_t>(t * static_cast<float>(kLutSize - 1) + 0.5f);
}

int64_t CeilLog2(int64_t x) {
  int64_t r = 0;
  while ((int64_t{1} << r) < x) ++r;
  return r;
}

// A value of T lanes: float (T = 1) or an 8-lane vector, added lane by lane.
template <int L>
struct Lanes {
  std::array<float, L> v{};
  Lanes& operator+=(const Lanes& o) {
    for (int k = 0; k < L; ++k) v[k] += o.v[k];
    return *this;
  }
};

// PyTorch's multi_row_sum: `nrows` interleaved rows of `size` items each,
// item i of row k = load(i * nrows + k).
template <int L, int NRows, typename Load>
std::array<Lanes<L>, NRows> MultiRowSum(const Load& load, int64_t size) {
  constexpr int kLevels = 4;
  const int64_t level_power = std::max<int64_t>(4, CeilLog2(size) / kLevels);
  const int64_t level_step = int64_t{1} << level_power;
  const int64_t level_mask = level_step - 1;
  Lanes<L> acc[kLevels][NRows] = {};
  int64_t i = 0;
  while (i + level_step <= size) {
    for (int64_t j = 0; j < level_step; ++j, ++i) {
      for (int k = 0; k < NRows; ++k) acc[0][k] += load(i * NRows + k);
    }
    for (int j = 1; j < kLevels; ++j) {
      for (int k = 0; k < NRows; ++k) {
        acc[j][k] += acc[j - 1][k];
        acc[j - 1][k] = Lanes<L>{};
      }
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < size; ++i) {
    for (int k = 0; k < NRows; ++k) acc[0][k] += load(i * NRows + k);
  }
  for (int j = 1; j < kLevels; ++j) {
    for (int k = 0; k < NRows; ++k) acc[0][k] += acc[j][k];
  }
  std::array<Lanes<L>, NRows> out;
  for (int k = 0; k < NRows; ++k) out[k] = acc[0][k];
  return out;
}

// PyTorch's row_sum: items 0..size-1 summed as 4 interleaved rows.
template <int L, typename Load>
Lanes<L> RowSum(const Load& load, int64_t size) {
  constexpr int kIlp = 4;
  const int64_t size_ilp = size / kIlp;
  auto partial = MultiRowSum<L, kIlp>(load, size_ilp);
  for (int64_t i = size_ilp * kIlp; i < size; ++i) partial[0] += load(i);
  for (int k = 1; k < kIlp; ++k) partial[0] += partial[k];
  return partial[0];
}

// cascade_sum's loop over one contiguous range.
float TorchChunkSum(const float* x, int64_t n) {
  if (n >= kTorchLanes) {
    const int64_t vec_size = n / kTorchLanes;
    const Lanes<kTorchLanes> v = RowSum<kTorchLanes>(
        [x](int64_t i) {
          Lanes<kTorchLanes> r;
          std::copy(x + i * kTorchLanes, x + (i + 1) * kTorchLanes, r.v.begin());
          return r;
        },
        vec_size);
    float acc = 0.0f;
    for (int64_t k = vec_size * kTorchLanes; k < n; ++k) acc += x[k];
    for (int k = 0; k < kTorchLanes; ++k) acc += v.v[k];
    return acc;
  }
  return RowSum<1>([x](int64_t i) { return Lanes<1>{{x[i]}}; }, n).v[0];
}

int EnvThreads(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return end != v && *end == '\0' && n > 0 && n < 1 << 16 ? static_cast<int>(n) : 0;
}

// Physical cores (distinct package/core pairs in sysfs), as PyTorch's cpuinfo counts them.
int PhysicalCores() {
  const unsigned logical = std::max(1u, std::thread::hardware_concurrency());
  std::set<std::pair<std::string, std::string>> cores;
  for (unsigned c = 0; c < 4096; ++c) {
    const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/";
    std::ifstream pkg(dir + "physical_package_id"), core(dir + "core_id");
    std::string p, k;
    if (!(pkg >> p) || !(core >> k)) {
      if (c >= logical) break;
      continue;
    }
    cores.insert({p, k});
  }
  if (cores.empty() || cores.size() > logical) return static_cast<int>(logical);
  return static_cast<int>(cores.size());
}

}  // namespace

int TorchDefaultThreads() {
  static const int n = [] {
    int t = EnvThreads("OMP_NUM_THREADS");
    if (int m = EnvThreads("MKL_NUM_THREADS"); m > 0) t = m;
    return t > 0 ? t : PhysicalCores();
  }();
  return n;
}

float TorchMean(const float* x, uint64_t n, int threads) {
  if (n == 0) return std::nanf("");
  const int64_t count = static_cast<int64_t>(n);
  const int64_t t = threads > 0 ? threads : TorchDefaultThreads();
  float sum = 0.0f;
  if (count < kTorchGrainSize || t == 1) {
    sum += TorchChunkSum(x, count);
  } else {
    // two_pass_reduction: at::parallel_for's chunks, one buffer slot per thread.
    const int64_t used = std::min(t, (count + kTorchGrainSize - 1) / kTorchGrainSize);
    const int64_t chunk = (count + used - 1) / used;
    std::vector<float> buffer(static_cast<size_t>(t), 0.0f);
    for (int64_t k = 0; k < used && k * chunk < count; ++k) {
      buffer[k] += TorchChunkSum(x + k * chunk, std::min(count, (k + 1) * chunk) - k * chunk);
    }
    sum += TorchChunkSum(buffer.data(), t);
  }
  return sum / static_cast<float>(count);
}

float NestedOffset(const float* absmax, uint64_t n, int threads) {
  return n == 0 ? 0.0f : TorchMean(absmax, n, threads);
}

Status QuantizeBlockwise8(const float* in, uint64_t n, int blocksize, uint8_t* codes,
                          float* absmax) {
  if (blocksize <= 0)
    return Status::InvalidArgument("invalid blocksize " + std::to_string(blocksize));
  const auto& lut = DynamicLut();
  const uint64_t bs = static_cast<uint64_t>(blocksize);
  for (uint64_t b = 0; b < NumBlocks(n, bs); ++b) {
    const uint64_t s = b * bs, e = std::min(n, s + bs);
    float m = 0.0f;
    for (uint64_t i = s; i < e; ++i) {
      if (!(std::fabs(in[i]) <= 3.40282347e38f)) {
        return Status::InvalidArgument("value " + std::to_string(i) + " is NaN or infinite");
      }
      m = std::max(m, std::fabs(in[i]));
    }
    absmax[b] = m;
    if (m == 0.0f) {
      std::fill(codes + s, codes + e, uint8_t{0});
      continue;
    }
    const float inv = 1.0f / m;
    for (uint64_t i = s; i < e; ++i) codes[i] = lut[LutIndex(in[i] * inv)];
  }
  return Status::OK();
}

void DequantizeBlockwise8(const uint8_t* codes, const float* absmax, uint64_t n, int blocksize,
                          float* out) {
  const float* map = DynamicMap().data();
  const uint64_t bs = static_cast<uint64_t>(blocksize);
  for (uint64_t i = 0; i < n; ++i) out[i] = map[codes[i]] * absmax[i / bs];
}

}  // namespace layercache::quant
