#include "compress/container.h"

#include <emmintrin.h>
#include <xxhash.h>

#include "util/parallel.h"
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>  // XXH3 with run-time AVX2 / AVX-512 selection
#endif
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace layercache {
namespace {

constexpr char kMagic[4] = {'L', 'C', 'Z', '1'};
constexpr uint32_t kMaxWidth = 8;

#pragma pack(push, 1)
struct ContainerHeader {
  char magic[4];
  uint32_t version;
  uint64_t logical_bytes;
  uint32_t num_chunks;
  uint32_t reserved;
};
struct ChunkEntry {
  uint64_t offset;    // of the chunk's first stored plane, from the start of the payload
  uint32_t raw_size;  // bytes after decoding
  uint8_t width;      // byte-group width = number of planes (1, 2, 4 or 8)
  uint8_t zstd_mask;  // bit j: plane j is zstd-compressed (else stored raw)
  uint16_t reserved;
  uint64_t xxh64;                  // XXH3-64 of the original (ungrouped) bytes
  uint32_t plane_size[kMaxWidth];  // stored bytes of each plane
};
#pragma pack(pop)
static_assert(sizeof(ContainerHeader) == 24);
static_assert(sizeof(ChunkEntry) == 56);

// Plane j of a chunk of `raw` bytes grouped by `width`: its raw length.
size_t PlaneBytes(size_t raw, uint32_t width, uint32_t j) {
  const size_t n = raw / width;
  return j + 1 == width ? raw - n * (width - 1) : n;  // the last plane also holds the tail bytes
}

ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(),
                                                                      ZSTD_freeDCtx);
  return ctx.get();
}

ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> ctx(ZSTD_createCCtx(),
                                                                      ZSTD_freeCCtx);
  return ctx.get();
}

struct Piece {
  uint64_t offset;  // in the data section
  uint32_t size;
  uint32_t width;
};

}  // namespace

uint32_t GroupWidth(DType dtype) {
  switch (dtype) {
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::F32:
    case DType::C64:
      return 4;
    case DType::F64:
      return 8;
    default:
      return 1;
  }
}

void GroupBytes(const std::byte* in, std::byte* out, size_t n_bytes, uint32_t width) {
  const size_t n = n_bytes / width;
  if (width == 2) {
    for (size_t i = 0; i < n; ++i) {
      out[i] = in[2 * i];
      out[n + i] = in[2 * i + 1];
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      for (uint32_t j = 0; j < width; ++j) out[j * n + i] = in[i * width + j];
    }
  }
  std::memcpy(out + n * width, in + n * width, n_bytes - n * width);
}

namespace {

// Interleaves `width` planes back into elements; the tail bytes (n_bytes not
// a multiple of width) follow the last plane's n elements.
void Interleave(const std::byte* const* planes, std::byte* out, size_t n_bytes, uint32_t width) {
  const size_t n = n_bytes / width;
  size_t i = 0;
  if (width == 2) {
    const auto* p0 = reinterpret_cast<const uint8_t*>(planes[0]);
    const auto* p1 = reinterpret_cast<const uint8_t*>(planes[1]);
    auto* o = reinterpret_cast<uint8_t*>(out);
#if defined(__SSE2__)
    for (; i + 16 <= n; i += 16) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0 + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1 + i));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 2 * i), _mm_unpacklo_epi8(a, b));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 2 * i + 16), _mm_unpackhi_epi8(a, b));
    }
#endif
    for (; i < n; ++i) {
      o[2 * i] = p0[i];
      o[2 * i + 1] = p1[i];
    }
  } else if (width == 4) {
    const auto* p0 = reinterpret_cast<const uint8_t*>(planes[0]);
    const auto* p1 = reinterpret_cast<const uint8_t*>(planes[1]);
    const auto* p2 = reinterpret_cast<const uint8_t*>(planes[2]);
    const auto* p3 = reinterpret_cast<const uint8_t*>(planes[3]);
    auto* o = reinterpret_cast<uint8_t*>(out);
#if defined(__SSE2__)
    for (; i + 16 <= n; i += 16) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0 + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1 + i));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p2 + i));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p3 + i));
      const __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
      const __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 4 * i), _mm_unpacklo_epi16(ab_lo, cd_lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 4 * i + 16),
                       _mm_unpackhi_epi16(ab_lo, cd_lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 4 * i + 32),
                       _mm_unpacklo_epi16(ab_hi, cd_hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 4 * i + 48),
                       _mm_unpackhi_epi16(ab_hi, cd_hi));
    }
#endif
    for (; i < n; ++i) {
      o[4 * i] = p0[i];
      o[4 * i + 1] = p1[i];
      o[4 * i + 2] = p2[i];
      o[4 * i + 3] = p3[i];
    }
  } else {
    for (; i < n; ++i) {
      for (uint32_t j = 0; j < width; ++j) out[i * width + j] = planes[j][i];
    }
  }
  std::memcpy(out + n * width, planes[width - 1] + n, n_bytes - n * width);
}

}  // namespace

void UngroupBytes(const std::byte* in, std::byte* out, size_t n_bytes, uint32_t width) {
  const size_t n = n_bytes / width;
  const std::byte* planes[kMaxWidth];
  for (uint32_t j = 0; j < width; ++j) planes[j] = in + j * n;
  Interleave(planes, out, n_bytes, width);
}

int ZstdLevelFor(int level) {
  // compression_level 1-9 spread over zstd's range: 1-5 are its fast
  // (negative) levels, 6 (the default) is zstd 1, 7-9 are zstd 3, 9 and 19.
  // Measured on weights (docs/PERFORMANCE.md): the ratio hardly grows past
  // zstd 1 while compression slows down tenfold and more, so the default
  // sits there.
  static constexpr int kZstd[10] = {1, -7, -5, -3, -2, -1, 1, 3, 9, 19};
  return kZstd[std::clamp(level, 1, 9)];
}

AlignedBuffer CompressLayerData(const Layer& layer, int level, unsigned threads) {
  std::vector<Piece> pieces;
  for (const TensorInfo& t : layer.tensors()) {
    const uint32_t width = GroupWidth(t.dtype);
    for (uint64_t done = 0; done < t.nbytes; done += kCompressionChunkBytes) {
      pieces.push_back({t.offset + done,
                        static_cast<uint32_t>(std::min(kCompressionChunkBytes, t.nbytes - done)),
                        width});
    }
  }
  std::vector<std::vector<std::byte>> stored(pieces.size());
  std::vector<ChunkEntry> entries(pieces.size());
  ParallelFor(pieces.size(), threads, [&](size_t i) {
    const Piece& p = pieces[i];
    const std::byte* src = layer.data() + p.offset;
    ChunkEntry& e = entries[i];
    e = {};
    e.raw_size = p.size;
    e.width = static_cast<uint8_t>(p.width);
    e.xxh64 = XXH3_64bits(src, p.size);
    std::vector<std::byte> grouped;
    const std::byte* input = src;
    if (p.width > 1) {
      grouped.resize(p.size);
      GroupBytes(src, grouped.data(), p.size, p.width);
      input = grouped.data();
    }
    // Each plane on its own: zstd where it shrinks, raw where it does not
    // (the mantissa planes of weights are close to random).
    std::vector<std::byte>& out = stored[i];
    size_t plane_start = 0;
    for (uint32_t j = 0; j < p.width; ++j) {
      const size_t bytes = PlaneBytes(p.size, p.width, j);
      const std::byte* plane = input + plane_start;
      const size_t at = out.size();
      out.resize(at + ZSTD_compressBound(bytes));
      const int zstd_level = ZstdLevelFor(level);
      const size_t n = ZSTD_compressCCtx(ThreadCCtx(), out.data() + at, out.size() - at, plane,
                                         bytes, zstd_level);
      if (!ZSTD_isError(n) && n + n / 32 < bytes) {
        out.resize(at + n);
        e.zstd_mask = static_cast<uint8_t>(e.zstd_mask | (1u << j));
        e.plane_size[j] = static_cast<uint32_t>(n);
      } else {
        out.resize(at);
        out.insert(out.end(), plane, plane + bytes);
        e.plane_size[j] = static_cast<uint32_t>(bytes);
      }
      plane_start += bytes;
    }
  });
  uint64_t payload = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    entries[i].offset = payload;
    payload += stored[i].size();
  }
  const uint64_t table = sizeof(ContainerHeader) + entries.size() * sizeof(ChunkEntry);
  AlignedBuffer out(table + payload);
  ContainerHeader h{};
  std::memcpy(h.magic, kMagic, 4);
  h.version = 1;
  h.logical_bytes = layer.nbytes();
  h.num_chunks = static_cast<uint32_t>(entries.size());
  std::memcpy(out.data(), &h, sizeof h);
  if (!entries.empty())
    std::memcpy(out.data() + sizeof h, entries.data(), entries.size() * sizeof(ChunkEntry));
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!stored[i].empty())
      std::memcpy(out.data() + table + entries[i].offset, stored[i].data(), stored[i].size());
  }
  return out;
}

Status DecompressLayerData(std::span<const std::byte> container, std::byte* out,
                           uint64_t logical_bytes, unsigned threads) {
  auto bad = [](const std::string& why) { return Status::Corruption("compressed entry: " + why); };
  ContainerHeader h{};
  if (container.size() < sizeof h) return bad("shorter than its header");
  std::memcpy(&h, container.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, 4) != 0 || h.version != 1)
    return bad("unknown container format");
  if (h.logical_bytes != logical_bytes) return bad("logical size disagrees with the tensor table");
  const uint64_t table = sizeof h + uint64_t{h.num_chunks} * sizeof(ChunkEntry);
  if (table > container.size()) return bad("chunk table runs past the end");
  std::vector<ChunkEntry> entries(h.num_chunks);
  if (h.num_chunks != 0)
    std::memcpy(entries.data(), container.data() + sizeof h, h.num_chunks * sizeof(ChunkEntry));
  const uint64_t payload = container.size() - table;
  std::vector<uint64_t> dst(entries.size());
  uint64_t total = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const ChunkEntry& e = entries[i];
    uint64_t stored = 0;
    const bool width_ok = e.width == 1 || e.width == 2 || e.width == 4 || e.width == 8;
    for (uint32_t j = 0; width_ok && j < e.width; ++j) stored += e.plane_size[j];
    if (!width_ok || e.offset + stored > payload)
      return bad("chunk " + std::to_string(i) + " is malformed");
    dst[i] = total;
    total += e.raw_size;
  }
  if (total != logical_bytes) return bad("chunks do not add up to the layer's size");
  std::atomic<bool> failed{false};
  std::string first_error;
  std::mutex error_mu;
  ParallelFor(entries.size(), threads, [&](size_t i) {
    if (failed) return;
    const ChunkEntry& e = entries[i];
    std::byte* target = out + dst[i];
    thread_local std::vector<std::byte> scratch;
    const std::byte* planes[kMaxWidth];
    std::string error;
    const std::byte* src = container.data() + table + e.offset;
    // Decoded planes go to `target` directly when there is one plane, else to scratch.
    if (e.width > 1 && scratch.size() < e.raw_size) scratch.resize(e.raw_size);
    size_t plane_start = 0;
    for (uint32_t j = 0; j < e.width && error.empty(); ++j) {
      const size_t bytes = PlaneBytes(e.raw_size, e.width, j);
      std::byte* into = e.width == 1 ? target : scratch.data() + plane_start;
      if (e.zstd_mask & (1u << j)) {
        const size_t n = ZSTD_decompressDCtx(ThreadDCtx(), into, bytes, src, e.plane_size[j]);
        if (ZSTD_isError(n) || n != bytes) {
          error = "chunk " + std::to_string(i) + " does not decompress (" +
                  (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong size") + ")";
        }
        planes[j] = into;
      } else if (e.plane_size[j] != bytes) {
        error = "raw plane of chunk " + std::to_string(i) + " has the wrong size";
      } else if (e.width == 1) {
        std::memcpy(target, src, bytes);
      } else {
        planes[j] = src;  // interleave straight from the container
      }
      src += e.plane_size[j];
      plane_start += bytes;
    }
    if (error.empty() && e.width > 1) Interleave(planes, target, e.raw_size, e.width);
    if (error.empty() && XXH3_64bits(target, e.raw_size) != e.xxh64) {
      error = "chunk " + std::to_string(i) + " checksum mismatch";
    }
    if (!error.empty()) {
      std::lock_guard lock(error_mu);
      if (first_error.empty()) first_error = error;
      failed = true;
    }
  });
  if (failed) return bad(first_error);
  return Status::OK();
}

}  // namespace layercache
