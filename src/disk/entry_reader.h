// The disk tier's read path: how the data section of an entry gets from its
// file into memory, checksummed as it arrives.
//
// The data section is taken in 8 MiB chunks (the XXH3 checksum's chunks), and
// each chunk comes the cheapest way its state allows (DiskReadMode::kAuto,
// the default):
//   - every page of a large entry (16 MiB and more) in the page cache: the
//     file's pages are mapped privately and served as they are (no copy; a
//     write to them copies that page and never reaches the file);
//   - a chunk in the page cache: copied out of a mapping, on every core;
//   - a chunk not in the page cache: read with O_DIRECT in 1 MiB requests,
//     16 in flight, straight into the layer's buffer (a buffered read costs a
//     second copy of the data in fresh page-cache memory and a kernel copy;
//     measured in docs/PERFORMANCE.md).
// Residency is asked per chunk with cachestat(2) (mincore(2) where the kernel
// lacks it). The other modes force one way: kDirect always O_DIRECT, kBuffered
// always through the page cache (cached chunks still copied from a mapping),
// kMapped like kAuto but cold chunks read through the page cache.
#pragma once

#include <cstdint>

#include "disk/entry_codec.h"
#include "io/env.h"
#include "layercache/layer.h"
#include "layercache/options.h"
#include "layercache/status.h"

namespace layercache {

// Entries at least this large are served from a mapping when wholly cached.
inline constexpr uint64_t kEntryMapThreshold = 16u << 20;
// Entries smaller than this are read with one plain read().
inline constexpr uint64_t kEntrySmallRead = 1u << 20;
// A cold chunk is read with O_DIRECT in requests of this size, this many in
// flight (one thread each; measured in docs/PERFORMANCE.md: 16 x 1 MiB
// reached 2-3x the throughput of 4 x 8 MiB on a virtio disk).
inline constexpr uint64_t kDirectRequest = 1u << 20;
inline constexpr unsigned kDirectQueueDepth = 16;
// A large entry not wholly in the page cache (auto and mapped modes) is
// mapped privately and its pages brought in with MADV_POPULATE_READ, in
// requests of this size, kDirectQueueDepth in flight.
inline constexpr uint64_t kPopulateRequest = 2u << 20;

// Bytes of one read by the way they came (for tests and benchmarks).
struct EntryReadReport {
  uint64_t mapped = 0;    // served from a mapping without a copy
  uint64_t copied = 0;    // copied out of the page cache through a mapping
  uint64_t direct = 0;    // read with O_DIRECT
  uint64_t buffered = 0;  // read with read() through the page cache
};

// Reads the data section [base, base + n) of `f` into `*out` (a fresh buffer
// or a mapping), feeding `digest` (if any) as bytes arrive. `base` is the
// entry's data offset (a multiple of 4096 for O_DIRECT to apply).
Status ReadEntryData(RandomAccessFile& f, uint64_t base, uint64_t n, DiskReadMode mode,
                     EntryDigest* digest, AlignedBuffer* out, EntryReadReport* report = nullptr);

}  // namespace layercache
