// Index: the disk tier's SQLite table of entries (WAL mode, shared by every
// process that opens the cache_dir). It is an accelerator that can always be
// rebuilt from the entry files, never the only truth.
//
// Not internally synchronised for multi-statement work: DiskTier serialises
// its use with a mutex and wraps related statements in Begin()/Commit().
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/env.h"
#include "layercache/key.h"
#include "layercache/status.h"

namespace layercache {

struct IndexRow {
  std::string digest;  // LayerKey::Digest(), also the file name stem
  LayerKey key;
  uint64_t size = 0;        // file bytes
  uint64_t data_bytes = 0;  // tensor bytes
  int64_t created_ns = 0;
  int64_t last_access_ns = 0;
  std::string checksum_algorithm;
  std::string checksum;
};

struct IndexTotals {
  uint64_t entries = 0;
  uint64_t file_bytes = 0;
  uint64_t data_bytes = 0;
};

class Index {
 public:
  // Opens or creates the index at `path` (":memory:" for a private, in-memory
  // one). Fails with kCorruption when the file is not a usable database.
  // `network_fs`: the folder is on a network file system (io/network_fs.h):
  // rollback-journal mode instead of WAL.
  // The file is created through `env` (null: Env::Default()) and opened
  // through its SQLite VFS (Env::sqlite_vfs()).
  static Result<std::unique_ptr<Index>> Open(const std::string& path, bool network_fs = false,
                                             Env* env = nullptr);
  ~Index();

  Status Begin();  // BEGIN IMMEDIATE (waits for other writers)
  Status Commit();
  void Rollback();

  Status Upsert(const IndexRow& row);
  // Sets last_access_ns; no error when the row is absent.
  Status Touch(const std::string& digest, int64_t now_ns);
  Status Delete(const std::string& digest);
  Result<std::optional<IndexRow>> Get(const std::string& digest);
  // All rows, most recently used first.
  Result<std::vector<IndexRow>> All();
  // Rows of `model_id` (and `layer_index`, if given); all rows when no model.
  Result<std::vector<IndexRow>> Match(const std::optional<std::string>& model_id,
                                      const std::optional<int64_t>& layer_index);
  // Up to `limit` least recently used rows, skipping `exclude_digest`.
  Result<std::vector<IndexRow>> Oldest(size_t limit, const std::string& exclude_digest);
  // Up to `limit` most recently used rows, skipping `exclude_digest`.
  Result<std::vector<IndexRow>> Newest(size_t limit, const std::string& exclude_digest);
  Result<IndexTotals> Totals();
  // Space promised to writers that are writing an entry now (keyed by the
  // entry's digest; a reservation whose key lock nobody holds is stale).
  Status Reserve(const std::string& digest, uint64_t size);
  Status Unreserve(const std::string& digest);
  Result<std::vector<std::pair<std::string, uint64_t>>> Reservations();
  // VACUUM and a WAL checkpoint; failure (another process busy) is harmless.
  Status Compact();

 private:
  explicit Index(sqlite3* db) : db_(db) {}
  Status Exec(const char* sql);
  Result<std::vector<IndexRow>> Query(const std::string& sql,
                                      const std::function<void(sqlite3_stmt*)>& bind);
  Status Error(const char* what) const;

  sqlite3* db_;
};

}  // namespace layercache
