#include "util/buffer_pool.h"

#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <mutex>

#include "util/file_backing.h"

namespace layercache {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

struct PoolState {
  std::mutex mu;
  std::multimap<size_t, void*> free;  // capacity -> buffer
  size_t bytes = 0;
  size_t limit = [] {
    const char* v = std::getenv("LAYERCACHE_BUFFER_POOL_MB");
    return (v != nullptr ? std::strtoull(v, nullptr, 10) : 1024ULL) << 20;
  }();
};

PoolState& State() {
  static PoolState* state =
      new PoolState();  // never destroyed: buffers may outlive static destruction
  return *state;
}

}  // namespace

BufferPool& BufferPool::Instance() {
  static BufferPool pool;
  return pool;
}

void* BufferPool::Allocate(size_t size, size_t alignment, size_t* capacity) {
  // A region of the memory file while file-backed buffers are on
  // (layercache/copy_on_write.h); page-aligned, which is all callers ask of it.
  if (alignment <= 4096) {
    if (void* p = file_backing::Allocate(size, capacity)) return p;
  }
  const size_t cap = (size + kHugePage - 1) / kHugePage * kHugePage;
  PoolState& s = State();
  {
    std::lock_guard lock(s.mu);
    auto it = s.free.lower_bound(cap);
    if (it != s.free.end() && it->first <= cap + cap / 4) {
      void* p = it->second;
      *capacity = it->first;
      s.bytes -= it->first;
      s.free.erase(it);
      return p;
    }
  }
  void* p = std::aligned_alloc(std::max(alignment, kHugePage), cap);
  if (p == nullptr) return nullptr;
#ifdef MADV_HUGEPAGE
  ::madvise(p, cap, MADV_HUGEPAGE);
#endif
  *capacity = cap;
  return p;
}

void BufferPool::Free(void* p, size_t capacity) {
  if (file_backing::Free(p)) return;
  PoolState& s = State();
  {
    std::lock_guard lock(s.mu);
    if (s.bytes + capacity <= s.limit) {
      s.free.emplace(capacity, p);
      s.bytes += capacity;
      return;
    }
  }
  std::free(p);
}

size_t BufferPool::pooled_bytes() const {
  std::lock_guard lock(State().mu);
  return State().bytes;
}

}  // namespace layercache
