// The files behind layer buffers, for copy-on-write views
// (layercache/copy_on_write.h): a process-wide memory file whose regions back
// large buffers while file-backed buffers are on, and a registry of which
// buffer lives where (memory-file regions, and mappings of entry files).
// Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace layercache::file_backing {

// A file descriptor, closed when the last region using it goes.
struct FileHandle {
  int fd = -1;
  uint64_t generation = 0;  // the fork generation it was opened in
  ~FileHandle();
};

// A buffer of at least `size` bytes (`*capacity`, a multiple of 2 MiB) in the
// memory file, page-aligned and writable; nullptr when file-backed buffers
// are off or the memory file cannot grow (the caller allocates otherwise).
void* Allocate(size_t size, size_t* capacity);
// Takes back a buffer from Allocate: true if `p` is one (it is then pooled
// for reuse or released), false otherwise (the caller frees it).
bool Free(void* p);

// Records that the mapping [addr, addr + length) shows `fd` from `offset`
// (an entry file mapped by the disk tier), keeping a duplicate of `fd`;
// nothing when file-backed buffers are off or too many files are held.
void RegisterMapping(const void* addr, size_t length, int fd, uint64_t offset);
// Forgets a mapping recorded by RegisterMapping (before it is unmapped).
void UnregisterMapping(const void* addr);

// The file and file offset of the `n` bytes at `p`, if they lie in one
// registered region.
struct Backing {
  std::shared_ptr<const FileHandle> file;
  uint64_t offset = 0;
};
bool Find(const void* p, size_t n, Backing* out);

// For tests: regions in the registry, and memory-file bytes kept for reuse.
size_t RegisteredRegions();
size_t PooledBytes();

}  // namespace layercache::file_backing
