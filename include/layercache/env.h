// Env: the one seam between the cache and the file system, in the manner of
// LevelDB's Env. Every file the library opens, reads, writes, locks, renames
// or removes (entry files, the index's pre-creation, lock files, the Hub's
// revision records, model refs and configs, settings.json, checkpoint and
// safetensors reads) goes through the Env of LayerCacheOptions::env
// (Env::Default(), the real POSIX one, when that is null), so that a test or
// an embedding application can observe the cache's I/O or inject faults
// (ENOSPC, EIO, short reads and writes, lock failures) through the public
// LayerCache. SQLite does its own I/O: the index and metrics databases are
// opened through the SQLite VFS that Env::sqlite_vfs() names (see there).
//
// Writing an Env: derive from EnvWrapper and override what you want to see
// or change; everything else goes to the wrapped Env. All Env methods must be
// thread-safe; a file object is used by one thread at a time, except
// RandomAccessFile::Read/ReadDirect/Populate/CachedPages, which the parallel
// entry reader calls from several threads at once on one file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "layercache/layer.h"
#include "layercache/status.h"

namespace layercache {

// A file open for reading. The entry reader (src/disk/entry_reader.h) takes
// the cheapest way for each part of an entry (LayerCacheOptions::
// disk_read_mode): Read (through the page cache), ReadDirect (O_DIRECT) or a
// mapping (MapPrivate, its pages read in by Populate); CachedPages tells it
// what is in the page cache. The optional methods have defaults that report
// "not available", and the reader then falls back to Read.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads exactly `n` bytes at `offset` into `dst`; a short file is an error.
  virtual Status Read(uint64_t offset, size_t n, std::byte* dst) = 0;
  virtual uint64_t size() const = 0;
  // Identity of the open file (inode) to compare with Env::Stat().
  virtual uint64_t inode() const = 0;
  // Reads bytes [offset, offset + n) bypassing the page cache (O_DIRECT):
  // offset, n and dst must be multiples of 4096. Bytes past the end of the
  // file are left untouched; returns how many bytes were read (fewer than n
  // only at the end of the file). kUnsupported where the file system has no
  // O_DIRECT (the reader then uses Read); any other error fails the read.
  virtual Result<uint64_t> ReadDirect(uint64_t offset, uint64_t n, std::byte* dst) {
    (void)offset, (void)n, (void)dst;
    return Status::Unsupported("direct reads are not available");
  }
  // Whether bytes [offset, offset + n) are all in the page cache (offset a
  // multiple of 4096). False when it cannot tell.
  virtual bool IsResident(uint64_t offset, uint64_t n) {
    (void)offset, (void)n;
    return false;
  }
  // When bytes [offset, offset + n) are all in the page cache, maps them
  // read-only (no copy) and returns true with the mapping in `*out`; offset
  // must be a multiple of 4096. False when they are not all resident.
  virtual bool MapIfResident(uint64_t offset, uint64_t n, AlignedBuffer* out) {
    (void)offset, (void)n, (void)out;
    return false;
  }
  // How many of the pages overlapping [offset, offset + n) are in the page
  // cache; -1 when it cannot tell. Cheap (no mapping is made where the kernel
  // has cachestat(2)).
  virtual int64_t CachedPages(uint64_t offset, uint64_t n) {
    (void)offset, (void)n;
    return -1;
  }
  // Maps [offset, offset + n) privately (offset a multiple of 4096): reads see
  // the file's pages without a copy, a write makes a private copy of its page
  // and never reaches the file. False when it cannot map (the reader then
  // reads instead). The bytes are checksummed like any others.
  virtual bool MapPrivate(uint64_t offset, uint64_t n, AlignedBuffer* out) {
    (void)offset, (void)n, (void)out;
    return false;
  }
  // Brings bytes [offset, offset + n) of `mapping` (made by this file's
  // MapPrivate; offset from its start) into memory, reading from the file
  // what is not in the page cache, without a copy (MADV_POPULATE_READ):
  // this is how a large entry that is not cached is read into its mapping.
  // kUnsupported where the kernel cannot (the reader then reads into a
  // buffer instead); an error when the device fails or the range lies past
  // the end of the file.
  virtual Status Populate(const AlignedBuffer& mapping, uint64_t offset, uint64_t n) {
    (void)mapping, (void)offset, (void)n;
    return Status::Unsupported("populating a mapping is not available");
  }
};

// A new file being written (Env::CreateNew).
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Append(std::span<const std::byte> data) = 0;
  // Makes the data written so far durable (fdatasync).
  virtual Status Sync() = 0;
  virtual Status Close() = 0;
};

struct FileStat {
  uint64_t size = 0;
  uint64_t inode = 0;
  bool is_dir = false;
  int64_t mtime_ns = 0;
};

// A held byte-range lock (Env::LockFile); destroying it releases the lock.
class FileLockHandle {
 public:
  virtual ~FileLockHandle() = default;
};

class Env {
 public:
  virtual ~Env() = default;
  // The real POSIX Env; lives for the whole process.
  static Env* Default();

  // Errors are Status values: kNotFound for a missing file, kNoSpace for
  // ENOSPC/EDQUOT, kIOError otherwise, each with a message naming the path.
  virtual Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) = 0;
  // Creates a new file (fails if it exists) with mode 0666 & ~umask (the
  // umask decides: 022 gives 0644; 002 lets a group share a cache).
  virtual Result<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // Removing a file that does not exist is NotFound.
  virtual Status Remove(const std::string& path) = 0;
  virtual Status RemoveDir(const std::string& path) = 0;
  // fsync of a directory: makes creations, renames and removals in it durable.
  virtual Status SyncDir(const std::string& path) = 0;
  // mkdir -p, mode 0777 & ~umask.
  virtual Status CreateDirs(const std::string& path) = 0;
  // Names in `dir` (not "." or ".."); NotFound if `dir` does not exist.
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  virtual Result<FileStat> Stat(const std::string& path) = 0;
  // chmod: sets the permission bits (mode & 07777) of `path`.
  virtual Status SetPermissions(const std::string& path, uint32_t mode) = 0;
  // Takes the exclusive lock on bytes [offset, offset + length) of `path`
  // (length 0: to the end of the file, however long it grows), creating the
  // file (0666 & ~umask) if `create`. The lock must exclude other processes
  // AND every other lock taken through this call in this process (the cache
  // uses it between its own threads: POSIX open-file-description locks).
  // `wait`: blocks until the lock is held. Not `wait`: returns a null handle
  // at once when someone else holds it.
  virtual Result<std::unique_ptr<FileLockHandle>> LockFile(const std::string& path, uint64_t offset,
                                                           uint64_t length, bool wait,
                                                           bool create) = 0;
  // The name of a registered SQLite VFS (sqlite3_vfs_register) through which
  // the index (index.sqlite, its WAL and shared memory) and metrics.sqlite
  // are opened; null (the default) is SQLite's default VFS. SQLite reads,
  // writes, locks and syncs its files itself, through its VFS: an Env that
  // must see that I/O registers a VFS (which may forward to the default one)
  // and returns its name here. The database files are created through
  // CreateNew first.
  virtual const char* sqlite_vfs() const { return nullptr; }
};

// An Env that forwards every call to `target` (which must outlive it):
// derive from it and override only what you need.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }

  Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) override {
    return target_->OpenForRead(path);
  }
  Result<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) override {
    return target_->CreateNew(path);
  }
  Status Rename(const std::string& from, const std::string& to) override {
    return target_->Rename(from, to);
  }
  Status Remove(const std::string& path) override { return target_->Remove(path); }
  Status RemoveDir(const std::string& path) override { return target_->RemoveDir(path); }
  Status SyncDir(const std::string& path) override { return target_->SyncDir(path); }
  Status CreateDirs(const std::string& path) override { return target_->CreateDirs(path); }
  Result<std::vector<std::string>> ListDir(const std::string& dir) override {
    return target_->ListDir(dir);
  }
  Result<FileStat> Stat(const std::string& path) override { return target_->Stat(path); }
  Status SetPermissions(const std::string& path, uint32_t mode) override {
    return target_->SetPermissions(path, mode);
  }
  Result<std::unique_ptr<FileLockHandle>> LockFile(const std::string& path, uint64_t offset,
                                                   uint64_t length, bool wait,
                                                   bool create) override {
    return target_->LockFile(path, offset, length, wait, create);
  }
  const char* sqlite_vfs() const override { return target_->sqlite_vfs(); }

 private:
  Env* target_;
};

}  // namespace layercache
