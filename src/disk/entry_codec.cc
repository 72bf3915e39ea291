#include "disk/entry_codec.h"

#include <xxhash.h>

#include <charconv>
#include <nlohmann/json.hpp>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#include <cstring>

#include "compress/container.h"
#include "layercache/checksum.h"
#include "layercache/status.h"
#include "util/parallel.h"

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
constexpr const char* kKeyCompression = "layercache.compression";
constexpr const char* kKeyTensors = "layercache.tensors";
constexpr const char* kKeyLogical = "layercache.logical_bytes";
constexpr const char* kCompressedTensor = "__layercache_compressed__";

void AppendField(std::string* out, std::string_view field) {
  out->append(std::to_string(field.size()));
  out->push_back(':');
  out->append(field);
}

std::string Covered(const std::string& compression, const std::string& tensors_json,
                    uint64_t logical) {
  if (compression.empty()) return "";
  return compression + ";" + tensors_json + ";" + std::to_string(logical);
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

std::string EntryCoveredFields(const EntryHeader& e) {
  return Covered(e.compression, e.tensors_json, e.logical_bytes);
}

std::string EntryDescription(const LayerKey& key, const std::vector<TensorInfo>& tensors,
                             const Metadata& user_metadata, const std::string& covered) {
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
  if (!covered.empty()) AppendField(&d, covered);
  return d;
}

EntryDigest::EntryDigest(ChecksumAlgorithm algorithm, const std::string& description,
                         uint64_t data_bytes)
    : algorithm_(algorithm),
      description_(description),
      num_chunks_(static_cast<size_t>((data_bytes + kChunkBytes - 1) / kChunkBytes)) {
  if (chunked()) {
    chunk_digests_.resize(num_chunks_);
  } else {
    sequential_ = NewHasher(algorithm);
    sequential_->Update(std::string_view(description_));
  }
}

void EntryDigest::AddChunk(size_t index, std::span<const std::byte> bytes) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(bytes.data(), bytes.size()));
  std::memcpy(chunk_digests_[index].data(), c.digest, 16);
}

void EntryDigest::Update(std::span<const std::byte> bytes) { sequential_->Update(bytes); }

std::string EntryDigest::FinalHex() {
  if (!chunked()) return sequential_->FinalHex();
  auto h = NewHasher(algorithm_);
  h->Update(std::string_view(description_));
  for (const auto& d : chunk_digests_) h->Update(std::span<const std::byte>(d));
  return h->FinalHex();
}

std::string EntryChecksum(ChecksumAlgorithm algorithm, const LayerKey& key,
                          const std::vector<TensorInfo>& tensors, const Metadata& user_metadata,
                          std::span<const std::byte> data, const std::string& covered) {
  EntryDigest digest(algorithm, EntryDescription(key, tensors, user_metadata, covered),
                     data.size());
  if (digest.chunked()) {
    ParallelFor(digest.num_chunks(), 0, [&](size_t i) {
      const uint64_t off = i * EntryDigest::kChunkBytes;
      digest.AddChunk(
          i, data.subspan(off, std::min<uint64_t>(EntryDigest::kChunkBytes, data.size() - off)));
    });
  } else {
    digest.Update(data);
  }
  return digest.FinalHex();
}

namespace {

std::string TensorsJson(const Layer& layer) {
  nlohmann::json list = nlohmann::json::array();
  for (const TensorInfo& t : layer.tensors()) list.push_back({t.name, DTypeName(t.dtype), t.shape});
  return list.dump();
}

}  // namespace

EncodedEntry EncodeEntry(const LayerKey& key, const LayerPtr& layer, ChecksumAlgorithm algorithm,
                         int64_t created_ns, int compression_level) {
  EncodedEntry out;
  Metadata m = layer->metadata();
  std::string covered;
  out.stored = layer;
  if (compression_level > 0) {
    AlignedBuffer container = CompressLayerData(*layer, compression_level);
    const uint64_t size = container.size();
    std::vector<TensorInfo> t = {{kCompressedTensor, DType::U8, {size}, 0, size}};
    out.stored = Layer::Create(std::move(t), std::move(container), {}).value();
    const std::string tensors_json = TensorsJson(*layer);
    m[kKeyCompression] = kCompressionName;
    m[kKeyTensors] = tensors_json;
    m[kKeyLogical] = std::to_string(layer->nbytes());
    covered = Covered(kCompressionName, tensors_json, layer->nbytes());
  }
  m[kKeyFormat] = kEntryFormatVersion;
  m[kKeyModel] = key.model_id;
  m[kKeyLayer] = std::to_string(key.layer_index);
  m[kKeyQuant] = key.quantization_mode;
  m[kKeyRevision] = key.revision;
  m[kKeyAlgorithm] = ChecksumAlgorithmName(algorithm);
  m[kKeyCreated] = std::to_string(created_ns);
  out.checksum =
      EntryChecksum(algorithm, key, out.stored->tensors(), layer->metadata(),
                    {out.stored->data(), static_cast<size_t>(out.stored->nbytes())}, covered);
  m[kKeyChecksum] = out.checksum;
  out.header = SerializeSafetensorsHeader(*out.stored, m, kEntryDataAlignment);
  return out;
}

Result<LayerPtr> DecodeEntryLayer(const EntryHeader& entry, std::vector<TensorInfo> stored_tensors,
                                  AlignedBuffer data, std::string_view what) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption(std::string(what) + ": " + why);
  };
  if (entry.compression.empty()) {
    auto layer = Layer::Create(std::move(stored_tensors), std::move(data), entry.user_metadata);
    if (!layer.ok()) return bad(layer.status().message());
    return layer;
  }
  if (entry.compression != kCompressionName)
    return bad("unknown compression \"" + entry.compression + "\"");
  if (stored_tensors.size() != 1 || stored_tensors[0].name != kCompressedTensor) {
    return bad("a compressed entry must hold one " + std::string(kCompressedTensor) + " tensor");
  }
  std::vector<TensorSpec> specs;
  try {
    for (const auto& item : nlohmann::json::parse(entry.tensors_json)) {
      auto dtype = ParseDType(item.at(1).get<std::string>());
      if (!dtype) return bad("unknown dtype in the tensor table");
      // Checked before converting: nlohmann turns floats and negative
      // numbers into integers unchecked (undefined out of range).
      std::vector<uint64_t> shape;
      for (const auto& dim : item.at(2)) {
        if (!dim.is_number_unsigned()) return bad("a shape in the tensor table is not unsigned");
        shape.push_back(dim.get<uint64_t>());
      }
      specs.push_back({item.at(0).get<std::string>(), *dtype, std::move(shape)});
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(std::string("the tensor table is not valid (") + e.what() + ")");
  }
  auto plan = PlanLayout(std::move(specs));
  if (!plan.ok()) return bad(plan.status().message());
  const uint64_t logical = plan->empty() ? 0 : plan->back().offset + plan->back().nbytes;
  if (logical != entry.logical_bytes)
    return bad("the tensor table disagrees with the logical size");
  AlignedBuffer out(logical);
  Status s = DecompressLayerData({data.data(), static_cast<size_t>(stored_tensors[0].nbytes)},
                                 out.data(), logical);
  if (!s.ok()) return bad(s.message());
  auto layer = Layer::Create(std::move(*plan), std::move(out), entry.user_metadata);
  if (!layer.ok()) return bad(layer.status().message());
  return layer;
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
  } catch (const Error&) {
    return bad("unknown checksum algorithm \"" + *algorithm + "\"");
  }
  e.checksum = *checksum;
  e.user_metadata = StripReservedMetadata(m);
  if (const std::string* c = get(kKeyCompression)) {
    const std::string* tensors = get(kKeyTensors);
    const std::string* logical = get(kKeyLogical);
    int64_t n = 0;
    if (tensors == nullptr || logical == nullptr || !ParseInt(*logical, &n) || n < 0) {
      return bad("a compressed entry lacks its tensor table or logical size");
    }
    e.compression = *c;
    e.tensors_json = *tensors;
    e.logical_bytes = static_cast<uint64_t>(n);
  }
  return e;
}

Result<EntryFileInfo> InspectEntryHeader(const SafetensorsHeader& header, std::string_view what) {
  auto entry = DecodeEntryHeader(header, what);
  if (!entry.ok()) return entry.status();
  EntryFileInfo info;
  info.key = std::move(entry->key);
  info.checksum_algorithm = entry->algorithm;
  info.checksum = std::move(entry->checksum);
  info.created_ns = entry->created_ns;
  info.user_metadata = std::move(entry->user_metadata);
  info.compression = std::move(entry->compression);
  info.logical_bytes = entry->logical_bytes;
  return info;
}

}  // namespace layercache
