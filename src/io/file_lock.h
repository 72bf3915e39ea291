// FileLock: an open-file-description (OFD) byte-range lock, held until the
// object is destroyed. Unlike classic fcntl locks, OFD locks belong to one
// open() of the file, so they exclude other threads of this process as well as
// other processes; each FileLock opens the file anew for that reason.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "layercache/status.h"

namespace layercache {

class FileLock {
 public:
  FileLock() = default;
  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

  // Blocks until the exclusive lock on bytes [offset, offset + length) of
  // `path` is held (length 0: to the end of the file, however long it grows).
  // Creates the file if `create`.
  static Result<FileLock> Lock(const std::string& path, uint64_t offset, uint64_t length,
                               bool create = true);
  // As Lock, but returns nullopt at once when someone else holds it.
  static Result<std::optional<FileLock>> TryLock(const std::string& path, uint64_t offset,
                                                 uint64_t length, bool create = true);

  bool held() const { return fd_ >= 0; }
  void Release();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace layercache
