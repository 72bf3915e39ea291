// Quantized layers: bitsandbytes' NF4 (QLoRA 4-bit NormalFloat, optionally with
// nested "double" quantization of the scales) and LLM.int8()'s row-wise int8,
// bit-compatible with bitsandbytes and with the files transformers writes.
//
//   using namespace layercache::quant;
//   auto q = QuantizeLayer(*layer, QuantConfig::NF4());      // Result<LayerPtr>
//   cache.cache_layer("qwen-7b", 5, *q, "nf4");
//   auto plain = DequantizeLayer(**q, DType::BF16);          // back to bf16
//
// NF4 (mode "nf4"): the weight is flattened and cut into blocks of `blocksize`
// consecutive elements (default 64; 32..4096, a power of two). Each block's
// absmax = max |x| is kept in float32, each element is scaled by (1 / absmax)
// in float32 and mapped to one of the 16 NF4 values as bitsandbytes'
// dQuantizeNF4 decision tree decides: the code is the number of its 15
// thresholds t with x > t, the thresholds being the tree's literals as
// Python/PyTorch read them (double, then float32), which are exactly the
// float32 midpoints of neighbouring table values that bitsandbytes' CPU
// backend uses. (bitsandbytes' CUDA build reads four of the literals directly
// as float, one ulp away: for x equal to exactly that one float value the
// CUDA code differs by one.) Two codes per byte, the first element in the HIGH nibble. A last
// partial block has its own absmax; an odd element count is padded with one
// code 7 (0.0) in the low nibble of the last byte, as bitsandbytes does. An
// all-zero block stores absmax 0 and codes 7 (bitsandbytes' CPU backend does
// the same; dequantizes to +0.0). With `nested`, the float32 absmax values
// are themselves quantized exactly as bitsandbytes' CPU backend does it:
// offset = absmax.mean() as PyTorch computes it (a float32 cascade sum in
// 8-lane vectors; above 32768 values one partial sum per intra-op thread,
// see NestedOffset), then (absmax - offset) in blocks of 256 with
// bitsandbytes' signed 8-bit dynamic map, the code of x * (1 / block absmax)
// picked through bitsandbytes' 65536-bin lookup table (not always the nearest
// code: the table is coarser than the map near 0, as in bitsandbytes), giving
// uint8 codes plus a float32 absmax per 256 values; an all-zero block of
// absmax values gets code 0. Codes, absmax, nested absmax, the offset and the
// dequantized values are then bit-identical to bitsandbytes (tested with
// bitsandbytes 0.50 and PyTorch 1.13/2.x, 1 to 4 threads).
//
// Tensors written for a weight W called "<name>" (transformers' names for a
// bitsandbytes Linear4bit weight):
//   <name>                                   U8  [ceil(n/2), 1]   packed codes
//   <name>.absmax                            F32 [blocks]         (U8 when nested)
//   <name>.quant_map                         F32 [16]             the NF4 table
//   <name>.nested_absmax                     F32 [ceil(blocks/256)]  (nested only)
//   <name>.nested_quant_map                  F32 [256]            (nested only)
//   <name>.quant_state.bitsandbytes__nf4     U8  [len]            JSON, as bitsandbytes
//       packs it: {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16",
//       "shape": [4096, 4096]} (+ "nested_blocksize", "nested_dtype", "nested_offset")
//
// INT8 (mode "int8"): per output row SCB = max |W[row, :]| (float32) and
// W_int8 = round_half_even(W * m) in float32 with m = 127 * (1 / SCB), exactly
// as bitsandbytes' int8_vectorwise_quant computes `A * (127.0 / row_stats)`
// in PyTorch (which evaluates 127 / t as t.reciprocal() * 127). A row of zeros stores SCB 0 and
// zeros. Tensors, as bitsandbytes' Linear8bitLt state_dict names them: "<module>.weight" (I8, same
// shape), "<module>.SCB" (F32 [rows]) and "<module>.weight_format" (U8 scalar 0, row-major).
//
// Which tensors are quantized: floating-point (BF16, F16, F32) 2-D tensors
// whose name ends in "weight", with at least `min_elements` elements, whose
// name does not contain "norm", and (unless quantize_embeddings) not
// "embed", "lm_head", "wte" or "wpe". Everything else is stored as it is.
// The quantized layer's metadata key "quantization" records the mode,
// blocksize, nested flag and, per quantized tensor, its original dtype and
// shape (JSON); DequantizeLayer and the cache's mode check read it.
//
// Errors (InvalidArgument, naming the tensor): NaN or Inf in the input (with
// the element's index), a layer that is already quantized, a blocksize that
// bitsandbytes does not accept. Non-float tensors are never selected.
//
// Kernels: AVX2 (with F16C) when the CPU has it, else portable scalar code,
// chosen at run time (LAYERCACHE_QUANT_KERNEL=scalar forces the scalar one);
// both produce identical bytes. Work is split over threads by blocks/rows.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "layercache/dtype.h"
#include "layercache/layer.h"
#include "layercache/status.h"

namespace layercache::quant {

enum class QuantMode { kNone, kNF4, kInt8 };

// "nf4" / "int8" (case-insensitive); "" and "none" are kNone; nullopt otherwise.
std::optional<QuantMode> ParseQuantMode(std::string_view name);
// "nf4", "int8" or "" for kNone.
std::string_view QuantModeName(QuantMode mode);

struct QuantConfig {
  QuantMode mode = QuantMode::kNF4;
  int blocksize = 64;                // nf4 only: 32, 64, ..., 4096
  bool nested = false;               // nf4 only: double quantization of absmax
  uint64_t min_elements = 4096;      // smaller weights are kept as they are
  bool quantize_embeddings = false;  // also embed/lm_head/wte/wpe weights
  int threads = 0;                   // 0: all hardware threads
  // nf4 nested only: the PyTorch intra-op thread count whose mean the offset
  // reproduces (matters above 32768 blocks); 0: PyTorch's default
  // (OMP_NUM_THREADS / MKL_NUM_THREADS, else the physical cores).
  int nested_mean_threads = 0;

  static QuantConfig NF4(bool nested = false) { return {QuantMode::kNF4, 64, nested}; }
  static QuantConfig Int8() { return {QuantMode::kInt8}; }
  // Throws layercache::Error (kInvalidArgument) when unusable.
  void Validate() const;
};

// The metadata key holding a quantized layer's description.
inline constexpr const char* kQuantMetadataKey = "quantization";

// What QuantizeLayer recorded about one tensor.
struct QuantizedTensor {
  std::string name;  // the original tensor name ("mlp.up_proj.weight")
  DType dtype = DType::BF16;
  std::vector<uint64_t> shape;
};

// A quantized layer's description (parsed from its metadata).
struct QuantInfo {
  QuantMode mode = QuantMode::kNone;
  int blocksize = 0;
  bool nested = false;
  std::vector<QuantizedTensor> tensors;
  std::string ToJson() const;
};

// The layer's quantization: kNone mode when the layer is not quantized (no
// metadata and no bitsandbytes tensors); an error when the metadata is
// malformed.
Result<QuantInfo> GetQuantInfo(const Layer& layer);
// OK when the layer was quantized with `mode` ("" / "none": not quantized);
// otherwise an InvalidArgument error saying what is stored.
Status CheckQuantMode(const Layer& layer, std::string_view mode);

// True when QuantizeLayer would quantize this tensor.
bool ShouldQuantize(const TensorInfo& t, const QuantConfig& config);

Result<LayerPtr> QuantizeLayer(const Layer& layer, const QuantConfig& config);
// The layer with its quantized weights dequantized to `dtype` (nullopt: each
// tensor's original dtype) under their original names and shapes; the other
// tensors unchanged. A layer that is not quantized is returned as it is.
Result<LayerPtr> DequantizeLayer(const Layer& layer, std::optional<DType> dtype = std::nullopt);

// ---- Kernels on raw buffers (used by the Python module and the tests) ----

// The 16 NF4 values (bitsandbytes' table), the 15 decision thresholds, and
// bitsandbytes' signed 8-bit dynamic map (create_dynamic_map()).
const std::array<float, 16>& NF4Table();
const std::array<float, 256>& DynamicMap();
// "avx2" or "scalar": the kernel in use.
std::string_view KernelName();

inline uint64_t NumBlocks(uint64_t n, uint64_t blocksize) {
  return (n + blocksize - 1) / blocksize;
}

// `n` elements of `dtype` (BF16, F16, F32) -> packed codes ((n + 1) / 2
// bytes) and absmax (NumBlocks(n, blocksize) floats).
Status QuantizeNF4(DType dtype, const void* in, uint64_t n, int blocksize, uint8_t* packed,
                   float* absmax, int threads = 0);
// Packed codes + float32 absmax -> `n` elements of `out_dtype` (BF16, F16, F32).
Status DequantizeNF4(const uint8_t* packed, const float* absmax, uint64_t n, int blocksize,
                     DType out_dtype, void* out, int threads = 0);
// bitsandbytes' blockwise 8-bit quantization with the dynamic map (the nested
// step): `n` floats -> codes (n bytes) and absmax (NumBlocks(n, blocksize)).
Status QuantizeBlockwise8(const float* in, uint64_t n, int blocksize, uint8_t* codes,
                          float* absmax);
void DequantizeBlockwise8(const uint8_t* codes, const float* absmax, uint64_t n, int blocksize,
                          float* out);
// The nested step's offset as bitsandbytes computes it: torch.mean(absmax)
// on the CPU, bit for bit (PyTorch's float32 cascade sum with 8 lanes, split
// into one chunk per thread above 32768 values, then sum / n in float32).
// threads: PyTorch's intra-op thread count (0: TorchDefaultThreads()).
float NestedOffset(const float* absmax, uint64_t n, int threads = 0);
// torch.mean of n float32 values on the CPU (NaN for n == 0), as above.
float TorchMean(const float* x, uint64_t n, int threads = 0);
// PyTorch's default intra-op thread count: OMP_NUM_THREADS, MKL_NUM_THREADS,
// else the number of physical cores.
int TorchDefaultThreads();
// Row-wise int8: `rows` x `cols` of `dtype` -> int8 codes and SCB per row.
Status QuantizeInt8(DType dtype, const void* in, uint64_t rows, uint64_t cols, int8_t* out,
                    float* scb, int threads = 0);
// W = (q * SCB) * (1/127 in float32), as bitsandbytes' int8_vectorwise_dequant.
Status DequantizeInt8(const int8_t* q, const float* scb, uint64_t rows, uint64_t cols,
                      DType out_dtype, void* out, int threads = 0);

// Conversions used by the kernels (round to nearest even, NaN preserved).
uint16_t FloatToBF16(float f);
float BF16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);
float F16ToFloat(uint16_t h);

// The JSON bitsandbytes packs into "<name>.quant_state.bitsandbytes__nf4"
// (Python's json.dumps layout and float repr).
std::string NF4QuantStateJson(int blocksize, DType dtype, const std::vector<uint64_t>& shape,
                              bool nested, float nested_offset);
// Python's repr() of a float (shortest round-trip digits), e.g. "2.484375", "1e-05".
std::string PythonFloatRepr(double v);

}  // namespace layercache::quant
