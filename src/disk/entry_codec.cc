#include "disk/entry_codec.h"

#include <charconv>

#include "util/checksum.h"

namespace layercache {
namespace {

constexpr const char* kKeyFormat = "layercache.format";
constexpr const char* kKeyModel = "layercache.model_id";
constexpr const char* kKeyLayer = "layercache.layer_index";
constexpr const char* kKeyQuant = "layercache.quantization_mode";
constexpr const char* kKeyRevision = "layercache.revision";
constexpr const char* kKeyAlgorithm = "layercache.checksum_algorithm";
constexpr const char* kKeyChecksum = "layercache.checksum";
constexpr const char* kKeyCreated = "layercache.created_ns";

void AppendField(std::string* out, std::string_view field) {
  out->append(std::to_string(field.size()));
  out->push_back(':');
  out->append(field);
}

bool ParseInt(const std::string& s, int64_t* out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

}  // namespace

bool HasReservedMetadata(const Metadata& metadata) {
  auto it = metadata.lower_bound(kReservedMetadataPrefix);
  return it != metadata.end() && it->first.starts_with(kReservedMetadataPrefix);
}

Metadata StripReservedMetadata(const Metadata& metadata) {
  Metadata out;
  for (const auto& [k, v] : metadata) {
    if (!k.starts_with(kReservedMetadataPrefix)) out.emplace(k, v);
  }
  return out;
}

std::string EntryChecksum(ChecksumAlgorithm algorithm, const LayerKey& key,
                          const std::vector<TensorInfo>& tensors, const Metadata& user_metadata,
                          std::span<const std::byte> data) {
  std::string d = "layercache-entry-v1;";
  AppendField(&d, key.model_id);
  AppendField(&d, std::to_string(key.layer_index));
  AppendField(&d, key.quantization_mode);
  AppendField(&d, key.revision);
  for (const TensorInfo& t : tensors) {
    AppendField(&d, t.name);
    AppendField(&d, DTypeName(t.dtype));
    std::string shape;
    for (uint64_t dim : t.shape) shape += std::to_string(dim) + ",";
    AppendField(&d, shape);
    AppendField(&d, std::to_string(t.offset) + "+" + std::to_string(t.nbytes));
  }
  for (const auto& [k, v] : user_metadata) {
    AppendField(&d, k);
    AppendField(&d, v);
  }
  auto hasher = NewHasher(algorithm);
  hasher->Update(d);
  hasher->Update(data);
  return hasher->FinalHex();
}

std::string EncodeEntryHeader(const LayerKey& key, const Layer& layer, ChecksumAlgorithm algorithm,
                              int64_t created_ns) {
  Metadata m = layer.metadata();
  m[kKeyFormat] = kEntryFormatVersion;
  m[kKeyModel] = key.model_id;
  m[kKeyLayer] = std::to_string(key.layer_index);
  m[kKeyQuant] = key.quantization_mode;
  m[kKeyRevision] = key.revision;
  m[kKeyAlgorithm] = ChecksumAlgorithmName(algorithm);
  m[kKeyCreated] = std::to_string(created_ns);
  m[kKeyChecksum] = EntryChecksum(algorithm, key, layer.tensors(), layer.metadata(),
                                  {layer.data(), static_cast<size_t>(layer.nbytes())});
  return SerializeSafetensorsHeader(layer, m, kEntryDataAlignment);
}

Result<EntryHeader> DecodeEntryHeader(const SafetensorsHeader& header, std::string_view what) {
  const Metadata& m = header.metadata;
  auto get = [&](const char* k) -> const std::string* {
    auto it = m.find(k);
    return it == m.end() ? nullptr : &it->second;
  };
  auto bad = [&](const std::string& why) {
    return Status::Corruption(std::string(what) + ": not a layercache entry: " + why);
  };
  const std::string* format = get(kKeyFormat);
  if (format == nullptr) return bad("__metadata__ lacks " + std::string(kKeyFormat));
  if (*format != kEntryFormatVersion)
    return bad("unknown entry format version \"" + *format + "\"");
  EntryHeader e;
  const std::string* model = get(kKeyModel);
  const std::string* layer = get(kKeyLayer);
  const std::string* quant = get(kKeyQuant);
  const std::string* revision = get(kKeyRevision);
  const std::string* algorithm = get(kKeyAlgorithm);
  const std::string* checksum = get(kKeyChecksum);
  const std::string* created = get(kKeyCreated);
  if (!model || !layer || !quant || !revision || !algorithm || !checksum || !created) {
    return bad("a layercache.* metadata field is missing");
  }
  e.key.model_id = *model;
  e.key.quantization_mode = *quant;
  e.key.revision = *revision;
  if (!ParseInt(*layer, &e.key.layer_index) || e.key.layer_index < 0) {
    return bad("layer index \"" + *layer + "\" is not a non-negative integer");
  }
  if (!ParseInt(*created, &e.created_ns)) return bad("created_ns is not an integer");
  try {
    e.algorithm = ParseChecksumAlgorithm(*algorithm);
  } catch (const std::invalid_argument&) {
    return bad("unknown checksum algorithm \"" + *algorithm + "\"");
  }
  e.checksum = *checksum;
  e.user_metadata = StripReservedMetadata(m);
  return e;
}

}  // namespace layercache
