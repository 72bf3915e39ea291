#include "hub/hub_model.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <thread>

#include "layercache/progress.h"
#include "source/checkpoint.h"
#include "util/executor.h"

namespace layercache {
namespace {

constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kSingleFile = "model.safetensors";
constexpr uint64_t kMinChunk = 1u << 20;
constexpr std::chrono::milliseconds kProgressPeriod{100};  // between progress reports
constexpr uint64_t kMaxChunk = 32u << 20;

bool IsCommitSha(const std::string& s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

Result<std::shared_ptr<HubModel>> HubModel::Open(std::shared_ptr<HubClient> client,
                                                 const std::string& repo_id,
                                                 const std::string& revision,
                                                 const std::string& filename,
                                                 const std::string& layer_pattern) {
  auto m = std::make_shared<HubModel>();
  m->client_ = std::move(client);
  m->repo_id_ = repo_id;
  m->revision_ = revision.empty() ? "main" : revision;
  auto pin = [&](const RemoteFile& f) {
    m->pinned_ = IsCommitSha(f.commit) ? f.commit : m->revision_;
    m->key_revision_ = !f.commit.empty() ? f.commit : "etag:" + f.etag;
  };
  auto add_single = [&](RemoteFile f) -> Status {
    pin(f);
    Shard shard;
    auto header = m->client_->FetchHeader(f);
    if (!header.ok()) return header.status();
    shard.header = std::make_unique<SafetensorsHeader>(std::move(*header));
    for (const TensorInfo& t : shard.header->tensors) {
      m->names_.push_back(t.name);
      m->shard_of_[t.name] = f.filename;
    }
    shard.file = std::move(f);
    m->shards_.emplace(shard.file.filename, std::move(shard));
    return Status::OK();
  };
  if (!filename.empty()) {
    if (Status s = CheckShardName(filename); !s.ok()) return s;
    auto f = m->client_->Stat(repo_id, m->revision_, filename);
    if (!f.ok()) return f.status();
    if (Status s = add_single(std::move(*f)); !s.ok()) return s;
  } else {
    bool index_missing = false;
    auto index = m->client_->Stat(repo_id, m->revision_, kIndexFile, &index_missing);
    if (index.ok()) {
      pin(*index);
      auto text = m->client_->FetchSmallFile(*index);
      if (!text.ok()) return text.status();
      auto parsed = ParseWeightMap(*text, repo_id + "/" + kIndexFile);
      if (!parsed.ok()) return parsed.status();
      for (auto& [name, shard] : *parsed) {
        m->names_.push_back(name);
        m->shard_of_[name] = std::move(shard);
      }
    } else if (index_missing) {
      bool single_missing = false;
      auto single = m->client_->Stat(repo_id, m->revision_, kSingleFile, &single_missing);
      if (!single.ok()) {
        if (single_missing) {
          return Status::NotFound(repo_id + "@" + m->revision_ + " has neither " + kIndexFile +
                                  " nor " + kSingleFile + "; pass the shard's filename");
        }
        return single.status();
      }
      if (Status s = add_single(std::move(*single)); !s.ok()) return s;
    } else {
      return index.status();
    }
  }
  auto locator = LayerLocator::Create(m->names_, layer_pattern);
  if (!locator.ok()) return locator.status().WithContext(repo_id);
  m->locator_ = std::move(*locator);
  return m;
}

Result<HubModel::Shard*> HubModel::LoadShard(const std::string& filename) {
  {
    std::lock_guard lock(mu_);
    auto it = shards_.find(filename);
    if (it != shards_.end()) return &it->second;
  }
  auto f = client_->Stat(repo_id_, pinned_, filename);
  if (!f.ok()) return f.status();
  auto header = client_->FetchHeader(*f);
  if (!header.ok()) return header.status();
  std::lock_guard lock(mu_);
  Shard& shard = shards_[filename];
  if (!shard.header) {
    shard.file = std::move(*f);
    shard.header = std::make_unique<SafetensorsHeader>(std::move(*header));
  }
  return &shard;
}

Result<std::string> HubModel::FetchFile(const std::string& filename) {
  bool missing = false;
  auto f = client_->Stat(repo_id_, pinned_, filename, &missing);
  if (!f.ok()) return missing ? Status::NotFound(repo_id_ + " has no " + filename) : f.status();
  return client_->FetchSmallFile(*f);
}

Result<LayerDownload> HubModel::DownloadLayer(int64_t index, int connections,
                                              const ProgressCallback& progress) {
  auto names = locator_.LayerTensors(names_, index);
  if (names.empty()) {
    return Status::NotFound(repo_id_ + "@" + revision_ + " has no layer " + std::to_string(index) +
                            " (pattern \"" + locator_.pattern() + "\", " +
                            std::to_string(num_layers()) + " layers)");
  }
  return Download(names, connections, progress, "layer " + std::to_string(index));
}

Result<LayerDownload> HubModel::DownloadNonLayerTensors(int connections,
                                                        const ProgressCallback& progress) {
  return Download(locator_.NonLayerTensors(names_), connections, progress, "non-layer");
}

Result<LayerDownload> HubModel::Download(
    const std::vector<std::pair<std::string, std::string>>& names, int connections,
    const ProgressCallback& progress, const std::string& label) {
  // Where each tensor is: shard, header entry.
  struct Source {
    const Shard* shard;
    const TensorInfo* info;
  };
  std::map<std::string, Source> source_of;  // by local name
  std::vector<TensorSpec> specs;
  for (const auto& [full, local] : names) {
    auto shard = LoadShard(shard_of_.at(full));
    if (!shard.ok()) return shard.status();
    const TensorInfo* info = (*shard)->header->find(full);
    if (info == nullptr) {
      return Status::Corruption(repo_id_ + ": the index puts " + full + " in " +
                                (*shard)->file.filename + ", whose header lacks it");
    }
    source_of[local] = {*shard, info};
    specs.push_back({local, info->dtype, info->shape});
  }
  auto plan = PlanLayout(std::move(specs));
  if (!plan.ok()) return plan.status();
  const uint64_t total = plan->empty() ? 0 : plan->back().offset + plan->back().nbytes;
  AlignedBuffer buffer(total);

  // Byte ranges, coalesced where both the file and the buffer are contiguous.
  struct Range {
    const Shard* shard;
    uint64_t file_offset, length, dst_offset;
  };
  std::vector<Range> ranges;
  for (const TensorInfo& dst : *plan) {
    if (dst.nbytes == 0) continue;
    const Source& src = source_of.at(dst.name);
    const uint64_t file_offset = src.shard->header->data_offset + src.info->offset;
    if (!ranges.empty()) {
      Range& last = ranges.back();
      if (last.shard == src.shard && last.file_offset + last.length == file_offset &&
          last.dst_offset + last.length == dst.offset) {
        last.length += dst.nbytes;
        continue;
      }
    }
    ranges.push_back({src.shard, file_offset, dst.nbytes, dst.offset});
  }
  // Chunks small enough to keep every connection busy.
  connections = std::max(1, connections);
  const uint64_t chunk = std::clamp<uint64_t>(total / (4 * static_cast<uint64_t>(connections)) + 1,
                                              kMinChunk, kMaxChunk);
  std::vector<Range> chunks;
  for (const Range& r : ranges) {
    for (uint64_t done = 0; done < r.length; done += chunk) {
      chunks.push_back(
          {r.shard, r.file_offset + done, std::min(chunk, r.length - done), r.dst_offset + done});
    }
  }
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> fetched{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  Status first_error;
  ProgressUpdate update;
  update.label = "fetch " + label;
  update.total = total;
  // Progress is reported from the calling thread only: while it fetches
  // (from its byte callback) and while it waits for the other connections.
  const std::thread::id caller = std::this_thread::get_id();
  auto last_report = std::chrono::steady_clock::now();
  auto report = [&] {
    if (!progress) return;
    update.done = update.bytes = fetched.load();
    progress(update);
  };
  auto work = [&](size_t) {
    const bool mine = std::this_thread::get_id() == caller;
    for (size_t i; !failed.load() && (i = next.fetch_add(1)) < chunks.size();) {
      const Range& c = chunks[i];
      Status s = client_->FetchRange(
          c.shard->file, c.file_offset, c.length, buffer.data() + c.dst_offset, [&](uint64_t n) {
            fetched.fetch_add(n, std::memory_order_relaxed);
            if (mine && std::chrono::steady_clock::now() - last_report >= kProgressPeriod) {
              last_report = std::chrono::steady_clock::now();
              report();
            }
          });
      if (!s.ok()) {
        std::lock_guard lock(error_mu);
        if (first_error.ok()) first_error = s;
        failed = true;
      }
    }
  };
  // One part per connection, on the current executor (this thread takes part).
  const size_t parts = std::min<size_t>(static_cast<size_t>(connections), chunks.size());
  std::function<void()> tick;
  if (progress) tick = report;
  Executor::Current().ParallelFor(parts, static_cast<unsigned>(parts), work, kProgressPeriod, tick);
  if (!first_error.ok()) return first_error;
  if (progress) {
    update.done = update.bytes = total;
    update.finished = true;
    progress(update);
  }
  auto layer = Layer::Create(std::move(*plan), std::move(buffer), {});
  if (!layer.ok()) return layer.status();
  return LayerDownload{std::move(*layer), total};
}

}  // namespace layercache
