#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "io/env.h"
#include "util/file_backing.h"

namespace layercache {
namespace {

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older kernels answer EINVAL
#endif

constexpr uintptr_t kPageSize = 4096;

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd, uint64_t size, uint64_t inode)
      : path_(std::move(path)), fd_(fd), size_(size), inode_(inode) {}

  Status Read(uint64_t offset, size_t n, std::byte* dst) override {
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, dst + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("cannot read " + path_, errno);
      }
      if (r == 0) {
        return Status::IOError("cannot read " + path_ + ": file ends at byte " +
                               std::to_string(offset + done) + ", expected " +
                               std::to_string(offset + n));
      }
      done += static_cast<size_t>(r);
    }
    return Status::OK();
  }
  uint64_t size() const override { return size_; }
  uint64_t inode() const override { return inode_; }

  Result<uint64_t> ReadDirect(uint64_t offset, uint64_t n, std::byte* dst) override {
    // Several threads read chunks of one file at once: open the O_DIRECT
    // descriptor once. Reopen the same open file (not the path, which may
    // have been replaced since).
    std::call_once(direct_once_, [this] {
      const std::string self = "/proc/self/fd/" + std::to_string(fd_);
      direct_fd_ = ::open(self.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    });
    if (direct_fd_ < 0) return Status::Unsupported("O_DIRECT is not available for " + path_);
    uint64_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(direct_fd_, dst + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL) return Status::Unsupported("O_DIRECT read refused for " + path_);
        return ErrnoStatus("cannot read " + path_, errno);
      }
      if (r == 0) break;  // end of file
      done += static_cast<uint64_t>(r);
    }
    return done;
  }
  // Maps [offset, offset + n) and reports whether every page is resident.
  void* MapAndCheck(uint64_t offset, uint64_t n, bool* resident) {
    const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    *resident = false;
    if (n == 0 || offset % page != 0) return nullptr;
    void* base = ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd_, static_cast<off_t>(offset));
    if (base == MAP_FAILED) return nullptr;
    std::vector<unsigned char> pages((n + page - 1) / page);
    bool all = ::mincore(base, n, pages.data()) == 0;
    for (size_t i = 0; all && i < pages.size(); ++i) all = (pages[i] & 1) != 0;
    *resident = all;
    return base;
  }

  bool IsResident(uint64_t offset, uint64_t n) override {
    bool resident = false;
    void* base = MapAndCheck(offset, n, &resident);
    if (base != nullptr) ::munmap(base, n);
    return resident;
  }

  bool MapIfResident(uint64_t offset, uint64_t n, AlignedBuffer* out) override {
    bool resident = false;
    void* base = MapAndCheck(offset, n, &resident);
    if (base == nullptr) return false;
    if (!resident) {
      ::munmap(base, n);
      return false;
    }
    file_backing::RegisterMapping(base, n, fd_, offset);  // for copy-on-write views
    *out = AlignedBuffer::FromMapping(base, n, static_cast<std::byte*>(base), n);
    return true;
  }

  int64_t CachedPages(uint64_t offset, uint64_t n) override {
    if (n == 0) return 0;
#if defined(__linux__) && defined(__x86_64__)
    // cachestat(2), Linux 6.5: counts without mapping (mincore needs a
    // mapping and a byte per page: ~8 ms for 466 MB against ~0.1 ms).
    struct {
      uint64_t off, len;
    } range{offset, n};
    struct {
      uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
    } stat{};
    constexpr long kCachestat = 451;
    if (!cachestat_missing_.load(std::memory_order_relaxed)) {
      if (::syscall(kCachestat, fd_, &range, &stat, 0) == 0) {
        return static_cast<int64_t>(stat.nr_cache);
      }
      if (errno == ENOSYS) cachestat_missing_.store(true, std::memory_order_relaxed);
    }
#endif
    const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t start = offset / page * page;
    const uint64_t len = offset + n - start;
    void* base = ::mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd_, static_cast<off_t>(start));
    if (base == MAP_FAILED) return -1;
    std::vector<unsigned char> pages((len + page - 1) / page);
    int64_t cached = -1;
    if (::mincore(base, len, pages.data()) == 0) {
      cached = 0;
      for (unsigned char p : pages) cached += p & 1;
    }
    ::munmap(base, len);
    return cached;
  }

  bool MapPrivate(uint64_t offset, uint64_t n, AlignedBuffer* out) override {
    const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    if (n == 0 || offset % page != 0) return false;
    void* base =
        ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd_, static_cast<off_t>(offset));
    if (base == MAP_FAILED) return false;
    file_backing::RegisterMapping(base, n, fd_, offset);  // for copy-on-write views
    *out = AlignedBuffer::FromMapping(base, n, static_cast<std::byte*>(base), n);
    return true;
  }

  Status Populate(const AlignedBuffer& mapping, uint64_t offset, uint64_t n) override {
    const auto addr = reinterpret_cast<uintptr_t>(mapping.data() + offset);
    const uintptr_t start = addr / kPageSize * kPageSize;
    const uintptr_t end = (addr + n + kPageSize - 1) / kPageSize * kPageSize;
    for (;;) {
      if (::madvise(reinterpret_cast<void*>(start), end - start, MADV_POPULATE_READ) == 0) {
        return Status::OK();
      }
      const int err = errno;
      if (err == EINTR || err == EAGAIN) continue;
      if (err == EINVAL || err == ENOSYS) {
        return Status::Unsupported("MADV_POPULATE_READ is not available (Linux 5.14)");
      }
      if (err == EFAULT) return Status::IOError(path_ + " ends before them");
      return ErrnoStatus("cannot read " + path_, err);
    }
  }

  ~PosixRandomAccessFile() override {
    if (direct_fd_ >= 0) ::close(direct_fd_);
    ::close(fd_);
  }

 private:
  std::string path_;
  int fd_;
  uint64_t size_;
  uint64_t inode_;
  std::once_flag direct_once_;
  int direct_fd_ = -1;
  static inline std::atomic<bool> cachestat_missing_{false};
};

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::span<const std::byte> data) override {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t w = ::write(fd_, data.data() + done, data.size() - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("cannot write " + path_, errno);
      }
      done += static_cast<size_t>(w);
    }
    return Status::OK();
  }
  Status Sync() override {
    if (::fdatasync(fd_) != 0) return ErrnoStatus("cannot fsync " + path_, errno);
    return Status::OK();
  }
  Status Close() override {
    if (fd_ < 0) return Status::OK();
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return ErrnoStatus("cannot close " + path_, errno);
    return Status::OK();
  }

 private:
  std::string path_;
  int fd_;
};

// An open-file-description lock: closing the descriptor releases it.
class PosixFileLock final : public FileLockHandle {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }

 private:
  int fd_;
};

// Returns 0 when locked, EAGAIN when busy (not waiting), or another errno.
int SetOfdLock(int fd, uint64_t offset, uint64_t length, bool wait) {
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

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<RandomAccessFile>> OpenForRead(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("cannot open " + path, errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      return ErrnoStatus("cannot stat " + path, err);
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      return Status::IOError("cannot read " + path + ": it is a directory");
    }
    return std::unique_ptr<RandomAccessFile>(std::make_unique<PosixRandomAccessFile>(
        path, fd, static_cast<uint64_t>(st.st_size), static_cast<uint64_t>(st.st_ino)));
  }

  Result<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return ErrnoStatus("cannot create " + path, errno);
    return std::unique_ptr<WritableFile>(std::make_unique<PosixWritableFile>(path, fd));
  }

  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus("cannot rename " + from + " to " + to, errno);
    }
    return Status::OK();
  }

  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoStatus("cannot remove " + path, errno);
    return Status::OK();
  }

  Status RemoveDir(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) return ErrnoStatus("cannot remove directory " + path, errno);
    return Status::OK();
  }

  Status SyncDir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("cannot open directory " + path, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoStatus("cannot fsync directory " + path, err);
    return Status::OK();
  }

  Status CreateDirs(const std::string& path) override {
    if (path.empty()) return Status::InvalidArgument("empty directory path");
    std::string partial;
    size_t pos = 0;
    while (pos != std::string::npos) {
      pos = path.find('/', pos + 1);
      partial = path.substr(0, pos);
      if (partial.empty()) continue;
      if (::mkdir(partial.c_str(), 0777) != 0 && errno != EEXIST) {
        return ErrnoStatus("cannot create directory " + partial, errno);
      }
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("cannot stat " + path, errno);
    if (!S_ISDIR(st.st_mode)) return Status::IOError(path + " exists and is not a directory");
    return Status::OK();
  }

  Result<std::vector<std::string>> ListDir(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return ErrnoStatus("cannot list " + dir, errno);
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(std::move(name));
    }
    ::closedir(d);
    return names;
  }

  Result<FileStat> Stat(const std::string& path) override {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("cannot stat " + path, errno);
    FileStat out;
    out.size = static_cast<uint64_t>(st.st_size);
    out.inode = static_cast<uint64_t>(st.st_ino);
    out.is_dir = S_ISDIR(st.st_mode);
    out.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    return out;
  }

  Status SetPermissions(const std::string& path, uint32_t mode) override {
    if (::chmod(path.c_str(), static_cast<mode_t>(mode & 07777)) != 0) {
      return ErrnoStatus("cannot set the mode of " + path, errno);
    }
    return Status::OK();
  }

  Result<std::unique_ptr<FileLockHandle>> LockFile(const std::string& path, uint64_t offset,
                                                   uint64_t length, bool wait,
                                                   bool create) override {
    // A new open file description per lock: OFD locks then exclude the
    // other threads of this process as well as other processes.
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0666);
    if (fd < 0) return ErrnoStatus("cannot open lock file " + path, errno);
    const int err = SetOfdLock(fd, offset, length, wait);
    if (err != 0) {
      ::close(fd);
      if (err == EAGAIN && !wait) return std::unique_ptr<FileLockHandle>();
      return ErrnoStatus("cannot lock " + path, err);
    }
    return std::unique_ptr<FileLockHandle>(std::make_unique<PosixFileLock>(fd));
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv env;
  return &env;
}

}  // namespace layercache
