#include "source/checkpoint.h"

#include <nlohmann/json.hpp>
#include <set>

#include "io/env.h"
#include "util/path.h"

namespace layercache {
Status CheckShardName(const std::string& name) {
  if (name.empty() || name.find("..") != std::string::npos || name.front() == '/' ||
      name.find("://") != std::string::npos || name.find('\0') != std::string::npos ||
      name.find('\\') != std::string::npos) {
    return Status::Corruption("shard name \"" + name +
                              "\" is not a plain file name inside the model directory");
  }
  return Status::OK();
}

Result<std::map<std::string, std::string>> ParseWeightMap(const std::string& text,
                                                          const std::string& what) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(what + ": not valid JSON (" + e.what() + ")");
  }
  if (!doc.is_object() || !doc.contains("weight_map") || !doc["weight_map"].is_object()) {
    return Status::Corruption(what + ": has no \"weight_map\" object");
  }
  std::map<std::string, std::string> out;
  for (auto it = doc["weight_map"].begin(); it != doc["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return Status::Corruption(what + ": weight_map entry \"" + it.key() + "\" is not a string");
    }
    std::string shard = it.value().get<std::string>();
    if (Status s = CheckShardName(shard); !s.ok()) return s.WithContext(what);
    out[it.key()] = std::move(shard);
  }
  return out;
}

Result<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir,
                                                     const std::string& layer_pattern, Env* env) {
  auto cp = std::make_unique<Checkpoint>();
  cp->dir_ = dir;
  if (env == nullptr) env = Env::Default();
  cp->env_ = env;
  std::set<std::string> shards;
  std::map<std::string, std::string> weight_map;
  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  if (env->Stat(index_path).ok()) {
    auto text = ReadFileToString(env, index_path);
    if (!text.ok()) return text.status();
    auto parsed = ParseWeightMap(*text, index_path);
    if (!parsed.ok()) return parsed.status();
    weight_map = std::move(*parsed);
    for (const auto& [name, shard] : weight_map) shards.insert(shard);
  } else if (env->Stat(JoinPath(dir, "model.safetensors")).ok()) {
    shards.insert("model.safetensors");
  } else {
    return Status::NotFound(dir +
                            " holds neither model.safetensors nor model.safetensors.index.json");
  }
  for (const std::string& shard : shards) {
    auto header = ReadSafetensorsHeader(JoinPath(dir, shard), env);
    if (!header.ok()) return header.status();
    cp->total_bytes_ += header->data_bytes;
    cp->headers_.emplace(shard, std::move(*header));
  }
  for (const auto& [shard, header] : cp->headers_) {
    for (const TensorInfo& t : header.tensors) {
      if (!weight_map.empty()) {
        auto it = weight_map.find(t.name);
        if (it == weight_map.end() || it->second != shard)
          continue;  // not this shard's per the index
      }
      cp->tensors_[t.name] = Location{shard, &t};
    }
  }
  for (const auto& [name, shard] : weight_map) {
    if (cp->tensors_.count(name) == 0) {
      return Status::Corruption(index_path + ": tensor \"" + name + "\" is not in shard " + shard);
    }
  }
  for (const auto& [name, loc] : cp->tensors_) cp->names_.push_back(name);
  auto locator = LayerLocator::Create(cp->names_, layer_pattern);
  if (!locator.ok()) return locator.status().WithContext(dir);
  cp->locator_ = std::move(*locator);
  return cp;
}

Result<LayerPtr> Checkpoint::ReadTensors(
    const std::vector<std::pair<std::string, std::string>>& names) const {
  std::vector<TensorSpec> specs;
  for (const auto& [full, local] : names) {
    const TensorInfo* t = tensors_.at(full).info;
    specs.push_back({local, t->dtype, t->shape});
  }
  auto plan = PlanLayout(std::move(specs));
  if (!plan.ok()) return plan.status();
  uint64_t total = plan->empty() ? 0 : plan->back().offset + plan->back().nbytes;
  AlignedBuffer buffer(total);
  std::map<std::string, std::string> full_of;
  for (const auto& [full, local] : names) full_of[local] = full;
  std::map<std::string, std::unique_ptr<RandomAccessFile>> files;
  for (const TensorInfo& dst : *plan) {
    const Location& loc = tensors_.at(full_of[dst.name]);
    auto& file = files[loc.shard];
    if (!file) {
      auto f = env_->OpenForRead(JoinPath(dir_, loc.shard));
      if (!f.ok()) return f.status();
      file = std::move(*f);
    }
    const uint64_t base = headers_.at(loc.shard).data_offset;
    if (Status s =
            file->Read(base + loc.info->offset, loc.info->nbytes, buffer.data() + dst.offset);
        !s.ok()) {
      return s;
    }
  }
  return Layer::Create(std::move(*plan), std::move(buffer), {});
}

Result<LayerPtr> Checkpoint::ReadLayer(int64_t index) const {
  if (index < 0 || index >= num_layers()) {
    return Status::NotFound(dir_ + " has no layer " + std::to_string(index) + " (it has " +
                            std::to_string(num_layers()) + ")");
  }
  auto names = locator_.LayerTensors(names_, index);
  if (names.empty()) {
    return Status::NotFound(dir_ + ": layer " + std::to_string(index) + " has no tensors");
  }
  return ReadTensors(names);
}

Result<LayerPtr> Checkpoint::ReadNonLayerTensors() const {
  return ReadTensors(locator_.NonLayerTensors(names_));
}

}  // namespace layercache
