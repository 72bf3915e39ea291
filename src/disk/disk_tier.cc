#include "disk/disk_tier.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <set>
#include <thread>
#include <unordered_set>

#include "disk/entry_open.h"
#include "disk/entry_reader.h"
#include "format/safetensors_io.h"
#include "io/network_fs.h"
#include "util/logging.h"
#include "util/parallel.h"
#include "util/path.h"

namespace layercache {
namespace {

constexpr const char* kEntriesDir = "entries";
constexpr const char* kTmpDir = "tmp";
constexpr const char* kLocksFile = "locks";
constexpr const char* kIndexFile = "index.sqlite";
constexpr const char* kEphemeralDir = "ephemeral";
constexpr const char* kOwnerLock = "owner.lock";
constexpr const char* kEpochsFile = "epochs";
constexpr const char* kEntrySuffix = ".safetensors";
// Byte 0 of the locks file serialises reconciliation; key locks live above.
constexpr uint64_t kMaintenanceLockOffset = 0;
// Above the key locks (offsets below 2^60 + 1): the write-back guard, 64
// bytes. A write-back holds one of them (chosen by its digest) while it checks
// the key's epoch and commits; an invalidation holds all 64 while it matches
// and removes entries, so that no write-back commits in between (a
// cross-process reader-writer lock made of exclusive byte locks).
constexpr uint64_t kWriteBackGuardOffset = uint64_t{1} << 61;
constexpr uint64_t kWriteBackGuardBytes = 64;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IsDigest(std::string_view s) {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

uint64_t LockOffsetFor(const std::string& digest) {
  // 60 bits of the digest, shifted past the maintenance byte.
  return 1 + (std::stoull(digest.substr(0, 15), nullptr, 16));
}

Status RemoveTree(Env* env, const std::string& path) {
  auto st = env->Stat(path);
  if (!st.ok()) return st.status().IsNotFound() ? Status::OK() : st.status();
  if (!st->is_dir) return env->Remove(path);
  auto names = env->ListDir(path);
  if (!names.ok()) return names.status();
  for (const std::string& n : *names) {
    if (Status s = RemoveTree(env, JoinPath(path, n)); !s.ok()) return s;
  }
  return env->RemoveDir(path);
}

}  // namespace

// ---- opening ---------------------------------------------------------------

DiskTier::DiskTier(const DiskTierOptions& options, std::string root)
    : env_(options.env != nullptr ? options.env : Env::Default()),
      executor_(options.executor != nullptr ? options.executor : &Executor::Default()),
      cache_dir_(options.cache_dir),
      root_(std::move(root)),
      capacity_(options.capacity_bytes),
      algorithm_(options.algorithm),
      persist_index_(options.persist_index),
      compression_level_(options.compression_level),
      read_mode_(options.read_mode),
      advisor_(options.eviction_policy, options.capacity_bytes) {}

Result<std::unique_ptr<DiskTier>> DiskTier::Open(const DiskTierOptions& options) {
  Env* env = options.env != nullptr ? options.env : Env::Default();
  const char* cdir = options.cache_dir.c_str();
  if (options.read_only || (::access(cdir, F_OK) == 0 && ::access(cdir, W_OK) != 0)) {
    if (::access(cdir, R_OK | X_OK) != 0)
      return ErrnoStatus("cannot use cache_dir " + options.cache_dir, errno);
    std::unique_ptr<DiskTier> tier(new DiskTier(options, options.cache_dir));
    tier->read_only_ = true;
    auto epochs = InvalidationEpochs::Open(JoinPath(options.cache_dir, kEpochsFile), true);
    if (!epochs.ok()) return epochs.status();
    tier->epochs_ = std::move(*epochs);
    auto index = Index::Open(":memory:");
    if (!index.ok()) return index.status();
    tier->index_ = std::move(*index);
    if (Status s = tier->LoadReadOnly(); !s.ok()) return s;
    LogInfo("cache_dir " + options.cache_dir + " is not writable by this user: opened read-only");
    return tier;
  }
  if (Status s = env->CreateDirs(options.cache_dir); !s.ok()) {
    return s.WithContext("cannot use cache_dir " + options.cache_dir);
  }
  std::string root = options.cache_dir;
  std::optional<FileLock> owner;
  if (!options.persist_index) {
    // Remove the private directories of instances that are gone (their owner
    // lock is free), then make our own.
    const std::string eph = JoinPath(options.cache_dir, kEphemeralDir);
    if (Status s = env->CreateDirs(eph); !s.ok()) return s;
    auto names = env->ListDir(eph);
    if (names.ok()) {
      for (const std::string& n : *names) {
        const std::string dir = JoinPath(eph, n);
        auto lock = FileLock::TryLock(env, JoinPath(dir, kOwnerLock), 0, 0, /*create=*/false);
        if (lock.ok() && lock->has_value()) {
          if (Status s = RemoveTree(env, dir); !s.ok())
            LogWarn("cannot remove stale " + dir + ": " + s.message());
        } else if (!lock.ok() && lock.status().IsNotFound()) {
          (void)RemoveTree(env, dir);  // no owner lock at all: a crash before it was made
        }
      }
    }
    root = JoinPath(eph, std::to_string(::getpid()) + "-" + RandomHex(6));
    if (Status s = env->CreateDirs(root); !s.ok()) return s;
    auto lock = FileLock::Lock(env, JoinPath(root, kOwnerLock), 0, 0);
    if (!lock.ok()) return lock.status();
    owner = std::move(*lock);
  }
  std::unique_ptr<DiskTier> tier(new DiskTier(options, root));
  tier->owner_lock_ = std::move(owner);
  for (const char* sub : {kEntriesDir, kTmpDir}) {
    if (Status s = env->CreateDirs(JoinPath(root, sub)); !s.ok()) return s;
  }
  auto epochs = InvalidationEpochs::Open(
      options.persist_index ? JoinPath(root, kEpochsFile) : std::string(), false);
  if (!epochs.ok()) return epochs.status();
  tier->epochs_ = std::move(*epochs);
  auto maintenance = FileLock::Lock(env, JoinPath(root, kLocksFile), kMaintenanceLockOffset, 1);
  if (!maintenance.ok()) return maintenance.status();
  const FileSystemInfo fs = DescribeFileSystem(root);
  tier->network_fs_ = fs.network;
  if (fs.network) {
    LogInfo("cache_dir " + options.cache_dir + " is on a network file system (" + fs.name +
            "): the index runs in rollback-journal mode, not WAL");
  }
  if (Status s = tier->OpenIndex(); !s.ok()) return s;
  OptimizeReport report;
  if (Status s = tier->Reconcile(&report); !s.ok())
    return s.WithContext("cannot reconcile " + root);
  if (report.temp_files_removed + report.orphans_adopted + report.orphans_removed +
          report.rows_dropped >
      0) {
    LogInfo("reconciled " + root + ": removed " + std::to_string(report.temp_files_removed) +
            " temp files, adopted " + std::to_string(report.orphans_adopted) +
            " entries, removed " + std::to_string(report.orphans_removed) +
            " unreadable files, dropped " + std::to_string(report.rows_dropped) +
            " stale index rows");
  }
  return tier;
}

DiskTier::~DiskTier() {
  if (!persist_index_ && !read_only_) {
    index_.reset();
    if (Status s = RemoveTree(env_, root_); !s.ok())
      LogWarn("cannot remove " + root_ + ": " + s.message());
  }
}

Status DiskTier::OpenIndex() {
  if (!persist_index_) {
    auto index = Index::Open(":memory:");
    if (!index.ok()) return index.status();
    index_ = std::move(*index);
    return Status::OK();
  }
  const std::string path = JoinPath(root_, kIndexFile);
  auto index = Index::Open(path, network_fs_, env_);
  if (index.ok()) {
    index_ = std::move(*index);
    auto st = env_->Stat(path);
    index_inode_ = st.ok() ? st->inode : 0;
    return Status::OK();
  }
  if (!index.status().IsCorruption()) return index.status();
  // The index is an accelerator: rebuild it from the entry files.
  LogWarn(index.status().message() + "; rebuilding it from the entry files");
  for (const char* suffix : {"", "-wal", "-shm"}) {
    Status s = env_->Remove(path + suffix);
    if (!s.ok() && !s.IsNotFound()) return s;
  }
  auto fresh = Index::Open(path, network_fs_, env_);
  if (!fresh.ok()) return fresh.status();
  index_ = std::move(*fresh);
  auto st = env_->Stat(path);
  index_inode_ = st.ok() ? st->inode : 0;
  return Status::OK();
}

void DiskTier::RefreshIndexLocked() {
  if (!persist_index_ || read_only_) return;
  // Another process that found the index corrupt replaced it with a rebuilt
  // one: this connection still has the old, unlinked file. Reopen.
  const std::string path = JoinPath(root_, kIndexFile);
  auto st = env_->Stat(path);
  if (!st.ok() || st->inode == index_inode_) return;
  auto index = Index::Open(path, network_fs_, env_);
  if (!index.ok()) {
    LogWarn("the index was replaced but cannot be reopened yet: " + index.status().message());
    return;
  }
  index_ = std::move(*index);
  index_inode_ = st->inode;
  LogInfo("the index " + path + " was rebuilt by another process; reopened it");
}

// ---- paths and locks -------------------------------------------------------

std::string DiskTier::EntryPath(const std::string& digest) const {
  return JoinPath(JoinPath(JoinPath(root_, kEntriesDir), digest.substr(0, 2)),
                  digest + kEntrySuffix);
}

Result<FileLock> DiskTier::LockKey(const LayerKey& key) { return LockDigest(key.Digest()); }

Result<FileLock> DiskTier::LockDigest(const std::string& digest) {
  return FileLock::Lock(env_, JoinPath(root_, kLocksFile), LockOffsetFor(digest), 1);
}

Result<std::optional<FileLock>> DiskTier::TryLockDigest(const std::string& digest) {
  return FileLock::TryLock(env_, JoinPath(root_, kLocksFile), LockOffsetFor(digest), 1);
}

// ---- reading ---------------------------------------------------------------

// The index row describing an entry file that was read (its header and size).
IndexRow DiskTier::RowOf(const std::string& path, const std::string& digest,
                         const ReadResult& read) {
  auto st = env_->Stat(path);
  IndexRow row;
  row.digest = digest;
  row.key = read.header.key;
  row.size = read.size;
  row.data_bytes = read.layer->nbytes();
  row.created_ns = read.header.created_ns;
  row.last_access_ns = st.ok() ? st->mtime_ns : read.header.created_ns;
  row.checksum_algorithm = ChecksumAlgorithmName(read.header.algorithm);
  row.checksum = read.header.checksum;
  return row;
}

Result<DiskTier::ReadResult> DiskTier::ReadEntry(const std::string& path, const std::string& digest,
                                                 bool verify_checksum) {
  Executor::Scope scope(executor_);  // chunk reads and hashing run on this tier's executor
  auto opened = OpenEntry(env_, path, digest, verify_checksum);
  if (!opened.ok()) return opened.status();
  RandomAccessFile& f = *opened->file;
  SafetensorsHeader& header = opened->header;
  EntryHeader& entry = opened->entry;
  ReadResult out;
  out.inode = f.inode();
  out.size = f.size();
  AlignedBuffer buffer;
  if (Status s = ReadEntryData(f, header.data_offset, header.data_bytes, read_mode_,
                               opened->digest.get(), &buffer);
      !s.ok()) {
    return s.WithContext(path);
  }
  if (verify_checksum) {
    const std::string actual = opened->digest->FinalHex();
    if (actual != entry.checksum) {
      return Status::Corruption(path + ": " + ChecksumAlgorithmName(entry.algorithm) +
                                " checksum mismatch (recorded " + entry.checksum + ", computed " +
                                actual + ")");
    }
  }
  auto layer = DecodeEntryLayer(entry, std::move(header.tensors), std::move(buffer), path);
  if (!layer.ok()) return layer.status();
  out.layer = std::move(*layer);
  out.header = std::move(entry);
  return out;
}

Result<LayerPtr> DiskTier::Get(const LayerKey& key) {
  const std::string digest = key.Digest();
  const std::string path = EntryPath(digest);
  auto read = ReadEntry(path, digest, /*verify_checksum=*/true);
  if (!read.ok()) {
    if (read.status().IsNotFound()) return read.status();
    if (!read.status().IsCorruption()) return read.status();  // an I/O error: the entry may be fine
    checksum_failures_.fetch_add(1, std::memory_order_relaxed);
    if (read_only_) {
      LogWarn("corrupt cache entry for " + key.ToString() +
              " (read-only: not removed): " + read.status().message());
      return read.status();
    }
    LogWarn("corrupt cache entry for " + key.ToString() + " removed: " + read.status().message());
    // Remove it unless a writer replaced the file meanwhile.
    auto lock = LockDigest(digest);
    if (lock.ok()) {
      auto st = env_->Stat(path);
      auto file = env_->OpenForRead(path);
      bool same = st.ok() && file.ok();
      if (same) {
        // Re-read the header: if it still fails, the file is the bad one.
        auto again = ReadEntry(path, digest, /*verify_checksum=*/true);
        same = !again.ok() && again.status().IsCorruption();
      }
      if (same || (!st.ok() && st.status().IsNotFound())) (void)RemoveLocked(digest);
    }
    return read.status();
  }
  if (read->header.key != key) {
    return Status::NotFound(key.ToString() + ": digest collision with " +
                            read->header.key.ToString());
  }
  bytes_read_.fetch_add(read->size, std::memory_order_relaxed);
  advisor_.Access(std::hash<std::string>()(digest), read->size);
  {
    std::lock_guard lock(index_mu_);
    RefreshIndexLocked();
    Status s = index_->Touch(digest, NowNs());
    if (!s.ok()) LogWarn("cannot record access to " + key.ToString() + ": " + s.message());
  }
  return std::move(read->layer);
}

bool DiskTier::Contains(const LayerKey& key) { return env_->Stat(EntryPath(key.Digest())).ok(); }

// ---- the Tier interface ------------------------------------------------------

namespace {
struct DiskLease : TierLease {
  explicit DiskLease(FileLock l) : lock(std::move(l)) {}
  FileLock lock;
};
}  // namespace

Status DiskTier::Insert(const LayerKey& key, const LayerPtr& layer,
                        std::unique_ptr<TierLease>* lease, Evicted* /*evicted*/) {
  const auto* held = lease ? dynamic_cast<const DiskLease*>(lease->get()) : nullptr;
  return Put(key, layer, held ? &held->lock : nullptr);
}

Result<Tier::Claim> DiskTier::Acquire(const LayerKey& key) {
  auto lock = LockKey(key);
  if (!lock.ok()) return lock.status();
  Claim claim;
  claim.lease = std::make_unique<DiskLease>(std::move(*lock));
  auto read = Get(key);
  if (read.ok()) claim.filled = std::move(*read);
  return claim;
}

Result<std::optional<std::unique_ptr<TierLease>>> DiskTier::TryLease(const LayerKey& key) {
  auto lock = TryLockDigest(key.Digest());
  if (!lock.ok()) return lock.status();
  if (!lock->has_value()) return std::optional<std::unique_ptr<TierLease>>();
  return std::optional<std::unique_ptr<TierLease>>(std::make_unique<DiskLease>(std::move(**lock)));
}

Status DiskTier::WriteBack(const LayerKey& key, const LayerPtr& layer,
                           std::optional<uint64_t> epoch, std::unique_ptr<TierLease>* lease,
                           bool* written) {
  *written = false;
  const auto* held = lease ? dynamic_cast<const DiskLease*>(lease->get()) : nullptr;
  if (held == nullptr || !epoch) return Status::OK();
  return WriteBack(key, layer, *epoch, held->lock, written);
}

void DiskTier::AddStats(CacheStats* stats, uint64_t hits) {
  auto totals = Totals();
  if (totals.ok()) {
    stats->disk_cache_entries += totals->entries;
    stats->disk_cache_bytes += totals->file_bytes;
    stats->disk_cache_logical_bytes += totals->data_bytes;
  } else {
    LogWarn("cannot read disk totals: " + totals.status().message());
  }
  stats->max_disk_cache_bytes += capacity();
  stats->disk_evictions += evictions();
  stats->checksum_failures += checksum_failures();
  stats->bytes_read_from_disk += bytes_read();
  stats->bytes_written_to_disk += bytes_written();
  stats->disk_hits += hits;
}

// ---- writing ---------------------------------------------------------------

Status DiskTier::Put(const LayerKey& key, const LayerPtr& layer, const FileLock* held) {
  Executor::Scope scope(executor_);  // hashing and compression run on this tier's executor
  if (read_only_) return ReadOnlyError("cannot cache " + key.ToString());
  const std::string digest = key.Digest();
  const std::string context = "cannot cache " + key.ToString() + " on disk";
  const int64_t now = NowNs();
  const EncodedEntry encoded = EncodeEntry(key, layer, algorithm_, now, compression_level_);
  const std::string& header = encoded.header;
  const Layer& stored = *encoded.stored;
  const uint64_t file_size = 8 + header.size() + stored.nbytes();
  if (file_size > capacity_) {
    return Status::NoSpace(context + ": the entry needs " + std::to_string(file_size) +
                           " bytes but max_cache_size_gb allows " + std::to_string(capacity_));
  }
  advisor_.Access(std::hash<std::string>()(digest), file_size);
  std::optional<FileLock> own_lock;
  if (held == nullptr) {
    auto lock = LockDigest(digest);
    if (!lock.ok()) return lock.status().WithContext(context);
    own_lock = std::move(*lock);
  }
  // Make room before writing: what is indexed plus what writers are writing
  // stays within the budget, so the disk never holds more than the budget
  // plus the old version of an entry being replaced.
  bool admitted = true;
  Status s = ReserveSpace(digest, file_size, &admitted);
  if (!s.ok()) return s.WithContext(context);
  if (!admitted) {
    // Under a sweep (MRU advised) the newcomer is the best victim: it is not
    // written, and an older version of it must not be served in its place.
    Status r = RemoveLocked(digest);
    if (!r.ok() && !r.IsNotFound()) return r.WithContext(context);
    evictions_.fetch_add(1, std::memory_order_relaxed);
    return Status::OK();
  }
  const std::string final_path = EntryPath(digest);
  const std::string dir = DirName(final_path);
  const std::string tmp = JoinPath(JoinPath(root_, kTmpDir), digest + "." + RandomHex(8) + ".tmp");
  s = env_->CreateDirs(dir);
  if (s.ok()) {
    auto file = env_->CreateNew(tmp);
    if (!file.ok()) {
      s = file.status();
    } else {
      const auto prefix = EncodeHeaderLength(header.size());
      s = (*file)->Append(prefix);
      if (s.ok()) s = (*file)->Append(std::as_bytes(std::span<const char>(header)));
      if (s.ok()) s = (*file)->Append({stored.data(), static_cast<size_t>(stored.nbytes())});
      if (s.ok()) s = (*file)->Sync();
      Status c = (*file)->Close();
      if (s.ok()) s = c;
      if (s.ok()) s = env_->Rename(tmp, final_path);
      if (!s.ok()) (void)env_->Remove(tmp);
    }
  }
  if (s.ok()) s = env_->SyncDir(dir);
  if (!s.ok()) {
    std::lock_guard lock(index_mu_);
    RefreshIndexLocked();
    (void)index_->Unreserve(digest);  // else it goes stale with our lock
    return s.WithContext(context);
  }

  IndexRow row;
  row.digest = digest;
  row.key = key;
  row.size = file_size;
  row.data_bytes = layer->nbytes();
  row.created_ns = now;
  row.last_access_ns = now;
  row.checksum_algorithm = ChecksumAlgorithmName(algorithm_);
  row.checksum = encoded.checksum;
  {
    std::lock_guard lock(index_mu_);
    RefreshIndexLocked();
    s = index_->Begin();
    if (s.ok()) s = index_->Unreserve(digest);
    if (s.ok()) s = index_->Upsert(row);
    if (s.ok()) {
      s = index_->Commit();
    } else {
      index_->Rollback();
    }
  }
  // The new version is visible: copies of the key held elsewhere are stale.
  epochs_->BumpKey(digest);
  // The file is in place but unindexed: reconciliation adopts it later, and
  // reads find it by name meanwhile. Report the failure all the same.
  if (!s.ok()) return s.WithContext(context);
  bytes_written_.fetch_add(file_size, std::memory_order_relaxed);
  // A writer that could not make room in time wrote anyway: once our own key
  // is unlocked, the last writer to finish brings the cache within budget.
  own_lock.reset();
  Result<IndexTotals> totals = [&] {
    std::lock_guard lock(index_mu_);
    RefreshIndexLocked();
    return index_->Totals();
  }();
  if (totals.ok() && totals->file_bytes > capacity_) {
    uint64_t more = 0;
    (void)EnforceBudget(&more);
  }
  return Status::OK();
}

Status DiskTier::ReserveSpace(const std::string& digest, uint64_t size, bool* admitted) {
  using Clock = std::chrono::steady_clock;
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  auto delay = std::chrono::milliseconds(1);
  for (;;) {
    std::vector<std::pair<std::string, FileLock>> doomed;
    uint64_t evicted = 0;
    bool fits = false;
    bool reserved = false;
    Status s;
    {
      std::lock_guard lock(index_mu_);
      RefreshIndexLocked();
      s = index_->Begin();
      if (s.ok() && advisor_.PreferMru()) {
        auto used = Committed(digest, size);
        if (!used.ok()) s = used.status();
        *admitted = used.ok() && *used <= capacity_;
        fits = true;  // not admitted is an answer, not a wait
      } else if (s.ok()) {
        s = CollectEvictions(digest, size, &doomed, &evicted, &fits);
      }
      if (s.ok() && *admitted && (fits || Clock::now() >= give_up)) {
        if (!fits) LogWarn("disk tier: no room within the budget after 10 s; writing anyway");
        s = index_->Reserve(digest, size);
        reserved = s.ok();
      }
      // Unlink before committing, so that nobody counts the freed bytes
      // while the files still occupy them.
      for (auto& [victim, victim_lock] : doomed) {
        Status r = env_->Remove(EntryPath(victim));
        if (!r.ok() && !r.IsNotFound()) LogWarn("cannot remove evicted entry: " + r.message());
      }
      SyncRemovals(doomed);
      if (s.ok()) {
        s = index_->Commit();
      } else {
        index_->Rollback();
      }
    }
    doomed.clear();
    if (!s.ok()) return s;
    evictions_.fetch_add(evicted, std::memory_order_relaxed);
    if (reserved || !*admitted) return Status::OK();
    // Everything left is being written or read by others: they finish soon.
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(50));
  }
}

Result<uint64_t> DiskTier::Committed(const std::string& keep, uint64_t incoming) {
  auto totals = index_->Totals();
  if (!totals.ok()) return totals.status();
  uint64_t total = totals->file_bytes + incoming;
  if (!keep.empty()) {
    // The old version of the entry being written is replaced by the rename.
    auto old = index_->Get(keep);
    if (!old.ok()) return old.status();
    if (old->has_value()) total -= std::min(total, (*old)->size);
  }
  auto reservations = index_->Reservations();
  if (!reservations.ok()) return reservations.status();
  for (const auto& [digest, bytes] : *reservations) {
    if (digest == keep) continue;
    auto lock = TryLockDigest(digest);
    if (!lock.ok()) return lock.status();
    if (lock->has_value()) {  // its writer is gone (killed mid-write)
      if (Status s = index_->Unreserve(digest); !s.ok()) return s;
      continue;
    }
    total += bytes;
  }
  return total;
}

Status DiskTier::CollectEvictions(const std::string& keep, uint64_t incoming,
                                  std::vector<std::pair<std::string, FileLock>>* doomed,
                                  uint64_t* evicted, bool* fits) {
  auto committed = Committed(keep, incoming);
  if (!committed.ok()) return committed.status();
  uint64_t total = *committed;
  std::unordered_set<std::string> skipped;
  while (total > capacity_) {
    auto oldest = advisor_.PreferMru() ? index_->Newest(64 + skipped.size(), keep)
                                       : index_->Oldest(64 + skipped.size(), keep);
    if (!oldest.ok()) return oldest.status();
    bool progress = false;
    for (const IndexRow& row : *oldest) {
      if (total <= capacity_) break;
      if (skipped.count(row.digest) != 0) continue;
      auto lock = TryLockDigest(row.digest);
      if (!lock.ok()) return lock.status();
      if (!lock->has_value()) {  // a writer is busy with this key: leave it
        skipped.insert(row.digest);
        continue;
      }
      if (Status s = index_->Delete(row.digest); !s.ok()) return s;
      total -= std::min(total, row.size);
      ++*evicted;
      progress = true;
      doomed->emplace_back(row.digest, std::move(**lock));
    }
    if (!progress) break;  // everything left is locked or kept
  }
  if (fits != nullptr) *fits = total <= capacity_;
  return Status::OK();
}

Status DiskTier::EnforceBudget(uint64_t* evicted) {
  if (read_only_) return ReadOnlyError("cannot evict");
  std::vector<std::pair<std::string, FileLock>> doomed;
  Status s;
  {
    std::lock_guard lock(index_mu_);
    RefreshIndexLocked();
    s = index_->Begin();
    if (s.ok()) s = CollectEvictions("", 0, &doomed, evicted, nullptr);
    if (s.ok()) {
      for (auto& [victim, victim_lock] : doomed) (void)env_->Remove(EntryPath(victim));
      SyncRemovals(doomed);
      s = index_->Commit();
    } else {
      index_->Rollback();
    }
  }
  doomed.clear();
  evictions_.fetch_add(*evicted, std::memory_order_relaxed);
  return s;
}

// Removals are made durable (an fsync of each directory) before the index
// forgets the entries: else a power loss could bring back an entry that was
// evicted and then invalidated, serving a version the caller had removed
// (tests/power_loss_test.cc). Done under the index's write lock, so that no
// invalidation in another process completes in between.
void DiskTier::SyncRemovals(const std::vector<std::pair<std::string, FileLock>>& doomed) {
  std::set<std::string> dirs;
  for (const auto& [victim, victim_lock] : doomed) dirs.insert(DirName(EntryPath(victim)));
  for (const std::string& d : dirs) {
    Status s = env_->SyncDir(d);
    if (!s.ok() && !s.IsNotFound()) LogWarn("cannot fsync after evicting: " + s.message());
  }
}

Status DiskTier::RemoveLocked(const std::string& digest) {
  // The file goes first: while it exists, its bytes stay counted. Its
  // removal is durable before the index forgets it, and before an
  // invalidation reports it gone (a power loss must not bring it back).
  const std::string path = EntryPath(digest);
  Status s = env_->Remove(path);
  if (!s.ok() && !s.IsNotFound()) return s;
  if (s.ok()) {
    if (Status d = env_->SyncDir(DirName(path)); !d.ok()) return d;
  }
  std::lock_guard lock(index_mu_);
  RefreshIndexLocked();
  return index_->Delete(digest);
}

// ---- removal ---------------------------------------------------------------

Status DiskTier::WriteBack(const LayerKey& key, const LayerPtr& layer, uint64_t epoch,
                           const FileLock& held, bool* written) {
  *written = false;
  if (read_only_) return Status::OK();
  const std::string digest = key.Digest();
  auto guard =
      FileLock::TryLock(env_, JoinPath(root_, kLocksFile),
                        kWriteBackGuardOffset + LockOffsetFor(digest) % kWriteBackGuardBytes, 1);
  if (!guard.ok()) return guard.status();
  if (!guard->has_value()) return Status::OK();  // an invalidation is under way
  if (epochs_->Of(key.model_id, digest) != epoch || Contains(key)) return Status::OK();
  Status s = Put(key, layer, &held);
  *written = s.ok();
  return s;
}

Result<size_t> DiskTier::Invalidate(const std::optional<std::string>& model_id,
                                    const std::optional<int64_t>& layer_index) {
  if (read_only_) return ReadOnlyError("cannot invalidate");
  // No write-back commits while the rows are matched and removed: one under
  // way finishes first (its row is matched), later ones see the new epoch.
  auto guard = FileLock::Lock(env_, JoinPath(root_, kLocksFile), kWriteBackGuardOffset,
                              kWriteBackGuardBytes);
  if (!guard.ok()) return guard.status();
  Result<std::vector<IndexRow>> rows = [&] {
    std::lock_guard lock(index_mu_);
    RefreshIndexLocked();
    return index_->Match(model_id, layer_index);
  }();
  // However it ends, copies of these keys held elsewhere are stale now.
  struct Bump {
    InvalidationEpochs* epochs;
    const std::optional<std::string>& model;
    ~Bump() { model ? epochs->BumpModel(*model) : epochs->BumpAll(); }
  } bump{epochs_.get(), model_id};
  if (!rows.ok()) return rows.status();
  size_t removed = 0;
  for (const IndexRow& row : *rows) {
    auto lock = LockDigest(row.digest);
    if (!lock.ok()) return lock.status();
    if (Status s = RemoveLocked(row.digest); !s.ok()) return s;
    ++removed;
  }
  return removed;
}

Result<bool> DiskTier::RemoveKey(const LayerKey& key) {
  const std::string digest = key.Digest();
  auto lock = LockDigest(digest);
  if (!lock.ok()) return lock.status();
  const bool present = env_->Stat(EntryPath(digest)).ok();
  Status s = RemoveLocked(digest);
  epochs_->BumpKey(digest);  // under the key's lock: a write-back after it sees the bump
  if (!s.ok()) return s;
  return present;
}

Status DiskTier::Clear() {
  if (read_only_) return ReadOnlyError("cannot clear");
  auto removed = Invalidate(std::nullopt, std::nullopt);
  if (!removed.ok()) return removed.status();
  // Files the index does not know (being adopted, or left by a crash).
  auto digests = ListEntryFiles();
  if (!digests.ok()) return digests.status();
  for (const std::string& d : *digests) {
    auto lock = TryLockDigest(d);
    if (lock.ok() && lock->has_value()) (void)RemoveLocked(d);
  }
  return Status::OK();
}

Result<std::vector<std::string>> DiskTier::ListEntryFiles() {
  const std::string entries = JoinPath(root_, kEntriesDir);
  auto subdirs = env_->ListDir(entries);
  if (!subdirs.ok()) return subdirs.status();
  std::vector<std::string> out;
  for (const std::string& sub : *subdirs) {
    auto names = env_->ListDir(JoinPath(entries, sub));
    if (!names.ok()) continue;  // a stray file, or removed meanwhile
    for (const std::string& n : *names) out.push_back(sub + "/" + n);
  }
  return out;
}

// ---- integrity ---------------------------------------------------------------

Result<std::vector<CorruptEntry>> DiskTier::Verify() {
  Result<std::vector<IndexRow>> rows = [&] {
    std::lock_guard lock(index_mu_);
    RefreshIndexLocked();
    return index_->All();
  }();
  if (!rows.ok()) return rows.status();
  std::vector<CorruptEntry> corrupt;
  std::unordered_set<std::string> indexed;
  for (const IndexRow& row : *rows) {
    indexed.insert(row.digest);
    const std::string path = EntryPath(row.digest);
    auto read = ReadEntry(path, row.digest, /*verify_checksum=*/true);
    if (read.ok()) continue;
    if (read.status().IsNotFound()) {
      // Removed since we listed it, or missing: only the latter is a fault.
      // A remover unlinks the file before the row under the key lock, so
      // once we hold that lock a row without its file is a real fault.
      // Read-only, the index is a snapshot: its writer removed the file.
      if (read_only_) continue;
      auto key_lock = LockDigest(row.digest);
      if (!key_lock.ok()) return key_lock.status();
      std::lock_guard lock(index_mu_);
      RefreshIndexLocked();
      auto still = index_->Get(row.digest);
      if (!still.ok() || !still->has_value()) continue;
      corrupt.push_back({row.key, path, "the index lists it but the file is missing"});
      continue;
    }
    corrupt.push_back({row.key, path, read.status().message()});
  }
  auto files = ListEntryFiles();
  if (!files.ok()) return files.status();
  for (const std::string& rel : *files) {
    const std::string name = rel.substr(rel.find('/') + 1);
    const std::string digest = name.substr(0, std::min<size_t>(32, name.size()));
    if (indexed.count(digest) != 0 && name == digest + kEntrySuffix) continue;
    const std::string path = JoinPath(JoinPath(root_, kEntriesDir), rel);
    if (!IsDigest(digest) || name != digest + kEntrySuffix) {
      corrupt.push_back({LayerKey{}, path, "unexpected file in the entries folder"});
      continue;
    }
    auto read = ReadEntry(path, digest, /*verify_checksum=*/true);
    if (!read.ok() && !read.status().IsNotFound()) {
      corrupt.push_back({LayerKey{}, path, read.status().message()});
    }
  }
  return corrupt;
}

Status DiskTier::ReadOnlyError(const std::string& what) const {
  return Status::IOError(what + ": the cache " + cache_dir_ +
                         " is read-only for this user (it can be listed, verified and read; "
                         "ask its owner for write access, e.g. a group with umask 002)");
}

// Read-only: the in-memory index holds every entry whose header reads well;
// nothing is locked, removed or written.
Status DiskTier::LoadReadOnly() {
  auto files = ListEntryFiles();
  if (!files.ok() && files.status().IsNotFound()) return Status::OK();  // nothing cached yet
  if (!files.ok()) return files.status();
  for (const std::string& rel : *files) {
    const std::string name = rel.substr(rel.find('/') + 1);
    const std::string digest = name.substr(0, std::min<size_t>(32, name.size()));
    if (!IsDigest(digest) || name != digest + kEntrySuffix) continue;
    const std::string path = JoinPath(JoinPath(root_, kEntriesDir), rel);
    auto read = ReadEntry(path, digest, /*verify_checksum=*/false);
    if (!read.ok()) continue;  // unreadable: verify reports it
    const IndexRow row = RowOf(path, digest, *read);
    std::lock_guard lock(index_mu_);
    if (Status s = index_->Upsert(row); !s.ok()) return s;
  }
  return Status::OK();
}

Status DiskTier::Reconcile(OptimizeReport* report) {
  // 1. Temp files whose writer is gone (writers hold the key lock while their
  //    temp file exists, so a free key lock means a dead writer).
  const std::string tmpdir = JoinPath(root_, kTmpDir);
  auto temps = env_->ListDir(tmpdir);
  if (!temps.ok()) return temps.status();
  for (const std::string& t : *temps) {
    const std::string digest = t.substr(0, 32);
    std::optional<FileLock> lock;
    if (IsDigest(digest)) {
      auto l = TryLockDigest(digest);
      if (!l.ok()) return l.status();
      if (!l->has_value()) continue;  // its writer is alive
      lock = std::move(**l);
    }
    Status s = env_->Remove(JoinPath(tmpdir, t));
    if (s.ok()) ++report->temp_files_removed;
  }
  // 2. Rows and files.
  Result<std::vector<IndexRow>> rows = [&] {
    std::lock_guard lock(index_mu_);
    RefreshIndexLocked();
    return index_->All();
  }();
  if (!rows.ok()) return rows.status();
  std::unordered_set<std::string> indexed;
  for (const IndexRow& row : *rows) indexed.insert(row.digest);
  auto files = ListEntryFiles();
  if (!files.ok()) return files.status();
  std::unordered_set<std::string> present;
  for (const std::string& rel : *files) {
    const std::string name = rel.substr(rel.find('/') + 1);
    const std::string digest = name.substr(0, std::min<size_t>(32, name.size()));
    const std::string path = JoinPath(JoinPath(root_, kEntriesDir), rel);
    if (!IsDigest(digest) || name != digest + kEntrySuffix ||
        rel.substr(0, 2) != digest.substr(0, 2)) {
      if (env_->Remove(path).ok()) ++report->orphans_removed;
      continue;
    }
    present.insert(digest);
    if (indexed.count(digest) != 0) continue;
    // An orphan: adopt it if its header checks out (data is verified on read).
    auto lock = TryLockDigest(digest);
    if (!lock.ok()) return lock.status();
    if (!lock->has_value()) continue;  // being written right now
    auto read = ReadEntry(path, digest, /*verify_checksum=*/false);
    if (!read.ok()) {
      if (read.status().IsNotFound()) continue;
      LogWarn("removing unreadable cache file: " + read.status().message());
      if (env_->Remove(path).ok()) ++report->orphans_removed;
      continue;
    }
    const IndexRow row = RowOf(path, digest, *read);
    std::lock_guard index_lock(index_mu_);
    RefreshIndexLocked();
    if (Status s = index_->Upsert(row); !s.ok()) return s;
    ++report->orphans_adopted;
  }
  for (const IndexRow& row : *rows) {
    if (present.count(row.digest) != 0) continue;
    auto lock = TryLockDigest(row.digest);
    if (!lock.ok()) return lock.status();
    if (!lock->has_value()) continue;
    if (env_->Stat(EntryPath(row.digest)).ok()) continue;  // written meanwhile
    std::lock_guard index_lock(index_mu_);
    RefreshIndexLocked();
    if (Status s = index_->Delete(row.digest); !s.ok()) return s;
    ++report->rows_dropped;
  }
  return Status::OK();
}

Result<OptimizeReport> DiskTier::Optimize() {
  if (read_only_) return ReadOnlyError("cannot optimize");
  OptimizeReport report;
  auto maintenance = FileLock::Lock(env_, JoinPath(root_, kLocksFile), kMaintenanceLockOffset, 1);
  if (!maintenance.ok()) return maintenance.status();
  auto corrupt = Verify();
  if (!corrupt.ok()) return corrupt.status();
  for (const CorruptEntry& c : *corrupt) {
    const std::string name = c.path.substr(c.path.find_last_of('/') + 1);
    const std::string digest = name.substr(0, std::min<size_t>(32, name.size()));
    if (IsDigest(digest)) {
      auto lock = LockDigest(digest);
      if (!lock.ok()) return lock.status();
      auto again = ReadEntry(c.path, digest, /*verify_checksum=*/true);
      if (again.ok()) continue;  // replaced by a good copy meanwhile
      if (Status s = RemoveLocked(digest); !s.ok()) return s;
    } else {
      (void)env_->Remove(c.path);
    }
    ++report.corrupted_removed;
  }
  if (Status s = Reconcile(&report); !s.ok()) return s;
  // The budget may have shrunk, or adopted files pushed past it.
  if (Status s = EnforceBudget(&report.evicted); !s.ok()) return s;
  {
    std::lock_guard lock(index_mu_);
    RefreshIndexLocked();
    if (Status s = index_->Compact(); !s.ok()) LogInfo("index compaction skipped: " + s.message());
  }
  return report;
}

Result<std::vector<IndexRow>> DiskTier::List() {
  std::lock_guard lock(index_mu_);
  RefreshIndexLocked();
  return index_->All();
}

Result<IndexTotals> DiskTier::Totals() {
  std::lock_guard lock(index_mu_);
  RefreshIndexLocked();
  return index_->Totals();
}

}  // namespace layercache
