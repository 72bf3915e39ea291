// BufferPool: keeps freed large layer buffers for reuse.
//
// A fresh multi-megabyte allocation is mmapped memory that the kernel must
// fault in and zero on first touch: for a 466 MB layer that is tens of
// milliseconds, as long as reading it from a fast SSD. Layer streaming frees
// and allocates same-sized buffers over and over, so freed buffers of 1 MiB
// and more are kept (up to a byte limit, LAYERCACHE_BUFFER_POOL_MB, default
// 1024) and handed out again, already faulted in. Buffers are 2 MiB aligned
// and advised for transparent huge pages. Thread-safe.
#pragma once

#include <cstddef>

namespace layercache {

class BufferPool {
 public:
  static BufferPool& Instance();
  // A buffer of at least `size` bytes (its capacity in `*capacity`), aligned
  // to `alignment`; nullptr on allocation failure.
  void* Allocate(size_t size, size_t alignment, size_t* capacity);
  void Free(void* p, size_t capacity);
  size_t pooled_bytes() const;
};

}  // namespace layercache
