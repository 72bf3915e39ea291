// The loads of LayerCache::import_checkpoint(): one per layer of a local
// checkpoint (layers not read until their load runs), then the tensors
// outside the layers under kNonLayerQuantizationMode.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/env.h"
#include "source/source_load.h"

namespace layercache {

// `layers` empty: every layer. `layer_pattern` "" detects it (LayerLocator).
// The keys carry `revision` ("" none). The checkpoint is read through `env`
// (null: Env::Default()), which must outlive the loads.
Result<std::vector<SourceLoad>> PlanCheckpointImport(
    const std::string& dir, std::string_view model_id, const std::vector<int64_t>& layers,
    const std::string& layer_pattern, bool include_non_layer, const std::string& revision = "",
    Env* env = nullptr);

}  // namespace layercache
