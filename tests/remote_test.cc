// The cluster tier against real Redis servers (Debian's redis-server, started
// by the tests on loopback): one node, and a 3-master Redis Cluster.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "hub_server.h"
#include "layercache/layer_cache.h"
#include "layercache/synthetic_model.h"
#include "redis_server.h"
#include "remote/manifest.h"
#include "remote/redis_client.h"
#include "source/checkpoint.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::MakeLayer;
using testing::RedisCluster;
using testing::RedisServer;
using testing::SeedOf;
using testing::TempDir;

#define REQUIRE_REDIS()                         \
  LAYERCACHE_REQUIRE(testing::RedisInstalled(), \
                     "redis-server is not installed (scripts/install-deps.sh installs it)")

LayerCacheOptions Node(const TempDir& dir, const std::string& name,
                       const std::vector<std::string>& urls) {
  LayerCacheOptions o;
  o.cache_dir = dir / name;
  o.remote_urls = urls;
  o.remote_timeout_ms = 300;
  o.remote_chunk_mb = 1;
  return o;
}

// get_or_load that counts how often the source is asked.
LayerPtr Load(LayerCache& cache, int64_t i, LayerPtr layer, std::atomic<int>* loads) {
  auto r = cache.get_or_load(LayerKey{"m", i, "", ""}, [&]() -> Result<LayerPtr> {
    ++*loads;
    return layer;
  });
  return r.ok() ? *r : nullptr;
}

// Keys of chunks (not manifests, not leases) on a server.
std::vector<std::string> ChunkKeys(const RedisServer& server) {
  std::istringstream out(server.Cli({"--scan", "--pattern", "lc:v1:*"}));
  std::vector<std::string> keys;
  for (std::string k; std::getline(out, k);) {
    if (k.size() > 2 && k.substr(k.size() - 2) != ":m" && k.find(":lease") == std::string::npos)
      keys.push_back(k);
  }
  return keys;
}

TEST(RedisUrl, ParsesAndRefusesClearly) {
  auto e = ParseRedisUrl("redis://alice:s3cret@10.0.0.7:7000/");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->host, "10.0.0.7");
  EXPECT_EQ(e->port, 7000);
  EXPECT_EQ(e->user, "alice");
  EXPECT_EQ(e->password, "s3cret");
  auto p = ParseRedisUrl("redis://:only-password@cache");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->port, 6379);
  EXPECT_EQ(p->user, "");
  EXPECT_EQ(p->password, "only-password");
  EXPECT_EQ(RedactRedisUrl("redis://alice:s3cret@h:1"), "redis://***@h:1");
  for (const char* bad : {"rediss://h:1", "http://h:1", "redis://h:99999", "redis://h:1/2",
                          "redis://:pw@:1", "redis://x:y@h:port"}) {
    auto r = ParseRedisUrl(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().message().find("pw"), std::string::npos) << "no secret in errors";
    EXPECT_EQ(r.status().message().find(":y@"), std::string::npos) << "no secret in errors";
  }
  EXPECT_NE(ParseRedisUrl("rediss://h:1").status().message().find("TLS"), std::string::npos);
  LayerCacheOptions o;
  o.cache_dir = TempDir().path();
  o.remote_urls = {"memcached://h:1"};
  EXPECT_INVALID_ARGUMENT(LayerCache{o});
}

TEST(RemoteManifest, RoundTripsAndRefusesWhatIsNotAManifest) {
  RemoteManifest m;
  m.digest = std::string(32, 'a');
  m.key = "m/0";
  m.id = "00ff00ff00ff00ff";
  m.size = 10;
  m.chunk_bytes = 4;
  m.chunk_sums = {"1", "2", "3"};
  m.sum = "s";
  auto back = ParseRemoteManifest(SerializeRemoteManifest(m), m.digest);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->chunks(), 3u);
  EXPECT_EQ(back->id, m.id);
  EXPECT_FALSE(ParseRemoteManifest(SerializeRemoteManifest(m), std::string(32, 'b')).ok());
  const std::string good = SerializeRemoteManifest(m);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = good;
    t.replace(t.find(from), from.size(), to);
    return ParseRemoteManifest(t, m.digest);
  };
  EXPECT_FALSE(with("\"format\":1", "\"format\":1.5e27").ok());  // found by remote_entry_fuzz
  EXPECT_FALSE(with("\"size\":10", "\"size\":-10").ok());
  EXPECT_FALSE(with("\"size\":10", "\"size\":10.5").ok());
  EXPECT_FALSE(with("\"chunk_bytes\":4", "\"chunk_bytes\":0").ok());
  EXPECT_FALSE(with("\"chunk_bytes\":4", "\"chunk_bytes\":5").ok());  // 2 chunks, 3 sums
  EXPECT_FALSE(with("00ff00ff00ff00ff", "../../etc").ok());
  EXPECT_FALSE(ParseRemoteManifest("[]", m.digest).ok());
  EXPECT_FALSE(ParseRemoteManifest("{", m.digest).ok());
}

TEST(RedisUrl, KeySlotsAreRedisClusters) {
  // Values from the Redis Cluster specification (CRC16-XMODEM of "123456789"
  // is 0x31C3) and from redis-cli CLUSTER KEYSLOT.
  EXPECT_EQ(RedisKeySlot("123456789"), 0x31C3 % 16384);
  EXPECT_EQ(RedisKeySlot("foo"), 12182);
  EXPECT_EQ(RedisKeySlot("{user1000}.following"), RedisKeySlot("{user1000}.followers"));
  EXPECT_EQ(RedisKeySlot("foo{}{bar}"), RedisKeySlot("foo{}{bar}"));
  EXPECT_NE(RedisKeySlot("foo{}{bar}"), RedisKeySlot("bar"));  // empty tag: the whole key
}

// A fake "Redis" on loopback that says it is not a cluster, then answers the
// first batch of GETs with `payload` and closes: for replies real servers do
// not send.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::string payload) : payload_(std::move(payload)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    ::listen(fd_, 4);
    thread_ = std::thread([this] {
      const int c = ::accept(fd_, nullptr, nullptr);
      char buf[4096];
      if (::recv(c, buf, sizeof buf, 0) > 0) {  // CLUSTER SLOTS
        const std::string no = "-ERR This instance has cluster support disabled\r\n";
        (void)!::send(c, no.data(), no.size(), MSG_NOSIGNAL);
      }
      if (::recv(c, buf, sizeof buf, 0) > 0)  // the GETs
        (void)!::send(c, payload_.data(), payload_.size(), MSG_NOSIGNAL);
      ::close(c);
    });
  }
  ~ScriptedServer() {
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  std::string payload_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

TEST(RedisClientProtocol, MalformedGetRepliesAreErrorsNotCrashes) {
  struct Case {
    std::string payload;
    std::string error;  // expected in the message; "" for success
  };
  const std::vector<Case> cases = {
      {"$8\r\n12345678\r\n", ""},
      {"$8\r\n1234", "closed the connection"},
      {"+OK\r\n", "unexpected reply"},
      {"$-5\r\n", "bad bulk length"},
      {"$8\r\n12345678XY", "not terminated"},
      {std::string(5000, '$'), "too long"},
      {"$99999999999999\r\n12", "closed the connection"},
      {"$8\n", "CRLF"},
  };
  for (const Case& c : cases) {
    ScriptedServer server(c.payload);
    RedisClientOptions o;
    o.seeds = {*ParseRedisUrl("redis://127.0.0.1:" + std::to_string(server.port()))};
    RedisClient client(o);
    std::vector<std::byte> dst(8, std::byte{0});
    auto r = client.GetInto({{"k", dst.data(), 8}});
    if (c.error.empty()) {
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ((*r)[0].kind, RedisGetOutcome::kOk);
      EXPECT_EQ(std::memcmp(dst.data(), "12345678", 8), 0);
      continue;
    }
    ASSERT_FALSE(r.ok()) << "payload " << c.payload.substr(0, 20);
    EXPECT_NE(r.status().message().find(c.error), std::string::npos) << r.status().ToString();
  }
}

TEST(RemoteTier, ASecondNodeGetsTheLayerFromRedisNotTheSource) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false);
  ASSERT_TRUE(redis.up());
  const LayerPtr layer = MakeLayer(SeedOf("m", 0), 3 << 20);  // 3 MiB: several 1 MiB chunks
  std::atomic<int> loads{0};
  uint64_t published = 0;
  {
    LayerCache a(Node(dir, "a", {redis.url()}));
    ASSERT_NE(Load(a, 0, layer, &loads), nullptr);
    a.flush();
    const CacheStats s = a.get_stats();
    EXPECT_EQ(s.remote_publishes, 1u);
    EXPECT_GT(s.bytes_to_remote, layer->nbytes());
    published = s.bytes_to_remote;
  }
  EXPECT_EQ(loads, 1);
  EXPECT_GE(ChunkKeys(redis).size(), 3u);

  LayerCache b(Node(dir, "b", {redis.url()}));
  LayerPtr got = Load(b, 0, layer, &loads);
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(got->ContentEquals(*layer));
  EXPECT_EQ(loads, 1) << "the source must not be asked again";
  CacheStats s = b.get_stats();
  EXPECT_EQ(s.remote_hits, 1u);
  EXPECT_EQ(s.disk_cache_entries, 1u) << "a remote hit is written to the local disk tier";
  EXPECT_EQ(s.bytes_from_remote, published);
  EXPECT_NE(s.ToJson().find("\"remote_hits\": 1"), std::string::npos);
  EXPECT_NE(s.ToText().find("Remote Hits: 1"), std::string::npos);

  // get_layer (no source at all) looks in Redis too.
  LayerCache c(Node(dir, "c", {redis.url()}));
  LayerPtr plain = c.get_layer("m", 0);
  ASSERT_NE(plain, nullptr);
  EXPECT_TRUE(plain->ContentEquals(*layer));
  EXPECT_EQ(c.get_layer("m", 1), nullptr);
  EXPECT_EQ(c.get_stats().remote_misses, 1u);
}

TEST(RemoteTier, CorruptMissingOrGarbledEntriesAreNeverServed) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false);
  ASSERT_TRUE(redis.up());
  const LayerPtr layer = MakeLayer(SeedOf("m", 0), 3 << 20);
  std::atomic<int> loads{0};
  auto publish = [&](const std::string& name) {
    LayerCache a(Node(dir, name, {redis.url()}));
    ASSERT_NE(Load(a, 0, layer, &loads), nullptr);
  };
  // A node that finds the entry damaged loads from the source, serves the
  // right bytes, and publishes a whole copy again.
  auto expect_refused = [&](const std::string& name, const std::string& what) {
    const int before = loads;
    LayerCache b(Node(dir, name, {redis.url()}));
    LayerPtr got = Load(b, 0, layer, &loads);
    ASSERT_NE(got, nullptr) << what;
    EXPECT_TRUE(got->ContentEquals(*layer)) << what;
    EXPECT_EQ(loads, before + 1) << what << ": must come from the source";
    EXPECT_EQ(b.get_stats().remote_corrupt, 1u) << what;
    EXPECT_EQ(b.get_stats().remote_hits, 0u) << what;
  };
  publish("a");
  auto chunks = ChunkKeys(redis);
  ASSERT_FALSE(chunks.empty());
  redis.Cli({"SETRANGE", chunks[0], "1000", "CORRUPT!"});
  expect_refused("b", "a corrupted chunk");

  chunks = ChunkKeys(redis);  // b published anew (the old chunks stay until evicted)
  const std::string manifest_key = [&] {
    std::istringstream out(redis.Cli({"--scan", "--pattern", "lc:v1:*:m"}));
    std::string k;
    std::getline(out, k);
    return k;
  }();
  ASSERT_FALSE(manifest_key.empty());
  const std::string manifest = redis.Cli({"GET", manifest_key});
  const std::string id = manifest.substr(manifest.find("\"id\":\"") + 6, 16);
  std::string victim;
  for (const auto& k : chunks)
    if (k.find(":" + id + ":") != std::string::npos) victim = k;
  ASSERT_FALSE(victim.empty());
  redis.Cli({"DEL", victim});  // as Redis's LRU eviction would
  expect_refused("c", "a missing chunk");

  redis.Cli({"SET", manifest_key, "{\"format\":1,\"digest\":\"no\"}"});
  expect_refused("d", "a garbled manifest");

  // Chunks after the first are received straight into the layer's buffer:
  // a longer one, and one with a flipped byte, are refused all the same.
  auto current_chunk = [&](int i) {
    const std::string m = redis.Cli({"GET", manifest_key});
    const std::string current = m.substr(m.find("\"id\":\"") + 6, 16);
    return "lc:v1:" + LayerKey{"m", 0, "", ""}.Digest() + ":" + current + ":" + std::to_string(i);
  };
  redis.Cli({"APPEND", current_chunk(2), "extra"});
  expect_refused("d2", "a chunk longer than the manifest says");
  redis.Cli({"SETRANGE", current_chunk(1), "4096", "X"});
  redis.Cli({"SETRANGE", current_chunk(1), "4097", "Y"});
  expect_refused("d3", "a flipped byte in a later chunk");

  // And a whole copy is served again after all that.
  LayerCache e(Node(dir, "e", {redis.url()}));
  const int before = loads;
  LayerPtr got = Load(e, 0, layer, &loads);
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(got->ContentEquals(*layer));
  EXPECT_EQ(loads, before);
  EXPECT_EQ(e.get_stats().remote_hits, 1u);
}

TEST(RemoteTier, RedisFrozenOrDeadNeverBreaksTheCache) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false);
  ASSERT_TRUE(redis.up());
  std::atomic<int> loads{0};
  {
    LayerCache a(Node(dir, "a", {redis.url()}));
    for (int i = 0; i < 4; ++i)
      ASSERT_NE(Load(a, i, MakeLayer(SeedOf("m", i), 4096), &loads), nullptr);
  }
  for (const char* how : {"frozen", "dead"}) {
    if (std::string(how) == "frozen") {
      redis.Pause();  // accepts connections, answers nothing: every read times out
    } else {
      redis.Resume();
      redis.Kill();
    }
    loads = 0;
    LayerCache b(Node(dir, std::string("b-") + how, {redis.url()}));
    for (int i = 0; i < 4; ++i) {
      LayerPtr got = Load(b, i, MakeLayer(SeedOf("m", i), 4096), &loads);
      ASSERT_NE(got, nullptr) << how;
      EXPECT_TRUE(got->ContentEquals(*MakeLayer(SeedOf("m", i), 4096))) << how;
    }
    EXPECT_EQ(loads, 4) << how << ": every layer from the source";
    const CacheStats s = b.get_stats();
    EXPECT_GE(s.remote_errors, 3u) << how;
    EXPECT_GE(s.remote_breaker_opens, 1u) << how;
    EXPECT_NE(s.ToText().find("Redis set aside"), std::string::npos) << how;
    // The local tiers keep working.
    EXPECT_NE(b.get_layer("m", 2), nullptr) << how;
  }
}

// A node that took the lease and died (it never publishes, never renews):
// the others wait while the lease lives, then load the layer themselves.
TEST(RemoteTier, WhenTheLeaseHolderDiesTheWaiterLoadsItself) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false);
  ASSERT_TRUE(redis.up());
  const LayerKey key{"m", 0, "", ""};
  ASSERT_NE(
      redis.Cli({"SET", "lc:v1:" + key.Digest() + ":lease", "dead-node", "PX", "400"}).find("OK"),
      std::string::npos);
  std::atomic<int> loads{0};
  LayerCache b(Node(dir, "b", {redis.url()}));
  LayerPtr got = Load(b, 0, MakeLayer(7, 4096), &loads);
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(got->ContentEquals(*MakeLayer(7, 4096)));
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(b.get_stats().remote_lease_waits, 1u) << "it waited for the holder first";
  b.flush();
  EXPECT_EQ(b.get_stats().remote_publishes, 1u) << "and published the layer itself";
  EXPECT_EQ(redis.Cli({"EXISTS", "lc:v1:" + key.Digest() + ":lease"}).substr(0, 1), "0")
      << "its own lease is released";
}

// Leases of loads that take longer than remote_lease_ms are kept alive by the
// tier's one renewing thread, for every load in flight, and released after.
TEST(RemoteTier, LongLoadsKeepTheirLeasesUntilTheyFinish) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false);
  ASSERT_TRUE(redis.up());
  LayerCacheOptions o = Node(dir, "a", {redis.url()});
  o.remote_lease_ms = 300;
  LayerCache a(o);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::vector<std::thread> loads;
  for (int64_t i : {0, 1}) {
    loads.emplace_back([&, i] {
      auto r = a.get_or_load(LayerKey{"m", i, "", ""}, [&]() -> Result<LayerPtr> {
        released.wait();
        return MakeLayer(40 + i, 4096);
      });
      EXPECT_TRUE(r.ok()) << r.status().ToString();
    });
  }
  auto lease_exists = [&](int64_t i) {
    return redis.Cli({"EXISTS", "lc:v1:" + LayerKey{"m", i, "", ""}.Digest() + ":lease"})
               .substr(0, 1) == "1";
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!(lease_exists(0) && lease_exists(1)) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  const bool taken = lease_exists(0) && lease_exists(1);
  // Four lease lifetimes: without renewal both would have expired.
  bool kept = taken;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(4 * 300);
  while (kept && std::chrono::steady_clock::now() < until) {
    kept = lease_exists(0) && lease_exists(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  release.set_value();  // the loads finish whatever happened above
  for (auto& t : loads) t.join();
  EXPECT_TRUE(taken) << "both loads took their lease";
  EXPECT_TRUE(kept) << "a lease expired while its load ran";
  EXPECT_FALSE(lease_exists(0) || lease_exists(1)) << "released when the loads finished";
}

TEST(RemoteTier, PasswordsAreUsedAndNeverShown) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false, {"--requirepass", "s3cret-pw"});
  ASSERT_TRUE(redis.up());
  const std::string good = "redis://:s3cret-pw@" + redis.address();
  const std::string bad = "redis://:wrong-pw@" + redis.address();
  std::atomic<int> loads{0};
  {
    LayerCache a(Node(dir, "a", {good}));
    ASSERT_NE(Load(a, 0, MakeLayer(1, 4096), &loads), nullptr);
    a.flush();
    EXPECT_EQ(a.get_stats().remote_publishes, 1u);
    EXPECT_EQ(a.get_stats().remote_errors, 0u);
  }
  LayerCache b(Node(dir, "b", {bad}));
  ASSERT_NE(Load(b, 0, MakeLayer(1, 4096), &loads), nullptr);
  EXPECT_EQ(loads, 2) << "a refused AUTH means the source, not an error to the caller";
  EXPECT_GE(b.get_stats().remote_errors, 1u);
  // The CLI reports the refusal without the password.
  auto cli = testing::RunCommand(
      {testing::CliPath(), "--cache-dir", dir / "cli", "--remote", bad, "stats"});
  EXPECT_NE(cli.exit_code, 0);
  EXPECT_NE(cli.out.find("AUTH"), std::string::npos) << cli.out;
  EXPECT_EQ(cli.out.find("wrong-pw"), std::string::npos) << cli.out;
  auto ok = testing::RunCommand(
      {testing::CliPath(), "--cache-dir", dir / "cli", "--remote", good, "stats"});
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  EXPECT_NE(ok.out.find("1 layers"), std::string::npos) << ok.out;
  EXPECT_EQ(ok.out.find("s3cret-pw"), std::string::npos) << ok.out;
}

// Connections pooled from before Redis died: writing a big chunk to one gets
// EPIPE, and must not raise a SIGPIPE that kills the process.
TEST(RemoteTier, ARedisThatDiesUnderAWriteDoesNotKillTheProcess) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false);
  ASSERT_TRUE(redis.up());
  std::atomic<int> loads{0};
  LayerCacheOptions o = Node(dir, "a", {redis.url()});
  LayerCache a(o);
  // Several loads at once leave several connections in the pool.
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] { Load(a, i, MakeLayer(SeedOf("m", i), 4 << 20), &loads); });
  for (auto& t : threads) t.join();
  a.flush();
  ASSERT_EQ(a.get_stats().remote_publishes, 4u);
  redis.Kill();
  for (int i = 4; i < 8; ++i) {
    LayerPtr got = Load(a, i, MakeLayer(SeedOf("m", i), 8 << 20), &loads);
    ASSERT_NE(got, nullptr);
    EXPECT_TRUE(got->ContentEquals(*MakeLayer(SeedOf("m", i), 8 << 20)));
  }
  a.flush();  // the publications fail on the dead connections
  EXPECT_GE(a.get_stats().remote_errors, 1u);
  EXPECT_EQ(loads, 8);
}

TEST(RemoteTier, PublishedKeysExpireWhenATtlIsSet) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false);
  ASSERT_TRUE(redis.up());
  LayerCacheOptions o = Node(dir, "a", {redis.url()});
  o.remote_ttl_s = 3600;
  std::atomic<int> loads{0};
  LayerCache a(o);
  ASSERT_NE(Load(a, 0, MakeLayer(1, 3 << 20), &loads), nullptr);
  a.flush();
  const auto chunks = ChunkKeys(redis);
  ASSERT_GE(chunks.size(), 3u);
  auto ttl_ms = [&](const std::string& k) { return std::atoll(redis.Cli({"PTTL", k}).c_str()); };
  for (const auto& k : chunks) {
    EXPECT_GT(ttl_ms(k), 3'500'000) << k;
    EXPECT_LE(ttl_ms(k), 3'600'000) << k;
  }
  const std::string manifest = "lc:v1:" + LayerKey{"m", 0, "", ""}.Digest() + ":m";
  EXPECT_GT(ttl_ms(manifest), 3'500'000);
}

// Two nodes in one process, four threads each, all asking for the same eight
// layers at once: every layer comes from the source exactly once.
TEST(RemoteTier, ThreadsOfTwoNodesLoadEachLayerOnce) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false);
  ASSERT_TRUE(redis.up());
  LayerCache a(Node(dir, "a", {redis.url()}));
  LayerCache b(Node(dir, "b", {redis.url()}));
  std::atomic<int> loads[8] = {};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      LayerCache& cache = t % 2 == 0 ? a : b;
      for (int k = 0; k < 8; ++k) {
        const int i = (k + t) % 8;
        const LayerPtr want = MakeLayer(SeedOf("m", i), 1 << 20);
        auto r = cache.get_or_load(LayerKey{"m", i, "", ""}, [&]() -> Result<LayerPtr> {
          ++loads[i];
          return want;
        });
        if (!r.ok() || !(*r)->ContentEquals(*want)) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong, 0);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(loads[i], 1) << "layer " << i;
  a.flush();
  b.flush();
  EXPECT_EQ(a.get_stats().remote_publishes + b.get_stats().remote_publishes, 8u);
}

TEST(RemoteTier, ConfiguredFromTheEnvironment) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisServer redis(dir.path(), false);
  ::setenv("LAYERCACHE_REMOTE", (redis.url() + ", redis://127.0.0.1:1").c_str(), 1);
  LayerCacheOptions o;
  o.cache_dir = dir / "env";
  EXPECT_EQ(o.ResolvedRemoteUrls().size(), 2u);
  LayerCache cache(o);
  ::unsetenv("LAYERCACHE_REMOTE");
  EXPECT_TRUE(cache.get_stats().remote_enabled);
}

// ---- Redis Cluster ---------------------------------------------------------

TEST(RedisClusterTier, ChunksSpreadOverTheMastersAndRedirectionsAreFollowed) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisCluster cluster(dir.path());
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  const LayerPtr layer = MakeLayer(SeedOf("m", 0), 12 << 20);  // 12+ chunks of 1 MiB
  std::atomic<int> loads{0};
  {
    LayerCache a(Node(dir, "a", cluster.urls()));
    ASSERT_NE(Load(a, 0, layer, &loads), nullptr);
  }
  size_t total = 0;
  for (auto& node : cluster.nodes()) {
    const size_t n = ChunkKeys(*node).size();
    EXPECT_GT(n, 0u) << "every master holds some of the chunks";
    total += n;
  }
  EXPECT_GE(total, 12u);

  // ASK: move one chunk to another master while its slot is migrating.
  auto& from = *cluster.nodes()[0];
  auto& to = *cluster.nodes()[1];
  const std::string key = ChunkKeys(from).front();
  const std::string slot = from.Cli({"CLUSTER", "KEYSLOT", key});
  auto id = [](RedisServer& s) {
    std::string out = s.Cli({"CLUSTER", "MYID"});
    return out.substr(0, out.find('\n'));
  };
  const std::string slot_n = slot.substr(0, slot.find('\n'));
  const std::string from_id = id(from), to_id = id(to);
  ASSERT_NE(to.Cli({"CLUSTER", "SETSLOT", slot_n, "IMPORTING", from_id}).find("OK"),
            std::string::npos);
  ASSERT_NE(from.Cli({"CLUSTER", "SETSLOT", slot_n, "MIGRATING", to_id}).find("OK"),
            std::string::npos);
  ASSERT_NE(
      from.Cli({"MIGRATE", "127.0.0.1", std::to_string(to.port()), key, "0", "5000"}).find("OK"),
      std::string::npos);
  LayerCache b(Node(dir, "b", cluster.urls()));
  LayerPtr got = Load(b, 0, layer, &loads);
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(got->ContentEquals(*layer));
  EXPECT_EQ(loads, 1);
  EXPECT_GE(b.get_stats().remote_redirections, 1u) << "ASK followed";

  // MOVED: a client that learned the slot map before the migration finished.
  LayerCache c(Node(dir, "c", cluster.urls()));
  EXPECT_EQ(c.get_layer("m", 99), nullptr);  // contacts the cluster
  for (auto& node : cluster.nodes()) node->Cli({"CLUSTER", "SETSLOT", slot_n, "NODE", to_id});
  got = Load(c, 0, layer, &loads);
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(got->ContentEquals(*layer));
  EXPECT_EQ(loads, 1);
  EXPECT_GE(c.get_stats().remote_redirections, 1u) << "MOVED followed";
}

struct NodeTotals {
  int ok = 0;
  uint64_t remote_hits = 0, lease_waits = 0, errors = 0, publishes = 0;
  std::string out;
};

// Runs `n` worker processes as cluster nodes; `during` runs while they work.
NodeTotals RunNodes(const TempDir& dir, int n, const std::string& endpoint, int layers,
                    const std::vector<std::string>& urls, const std::string& model_dir,
                    const std::function<void()>& during = nullptr) {
  std::string joined;
  for (const auto& u : urls) joined += (joined.empty() ? "" : ",") + u;
  std::vector<std::future<testing::CommandResult>> runs;
  for (int p = 0; p < n; ++p) {
    runs.push_back(std::async(std::launch::async, [&, p] {
      return testing::RunCommand({testing::WorkerPath(), "node", dir / ("node" + std::to_string(p)),
                                  endpoint, "acme/model", std::to_string(layers), joined,
                                  model_dir});
    }));
  }
  if (during) during();
  NodeTotals t;
  for (auto& r : runs) {
    auto result = r.get();
    t.out += result.out;
    if (result.exit_code == 0) ++t.ok;
    unsigned long long hits, waits, errors, publishes, corrupt;
    const size_t at = result.out.find("NODE ");
    if (at != std::string::npos &&
        std::sscanf(result.out.c_str() + at,
                    "NODE remote_hits=%llu lease_waits=%llu errors=%llu publishes=%llu "
                    "corrupt=%llu",
                    &hits, &waits, &errors, &publishes, &corrupt) == 5) {
      t.remote_hits += hits;
      t.lease_waits += waits;
      t.errors += errors;
      t.publishes += publishes;
    }
  }
  return t;
}

struct ServedModel {
  TempDir model;
  SyntheticModelInfo info;
  uint64_t layer_bytes = 0;  // all decoder layers
  uint64_t overhead = 0;     // index and shard headers, per process
  HubServer server;
  int port = -1;
  explicit ServedModel(int layers) {
    SyntheticModelSpec spec;
    spec.num_layers = layers;
    spec.layers_per_shard = 2;
    spec.hidden_size = 512;
    spec.intermediate_size = 1376;
    info = WriteSyntheticModel(model.path(), spec).value();
    layer_bytes = info.bytes_per_layer * static_cast<uint64_t>(layers);
    overhead = std::filesystem::file_size(model / "model.safetensors.index.json") +
               static_cast<uint64_t>(info.num_shards) * 100'000;
    server.AddRepo("acme/model", model.path());
    port = server.Start();
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port); }
};

TEST(RedisClusterTier, FourNodesLoadingAtOnceFetchEachLayerFromTheSourceOnce) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisCluster cluster(dir.path());
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  ServedModel m(8);
  ASSERT_GT(m.port, 0);
  const NodeTotals t = RunNodes(dir, 4, m.endpoint(), 8, cluster.urls(), m.model.path());
  EXPECT_EQ(t.ok, 4) << t.out;
  const uint64_t sent = m.server.bytes_sent();
  std::printf(
      "source sent %llu bytes for %llu bytes of layers (4 nodes); remote hits %llu, "
      "lease waits %llu, publications %llu\n",
      static_cast<unsigned long long>(sent), static_cast<unsigned long long>(m.layer_bytes),
      static_cast<unsigned long long>(t.remote_hits),
      static_cast<unsigned long long>(t.lease_waits), static_cast<unsigned long long>(t.publishes));
  EXPECT_GE(sent, m.layer_bytes);
  EXPECT_LE(sent, m.layer_bytes + m.layer_bytes / 100 + 4 * m.overhead)
      << "each layer's bytes must cross from the source once";
  EXPECT_EQ(t.publishes, 8u);
  EXPECT_EQ(t.remote_hits, 3u * 8u);
}

TEST(RedisClusterTier, KillingAMasterMidRunServesNoWrongBytes) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisCluster cluster(dir.path());
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  ServedModel m(8);
  ASSERT_GT(m.port, 0);
  bool killed = false;
  const NodeTotals t = RunNodes(dir, 4, m.endpoint(), 8, cluster.urls(), m.model.path(), [&] {
    // Once two layers have come from the source, a master dies.
    for (int i = 0; i < 60'000 && m.server.bytes_sent() < 2 * m.info.bytes_per_layer; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    cluster.nodes()[1]->Kill();
    killed = true;
  });
  ASSERT_TRUE(killed);
  EXPECT_EQ(t.ok, 4) << "every node got every layer, with the right bytes:\n" << t.out;
  EXPECT_GT(t.errors, 0u) << "the dead master was noticed";
}

// Failover: 3 masters with a replica each. Four nodes load 8 layers; a master
// is SIGKILLed while four more nodes load them; its replica is promoted.
// Every node gets every layer with the right bytes (from Redis, or from the
// source when Redis fails it); after the promotion four fresh nodes load them
// again: each layer crosses from the source at most once (single flight
// holds), and the figures are printed.
TEST(RedisClusterTier, AKilledMasterIsReplacedByItsReplicaAndNothingWrongIsServed) {
  REQUIRE_REDIS();
  TempDir dir;
  RedisCluster cluster(dir.path(), 3, 1);
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  // The masters, and the replica of the one to be killed.
  std::vector<RedisServer*> masters;
  for (auto& node : cluster.nodes())
    if (node->Cli({"ROLE"}).rfind("master", 0) == 0) masters.push_back(node.get());
  ASSERT_EQ(masters.size(), 3u);
  RedisServer* victim = masters[0];
  const std::string victim_id = [&] {
    std::string id = victim->Cli({"CLUSTER", "MYID"});
    while (!id.empty() && (id.back() == '\n' || id.back() == '\r')) id.pop_back();
    return id;
  }();
  RedisServer* replica = nullptr;
  for (auto& node : cluster.nodes()) {
    if (node.get() == victim) continue;
    const std::string role = node->Cli({"ROLE"});
    if (role.rfind("slave", 0) == 0 &&
        node->Cli({"INFO", "replication"}).find("master_port:" + std::to_string(victim->port())) !=
            std::string::npos)
      replica = node.get();
  }
  ASSERT_NE(replica, nullptr) << "no replica of the master to kill";
  ServedModel m(8);
  ASSERT_GT(m.port, 0);
  // One chunk per layer: a layer's two keys (manifest, chunk) live on one or
  // two masters, so some layers do not need the master that is killed.
  ::setenv("LAYERCACHE_TEST_REMOTE_CHUNK_MB", "16", 1);
  struct Unset {
    ~Unset() { ::unsetenv("LAYERCACHE_TEST_REMOTE_CHUNK_MB"); }
  } unset;
  ASSERT_LE(m.info.bytes_per_layer, 16u << 20);

  // 1. Warm: the layers are published (and replicated).
  const NodeTotals warm = RunNodes(dir, 4, m.endpoint(), 8, cluster.urls(), m.model.path());
  ASSERT_EQ(warm.ok, 4) << warm.out;
  // The replica has caught up with its master (bounded wait).
  bool synced = false;
  for (int i = 0; i < 3000 && !synced; ++i) {
    synced =
        replica->Cli({"INFO", "replication"}).find("master_link_status:up") != std::string::npos;
    if (!synced) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(synced) << replica->Cli({"INFO", "replication"});
  ASSERT_EQ(victim->Cli({"WAIT", "1", "10000"}).substr(0, 1), "1") << "replication";
  // The layers none of whose keys (manifest, chunks) live on the master to be
  // killed: their fetches never need it. The circuit breaker is per node, so
  // these are served from Redis while the victim is down.
  std::set<std::string> layers, on_victim;
  for (RedisServer* master : masters) {
    std::istringstream keys(master->Cli({"KEYS", "lc:v1:*"}));
    for (std::string k; keys >> k;) {
      if (k.size() < 38 || k.compare(k.size() - 6, 6, ":lease") == 0) continue;
      const std::string digest = k.substr(6, 32);
      layers.insert(digest);
      if (master == victim) on_victim.insert(digest);
    }
  }
  ASSERT_EQ(layers.size(), 8u);
  const uint64_t healthy_layers = layers.size() - on_victim.size();
  // 2. Under load: four fresh nodes load the layers; a master dies meanwhile.
  TempDir load_dir;
  const uint64_t sent_before = m.server.bytes_sent();
  std::chrono::steady_clock::time_point killed_at;
  std::optional<double> recovered_s;
  const NodeTotals during =
      RunNodes(load_dir, 4, m.endpoint(), 8, cluster.urls(), m.model.path(), [&] {
        victim->Kill();
        killed_at = std::chrono::steady_clock::now();
        // The replica is promoted (bounded wait: cluster-node-timeout is 2 s).
        for (int i = 0; i < 3000; ++i) {
          if (replica->Cli({"ROLE"}).rfind("master", 0) == 0 &&
              replica->Cli({"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos) {
            recovered_s =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      });
  EXPECT_EQ(during.ok, 4) << "every node got every layer, with the right bytes:\n" << during.out;
  EXPECT_GE(during.remote_hits, 4 * healthy_layers)
      << "layers on the masters that stayed up are served from Redis during the failover";
  ASSERT_TRUE(recovered_s.has_value())
      << "the replica of " << victim_id << " was not promoted: ROLE " << replica->Cli({"ROLE"})
      << "\nCLUSTER INFO " << replica->Cli({"CLUSTER", "INFO"}) << "\nCLUSTER NODES "
      << replica->Cli({"CLUSTER", "NODES"});
  const uint64_t fallback_bytes = m.server.bytes_sent() - sent_before;
  // 3. After the promotion: four more fresh nodes; each layer crosses from
  // the source at most once, and nothing wrong is served.
  TempDir after_dir;
  const uint64_t sent_mid = m.server.bytes_sent();
  const NodeTotals after = RunNodes(after_dir, 4, m.endpoint(), 8, cluster.urls(), m.model.path());
  EXPECT_EQ(after.ok, 4) << after.out;
  const uint64_t sent_after = m.server.bytes_sent() - sent_mid;
  EXPECT_LE(sent_after, m.layer_bytes + m.layer_bytes / 100 + 4 * m.overhead)
      << "after the promotion each layer crosses from the source at most once";
  std::printf(
      "failover: 3 masters + 3 replicas; %d layer fetches under load while a master was "
      "killed (%llu of the 8 layers have no key on it): %llu remote hits, %llu errors, %.1f "
      "layers' bytes from the source (fallbacks); "
      "replica promoted and cluster ok %.2f s after the kill; after it, %d fetches: %llu remote "
      "hits, %.1f layers' bytes from the source\n",
      4 * 8, static_cast<unsigned long long>(healthy_layers),
      static_cast<unsigned long long>(during.remote_hits),
      static_cast<unsigned long long>(during.errors),
      static_cast<double>(fallback_bytes) / static_cast<double>(m.info.bytes_per_layer),
      *recovered_s, 4 * 8, static_cast<unsigned long long>(after.remote_hits),
      static_cast<double>(sent_after) / static_cast<double>(m.info.bytes_per_layer));
}

}  // namespace
}  // namespace layercache
