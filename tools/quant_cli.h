// The CLI's quantization options (put --quant nf4 --quantize, fetch --quant
// nf4) and the per-mode summaries of `ls` and `stats`.
#pragma once

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "layercache/layer_cache.h"
#include "layercache/quantization.h"

namespace layercache::cli {

struct QuantFlags {
  bool quantize = false;      // put: quantize the file's layer with --quant
  int blocksize = 64;         // nf4
  bool double_quant = false;  // nf4: nested absmax
};

// The configuration for mode `quant` ("nf4" / "int8"); throws
// Error (kInvalidArgument) for another mode or bad flags.
quant::QuantConfig QuantConfigFor(const std::string& quant, const QuantFlags& f);

// What `put` caches under `quant`: the layer quantized (--quantize), or the
// layer itself after checking that it is stored as `quant` says.
Result<LayerPtr> PrepareForPut(LayerPtr layer, const std::string& quant, const QuantFlags& f);

// "mode: N entries, X on disk (Y of tensors)" per quantization mode.
void PrintModeSummary(const std::vector<EntryInfo>& entries, std::ostream& out);
// {"<mode or none>": {"entries": N, "size_bytes": X, "data_bytes": Y}, ...} as JSON text.
std::string ModeSummaryJson(const std::vector<EntryInfo>& entries);

}  // namespace layercache::cli
