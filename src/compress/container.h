// The compressed entry container ("zstd-bytegroup-v1"), see docs/FORMAT.md.
//
// A layer's data section is cut into chunks (at most 1 MiB, never spanning two
// tensors). Each chunk of a floating-point tensor is byte-grouped first: byte
// j of every element goes to plane j, so that the low-entropy exponent bytes
// sit together and compress (the ZipNN approach). Each chunk is then
// compressed with zstd, or stored raw when that does not shrink it, and
// carries the XXH3-64 of its original bytes. Chunks are compressed and
// decompressed in parallel.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "layercache/layer.h"
#include "layercache/status.h"

namespace layercache {

inline constexpr const char* kCompressionName = "zstd-bytegroup-v1";
inline constexpr uint64_t kCompressionChunkBytes = 1u << 20;

// Byte width used for grouping a dtype's elements (1: no grouping).
uint32_t GroupWidth(DType dtype);

// The zstd level used for compression_level `level` (1-9, clamped).
int ZstdLevelFor(int level);

// Compresses `layer`'s data section at compression_level `level` (1-9, see
// ZstdLevelFor), every tensor kind alike. `threads` 0: all cores.
AlignedBuffer CompressLayerData(const Layer& layer, int level, unsigned threads = 0);

// Decompresses `container` into `out` (exactly `logical_bytes` long, laid
// out as the layer's tensors); Corruption when anything does not check out.
Status DecompressLayerData(std::span<const std::byte> container, std::byte* out,
                           uint64_t logical_bytes, unsigned threads = 0);

// Byte-grouping helpers (exposed for tests and benchmarks).
void GroupBytes(const std::byte* in, std::byte* out, size_t n_bytes, uint32_t width);
void UngroupBytes(const std::byte* in, std::byte* out, size_t n_bytes, uint32_t width);

}  // namespace layercache
