// LayerCache's maintenance: invalidation and removal (every tier, the GPU
// tier's copies included), verification, optimisation, listings, statistics
// and metrics.
#include <iostream>

#include "disk/disk_tier.h"
#include "layer_cache_impl.h"
#include "layercache/status.h"
#include "memory/memory_tier.h"

namespace layercache {

size_t LayerCache::Impl::Invalidate(const std::optional<std::string>& model_id,
                                    const std::optional<int64_t>& layer_index) {
  if (!model_id && layer_index) {
    throw Error(Status::InvalidArgument("layer_index given without model_id; pass the model too"));
  }
  if (layer_index && *layer_index < 0) {
    throw Error(
        Status::InvalidArgument("layer_index must be >= 0, got " + std::to_string(*layer_index)));
  }
  if (model_id && model_id->empty()) {
    throw Error(
        Status::InvalidArgument("model_id is empty; pass a model name, or nothing to clear all"));
  }
  auto removed = chain_->Invalidate(model_id, layer_index, /*clear=*/!model_id);
  DropGpuCopies([&](const LayerKey& k) {
    return (!model_id || k.model_id == *model_id) &&
           (!layer_index || k.layer_index == *layer_index);
  });
  if (!removed.ok()) throw Error(removed.status());
  return (*removed)[disk_index_];
}

bool LayerCache::Impl::RemoveEntry(const LayerKey& key) {
  key.Validate();
  auto removed = chain_->Remove(key);
  DropGpuCopies([&key](const LayerKey& k) { return k == key; });
  if (!removed.ok()) throw Error(removed.status());
  return *removed;
}

void LayerCache::Impl::Clear() {
  Status s = chain_->Clear();
  DropGpuCopies([](const LayerKey&) { return true; });
  if (!s.ok()) throw Error(s);
}

std::vector<CorruptEntry> LayerCache::Impl::Verify() {
  auto corrupt = disk_->Verify();
  if (!corrupt.ok()) throw Error(corrupt.status());
  return std::move(*corrupt);
}

OptimizeReport LayerCache::Impl::Optimize() {
  auto report = disk_->Optimize();
  if (!report.ok()) throw Error(report.status());
  return *report;
}

std::vector<EntryInfo> LayerCache::Impl::List() {
  auto rows = disk_->List();
  if (!rows.ok()) throw Error(rows.status());
  std::vector<EntryInfo> out;
  out.reserve(rows->size());
  for (IndexRow& r : *rows) {
    EntryInfo e;
    e.in_memory = memory_->Contains(r.key);
    e.key = std::move(r.key);
    e.size_bytes = r.size;
    e.data_bytes = r.data_bytes;
    e.last_access_ns = r.last_access_ns;
    e.created_ns = r.created_ns;
    e.checksum_algorithm = std::move(r.checksum_algorithm);
    e.checksum = std::move(r.checksum);
    e.path = disk_->EntryPath(r.digest);
    out.push_back(std::move(e));
  }
  return out;
}

CacheStats LayerCache::Impl::StatsOfThisProcess() {
  CacheStats s;
  chain_->AddStats(&s);
  // The three built-in tiers count their own hits (the remote tier's include
  // fetches outside the chain); any other tier's are the chain's count.
  s.total_hits = s.memory_hits + s.disk_hits + s.remote_hits;
  for (const auto& [name, hits] : s.hits_by_tier) {
    if (name != "memory" && name != "disk" && name != "remote") s.total_hits += hits;
  }
  s.bytes_downloaded = bytes_downloaded_.load(std::memory_order_relaxed);
  return s;
}

CacheStats LayerCache::Impl::Stats() {
  CacheStats s = StatsOfThisProcess();
  s.lifetime = lifetime_->FlushAndRead(s);
  return s;
}

std::string LayerCache::Impl::Metrics() { return MetricsText(Stats(), latencies_); }

void LayerCache::Impl::Flush() {
  chain_->Flush();
  (void)Stats();  // adds this process's counters to the lifetime totals
}

size_t LayerCache::invalidate_cache(std::optional<std::string> model_id,
                                    std::optional<int64_t> layer_index) {
  return impl_->Invalidate(model_id, layer_index);
}

void LayerCache::clear_cache() { impl_->Clear(); }

bool LayerCache::remove_entry(const LayerKey& key) { return impl_->RemoveEntry(key); }

std::vector<CorruptEntry> LayerCache::verify_cache_integrity() { return impl_->Verify(); }

OptimizeReport LayerCache::optimize_cache() { return impl_->Optimize(); }

void LayerCache::flush() { impl_->Flush(); }

CacheStats LayerCache::get_stats() { return impl_->Stats(); }

void LayerCache::print_stats(std::ostream& out) { out << get_stats().ToText() << std::flush; }

void LayerCache::print_stats() { print_stats(std::cout); }

std::vector<EntryInfo> LayerCache::list_entries() { return impl_->List(); }

std::string LayerCache::metrics_text() { return impl_->Metrics(); }

}  // namespace layercache
