// LayerCache's prefetching of host layers: loads queued on the cache's
// executor, options.prefetch_threads at once, each a GetOrLoad, so a
// prefetch and a get_layer of the same key share one load.
#include <future>

#include "layer_cache_impl.h"
#include "layercache/status.h"
#include "source/model_refs.h"
#include "util/logging.h"

namespace layercache {

std::vector<std::shared_future<LayerPtr>> LayerCache::Impl::Prefetch(
    std::string_view model_id, const std::vector<int64_t>& indices, const std::string& quant,
    const IndexLoader& loader, const std::string& revision) {
  std::vector<std::shared_future<LayerPtr>> out;
  const std::string commit(revision.empty() ? refs_->Default(model_id)
                                            : std::string_view(revision));
  for (int64_t i : indices) {
    LayerKey key{std::string(model_id), i, quant, commit};
    // Without a revision: the default revision's layer if cached, else the
    // one cached with cache_layer (no revision), as Get() does.
    if (revision.empty() && !commit.empty() && !chain_->ContainsLocally(key)) {
      key.revision.clear();
    }
    key.Validate();
    if (LayerPtr layer = chain_->Peek(key)) {  // already hot: nothing to do
      std::promise<LayerPtr> p;
      p.set_value(std::move(layer));
      out.push_back(p.get_future().share());
      continue;
    }
    auto task =
        std::make_shared<std::packaged_task<LayerPtr()>>([this, key, i, loader]() -> LayerPtr {
          if (!loader) return chain_->GetBelowTop(key);
          auto r = GetOrLoad(key, [&] { return loader(i); });
          if (!r.ok()) {
            LogWarn("prefetch of " + key.ToString() + " failed: " + r.status().message());
            return nullptr;
          }
          return *r;
        });
    out.push_back(task->get_future().share());
    prefetch_->Submit([task] { (*task)(); });
  }
  return out;
}

std::vector<std::shared_future<LayerPtr>> LayerCache::prefetch(
    std::string_view model_id, const std::vector<int64_t>& layer_indices,
    std::optional<std::string> quantization_mode, IndexLoader loader, const std::string& revision) {
  return impl_->Prefetch(model_id, layer_indices, quantization_mode.value_or(""), loader, revision);
}

LayerPtr LayerCache::get_layer_with_prefetch(std::string_view model_id, int64_t layer_index,
                                             int64_t num_layers, int lookahead,
                                             std::optional<std::string> quantization_mode,
                                             IndexLoader loader, const std::string& revision) {
  if (num_layers <= 0 || layer_index < 0 || layer_index >= num_layers) {
    throw Error(Status::InvalidArgument("layer_index must be in [0, num_layers); got " +
                                        std::to_string(layer_index) + " of " +
                                        std::to_string(num_layers)));
  }
  if (lookahead < 0) throw Error(Status::InvalidArgument("lookahead must be >= 0"));
  std::vector<int64_t> next;
  for (int k = 1; k <= lookahead && k < num_layers; ++k)
    next.push_back((layer_index + k) % num_layers);
  (void)impl_->Prefetch(model_id, next, quantization_mode.value_or(""), loader, revision);
  LayerKey key{std::string(model_id), layer_index, quantization_mode.value_or(""), revision};
  if (LayerPtr layer = get_layer(key)) return layer;
  if (!loader) return nullptr;
  auto r = get_or_load(key, [&] { return loader(layer_index); });
  if (!r.ok()) throw Error(r.status());
  return *r;
}

}  // namespace layercache
