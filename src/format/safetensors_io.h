// Internal helpers shared by the safetensors reader/writer and the disk tier.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/env.h"
#include "layercache/safetensors.h"

namespace layercache {

// The 8-byte little-endian header-length prefix.
std::array<std::byte, 8> EncodeHeaderLength(uint64_t n);

// Reads and validates the header of an open file; `what` names it in errors.
Result<SafetensorsHeader> ReadSafetensorsHeaderFrom(RandomAccessFile& file,
                                                    const std::string& what);

}  // namespace layercache
