#include "remote/remote_tier.h"

#include <hiredis/hiredis.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "format/safetensors_stream.h"
#include "layercache/remote.h"
#include "layercache/safetensors.h"
#include "remote/manifest.h"
#include "util/logging.h"
#include "util/path.h"

namespace layercache {
namespace {

constexpr const char* kPrefix = "lc:v1:";
constexpr size_t kChunksPerBatch = 8;  // bounds hiredis's buffers to ~8 chunks

constexpr const char* kRenewScript =
    "if redis.call('get',KEYS[1])==ARGV[1] then "
    "return redis.call('pexpire',KEYS[1],ARGV[2]) else return 0 end";
constexpr const char* kReleaseScript =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string Hex128(const void* data, size_t n) {
  const XXH128_hash_t h = XXH3_128bits(data, n);
  return Hex64(h.high64) + Hex64(h.low64);
}

std::string ChunkKey(const std::string& digest, const std::string& id, uint64_t i) {
  return std::string(kPrefix) + digest + ":" + id + ":" + std::to_string(i);
}

RedisCommand Cmd(std::vector<std::string> args, size_t key_arg = 1) {
  RedisCommand c;
  c.args = std::move(args);
  c.key_arg = key_arg;
  return c;
}

}  // namespace

// ---- RemoteTier ------------------------------------------------------------

Result<std::unique_ptr<RemoteTier>> RemoteTier::Open(const RemoteTierOptions& options) {
  if (options.urls.empty()) return Status::InvalidArgument("no remote URL given");
  if (options.chunk_bytes < 4096 || options.chunk_bytes > (256ull << 20)) {
    return Status::InvalidArgument("remote chunk size must be between 4 KiB and 256 MiB");
  }
  if (options.timeout_ms < 1 || options.lease_ms < 100 || options.wait_ms < 0) {
    return Status::InvalidArgument(
        "remote timeout must be >= 1 ms, lease >= 100 ms and wait >= 0 ms");
  }
  std::vector<RedisEndpoint> seeds;
  for (const std::string& url : options.urls) {
    auto e = ParseRedisUrl(url);
    if (!e.ok()) return e.status();
    seeds.push_back(std::move(*e));
  }
  return std::unique_ptr<RemoteTier>(new RemoteTier(options, std::move(seeds)));
}

RemoteTier::RemoteTier(const RemoteTierOptions& options, std::vector<RedisEndpoint> seeds)
    : options_(options) {
  RedisClientOptions c;
  c.seeds = std::move(seeds);
  c.connect_timeout_ms = options.timeout_ms;
  c.timeout_ms = options.timeout_ms;
  client_ = std::make_unique<RedisClient>(std::move(c));
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  node_id_ = std::string(host) + ":" + std::to_string(::getpid()) + ":" + RandomHex(8);
  executor_ = options.executor != nullptr ? options.executor : &Executor::Default();
  publisher_ = std::make_unique<Executor::Limited>(*executor_, 2);
}

RemoteTier::~RemoteTier() {
  Flush();
  publisher_.reset();
  {
    std::lock_guard lock(leases_mu_);
    stop_renewing_ = true;
  }
  leases_cv_.notify_all();
  if (renewer_.joinable()) renewer_.join();
}

std::string RemoteTier::ManifestKey(const std::string& digest) {
  return std::string(kPrefix) + digest + ":m";
}
std::string RemoteTier::LeaseKey(const std::string& digest) {
  return std::string(kPrefix) + digest + ":lease";
}

Result<std::vector<RedisReply>> RemoteTier::Run(const std::vector<RedisCommand>& commands) {
  Executor::Scope scope(executor_);  // node groups run on this tier's executor
  auto r = client_->Execute(commands);
  Status failure = r.status();
  if (r.ok()) {
    // None of our commands fails on good data: an error reply (OOM when
    // full under noeviction, CLUSTERDOWN, LOADING, ...) is Redis failing.
    for (const RedisReply& reply : *r) {
      if (reply.is_error()) {
        failure = Status::IOError("Redis replied: " + std::string(reply.str()));
        break;
      }
    }
    if (failure.ok()) return r;
  }
  return Failed(failure);
}

Status RemoteTier::Failed(const Status& failure) {
  errors_.fetch_add(1, std::memory_order_relaxed);
  LogDebug("remote tier: " + failure.message());
  return failure;
}

void RemoteTier::Miss(const std::string& why, const std::string& digest, bool corrupt) {
  misses_.fetch_add(1, std::memory_order_relaxed);
  if (!corrupt) return;
  corrupt_.fetch_add(1, std::memory_order_relaxed);
  LogWarn("remote tier: entry " + digest + " not served: " + why + "; it will be published again");
  // Drop the manifest so that the next loader publishes a whole copy.
  (void)Run({Cmd({"DEL", ManifestKey(digest)})});
}

std::optional<LayerPtr> RemoteTier::Fetch(const LayerKey& key, bool count_miss) {
  Executor::Scope scope(executor_);  // node groups run on this tier's executor
  const std::string digest = key.Digest();
  auto m = Run({Cmd({"GET", ManifestKey(digest)})});
  if (!m.ok()) return std::nullopt;
  const RedisReply& reply = (*m)[0];
  if (reply.is_nil()) {
    if (count_miss) Miss("", digest, false);
    return std::nullopt;
  }
  auto manifest = ParseRemoteManifest(reply.str(), digest);
  if (!manifest.ok()) {
    Miss(manifest.status().message(), digest, true);
    return std::nullopt;
  }
  SafetensorsStreamReader builder(manifest->size, "remote entry " + key.ToString());
  XXH3_state_t* whole = XXH3_createState();
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> whole_owner(whole,
                                                                              XXH3_freeState);
  XXH3_128bits_reset(whole);
  const uint64_t n = manifest->chunk_sums.size();
  auto chunk_size = [&](uint64_t i) {
    return std::min(manifest->chunk_bytes, manifest->size - i * manifest->chunk_bytes);
  };
  // Why chunk i, as received, cannot be used; "" when it can.
  auto problem = [&](uint64_t i, bool present, uint64_t size, const void* bytes) -> std::string {
    const std::string chunk = "chunk " + std::to_string(i);
    if (!present) return chunk + " is missing (evicted or expired)";
    if (size != chunk_size(i)) {
      return chunk + " has " + std::to_string(size) + " bytes, not " +
             std::to_string(chunk_size(i));
    }
    if (Hex64(XXH3_64bits(bytes, size)) != manifest->chunk_sums[i])
      return chunk + " fails its checksum";
    return "";
  };
  // Chunk 0 holds the header (for any layer of a sane size): it goes
  // through the stream reader, which then knows where every data byte goes.
  // The other chunks are received straight into the layer's buffer, a batch
  // on the wire while the previous one is checked.
  uint64_t next_chunk = 0;
  while (next_chunk < n && !builder.header_parsed()) {
    auto c = Run({Cmd({"GET", ChunkKey(digest, manifest->id, next_chunk)})});
    if (!c.ok()) return std::nullopt;
    const RedisReply& chunk = (*c)[0];
    std::string why = problem(next_chunk, !chunk.is_nil() && chunk.is_string(), chunk.str().size(),
                              chunk.str().data());
    if (why.empty()) {
      try {
        if (Status s = builder.Feed(chunk.str()); !s.ok()) why = s.message();
      } catch (const std::bad_alloc&) {  // a header claiming absurd sizes
        why = "its header asks for more memory than there is";
      }
    }
    if (!why.empty()) {
      Miss(why, digest, true);
      return std::nullopt;
    }
    XXH3_128bits_update(whole, chunk.str().data(), chunk.str().size());
    ++next_chunk;
  }
  struct Batch {
    uint64_t first = 0, last = 0;
    std::vector<RedisGetInto> gets;
  };
  auto plan = [&](uint64_t first) -> Result<Batch> {
    Batch b;
    b.first = first;
    b.last = std::min<uint64_t>(n, first + kChunksPerBatch);
    for (uint64_t i = b.first; i < b.last; ++i) {
      auto dst = builder.Destination(i * manifest->chunk_bytes, chunk_size(i));
      if (!dst.ok()) return dst.status();
      b.gets.push_back({ChunkKey(digest, manifest->id, i), *dst, chunk_size(i)});
    }
    return b;
  };
  auto fetch = [&](const Batch& b) -> Result<std::vector<RedisGetOutcome>> {
    auto r = client_->GetInto(b.gets);
    if (!r.ok()) (void)Failed(r.status());
    return r;
  };
  std::optional<Batch> current;
  Executor::Future<Result<std::vector<RedisGetOutcome>>> in_flight;
  if (next_chunk < n) {
    auto b = plan(next_chunk);
    if (!b.ok()) {
      Miss(b.status().message(), digest, true);
      return std::nullopt;
    }
    current = std::move(*b);
    in_flight = executor_->Async([&fetch, b = &*current] { return fetch(*b); });
  }
  while (current) {
    auto outcomes = in_flight.Get();
    if (!outcomes.ok()) return std::nullopt;
    Batch batch = std::move(*current);
    current.reset();
    if (batch.last < n) {
      auto b = plan(batch.last);
      if (!b.ok()) {
        Miss(b.status().message(), digest, true);
        return std::nullopt;
      }
      current = std::move(*b);
      in_flight = executor_->Async([&fetch, b = &*current] { return fetch(*b); });
    }
    for (uint64_t i = batch.first; i < batch.last; ++i) {
      const RedisGetOutcome& o = (*outcomes)[i - batch.first];
      const std::byte* bytes = batch.gets[i - batch.first].dst;
      std::string why = o.kind == RedisGetOutcome::kError
                            ? "Redis replied: " + o.error
                            : problem(i, o.kind != RedisGetOutcome::kNil, o.size, bytes);
      if (why.empty()) {
        if (Status s = builder.Commit(i * manifest->chunk_bytes, chunk_size(i)); !s.ok())
          why = s.message();
      }
      if (!why.empty()) {
        if (in_flight.valid()) (void)in_flight.Get();  // it writes into the buffer
        Miss(why, digest, o.kind != RedisGetOutcome::kError);
        if (o.kind == RedisGetOutcome::kError) (void)Failed(Status::IOError(why));
        return std::nullopt;
      }
      XXH3_128bits_update(whole, bytes, chunk_size(i));
    }
  }
  const XXH128_hash_t h = XXH3_128bits_digest(whole);
  if (Hex64(h.high64) + Hex64(h.low64) != manifest->sum) {
    Miss("the whole fails its checksum", digest, true);
    return std::nullopt;
  }
  auto layer = builder.Finish();
  if (!layer.ok()) {
    Miss(layer.status().message(), digest, true);
    return std::nullopt;
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  bytes_read_.fetch_add(manifest->size, std::memory_order_relaxed);
  return std::move(*layer);
}

Status RemoteTier::Publish(const LayerKey& key, const Layer& layer) {
  const std::string digest = key.Digest();
  const std::vector<std::byte> data = SerializeSafetensors(layer);
  const std::string id = RandomHex(8);
  const uint64_t n = (data.size() + options_.chunk_bytes - 1) / options_.chunk_bytes;
  RemoteManifest manifest;
  manifest.digest = digest;
  manifest.key = key.ToString();
  manifest.id = id;
  manifest.size = data.size();
  manifest.chunk_bytes = options_.chunk_bytes;
  std::vector<std::string> sums;
  const std::string px = std::to_string(options_.ttl_s * 1000);
  std::vector<std::string> written;
  auto forget = [&] {  // best effort: chunks nobody will reference
    std::vector<RedisCommand> dels;
    for (const std::string& k : written) dels.push_back(Cmd({"DEL", k}));
    if (!dels.empty()) (void)Run(dels);
  };
  for (uint64_t first = 0; first < n; first += kChunksPerBatch) {
    const uint64_t last = std::min<uint64_t>(n, first + kChunksPerBatch);
    std::vector<RedisCommand> sets;
    for (uint64_t i = first; i < last; ++i) {
      const uint64_t offset = i * options_.chunk_bytes;
      const uint64_t size = std::min<uint64_t>(options_.chunk_bytes, data.size() - offset);
      const char* p = reinterpret_cast<const char*>(data.data()) + offset;
      sums.push_back(Hex64(XXH3_64bits(p, size)));
      RedisCommand set = Cmd({"SET", ChunkKey(digest, id, i)});
      set.value = std::string_view(p, size);
      sets.push_back(std::move(set));
      if (options_.ttl_s > 0) sets.push_back(Cmd({"PEXPIRE", ChunkKey(digest, id, i), px}));
      written.push_back(ChunkKey(digest, id, i));
    }
    auto r = Run(sets);  // fails on OOM too: maxmemory reached under noeviction
    if (!r.ok()) {
      forget();
      return r.status();
    }
  }
  manifest.chunk_sums = std::move(sums);
  manifest.sum = Hex128(data.data(), data.size());
  std::vector<RedisCommand> commit = {
      Cmd({"SET", ManifestKey(digest), SerializeRemoteManifest(manifest), "NX"})};
  if (options_.ttl_s > 0) commit[0].args.insert(commit[0].args.end(), {"PX", px});
  auto r = Run(commit);
  if (!r.ok()) {
    forget();
    return r.status();
  }
  if ((*r)[0].is_nil()) {  // another node published it first
    forget();
    return Status::OK();
  }
  publishes_.fetch_add(1, std::memory_order_relaxed);
  bytes_written_.fetch_add(data.size(), std::memory_order_relaxed);
  return Status::OK();
}

void RemoteTier::PublishAsync(const LayerKey& key, LayerPtr layer, std::unique_ptr<Lease> lease) {
  {
    std::lock_guard lock(pending_mu_);
    ++pending_;
  }
  std::shared_ptr<Lease> held(std::move(lease));
  publisher_->Submit([this, key, layer = std::move(layer), held]() mutable {
    Status s = Publish(key, *layer);
    if (!s.ok()) LogDebug("remote tier: cannot publish " + key.ToString() + ": " + s.message());
    held.reset();  // release the lease once the manifest is there (or not)
    std::lock_guard lock(pending_mu_);
    if (--pending_ == 0) pending_cv_.notify_all();
  });
}

void RemoteTier::Flush() {
  std::unique_lock lock(pending_mu_);
  pending_cv_.wait(lock, [this] { return pending_ == 0; });
}

std::unique_ptr<RemoteTier::Lease> RemoteTier::TryAcquireLease(const LayerKey& key,
                                                               bool* held_elsewhere) {
  *held_elsewhere = false;
  const std::string lease_key = LeaseKey(key.Digest());
  const std::string token = node_id_ + ":" + RandomHex(4);
  auto r = Run({Cmd({"SET", lease_key, token, "NX", "PX", std::to_string(options_.lease_ms)})});
  if (!r.ok()) return nullptr;
  if ((*r)[0].is_nil()) {
    *held_elsewhere = true;
    return nullptr;
  }
  return std::make_unique<Lease>(this, lease_key, token);
}

std::optional<LayerPtr> RemoteTier::WaitForPeer(const LayerKey& key) {
  lease_waits_.fetch_add(1, std::memory_order_relaxed);
  const std::string digest = key.Digest();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.wait_ms);
  auto delay = std::chrono::milliseconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    // The holder writes the manifest before it releases the lease: look at
    // the lease first, then at the manifest.
    auto lease = Run({Cmd({"EXISTS", LeaseKey(digest)})});
    if (!lease.ok()) return std::nullopt;
    auto manifest = Run({Cmd({"EXISTS", ManifestKey(digest)})});
    if (!manifest.ok()) return std::nullopt;
    if ((*manifest)[0].integer() > 0) return Fetch(key);
    if ((*lease)[0].integer() == 0) return std::nullopt;  // given up, or died
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(100));
  }
  LogWarn("remote tier: waited " + std::to_string(options_.wait_ms) + " ms for another node to " +
          "load " + key.ToString() + "; loading it here");
  return std::nullopt;
}

RemoteStats RemoteTier::stats() const {
  RemoteStats s;
  s.hits = hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  s.bytes_read = bytes_read_.load(std::memory_order_relaxed);
  s.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  s.publishes = publishes_.load(std::memory_order_relaxed);
  s.lease_waits = lease_waits_.load(std::memory_order_relaxed);
  s.errors = errors_.load(std::memory_order_relaxed);
  s.corrupt = corrupt_.load(std::memory_order_relaxed);
  s.breaker_opens = client_->breaker_opens();
  s.breaker_open = !client_->PausedNodes().empty();
  s.redirections = client_->redirections();
  return s;
}

Result<std::vector<RemoteTier::MasterInfo>> RemoteTier::Describe() {
  std::vector<MasterInfo> out;
  auto masters = client_->Masters();
  if (!masters.ok()) return masters.status();
  for (const std::string& node : *masters) {
    MasterInfo m;
    m.address = node;
    std::string cursor = "0";
    do {
      auto r = client_->ExecuteOn(
          node, Cmd({"SCAN", cursor, "MATCH", std::string(kPrefix) + "*:m", "COUNT", "1000"}));
      if (!r.ok()) return r.status();
      const redisReply* raw = r->raw();
      if (raw == nullptr || raw->type != REDIS_REPLY_ARRAY || raw->elements != 2)
        return Status::IOError("unexpected SCAN reply from " + node);
      cursor.assign(raw->element[0]->str, raw->element[0]->len);
      m.layers += raw->element[1]->elements;
    } while (cursor != "0");
    auto field = [&](const std::string& info, const std::string& name) {
      const size_t at = info.find(name + ":");
      if (at == std::string::npos) return std::string();
      const size_t end = info.find_first_of("\r\n", at);
      return info.substr(at + name.size() + 1, end - at - name.size() - 1);
    };
    auto info = client_->ExecuteOn(node, Cmd({"INFO", "memory"}));
    if (!info.ok()) return info.status();
    const std::string text(info->str());
    m.used_memory = std::strtoull(field(text, "used_memory").c_str(), nullptr, 10);
    m.maxmemory = std::strtoull(field(text, "maxmemory").c_str(), nullptr, 10);
    m.policy = field(text, "maxmemory_policy");
    out.push_back(std::move(m));
  }
  return out;
}

// ---- the Tier interface ------------------------------------------------------

Result<LayerPtr> RemoteTier::Get(const LayerKeyRef& key) {
  if (std::optional<LayerPtr> layer = Fetch(key.ToKey())) return std::move(*layer);
  return Status(StatusCode::kNotFound, std::string());
}

bool RemoteTier::Contains(const LayerKey& key) {
  auto r = Run({Cmd({"EXISTS", ManifestKey(key.Digest())})});
  return r.ok() && (*r)[0].integer() > 0;
}

Status RemoteTier::Insert(const LayerKey& key, const LayerPtr& layer,
                          std::unique_ptr<TierLease>* lease, Evicted* /*evicted*/) {
  std::unique_ptr<Lease> held;
  if (lease && dynamic_cast<Lease*>(lease->get()) != nullptr) {
    held.reset(static_cast<Lease*>(lease->release()));
  }
  PublishAsync(key, layer, std::move(held));
  return Status::OK();
}

Result<Tier::Claim> RemoteTier::Acquire(const LayerKey& key) {
  bool held_elsewhere = false;
  Claim claim;
  std::unique_ptr<Lease> lease = TryAcquireLease(key, &held_elsewhere);
  std::optional<LayerPtr> peer;
  if (lease) {
    // Published by a node that released its lease just before ours?
    peer = Fetch(key, /*count_miss=*/false);
  } else if (held_elsewhere) {
    peer = WaitForPeer(key);
  }
  if (peer) {
    claim.filled = std::move(*peer);  // and the lease goes
  } else {
    claim.lease = std::move(lease);
  }
  return claim;
}

Result<size_t> RemoteTier::Invalidate(const std::optional<std::string>& /*model_id*/,
                                      const std::optional<int64_t>& /*layer_index*/) {
  return size_t{0};
}

void RemoteTier::AddStats(CacheStats* stats, uint64_t /*hits: counted by Fetch*/) {
  const RemoteStats r = this->stats();
  stats->remote_enabled = true;
  stats->remote_hits += r.hits;
  stats->remote_misses += r.misses;
  stats->bytes_from_remote += r.bytes_read;
  stats->bytes_to_remote += r.bytes_written;
  stats->remote_publishes += r.publishes;
  stats->remote_lease_waits += r.lease_waits;
  stats->remote_errors += r.errors;
  stats->remote_corrupt += r.corrupt;
  stats->remote_breaker_opens += r.breaker_opens;
  stats->remote_breaker_open = stats->remote_breaker_open || r.breaker_open;
  stats->remote_redirections += r.redirections;
}

RemoteTierOptions RemoteTierOptions::From(const LayerCacheOptions& options) {
  RemoteTierOptions r;
  r.urls = options.ResolvedRemoteUrls();
  r.timeout_ms = options.remote_timeout_ms;
  r.chunk_bytes = static_cast<uint64_t>(options.remote_chunk_mb) << 20;
  r.lease_ms = options.remote_lease_ms;
  r.wait_ms = options.remote_wait_ms;
  r.ttl_s = options.remote_ttl_s;
  return r;
}

Result<RemoteTierInfo> DescribeRemoteTier(const LayerCacheOptions& options) {
  RemoteTierOptions o = RemoteTierOptions::From(options);
  if (o.urls.empty()) {
    return Status::InvalidArgument(
        "no remote tier is configured; pass remote_urls or set LAYERCACHE_REMOTE");
  }
  auto remote = RemoteTier::Open(o);
  if (!remote.ok()) return remote.status();
  auto masters = (*remote)->Describe();
  if (!masters.ok()) return masters.status();
  RemoteTierInfo info;
  info.cluster = (*remote)->client().is_cluster();
  for (auto& m : *masters) {
    info.nodes.push_back(RemoteNodeInfo{std::move(m.address), m.layers, m.used_memory, m.maxmemory,
                                        std::move(m.policy)});
  }
  return info;
}

// ---- Lease -----------------------------------------------------------------

RemoteTier::Lease::Lease(RemoteTier* tier, std::string key, std::string token)
    : tier_(tier), key_(std::move(key)), token_(std::move(token)) {
  id_ = tier_->AddLease(key_, token_);
}

RemoteTier::Lease::~Lease() {
  tier_->DropLease(id_);
  // A renewal already on its way finds the lease gone (the script checks
  // the token), so it cannot revive it.
  (void)tier_->Run({Cmd({"EVAL", kReleaseScript, "1", key_, token_}, 3)});
}

uint64_t RemoteTier::AddLease(std::string key, std::string token) {
  std::lock_guard lock(leases_mu_);
  const uint64_t id = next_lease_++;
  leases_.emplace(id, std::make_pair(std::move(key), std::move(token)));
  if (!renewer_.joinable()) renewer_ = std::thread([this] { RenewLeases(); });
  leases_cv_.notify_all();
  return id;
}

void RemoteTier::DropLease(uint64_t id) {
  std::lock_guard lock(leases_mu_);
  leases_.erase(id);
}

// Every lease_ms / 3, renews every lease held (each for lease_ms more).
void RemoteTier::RenewLeases() {
  const auto period = std::chrono::milliseconds(std::max(options_.lease_ms / 3, 1));
  std::unique_lock lock(leases_mu_);
  while (!stop_renewing_) {
    if (leases_.empty()) {
      leases_cv_.wait(lock, [this] { return stop_renewing_ || !leases_.empty(); });
      continue;
    }
    if (leases_cv_.wait_for(lock, period, [this] { return stop_renewing_; })) break;
    const auto held = leases_;
    lock.unlock();
    for (const auto& [id, lease] : held) {
      (void)Run({Cmd(
          {"EVAL", kRenewScript, "1", lease.first, lease.second, std::to_string(options_.lease_ms)},
          3)});
    }
    lock.lock();
  }
}

}  // namespace layercache
