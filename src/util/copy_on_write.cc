// Memory-file-backed layer buffers and copy-on-write views of layers
// (layercache/copy_on_write.h, util/file_backing.h).
#include "layercache/copy_on_write.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "util/file_backing.h"

namespace layercache {
namespace file_backing {
namespace {

constexpr size_t kGranule = size_t{2} << 20;  // region sizes and offsets: 2 MiB multiples
// Duplicated entry-file descriptors held at most (the rest are copied).
constexpr size_t kMaxEntryFiles = 256;

struct Region {
  size_t length = 0;
  std::shared_ptr<const FileHandle> file;
  uint64_t offset = 0;
  bool in_memory_file = false;  // from Allocate (else a registered entry mapping)
};

struct Pooled {
  void* p;
  std::shared_ptr<const FileHandle> file;
  uint64_t offset;
};

struct State {
  std::mutex mu;
  std::map<uintptr_t, Region> regions;  // by start address
  std::multimap<size_t, Pooled> pool;   // capacity -> a free region, still mapped
  size_t pooled = 0;
  size_t pool_limit = [] {
    const char* v = std::getenv("LAYERCACHE_BUFFER_POOL_MB");
    return (v != nullptr ? std::strtoull(v, nullptr, 10) : 1024ULL) << 20;
  }();
  std::shared_ptr<const FileHandle> memory_file;  // where new regions go
  uint64_t next_offset = 0;
  size_t entry_files = 0;
  uint64_t generation = 0;  // bumped by fork, in both processes
};

std::atomic<bool> g_on{false};
std::atomic<bool> g_ever{false};  // whether any region was ever registered

State& S() {
  static State* s = new State();  // never destroyed: buffers may outlive static destruction
  return *s;
}

// After fork() both processes share the memory file and see the same pages:
// a region that existed at the fork may still be read by the other process,
// so neither may rewrite it (reuse) or release its pages (punch a hole).
// Each process moves on to a new memory file for new regions.
void LockForFork() { S().mu.lock(); }
void AfterFork() {
  State& s = S();
  ++s.generation;
  s.memory_file.reset();
  s.next_offset = 0;
  s.mu.unlock();
}

void EnsureForkHandlers() {
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(&LockForFork, &AfterFork, &AfterFork); });
}

// Drops pooled regions of an earlier generation (after a fork): unmapped
// outside the lock by the caller.
void TakeStalePool(State& s, std::vector<std::pair<void*, size_t>>* unmap) {
  for (auto it = s.pool.begin(); it != s.pool.end();) {
    if (it->second.file->generation != s.generation) {
      unmap->emplace_back(it->second.p, it->first);
      s.pooled -= it->first;
      it = s.pool.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace

FileHandle::~FileHandle() {
  if (fd >= 0) ::close(fd);
}

void* Allocate(size_t size, size_t* capacity) {
  if (!g_on.load(std::memory_order_relaxed)) return nullptr;
  const size_t cap = (std::max<size_t>(size, 1) + kGranule - 1) / kGranule * kGranule;
  State& s = S();
  std::vector<std::pair<void*, size_t>> stale;
  void* result = nullptr;
  {
    std::lock_guard lock(s.mu);
    TakeStalePool(s, &stale);
    if (auto it = s.pool.lower_bound(cap); it != s.pool.end() && it->first <= cap + cap / 4) {
      Pooled p = std::move(it->second);
      *capacity = it->first;
      s.pooled -= it->first;
      s.pool.erase(it);
      s.regions[reinterpret_cast<uintptr_t>(p.p)] =
          Region{*capacity, std::move(p.file), p.offset, true};
      result = p.p;
    } else {
      if (!s.memory_file) {
        const int fd = ::memfd_create("layercache-buffers", MFD_CLOEXEC);
        if (fd >= 0) {
          auto h = std::make_shared<FileHandle>();
          h->fd = fd;
          h->generation = s.generation;
          s.memory_file = std::move(h);
          s.next_offset = 0;
        }
      }
      if (s.memory_file) {
        const uint64_t off = s.next_offset;
        const int fd = s.memory_file->fd;
        // The file only grows (sparse: released regions are holes).
        if (::ftruncate(fd, static_cast<off_t>(off + cap)) == 0) {
          s.next_offset = off + cap;
          void* p =
              ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(off));
          if (p != MAP_FAILED) {
#ifdef MADV_HUGEPAGE
            ::madvise(p, cap, MADV_HUGEPAGE);  // honoured where shmem huge pages are advised
#endif
            s.regions[reinterpret_cast<uintptr_t>(p)] = Region{cap, s.memory_file, off, true};
            g_ever.store(true, std::memory_order_relaxed);
            *capacity = cap;
            result = p;
          }
        }
      }
    }
  }
  for (auto [p, n] : stale) ::munmap(p, n);
  return result;
}

bool Free(void* p) {
  if (!g_ever.load(std::memory_order_relaxed)) return false;
  State& s = S();
  Region r;
  bool keep = false;
  {
    std::lock_guard lock(s.mu);
    auto it = s.regions.find(reinterpret_cast<uintptr_t>(p));
    if (it == s.regions.end() || !it->second.in_memory_file) return false;
    r = std::move(it->second);
    s.regions.erase(it);
    const bool current = r.file->generation == s.generation;
    if (current && s.pooled + r.length <= s.pool_limit) {
      s.pool.emplace(r.length, Pooled{p, r.file, r.offset});
      s.pooled += r.length;
      keep = true;
    }
    if (!keep && current) {
      // No other process can see this region: give its pages back.
      ::fallocate(r.file->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(r.offset), static_cast<off_t>(r.length));
    }
  }
  if (!keep) ::munmap(p, r.length);
  return true;
}

void RegisterMapping(const void* addr, size_t length, int fd, uint64_t offset) {
  if (!g_on.load(std::memory_order_relaxed) || addr == nullptr || length == 0) return;
  State& s = S();
  std::lock_guard lock(s.mu);
  if (s.entry_files >= kMaxEntryFiles) return;
  const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return;
  auto h = std::make_shared<FileHandle>();
  h->fd = dup;
  h->generation = s.generation;
  s.regions[reinterpret_cast<uintptr_t>(addr)] = Region{length, std::move(h), offset, false};
  ++s.entry_files;
  g_ever.store(true, std::memory_order_relaxed);
}

void UnregisterMapping(const void* addr) {
  if (!g_ever.load(std::memory_order_relaxed)) return;
  State& s = S();
  std::shared_ptr<const FileHandle> file;  // closed outside the lock
  std::lock_guard lock(s.mu);
  auto it = s.regions.find(reinterpret_cast<uintptr_t>(addr));
  if (it == s.regions.end() || it->second.in_memory_file) return;
  file = std::move(it->second.file);
  s.regions.erase(it);
  --s.entry_files;
}

bool Find(const void* p, size_t n, Backing* out) {
  if (!g_ever.load(std::memory_order_relaxed) || p == nullptr) return false;
  State& s = S();
  std::lock_guard lock(s.mu);
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = s.regions.upper_bound(a);
  if (it == s.regions.begin()) return false;
  --it;
  const uintptr_t start = it->first;
  if (a + n > start + it->second.length) return false;
  out->file = it->second.file;
  out->offset = it->second.offset + (a - start);
  return true;
}

size_t RegisteredRegions() {
  std::lock_guard lock(S().mu);
  return S().regions.size();
}

size_t PooledBytes() {
  std::lock_guard lock(S().mu);
  return S().pooled;
}

}  // namespace file_backing

void SetFileBackedBuffers(bool on) {
  if (on) file_backing::EnsureForkHandlers();
  file_backing::g_on.store(on);
}

bool FileBackedBuffers() { return file_backing::g_on.load(); }

CopyOnWriteView::~CopyOnWriteView() {
  if (map_base_ != nullptr) ::munmap(map_base_, map_length_);
}

std::shared_ptr<CopyOnWriteView> MapCopyOnWrite(LayerPtr layer) {
  if (!layer || layer->nbytes() == 0) return nullptr;
  file_backing::Backing b;
  if (!file_backing::Find(layer->data(), layer->nbytes(), &b)) return nullptr;
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t start = b.offset / page * page;
  const size_t length = static_cast<size_t>(b.offset - start + layer->nbytes());
  // MAP_NORESERVE: only pages actually written take memory.
  void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
                      b.file->fd, static_cast<off_t>(start));
  if (base == MAP_FAILED) return nullptr;
  std::shared_ptr<CopyOnWriteView> view(new CopyOnWriteView());
  view->map_base_ = base;
  view->map_length_ = length;
  view->data_ = static_cast<std::byte*>(base) + (b.offset - start);
  view->size_ = static_cast<size_t>(layer->nbytes());
  view->layer_ = std::move(layer);
  return view;
}

}  // namespace layercache
