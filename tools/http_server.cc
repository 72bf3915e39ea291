#include "http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <vector>

#include "layercache/status.h"

namespace layercache::http {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kFileChunk = 1 << 20;  // bytes read from a file per send
constexpr size_t kMaxRequestLine = 16 << 10;

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return std::string(s.substr(b, e - b));
}

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 206:
      return "Partial Content";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 416:
      return "Range Not Satisfiable";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string HttpDate() {
  char buf[64];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

std::string LogTime() {
  char buf[64];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%d/%b/%Y:%H:%M:%S +0000", &tm);
  return buf;
}

// Quotes for an access-log field: control characters and '"' escaped.
std::string LogQuote(std::string_view s) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '"' || c == '\\') {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", u);
      out += b;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// Writes all of `data` (blocking socket with SO_SNDTIMEO). False on error/timeout.
bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Closes a connection after an answer without reading the whole request:
// half-close, then read (and drop) what the client still sends for a little
// while, so that the kernel does not reset the connection and discard the
// answer before the client read it.
void LingeringClose(int fd, int max_ms) {
  ::shutdown(fd, SHUT_WR);
  const auto end = Clock::now() + std::chrono::milliseconds(max_ms);
  char buf[16384];
  size_t drained = 0;
  while (drained < (4u << 20)) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r <= 0) break;
    drained += static_cast<size_t>(r);
  }
  ::close(fd);
}

struct ParseError {
  int status;
  std::string message;
};

}  // namespace

std::string Request::Header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (IEquals(k, name)) return v;
  return "";
}

bool Request::HasHeader(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (IEquals(k, name)) return true;
  return false;
}

void Response::SetHeader(std::string name, std::string value) {
  for (auto& [k, v] : headers) {
    if (IEquals(k, name)) {
      v = std::move(value);
      return;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
}

std::string Response::Header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (IEquals(k, name)) return v;
  return "";
}

bool PercentDecode(std::string_view s, std::string* out, bool plus_is_space) {
  out->clear();
  out->reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return false;
      const int h = hex(s[i + 1]), l = hex(s[i + 2]);
      if (h < 0 || l < 0) return false;
      out->push_back(static_cast<char>(h * 16 + l));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out->push_back(' ');
    } else {
      out->push_back(s[i]);
    }
  }
  return true;
}

std::string PercentEncode(std::string_view s, std::string_view keep) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~' ||
        keep.find(c) != std::string_view::npos) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

bool ParseForm(std::string_view s, std::vector<std::pair<std::string, std::string>>* out) {
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t amp = s.find('&', pos);
    if (amp == std::string_view::npos) amp = s.size();
    const std::string_view part = s.substr(pos, amp - pos);
    if (!part.empty()) {
      const size_t eq = part.find('=');
      std::string k, v;
      if (!PercentDecode(part.substr(0, eq), &k, true)) return false;
      if (eq != std::string_view::npos && !PercentDecode(part.substr(eq + 1), &v, true))
        return false;
      out->emplace_back(std::move(k), std::move(v));
    }
    pos = amp + 1;
  }
  return true;
}

Server::Server(Handler handler, ServerOptions options)
    : handler_(std::move(handler)), options_(std::move(options)) {
  if (options_.threads < 1) options_.threads = 1;
  if (options_.max_connections < 1) options_.max_connections = 1;
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  handback_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (wake_fd_ < 0 || handback_fd_ < 0 || epoll_fd_ < 0)
    throw Error(Status::IOError(std::string("eventfd/epoll: ") + std::strerror(errno)));
}

Server::~Server() {
  Stop();
  for (int fd : {wake_fd_, handback_fd_, epoll_fd_})
    if (fd >= 0) ::close(fd);
}

int Server::Listen(const std::string& host, int port, std::string* error) {
  if (port < 0 || port > 65535) {
    *error = "port " + std::to_string(port) + " is out of range (0-65535; 0 picks a free one)";
    return -1;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
      rc != 0) {
    *error = "cannot resolve host '" + host + "': " + gai_strerror(rc);
    return -1;
  }
  std::string last = "no address for host '" + host + "'";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    // SO_REUSEADDR only lets a port in TIME_WAIT be reused; a port another
    // socket listens on is still refused (no SO_REUSEPORT).
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      const int e = errno;
      last = e == EADDRINUSE ? "port " + service + " on " + host + " is already in use"
                             : "cannot listen on " + host + ":" + service + ": " + std::strerror(e);
      ::close(fd);
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    int bound = port;
    if (ss.ss_family == AF_INET) bound = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    if (ss.ss_family == AF_INET6) bound = ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    ::freeaddrinfo(res);
    listen_fd_ = fd;
    return bound;
  }
  ::freeaddrinfo(res);
  *error = last;
  return -1;
}

void Server::Start() {
  if (listen_fd_ < 0 || started_) return;
  started_ = true;
  for (int i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  poller_ = std::thread([this] { PollLoop(); });
}

void Server::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  stop_cv_.wait(lock, [this] { return stopping_.load(); });
}

void Server::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(wake_fd_, &one, sizeof one);
    for (int fd : active_) ::shutdown(fd, SHUT_RDWR);
  }
  cv_.notify_all();
  stop_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
  // Only this thread is left: close what waited.
  for (auto& c : queue_) ::close(c->fd);
  for (auto& c : handback_) ::close(c->fd);
  for (auto& [fd, c] : idle_) ::close(fd);
  for (auto& [fd, deadline] : closing_) ::close(fd);
  closing_.clear();
  queue_.clear();
  handback_.clear();
  idle_.clear();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
}

// One thread waits for every connection that is not being served (new ones,
// and keep-alive ones between requests) with epoll, and hands those with
// bytes to read to the workers: idle connections hold no thread.
void Server::PollLoop() {
  auto add = [this](int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  };
  add(wake_fd_);
  add(handback_fd_);
  ::fcntl(listen_fd_, F_SETFL, ::fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
  add(listen_fd_);
  bool listen_paused = false;
  Clock::time_point resume_listen;
  epoll_event events[64];
  while (!stopping_) {
    // Sleep until the next idle deadline (or the listening socket's resumption).
    auto next = Clock::now() + std::chrono::seconds(60);
    for (const auto& [fd, c] : idle_) next = std::min(next, c->deadline);
    for (const auto& [fd, deadline] : closing_) next = std::min(next, deadline);
    if (listen_paused) next = std::min(next, resume_listen);
    const auto wait_ms = std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count() + 1);
    const int n = ::epoll_wait(epoll_fd_, events, 64, static_cast<int>(wait_ms));
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) return;
      if (fd == handback_fd_) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(handback_fd_, &v, sizeof v);
        std::vector<std::unique_ptr<Conn>> back;
        {
          std::lock_guard<std::mutex> lock(mu_);
          back.swap(handback_);
        }
        for (auto& c : back) {
          c->deadline = Clock::now() + std::chrono::milliseconds(options_.idle_timeout_ms);
          const int cfd = c->fd;
          idle_[cfd] = std::move(c);
          add(cfd);
        }
        continue;
      }
      if (fd == listen_fd_) {
        for (;;) {
          sockaddr_storage ss{};
          socklen_t len = sizeof ss;
          const int cfd =
              ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
          if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
              // Out of descriptors: stop accepting for a moment rather than spin.
              ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
              listen_paused = true;
              resume_listen = Clock::now() + std::chrono::milliseconds(100);
            }
            break;  // EAGAIN: all accepted; ECONNABORTED and the like: next time
          }
          Accepted(cfd, ss);
        }
        continue;
      }
      if (auto cl = closing_.find(fd); cl != closing_.end()) {
        // A refused connection: discard what it sends; close at its end.
        char buf[16384];
        ssize_t r = 1;
        for (int k = 0; k < 16 && (r = ::recv(fd, buf, sizeof buf, 0)) > 0; ++k) {
        }
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
          ::close(fd);
          closing_.erase(cl);
        }
        continue;
      }
      // An idle connection has bytes (or was closed): a worker serves it.
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
      auto it = idle_.find(fd);
      if (it == idle_.end()) continue;
      std::unique_ptr<Conn> c = std::move(it->second);
      idle_.erase(it);
      {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(c));
      }
      cv_.notify_one();
    }
    const auto now = Clock::now();
    if (listen_paused && now >= resume_listen) {
      listen_paused = false;
      add(listen_fd_);
    }
    for (auto it = closing_.begin(); it != closing_.end();) {
      if (it->second <= now) {
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->first, nullptr);
        ::close(it->first);
        it = closing_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = idle_.begin(); it != idle_.end();) {
      if (it->second->deadline <= now) {
        // No request within the idle (or, for a new connection, request) timeout.
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->first, nullptr);
        ::close(it->first);
        it = idle_.erase(it);
        std::lock_guard<std::mutex> lock(mu_);
        --open_;
      } else {
        ++it;
      }
    }
  }
}

void Server::Accepted(int fd, const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, host, sizeof host);
  else if (ss.ss_family == AF_INET6)
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, host,
                sizeof host);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{options_.write_timeout_ms / 1000, (options_.write_timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  bool busy = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (open_ >= options_.max_connections) {
      static const char kBusy[] =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
          "X-Error-Message: too many connections\r\nRetry-After: 1\r\nConnection: close\r\n"
          "Content-Length: 34\r\n\r\n{\"error\": \"too many connections\"}\n";
      WriteAll(fd, kBusy, sizeof kBusy - 1);
    } else {
      ++open_;
      busy = false;
    }
  }
  if (busy) {
    // Close gracefully without blocking this thread: the poller reads what
    // the client still sends (so it is not reset before it has read the 503)
    // until it closes or kBusyLingerMs pass.
    ::shutdown(fd, SHUT_WR);
    if (closing_.size() >= kMaxClosing) {
      ::close(fd);
      return;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    closing_[fd] = Clock::now() + std::chrono::milliseconds(kBusyLingerMs);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    return;
  }
  auto c = std::make_unique<Conn>();
  c->fd = fd;
  c->peer = host;
  c->deadline = Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms);
  idle_[fd] = std::move(c);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = fd;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
}

void Server::WorkerLoop() {
  for (;;) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    std::unique_ptr<Conn> c = std::move(queue_.front());
    queue_.pop_front();
    active_.insert(c->fd);
    lock.unlock();
    const End end = Serve(*c);
    lock.lock();
    active_.erase(c->fd);
    if (end == End::kIdle && !stopping_) {
      handback_.push_back(std::move(c));
      lock.unlock();
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t w = ::write(handback_fd_, &one, sizeof one);
      continue;
    }
    --open_;
    lock.unlock();
    if (end == End::kLinger) {
      LingeringClose(c->fd, 500);
    } else {
      ::close(c->fd);
    }
  }
}

Server::End Server::Serve(Conn& conn) {
  const int fd = conn.fd;
  const std::string& peer = conn.peer;
  std::string& in = conn.in;  // bytes received and not yet consumed
  char buf[16384];
  // Reads more into `in` until `deadline`; false on timeout, EOF, error or stop.
  auto read_more = [&](Clock::time_point deadline) -> bool {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p[2] = {{fd, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      const int rc = ::poll(p, 2, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0 || p[1].revents != 0) return false;
      const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      in.append(buf, static_cast<size_t>(r));
      return true;
    }
  };

  for (;;) {
    const auto start = Clock::now();
    if (in.empty()) {
      // Between requests: take what has arrived; nothing yet goes back to the poller.
      const ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r == 0) return End::kClose;
      if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? End::kIdle : End::kClose;
      in.append(buf, static_cast<size_t>(r));
    }
    const auto deadline = Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms);
    Request req;
    req.peer = peer;
    Response res;
    bool keep_alive = false;
    bool unread = false;  // the request was not read to its end
    std::string reply_error;
    try {
      // Headers.
      size_t end;
      while ((end = in.find("\r\n\r\n")) == std::string::npos) {
        const size_t eol = in.find("\r\n");
        if ((eol == std::string::npos ? in.size() : eol) > kMaxRequestLine)
          throw ParseError{
              414, "request line longer than " + std::to_string(kMaxRequestLine) + " bytes"};
        if (in.size() > options_.max_header_bytes)
          throw ParseError{431, "request headers larger than " +
                                    std::to_string(options_.max_header_bytes) + " bytes"};
        if (!read_more(deadline)) {
          if (stopping_) return End::kClose;
          throw ParseError{408, "request not received in time"};
        }
      }
      if (end > options_.max_header_bytes)
        throw ParseError{431, "request headers larger than " +
                                  std::to_string(options_.max_header_bytes) + " bytes"};
      const std::string head = in.substr(0, end);
      in.erase(0, end + 4);
      size_t line_end = head.find("\r\n");
      const std::string line = head.substr(0, line_end);
      if (line.size() > kMaxRequestLine)
        throw ParseError{414,
                         "request line longer than " + std::to_string(kMaxRequestLine) + " bytes"};
      const size_t sp1 = line.find(' ');
      const size_t sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
      if (sp2 == std::string::npos || line.find(' ', sp2 + 1) != std::string::npos)
        throw ParseError{400, "malformed request line"};
      req.method = line.substr(0, sp1);
      req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
      req.version = line.substr(sp2 + 1);
      if (req.method.empty() || req.target.empty()) throw ParseError{400, "malformed request line"};
      for (char c : req.method)
        if (!std::isalnum(static_cast<unsigned char>(c)) &&
            std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos)
          throw ParseError{400, "malformed request method"};
      if (req.version != "HTTP/1.1" && req.version != "HTTP/1.0") {
        if (req.version.rfind("HTTP/", 0) == 0)
          throw ParseError{505, "only HTTP/1.0 and HTTP/1.1 are supported"};
        throw ParseError{400, "malformed request line"};
      }
      // An unsupported method is answered once the headers are read, so that
      // the access log still names the client (User-Agent).
      const bool unsupported_method =
          req.method != "GET" && req.method != "HEAD" && req.method != "POST";
      for (char c : req.target) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f) throw ParseError{400, "invalid character in request target"};
      }
      if (req.target[0] != '/') {
        // Absolute form (http://host/path) is allowed by HTTP/1.1.
        const size_t scheme = req.target.find("://");
        if (scheme == std::string::npos) throw ParseError{400, "request target must start with /"};
        const size_t slash = req.target.find('/', scheme + 3);
        req.target = slash == std::string::npos ? "/" : req.target.substr(slash);
      }
      const size_t q = req.target.find('?');
      req.path = req.target.substr(0, q);
      req.query = q == std::string::npos ? "" : req.target.substr(q + 1);
      while (line_end != std::string::npos) {
        const size_t next = head.find("\r\n", line_end + 2);
        const std::string h = head.substr(
            line_end + 2, next == std::string::npos ? std::string::npos : next - line_end - 2);
        line_end = next;
        if (h.empty()) continue;
        if (h[0] == ' ' || h[0] == '\t') throw ParseError{400, "obsolete header line folding"};
        const size_t colon = h.find(':');
        if (colon == std::string::npos || colon == 0)
          throw ParseError{400, "malformed header line"};
        const std::string name = h.substr(0, colon);
        for (char c : name)
          if (c == ' ' || c == '\t') throw ParseError{400, "whitespace in a header name"};
        req.headers.emplace_back(name, Trim(std::string_view(h).substr(colon + 1)));
      }
      if (unsupported_method) throw ParseError{501, "method " + req.method + " is not implemented"};
      const std::string connection = req.Header("Connection");
      keep_alive = req.version == "HTTP/1.1" ? !IEquals(connection, "close")
                                             : IEquals(connection, "keep-alive");
      if (req.version == "HTTP/1.1" && !req.HasHeader("Host"))
        throw ParseError{400, "HTTP/1.1 request without Host header"};
      if (req.HasHeader("Transfer-Encoding"))
        throw ParseError{501, "request bodies with Transfer-Encoding are not supported"};
      if (req.HasHeader("Content-Length")) {
        const std::string cl = req.Header("Content-Length");
        for (const auto& [k, v] : req.headers)
          if (IEquals(k, "Content-Length") && v != cl)
            throw ParseError{400, "conflicting Content-Length headers"};
        if (cl.empty() || cl.size() > 18 || cl.find_first_not_of("0123456789") != std::string::npos)
          throw ParseError{400, "invalid Content-Length"};
        const uint64_t n = std::stoull(cl);
        if (n > options_.max_body_bytes)
          throw ParseError{413, "request body larger than " +
                                    std::to_string(options_.max_body_bytes) + " bytes"};
        if (IEquals(req.Header("Expect"), "100-continue") && in.size() < n) {
          static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
          if (!WriteAll(fd, kContinue, sizeof kContinue - 1)) return End::kClose;
        }
        while (in.size() < n) {
          if (!read_more(deadline)) {
            if (stopping_) return End::kClose;
            throw ParseError{408, "request body not received in time"};
          }
        }
        req.body = in.substr(0, n);
        in.erase(0, n);
      }
      try {
        handler_(req, res);
      } catch (const std::exception& e) {
        res = Response{};
        res.status = 500;
        reply_error = std::string("internal error: ") + e.what();
      }
    } catch (const ParseError& e) {
      res = Response{};
      res.status = e.status;
      reply_error = e.message;
      keep_alive = false;
      unread = true;
    }
    if (!reply_error.empty()) {
      std::string escaped;
      for (char c : reply_error) {
        if (c == '"' || c == '\\') escaped.push_back('\\');
        escaped.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
      }
      res.body = "{\"error\": \"" + escaped + "\"}\n";
      res.SetHeader("Content-Type", "application/json");
      res.SetHeader("X-Error-Message", escaped);
    }

    // The body: a file opened now, so a failure can still become a 500.
    int file_fd = -1;
    if (!res.file_path.empty()) {
      file_fd = ::open(res.file_path.c_str(), O_RDONLY | O_CLOEXEC);
      if (file_fd < 0) {
        const std::string why = std::string("cannot read the file: ") + std::strerror(errno);
        res = Response{};
        res.status = 500;
        res.body = "{\"error\": \"" + why + "\"}\n";
        res.SetHeader("Content-Type", "application/json");
        res.SetHeader("X-Error-Message", why);
      }
    }
    const uint64_t length = file_fd >= 0 ? res.file_length : res.body.size();
    const bool head_only = req.method == "HEAD";
    const bool no_body = head_only || res.status == 304 || res.status == 204;
    std::string out = "HTTP/1.1 " + std::to_string(res.status) + " " + Reason(res.status) + "\r\n";
    out += "Date: " + HttpDate() + "\r\nServer: layercache\r\n";
    for (const auto& [k, v] : res.headers) out += k + ": " + v + "\r\n";
    if (res.status != 304 && res.status != 204 && res.Header("Content-Length").empty())
      out += "Content-Length: " + std::to_string(length) + "\r\n";
    if (!keep_alive) out += "Connection: close\r\n";
    out += "\r\n";
    uint64_t sent_body = 0;
    bool ok;
    if (no_body || file_fd < 0) {
      if (!no_body) out += res.body;
      ok = WriteAll(fd, out.data(), out.size());
      if (ok && !no_body) sent_body = res.body.size();
    } else {
      ok = WriteAll(fd, out.data(), out.size());
      // pread + send through a 1 MiB buffer: its server CPU per byte measured the
      // same as the cpp-httplib server it replaced (docs/MIRROR.md).
      thread_local std::vector<char> buffer(kFileChunk);
      uint64_t off = res.file_offset;
      uint64_t left = res.file_length;
      while (ok && left > 0) {
        const ssize_t r = ::pread(file_fd, buffer.data(), std::min<uint64_t>(left, kFileChunk),
                                  static_cast<off_t>(off));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          ok = false;  // read error, or the file shrank: the client sees a short body
          break;
        }
        if (!WriteAll(fd, buffer.data(), static_cast<size_t>(r))) {
          ok = false;  // the client left, or no progress within the write timeout
          break;
        }
        off += static_cast<uint64_t>(r);
        left -= static_cast<uint64_t>(r);
        sent_body += static_cast<uint64_t>(r);
        file_bytes_sent_.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
      }
    }
    if (file_fd >= 0) ::close(file_fd);
    if (options_.access_log) {
      const auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
      std::string ua = req.Header("User-Agent");
      std::string line = peer + " - - [" + LogTime() + "] \"" + LogQuote(req.method) + " " +
                         LogQuote(req.target) + " " + LogQuote(req.version) + "\" " +
                         std::to_string(res.status) + " " + std::to_string(sent_body) + " \"" +
                         LogQuote(req.Header("Range")) + "\" \"" + LogQuote(ua) + "\" " +
                         std::to_string(ms) + "ms" + (ok ? "" : " aborted");
      options_.access_log(line);
    }
    if (!ok || !keep_alive || stopping_) return unread ? End::kLinger : End::kClose;
  }
}

}  // namespace layercache::http
