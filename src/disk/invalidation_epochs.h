// InvalidationEpochs: counters shared by every process using a cache
// directory (a small file, `epochs`, mapped into each), bumped by every
// invalidation and put before it is acknowledged. A copy of a layer held
// outside the disk tier (the memory tier, a write-back queued from it)
// records the epoch of its key when it was read or put; while the epoch has
// not moved, no other process invalidated or replaced that key since, so the
// copy may be served or written back. A copy whose epoch moved is stale.
//
// The epoch of a key is the sum of three counters: one for the whole cache
// (bumped by an invalidation of every model or by layer index alone), one of
// 1,024 slots chosen by the model id (an invalidation of a model or of one of
// its layers), and one of 4,096 slots chosen by the key's digest (a put or
// the removal of one key). Slots are shared by unrelated keys, so an epoch
// may move without its key changing (a needless re-read, never a stale one).
//
// The file needs no durability: after a crash or power loss no process holds
// a copy to compare. Processes on several hosts sharing a network file system
// do not see each other's counters (a shared mapping is coherent within one
// host only): docs/RELIABILITY.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "layercache/key.h"
#include "layercache/status.h"

namespace layercache {

class InvalidationEpochs {
 public:
  static constexpr size_t kModelSlots = 1024;
  static constexpr size_t kKeySlots = 4096;

  // Maps `path` (created if missing, unless read_only). Read-only and absent,
  // or `path` empty: counters private to this process.
  static Result<std::unique_ptr<InvalidationEpochs>> Open(const std::string& path, bool read_only);
  ~InvalidationEpochs();
  InvalidationEpochs(const InvalidationEpochs&) = delete;
  InvalidationEpochs& operator=(const InvalidationEpochs&) = delete;

  // The epoch of `key` (digest: key.Digest()).
  uint64_t Of(std::string_view model_id, std::string_view digest) const;
  uint64_t Of(const LayerKey& key) const { return Of(key.model_id, key.Digest()); }

  void BumpAll();
  void BumpModel(std::string_view model_id);
  void BumpKey(std::string_view digest);

  // Whether the counters are shared with other processes (a mapped file).
  bool shared() const { return shared_; }

 private:
  InvalidationEpochs(uint64_t* slots, size_t bytes, bool shared, bool writable)
      : slots_(slots), bytes_(bytes), shared_(shared), writable_(writable) {}
  static size_t ModelSlot(std::string_view model_id);
  static size_t KeySlot(std::string_view digest);
  uint64_t Load(size_t i) const;
  void Bump(size_t i);

  uint64_t* slots_;  // [0]: all; [1, 1 + kModelSlots): models; then keys
  size_t bytes_;
  bool shared_;
  bool writable_;
};

}  // namespace layercache
