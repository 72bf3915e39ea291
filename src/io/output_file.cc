#include "io/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>

#include "util/path.h"

namespace layercache {

Status WriteAllToFd(int fd, const std::vector<std::span<const std::byte>>& pieces,
                    const std::string& what) {
  for (const auto& piece : pieces) {
    const std::byte* p = piece.data();
    size_t left = piece.size();
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("cannot write " + what, errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  return Status::OK();
}

namespace {

Status WriteInPlace(const std::string& path,
                    const std::vector<std::span<const std::byte>>& pieces) {
  // No O_CREAT, no O_TRUNC: the node exists and is not ours to replace.
  const int fd = ::open(path.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open " + path, errno);
  Status s = WriteAllToFd(fd, pieces, path);
  if (::close(fd) != 0 && s.ok()) s = ErrnoStatus("cannot write " + path, errno);
  return s;
}

Status ReplaceRegular(Env* env, const std::string& path, const struct stat* existing,
                      const std::vector<std::span<const std::byte>>& pieces) {
  return WriteFileAtomically(
      env, path, pieces, existing != nullptr ? static_cast<int>(existing->st_mode & 07777) : -1);
}

}  // namespace

Status WriteUserFile(Env* env, const std::string& path,
                     const std::vector<std::span<const std::byte>>& pieces) {
  if (path.empty()) return Status::InvalidArgument("no output path given");
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return ReplaceRegular(env, path, nullptr, pieces);
    return ErrnoStatus("cannot examine " + path, errno);
  }
  if (S_ISLNK(st.st_mode)) {
    char resolved[PATH_MAX];
    if (::realpath(path.c_str(), resolved) == nullptr) {
      return Status::InvalidArgument(path +
                                     " is a symbolic link to a file that does not exist; "
                                     "give the target path instead");
    }
    std::string target = resolved;
    if (::stat(target.c_str(), &st) != 0) return ErrnoStatus("cannot examine " + target, errno);
    if (S_ISREG(st.st_mode)) return ReplaceRegular(env, target, &st, pieces);
    if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) return WriteInPlace(target, pieces);
    return Status::InvalidArgument(path + " links to " + target +
                                   ", which is not a regular file, character device or FIFO");
  }
  if (S_ISREG(st.st_mode)) return ReplaceRegular(env, path, &st, pieces);
  if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) return WriteInPlace(path, pieces);
  if (S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(path + " is a directory; give a file name for the output");
  }
  return Status::InvalidArgument(path +
                                 " is not a regular file, character device or FIFO (a block "
                                 "device or socket is never written)");
}

}  // namespace layercache
