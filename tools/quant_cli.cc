#include "quant_cli.h"

#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <stdexcept>

#include "layercache/progress.h"
#include "layercache/status.h"

namespace layercache::cli {

quant::QuantConfig QuantConfigFor(const std::string& quant, const QuantFlags& f) {
  auto mode = quant::ParseQuantMode(quant);
  if (!mode || *mode == quant::QuantMode::kNone) {
    throw Error(
        Status::InvalidArgument("--quant must be nf4 or int8 to quantize, got \"" + quant + "\""));
  }
  quant::QuantConfig c;
  c.mode = *mode;
  c.blocksize = f.blocksize;
  c.nested = f.double_quant;
  c.Validate();
  return c;
}

Result<LayerPtr> PrepareForPut(LayerPtr layer, const std::string& quant, const QuantFlags& f) {
  if (f.quantize) {
    if (quant.empty())
      return Status::InvalidArgument("--quantize needs --quant nf4 or --quant int8");
    return quant::QuantizeLayer(*layer, QuantConfigFor(quant, f));
  }
  if (Status s = quant::CheckQuantMode(*layer, quant); !s.ok()) {
    return Status::InvalidArgument(s.message() + " (add --quantize to quantize the file)");
  }
  return layer;
}

namespace {
struct ModeTotals {
  uint64_t entries = 0, size = 0, data = 0;
};
std::map<std::string, ModeTotals> Totals(const std::vector<EntryInfo>& entries) {
  std::map<std::string, ModeTotals> m;
  for (const EntryInfo& e : entries) {
    ModeTotals& t = m[e.key.quantization_mode.empty() ? "none" : e.key.quantization_mode];
    ++t.entries;
    t.size += e.size_bytes;
    t.data += e.data_bytes;
  }
  return m;
}
}  // namespace

void PrintModeSummary(const std::vector<EntryInfo>& entries, std::ostream& out) {
  for (const auto& [mode, t] : Totals(entries)) {
    out << "  quantization " << mode << ": " << t.entries << " entries, "
        << Progress::HumanBytes(static_cast<double>(t.size)) << " on disk ("
        << Progress::HumanBytes(static_cast<double>(t.data)) << " of tensors)\n";
  }
}

std::string ModeSummaryJson(const std::vector<EntryInfo>& entries) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [mode, t] : Totals(entries)) {
    j[mode] = {{"entries", t.entries}, {"size_bytes", t.size}, {"data_bytes", t.data}};
  }
  return j.dump();
}

}  // namespace layercache::cli
