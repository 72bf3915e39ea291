// Real Redis servers for the tests, started from Debian's redis-server on
// loopback ports in a temporary directory: one node, or a Redis Cluster of
// masters created with `redis-cli --cluster create`.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "test_support.h"  // FreeLoopbackPort, CanConnectLoopback

namespace layercache::testing {

bool RedisInstalled();

class RedisServer {
 public:
  // Starts one server in `dir` (a cluster node when `cluster`); waits (bounded)
  // until it accepts connections.
  RedisServer(const std::string& dir, bool cluster, const std::vector<std::string>& extra = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string url() const { return "redis://" + address(); }
  bool up() const { return CanConnectLoopback(port_); }
  void Kill();    // SIGKILL, as a crash
  void Pause();   // SIGSTOP: a Redis that answers nothing
  void Resume();  // SIGCONT
  // redis-cli -p port ARGS...; its output (stdout and stderr).
  std::string Cli(const std::vector<std::string>& args) const;

 private:
  int port_ = 0;
  pid_t pid_ = -1;
};

// Three (or `n`) masters joined into a cluster; Ready() once every node
// reports cluster_state:ok.
class RedisCluster {
 public:
  // `replicas`: replicas per master (started too, and joined as such).
  RedisCluster(const std::string& dir, int n = 3, int replicas = 0);
  bool ok() const { return ok_; }
  std::vector<std::unique_ptr<RedisServer>>& nodes() { return nodes_; }
  std::vector<std::string> urls() const;
  std::string error() const { return error_; }

 private:
  std::vector<std::unique_ptr<RedisServer>> nodes_;
  bool ok_ = false;
  std::string error_;
};

}  // namespace layercache::testing
