// Env: every file-system call the cache makes goes through this interface, in
// the manner of LevelDB's Env, so that tests can inject faults (ENOSPC, EIO,
// short writes, a crash at the Nth operation) without touching product code.
// PosixEnv (Env::Default()) is the real implementation. All methods are
// thread-safe; file objects are used by one thread at a time.
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

class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads exactly `n` bytes at `offset` into `dst`; a short file is an error.
  virtual Status Read(uint64_t offset, size_t n, std::byte* dst) = 0;
  virtual uint64_t size() const = 0;
  // Identity of the open file (device, inode) to compare with Stat().
  virtual uint64_t inode() const = 0;
  // Reads bytes [offset, offset + n) bypassing the page cache (O_DIRECT):
  // offset, n and dst must be multiples of 4096. Bytes past the end of the
  // file are left untouched; returns how many bytes were read. Unsupported
  // (kUnsupported) where the file system has no O_DIRECT.
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
  // and never reaches the file. False when it cannot map.
  virtual bool MapPrivate(uint64_t offset, uint64_t n, AlignedBuffer* out) {
    (void)offset, (void)n, (void)out;
    return false;
  }
};

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Append(std::span<const std::byte> data) = 0;
  virtual Status Sync() = 0;
  virtual Status Close() = 0;
};

struct FileStat {
  uint64_t size = 0;
  uint64_t inode = 0;
  bool is_dir = false;
  int64_t mtime_ns = 0;
};

class Env {
 public:
  virtual ~Env() = default;
  static Env* Default();

  virtual Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) = 0;
  // Creates a new file (fails if it exists) with mode 0666 & ~umask (the
  // umask decides: 022 gives 0644; 002 lets a group share a cache).
  virtual Result<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // Removing a file that does not exist is NotFound.
  virtual Status Remove(const std::string& path) = 0;
  virtual Status RemoveDir(const std::string& path) = 0;
  virtual Status SyncDir(const std::string& path) = 0;
  // mkdir -p, mode 0777 & ~umask.
  virtual Status CreateDirs(const std::string& path) = 0;
  // Names in `dir` (not "." or ".."); NotFound if `dir` does not exist.
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  virtual Result<FileStat> Stat(const std::string& path) = 0;
};

// Reads a whole (small) file into a string.
Result<std::string> ReadFileToString(Env* env, const std::string& path);

// Writes `data` to `path` atomically: a unique temp file beside it, fsync,
// rename, fsync of the directory.
// The pieces are written back to back. `mode` >= 0: the file gets these
// permission bits (e.g. those of the file it replaces) before the rename.
Status WriteFileAtomically(Env* env, const std::string& path,
                           const std::vector<std::span<const std::byte>>& pieces, int mode = -1);

// "message: strerror(errno)" for an errno value, mapping ENOSPC/EDQUOT to
// kNoSpace and ENOENT to kNotFound.
Status ErrnoStatus(const std::string& context, int err);

}  // namespace layercache
