#include "io/file_lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "io/env.h"

namespace layercache {
namespace {

Result<int> OpenLockFile(const std::string& path, bool create) {
  int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
  int fd = ::open(path.c_str(), flags, 0666);
  if (fd < 0) return ErrnoStatus("cannot open lock file " + path, errno);
  return fd;
}

// Returns 0 when locked, EAGAIN when busy (non-blocking), or another errno.
int SetLock(int fd, uint64_t offset, uint64_t length, bool wait) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(offset);
  fl.l_len = static_cast<off_t>(length);
  fl.l_pid = 0;
  while (::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) != 0) {
    if (errno == EINTR) continue;
    return errno == EACCES ? EAGAIN : errno;
  }
  return 0;
}

}  // namespace

FileLock::FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

FileLock::~FileLock() { Release(); }

void FileLock::Release() {
  if (fd_ >= 0) {
    ::close(fd_);  // closing the last descriptor of the OFD releases its locks
    fd_ = -1;
  }
}

Result<FileLock> FileLock::Lock(const std::string& path, uint64_t offset, uint64_t length,
                                bool create) {
  auto fd = OpenLockFile(path, create);
  if (!fd.ok()) return fd.status();
  if (int err = SetLock(*fd, offset, length, /*wait=*/true); err != 0) {
    ::close(*fd);
    return ErrnoStatus("cannot lock " + path, err);
  }
  return FileLock(*fd);
}

Result<std::optional<FileLock>> FileLock::TryLock(const std::string& path, uint64_t offset,
                                                  uint64_t length, bool create) {
  auto fd = OpenLockFile(path, create);
  if (!fd.ok()) return fd.status();
  int err = SetLock(*fd, offset, length, /*wait=*/false);
  if (err == EAGAIN) {
    ::close(*fd);
    return std::optional<FileLock>();
  }
  if (err != 0) {
    ::close(*fd);
    return ErrnoStatus("cannot lock " + path, err);
  }
  return std::optional<FileLock>(FileLock(*fd));
}

}  // namespace layercache
