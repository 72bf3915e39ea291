// Private, writable, copy-on-write views of a layer's bytes.
//
// A Layer is immutable and shared: the memory tier, prefetchers and every
// caller hold the same bytes. A caller that wants to write to what it got
// (Python hands out writable torch tensors) must not reach those bytes, yet a
// copy of a 466 MB layer per caller costs ~100 ms and doubles the memory.
// MapCopyOnWrite maps the file behind the layer's buffer once more,
// MAP_PRIVATE: reads see the layer's pages, a write copies just the page it
// touches into memory private to that view.
//
// The file behind a buffer is:
//  - for buffers of 1 MiB and more allocated while file-backed buffers are
//    on (SetFileBackedBuffers; the Python module turns it on), a region of a
//    process-wide memory file (memfd_create);
//  - for a disk entry served as a mapping of its file (disk_read_mode
//    "mapped", or "auto" for page-cached entries), the entry file itself.
// Other buffers (small ones, pinned memory, buffers allocated before) have
// no file behind them: MapCopyOnWrite returns nullptr and a caller copies.
//
// The bytes of a file-backed buffer are written only before the layer is
// created, and the region is reused or released only after every layer and
// view of it is gone. After fork(), regions that existed at the fork are
// never rewritten nor released by either process (the processes share the
// memory file): their memory returns when both have let go of them.
#pragma once

#include <cstddef>
#include <memory>

#include "layercache/layer.h"

namespace layercache {

// Whether large layer buffers allocated from now on in this process live in
// a memory file. Off by default. Buffers already allocated keep their kind.
void SetFileBackedBuffers(bool on);
bool FileBackedBuffers();

// A private, writable view of one layer's bytes; unmapped when it goes.
// Holds the layer (and so the file region) while it lives.
class CopyOnWriteView {
 public:
  CopyOnWriteView(const CopyOnWriteView&) = delete;
  CopyOnWriteView& operator=(const CopyOnWriteView&) = delete;
  ~CopyOnWriteView();

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const LayerPtr& layer() const { return layer_; }

 private:
  friend std::shared_ptr<CopyOnWriteView> MapCopyOnWrite(LayerPtr layer);
  CopyOnWriteView() = default;

  LayerPtr layer_;
  void* map_base_ = nullptr;
  size_t map_length_ = 0;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// A copy-on-write view of `layer`'s bytes, or nullptr when its buffer has no
// file behind it (see above) or the mapping fails; then copy instead.
std::shared_ptr<CopyOnWriteView> MapCopyOnWrite(LayerPtr layer);

}  // namespace layercache
