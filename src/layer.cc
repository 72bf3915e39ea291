#include "layercache/layer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <unordered_set>

#include "layercache/status.h"
#include "util/buffer_pool.h"
#include "util/file_backing.h"
#include "util/utf8.h"

namespace layercache {
namespace {

constexpr size_t kLargeBufferBytes = size_t{1} << 20;

size_t AlignmentFor(size_t size) { return size >= kLargeBufferBytes ? 4096 : 64; }

// `s` quoted, with bytes outside printable ASCII as \xNN (a message must stay
// UTF-8 itself: Python decodes it).
std::string Escaped(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out + "\"";
}

}  // namespace

// ---- AlignedBuffer ---------------------------------------------------------

AlignedBuffer::AlignedBuffer(size_t size) : size_(size), alignment_(AlignmentFor(size)) {
  if (size >= kLargeBufferBytes) {
    data_ = static_cast<std::byte*>(BufferPool::Instance().Allocate(size, alignment_, &capacity_));
  } else {
    capacity_ = std::max<size_t>(alignment_, (size + alignment_ - 1) / alignment_ * alignment_);
    data_ = static_cast<std::byte*>(std::aligned_alloc(alignment_, capacity_));
  }
  if (data_ == nullptr) throw std::bad_alloc();
}

AlignedBuffer AlignedBuffer::FromMapping(void* map_base, size_t map_length, std::byte* data,
                                         size_t size) {
  AlignedBuffer b;
  b.data_ = data;
  b.size_ = size;
  b.alignment_ = 4096;
  b.capacity_ = size;
  b.map_base_ = map_base;
  b.map_length_ = map_length;
  return b;
}

AlignedBuffer AlignedBuffer::Adopt(std::byte* data, size_t size, size_t alignment,
                                   std::function<void(std::byte*)> free_fn) {
  AlignedBuffer b;
  b.data_ = data;
  b.size_ = size;
  b.alignment_ = alignment;
  b.capacity_ = size;
  b.free_fn_ = std::move(free_fn);
  return b;
}

void AlignedBuffer::Release() {
  if (data_ == nullptr) return;
  if (free_fn_) {
    std::exchange(free_fn_, nullptr)(data_);
  } else if (map_base_ != nullptr) {
    file_backing::UnregisterMapping(map_base_);
    ::munmap(map_base_, map_length_);
    map_base_ = nullptr;
  } else if (capacity_ >= kLargeBufferBytes) {
    BufferPool::Instance().Free(data_, capacity_);
  } else {
    std::free(data_);
  }
  data_ = nullptr;
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      alignment_(std::exchange(other.alignment_, 0)),
      capacity_(std::exchange(other.capacity_, 0)),
      map_base_(std::exchange(other.map_base_, nullptr)),
      map_length_(std::exchange(other.map_length_, 0)),
      free_fn_(std::exchange(other.free_fn_, nullptr)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    alignment_ = std::exchange(other.alignment_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
    map_base_ = std::exchange(other.map_base_, nullptr);
    map_length_ = std::exchange(other.map_length_, 0);
    free_fn_ = std::exchange(other.free_fn_, nullptr);
  }
  return *this;
}

AlignedBuffer::~AlignedBuffer() { Release(); }

// ---- sizes and layout ------------------------------------------------------

uint64_t TensorInfo::num_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

Result<uint64_t> TensorByteSize(DType dtype, const std::vector<uint64_t>& shape) {
  uint64_t elements = 1;
  for (uint64_t d : shape) {
    if (__builtin_mul_overflow(elements, d, &elements)) {
      return Status::InvalidArgument("shape product overflows 64 bits");
    }
  }
  uint64_t bits = 0;
  if (__builtin_mul_overflow(elements, uint64_t{DTypeBits(dtype)}, &bits)) {
    return Status::InvalidArgument("tensor byte size overflows 64 bits");
  }
  if (bits % 8 != 0) {
    return Status::InvalidArgument(std::to_string(elements) + " elements of " +
                                   std::string(DTypeName(dtype)) + " do not fill whole bytes");
  }
  return bits / 8;
}

Result<std::vector<TensorInfo>> PlanLayout(std::vector<TensorSpec> specs) {
  std::stable_sort(specs.begin(), specs.end(), [](const TensorSpec& a, const TensorSpec& b) {
    if (a.dtype != b.dtype) return a.dtype > b.dtype;
    return a.name < b.name;
  });
  std::vector<TensorInfo> out;
  out.reserve(specs.size());
  uint64_t offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    TensorSpec& s = specs[i];
    if (s.name == "__metadata__") {
      return Status::InvalidArgument("a tensor may not be named \"__metadata__\"");
    }
    if (i > 0 && specs[i - 1].dtype == s.dtype && specs[i - 1].name == s.name) {
      return Status::InvalidArgument("duplicate tensor name \"" + s.name + "\"");
    }
    auto size = TensorByteSize(s.dtype, s.shape);
    if (!size.ok()) return size.status().WithContext("tensor \"" + s.name + "\"");
    TensorInfo info{std::move(s.name), s.dtype, std::move(s.shape), offset, *size};
    if (__builtin_add_overflow(offset, *size, &offset)) {
      return Status::InvalidArgument("layer byte size overflows 64 bits");
    }
    out.push_back(std::move(info));
  }
  // Names must be unique across dtypes too.
  std::unordered_set<std::string_view> seen;
  for (const TensorInfo& t : out) {
    if (!seen.insert(t.name).second) {
      return Status::InvalidArgument("duplicate tensor name \"" + t.name + "\"");
    }
  }
  return out;
}

// ---- Layer -----------------------------------------------------------------

Layer::Layer(std::vector<TensorInfo> tensors, AlignedBuffer buffer, uint64_t nbytes,
             Metadata metadata)
    : tensors_(std::move(tensors)),
      buffer_(std::move(buffer)),
      nbytes_(nbytes),
      metadata_(std::move(metadata)) {
  by_name_.resize(tensors_.size());
  for (uint32_t i = 0; i < by_name_.size(); ++i) by_name_[i] = i;
  std::sort(by_name_.begin(), by_name_.end(),
            [this](uint32_t a, uint32_t b) { return tensors_[a].name < tensors_[b].name; });
}

Result<LayerPtr> Layer::Create(std::vector<TensorInfo> tensors, AlignedBuffer buffer,
                               Metadata metadata) {
  // A layer is stored as a safetensors file, whose header is UTF-8 JSON: a
  // name that is not UTF-8 would be written and then fail to read back.
  for (const auto& [k, v] : metadata) {
    if (!IsValidUtf8(k) || !IsValidUtf8(v)) {
      return Status::InvalidArgument("metadata key " + Escaped(k) +
                                     (IsValidUtf8(k) ? "'s value" : "") +
                                     " is not valid UTF-8; pass UTF-8 strings");
    }
  }
  uint64_t expected = 0;
  std::unordered_set<std::string_view> names;
  for (const TensorInfo& t : tensors) {
    if (t.name == "__metadata__") {
      return Status::InvalidArgument("a tensor may not be named \"__metadata__\"");
    }
    if (!IsValidUtf8(t.name)) {
      return Status::InvalidArgument("tensor name " + Escaped(t.name) +
                                     " is not valid UTF-8; pass UTF-8 names");
    }
    if (!names.insert(t.name).second) {
      return Status::InvalidArgument("duplicate tensor name \"" + t.name + "\"");
    }
    auto size = TensorByteSize(t.dtype, t.shape);
    if (!size.ok()) return size.status().WithContext("tensor \"" + t.name + "\"");
    if (*size != t.nbytes) {
      return Status::InvalidArgument("tensor \"" + t.name + "\" has " + std::to_string(t.nbytes) +
                                     " bytes but its dtype and shape need " +
                                     std::to_string(*size));
    }
    if (t.offset != expected) {
      return Status::InvalidArgument("tensor \"" + t.name +
                                     "\" does not start where the previous one ends");
    }
    expected += t.nbytes;
  }
  if (expected > buffer.size()) {
    return Status::InvalidArgument("tensors need " + std::to_string(expected) +
                                   " bytes but the buffer holds " + std::to_string(buffer.size()));
  }
  return LayerPtr(new Layer(std::move(tensors), std::move(buffer), expected, std::move(metadata)));
}

const TensorInfo* Layer::find(std::string_view name) const {
  auto it =
      std::lower_bound(by_name_.begin(), by_name_.end(), name,
                       [this](uint32_t i, std::string_view n) { return tensors_[i].name < n; });
  if (it == by_name_.end() || tensors_[*it].name != name) return nullptr;
  return &tensors_[*it];
}

std::span<const std::byte> Layer::tensor_data(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr)
    throw Error(Status::NotFound("layer has no tensor \"" + std::string(name) + "\""));
  return tensor_data(*info);
}

bool Layer::ContentEquals(const Layer& other) const {
  if (metadata_ != other.metadata_ || tensors_.size() != other.tensors_.size()) return false;
  for (const TensorInfo& t : tensors_) {
    const TensorInfo* o = other.find(t.name);
    if (o == nullptr || o->dtype != t.dtype || o->shape != t.shape || o->nbytes != t.nbytes) {
      return false;
    }
    if (t.nbytes != 0 &&
        std::memcmp(tensor_data(t).data(), other.tensor_data(*o).data(), t.nbytes) != 0) {
      return false;
    }
  }
  return true;
}

// ---- LayerBuilder ----------------------------------------------------------

LayerBuilder& LayerBuilder::add_tensor(std::string name, DType dtype, std::vector<uint64_t> shape,
                                       std::span<const std::byte> data) {
  for (const Pending& p : pending_) {
    if (p.spec.name == name)
      throw Error(Status::InvalidArgument("duplicate tensor name \"" + name + "\""));
  }
  auto size = TensorByteSize(dtype, shape);
  if (!size.ok())
    throw Error(Status::InvalidArgument("tensor \"" + name + "\": " + size.status().message()));
  if (*size != data.size()) {
    throw Error(Status::InvalidArgument("tensor \"" + name + "\": " + std::to_string(data.size()) +
                                        " bytes given but dtype " + std::string(DTypeName(dtype)) +
                                        " and its shape need " + std::to_string(*size)));
  }
  pending_.push_back({TensorSpec{std::move(name), dtype, std::move(shape)},
                      std::vector<std::byte>(data.begin(), data.end())});
  return *this;
}

LayerBuilder& LayerBuilder::set_metadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
  return *this;
}

LayerPtr LayerBuilder::build() {
  std::vector<TensorSpec> specs;
  specs.reserve(pending_.size());
  for (const Pending& p : pending_) specs.push_back(p.spec);
  auto plan = PlanLayout(std::move(specs));
  if (!plan.ok()) throw Error(Status::InvalidArgument(plan.status().message()));
  uint64_t total = plan->empty() ? 0 : plan->back().offset + plan->back().nbytes;
  AlignedBuffer buffer(total);
  for (const TensorInfo& t : *plan) {
    for (const Pending& p : pending_) {
      if (p.spec.name == t.name) {
        if (t.nbytes != 0) std::memcpy(buffer.data() + t.offset, p.bytes.data(), t.nbytes);
        break;
      }
    }
  }
  pending_.clear();
  auto layer = Layer::Create(std::move(*plan), std::move(buffer), std::move(metadata_));
  metadata_.clear();
  return std::move(layer).value();
}

}  // namespace layercache
