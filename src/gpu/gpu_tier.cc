#include "gpu/gpu_tier.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "disk/entry_open.h"
#include "util/parallel.h"

namespace layercache {
namespace {

std::string DeviceName(int device) { return "cuda:" + std::to_string(device); }

// Entry tensors must tile the data section back to back from offset 0 with
// their dtype's sizes, as the host Layer requires (a device layer is never
// checked again).
Status CheckTiling(const std::vector<TensorInfo>& tensors, uint64_t data_bytes,
                   const std::string& what) {
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  uint64_t end = 0;
  for (const TensorInfo* t : by_offset) {
    auto size = TensorByteSize(t->dtype, t->shape);
    if (!size.ok() || *size != t->nbytes || t->offset != end) {
      return Status::Corruption(what + ": tensor \"" + t->name +
                                "\" does not follow the previous one with its dtype's size");
    }
    end += t->nbytes;
  }
  if (end != data_bytes) return Status::Corruption(what + ": tensors do not fill the data section");
  return Status::OK();
}

}  // namespace

GpuTier::GpuTier(std::shared_ptr<DeviceRuntime> runtime, GpuTierOptions options)
    : runtime_(std::move(runtime)), options_(options) {}

GpuTier::~GpuTier() { Clear(); }

Status GpuTier::CheckDevice(int device) { return runtime_->CheckOrdinal(device); }

Result<GpuTier::DeviceState*> GpuTier::State(int device) {
  if (Status s = CheckDevice(device); !s.ok()) return s;
  std::lock_guard lock(devices_mu_);
  auto it = devices_.find(device);
  if (it != devices_.end()) return it->second.get();
  auto stream = runtime_->CreateStream(device);
  if (!stream.ok()) return stream.status();
  auto st = std::make_unique<DeviceState>(runtime_, device, options_);
  st->copy_stream = std::make_shared<OwnedStream>(runtime_, device, *stream);
  DeviceState* p = st.get();
  devices_.emplace(device, std::move(st));
  return p;
}

DeviceLayerPtr GpuTier::Lookup(const LayerKey& key, int device) {
  DeviceState* st;
  {
    std::lock_guard lock(devices_mu_);
    auto it = devices_.find(device);
    if (it == devices_.end()) return nullptr;
    st = it->second.get();
  }
  std::lock_guard lock(st->mu);
  auto it = st->map.find(key);
  if (it == st->map.end()) return nullptr;
  it->second.last_access = ++st->clock;
  if (st->advisor.policy() != EvictionPolicy::kLru) {
    st->advisor.Access(LayerKeyHash()(key), it->second.charge);
  }
  return it->second.layer;
}

bool GpuTier::Contains(const LayerKey& key, int device) {
  std::lock_guard lock(devices_mu_);
  auto it = devices_.find(device);
  if (it == devices_.end()) return false;
  std::lock_guard lock2(it->second->mu);
  return it->second->map.contains(key);
}

bool GpuTier::EvictOneLocked(DeviceState& st, bool mru, Evicted* evicted) {
  auto victim = st.map.end();
  for (auto it = st.map.begin(); it != st.map.end(); ++it) {
    if (victim == st.map.end() || (mru ? it->second.last_access > victim->second.last_access
                                       : it->second.last_access < victim->second.last_access)) {
      victim = it;
    }
  }
  if (victim == st.map.end()) return false;
  st.usage -= victim->second.charge;
  if (evicted != nullptr) evicted->emplace_back(victim->first, std::move(victim->second.layer));
  st.map.erase(victim);
  evictions_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

Result<GpuTier::Reservation> GpuTier::Reserve(DeviceState& st, int device, const LayerKey& key,
                                              uint64_t n, Evicted* evicted) {
  Reservation r;
  const size_t evicted_before = evicted != nullptr ? evicted->size() : 0;
  {
    std::lock_guard lock(st.mu);
    st.advisor.Access(LayerKeyHash()(key), n);
    // An older copy of the key goes first: it is being replaced.
    if (auto it = st.map.find(key); it != st.map.end()) {
      st.usage -= it->second.charge;
      st.map.erase(it);
    }
    bool admit = n <= options_.capacity_bytes;
    if (admit && st.usage + n > options_.capacity_bytes && st.advisor.PreferMru()) {
      admit = false;  // a sweep: keep the fixed set, bypass the newcomer
    }
    if (admit) {
      while (st.usage + n > options_.capacity_bytes && EvictOneLocked(st, false, evicted)) {
      }
      // Loads in flight may hold the rest: then this one is not cached.
      admit = st.usage + n <= options_.capacity_bytes;
    }
    if (admit) {
      st.usage += n;
      r.charged = n;
    }
  }
  // Out of device memory: evict (LRU) and try again, until nothing is left.
  size_t evicted_for_memory = 0;
  for (;;) {
    auto p = runtime_->Allocate(device, n);
    if (p.ok()) {
      r.data = *p;
      return r;
    }
    if (p.status().code() != StatusCode::kNoSpace) {
      Unreserve(st, device, r);
      return p.status();
    }
    // The memory must really be freed now: layers evicted for this load are
    // dropped, not handed back for the host tier (they came from there or
    // from disk, and still are there unless evicted since).
    if (evicted != nullptr && evicted->size() > evicted_before) {
      evicted->erase(evicted->begin() + static_cast<std::ptrdiff_t>(evicted_before),
                     evicted->end());
    }
    Evicted dropped;
    bool more;
    {
      std::lock_guard lock(st.mu);
      more = EvictOneLocked(st, false, &dropped);
    }
    dropped.clear();  // the tier's references go (holders keep theirs)
    if (!more) {
      Unreserve(st, device, r);
      return Status::NoSpace("out of memory on " + DeviceName(device) + ": a layer of " +
                             std::to_string(n) + " bytes does not fit even after evicting " +
                             std::to_string(evicted_for_memory) +
                             " cached layer(s) (layers still held by callers stay allocated; lower "
                             "max_gpu_cache_size_gb or free device memory): " +
                             p.status().message());
    }
    ++evicted_for_memory;
  }
}

void GpuTier::Unreserve(DeviceState& st, int device, const Reservation& r) {
  if (r.data != nullptr) runtime_->Free(device, r.data);
  if (r.charged != 0) {
    std::lock_guard lock(st.mu);
    st.usage -= r.charged;
  }
}

Result<DeviceLayerPtr> GpuTier::Finish(DeviceState& st, int device, const LayerKey& key,
                                       const Reservation& r, std::vector<TensorInfo> tensors,
                                       uint64_t nbytes, Metadata metadata, Status copies) {
  const DeviceStream stream = st.copy_stream->stream;
  DeviceEvent ready = nullptr;
  if (copies.ok()) {
    auto e = runtime_->CreateEvent(device);
    if (e.ok()) {
      ready = *e;
      copies = runtime_->RecordEvent(device, ready, stream);
      // A failed copy may surface only now (CUDA reports asynchronous errors
      // late): nothing is cached or served until every copy has completed.
      if (copies.ok()) copies = runtime_->WaitEvent(device, ready);
    } else {
      copies = e.status();
    }
  }
  if (!copies.ok()) {
    (void)runtime_->SynchronizeStream(device, stream);  // no copy may still target the memory
    if (ready != nullptr) runtime_->DestroyEvent(device, ready);
    Unreserve(st, device, r);
    return copies.WithContext("copying " + key.ToString() + " to " + DeviceName(device));
  }
  bytes_copied_.fetch_add(nbytes, std::memory_order_relaxed);
  auto storage =
      std::make_shared<DeviceLayer::Storage>(runtime_, device, r.data, st.copy_stream, ready);
  auto layer = std::make_shared<const DeviceLayer>(std::move(storage), std::move(tensors), nbytes,
                                                   std::move(metadata));
  if (r.charged != 0) {
    std::lock_guard lock(st.mu);
    auto it = st.map.find(key);
    if (it != st.map.end()) {  // a concurrent load of the key finished first
      st.usage -= it->second.charge;
      st.map.erase(it);
    }
    st.map.emplace(key, Entry{layer, r.charged, ++st.clock});
  }
  return DeviceLayerPtr(layer);
}

Status GpuTier::CopyHostBytes(DeviceState& st, int device, std::byte* dst, const std::byte* src,
                              uint64_t n) {
  const DeviceStream stream = st.copy_stream->stream;
  if (n == 0) return Status::OK();
  if (runtime_->IsPinned(src)) {
    // Page-locked: the device reads it directly; chunks keep a failure local.
    const uint64_t chunk = options_.staging_buffer_bytes;
    for (uint64_t off = 0; off < n; off += chunk) {
      if (Status s = runtime_->CopyToDeviceAsync(device, dst + off, src + off,
                                                 std::min(chunk, n - off), stream);
          !s.ok()) {
        return s;
      }
    }
    return Status::OK();
  }
  const uint64_t chunk = st.pool.buffer_bytes();
  const size_t chunks = static_cast<size_t>((n + chunk - 1) / chunk);
  std::mutex mu;
  Status first;
  std::atomic<bool> failed{false};
  ParallelFor(chunks, std::min<unsigned>(options_.io_threads, st.pool.buffers()), [&](size_t i) {
    if (failed) return;
    const uint64_t off = i * chunk;
    const uint64_t len = std::min(chunk, n - off);
    auto lease = st.pool.Acquire();
    Status s = lease.status();
    if (s.ok()) {
      std::memcpy(lease->data, src + off, len);
      s = runtime_->CopyToDeviceAsync(device, dst + off, lease->data, len, stream);
      Status r = st.pool.Release(*lease, s.ok() ? stream : nullptr);
      if (s.ok()) s = r;
    }
    if (!s.ok()) {
      std::lock_guard lock(mu);
      if (first.ok()) first = s;
      failed = true;
    }
  });
  return first;
}

Result<DeviceLayerPtr> GpuTier::LoadFromHost(const LayerKey& key, int device, const Layer& host,
                                             Evicted* evicted) {
  auto st = State(device);
  if (!st.ok()) return st.status();
  auto r = Reserve(**st, device, key, host.nbytes(), evicted);
  if (!r.ok()) return r.status();
  Status copies =
      CopyHostBytes(**st, device, static_cast<std::byte*>(r->data), host.data(), host.nbytes());
  return Finish(**st, device, key, *r, host.tensors(), host.nbytes(), host.metadata(), copies);
}

Result<DeviceLayerPtr> GpuTier::LoadFromFile(const LayerKey& key, int device, Env* env,
                                             const std::string& path, const std::string& digest,
                                             Evicted* evicted) {
  if (Status s = CheckDevice(device); !s.ok()) return s;
  auto opened = OpenEntry(env, path, digest, /*verify_checksum=*/true);
  if (!opened.ok()) return opened.status();
  if (!opened->entry.compression.empty()) {
    return Status::Unsupported(path + ": compressed entries reach the device through the host");
  }
  const uint64_t n = opened->header.data_bytes;
  const uint64_t base = opened->header.data_offset;
  if (Status s = CheckTiling(opened->header.tensors, n, path); !s.ok()) return s;
  auto st = State(device);
  if (!st.ok()) return st.status();
  DeviceState& state = **st;
  auto r = Reserve(state, device, key, n, evicted);
  if (!r.ok()) return r.status();

  // The pipeline: each worker takes the next chunk, reads it into a staging
  // buffer (whose previous copy has completed), hashes it and queues its copy;
  // up to io_threads reads are in flight while earlier copies run.
  RandomAccessFile& f = *opened->file;
  EntryDigest& digest_sum = *opened->digest;
  const uint64_t chunk = EntryDigest::kChunkBytes;
  const size_t chunks = static_cast<size_t>((n + chunk - 1) / chunk);
  const bool in_order = !digest_sum.chunked();  // MD5, SHA-256: one worker, in order
  const unsigned workers =
      in_order ? 1u : std::min<unsigned>(options_.io_threads, state.pool.buffers());
  std::byte* dst = static_cast<std::byte*>(r->data);
  const DeviceStream stream = state.copy_stream->stream;
  std::mutex mu;
  Status first;
  std::atomic<bool> failed{false};
  std::atomic<bool> direct_ok{options_.direct_io};
  Status copies;
  if (state.pool.buffer_bytes() < chunk) {
    copies = Status::InvalidArgument("staging buffers must hold a checksum chunk (8 MiB)");
  } else {
    ParallelFor(chunks, workers, [&](size_t i) {
      if (failed) return;
      const uint64_t off = i * chunk;
      const uint64_t len = std::min(chunk, n - off);
      auto lease = state.pool.Acquire();
      Status s = lease.status();
      if (s.ok()) {
        bool direct = direct_ok && DirectReadPossible(base, lease->data);
        s = ReadEntryChunk(f, base, off, len, lease->data, &direct);
        if (!direct) direct_ok = false;
        const std::span<const std::byte> bytes(lease->data, static_cast<size_t>(len));
        if (s.ok()) {
          if (in_order) {
            digest_sum.Update(bytes);
          } else {
            digest_sum.AddChunk(i, bytes);
          }
          s = runtime_->CopyToDeviceAsync(device, dst + off, lease->data, len, stream);
        }
        Status rel = state.pool.Release(*lease, s.ok() ? stream : nullptr);
        if (s.ok()) s = rel;
      }
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (first.ok()) first = s.WithContext(path);
        failed = true;
      }
    });
    copies = first;
  }
  if (copies.ok()) {
    const std::string actual = digest_sum.FinalHex();
    if (actual != opened->entry.checksum) {
      copies = Status::Corruption(path + ": " + ChecksumAlgorithmName(opened->entry.algorithm) +
                                  " checksum mismatch (recorded " + opened->entry.checksum +
                                  ", computed " + actual + ")");
    }
  }
  if (copies.IsCorruption()) {
    (void)runtime_->SynchronizeStream(device, stream);
    Unreserve(state, device, *r);
    return copies;  // as the disk tier says it, so the caller can treat the entry as bad
  }
  return Finish(state, device, key, *r, std::move(opened->header.tensors), n,
                std::move(opened->entry.user_metadata), copies);
}

Result<LayerPtr> GpuTier::CopyToHost(const DeviceLayer& layer, bool pinned) {
  const uint64_t n = layer.nbytes();
  if (Status s = layer.synchronize(); !s.ok()) return s;
  AlignedBuffer buffer;
  if (pinned) {
    auto p = runtime_->AllocatePinned(n);
    if (!p.ok()) return p.status();
    std::shared_ptr<DeviceRuntime> rt = runtime_;
    buffer = AlignedBuffer::Adopt(static_cast<std::byte*>(*p), n, 4096,
                                  [rt](std::byte* q) { rt->FreePinned(q); });
  } else {
    buffer = AlignedBuffer(n);
  }
  if (Status s = runtime_->CopyToHost(layer.device(), buffer.data(), layer.data(), n); !s.ok()) {
    return s;
  }
  return Layer::Create(layer.tensors(), std::move(buffer), layer.metadata());
}

bool GpuTier::Erase(const LayerKey& key) {
  return EraseIf([&](const LayerKey& k) { return k == key; }) > 0;
}

size_t GpuTier::EraseIf(const std::function<bool(const LayerKey&)>& pred) {
  std::vector<DeviceLayerPtr> dropped;  // released outside the locks
  size_t n = 0;
  std::lock_guard lock(devices_mu_);
  for (auto& [device, st] : devices_) {
    std::lock_guard lock2(st->mu);
    for (auto it = st->map.begin(); it != st->map.end();) {
      if (pred(it->first)) {
        st->usage -= it->second.charge;
        dropped.push_back(std::move(it->second.layer));
        it = st->map.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
  }
  return n;
}

void GpuTier::Clear() {
  EraseIf([](const LayerKey&) { return true; });
}

uint64_t GpuTier::usage(int device) {
  std::lock_guard lock(devices_mu_);
  auto it = devices_.find(device);
  if (it == devices_.end()) return 0;
  std::lock_guard lock2(it->second->mu);
  return it->second->usage;
}

uint64_t GpuTier::usage() const {
  uint64_t total = 0;
  std::lock_guard lock(devices_mu_);
  for (const auto& [device, st] : devices_) {
    std::lock_guard lock2(st->mu);
    total += st->usage;
  }
  return total;
}

size_t GpuTier::size() const {
  size_t total = 0;
  std::lock_guard lock(devices_mu_);
  for (const auto& [device, st] : devices_) {
    std::lock_guard lock2(st->mu);
    total += st->map.size();
  }
  return total;
}

}  // namespace layercache
