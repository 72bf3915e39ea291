// What the maintenance calls of LayerCache report:
// verify_cache_integrity() and optimize_cache().
#pragma once

#include <cstdint>
#include <string>

#include "layercache/key.h"

namespace layercache {

// One corrupted or inconsistent disk entry found by verify_cache_integrity().
struct CorruptEntry {
  LayerKey key;        // as recorded in the index or the file (may be partial)
  std::string path;    // the entry file
  std::string reason;  // what is wrong with it
};

// What optimize_cache() did.
struct OptimizeReport {
  uint64_t corrupted_removed = 0;   // entries that failed verification
  uint64_t temp_files_removed = 0;  // temp files left by dead writers
  uint64_t orphans_adopted = 0;     // valid entry files the index lacked
  uint64_t orphans_removed = 0;     // unreadable files in the entries folder
  uint64_t rows_dropped = 0;        // index rows whose file was gone
  uint64_t evicted = 0;             // entries evicted to meet the byte budget
};

}  // namespace layercache
