#include "io/file_lock.h"

#include <utility>

namespace layercache {

Result<FileLock> FileLock::Lock(Env* env, const std::string& path, uint64_t offset, uint64_t length,
                                bool create) {
  auto handle = env->LockFile(path, offset, length, /*wait=*/true, create);
  if (!handle.ok()) return handle.status();
  if (*handle == nullptr) return Status::IOError("cannot lock " + path + ": no lock returned");
  return FileLock(std::move(*handle));
}

Result<std::optional<FileLock>> FileLock::TryLock(Env* env, const std::string& path,
                                                  uint64_t offset, uint64_t length, bool create) {
  auto handle = env->LockFile(path, offset, length, /*wait=*/false, create);
  if (!handle.ok()) return handle.status();
  if (*handle == nullptr) return std::optional<FileLock>();
  return std::optional<FileLock>(FileLock(std::move(*handle)));
}

}  // namespace layercache
