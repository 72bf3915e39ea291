// Disk entries as a user sees them: the listing of list_entries(), the
// inspection of an entry file (`layercache inspect`), and the metadata keys
// that entries reserve for themselves.
//
// An entry is a safetensors file whose __metadata__ carries the key, the
// checksum and the format fields under keys starting with "layercache."
// (docs/FORMAT.md). A layer given to cache_layer() or returned by a loader
// must not use that prefix (Status::InvalidArgument); a file exported from an
// entry can be cached again after StripReservedMetadata().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "layercache/checksum.h"
#include "layercache/key.h"
#include "layercache/layer.h"
#include "layercache/safetensors.h"
#include "layercache/status.h"

namespace layercache {

inline constexpr const char* kReservedMetadataPrefix = "layercache.";

// Whether `metadata` uses a key reserved for entries ("layercache.*").
bool HasReservedMetadata(const Metadata& metadata);
// `metadata` without the reserved keys.
Metadata StripReservedMetadata(const Metadata& metadata);

// One disk entry, for listings (`layercache ls`, LayerCache::list_entries()).
struct EntryInfo {
  LayerKey key;
  uint64_t size_bytes = 0;     // bytes on disk (the whole file)
  uint64_t data_bytes = 0;     // tensor bytes
  int64_t last_access_ns = 0;  // wall clock, nanoseconds since the epoch
  int64_t created_ns = 0;
  std::string checksum_algorithm;
  std::string checksum;
  bool in_memory = false;  // also held by this process's memory tier
  std::string path;
};

// What an entry file's header says about it.
struct EntryFileInfo {
  LayerKey key;
  ChecksumAlgorithm checksum_algorithm = ChecksumAlgorithm::kXXH3_128;
  std::string checksum;
  int64_t created_ns = 0;
  Metadata user_metadata;      // the layer's own metadata (reserved keys removed)
  std::string compression;     // "" when stored as is, else the container's name
  uint64_t logical_bytes = 0;  // tensor bytes of the layer (compressed entries)
};

// The entry fields of a parsed safetensors header (ReadSafetensorsHeader()).
// Status::Corruption when the file is not an entry or a field is missing or
// malformed; `what` names the file in errors. Checks the header only, not
// the checksum (LayerCache::verify_cache_integrity() does that).
Result<EntryFileInfo> InspectEntryHeader(const SafetensorsHeader& header, std::string_view what);

}  // namespace layercache
