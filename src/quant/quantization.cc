// Quantized layers: the public API of include/layercache/quantization.h on
// top of the kernels in kernels.cc.
#include "layercache/quantization.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "quant/kernels.h"

namespace layercache::quant {
namespace {

using detail::ActiveKernels;
using detail::kNoBadIndex;
using detail::ParallelFor;

constexpr const char* kQuantStateSuffix = ".quant_state.bitsandbytes__nf4";
constexpr uint64_t kNestedBlocksize = 256;
constexpr uint64_t kMinBlocksPerThread = 4096;  // 256 Ki elements at blocksize 64

bool ValidBlocksize(int bs) { return bs >= 32 && bs <= 4096 && (bs & (bs - 1)) == 0; }

bool QuantizableInput(DType d) { return d == DType::BF16 || d == DType::F16 || d == DType::F32; }

Status BadInput(std::string_view what) { return Status::InvalidArgument(std::string(what)); }

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool Contains(std::string_view s, std::string_view part) { return s.find(part) != s.npos; }

// PyTorch's dtype name, as bitsandbytes writes it into the quant state.
const char* TorchDTypeName(DType d) {
  switch (d) {
    case DType::BF16:
      return "bfloat16";
    case DType::F16:
      return "float16";
    default:
      return "float32";
  }
}

std::optional<DType> FromTorchName(std::string_view s) {
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16") return DType::F16;
  if (s == "float32") return DType::F32;
  return std::nullopt;
}

// The element count of `shape`, or nullopt when it overflows.
std::optional<uint64_t> Product(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) {
    if (d != 0 && n > UINT64_MAX / 8 / d) return std::nullopt;
    n *= d;
  }
  return n;
}

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The module prefix of a weight name: "mlp.up_proj.weight" -> "mlp.up_proj.".
std::string ModulePrefix(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot + 1);
}

template <class T>
std::span<const std::byte> Bytes(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

}  // namespace

std::optional<QuantMode> ParseQuantMode(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.empty() || lower == "none") return QuantMode::kNone;
  if (lower == "nf4") return QuantMode::kNF4;
  if (lower == "int8") return QuantMode::kInt8;
  return std::nullopt;
}

std::string_view QuantModeName(QuantMode mode) {
  switch (mode) {
    case QuantMode::kNF4:
      return "nf4";
    case QuantMode::kInt8:
      return "int8";
    default:
      return "";
  }
}

void QuantConfig::Validate() const {
  if (mode == QuantMode::kNone) {
    throw Error(Status::InvalidArgument("quantization mode must be \"nf4\" or \"int8\""));
  }
  if (mode == QuantMode::kNF4 && !ValidBlocksize(blocksize)) {
    throw Error(
        Status::InvalidArgument("nf4 blocksize must be one of 32, 64, 128, 256, 512, 1024, 2048, "
                                "4096 (as bitsandbytes); got " +
                                std::to_string(blocksize)));
  }
  if (threads < 0)
    throw Error(Status::InvalidArgument("threads must be >= 0 (0: all hardware threads)"));
}

const std::array<float, 16>& NF4Table() {
  static const std::array<float, 16> t = [] {
    std::array<float, 16> a{};
    std::copy(std::begin(detail::kNF4Values), std::end(detail::kNF4Values), a.begin());
    return a;
  }();
  return t;
}

// bitsandbytes.functional.create_dynamic_map(signed=True), bit for bit.
const std::array<float, 256>& DynamicMap() {
  static const std::array<float, 256> m = {
#include "layercache/status.h"
#include "quant/dynamic_map.inc"
  };
  return m;
}

std::string_view KernelName() { return ActiveKernels().name; }

Status QuantizeNF4(DType dtype, const void* in, uint64_t n, int blocksize, uint8_t* packed,
                   float* absmax, int threads) {
  if (!QuantizableInput(dtype)) {
    return BadInput("nf4 quantizes BF16, F16 or F32 values, not " + std::string(DTypeName(dtype)));
  }
  if (!ValidBlocksize(blocksize))
    return BadInput("invalid nf4 blocksize " + std::to_string(blocksize));
  const uint64_t bs = static_cast<uint64_t>(blocksize);
  std::atomic<uint64_t> bad{kNoBadIndex};
  const auto& k = ActiveKernels();
  ParallelFor(NumBlocks(n, bs), kMinBlocksPerThread, threads, [&](uint64_t b0, uint64_t b1) {
    const uint64_t r = k.nf4_quantize(dtype, in, n, bs, b0, b1, packed, absmax);
    uint64_t cur = bad.load();
    while (r < cur && !bad.compare_exchange_weak(cur, r)) {
    }
  });
  if (bad.load() != kNoBadIndex) {
    return BadInput("element " + std::to_string(bad.load()) +
                    " is NaN or infinite; nf4 cannot represent it");
  }
  return Status::OK();
}

Status DequantizeNF4(const uint8_t* packed, const float* absmax, uint64_t n, int blocksize,
                     DType out_dtype, void* out, int threads) {
  if (!QuantizableInput(out_dtype)) {
    return BadInput("nf4 dequantizes to BF16, F16 or F32, not " +
                    std::string(DTypeName(out_dtype)));
  }
  if (blocksize <= 0 || blocksize % 2 != 0) {
    return BadInput("invalid nf4 blocksize " + std::to_string(blocksize));
  }
  const uint64_t bs = static_cast<uint64_t>(blocksize);
  const auto& k = ActiveKernels();
  ParallelFor(NumBlocks(n, bs), kMinBlocksPerThread, threads, [&](uint64_t b0, uint64_t b1) {
    k.nf4_dequantize(packed, absmax, n, bs, b0, b1, out_dtype, out);
  });
  return Status::OK();
}

Status QuantizeInt8(DType dtype, const void* in, uint64_t rows, uint64_t cols, int8_t* out,
                    float* scb, int threads) {
  if (!QuantizableInput(dtype)) {
    return BadInput("int8 quantizes BF16, F16 or F32 values, not " + std::string(DTypeName(dtype)));
  }
  std::atomic<uint64_t> bad{kNoBadIndex};
  const auto& k = ActiveKernels();
  const uint64_t min_rows = std::max<uint64_t>(1, (1u << 18) / std::max<uint64_t>(cols, 1));
  ParallelFor(rows, min_rows, threads, [&](uint64_t r0, uint64_t r1) {
    const uint64_t r = k.int8_quantize(dtype, in, cols, r0, r1, out, scb);
    uint64_t cur = bad.load();
    while (r < cur && !bad.compare_exchange_weak(cur, r)) {
    }
  });
  if (bad.load() != kNoBadIndex) {
    return BadInput("element " + std::to_string(bad.load()) +
                    " is NaN or infinite; int8 cannot represent it");
  }
  return Status::OK();
}

Status DequantizeInt8(const int8_t* q, const float* scb, uint64_t rows, uint64_t cols,
                      DType out_dtype, void* out, int threads) {
  if (!QuantizableInput(out_dtype)) {
    return BadInput("int8 dequantizes to BF16, F16 or F32, not " +
                    std::string(DTypeName(out_dtype)));
  }
  const auto& k = ActiveKernels();
  const uint64_t min_rows = std::max<uint64_t>(1, (1u << 18) / std::max<uint64_t>(cols, 1));
  ParallelFor(rows, min_rows, threads, [&](uint64_t r0, uint64_t r1) {
    k.int8_dequantize(q, scb, cols, r0, r1, out_dtype, out);
  });
  return Status::OK();
}

std::string PythonFloatRepr(double v) {
  if (std::isnan(v)) return "NaN";  // json.dumps spelling
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  if (v == 0.0) return std::signbit(v) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // "-2.484375e+00"
  const size_t epos = sci.find('e');
  const int exp = std::stoi(sci.substr(epos + 1));
  std::string mant = sci.substr(0, epos);
  std::string sign;
  if (mant[0] == '-') {
    sign = "-";
    mant.erase(0, 1);
  }
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits += c;
  }
  std::string out;
  if (exp >= -4 && exp < 16) {  // repr's fixed notation for 1e-4 <= |v| < 1e16
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else {
      const size_t int_digits = static_cast<size_t>(exp) + 1;
      if (digits.size() <= int_digits) {
        out = digits + std::string(int_digits - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, int_digits) + "." + digits.substr(int_digits);
      }
    }
    return sign + out;
  }
  out = digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char e[16];
  std::snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return sign + out + e;
}

std::string NF4QuantStateJson(int blocksize, DType dtype, const std::vector<uint64_t>& shape,
                              bool nested, float nested_offset) {
  std::string s = "{\"quant_type\": \"nf4\", \"blocksize\": " + std::to_string(blocksize) +
                  ", \"dtype\": \"" + TorchDTypeName(dtype) +
                  "\", \"shape\": " + ShapeString(shape);
  if (nested) {
    s += ", \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": " +
         PythonFloatRepr(static_cast<double>(nested_offset));
  }
  return s + "}";
}

std::string QuantInfo::ToJson() const {
  nlohmann::ordered_json j;
  j["mode"] = std::string(QuantModeName(mode));
  if (mode == QuantMode::kNF4) {
    j["blocksize"] = blocksize;
    j["nested"] = nested;
  }
  nlohmann::ordered_json t = nlohmann::ordered_json::object();
  for (const QuantizedTensor& q : tensors) {
    t[q.name] = {{"dtype", std::string(DTypeName(q.dtype))}, {"shape", q.shape}};
  }
  j["tensors"] = std::move(t);
  return j.dump();
}

namespace {

Result<QuantInfo> ReadQuantInfo(const Layer& layer) {
  QuantInfo info;
  auto it = layer.metadata().find(kQuantMetadataKey);
  if (it == layer.metadata().end()) {
    // A bitsandbytes layer written by another program: read its quant states.
    for (const TensorInfo& t : layer.tensors()) {
      if (EndsWith(t.name, kQuantStateSuffix)) {
        auto bytes = layer.tensor_data(t);
        auto j = nlohmann::json::parse(reinterpret_cast<const char*>(bytes.data()),
                                       reinterpret_cast<const char*>(bytes.data()) + bytes.size(),
                                       nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("blocksize") ||
            !j["blocksize"].is_number_integer() || !j.contains("shape") || !j["shape"].is_array()) {
          return Status::InvalidArgument("tensor \"" + t.name + "\" is not a valid quant state");
        }
        info.mode = QuantMode::kNF4;
        if (!j["blocksize"].is_number_unsigned() || j["blocksize"].get<uint64_t>() > 4096 ||
            !ValidBlocksize(j["blocksize"].get<int>())) {
          return Status::InvalidArgument("tensor \"" + t.name + "\": bad blocksize");
        }
        info.blocksize = j["blocksize"].get<int>();
        info.nested = j.contains("nested_offset");
        QuantizedTensor q;
        q.name = t.name.substr(0, t.name.size() - std::strlen(kQuantStateSuffix));
        if (j.contains("dtype") && !j["dtype"].is_string()) {
          return Status::InvalidArgument("tensor \"" + t.name + "\": dtype is not a string");
        }
        auto d = FromTorchName(j.value("dtype", std::string("float32")));
        q.dtype = d.value_or(DType::F32);
        for (const auto& x : j["shape"]) {
          if (!x.is_number_unsigned()) {
            return Status::InvalidArgument("tensor \"" + t.name + "\": bad shape");
          }
          q.shape.push_back(x.get<uint64_t>());
        }
        info.tensors.push_back(std::move(q));
      } else if (EndsWith(t.name, ".SCB") && info.mode != QuantMode::kNF4) {
        const std::string w = t.name.substr(0, t.name.size() - 3) + "weight";
        const TensorInfo* wt = layer.find(w);
        if (wt != nullptr && wt->dtype == DType::I8) {
          info.mode = QuantMode::kInt8;
          info.tensors.push_back({w, DType::F16, wt->shape});  // bitsandbytes' usual dtype
        }
      }
    }
    return info;
  }
  auto j = nlohmann::json::parse(it->second, nullptr, false);
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("the layer's \"" + std::string(kQuantMetadataKey) +
                                   "\" metadata is malformed: " + std::string(why));
  };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (!j.contains("mode") || !j["mode"].is_string()) return bad("no mode");
  auto mode = ParseQuantMode(j["mode"].get<std::string>());
  if (!mode || *mode == QuantMode::kNone) return bad("unknown mode");
  info.mode = *mode;
  if (info.mode == QuantMode::kNF4) {
    if (!j.contains("blocksize") || !j["blocksize"].is_number_unsigned() ||
        j["blocksize"].get<uint64_t>() > 4096 || !ValidBlocksize(j["blocksize"].get<int>())) {
      return bad("bad blocksize");
    }
    info.blocksize = j["blocksize"].get<int>();
    if (j.contains("nested") && !j["nested"].is_boolean()) return bad("nested is not a boolean");
    info.nested = j.value("nested", false);
  }
  if (!j.contains("tensors") || !j["tensors"].is_object()) return bad("no tensors");
  for (const auto& [name, t] : j["tensors"].items()) {
    if (!t.is_object() || !t.contains("dtype") || !t["dtype"].is_string() || !t.contains("shape") ||
        !t["shape"].is_array()) {
      return bad("tensor " + name);
    }
    auto d = ParseDType(t["dtype"].get<std::string>());
    if (!d) return bad("dtype of " + name);
    QuantizedTensor q{name, *d, {}};
    for (const auto& x : t["shape"]) {
      if (!x.is_number_unsigned()) return bad("shape of " + name);
      q.shape.push_back(x.get<uint64_t>());
    }
    info.tensors.push_back(std::move(q));
  }
  return info;
}

}  // namespace

Result<QuantInfo> GetQuantInfo(const Layer& layer) {
  try {
    return ReadQuantInfo(layer);
  } catch (const nlohmann::json::exception& e) {  // a check above missed a malformed value
    return Status::InvalidArgument(std::string("the layer's quantization record is malformed (") +
                                   e.what() + ")");
  }
}

Status CheckQuantMode(const Layer& layer, std::string_view mode) {
  auto wanted = ParseQuantMode(mode);
  auto info = GetQuantInfo(layer);
  if (!info.ok()) return info.status();
  const std::string stored = info->mode == QuantMode::kNone
                                 ? std::string("not quantized")
                                 : std::string(QuantModeName(info->mode));
  if (!wanted) {
    // A mode this library does not implement is only a label: nothing to check
    // unless the layer claims to be quantized with one we know.
    if (info->mode == QuantMode::kNone) return Status::OK();
    return Status::InvalidArgument("the layer is quantized as " + stored + ", not \"" +
                                   std::string(mode) + "\"");
  }
  if (*wanted == info->mode) return Status::OK();
  return Status::InvalidArgument(
      "quantization_mode \"" + std::string(mode) + "\" does not match the stored layer (" + stored +
      ")" +
      (info->mode == QuantMode::kNone
           ? "; quantize it first (layercache.quantization.quantize_layer / --quantize)"
           : ""));
}

bool ShouldQuantize(const TensorInfo& t, const QuantConfig& config) {
  if (!QuantizableInput(t.dtype) || t.shape.size() != 2) return false;
  if (!EndsWith(t.name, "weight")) return false;
  if (t.num_elements() < config.min_elements || t.num_elements() == 0) return false;
  if (Contains(t.name, "norm")) return false;
  if (!config.quantize_embeddings) {
    for (const char* part : {"embed", "lm_head", "wte", "wpe"}) {
      if (Contains(t.name, part)) return false;
    }
  }
  return true;
}

Result<LayerPtr> QuantizeLayer(const Layer& layer, const QuantConfig& config) {
  try {
    config.Validate();
  } catch (const Error& e) {
    return e.status();
  }
  auto existing = GetQuantInfo(layer);
  if (!existing.ok()) return existing.status();
  if (existing->mode != QuantMode::kNone) {
    return Status::InvalidArgument("the layer is already quantized (" +
                                   std::string(QuantModeName(existing->mode)) +
                                   "); dequantize it first to change the mode");
  }
  QuantInfo info;
  info.mode = config.mode;
  info.blocksize = config.mode == QuantMode::kNF4 ? config.blocksize : 0;
  info.nested = config.mode == QuantMode::kNF4 && config.nested;
  LayerBuilder builder;
  for (const TensorInfo& t : layer.tensors()) {
    auto data = layer.tensor_data(t);
    if (!ShouldQuantize(t, config)) {
      builder.add_tensor(t.name, t.dtype, t.shape, data);
      continue;
    }
    const uint64_t n = t.num_elements();
    info.tensors.push_back({t.name, t.dtype, t.shape});
    auto fail = [&](const Status& s) {
      return Status::InvalidArgument("tensor \"" + t.name + "\": " + s.message());
    };
    if (config.mode == QuantMode::kNF4) {
      const uint64_t blocks = NumBlocks(n, static_cast<uint64_t>(config.blocksize));
      std::vector<uint8_t> packed((n + 1) / 2);
      std::vector<float> absmax(blocks);
      Status s = QuantizeNF4(t.dtype, data.data(), n, config.blocksize, packed.data(),
                             absmax.data(), config.threads);
      if (!s.ok()) return fail(s);
      builder.add_tensor(t.name, DType::U8, {packed.size(), 1}, packed);
      const auto& table = NF4Table();
      builder.add_tensor(t.name + ".quant_map", DType::F32, {16},
                         std::vector<float>(table.begin(), table.end()));
      float offset = 0.0f;
      if (info.nested) {
        offset = NestedOffset(absmax.data(), blocks, config.nested_mean_threads);
        std::vector<float> centered(blocks);
        for (uint64_t i = 0; i < blocks; ++i) centered[i] = absmax[i] - offset;
        std::vector<uint8_t> qabs(blocks);
        std::vector<float> nested_absmax(NumBlocks(blocks, kNestedBlocksize));
        s = QuantizeBlockwise8(centered.data(), blocks, kNestedBlocksize, qabs.data(),
                               nested_absmax.data());
        if (!s.ok()) return fail(s);
        builder.add_tensor(t.name + ".absmax", DType::U8, {blocks}, qabs);
        builder.add_tensor(t.name + ".nested_absmax", DType::F32, {nested_absmax.size()},
                           nested_absmax);
        const auto& map = DynamicMap();
        builder.add_tensor(t.name + ".nested_quant_map", DType::F32, {256},
                           std::vector<float>(map.begin(), map.end()));
      } else {
        builder.add_tensor(t.name + ".absmax", DType::F32, {blocks}, absmax);
      }
      const std::string state =
          NF4QuantStateJson(config.blocksize, t.dtype, t.shape, info.nested, offset);
      builder.add_tensor(t.name + kQuantStateSuffix, DType::U8, {state.size()},
                         std::as_bytes(std::span<const char>(state.data(), state.size())));
    } else {
      const uint64_t rows = t.shape[0], cols = t.shape[1];
      std::vector<int8_t> q(n);
      std::vector<float> scb(rows);
      Status s =
          QuantizeInt8(t.dtype, data.data(), rows, cols, q.data(), scb.data(), config.threads);
      if (!s.ok()) return fail(s);
      builder.add_tensor(t.name, DType::I8, t.shape, q);
      const std::string prefix = ModulePrefix(t.name);
      builder.add_tensor(prefix + "SCB", DType::F32, {rows}, scb);
      builder.add_tensor(prefix + "weight_format", DType::U8, {}, std::vector<uint8_t>{0});
    }
  }
  for (const auto& [k, v] : layer.metadata()) builder.set_metadata(k, v);
  builder.set_metadata(kQuantMetadataKey, info.ToJson());
  try {
    return builder.build();
  } catch (const Error& e) {
    return e.status().WithContext("cannot build the quantized layer");
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("cannot build the quantized layer: ") + e.what());
  }
}

Result<LayerPtr> DequantizeLayer(const Layer& layer, std::optional<DType> dtype) {
  auto info = GetQuantInfo(layer);
  if (!info.ok()) return info.status();
  if (info->mode == QuantMode::kNone) {
    // Not quantized: the same tensors (a copy sharing nothing).
    LayerBuilder b;
    for (const TensorInfo& t : layer.tensors())
      b.add_tensor(t.name, t.dtype, t.shape, layer.tensor_data(t));
    for (const auto& [k, v] : layer.metadata()) b.set_metadata(k, v);
    return b.build();
  }
  if (dtype && !QuantizableInput(*dtype)) {
    return Status::InvalidArgument("dequantize to BF16, F16 or F32, not " +
                                   std::string(DTypeName(*dtype)));
  }
  std::map<std::string, const QuantizedTensor*> quantized;
  std::set<std::string> aux;
  for (const QuantizedTensor& q : info->tensors) {
    quantized[q.name] = &q;
    if (info->mode == QuantMode::kNF4) {
      for (const char* s :
           {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", kQuantStateSuffix}) {
        aux.insert(q.name + s);
      }
    } else {
      aux.insert(ModulePrefix(q.name) + "SCB");
      aux.insert(ModulePrefix(q.name) + "weight_format");
    }
  }
  // Every recorded shape must match the stored tensor before anything is allocated.
  for (const QuantizedTensor& q : info->tensors) {
    const auto n = Product(q.shape);
    const TensorInfo* t = layer.find(q.name);
    const bool nf4 = info->mode == QuantMode::kNF4;
    if (!n || t == nullptr || t->dtype != (nf4 ? DType::U8 : DType::I8) ||
        t->nbytes != (nf4 ? (*n + 1) / 2 : *n) || (!nf4 && q.shape.size() != 2)) {
      return Status::InvalidArgument("quantized tensor \"" + q.name +
                                     "\" does not match its recorded shape " +
                                     ShapeString(q.shape));
    }
  }
  // Plan the output first, then write every tensor once into its place.
  std::vector<TensorSpec> specs;
  std::map<std::string, const TensorInfo*> sources;
  for (const TensorInfo& t : layer.tensors()) {
    if (aux.count(t.name) != 0) continue;
    auto it = quantized.find(t.name);
    if (it == quantized.end()) {
      specs.push_back({t.name, t.dtype, t.shape});
    } else {
      const QuantizedTensor& q = *it->second;
      specs.push_back(
          {q.name, dtype.value_or(QuantizableInput(q.dtype) ? q.dtype : DType::F32), q.shape});
    }
    sources[t.name] = &t;
  }
  auto plan = PlanLayout(specs);
  if (!plan.ok()) return plan.status();
  const uint64_t total = plan->empty() ? 0 : plan->back().offset + plan->back().nbytes;
  AlignedBuffer buffer(total);
  for (const TensorInfo& o : *plan) {
    const TensorInfo& t = *sources.at(o.name);
    std::byte* dst = buffer.data() + o.offset;
    auto it = quantized.find(t.name);
    if (it == quantized.end()) {
      if (t.nbytes != 0) std::memcpy(dst, layer.tensor_data(t).data(), t.nbytes);
      continue;
    }
    const QuantizedTensor& q = *it->second;
    const DType out = o.dtype;
    const uint64_t n = Product(q.shape).value_or(0);
    auto missing = [&](const std::string& name) {
      return Status::InvalidArgument("quantized tensor \"" + q.name + "\" lacks \"" + name +
                                     "\" or it has the wrong size");
    };
    if (info->mode == QuantMode::kNF4) {
      const uint64_t bs = static_cast<uint64_t>(info->blocksize);
      const uint64_t blocks = NumBlocks(n, bs);
      if (t.dtype != DType::U8 || t.nbytes != (n + 1) / 2) return missing(q.name);
      std::vector<float> absmax(blocks);
      const TensorInfo* a = layer.find(q.name + ".absmax");
      if (info->nested) {
        const TensorInfo* na = layer.find(q.name + ".nested_absmax");
        const TensorInfo* st = layer.find(q.name + kQuantStateSuffix);
        if (a == nullptr || a->dtype != DType::U8 || a->nbytes != blocks)
          return missing(q.name + ".absmax");
        if (na == nullptr || na->dtype != DType::F32 ||
            na->nbytes != 4 * NumBlocks(blocks, kNestedBlocksize)) {
          return missing(q.name + ".nested_absmax");
        }
        if (st == nullptr) return missing(q.name + kQuantStateSuffix);
        auto sb = layer.tensor_data(*st);
        auto j = nlohmann::json::parse(reinterpret_cast<const char*>(sb.data()),
                                       reinterpret_cast<const char*>(sb.data()) + sb.size(),
                                       nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("nested_offset") ||
            !j["nested_offset"].is_number()) {
          return missing(q.name + kQuantStateSuffix);
        }
        const float offset = j["nested_offset"].get<float>();
        std::vector<float> nested(NumBlocks(blocks, kNestedBlocksize));
        std::memcpy(nested.data(), layer.tensor_data(*na).data(), na->nbytes);
        DequantizeBlockwise8(reinterpret_cast<const uint8_t*>(layer.tensor_data(*a).data()),
                             nested.data(), blocks, kNestedBlocksize, absmax.data());
        for (float& x : absmax) x += offset;
      } else {
        if (a == nullptr || a->dtype != DType::F32 || a->nbytes != 4 * blocks) {
          return missing(q.name + ".absmax");
        }
        std::memcpy(absmax.data(), layer.tensor_data(*a).data(), a->nbytes);
      }
      Status s = DequantizeNF4(reinterpret_cast<const uint8_t*>(layer.tensor_data(t).data()),
                               absmax.data(), n, info->blocksize, out, dst);
      if (!s.ok()) return s;
    } else {
      if (t.dtype != DType::I8 || q.shape.size() != 2 || t.nbytes != n) return missing(q.name);
      const TensorInfo* scb = layer.find(ModulePrefix(q.name) + "SCB");
      if (scb == nullptr || scb->dtype != DType::F32 || scb->nbytes != 4 * q.shape[0]) {
        return missing(ModulePrefix(q.name) + "SCB");
      }
      std::vector<float> scales(q.shape[0]);
      std::memcpy(scales.data(), layer.tensor_data(*scb).data(), scb->nbytes);
      Status s = DequantizeInt8(reinterpret_cast<const int8_t*>(layer.tensor_data(t).data()),
                                scales.data(), q.shape[0], q.shape[1], out, dst);
      if (!s.ok()) return s;
    }
  }
  Metadata metadata;
  for (const auto& [k, v] : layer.metadata()) {
    if (k != kQuantMetadataKey) metadata[k] = v;
  }
  return Layer::Create(std::move(*plan), std::move(buffer), std::move(metadata));
}

}  // namespace layercache::quant
