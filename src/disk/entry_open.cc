#include "disk/entry_open.h"

#include <cstdint>

#include "format/safetensors_io.h"

namespace layercache {
namespace {
constexpr uint64_t kPage = 4096;
}  // namespace

Result<OpenedEntry> OpenEntry(Env* env, const std::string& path, const std::string& digest,
                              bool verify_checksum) {
  auto file = env->OpenForRead(path);
  if (!file.ok()) return file.status();
  OpenedEntry out;
  out.file = std::move(*file);
  auto header = ReadSafetensorsHeaderFrom(*out.file, path);
  if (!header.ok()) return header.status();
  auto entry = DecodeEntryHeader(*header, path);
  if (!entry.ok()) return entry.status();
  if (entry->key.Digest() != digest) {
    return Status::Corruption(path + ": holds key " + entry->key.ToString() +
                              ", which does not belong under this file name");
  }
  if (verify_checksum) {
    out.digest = std::make_unique<EntryDigest>(
        entry->algorithm,
        EntryDescription(entry->key, header->tensors, entry->user_metadata,
                         EntryCoveredFields(*entry)),
        header->data_bytes);
  }
  out.header = std::move(*header);
  out.entry = std::move(*entry);
  return out;
}

bool DirectReadPossible(uint64_t base, const void* dst) {
  return base % kPage == 0 && reinterpret_cast<uintptr_t>(dst) % kPage == 0;
}

Status ReadEntryChunk(RandomAccessFile& f, uint64_t base, uint64_t off, uint64_t len,
                      std::byte* dst, bool* direct) {
  if (*direct) {
    const uint64_t padded = (len + kPage - 1) / kPage * kPage;
    auto got = f.ReadDirect(base + off, padded, dst);
    if (got.ok()) {
      return *got >= len
                 ? Status::OK()
                 : Status::IOError("file ends at byte " + std::to_string(base + off + *got));
    }
    if (got.status().code() != StatusCode::kUnsupported) return got.status();
    *direct = false;  // no O_DIRECT on this file system: read through the page cache
  }
  return f.Read(base + off, len, dst);
}

}  // namespace layercache
