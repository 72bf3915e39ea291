// A small HTTP/1.1 server for `layercache serve`: persistent connections, a
// fixed pool of worker threads serving requests while one epoll thread
// watches the connections between requests, a bound on open connections (503 beyond it),
// timeouts for reading a request, for idle keep-alive connections and for
// writing, bodies from memory or from a file (pread + send), HEAD answered with
// the headers of GET, and one access-log line per request. It parses only
// what it needs: request line, headers, Content-Length bodies; anything
// malformed gets a 4xx and the connection is closed. The handler sees the
// raw request target (nothing decoded) and never has its exceptions escape:
// one becomes a 500 with the message.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

struct sockaddr_storage;
#include <vector>

namespace layercache::http {

struct Request {
  std::string method;   // as sent ("GET", "HEAD", ...)
  std::string target;   // raw request target, e.g. /org/name/resolve/main/a%20b?x=1
  std::string path;     // target up to '?', still percent-encoded
  std::string query;    // after '?', still encoded ("" when none)
  std::string version;  // "HTTP/1.1"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string peer;  // client address

  // First value of a header (case-insensitive name), or "".
  std::string Header(std::string_view name) const;
  bool HasHeader(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // When file_path is set the body is file_length bytes of that file from
  // file_offset (and `body` is unused).
  std::string file_path;
  uint64_t file_offset = 0;
  uint64_t file_length = 0;

  void SetHeader(std::string name, std::string value);  // replaces one of the same name
  std::string Header(std::string_view name) const;
};

using Handler = std::function<void(const Request&, Response&)>;

struct ServerOptions {
  int threads = 16;                // requests served at once
  int max_connections = 256;       // open connections (served + waiting); beyond: 503
  int request_timeout_ms = 30000;  // to receive a whole request once it started
  int idle_timeout_ms = 15000;     // keep-alive wait for the next request
  int write_timeout_ms = 60000;    // without progress writing the answer
  size_t max_header_bytes = 64 << 10;
  size_t max_body_bytes = 1 << 20;
  // Called with one line per answered request (no trailing newline).
  std::function<void(const std::string&)> access_log;
};

class Server {
 public:
  Server(Handler handler, ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens (port 0: any free port). No SO_REUSEPORT: a port
  // another socket listens on is refused. Returns the port, or -1 with
  // *error saying why.
  int Listen(const std::string& host, int port, std::string* error);
  // Starts the accepting thread and the workers.
  void Start();
  // Blocks until Stop().
  void Wait();
  void Stop();
  // Bytes of file bodies written so far.
  uint64_t file_bytes_sent() const { return file_bytes_sent_.load(std::memory_order_relaxed); }

 private:
  struct Conn {
    int fd = -1;
    std::string peer;
    std::string in;  // received, not yet consumed (pipelined requests)
    std::chrono::steady_clock::time_point deadline;  // while idle: closed after it
  };
  enum class End { kClose, kLinger, kIdle };
  void PollLoop();
  void Accepted(int fd, const struct sockaddr_storage& ss);
  void WorkerLoop();
  // Serves the requests that have arrived on a connection: kIdle when it
  // waits for the next one (back to the poller), kLinger when it ended with a
  // request not read to its end (close it gracefully), kClose otherwise.
  End Serve(Conn& conn);

  Handler handler_;
  ServerOptions options_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;      // eventfd, readable once stopping
  int handback_fd_ = -1;  // eventfd: workers handed connections back
  int epoll_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread poller_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;                   // workers: a connection to serve, or stop
  std::condition_variable stop_cv_;              // Wait(): stopped
  std::deque<std::unique_ptr<Conn>> queue_;      // with bytes to read, for a worker
  std::vector<std::unique_ptr<Conn>> handback_;  // from workers, for the poller
  std::set<int> active_;                         // being served
  int open_ = 0;                                 // open connections (all of the above + idle)
  std::map<int, std::unique_ptr<Conn>> idle_;    // the poller's own: waiting for a request
  // The poller's own: connections refused with 503 (over max_connections),
  // drained until the client closes or the deadline, then closed.
  std::map<int, std::chrono::steady_clock::time_point> closing_;
  static constexpr int kBusyLingerMs = 100;
  static constexpr size_t kMaxClosing = 256;
  bool started_ = false;
  std::atomic<uint64_t> file_bytes_sent_{0};
};

// Percent-decodes `s` once. Returns false on a malformed escape. With
// plus_is_space, '+' decodes to ' ' (form bodies, query strings).
bool PercentDecode(std::string_view s, std::string* out, bool plus_is_space = false);
// Percent-encodes everything but unreserved characters and those in `keep`.
std::string PercentEncode(std::string_view s, std::string_view keep = "");
// Parses a query string or form body into (name, value) pairs, decoded.
bool ParseForm(std::string_view s, std::vector<std::pair<std::string, std::string>>* out);

}  // namespace layercache::http
