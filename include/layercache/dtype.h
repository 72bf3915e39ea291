// Element types of the safetensors format.
//
// The enumerators are declared in the reference implementation's order
// (huggingface/safetensors, `Dtype`), which is also its layout rank: the
// reference writer places tensors by descending dtype, then by name, so that
// every tensor's data is naturally aligned. Do not reorder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace layercache {

enum class DType : uint8_t {
  BOOL,
  F4,
  F6_E2M3,
  F6_E3M2,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  F8_E4M3FNUZ,
  F8_E5M2FNUZ,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  C64,
  F64,
  I64,
  U64,
};

inline constexpr int kNumDTypes = static_cast<int>(DType::U64) + 1;

// Width of one element in bits (BOOL is stored as one byte; F4 is 4 bits and
// F6_* are 6 bits, packed).
uint32_t DTypeBits(DType dtype);

// The name the safetensors header spells ("BF16", "F8_E4M3", ...).
std::string_view DTypeName(DType dtype);

// Parses a header dtype name; nullopt when the name is not a known dtype.
std::optional<DType> ParseDType(std::string_view name);

// True for the floating-point dtypes (F4..F8*, F16, BF16, F32, F64, C64).
bool IsFloatingPoint(DType dtype);

}  // namespace layercache
