#include "format/safetensors_stream.h"

#include <algorithm>
#include <cstring>
#include <span>

namespace layercache {

SafetensorsStreamReader::SafetensorsStreamReader(uint64_t file_size, std::string what)
    : file_size_(file_size), what_(std::move(what)) {}

Status SafetensorsStreamReader::Feed(std::string_view piece) {
  while (!piece.empty()) {
    if (!header_) {
      const uint64_t need = header_bytes_.size() < 8 ? 8 : 8 + header_length_;
      const size_t take = std::min<size_t>(piece.size(), need - header_bytes_.size());
      header_bytes_.append(piece.substr(0, take));
      piece.remove_prefix(take);
      if (header_bytes_.size() == 8 && header_length_ == 0) {
        auto n = ParseSafetensorsHeaderLength(
            std::as_bytes(std::span<const char>(header_bytes_.data(), 8)), file_size_, what_);
        if (!n.ok()) return n.status();
        if (*n == 0) return Status::Corruption(what_ + ": empty header");
        header_length_ = *n;
      }
      if (header_length_ != 0 && header_bytes_.size() == 8 + header_length_) {
        if (Status s = ParseHeader(); !s.ok()) return s;
      }
      continue;
    }
    if (piece.size() > header_->data_bytes - filled_)
      return Status::Corruption(what_ + ": more bytes than the header describes");
    std::memcpy(buffer_.data() + filled_, piece.data(), piece.size());
    filled_ += piece.size();
    piece = {};
  }
  return Status::OK();
}

Result<std::byte*> SafetensorsStreamReader::Destination(uint64_t file_offset, uint64_t n) {
  if (!header_ || file_offset < header_->data_offset ||
      file_offset - header_->data_offset > header_->data_bytes ||
      n > header_->data_bytes - (file_offset - header_->data_offset)) {
    return Status::Corruption(what_ + ": bytes outside the data the header describes");
  }
  return buffer_.data() + (file_offset - header_->data_offset);
}

Status SafetensorsStreamReader::Commit(uint64_t file_offset, uint64_t n) {
  if (!header_ || file_offset != header_->data_offset + filled_ ||
      n > header_->data_bytes - filled_) {
    return Status::Corruption(what_ + ": bytes committed out of order");
  }
  filled_ += n;
  return Status::OK();
}

Result<LayerPtr> SafetensorsStreamReader::Finish() {
  if (!header_ || filled_ != header_->data_bytes)
    return Status::Corruption(what_ + ": fewer bytes than the header describes");
  return Layer::Create(std::move(plan_), std::move(buffer_), header_->metadata);
}

Status SafetensorsStreamReader::ParseHeader() {
  auto header =
      ParseSafetensorsHeader(std::string_view(header_bytes_).substr(8), file_size_, what_);
  if (!header.ok()) return header.status();
  std::vector<TensorSpec> specs;
  specs.reserve(header->tensors.size());
  for (const TensorInfo& t : header->tensors) specs.push_back({t.name, t.dtype, t.shape});
  auto plan = PlanLayout(std::move(specs));
  if (!plan.ok()) return plan.status();
  for (size_t i = 0; i < plan->size(); ++i) {
    if ((*plan)[i].name != header->tensors[i].name ||
        (*plan)[i].offset != header->tensors[i].offset) {
      return Status::Corruption(what_ + ": tensors are not in the reference layout");
    }
  }
  plan_ = std::move(*plan);
  buffer_ = AlignedBuffer(header->data_bytes);
  header_ = std::move(*header);
  return Status::OK();
}

}  // namespace layercache
