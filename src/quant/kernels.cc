// NF4 and int8 kernels: portable scalar code and AVX2 (+F16C) versions chosen
// at run time. Both compute every value with the same float32 operations in
// the same order (this file is built with -ffp-contract=off), so they write
// identical bytes; the tests compare them.
#include "quant/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define LAYERCACHE_QUANT_X86 1
#endif

#include "layercache/quantization.h"
#include "util/executor.h"

namespace layercache::quant {

uint16_t FloatToBF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float BF16ToFloat(uint16_t h) {
  const uint32_t x = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half (or zero)
    float a;
    std::memcpy(&a, &ax, 4);
    const float scaled = a * 16777216.0f;  // exact: times 2^24
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax >> 13) & 0x3ffu);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    const float v = static_cast<float>(mant) * (1.0f / 16777216.0f);  // mant * 2^-24, exact
    std::memcpy(&x, &v, 4);
    x |= sign;
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

namespace detail {

const float kNF4Values[16] = {-1.0f,
                              -0.6961928009986877f,
                              -0.5250730514526367f,
                              -0.39491748809814453f,
                              -0.28444138169288635f,
                              -0.18477343022823334f,
                              -0.09105003625154495f,
                              0.0f,
                              0.07958029955625534f,
                              0.16093020141124725f,
                              0.24611230194568634f,
                              0.33791524171829224f,
                              0.44070982933044434f,
                              0.5626170039176941f,
                              0.7229568362236023f,
                              1.0f};

// bitsandbytes' dQuantizeNF4 (csrc/kernels.cu) thresholds, in order, read as
// double and rounded to float32: exactly the float32 midpoints of
// neighbouring table values that bitsandbytes' CPU backend (torch.bucketize)
// uses, and what a Python port of the tree compares with. (A C or CUDA
// compiler reading the literals directly as float lands one ulp away at
// thresholds 0, 8, 12 and 14; see quantization.h.)
#define LC_T(x) static_cast<float>(x)
const float kNF4Thresholds[15] = {
    LC_T(-0.8480964004993439),   LC_T(-0.6106329262256622),  LC_T(-0.4599952697753906),
    LC_T(-0.33967943489551544),  LC_T(-0.23460740596055984), LC_T(-0.13791173323988914),
    LC_T(-0.045525018125772476), LC_T(0.03979014977812767),  LC_T(0.1202552504837513),
    LC_T(0.2035212516784668),    LC_T(0.2920137718319893),   LC_T(0.3893125355243683),
    LC_T(0.5016634166240692),    LC_T(0.6427869200706482),   LC_T(0.8614784181118011)};
#undef LC_T

namespace {

inline float LoadScalar(DType dtype, const void* in, uint64_t i) {
  switch (dtype) {
    case DType::BF16:
      return BF16ToFloat(static_cast<const uint16_t*>(in)[i]);
    case DType::F16:
      return F16ToFloat(static_cast<const uint16_t*>(in)[i]);
    default:
      return static_cast<const float*>(in)[i];
  }
}

inline uint8_t NF4Code(float x) {
  // As dQuantizeNF4's tree: the number of thresholds below x (NaN: 0).
  uint8_t c = 0;
  for (float t : kNF4Thresholds) c += static_cast<uint8_t>(x > t);
  return c;
}

inline bool Finite(float v) { return std::fabs(v) <= 3.40282347e38f; }

// One block's 16 dequantized values, in the output dtype's bits.
inline void BlockTable(float absmax, DType out_dtype, uint32_t* table) {
  for (int k = 0; k < 16; ++k) {
    const float v = kNF4Values[k] * absmax;
    if (out_dtype == DType::BF16) {
      table[k] = FloatToBF16(v);
    } else if (out_dtype == DType::F16) {
      table[k] = FloatToF16(v);
    } else {
      std::memcpy(&table[k], &v, 4);
    }
  }
}

inline void StoreOut(DType out_dtype, void* out, uint64_t i, uint32_t bits) {
  if (out_dtype == DType::F32) {
    static_cast<uint32_t*>(out)[i] = bits;
  } else {
    static_cast<uint16_t*>(out)[i] = static_cast<uint16_t>(bits);
  }
}

// The scalar quantization of one block [s, e); returns the bad index or kNoBadIndex.
uint64_t QuantizeBlockScalar(DType dtype, const void* in, uint64_t s, uint64_t e, bool partial,
                             uint8_t* packed, float* absmax_out) {
  float absmax = 0.0f;
  for (uint64_t i = s; i < e; ++i) {
    const float v = LoadScalar(dtype, in, i);
    if (!Finite(v)) return i;
    absmax = std::max(absmax, std::fabs(v));
  }
  *absmax_out = absmax;
  // As bitsandbytes' CPU backend: x * (1 / max(absmax, 1e-38)) for whole
  // blocks, x / max(absmax, 1e-38) for a last, partial one.
  const float div = std::max(absmax, 1e-38f);
  const float inv = 1.0f / div;
  auto scale = [&](float x) { return partial ? x / div : x * inv; };
  for (uint64_t i = s; i < e; i += 2) {
    const uint8_t hi = NF4Code(scale(LoadScalar(dtype, in, i)));
    const uint8_t lo = i + 1 < e ? NF4Code(scale(LoadScalar(dtype, in, i + 1))) : 7;  // pad: 0.0
    packed[i / 2] = static_cast<uint8_t>((hi << 4) | lo);
  }
  return kNoBadIndex;
}

uint64_t ScalarNF4Quantize(DType dtype, const void* in, uint64_t n, uint64_t bs, uint64_t b0,
                           uint64_t b1, uint8_t* packed, float* absmax) {
  for (uint64_t b = b0; b < b1; ++b) {
    const uint64_t e = std::min(n, (b + 1) * bs);
    const uint64_t bad =
        QuantizeBlockScalar(dtype, in, b * bs, e, e - b * bs != bs, packed, &absmax[b]);
    if (bad != kNoBadIndex) return bad;
  }
  return kNoBadIndex;
}

void DequantizeBlockScalar(const uint8_t* packed, float absmax, uint64_t s, uint64_t e,
                           DType out_dtype, void* out) {
  uint32_t table[16];
  BlockTable(absmax, out_dtype, table);
  uint64_t i = s;
  for (; i + 1 < e; i += 2) {
    const uint8_t p = packed[i / 2];
    StoreOut(out_dtype, out, i, table[p >> 4]);
    StoreOut(out_dtype, out, i + 1, table[p & 15]);
  }
  if (i < e) StoreOut(out_dtype, out, i, table[packed[i / 2] >> 4]);
}

void ScalarNF4Dequantize(const uint8_t* packed, const float* absmax, uint64_t n, uint64_t bs,
                         uint64_t b0, uint64_t b1, DType out_dtype, void* out) {
  for (uint64_t b = b0; b < b1; ++b) {
    DequantizeBlockScalar(packed, absmax[b], b * bs, std::min(n, (b + 1) * bs), out_dtype, out);
  }
}

uint64_t ScalarInt8Quantize(DType dtype, const void* in, uint64_t cols, uint64_t r0, uint64_t r1,
                            int8_t* out, float* scb) {
  for (uint64_t r = r0; r < r1; ++r) {
    const uint64_t s = r * cols;
    float m = 0.0f;
    for (uint64_t c = 0; c < cols; ++c) {
      const float v = LoadScalar(dtype, in, s + c);
      if (!Finite(v)) return s + c;
      m = std::max(m, std::fabs(v));
    }
    scb[r] = m;
    const float mult =
        m == 0.0f ? 0.0f : 127.0f * (1.0f / m);  // torch: 127 / t == t.reciprocal() * 127
    for (uint64_t c = 0; c < cols; ++c) {
      const float q = std::nearbyint(LoadScalar(dtype, in, s + c) * mult);  // half to even
      out[s + c] = static_cast<int8_t>(q);
    }
  }
  return kNoBadIndex;
}

constexpr float kInv127 = 7.874015718698502e-3f;  // bitsandbytes' 1/127

inline uint32_t OutBits(DType out_dtype, float v) {
  if (out_dtype == DType::BF16) return FloatToBF16(v);
  if (out_dtype == DType::F16) return FloatToF16(v);
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

void ScalarInt8Dequantize(const int8_t* q, const float* scb, uint64_t cols, uint64_t r0,
                          uint64_t r1, DType out_dtype, void* out) {
  for (uint64_t r = r0; r < r1; ++r) {
    for (uint64_t c = 0; c < cols; ++c) {
      const uint64_t i = r * cols + c;
      const float v = (static_cast<float>(q[i]) * scb[r]) * kInv127;
      StoreOut(out_dtype, out, i, OutBits(out_dtype, v));
    }
  }
}

#ifdef LAYERCACHE_QUANT_X86
#define LC_AVX2 __attribute__((target("avx2,fma,f16c")))

LC_AVX2 inline __m256 Load8(DType dtype, const void* in, uint64_t i) {
  if (dtype == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(in) + i);
  const __m128i h =
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(in) + i));
  if (dtype == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Round-to-nearest-even float -> bf16 of 8 finite values, as 8 x uint32 (low 16 bits).
LC_AVX2 inline __m256i ToBF16x8(__m256 v) {
  const __m256i x = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb);
  return _mm256_srli_epi32(r, 16);
}

LC_AVX2 uint64_t Avx2NF4Quantize(DType dtype, const void* in, uint64_t n, uint64_t bs, uint64_t b0,
                                 uint64_t b1, uint8_t* packed, float* absmax_out) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 fmax = _mm256_set1_ps(3.40282347e38f);
  __m256 th[15];
  for (int k = 0; k < 15; ++k) th[k] = _mm256_set1_ps(kNF4Thresholds[k]);
  for (uint64_t b = b0; b < b1; ++b) {
    const uint64_t s = b * bs;
    const uint64_t e = std::min(n, s + bs);
    if (e - s != bs || bs % 8 != 0) {  // a last, partial block
      const uint64_t bad =
          QuantizeBlockScalar(dtype, in, s, e, e - s != bs, packed, &absmax_out[b]);
      if (bad != kNoBadIndex) return bad;
      continue;
    }
    __m256 vmax = _mm256_setzero_ps();
    __m256 notfinite = _mm256_setzero_ps();
    for (uint64_t i = s; i < e; i += 8) {
      const __m256 a = _mm256_andnot_ps(sign, Load8(dtype, in, i));
      notfinite = _mm256_or_ps(notfinite, _mm256_cmp_ps(a, fmax, _CMP_NLE_UQ));
      vmax = _mm256_max_ps(vmax, a);
    }
    if (!_mm256_testz_ps(notfinite, notfinite)) {
      for (uint64_t i = s; i < e; ++i) {
        if (!Finite(LoadScalar(dtype, in, i))) return i;
      }
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float absmax = _mm_cvtss_f32(m4);
    absmax_out[b] = absmax;
    const __m256 inv = _mm256_set1_ps(1.0f / std::max(absmax, 1e-38f));
    for (uint64_t i = s; i < e; i += 8) {
      const __m256 x = _mm256_mul_ps(Load8(dtype, in, i), inv);
      __m256i c = _mm256_setzero_si256();
      for (int k = 0; k < 15; ++k) {
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(x, th[k], _CMP_GT_OQ)));
      }
      // 64-bit lanes hold (even code, odd code): byte = even << 4 | odd.
      const __m256i pairs = _mm256_or_si256(_mm256_slli_epi64(c, 4), _mm256_srli_epi64(c, 32));
      alignas(32) uint64_t lanes[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), pairs);
      uint8_t* dst = packed + i / 2;
      for (int k = 0; k < 4; ++k) dst[k] = static_cast<uint8_t>(lanes[k]);
    }
  }
  return kNoBadIndex;
}

// The 16 table values of a block as byte planes for pshufb: planes[j] holds
// byte j of each value (2 planes for bf16/f16, 4 for f32).
LC_AVX2 inline int BlockPlanes(float absmax, DType out_dtype, __m128i* planes) {
  if (!Finite(absmax)) {  // malformed input: take the exact scalar path for NaN/Inf
    uint32_t table[16];
    BlockTable(absmax, out_dtype, table);
    alignas(16) uint8_t bytes[4][16];
    for (int k = 0; k < 16; ++k) {
      for (int j = 0; j < 4; ++j) bytes[j][k] = static_cast<uint8_t>(table[k] >> (8 * j));
    }
    for (int j = 0; j < 4; ++j)
      planes[j] = _mm_load_si128(reinterpret_cast<const __m128i*>(bytes[j]));
    return out_dtype == DType::F32 ? 4 : 2;
  }
  const __m256 a = _mm256_set1_ps(absmax);
  const __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(kNF4Values), a);
  const __m256 v1 = _mm256_mul_ps(_mm256_loadu_ps(kNF4Values + 8), a);
  __m128i w0, w1;  // 8 x 16-bit each, values 0..7 and 8..15
  if (out_dtype == DType::F32) {
    // Byte j of value k: shuffle each 32-bit value's bytes into planes.
    const __m256i order = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0,
                                           4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    // After the shuffle each 128-bit lane holds 4 values as [b0 x4][b1 x4][b2 x4][b3 x4].
    const __m256i s0 = _mm256_shuffle_epi8(_mm256_castps_si256(v0), order);  // values 0-3 | 4-7
    const __m256i s1 = _mm256_shuffle_epi8(_mm256_castps_si256(v1), order);  // values 8-11 | 12-15
    // Transpose 32-bit groups: plane j = group j of (0-3, 4-7, 8-11, 12-15).
    const __m128i q0 = _mm256_castsi256_si128(s0), q1 = _mm256_extracti128_si256(s0, 1);
    const __m128i q2 = _mm256_castsi256_si128(s1), q3 = _mm256_extracti128_si256(s1, 1);
    const __m128i t0 = _mm_unpacklo_epi32(q0, q1);  // g0(0-3) g0(4-7) g1(0-3) g1(4-7)
    const __m128i t1 = _mm_unpackhi_epi32(q0, q1);  // g2 .. g3 ..
    const __m128i t2 = _mm_unpacklo_epi32(q2, q3);
    const __m128i t3 = _mm_unpackhi_epi32(q2, q3);
    planes[0] = _mm_unpacklo_epi64(t0, t2);
    planes[1] = _mm_unpackhi_epi64(t0, t2);
    planes[2] = _mm_unpacklo_epi64(t1, t3);
    planes[3] = _mm_unpackhi_epi64(t1, t3);
    return 4;
  }
  if (out_dtype == DType::F16) {
    w0 = _mm256_cvtps_ph(v0, _MM_FROUND_TO_NEAREST_INT);
    w1 = _mm256_cvtps_ph(v1, _MM_FROUND_TO_NEAREST_INT);
  } else {
    const __m256i b0 = ToBF16x8(v0), b1 = ToBF16x8(v1);
    w0 = _mm_packus_epi32(_mm256_castsi256_si128(b0), _mm256_extracti128_si256(b0, 1));
    w1 = _mm_packus_epi32(_mm256_castsi256_si128(b1), _mm256_extracti128_si256(b1, 1));
  }
  const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  const __m128i s0 = _mm_shuffle_epi8(w0, split);  // lo bytes 0-7 | hi bytes 0-7
  const __m128i s1 = _mm_shuffle_epi8(w1, split);
  planes[0] = _mm_unpacklo_epi64(s0, s1);
  planes[1] = _mm_unpackhi_epi64(s0, s1);
  return 2;
}

LC_AVX2 void Avx2NF4Dequantize(const uint8_t* packed, const float* absmax, uint64_t n, uint64_t bs,
                               uint64_t b0, uint64_t b1, DType out_dtype, void* out) {
  const __m128i low4 = _mm_set1_epi8(0x0f);
  for (uint64_t b = b0; b < b1; ++b) {
    const uint64_t s = b * bs;
    const uint64_t e = std::min(n, s + bs);
    if ((e - s) % 32 != 0) {
      DequantizeBlockScalar(packed, absmax[b], s, e, out_dtype, out);
      continue;
    }
    __m128i planes[4];
    const int np = BlockPlanes(absmax[b], out_dtype, planes);
    for (uint64_t i = s; i < e; i += 32) {
      const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + i / 2));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(p, 4), low4);
      const __m128i lo = _mm_and_si128(p, low4);
      const __m128i idx[2] = {_mm_unpacklo_epi8(hi, lo),
                              _mm_unpackhi_epi8(hi, lo)};  // elements 0-15, 16-31
      for (int h = 0; h < 2; ++h) {
        const __m128i c0 = _mm_shuffle_epi8(planes[0], idx[h]);
        const __m128i c1 = _mm_shuffle_epi8(planes[1], idx[h]);
        const __m128i w0 = _mm_unpacklo_epi8(c0, c1);  // 16-bit values 0-7
        const __m128i w1 = _mm_unpackhi_epi8(c0, c1);  // 8-15
        const uint64_t at = i + 16 * static_cast<uint64_t>(h);
        if (np == 2) {
          __m128i* dst = reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + at);
          _mm_storeu_si128(dst, w0);
          _mm_storeu_si128(dst + 1, w1);
        } else {
          const __m128i c2 = _mm_shuffle_epi8(planes[2], idx[h]);
          const __m128i c3 = _mm_shuffle_epi8(planes[3], idx[h]);
          const __m128i u0 = _mm_unpacklo_epi8(c2, c3);
          const __m128i u1 = _mm_unpackhi_epi8(c2, c3);
          __m128i* dst = reinterpret_cast<__m128i*>(static_cast<uint32_t*>(out) + at);
          _mm_storeu_si128(dst, _mm_unpacklo_epi16(w0, u0));
          _mm_storeu_si128(dst + 1, _mm_unpackhi_epi16(w0, u0));
          _mm_storeu_si128(dst + 2, _mm_unpacklo_epi16(w1, u1));
          _mm_storeu_si128(dst + 3, _mm_unpackhi_epi16(w1, u1));
        }
      }
    }
  }
}

LC_AVX2 uint64_t Avx2Int8Quantize(DType dtype, const void* in, uint64_t cols, uint64_t r0,
                                  uint64_t r1, int8_t* out, float* scb) {
  if (cols % 8 != 0) return ScalarInt8Quantize(dtype, in, cols, r0, r1, out, scb);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 fmax = _mm256_set1_ps(3.40282347e38f);
  for (uint64_t r = r0; r < r1; ++r) {
    const uint64_t s = r * cols;
    __m256 vmax = _mm256_setzero_ps();
    __m256 notfinite = _mm256_setzero_ps();
    for (uint64_t c = 0; c < cols; c += 8) {
      const __m256 a = _mm256_andnot_ps(sign, Load8(dtype, in, s + c));
      notfinite = _mm256_or_ps(notfinite, _mm256_cmp_ps(a, fmax, _CMP_NLE_UQ));
      vmax = _mm256_max_ps(vmax, a);
    }
    if (!_mm256_testz_ps(notfinite, notfinite)) {
      for (uint64_t c = 0; c < cols; ++c) {
        if (!Finite(LoadScalar(dtype, in, s + c))) return s + c;
      }
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float m = _mm_cvtss_f32(m4);
    scb[r] = m;
    const __m256 mult = _mm256_set1_ps(m == 0.0f ? 0.0f : 127.0f * (1.0f / m));
    for (uint64_t c = 0; c < cols; c += 8) {
      const __m256 x = _mm256_mul_ps(Load8(dtype, in, s + c), mult);
      const __m256i q =
          _mm256_cvtps_epi32(_mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
      const __m128i bytes = _mm_packs_epi16(w, w);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + s + c), bytes);
    }
  }
  return kNoBadIndex;
}

LC_AVX2 void Avx2Int8Dequantize(const int8_t* q, const float* scb, uint64_t cols, uint64_t r0,
                                uint64_t r1, DType out_dtype, void* out) {
  if (cols % 8 != 0) return ScalarInt8Dequantize(q, scb, cols, r0, r1, out_dtype, out);
  const __m256 k = _mm256_set1_ps(kInv127);
  for (uint64_t r = r0; r < r1; ++r) {
    const __m256 sv = _mm256_set1_ps(scb[r]);
    if (!Finite(scb[r])) {
      ScalarInt8Dequantize(q, scb, cols, r, r + 1, out_dtype, out);
      continue;
    }
    for (uint64_t c = 0; c < cols; c += 8) {
      const uint64_t i = r * cols + c;
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i));
      const __m256 v =
          _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), sv), k);
      if (out_dtype == DType::F32) {
        _mm256_storeu_ps(static_cast<float*>(out) + i, v);
      } else {
        __m128i h;
        if (out_dtype == DType::F16) {
          h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
        } else {
          const __m256i w = ToBF16x8(v);
          h = _mm_packus_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        }
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i), h);
      }
    }
  }
}

#endif  // LAYERCACHE_QUANT_X86

}  // namespace

const Kernels& ScalarKernels() {
  static const Kernels k{"scalar", ScalarNF4Quantize, ScalarNF4Dequantize, ScalarInt8Quantize,
                         ScalarInt8Dequantize};
  return k;
}

const Kernels* Avx2Kernels() {
#ifdef LAYERCACHE_QUANT_X86
  // F16C is read from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not
  // know "f16c".
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
  }();
  static const Kernels k{"avx2", Avx2NF4Quantize, Avx2NF4Dequantize, Avx2Int8Quantize,
                         Avx2Int8Dequantize};
  return ok ? &k : nullptr;
#else
  return nullptr;
#endif
}

const Kernels& ActiveKernels() {
  static const Kernels* k = [] {
    const char* env = std::getenv("LAYERCACHE_QUANT_KERNEL");
    if (env != nullptr && std::string_view(env) == "scalar") return &ScalarKernels();
    const Kernels* avx2 = Avx2Kernels();
    return avx2 != nullptr ? avx2 : &ScalarKernels();
  }();
  return *k;
}

void ParallelFor(uint64_t units, uint64_t min_units, int threads,
                 const std::function<void(uint64_t, uint64_t)>& fn) {
  if (units == 0) return;
  uint64_t n = threads > 0 ? static_cast<uint64_t>(threads) : HardwareThreads();
  n = std::min(n, std::max<uint64_t>(1, units / std::max<uint64_t>(1, min_units)));
  if (n <= 1) {
    fn(0, units);
    return;
  }
  // The split into n parts of `per` units is what the results depend on
  // (they match bitsandbytes for a given thread count); where the parts run
  // (the current executor's workers and this thread) does not change them.
  const uint64_t per = (units + n - 1) / n;
  const uint64_t parts = (units + per - 1) / per;
  Executor::Current().ParallelFor(parts, static_cast<unsigned>(n), [&](size_t t) {
    const uint64_t b = t * per, e = std::min(units, b + per);
    fn(b, e);
  });
}

}  // namespace detail
}  // namespace layercache::quant
