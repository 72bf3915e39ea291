#include "source/checkpoint_import.h"

#include <memory>

#include "layercache/download.h"
#include "source/checkpoint.h"

namespace layercache {

Result<std::vector<SourceLoad>> PlanCheckpointImport(const std::string& dir,
                                                     std::string_view model_id,
                                                     const std::vector<int64_t>& layers,
                                                     const std::string& layer_pattern,
                                                     bool include_non_layer,
                                                     const std::string& revision, Env* env) {
  auto opened = Checkpoint::Open(dir, layer_pattern, env);
  if (!opened.ok()) return opened.status();
  std::shared_ptr<const Checkpoint> checkpoint = std::move(*opened);
  std::vector<int64_t> wanted = layers;
  if (wanted.empty()) {
    for (int64_t i = 0; i < checkpoint->num_layers(); ++i) wanted.push_back(i);
  }
  std::vector<SourceLoad> plan;
  for (int64_t i : wanted) {
    SourceLoad load;
    load.key = LayerKey{std::string(model_id), i, "", revision};
    load.load = [checkpoint, i] { return checkpoint->ReadLayer(i); };
    plan.push_back(std::move(load));
  }
  if (include_non_layer) {
    SourceLoad load;
    load.key = LayerKey{std::string(model_id), 0, kNonLayerQuantizationMode, revision};
    load.load = [checkpoint] { return checkpoint->ReadNonLayerTensors(); };
    plan.push_back(std::move(load));
  }
  return plan;
}

}  // namespace layercache
