// Opening a disk-tier entry for reading: the file, its parsed safetensors
// header and entry fields, checked against the digest its name promises, and
// a fresh checksum to feed with its data. Shared by the readers of entry
// files (the disk tier's, the GPU tier's disk -> device path).
#pragma once

#include <memory>
#include <string>

#include "disk/entry_codec.h"
#include "io/env.h"
#include "layercache/safetensors.h"

namespace layercache {

struct OpenedEntry {
  std::unique_ptr<RandomAccessFile> file;
  SafetensorsHeader header;  // tensors, data_offset, data_bytes
  EntryHeader entry;         // key, checksum, metadata, compression
  // Checksum of the entry's content, to be fed with the data section; null
  // unless asked for.
  std::unique_ptr<EntryDigest> digest;
};

// Opens `path`, parses its header and checks that it holds the key of
// `digest`. NotFound when there is no file; Corruption when it is not a
// valid entry for that key.
Result<OpenedEntry> OpenEntry(Env* env, const std::string& path, const std::string& digest,
                              bool verify_checksum);

// Reads [off, off + len) of the data section of `f` (starting at file offset
// `base`) into `dst`. With `*direct` it uses O_DIRECT (base, off and dst
// page-aligned; dst must have room for len rounded up to a page), and clears
// `*direct` for good when the file system has none.
Status ReadEntryChunk(RandomAccessFile& f, uint64_t base, uint64_t off, uint64_t len,
                      std::byte* dst, bool* direct);

// Whether O_DIRECT can be used for a data section at file offset `base` into
// a buffer at `dst` (both page-aligned).
bool DirectReadPossible(uint64_t base, const void* dst);

}  // namespace layercache
