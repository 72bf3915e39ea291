#include "redis_server.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "test_support.h"

namespace layercache::testing {

constexpr const char* kRedisServer = "/usr/bin/redis-server";
constexpr const char* kRedisCli = "/usr/bin/redis-cli";

bool RedisInstalled() {
  return std::filesystem::exists(kRedisServer) && std::filesystem::exists(kRedisCli);
}

RedisServer::RedisServer(const std::string& dir, bool cluster,
                         const std::vector<std::string>& extra) {
  // A cluster node's bus listens on port + 10000: keep both below 65536.
  do {
    port_ = FreeLoopbackPort();
  } while (cluster && port_ > 55535);
  const std::string node_dir = dir + "/redis-" + std::to_string(port_);
  std::filesystem::create_directories(node_dir);
  std::vector<std::string> args = {kRedisServer,   "--port",    std::to_string(port_),
                                   "--bind",       "127.0.0.1", "--dir",
                                   node_dir,       "--save",    "",
                                   "--appendonly", "no",        "--daemonize",
                                   "no",           "--logfile", node_dir + "/redis.log"};
  if (cluster) {
    args.insert(args.end(), {"--cluster-enabled", "yes", "--cluster-config-file",
                             node_dir + "/nodes.conf", "--cluster-node-timeout", "2000"});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  pid_ = ::fork();
  if (pid_ == 0) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(kRedisServer, argv.data());
    ::_exit(127);
  }
  for (int i = 0; i < 1000 && !up(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

RedisServer::~RedisServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

void RedisServer::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void RedisServer::Pause() { ::kill(pid_, SIGSTOP); }
void RedisServer::Resume() { ::kill(pid_, SIGCONT); }

std::string RedisServer::Cli(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {kRedisCli, "-p", std::to_string(port_)};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv).out;
}

RedisCluster::RedisCluster(const std::string& dir, int n, int replicas) {
  // A replica may always take over (its data age is not held against it),
  // and the masters that are up keep serving their slots while one is down
  // (docs/SCALE_OUT.md recommends both for a cache).
  const std::vector<std::string> extra =
      replicas > 0 ? std::vector<std::string>{"--cluster-replica-validity-factor", "0",
                                              "--cluster-require-full-coverage", "no"}
                   : std::vector<std::string>{};
  for (int i = 0; i < n * (1 + replicas); ++i)
    nodes_.push_back(std::make_unique<RedisServer>(dir, true, extra));
  std::vector<std::string> argv = {kRedisCli, "--cluster", "create"};
  for (const auto& node : nodes_) argv.push_back(node->address());
  argv.insert(argv.end(), {"--cluster-replicas", std::to_string(replicas), "--cluster-yes"});
  const CommandResult created = RunCommand(argv);
  if (created.exit_code != 0) {
    error_ = created.out;
    return;
  }
  // Bounded wait for every node to agree that the cluster is up.
  for (int i = 0; i < 2000 && !ok_; ++i) {
    ok_ = true;
    for (const auto& node : nodes_)
      ok_ = ok_ && node->Cli({"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos;
    if (!ok_) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!ok_) error_ = "the cluster did not reach cluster_state:ok";
}

std::vector<std::string> RedisCluster::urls() const {
  std::vector<std::string> out;
  for (const auto& node : nodes_) out.push_back(node->url());
  return out;
}

}  // namespace layercache::testing
