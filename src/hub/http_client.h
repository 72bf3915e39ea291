// HttpClient: the libcurl-based HTTP(S) client behind Hub downloads.
//
// One HttpClient owns one curl easy handle (kept-alive connections); use one
// per thread. Redirects are not followed automatically: callers see 3xx and
// decide (the Hub protocol drops the Authorization header when a redirect
// leaves the host). TLS peers are verified. Transient failures (connection
// errors, timeouts, 429 and 5xx) are retried with exponential backoff, and an
// interrupted range download resumes where it stopped.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "layercache/status.h"

typedef void CURL;

namespace layercache {

struct HttpOptions {
  long connect_timeout_ms = 10'000;
  // A transfer slower than 1 KiB/s for this long is abandoned (and retried).
  long stall_timeout_s = 30;
  int max_retries = 5;
  int initial_backoff_ms = 250;  // doubles per retry, capped at max_backoff_ms
  int max_backoff_ms = 8'000;
  bool verify_tls = true;
  std::string ca_bundle;  // PEM file of trusted CAs; "" : the system's
  std::string user_agent = "layercache/0.1";
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;

  // The header's value, or "" when absent.
  std::string header(const std::string& lower_name) const;
};

using HttpHeaders = std::vector<std::string>;  // "Name: value"

class HttpClient {
 public:
  explicit HttpClient(HttpOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // One request (retrying transient failures); the body is kept up to
  // `max_body` bytes (more is an error). 3xx, 4xx are returned, not errors.
  Result<HttpResponse> Request(const std::string& method, const std::string& url,
                               const HttpHeaders& headers, uint64_t max_body = 64u << 20);

  // Fetches bytes [start, start + length) of `url` into `dst`. A 206 answer
  // must carry the matching Content-Range; a 200 answer (the server ignored
  // the Range header) is read from byte 0 and the bytes before `start`
  // discarded. A dropped connection resumes from the first missing byte.
  // When `expect_etag` is not empty, every answer's ETag must equal it (the
  // file must not change between requests). `on_bytes` is told of progress.
  Status GetRange(const std::string& url, const HttpHeaders& headers, uint64_t start,
                  uint64_t length, std::byte* dst, const std::string& expect_etag,
                  const std::function<void(uint64_t)>& on_bytes = nullptr);

  // Bytes received from the network (bodies and headers) by this client.
  uint64_t wire_bytes() const { return wire_bytes_; }
  // How many retries this client made.
  uint64_t retries() const { return retries_; }

 private:
  struct Attempt;
  Status Perform(Attempt& attempt);
  void Backoff(int attempt, const HttpResponse* response);

  HttpOptions options_;
  CURL* curl_;
  uint64_t wire_bytes_ = 0;
  uint64_t retries_ = 0;
};

// Strips W/ and quotes from an ETag value.
std::string NormalizeEtag(const std::string& etag);

}  // namespace layercache
