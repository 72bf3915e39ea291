// libFuzzer target: parsing a safetensors header read remotely, where the file
// size comes from the server (Content-Range) and only a prefix of the file is
// at hand. Input: 8 bytes of claimed file size, then the prefix.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "layercache/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace layercache;
  if (size < 8) return 0;
  uint64_t file_size;
  std::memcpy(&file_size, data, 8);
  file_size %= (uint64_t{1} << 44);
  std::span<const std::byte> prefix(reinterpret_cast<const std::byte*>(data + 8), size - 8);
  auto n = ParseSafetensorsHeaderLength(prefix.first(std::min<size_t>(8, prefix.size())), file_size,
                                        "fuzz");
  if (!n.ok() || 8 + *n > prefix.size()) return 0;
  std::string_view text(reinterpret_cast<const char*>(prefix.data()) + 8, *n);
  auto header = ParseSafetensorsHeader(text, file_size, "fuzz");
  if (header.ok() && header->data_offset + header->data_bytes != file_size) __builtin_trap();
  return 0;
}
