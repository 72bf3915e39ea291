// The disk tier's entry format: a safetensors file whose __metadata__ carries
// the key and a checksum (see docs/FORMAT.md). The checksum covers a canonical
// description of the entry (key, tensor names, dtypes, shapes, offsets, user
// metadata) followed by the data section, so a flipped byte anywhere that
// matters, header or data, is detected.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "layercache/checksum.h"
#include "layercache/entry.h"
#include "layercache/key.h"
#include "layercache/layer.h"
#include "layercache/safetensors.h"

namespace layercache {

inline constexpr const char* kEntryFormatVersion = "1";
// Entry data starts at a file offset that is a multiple of this, so that
// entries can be read with O_DIRECT.
inline constexpr size_t kEntryDataAlignment = 4096;

struct EntryHeader {
  LayerKey key;
  ChecksumAlgorithm algorithm = ChecksumAlgorithm::kXXH3_128;
  std::string checksum;
  int64_t created_ns = 0;
  Metadata user_metadata;
  // Compressed entries: the container name, the layer's tensor table (JSON
  // list of [name, dtype, shape]) and its logical size.
  std::string compression;
  std::string tensors_json;
  uint64_t logical_bytes = 0;
};

// The checksum of an entry's content, given its tensors in file order.
// `covered` (the compression fields, for compressed entries) is checksummed too.
std::string EntryChecksum(ChecksumAlgorithm algorithm, const LayerKey& key,
                          const std::vector<TensorInfo>& tensors, const Metadata& user_metadata,
                          std::span<const std::byte> data, const std::string& covered = "");

// The canonical description of an entry that its checksum covers first.
std::string EntryDescription(const LayerKey& key, const std::vector<TensorInfo>& tensors,
                             const Metadata& user_metadata, const std::string& covered = "");

// Computes an entry checksum (see docs/FORMAT.md). XXH3-128 checksums are
// taken by chunk: XXH3-128 of the description followed by the XXH3-128 of
// each 8 MiB chunk of the data section, so that chunks can be hashed on
// several threads, in any order. MD5 and SHA-256 run over the description and
// the data in order.
class EntryDigest {
 public:
  static constexpr uint64_t kChunkBytes = 8u << 20;

  EntryDigest(ChecksumAlgorithm algorithm, const std::string& description, uint64_t data_bytes);
  bool chunked() const { return algorithm_ == ChecksumAlgorithm::kXXH3_128; }
  size_t num_chunks() const { return num_chunks_; }
  // Chunked: the bytes of chunk `index` (kChunkBytes, the last one shorter).
  // Threads may add different chunks at once.
  void AddChunk(size_t index, std::span<const std::byte> bytes);
  // Not chunked: the next bytes of the data section, in order.
  void Update(std::span<const std::byte> bytes);
  // Every chunk (or every byte) must have been added.
  std::string FinalHex();

 private:
  ChecksumAlgorithm algorithm_;
  std::string description_;
  size_t num_chunks_;
  std::vector<std::array<std::byte, 16>> chunk_digests_;
  std::unique_ptr<Hasher> sequential_;
};

// The compression fields an entry's checksum covers ("" when uncompressed).
std::string EntryCoveredFields(const EntryHeader& entry);

// An entry ready to be written: the padded header JSON and what goes in the
// data section (the layer itself, or its compressed container).
struct EncodedEntry {
  std::string header;
  LayerPtr stored;
  std::string checksum;
};

// `compression_level` 0 stores the layer as is; 1-9 compresses it.
EncodedEntry EncodeEntry(const LayerKey& key, const LayerPtr& layer, ChecksumAlgorithm algorithm,
                         int64_t created_ns, int compression_level = 0);

// The layer an entry holds, given its decoded header, the tensors of its data
// section and the data (decompressed when the entry is compressed).
Result<LayerPtr> DecodeEntryLayer(const EntryHeader& entry, std::vector<TensorInfo> stored_tensors,
                                  AlignedBuffer data, std::string_view what);

// Extracts the entry fields from a parsed header; Corruption when any is
// missing or malformed. `what` names the file in errors.
Result<EntryHeader> DecodeEntryHeader(const SafetensorsHeader& header, std::string_view what);

}  // namespace layercache
