#include "layercache/dtype.h"

#include <array>

namespace layercache {
namespace {

struct DTypeInfo {
  std::string_view name;
  uint32_t bits;
  bool floating;
};

constexpr std::array<DTypeInfo, kNumDTypes> kInfo = {{
    {"BOOL", 8, false},   {"F4", 4, true},          {"F6_E2M3", 6, true},     {"F6_E3M2", 6, true},
    {"U8", 8, false},     {"I8", 8, false},         {"F8_E5M2", 8, true},     {"F8_E4M3", 8, true},
    {"F8_E8M0", 8, true}, {"F8_E4M3FNUZ", 8, true}, {"F8_E5M2FNUZ", 8, true}, {"I16", 16, false},
    {"U16", 16, false},   {"F16", 16, true},        {"BF16", 16, true},       {"I32", 32, false},
    {"U32", 32, false},   {"F32", 32, true},        {"C64", 64, true},        {"F64", 64, true},
    {"I64", 64, false},   {"U64", 64, false},
}};

}  // namespace

uint32_t DTypeBits(DType dtype) { return kInfo[static_cast<size_t>(dtype)].bits; }

std::string_view DTypeName(DType dtype) { return kInfo[static_cast<size_t>(dtype)].name; }

bool IsFloatingPoint(DType dtype) { return kInfo[static_cast<size_t>(dtype)].floating; }

std::optional<DType> ParseDType(std::string_view name) {
  for (size_t i = 0; i < kInfo.size(); ++i) {
    if (kInfo[i].name == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}

}  // namespace layercache
