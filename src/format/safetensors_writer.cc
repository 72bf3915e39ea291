#include <cstring>

#include "format/safetensors_io.h"
#include "io/env.h"
#include "io/output_file.h"
#include "layercache/safetensors.h"

namespace layercache {
namespace {

// Escapes like serde_json (the reference writer): quote, backslash and control
// characters; everything else, UTF-8 included, is written as is.
void AppendJsonString(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[(c >> 4) & 0xf]);
          out->push_back(kHex[c & 0xf]);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

}  // namespace

std::string SerializeSafetensorsHeader(const Layer& layer, const Metadata& metadata,
                                       size_t align_data_to) {
  std::string out = "{";
  bool first = true;
  if (!metadata.empty()) {
    out.append("\"__metadata__\":{");
    for (auto it = metadata.begin(); it != metadata.end(); ++it) {
      if (it != metadata.begin()) out.push_back(',');
      AppendJsonString(&out, it->first);
      out.push_back(':');
      AppendJsonString(&out, it->second);
    }
    out.push_back('}');
    first = false;
  }
  for (const TensorInfo& t : layer.tensors()) {
    if (!first) out.push_back(',');
    first = false;
    AppendJsonString(&out, t.name);
    out.append(":{\"dtype\":\"");
    out.append(DTypeName(t.dtype));
    out.append("\",\"shape\":[");
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i > 0) out.push_back(',');
      out.append(std::to_string(t.shape[i]));
    }
    out.append("],\"data_offsets\":[");
    out.append(std::to_string(t.offset));
    out.push_back(',');
    out.append(std::to_string(t.offset + t.nbytes));
    out.append("]}");
  }
  out.push_back('}');
  if (align_data_to == 0) align_data_to = 8;
  const size_t total = 8 + out.size();
  const size_t padded = (total + align_data_to - 1) / align_data_to * align_data_to;
  out.append(padded - total, ' ');
  return out;
}

std::array<std::byte, 8> EncodeHeaderLength(uint64_t n) {
  std::array<std::byte, 8> out;
  for (size_t i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  return out;
}

std::vector<std::byte> SerializeSafetensors(const Layer& layer) {
  const std::string header = SerializeSafetensorsHeader(layer, layer.metadata());
  const auto prefix = EncodeHeaderLength(header.size());
  std::vector<std::byte> out(prefix.begin(), prefix.end());
  out.reserve(8 + header.size() + layer.nbytes());
  const auto header_bytes = std::as_bytes(std::span<const char>(header));
  out.insert(out.end(), header_bytes.begin(), header_bytes.end());
  out.insert(out.end(), layer.data(), layer.data() + layer.nbytes());
  return out;
}

Status WriteSafetensorsFile(const Layer& layer, const std::string& path) {
  const std::string header = SerializeSafetensorsHeader(layer, layer.metadata());
  const auto prefix = EncodeHeaderLength(header.size());
  return WriteUserFile(
      Env::Default(), path,
      {std::span<const std::byte>(prefix), std::as_bytes(std::span<const char>(header)),
       std::span<const std::byte>(layer.data(), layer.nbytes())});
}

Status WriteSafetensorsToFd(const Layer& layer, int fd) {
  const std::string header = SerializeSafetensorsHeader(layer, layer.metadata());
  const auto prefix = EncodeHeaderLength(header.size());
  return WriteAllToFd(
      fd,
      {std::span<const std::byte>(prefix), std::as_bytes(std::span<const char>(header)),
       std::span<const std::byte>(layer.data(), layer.nbytes())},
      "file descriptor " + std::to_string(fd));
}

}  // namespace layercache
