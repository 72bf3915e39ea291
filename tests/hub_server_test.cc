// HubServer and its HTTP server under concurrency (run under TSan by
// scripts/test.sh): parallel keep-alive clients with ranges, more clients than
// threads, and Stop() with connections open. The protocol itself is tested with
// the real Hub clients in tests/hub_clients.
#include "hub_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

namespace layercache {
namespace {

using testing::TempDir;

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{60, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Reads one response (Content-Length framed) from `fd`; returns status and body.
bool ReadResponse(int fd, std::string* buffered, int* status, std::string* body) {
  std::string& in = *buffered;
  char buf[65536];
  size_t end;
  while ((end = in.find("\r\n\r\n")) == std::string::npos) {
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r <= 0) return false;
    in.append(buf, static_cast<size_t>(r));
  }
  const std::string head = in.substr(0, end);
  *status = std::stoi(head.substr(9, 3));
  const size_t cl = head.find("Content-Length: ");
  if (cl == std::string::npos) return false;
  const size_t n = std::stoull(head.substr(cl + 16));
  in.erase(0, end + 4);
  while (in.size() < n) {
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r <= 0) return false;
    in.append(buf, static_cast<size_t>(r));
  }
  *body = in.substr(0, n);
  in.erase(0, n);
  return true;
}

bool Send(int fd, const std::string& s) {
  return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
}

struct Repo {
  TempDir dir;
  std::string weights;
  Repo() {
    std::mt19937 rng(7);
    weights.resize(3 << 20);
    for (char& c : weights) c = static_cast<char>(rng());
    std::ofstream(dir / "model.safetensors", std::ios::binary) << weights;
    std::ofstream(dir / "config.json") << "{\"model_type\": \"llama\"}";
  }
};

TEST(HubServer, ParallelKeepAliveClientsGetTheirRanges) {
  Repo repo;
  HubServerOptions o;
  o.threads = 4;
  o.max_connections = 64;
  HubServer server(o);
  server.AddRepo("acme/m", repo.dir.path());
  const int port = server.Start();
  ASSERT_GT(port, 0) << server.last_error();

  constexpr int kClients = 12, kRequests = 25;  // more clients than threads: they queue
  std::vector<std::thread> clients;
  std::vector<int> failures(kClients, 0);
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937_64 rng(static_cast<uint64_t>(c));
      const int fd = Connect(port);
      if (fd < 0) {
        failures[c] = kRequests;
        return;
      }
      std::string in;
      for (int i = 0; i < kRequests; ++i) {
        const uint64_t first = rng() % repo.weights.size();
        const uint64_t last = first + rng() % (256 << 10);  // may run past the end: clamped
        const bool last_one = i + 1 == kRequests;
        if (!Send(
                fd,
                "GET /acme/m/resolve/main/model.safetensors HTTP/1.1\r\nHost: t\r\nRange: bytes=" +
                    std::to_string(first) + "-" + std::to_string(last) + "\r\n" +
                    (last_one ? "Connection: close\r\n" : "") + "\r\n")) {
          ++failures[c];
          break;
        }
        int status = 0;
        std::string body;
        if (!ReadResponse(fd, &in, &status, &body) || status != 206 ||
            body != repo.weights.substr(first, last - first + 1))
          ++failures[c];
      }
      ::close(fd);
    });
  }
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(failures[c], 0) << "client " << c;
  EXPECT_GT(server.bytes_sent(), 0u);
  server.Stop();
}

TEST(HubServer, StopReturnsWithConnectionsOpenAndQueued) {
  Repo repo;
  HubServerOptions o;
  o.threads = 2;
  HubServer server(o);
  server.AddRepo("acme/m", repo.dir.path());
  const int port = server.Start();
  ASSERT_GT(port, 0) << server.last_error();
  // Two idle keep-alive connections hold both threads, two more wait in the queue,
  // one is half way through a request.
  std::vector<int> fds;
  for (int i = 0; i < 5; ++i) fds.push_back(Connect(port));
  for (int fd : fds) ASSERT_GE(fd, 0);
  ASSERT_TRUE(Send(fds[0], "GET /acme/m/resolve/main/config.json HTTP/1.1\r\nHost: t\r\n\r\n"));
  std::string in;
  int status = 0;
  std::string body;
  ASSERT_TRUE(ReadResponse(fds[0], &in, &status, &body));
  EXPECT_EQ(status, 200);
  ASSERT_TRUE(Send(fds[1], "GET /acme/m/resolve/main/config.json HTTP/1.1\r\nHo"));
  server.Stop();  // must not wait for the clients (the test's timeout would catch a hang)
  for (int fd : fds) {
    char c;
    // Every connection is closed by the server now: EOF (or reset), never a hang.
    EXPECT_LE(::recv(fd, &c, 1, 0), 0);
    ::close(fd);
  }
}

TEST(HubServer, AddRepoRefusesAnIdThatIsNotAHubRepositoryId) {
  Repo repo;
  HubServer server(HubServerOptions{});
  for (const char* bad : {"../etc", "a/b/c", "", "a b", "/abs"}) {
    SCOPED_TRACE(bad);
    EXPECT_INVALID_ARGUMENT(server.AddRepo(bad, repo.dir.path()));
  }
  EXPECT_TRUE(server.revisions().empty());
  server.AddRepo("acme/m", repo.dir.path());
  EXPECT_EQ(server.revisions().size(), 1u);
}

TEST(HubServer, BusyPortIsRefused) {
  Repo repo;
  HubServer a, b;
  a.AddRepo("acme/m", repo.dir.path());
  b.AddRepo("acme/m", repo.dir.path());
  const int port = a.Start();
  ASSERT_GT(port, 0);
  EXPECT_EQ(b.Start("127.0.0.1", port), -1);
  EXPECT_NE(b.last_error().find("already in use"), std::string::npos) << b.last_error();
  HubServer c;
  c.AddRepo("acme/m", repo.dir.path());
  EXPECT_EQ(c.Start("127.0.0.1", 70000), -1);
  EXPECT_NE(c.last_error().find("0-65535"), std::string::npos) << c.last_error();
}

}  // namespace
}  // namespace layercache

namespace layercache {
namespace {

TEST(HubServer, IdleKeepAliveConnectionsHoldNoThread) {
  Repo repo;
  HubServerOptions o;
  o.threads = 1;  // one request at a time
  HubServer server(o);
  server.AddRepo("acme/m", repo.dir.path());
  const int port = server.Start();
  ASSERT_GT(port, 0) << server.last_error();
  const std::string get = "GET /acme/m/resolve/main/config.json HTTP/1.1\r\nHost: t\r\n\r\n";
  // Several connections served one after the other and left open (keep-alive)...
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) {
    const int fd = Connect(port);
    ASSERT_GE(fd, 0);
    timeval tv{10, 0};  // far below the 15 s idle timeout that would free a held thread
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ASSERT_TRUE(Send(fd, get));
    std::string in, body;
    int status = 0;
    ASSERT_TRUE(ReadResponse(fd, &in, &status, &body)) << "connection " << i << " not served";
    EXPECT_EQ(status, 200);
    fds.push_back(fd);
  }
  // ... and the first one is still usable.
  ASSERT_TRUE(Send(fds[0], get));
  std::string in, body;
  int status = 0;
  ASSERT_TRUE(ReadResponse(fds[0], &in, &status, &body));
  EXPECT_EQ(status, 200);
  for (int fd : fds) ::close(fd);
}

}  // namespace
}  // namespace layercache
