#include "remote/redis_client.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <utility>

#include "util/executor.h"
#include "util/logging.h"

namespace layercache {
namespace {

timeval Tv(int ms) {
  timeval tv{};
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381"
bool ParseRedirect(std::string_view error, std::string_view kind, int* slot, std::string* node) {
  if (error.substr(0, kind.size() + 1) != std::string(kind) + " ") return false;
  std::string_view rest = error.substr(kind.size() + 1);
  const size_t space = rest.find(' ');
  if (space == std::string_view::npos) return false;
  try {
    *slot = std::stoi(std::string(rest.substr(0, space)));
  } catch (const std::exception&) {
    return false;
  }
  *node = std::string(rest.substr(space + 1));
  return *slot >= 0 && *slot < 16384 && !node->empty();
}

// hiredis writes with write(2): a peer that died makes the kernel send
// SIGPIPE, which would kill the process. While a guard lives, SIGPIPE is
// blocked in this thread, and one raised meanwhile is consumed on the way
// out (what libcurl does for the same reason); the write then fails with
// EPIPE and the connection reports the error.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &old_);
    was_blocked_ = sigismember(&old_, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    if (was_blocked_) return;
    sigset_t pending;
    sigemptyset(&pending);
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe, nullptr, &zero) == -1 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_;
  bool was_blocked_ = false;
};

}  // namespace

std::string RedactRedisUrl(const std::string& url) {
  const size_t scheme = url.find("://");
  const size_t at = url.rfind('@');
  if (scheme == std::string::npos || at == std::string::npos || at < scheme) return url;
  return url.substr(0, scheme + 3) + "***" + url.substr(at);
}

Result<RedisEndpoint> ParseRedisUrl(const std::string& url) {
  const std::string bad = "remote URL \"" + RedactRedisUrl(url) + "\" ";
  if (url.rfind("rediss://", 0) == 0) {
    return Status::InvalidArgument(
        "rediss:// (TLS) is not supported: Debian's hiredis 0.14 has no TLS; reach Redis over a "
        "private network or a TLS tunnel (stunnel, a sidecar) and give its redis:// address");
  }
  if (url.rfind("redis://", 0) != 0) {
    return Status::InvalidArgument(bad + "must look like redis://[user:password@]host:port");
  }
  std::string rest = url.substr(8);
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  RedisEndpoint e;
  const size_t at = rest.rfind('@');
  if (at != std::string::npos) {
    const std::string auth = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const size_t colon = auth.find(':');
    if (colon == std::string::npos) {
      e.password = auth;
    } else {
      e.user = auth.substr(0, colon);
      e.password = auth.substr(colon + 1);
    }
  }
  if (rest.find('/') != std::string::npos) {
    return Status::InvalidArgument(bad +
                                   "selects a database; layercache uses database 0 (Redis "
                                   "Cluster has no other): drop the /N");
  }
  const size_t colon = rest.rfind(':');
  e.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  if (e.host.empty()) return Status::InvalidArgument(bad + "has no host");
  if (colon != std::string::npos) {
    const std::string port = rest.substr(colon + 1);
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 1 || p > 65535) {
      return Status::InvalidArgument(bad + "has a bad port \"" + port + "\"");
    }
    e.port = static_cast<int>(p);
  }
  return e;
}

uint16_t RedisKeySlot(std::string_view key) {
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1)
      key = key.substr(open + 1, close - open - 1);
  }
  uint16_t crc = 0;  // CRC16-XMODEM, as Redis Cluster specifies
  for (unsigned char ch : key) {
    crc ^= static_cast<uint16_t>(ch) << 8;
    for (int i = 0; i < 8; ++i)
      crc = (crc & 0x8000) != 0 ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<uint16_t>(crc << 1);
  }
  return crc % 16384;
}

// ---- RedisReply ------------------------------------------------------------

void RedisReply::Free::operator()(redisReply* r) const { freeReplyObject(r); }
RedisReply::RedisReply(redisReply* r) : reply_(r, Free()) {}
bool RedisReply::is_nil() const { return !reply_ || reply_->type == REDIS_REPLY_NIL; }
bool RedisReply::is_error() const { return reply_ && reply_->type == REDIS_REPLY_ERROR; }
bool RedisReply::is_string() const {
  return reply_ && (reply_->type == REDIS_REPLY_STRING || reply_->type == REDIS_REPLY_STATUS);
}
bool RedisReply::is_integer() const { return reply_ && reply_->type == REDIS_REPLY_INTEGER; }
std::string_view RedisReply::str() const {
  if (!reply_ || reply_->str == nullptr) return {};
  return {reply_->str, reply_->len};
}
long long RedisReply::integer() const { return is_integer() ? reply_->integer : 0; }

// ---- Connection ------------------------------------------------------------

class RedisClient::Connection {
 public:
  static Result<std::unique_ptr<Connection>> Open(const RedisEndpoint& e, int connect_ms,
                                                  int timeout_ms) {
    redisContext* c = redisConnectWithTimeout(e.host.c_str(), e.port, Tv(connect_ms));
    if (c == nullptr || c->err != 0) {
      const std::string why = c != nullptr ? c->errstr : "out of memory";
      if (c != nullptr) redisFree(c);
      return Status::IOError("cannot connect to Redis at " + e.Address() + ": " + why);
    }
    auto conn = std::unique_ptr<Connection>(new Connection(c, timeout_ms));
    if (redisSetTimeout(c, Tv(timeout_ms)) != REDIS_OK) {
      return Status::IOError("cannot set a timeout on the connection to " + e.Address());
    }
    if (!e.password.empty()) {
      RedisCommand auth;
      auth.args = e.user.empty() ? std::vector<std::string>{"AUTH", e.password}
                                 : std::vector<std::string>{"AUTH", e.user, e.password};
      auto r = conn->Run({&auth}, false);
      if (!r.ok()) return r.status();
      if ((*r)[0].is_error()) {
        return Status::IOError("Redis at " + e.Address() + " refused AUTH" +
                               (e.user.empty() ? "" : " for user " + e.user) + ": " +
                               std::string((*r)[0].str()));
      }
    }
    return conn;
  }
  ~Connection() { redisFree(c_); }

  Result<std::vector<RedisReply>> Run(const std::vector<const RedisCommand*>& commands,
                                      bool asking) {
    SigpipeGuard no_sigpipe;
    static const char* kAsking = "ASKING";
    static const size_t kAskingLen = 6;
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const RedisCommand* cmd : commands) {
      if (asking && redisAppendCommandArgv(c_, 1, &kAsking, &kAskingLen) != REDIS_OK)
        return Broken();
      argv.clear();
      lens.clear();
      for (const std::string& a : cmd->args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
      }
      if (!cmd->value.empty()) {
        argv.push_back(cmd->value.data());
        lens.push_back(cmd->value.size());
      }
      if (redisAppendCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
          REDIS_OK) {
        return Broken();
      }
    }
    std::vector<RedisReply> out;
    out.reserve(commands.size());
    for (size_t i = 0; i < commands.size(); ++i) {
      void* reply = nullptr;
      if (asking) {
        if (redisGetReply(c_, &reply) != REDIS_OK) return Broken();
        freeReplyObject(reply);
      }
      if (redisGetReply(c_, &reply) != REDIS_OK) return Broken();
      out.emplace_back(static_cast<redisReply*>(reply));
    }
    return out;
  }

  // Pipelined GETs whose values are received straight into their
  // destinations: hiredis writes the commands; the replies are parsed here
  // from the socket (hiredis's reader holds nothing between calls).
  Result<std::vector<RedisGetOutcome>> GetInto(const std::vector<const RedisGetInto*>& gets) {
    SigpipeGuard no_sigpipe;
    if (c_->reader->len != c_->reader->pos) {
      return Status::IOError("Redis connection has unread data");  // never expected
    }
    for (const RedisGetInto* g : gets) {
      const char* argv[2] = {"GET", g->key.data()};
      const size_t lens[2] = {3, g->key.size()};
      if (redisAppendCommandArgv(c_, 2, argv, lens) != REDIS_OK) return Broken();
    }
    int done = 0;
    do {
      if (redisBufferWrite(c_, &done) == REDIS_ERR) return Broken();
    } while (done == 0);
    std::vector<RedisGetOutcome> out(gets.size());
    std::string line;
    for (size_t i = 0; i < gets.size(); ++i) {
      if (Status s = ReadLine(&line); !s.ok()) return s;
      RedisGetOutcome& o = out[i];
      if (line[0] == '-') {
        o.kind = RedisGetOutcome::kError;
        o.error = line.substr(1);
        continue;
      }
      if (line[0] != '$') return Protocol("unexpected reply to GET: " + line.substr(0, 40));
      char* end = nullptr;
      const long long n = std::strtoll(line.c_str() + 1, &end, 10);
      if (end == line.c_str() + 1 || *end != '\0' || n < -1) return Protocol("bad bulk length");
      if (n == -1) {
        o.kind = RedisGetOutcome::kNil;
        continue;
      }
      o.size = static_cast<uint64_t>(n);
      if (o.size == gets[i]->expected) {
        if (Status s = ReadExact(reinterpret_cast<char*>(gets[i]->dst), o.size); !s.ok()) return s;
        o.kind = RedisGetOutcome::kOk;
      } else {
        if (Status s = Skip(o.size); !s.ok()) return s;
        o.kind = RedisGetOutcome::kWrongSize;
      }
      char crlf[2];
      if (Status s = ReadExact(crlf, 2); !s.ok()) return s;
      if (crlf[0] != '\r' || crlf[1] != '\n') return Protocol("bulk string not terminated");
    }
    if (rpos_ != rlen_) return Protocol("more bytes than replies");
    return out;
  }

  bool broken() const { return broken_; }

 private:
  Connection(redisContext* c, int timeout_ms) : c_(c), timeout_ms_(timeout_ms) {}

  // Socket reads for GetInto: a small buffer for reply headers; big values
  // go from the socket to their destination directly.
  Status Fill() {
    if (rpos_ == rlen_) rpos_ = rlen_ = 0;
    if (rlen_ == rbuf_.size()) {
      std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rlen_ - rpos_);
      rlen_ -= rpos_;
      rpos_ = 0;
    }
    const ssize_t n = Recv(rbuf_.data() + rlen_, rbuf_.size() - rlen_);
    if (n <= 0) return RecvFailed(n);
    rlen_ += static_cast<size_t>(n);
    return Status::OK();
  }
  Status ReadLine(std::string* line) {
    for (;;) {
      const char* begin = rbuf_.data() + rpos_;
      const void* nl = std::memchr(begin, '\n', rlen_ - rpos_);
      if (nl != nullptr) {
        const size_t n = static_cast<size_t>(static_cast<const char*>(nl) - begin);
        if (n == 0 || begin[n - 1] != '\r') return Protocol("line not ended by CRLF");
        line->assign(begin, n - 1);
        rpos_ += n + 1;
        if (line->empty()) return Protocol("empty reply line");
        return Status::OK();
      }
      if (rlen_ - rpos_ > 4096) return Protocol("reply line too long");
      if (Status s = Fill(); !s.ok()) return s;
    }
  }
  Status ReadExact(char* dst, uint64_t n) {
    const size_t have = std::min<uint64_t>(n, rlen_ - rpos_);
    std::memcpy(dst, rbuf_.data() + rpos_, have);
    rpos_ += have;
    for (uint64_t done = have; done < n;) {
      const ssize_t got = Recv(dst + done, static_cast<size_t>(n - done));
      if (got <= 0) return RecvFailed(got);
      done += static_cast<uint64_t>(got);
    }
    return Status::OK();
  }
  Status Skip(uint64_t n) {
    while (n > 0) {
      if (rpos_ == rlen_) {
        if (Status s = Fill(); !s.ok()) return s;
      }
      const size_t take = std::min<uint64_t>(n, rlen_ - rpos_);
      rpos_ += take;
      n -= take;
    }
    return Status::OK();
  }
  ssize_t Recv(char* dst, size_t n) {
    for (;;) {
      const ssize_t got = ::recv(c_->fd, dst, n, 0);
      if (got < 0 && errno == EINTR) continue;
      return got;
    }
  }
  Status RecvFailed(ssize_t n) {
    broken_ = true;
    if (n == 0) return Status::IOError("Redis closed the connection");
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return Status::IOError("Redis did not answer within " + std::to_string(timeout_ms_) + " ms");
    return Status::IOError(std::string("Redis connection failed: ") + std::strerror(errno));
  }
  Status Protocol(const std::string& what) {
    broken_ = true;
    return Status::IOError("Redis protocol error: " + what);
  }

  std::vector<char> rbuf_ = std::vector<char>(64 << 10);
  size_t rpos_ = 0;
  size_t rlen_ = 0;
  Status Broken() {
    broken_ = true;
    const std::string why = c_->errstr[0] != '\0' ? c_->errstr : "unknown error";
    if (why == "Resource temporarily unavailable")
      return Status::IOError("Redis did not answer within " + std::to_string(timeout_ms_) + " ms");
    return Status::IOError("Redis connection failed: " + why);
  }
  redisContext* c_;
  int timeout_ms_;
  bool broken_ = false;
};

// ---- RedisClient -----------------------------------------------------------

// ---- CircuitBreaker --------------------------------------------------------

bool CircuitBreaker::Allow() {
  std::lock_guard lock(mu_);
  if (!open_) return true;
  if (probing_ || Clock::now() < retry_at_) return false;
  probing_ = true;  // half-open: one probe at a time
  return true;
}

void CircuitBreaker::Success() {
  std::lock_guard lock(mu_);
  failures_ = 0;
  if (open_) {
    open_ = false;
    probing_ = false;
    cooldown_ = std::chrono::seconds(1);
  }
}

bool CircuitBreaker::Failure() {
  std::lock_guard lock(mu_);
  ++failures_;
  if (open_) {
    probing_ = false;
    cooldown_ = std::min<Clock::duration>(cooldown_ * 2, std::chrono::seconds(60));
    retry_at_ = Clock::now() + cooldown_;
    return false;
  }
  if (failures_ < threshold_) return false;
  open_ = true;
  retry_at_ = Clock::now() + cooldown_;
  return true;
}

bool CircuitBreaker::open() const {
  std::lock_guard lock(mu_);
  return open_;
}

// ---- RedisClient -----------------------------------------------------------

namespace {

// An error reply that says the node cannot serve now (not a redirection, and
// not a refusal that is the caller's to judge).
bool NodeFailing(std::string_view error) {
  for (std::string_view p : {"CLUSTERDOWN", "LOADING", "OOM", "MASTERDOWN", "BUSY", "TRYAGAIN"})
    if (error.rfind(p, 0) == 0) return true;
  return false;
}

}  // namespace

CircuitBreaker& RedisClient::BreakerFor(const std::string& node) {
  std::lock_guard lock(mu_);
  auto& b = breakers_[node];
  if (!b) b = std::make_unique<CircuitBreaker>();
  return *b;
}

Status RedisClient::Admit(const std::string& node) {
  if (BreakerFor(node).Allow()) return Status::OK();
  return Status::IOError("Redis at " + node + " is set aside for now after errors");
}

void RedisClient::Record(const std::string& node, const Status& outcome) {
  CircuitBreaker& b = BreakerFor(node);
  if (outcome.ok()) {
    const bool was_open = b.open();
    b.Success();
    if (was_open) LogInfo("remote tier: Redis at " + node + " answers again; using it");
    return;
  }
  if (b.Failure()) {
    breaker_opens_.fetch_add(1, std::memory_order_relaxed);
    LogWarn("remote tier: " + outcome.message() +
            "; not using that node for a while (its layers come from disk and the source)");
  }
}

std::vector<std::string> RedisClient::PausedNodes() const {
  std::vector<std::pair<std::string, CircuitBreaker*>> all;
  {
    std::lock_guard lock(mu_);
    for (const auto& [node, b] : breakers_) all.emplace_back(node, b.get());
  }
  std::vector<std::string> out;
  for (const auto& [node, b] : all)
    if (b->open()) out.push_back(node);
  return out;
}

RedisClient::RedisClient(RedisClientOptions options) : options_(std::move(options)) {
  slots_.fill(-1);
}
RedisClient::~RedisClient() = default;

RedisEndpoint RedisClient::EndpointFor(const std::string& node) const {
  RedisEndpoint e = options_.seeds.front();  // credentials are the cluster's
  const size_t colon = node.rfind(':');
  e.host = node.substr(0, colon);
  e.port = std::atoi(node.c_str() + colon + 1);
  return e;
}

Result<std::unique_ptr<RedisClient::Connection>> RedisClient::Take(const std::string& node) {
  {
    std::lock_guard lock(mu_);
    auto& pool = idle_[node];
    if (!pool.empty()) {
      auto c = std::move(pool.back());
      pool.pop_back();
      return c;
    }
  }
  return Connection::Open(EndpointFor(node), options_.connect_timeout_ms, options_.timeout_ms);
}

void RedisClient::Give(const std::string& node, std::unique_ptr<Connection> c) {
  if (c->broken()) return;
  std::lock_guard lock(mu_);
  auto& pool = idle_[node];
  if (pool.size() < 16) pool.push_back(std::move(c));
}

Result<std::vector<RedisReply>> RedisClient::RunOn(const std::string& node,
                                                   const std::vector<const RedisCommand*>& commands,
                                                   bool asking) {
  if (Status s = Admit(node); !s.ok()) return s;
  auto conn = Take(node);
  if (!conn.ok()) {
    Status failed = conn.status().WithContext("Redis at " + node);
    Record(node, failed);
    return failed;
  }
  auto r = (*conn)->Run(commands, asking);
  Give(node, std::move(*conn));
  if (!r.ok()) {
    Status failed = r.status().WithContext("Redis at " + node);
    Record(node, failed);
    return failed;
  }
  Status outcome;
  for (const RedisReply& reply : *r)
    if (reply.is_error() && NodeFailing(reply.str()))
      outcome = Status::IOError("Redis at " + node + " replied: " + std::string(reply.str()));
  Record(node, outcome);
  return r;
}

Status RedisClient::RefreshSlots() {
  std::vector<std::string> candidates;
  {
    std::lock_guard lock(mu_);
    candidates = nodes_;
  }
  for (const RedisEndpoint& s : options_.seeds) candidates.push_back(s.Address());
  Status last = Status::IOError("no Redis address given");
  for (const std::string& node : candidates) {
    RedisCommand cmd;
    cmd.args = {"CLUSTER", "SLOTS"};
    auto r = RunOn(node, {&cmd}, false);
    if (!r.ok()) {
      last = r.status();
      continue;
    }
    const RedisReply& reply = (*r)[0];
    if (reply.is_error()) {
      if (reply.str().find("cluster support disabled") != std::string_view::npos) {
        std::lock_guard lock(mu_);
        cluster_ = false;
        nodes_ = {options_.seeds.front().Address()};
        topology_known_ = true;
        return Status::OK();
      }
      last = Status::IOError("CLUSTER SLOTS at " + node + ": " + std::string(reply.str()));
      continue;
    }
    const redisReply* raw = reply.raw();
    if (raw->type != REDIS_REPLY_ARRAY) continue;
    std::array<int32_t, 16384> slots;
    slots.fill(-1);
    std::vector<std::string> nodes;
    const std::string asked_host = node.substr(0, node.rfind(':'));
    for (size_t i = 0; i < raw->elements; ++i) {
      const redisReply* range = raw->element[i];
      if (range->type != REDIS_REPLY_ARRAY || range->elements < 3) continue;
      const redisReply* master = range->element[2];
      if (master->type != REDIS_REPLY_ARRAY || master->elements < 2) continue;
      std::string host(master->element[0]->str != nullptr ? master->element[0]->str : "",
                       master->element[0]->len);
      if (host.empty() || host == "?") host = asked_host;
      const std::string addr = host + ":" + std::to_string(master->element[1]->integer);
      int32_t idx = -1;
      for (size_t n = 0; n < nodes.size(); ++n)
        if (nodes[n] == addr) idx = static_cast<int32_t>(n);
      if (idx < 0) {
        idx = static_cast<int32_t>(nodes.size());
        nodes.push_back(addr);
      }
      const long long lo = range->element[0]->integer, hi = range->element[1]->integer;
      for (long long s = std::max(0LL, lo); s <= std::min(16383LL, hi); ++s)
        slots[static_cast<size_t>(s)] = idx;
    }
    if (nodes.empty()) {
      last = Status::IOError("CLUSTER SLOTS at " + node + " lists no master (cluster not ready)");
      continue;
    }
    std::lock_guard lock(mu_);
    slots_ = slots;
    nodes_ = std::move(nodes);
    cluster_ = true;
    topology_known_ = true;
    return Status::OK();
  }
  return last;
}

Status RedisClient::EnsureTopology() {
  if (topology_known_) return Status::OK();
  if (options_.seeds.empty()) return Status::InvalidArgument("no Redis address given");
  return RefreshSlots();
}

std::string RedisClient::NodeFor(std::string_view key) {
  std::lock_guard lock(mu_);
  if (!cluster_) return nodes_.empty() ? options_.seeds.front().Address() : nodes_.front();
  const int32_t idx = slots_[RedisKeySlot(key)];
  if (idx >= 0) return nodes_[static_cast<size_t>(idx)];
  return nodes_.empty() ? options_.seeds.front().Address() : nodes_.front();
}

Result<std::vector<std::string>> RedisClient::Masters() {
  if (Status s = EnsureTopology(); !s.ok()) return s;
  std::lock_guard lock(mu_);
  return nodes_;
}

Result<RedisReply> RedisClient::Execute(const RedisCommand& command) {
  auto r = Execute(std::vector<RedisCommand>{command});
  if (!r.ok()) return r.status();
  return (*r)[0];
}

Status RedisClient::RunByNode(size_t n, const std::function<std::string(size_t)>& key_of,
                              const std::function<Status(const Group&)>& run) {
  if (Status s = EnsureTopology(); !s.ok()) return s;
  std::vector<Group> groups;
  for (size_t i = 0; i < n; ++i) {
    const std::string node = NodeFor(key_of(i));
    auto it =
        std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.node == node; });
    if (it == groups.end()) it = groups.insert(groups.end(), Group{node, {}});
    it->indices.push_back(i);
  }
  Status first;
  if (groups.size() == 1) {
    first = run(groups[0]);
  } else {
    // One part per node, on the current executor (this thread takes part).
    std::vector<Status> results(groups.size());
    Executor::Current().ParallelFor(groups.size(), static_cast<unsigned>(groups.size()),
                                    [&](size_t i) { results[i] = run(groups[i]); });
    for (const Status& s : results) {
      if (!s.ok() && first.ok()) first = s;
    }
  }
  // A dead master, or a moved slot: a cluster is asked for its map again.
  if (!first.ok()) topology_known_ = !cluster_;
  return first;
}

Result<std::vector<RedisGetOutcome>> RedisClient::GetInto(const std::vector<RedisGetInto>& gets) {
  std::vector<RedisGetOutcome> out(gets.size());
  Status sent = RunByNode(
      gets.size(), [&](size_t i) { return gets[i].key; },
      [&](const Group& g) -> Status {
        std::vector<const RedisGetInto*> mine;
        for (size_t i : g.indices) mine.push_back(&gets[i]);
        if (Status s = Admit(g.node); !s.ok()) return s;
        auto conn = Take(g.node);
        if (!conn.ok()) {
          Status failed = conn.status().WithContext("Redis at " + g.node);
          Record(g.node, failed);
          return failed;
        }
        auto r = (*conn)->GetInto(mine);
        Give(g.node, std::move(*conn));
        if (!r.ok()) {
          Status failed = r.status().WithContext("Redis at " + g.node);
          Record(g.node, failed);
          return failed;
        }
        Status outcome;
        for (size_t k = 0; k < g.indices.size(); ++k) {
          const RedisGetOutcome& o = (*r)[k];
          if (o.kind == RedisGetOutcome::kError && NodeFailing(o.error))
            outcome = Status::IOError("Redis at " + g.node + " replied: " + o.error);
          out[g.indices[k]] = std::move((*r)[k]);
        }
        Record(g.node, outcome);
        return Status::OK();
      });
  if (!sent.ok()) return sent;
  // Redirected GETs go through Execute, which follows MOVED / ASK.
  for (size_t i = 0; i < gets.size(); ++i) {
    if (out[i].kind != RedisGetOutcome::kError) continue;
    if (out[i].error.rfind("MOVED ", 0) != 0 && out[i].error.rfind("ASK ", 0) != 0) continue;
    RedisCommand get;
    get.args = {"GET", gets[i].key};
    auto r = Execute(get);
    if (!r.ok()) return r.status();
    RedisGetOutcome& o = out[i];
    if (r->is_error()) {
      o.error = std::string(r->str());
    } else if (r->is_nil()) {
      o.kind = RedisGetOutcome::kNil;
    } else {
      o.size = r->str().size();
      o.kind = o.size == gets[i].expected ? RedisGetOutcome::kOk : RedisGetOutcome::kWrongSize;
      if (o.kind == RedisGetOutcome::kOk) std::memcpy(gets[i].dst, r->str().data(), o.size);
    }
  }
  return out;
}

Result<RedisReply> RedisClient::ExecuteOn(const std::string& address, const RedisCommand& command) {
  auto r = RunOn(address, {&command}, false);
  if (!r.ok()) return r.status();
  return (*r)[0];
}

Result<std::vector<RedisReply>> RedisClient::Execute(const std::vector<RedisCommand>& commands) {
  std::vector<RedisReply> out(commands.size());
  Status sent = RunByNode(
      commands.size(),
      [&](size_t i) {
        const RedisCommand& c = commands[i];
        return c.key_arg < c.args.size() ? c.args[c.key_arg] : c.args.back();
      },
      [&](const Group& g) -> Status {
        std::vector<const RedisCommand*> cmds;
        for (size_t i : g.indices) cmds.push_back(&commands[i]);
        auto r = RunOn(g.node, cmds, false);
        if (!r.ok()) return r.status();
        for (size_t k = 0; k < g.indices.size(); ++k) out[g.indices[k]] = std::move((*r)[k]);
        return Status::OK();
      });
  if (!sent.ok()) return sent;
  // Redirections: MOVED updates the slot map; ASK is a one-off.
  bool moved = false;
  for (size_t i = 0; i < commands.size(); ++i) {
    for (int hop = 0; hop < 5 && out[i].is_error(); ++hop) {
      int slot = 0;
      std::string node;
      bool asking = false;
      if (ParseRedirect(out[i].str(), "MOVED", &slot, &node)) {
        moved = true;
        std::lock_guard lock(mu_);
        auto it = std::find(nodes_.begin(), nodes_.end(), node);
        if (it == nodes_.end()) it = nodes_.insert(nodes_.end(), node);
        slots_[static_cast<size_t>(slot)] = static_cast<int32_t>(it - nodes_.begin());
      } else if (ParseRedirect(out[i].str(), "ASK", &slot, &node)) {
        asking = true;
      } else {
        break;  // a real error reply: the caller's to judge
      }
      redirections_.fetch_add(1, std::memory_order_relaxed);
      auto r = RunOn(node, {&commands[i]}, asking);
      if (!r.ok()) return r.status();
      out[i] = std::move((*r)[0]);
    }
  }
  if (moved) {
    Status s = RefreshSlots();  // learn the rest of the new layout at once
    if (!s.ok()) LogDebug("refreshing the cluster's slot map: " + s.message());
  }
  return out;
}

}  // namespace layercache
