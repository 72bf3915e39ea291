// Layer: the unit the cache stores, one transformer layer's tensors.
//
// A Layer is immutable once built. Its tensors lie back to back in one owned,
// aligned buffer, in the order the reference safetensors writer uses
// (descending dtype rank, then name), so that a Layer serializes to a
// safetensors file with a single write and every tensor is naturally aligned.
// Callers hold std::shared_ptr<const Layer>: the cache only drops its own
// reference on eviction, so a layer in use is never freed under its reader.
// All const methods are safe to call from any number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "layercache/dtype.h"
#include "layercache/status.h"

namespace layercache {

using Metadata = std::map<std::string, std::string>;

// A heap buffer with a guaranteed alignment (64 bytes, or 4096 bytes for
// buffers of 1 MiB and more so that they can be used with O_DIRECT; its
// capacity is then rounded up to 2 MiB). Freed large buffers are kept for
// reuse, up to $LAYERCACHE_BUFFER_POOL_MB (default 1024), because faulting in
// fresh memory costs as much as reading it from a fast disk. Move-only.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // Allocates `size` bytes (uninitialized); throws std::bad_alloc on failure.
  explicit AlignedBuffer(size_t size);
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  size_t alignment() const { return alignment_; }
  // Usable bytes (>= size(), a multiple of the alignment).
  size_t capacity() const { return capacity_; }

  // A read-only buffer over pages mapped with mmap: `size` bytes at `data`
  // (page-aligned) inside the mapping [map_base, map_base + map_length),
  // which is unmapped when the buffer goes.
  static AlignedBuffer FromMapping(void* map_base, size_t map_length, std::byte* data, size_t size);
  bool is_mapping() const { return map_base_ != nullptr; }
  // Takes `data` (`size` bytes aligned to `alignment`, allocated elsewhere:
  // page-locked memory, say), which `free_fn` releases when the buffer goes.
  static AlignedBuffer Adopt(std::byte* data, size_t size, size_t alignment,
                             std::function<void(std::byte*)> free_fn);

 private:
  void Release();

  std::byte* data_ = nullptr;
  size_t size_ = 0;
  size_t alignment_ = 0;
  size_t capacity_ = 0;
  void* map_base_ = nullptr;
  size_t map_length_ = 0;
  std::function<void(std::byte*)> free_fn_;  // adopted memory
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;  // empty for a scalar
  uint64_t offset = 0;          // byte offset into Layer::data()
  uint64_t nbytes = 0;

  uint64_t num_elements() const;
};

// What a tensor is, before it has a place in a buffer.
struct TensorSpec {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
};

// The byte size of `count` elements of `dtype`, or an error when the count
// overflows or, for sub-byte dtypes, does not fill whole bytes.
Result<uint64_t> TensorByteSize(DType dtype, const std::vector<uint64_t>& shape);

// Orders `specs` as the reference writer does and assigns contiguous offsets.
// Fails on duplicate or reserved names, overflow, or partial bytes.
Result<std::vector<TensorInfo>> PlanLayout(std::vector<TensorSpec> specs);

class Layer {
 public:
  // Wraps `buffer` holding tensors laid out by PlanLayout (or read from a
  // file whose offsets are contiguous). Validates that every tensor lies
  // inside the buffer, back to back from 0, with the right byte size, and
  // that tensor names and metadata are UTF-8 (a layer is stored as
  // safetensors, whose header is UTF-8 JSON); kInvalidArgument otherwise.
  static Result<std::shared_ptr<const Layer>> Create(std::vector<TensorInfo> tensors,
                                                     AlignedBuffer buffer, Metadata metadata);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  size_t num_tensors() const { return tensors_.size(); }
  // The tensor called `name`, or nullptr.
  const TensorInfo* find(std::string_view name) const;
  // The bytes of one tensor; `info` must come from this layer.
  std::span<const std::byte> tensor_data(const TensorInfo& info) const {
    return {buffer_.data() + info.offset, static_cast<size_t>(info.nbytes)};
  }
  // The bytes of the tensor called `name`; throws layercache::Error
  // (kNotFound) if absent.
  std::span<const std::byte> tensor_data(std::string_view name) const;

  // The whole data section (all tensors back to back).
  const std::byte* data() const { return buffer_.data(); }
  uint64_t nbytes() const { return nbytes_; }
  const Metadata& metadata() const { return metadata_; }

  // Same tensors (names, dtypes, shapes, bytes) and metadata.
  bool ContentEquals(const Layer& other) const;

 private:
  Layer(std::vector<TensorInfo> tensors, AlignedBuffer buffer, uint64_t nbytes, Metadata metadata);

  std::vector<TensorInfo> tensors_;
  std::vector<uint32_t> by_name_;  // indices into tensors_, sorted by name
  AlignedBuffer buffer_;
  uint64_t nbytes_ = 0;
  Metadata metadata_;
};

using LayerPtr = std::shared_ptr<const Layer>;

// Builds a Layer from tensors given one by one. Not thread-safe.
//
//   auto layer = LayerBuilder()
//       .add_tensor("q_proj.weight", DType::BF16, {4096, 4096}, bytes)
//       .set_metadata("source", "my-checkpoint")
//       .build();
class LayerBuilder {
 public:
  // Copies `data`, which must hold exactly the tensor's byte size. Throws
  // layercache::Error (kInvalidArgument) on a size mismatch or a duplicate name.
  LayerBuilder& add_tensor(std::string name, DType dtype, std::vector<uint64_t> shape,
                           std::span<const std::byte> data);
  // Typed convenience for tests and examples: `values` as raw element bytes.
  template <class T>
  LayerBuilder& add_tensor(std::string name, DType dtype, std::vector<uint64_t> shape,
                           const std::vector<T>& values) {
    return add_tensor(std::move(name), dtype, std::move(shape),
                      std::as_bytes(std::span<const T>(values)));
  }
  LayerBuilder& set_metadata(std::string key, std::string value);

  // One allocation, one copy per tensor. The builder is empty afterwards.
  // Throws layercache::Error (kInvalidArgument) as Layer::Create refuses.
  LayerPtr build();

 private:
  struct Pending {
    TensorSpec spec;
    std::vector<std::byte> bytes;
  };
  std::vector<Pending> pending_;
  Metadata metadata_;
};

}  // namespace layercache
