// DiskTier: the warm tier. One self-describing safetensors file per entry
// (entries/<2 hex>/<key digest>.safetensors), an SQLite index, LRU eviction
// under a byte budget, checksums verified on every read.
//
// Writes are crash-safe: a temp file in tmp/ is written and fsynced, renamed
// into place, the directory fsynced, and only then is the index row
// published. A per-key lock (an OFD lock on a byte of the `locks` file) is
// held while a key is written or removed, so several processes can share the
// directory; readers take no lock (a replaced or removed file stays readable
// through an open descriptor). Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "disk/entry_codec.h"
#include "disk/index.h"
#include "disk/invalidation_epochs.h"
#include "io/env.h"
#include "io/file_lock.h"
#include "layercache/layer.h"
#include "layercache/maintenance.h"
#include "layercache/options.h"
#include "tier/eviction_advisor.h"
#include "tier/tier.h"
#include "util/executor.h"

namespace layercache {

struct DiskTierOptions {
  std::string cache_dir;
  uint64_t capacity_bytes = 0;
  ChecksumAlgorithm algorithm = ChecksumAlgorithm::kXXH3_128;
  // false: a private directory under cache_dir/ephemeral with an in-memory
  // index, removed when the tier closes.
  bool persist_index = true;
  // Open without changing anything: no lock, temp or index file is created,
  // the index is built in memory from the entry files (a snapshot: entries
  // added later are still read by name), reads serve hits and report misses,
  // and whatever would write (put, invalidate, optimize) fails with a clear
  // error. Chosen automatically when cache_dir exists but this user cannot
  // write to it (a shared cache, read-only for some users).
  bool read_only = false;
  int compression_level = 0;  // 0: entries stored as plain safetensors; 1-9: compressed
  EvictionPolicy eviction_policy = EvictionPolicy::kScanResistant;
  DiskReadMode read_mode = DiskReadMode::kAuto;
  Env* env = nullptr;  // nullptr: Env::Default()
  // The pool its chunk reads, copies and hashing run on; null:
  // Executor::Default(). Must outlive the tier.
  Executor* executor = nullptr;
};

class DiskTier : public Tier {
 public:
  static Result<std::unique_ptr<DiskTier>> Open(const DiskTierOptions& options);
  ~DiskTier() override;

  // ---- Tier ----
  const char* name() const override { return "disk"; }
  Result<LayerPtr> Get(const LayerKeyRef& key) override { return Get(key.ToKey()); }
  bool Contains(const LayerKey& key) override;
  // Put(), under the key's lock when `lease` holds it (from Acquire).
  Status Insert(const LayerKey& key, const LayerPtr& layer, std::unique_ptr<TierLease>* lease,
                Evicted* evicted) override;
  // Takes the key's cross-process lock (waiting for another process's
  // load), then looks again: that process may have stored the layer.
  Result<Claim> Acquire(const LayerKey& key) override;
  // The key's lock if free (TryLock).
  Result<std::optional<std::unique_ptr<TierLease>>> TryLease(const LayerKey& key) override;
  std::optional<uint64_t> SharedEpoch(const LayerKey& key) override { return Epoch(key); }
  // WriteBack() below, under the lease's lock; without an epoch, or without
  // the lock, nothing is written.
  Status WriteBack(const LayerKey& key, const LayerPtr& layer, std::optional<uint64_t> epoch,
                   std::unique_ptr<TierLease>* lease, bool* written) override;
  Result<size_t> Invalidate(const std::optional<std::string>& model_id,
                            const std::optional<int64_t>& layer_index) override;
  Result<bool> Remove(const LayerKey& key) override { return RemoveKey(key); }
  Status Clear() override;
  void AddStats(CacheStats* stats, uint64_t hits) override;

  // The layer; NotFound on a miss; Corruption when the entry was bad (it has
  // been removed and counted).
  Result<LayerPtr> Get(const LayerKey& key);
  // Writes (or replaces) the entry for `key` and evicts LRU entries beyond the
  // budget. `held` is the key's lock when the caller already holds it.
  Status Put(const LayerKey& key, const LayerPtr& layer, const FileLock* held = nullptr);
  // The cross-process lock of one key (blocks until held).
  Result<FileLock> LockKey(const LayerKey& key);
  // The same without waiting: empty when another writer holds it.
  Result<std::optional<FileLock>> TryLockKey(const LayerKey& key) {
    return TryLockDigest(key.Digest());
  }

  // The invalidation epoch of `key` (disk/invalidation_epochs.h): take it
  // before reading or putting a layer that is kept outside this tier; while it
  // has not moved, no process has invalidated or replaced the key since.
  uint64_t Epoch(const LayerKey& key) const { return epochs_->Of(key); }
  // Writes back a layer evicted from a tier above, taken when the key's epoch
  // was `epoch`, if the key is not on disk and no process has invalidated or
  // replaced it since; `held` is the key's lock. *written says whether it was
  // written. An invalidation under way in any process makes it skip (it does
  // not wait). Atomic with every invalidation: one that matched the cache's
  // rows before this commits waits for it and removes what it wrote.
  Status WriteBack(const LayerKey& key, const LayerPtr& layer, uint64_t epoch, const FileLock& held,
                   bool* written);

  // Removes the entry of exactly `key` (all four fields); false when absent.
  Result<bool> RemoveKey(const LayerKey& key);
  Result<std::vector<CorruptEntry>> Verify();
  Result<OptimizeReport> Optimize();
  Result<std::vector<IndexRow>> List();
  // Entries, file bytes and logical (tensor) bytes across every process
  // using the directory.
  Result<IndexTotals> Totals();
  bool read_only() const { return read_only_; }
  bool network_fs() const { return network_fs_; }

  std::string EntryPath(const std::string& digest) const;
  const std::string& root() const { return root_; }
  uint64_t capacity() const { return capacity_; }

  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  uint64_t checksum_failures() const { return checksum_failures_.load(std::memory_order_relaxed); }
  uint64_t bytes_read() const { return bytes_read_.load(std::memory_order_relaxed); }
  uint64_t bytes_written() const { return bytes_written_.load(std::memory_order_relaxed); }

 private:
  DiskTier(const DiskTierOptions& options, std::string root);

  Status OpenIndex();
  // Reopens the index if another process replaced the file (rebuilt it).
  // Call with index_mu_ held.
  void RefreshIndexLocked();
  // Reads and verifies the entry file at `path`; `expect` (if any) must match
  // its key. Returns the layer and its file's inode.
  struct ReadResult {
    LayerPtr layer;
    EntryHeader header;
    uint64_t inode = 0;
    uint64_t size = 0;
  };
  IndexRow RowOf(const std::string& path, const std::string& digest, const ReadResult& read);
  Result<ReadResult> ReadEntry(const std::string& path, const std::string& digest,
                               bool verify_checksum);
  Status Reconcile(OptimizeReport* report);
  // Evicts LRU rows until the total plus `incoming` fits (skipping `keep` and
  // keys that are locked by writers). Call with index_mu_ held, inside a transaction;
  // the files to unlink are appended to `doomed` with their locks.
  Status CollectEvictions(const std::string& keep, uint64_t incoming,
                          std::vector<std::pair<std::string, FileLock>>* doomed, uint64_t* evicted,
                          bool* fits);
  // Bytes committed if `incoming` more were written for `keep`: indexed
  // files (less keep's old version) plus live reservations of other writers.
  // Drops stale reservations. Call with index_mu_ held, inside a transaction.
  Result<uint64_t> Committed(const std::string& keep, uint64_t incoming);
  // Evicts (LRU) until `size` more bytes for `digest` fit, waiting for other
  // writers if they hold the room, and records the reservation. Under MRU
  // advice it evicts nothing: *admitted is false when the entry does not fit.
  Status ReserveSpace(const std::string& digest, uint64_t size, bool* admitted);
  Status EnforceBudget(uint64_t* evicted);
  // Removes the row and file of `digest`; the key lock must be held.
  Status RemoveLocked(const std::string& digest);
  void SyncRemovals(const std::vector<std::pair<std::string, FileLock>>& doomed);
  Result<std::optional<FileLock>> TryLockDigest(const std::string& digest);
  Result<FileLock> LockDigest(const std::string& digest);
  Result<std::vector<std::string>> ListEntryFiles();  // digests of files in entries/

  Env* env_;
  Executor* executor_;
  std::string cache_dir_;
  std::string root_;
  uint64_t capacity_;
  ChecksumAlgorithm algorithm_;
  bool persist_index_;
  bool read_only_ = false;
  bool network_fs_ = false;  // index in rollback-journal mode (io/network_fs.h)
  Status LoadReadOnly();
  Status ReadOnlyError(const std::string& what) const;
  int compression_level_;
  DiskReadMode read_mode_;
  EvictionAdvisor advisor_;
  std::optional<FileLock> owner_lock_;  // ephemeral roots only

  std::unique_ptr<InvalidationEpochs> epochs_;

  std::mutex index_mu_;
  std::unique_ptr<Index> index_;
  uint64_t index_inode_ = 0;  // of the file index_ was opened from

  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> checksum_failures_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<uint64_t> bytes_written_{0};
};

}  // namespace layercache
