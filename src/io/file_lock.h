// FileLock: an exclusive byte-range lock on a file, taken through an Env
// (Env::LockFile: POSIX open-file-description locks in the default Env, which
// exclude other threads of this process as well as other processes), held
// until the object is destroyed or released.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "io/env.h"
#include "layercache/status.h"

namespace layercache {

class FileLock {
 public:
  FileLock() = default;
  FileLock(FileLock&&) noexcept = default;
  FileLock& operator=(FileLock&&) noexcept = default;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock() = default;

  // Blocks until the exclusive lock on bytes [offset, offset + length) of
  // `path` is held (length 0: to the end of the file, however long it grows).
  // Creates the file if `create`.
  static Result<FileLock> Lock(Env* env, const std::string& path, uint64_t offset, uint64_t length,
                               bool create = true);
  // As Lock, but returns nullopt at once when someone else holds it.
  static Result<std::optional<FileLock>> TryLock(Env* env, const std::string& path, uint64_t offset,
                                                 uint64_t length, bool create = true);

  bool held() const { return handle_ != nullptr; }
  void Release() { handle_.reset(); }

 private:
  explicit FileLock(std::unique_ptr<FileLockHandle> handle) : handle_(std::move(handle)) {}
  std::unique_ptr<FileLockHandle> handle_;
};

}  // namespace layercache
