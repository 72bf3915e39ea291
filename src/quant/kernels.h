// Internal: the quantization kernels behind include/layercache/quantization.h.
// Each kernel works on a range of blocks (NF4) or rows (int8) so that the
// public functions can split the work over threads. The AVX2 and scalar
// versions produce identical bytes.
#pragma once

#include <cstdint>
#include <functional>

#include "layercache/dtype.h"

namespace layercache::quant::detail {

inline constexpr uint64_t kNoBadIndex = ~uint64_t{0};

struct Kernels {
  const char* name;
  // NF4-quantizes blocks [b0, b1) of `n` elements. Returns the index of the
  // first non-finite element met (kNoBadIndex when none); the output of a
  // block holding one is unspecified.
  uint64_t (*nf4_quantize)(DType dtype, const void* in, uint64_t n, uint64_t blocksize, uint64_t b0,
                           uint64_t b1, uint8_t* packed, float* absmax);
  // Dequantizes blocks [b0, b1).
  void (*nf4_dequantize)(const uint8_t* packed, const float* absmax, uint64_t n, uint64_t blocksize,
                         uint64_t b0, uint64_t b1, DType out_dtype, void* out);
  // Int8-quantizes rows [r0, r1); returns the first non-finite element or kNoBadIndex.
  uint64_t (*int8_quantize)(DType dtype, const void* in, uint64_t cols, uint64_t r0, uint64_t r1,
                            int8_t* out, float* scb);
  void (*int8_dequantize)(const int8_t* q, const float* scb, uint64_t cols, uint64_t r0,
                          uint64_t r1, DType out_dtype, void* out);
};

const Kernels& ScalarKernels();
// nullptr when the CPU lacks AVX2/F16C/FMA.
const Kernels* Avx2Kernels();
// The kernels in use: AVX2 when available unless LAYERCACHE_QUANT_KERNEL=scalar.
const Kernels& ActiveKernels();

// The 15 NF4 thresholds (midpoints of the table, as float32): the code of x
// is the number of thresholds t with x > t.
extern const float kNF4Thresholds[15];
extern const float kNF4Values[16];

// Runs fn(begin, end) over [0, units) on up to `threads` threads (0: all
// hardware threads), giving each at least `min_units` units.
void ParallelFor(uint64_t units, uint64_t min_units, int threads,
                 const std::function<void(uint64_t, uint64_t)>& fn);

}  // namespace layercache::quant::detail
