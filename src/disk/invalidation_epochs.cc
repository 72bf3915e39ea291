#include "disk/invalidation_epochs.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace layercache {
namespace {

constexpr size_t kSlots = 1 + InvalidationEpochs::kModelSlots + InvalidationEpochs::kKeySlots;
constexpr size_t kBytes = kSlots * sizeof(uint64_t);

Status Errno(const std::string& what, const std::string& path) {
  return Status::IOError(what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

Result<std::unique_ptr<InvalidationEpochs>> InvalidationEpochs::Open(const std::string& path,
                                                                     bool read_only) {
  auto private_counters = [] {
    void* p = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return std::unique_ptr<InvalidationEpochs>(
        new InvalidationEpochs(static_cast<uint64_t*>(p), kBytes, false, true));
  };
  if (path.empty()) return private_counters();
  const int fd =
      ::open(path.c_str(), read_only ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CREAT | O_CLOEXEC,
             0666);  // the umask decides, as for the locks file
  if (fd < 0) {
    if (read_only && errno == ENOENT) return private_counters();  // no writer yet
    return Errno("cannot open", path);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Status s = Errno("cannot stat", path);
    ::close(fd);
    return s;
  }
  if (static_cast<size_t>(st.st_size) < kBytes) {
    if (read_only) {  // a file this version did not write: do not trust it
      ::close(fd);
      return private_counters();
    }
    // Every process extends it to the same size; new bytes are zeros.
    if (::ftruncate(fd, static_cast<off_t>(kBytes)) != 0) {
      Status s = Errno("cannot size", path);
      ::close(fd);
      return s;
    }
  }
  void* p =
      ::mmap(nullptr, kBytes, read_only ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return Errno("cannot map", path);
  return std::unique_ptr<InvalidationEpochs>(
      new InvalidationEpochs(static_cast<uint64_t*>(p), kBytes, true, !read_only));
}

InvalidationEpochs::~InvalidationEpochs() {
  if (slots_ != nullptr && slots_ != MAP_FAILED) ::munmap(slots_, bytes_);
}

size_t InvalidationEpochs::ModelSlot(std::string_view model_id) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a: the same in every process and build
  for (unsigned char c : model_id) h = (h ^ c) * 1099511628211ull;
  return 1 + h % kModelSlots;
}

size_t InvalidationEpochs::KeySlot(std::string_view digest) {
  uint64_t h = 0;
  for (size_t i = 0; i < digest.size() && i < 8; ++i) {
    const char c = digest[i];
    const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 0;
    h = h * 16 + static_cast<uint64_t>(v);
  }
  return 1 + kModelSlots + h % kKeySlots;
}

uint64_t InvalidationEpochs::Load(size_t i) const {
  return std::atomic_ref<uint64_t>(slots_[i]).load(std::memory_order_seq_cst);
}

void InvalidationEpochs::Bump(size_t i) {
  if (!writable_) return;
  std::atomic_ref<uint64_t>(slots_[i]).fetch_add(1, std::memory_order_seq_cst);
}

uint64_t InvalidationEpochs::Of(std::string_view model_id, std::string_view digest) const {
  return Load(0) + Load(ModelSlot(model_id)) + Load(KeySlot(digest));
}

void InvalidationEpochs::BumpAll() { Bump(0); }
void InvalidationEpochs::BumpModel(std::string_view model_id) { Bump(ModelSlot(model_id)); }
void InvalidationEpochs::BumpKey(std::string_view digest) { Bump(KeySlot(digest)); }

}  // namespace layercache
