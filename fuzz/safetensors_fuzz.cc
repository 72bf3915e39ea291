// libFuzzer target: the safetensors parser. Whatever the bytes, parsing must
// not crash; a file that parses must serialize and parse back to the same layer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "layercache/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace layercache;
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  auto layer = ParseSafetensors(bytes, "fuzz");
  if (!layer.ok()) return 0;
  auto again = ParseSafetensors(SerializeSafetensors(**layer), "fuzz-roundtrip");
  if (!again.ok() || !(*again)->ContentEquals(**layer)) std::abort();
  return 0;
}
