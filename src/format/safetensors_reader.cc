#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "format/safetensors_io.h"
#include "io/env.h"
#include "layercache/safetensors.h"

namespace layercache {
namespace {

using json = nlohmann::json;

Status Bad(std::string_view what, const std::string& rule) {
  return Status::Corruption(std::string(what) + ": not a valid safetensors file: " + rule);
}

bool LooksLikeLfsPointer(std::span<const std::byte> prefix) {
  static constexpr std::string_view kLfs = "version ";
  return prefix.size() >= kLfs.size() && std::memcmp(prefix.data(), kLfs.data(), kLfs.size()) == 0;
}

// Reads a JSON array of unsigned integers (shape or data_offsets).
bool ReadUnsignedArray(const json& value, std::vector<uint64_t>* out) {
  if (!value.is_array()) return false;
  out->clear();
  for (const json& v : value) {
    if (!v.is_number_unsigned()) return false;
    out->push_back(v.get<uint64_t>());
  }
  return true;
}

}  // namespace

const TensorInfo* SafetensorsHeader::find(std::string_view name) const {
  for (const TensorInfo& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Result<uint64_t> ParseSafetensorsHeaderLength(std::span<const std::byte> prefix, uint64_t file_size,
                                              std::string_view what) {
  if (prefix.size() < 8 || file_size < 8) {
    return Bad(what, "the file is " + std::to_string(file_size) +
                         " bytes, shorter than the 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(prefix[static_cast<size_t>(i)]);
  if (n > kMaxSafetensorsHeaderBytes || n > file_size - 8) {
    if (LooksLikeLfsPointer(prefix)) {
      return Bad(
          what,
          "it looks like a Git LFS pointer file (it starts with \"version \"), not the "
          "weights themselves; fetch the real file (git lfs pull, or download it from the Hub)");
    }
    if (n > kMaxSafetensorsHeaderBytes) {
      return Bad(what, "header length " + std::to_string(n) + " exceeds the limit of " +
                           std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
    }
    return Bad(what, "header length " + std::to_string(n) + " runs past the end of the file (" +
                         std::to_string(file_size) + " bytes)");
  }
  return n;
}

Result<SafetensorsHeader> ParseSafetensorsHeader(std::string_view text, uint64_t file_size,
                                                 std::string_view what) {
  if (text.empty() || text.front() != '{') {
    return Bad(what, "the header does not start with '{' (it must be a JSON object)");
  }
  // Reject duplicate top-level keys, which nlohmann would silently merge.
  std::unordered_set<std::string> keys;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      auto key = parsed.get<std::string>();
      if (!keys.insert(key).second) duplicate = key;
    }
    return true;
  };
  json doc;
  try {
    doc = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for numbers too large
    return Bad(what, std::string("the header is not valid UTF-8 JSON (") + e.what() + ")");
  }
  if (!duplicate.empty()) return Bad(what, "tensor name \"" + duplicate + "\" appears twice");
  if (!doc.is_object()) return Bad(what, "the header is not a JSON object");

  SafetensorsHeader header;
  header.header_length = text.size();
  header.data_offset = 8 + text.size();
  struct Ranged {
    TensorInfo info;
    uint64_t begin, end;
  };
  std::vector<Ranged> ranged;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& name = it.key();
    const json& value = it.value();
    if (name == "__metadata__") {
      if (!value.is_object()) return Bad(what, "__metadata__ is not a JSON object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string()) {
          return Bad(what, "__metadata__ value for \"" + m.key() + "\" is not a string");
        }
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      header.has_metadata = true;
      continue;
    }
    if (!value.is_object()) return Bad(what, "tensor \"" + name + "\" is not a JSON object");
    auto dtype_it = value.find("dtype");
    auto shape_it = value.find("shape");
    auto offsets_it = value.find("data_offsets");
    if (dtype_it == value.end() || shape_it == value.end() || offsets_it == value.end()) {
      return Bad(what, "tensor \"" + name + "\" lacks one of dtype, shape, data_offsets");
    }
    if (!dtype_it->is_string()) return Bad(what, "tensor \"" + name + "\" has a non-string dtype");
    auto dtype = ParseDType(dtype_it->get<std::string>());
    if (!dtype) {
      return Bad(what, "tensor \"" + name + "\" has unknown dtype \"" +
                           dtype_it->get<std::string>() + "\"");
    }
    Ranged r;
    r.info.name = name;
    r.info.dtype = *dtype;
    if (!ReadUnsignedArray(*shape_it, &r.info.shape)) {
      return Bad(what, "tensor \"" + name + "\" shape is not a list of non-negative integers");
    }
    std::vector<uint64_t> offsets;
    if (!ReadUnsignedArray(*offsets_it, &offsets) || offsets.size() != 2) {
      return Bad(what,
                 "tensor \"" + name + "\" data_offsets is not a pair of non-negative integers");
    }
    r.begin = offsets[0];
    r.end = offsets[1];
    ranged.push_back(std::move(r));
  }
  std::sort(ranged.begin(), ranged.end(), [](const Ranged& a, const Ranged& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (Ranged& r : ranged) {
    const std::string& name = r.info.name;
    if (r.begin != expected || r.end < r.begin) {
      return Bad(what, "tensor \"" + name + "\" data_offsets [" + std::to_string(r.begin) + ", " +
                           std::to_string(r.end) +
                           "] leave a hole or overlap (expected it to start at " +
                           std::to_string(expected) + ")");
    }
    auto size = TensorByteSize(r.info.dtype, r.info.shape);
    if (!size.ok()) return Bad(what, "tensor \"" + name + "\": " + size.status().message());
    if (r.end - r.begin != *size) {
      return Bad(what, "tensor \"" + name + "\" spans " + std::to_string(r.end - r.begin) +
                           " bytes but its dtype and shape need " + std::to_string(*size));
    }
    r.info.offset = r.begin;
    r.info.nbytes = *size;
    expected = r.end;
    header.tensors.push_back(std::move(r.info));
  }
  header.data_bytes = expected;
  if (header.data_offset + expected != file_size) {
    return Bad(what, "tensor data ends at byte " + std::to_string(header.data_offset + expected) +
                         " but the file has " + std::to_string(file_size) +
                         " bytes (the data must end exactly at the end of the file)");
  }
  return header;
}

namespace {

// Builds a Layer from a validated header, given a function that copies a
// range of the data section into a destination.
template <class ReadRange>
Result<LayerPtr> BuildLayer(const SafetensorsHeader& header, ReadRange&& read_range) {
  std::vector<TensorSpec> specs;
  specs.reserve(header.tensors.size());
  for (const TensorInfo& t : header.tensors) specs.push_back({t.name, t.dtype, t.shape});
  auto plan = PlanLayout(std::move(specs));
  if (!plan.ok()) return plan.status();
  AlignedBuffer buffer(header.data_bytes);
  bool same_order = true;
  for (size_t i = 0; i < plan->size(); ++i) {
    if ((*plan)[i].name != header.tensors[i].name) {
      same_order = false;
      break;
    }
  }
  if (same_order) {
    Status s = read_range(0, header.data_bytes, buffer.data());
    if (!s.ok()) return s;
  } else {
    for (const TensorInfo& dst : *plan) {
      const TensorInfo* src = header.find(dst.name);
      Status s = read_range(src->offset, src->nbytes, buffer.data() + dst.offset);
      if (!s.ok()) return s;
    }
  }
  return Layer::Create(std::move(*plan), std::move(buffer), header.metadata);
}

}  // namespace

Result<LayerPtr> ParseSafetensors(std::span<const std::byte> bytes, std::string_view what) {
  auto n = ParseSafetensorsHeaderLength(bytes.first(std::min<size_t>(8, bytes.size())),
                                        bytes.size(), what);
  if (!n.ok()) return n.status();
  std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, *n);
  auto header = ParseSafetensorsHeader(text, bytes.size(), what);
  if (!header.ok()) return header.status();
  const std::byte* data = bytes.data() + header->data_offset;
  return BuildLayer(*header, [&](uint64_t off, uint64_t len, std::byte* dst) {
    if (len != 0) std::memcpy(dst, data + off, len);
    return Status::OK();
  });
}

Result<SafetensorsHeader> ReadSafetensorsHeaderFrom(RandomAccessFile& file,
                                                    const std::string& path) {
  std::byte prefix[8] = {};
  const uint64_t size = file.size();
  if (size >= 8) {
    Status s = file.Read(0, 8, prefix);
    if (!s.ok()) return s;
  }
  auto n = ParseSafetensorsHeaderLength(std::span<const std::byte>(prefix, size >= 8 ? 8 : 0), size,
                                        path);
  if (!n.ok()) return n.status();
  std::string text(*n, '\0');
  Status s = file.Read(8, *n, reinterpret_cast<std::byte*>(text.data()));
  if (!s.ok()) return s;
  return ParseSafetensorsHeader(text, size, path);
}

Result<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path, Env* env) {
  auto file = (env != nullptr ? env : Env::Default())->OpenForRead(path);
  if (!file.ok()) return file.status();
  return ReadSafetensorsHeaderFrom(**file, path);
}

Result<LayerPtr> ReadSafetensorsFile(const std::string& path, Env* env) {
  auto file = (env != nullptr ? env : Env::Default())->OpenForRead(path);
  if (!file.ok()) return file.status();
  auto header = ReadSafetensorsHeaderFrom(**file, path);
  if (!header.ok()) return header.status();
  const uint64_t base = header->data_offset;
  return BuildLayer(*header, [&](uint64_t off, uint64_t len, std::byte* dst) {
    return (*file)->Read(base + off, len, dst);
  });
}

}  // namespace layercache
