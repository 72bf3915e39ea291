#include "hub/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "layercache/status.h"
#include "util/logging.h"

namespace layercache {
namespace {

std::once_flag g_curl_init;

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

bool Retryable(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

bool RetryableStatus(long status) { return status == 429 || status >= 500; }

// Parses "bytes S-E/T" (T may be "*").
bool ParseContentRange(const std::string& v, uint64_t* s, uint64_t* e, uint64_t* total) {
  unsigned long long a = 0, b = 0, t = 0;
  if (std::sscanf(v.c_str(), "bytes %llu-%llu/%llu", &a, &b, &t) == 3) {
    *s = a, *e = b, *total = t;
    return true;
  }
  if (std::sscanf(v.c_str(), "bytes %llu-%llu/*", &a, &b) == 2) {
    *s = a, *e = b, *total = 0;
    return true;
  }
  return false;
}

}  // namespace

std::string HttpResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

std::string NormalizeEtag(const std::string& etag) {
  std::string e = Trim(etag);
  if (e.rfind("W/", 0) == 0) e = e.substr(2);
  if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
  return e;
}

// The state of one request as curl runs it.
struct HttpClient::Attempt {
  enum class Mode { kCollect, kCopy, kAbort };
  std::string method;
  std::string url;
  HttpHeaders headers;
  uint64_t max_body = 0;
  // Range mode (dst != nullptr): fill dst[0, want) from file offset `first`.
  std::byte* dst = nullptr;
  uint64_t first = 0;
  uint64_t want = 0;
  uint64_t got = 0;   // bytes of dst filled (across attempts)
  uint64_t skip = 0;  // bytes still to discard (a 200 answer to a range request)
  std::string expect_etag;
  Mode mode = Mode::kCollect;
  bool complete = false;
  long status_line = 0;
  std::string range_error;
  const std::function<void(uint64_t)>* on_bytes = nullptr;
  HttpResponse response;
  CURLcode code = CURLE_OK;
  char error[CURL_ERROR_SIZE] = {};

  // Called once all headers of the final response are in.
  void HeadersDone() {
    mode = Mode::kCollect;
    if (dst == nullptr) return;
    const uint64_t from = first + got;
    if (!expect_etag.empty()) {
      const std::string etag = NormalizeEtag(response.header("etag"));
      const std::string linked = NormalizeEtag(response.header("x-linked-etag"));
      if (!etag.empty() && etag != expect_etag && linked != expect_etag) {
        range_error =
            "the file changed on the server (ETag " + etag + ", expected " + expect_etag + ")";
        mode = Mode::kAbort;
        return;
      }
    }
    if (status_line == 206) {
      uint64_t rs = 0, re = 0, total = 0;
      const std::string cr = response.header("content-range");
      if (!ParseContentRange(cr, &rs, &re, &total) || rs != from || re < rs) {
        range_error = "206 answer with Content-Range \"" + cr + "\" where bytes " +
                      std::to_string(from) + "- were asked for";
        mode = Mode::kAbort;
        return;
      }
      skip = 0;
      mode = Mode::kCopy;
    } else if (status_line == 200) {
      skip = from;  // the server ignored Range: discard the bytes before ours
      mode = Mode::kCopy;
    }
  }
};

HttpClient::HttpClient(HttpOptions options) : options_(std::move(options)) {
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_ = curl_easy_init();
  if (curl_ == nullptr) throw Error(Status::IOError("curl_easy_init failed (out of memory?)"));
}

HttpClient::~HttpClient() { curl_easy_cleanup(curl_); }

void HttpClient::Backoff(int attempt, const HttpResponse* response) {
  ++retries_;
  long delay =
      std::min<long>(options_.max_backoff_ms, static_cast<long>(options_.initial_backoff_ms)
                                                  << std::min(attempt, 16));
  if (response != nullptr) {
    const std::string retry_after = response->header("retry-after");
    long seconds = 0;
    const char* end = retry_after.data() + retry_after.size();
    auto [p, ec] = std::from_chars(retry_after.data(), end, seconds);
    if (!retry_after.empty() && p == end && seconds >= 0 &&
        (ec == std::errc() || ec == std::errc::result_out_of_range)) {
      // A huge value (std::stol threw out_of_range here) waits the longest backoff.
      delay = ec == std::errc() && seconds <= options_.max_backoff_ms / 1000
                  ? seconds * 1000
                  : static_cast<long>(options_.max_backoff_ms);
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(delay));
}

Status HttpClient::Perform(Attempt& a) {
  a.response = HttpResponse();
  a.mode = Attempt::Mode::kCollect;
  a.complete = false;
  a.skip = 0;
  a.status_line = 0;
  a.range_error.clear();
  a.error[0] = '\0';
  CURL* c = curl_;
  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, a.url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, options_.connect_timeout_ms);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, options_.stall_timeout_s);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, options_.verify_tls ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, options_.verify_tls ? 2L : 0L);
  if (!options_.ca_bundle.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_bundle.c_str());
  curl_easy_setopt(c, CURLOPT_USERAGENT, options_.user_agent.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, a.error);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  if (a.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (a.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, a.method.c_str());
  }
  curl_slist* list = nullptr;
  for (const std::string& h : a.headers) list = curl_slist_append(list, h.c_str());
  std::string range;
  if (a.dst != nullptr) {
    const uint64_t from = a.first + a.got;
    range = "Range: bytes=" + std::to_string(from) + "-" + std::to_string(a.first + a.want - 1);
    list = curl_slist_append(list, range.c_str());
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);

  auto on_header = +[](char* data, size_t size, size_t n, void* user) -> size_t {
    auto* at = static_cast<Attempt*>(user);
    std::string line(data, size * n);
    if (line.rfind("HTTP/", 0) == 0) {
      at->response.headers.clear();  // a new response (after 100 Continue, say)
      const size_t sp = line.find(' ');
      at->status_line = sp == std::string::npos ? 0 : std::atol(line.c_str() + sp + 1);
      return size * n;
    }
    if (line == "\r\n" || line == "\n") {
      if (at->status_line >= 200) at->HeadersDone();
      return size * n;
    }
    const size_t colon = line.find(':');
    if (colon != std::string::npos) {
      at->response.headers[Lower(Trim(line.substr(0, colon)))] = Trim(line.substr(colon + 1));
    }
    return size * n;
  };
  auto on_body = +[](char* data, size_t size, size_t n, void* user) -> size_t {
    auto* at = static_cast<Attempt*>(user);
    const size_t bytes = size * n;
    if (at->mode == Attempt::Mode::kAbort) return 0;
    if (at->mode == Attempt::Mode::kCollect) {
      if (at->response.body.size() + bytes > at->max_body) return 0;
      at->response.body.append(data, bytes);
      return bytes;
    }
    size_t used = 0;
    if (at->skip > 0) {
      used = static_cast<size_t>(std::min<uint64_t>(at->skip, bytes));
      at->skip -= used;
    }
    const uint64_t room = at->want - at->got;
    const size_t take = static_cast<size_t>(std::min<uint64_t>(room, bytes - used));
    if (take > 0) {
      std::memcpy(at->dst + at->got, data + used, take);
      at->got += take;
      if (at->on_bytes != nullptr && *at->on_bytes) (*at->on_bytes)(take);
    }
    if (at->got == at->want) {
      at->complete = true;
      return used + take == bytes ? bytes : 0;  // stop a server that sends more than asked
    }
    return bytes;
  };
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &a);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
  a.code = curl_easy_perform(c);
  curl_slist_free_all(list);
  curl_off_t body_bytes = 0;
  long header_bytes = 0;
  curl_easy_getinfo(c, CURLINFO_SIZE_DOWNLOAD_T, &body_bytes);
  curl_easy_getinfo(c, CURLINFO_HEADER_SIZE, &header_bytes);
  wire_bytes_ += static_cast<uint64_t>(body_bytes) + static_cast<uint64_t>(header_bytes);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.response.status);
  if (a.code == CURLE_WRITE_ERROR && a.complete) a.code = CURLE_OK;
  if (a.code != CURLE_OK) {
    std::string why = a.error[0] != '\0' ? a.error : curl_easy_strerror(a.code);
    if (!a.range_error.empty()) return Status::Corruption(a.url + ": " + a.range_error);
    if (a.code == CURLE_PEER_FAILED_VERIFICATION || a.code == CURLE_SSL_CACERT_BADFILE) {
      why +=
          " (the server's TLS certificate is not trusted: for a private CA set ca_bundle or "
          "CURL_CA_BUNDLE to its PEM file; verify_tls=false turns the check off, unsafely)";
    }
    return Status::IOError(a.method + " " + a.url + " failed: " + why);
  }
  return Status::OK();
}

Result<HttpResponse> HttpClient::Request(const std::string& method, const std::string& url,
                                         const HttpHeaders& headers, uint64_t max_body) {
  Attempt a;
  a.method = method;
  a.url = url;
  a.headers = headers;
  a.max_body = max_body;
  for (int attempt = 0;; ++attempt) {
    Status s = Perform(a);
    const bool last = attempt >= options_.max_retries;
    if (!s.ok()) {
      if (last || !Retryable(a.code))
        return s.WithContext("after " + std::to_string(attempt + 1) + " attempts");
      LogDebug(s.message() + "; retrying");
      Backoff(attempt, nullptr);
      continue;
    }
    if (RetryableStatus(a.response.status) && !last) {
      LogDebug(method + " " + url + " answered " + std::to_string(a.response.status) +
               "; retrying");
      Backoff(attempt, &a.response);
      continue;
    }
    return std::move(a.response);
  }
}

Status HttpClient::GetRange(const std::string& url, const HttpHeaders& headers, uint64_t start,
                            uint64_t length, std::byte* dst, const std::string& expect_etag,
                            const std::function<void(uint64_t)>& on_bytes) {
  if (length == 0) return Status::OK();
  Attempt a;
  a.method = "GET";
  a.url = url;
  a.headers = headers;
  a.max_body = 64 << 10;
  a.dst = dst;
  a.first = start;
  a.want = length;
  a.expect_etag = NormalizeEtag(expect_etag);
  a.on_bytes = &on_bytes;
  int failures = 0;
  while (true) {
    const uint64_t before = a.got;
    Status s = Perform(a);
    if (!a.range_error.empty()) return Status::Corruption(url + ": " + a.range_error);
    if (a.got == a.want) return Status::OK();
    const long status = a.response.status;
    if (a.got > before) {
      // A dropped connection after some bytes: resume from the first missing one.
      ++retries_;
      failures = 0;
      LogDebug("GET " + url + " stopped at byte " + std::to_string(start + a.got) + "; resuming");
      continue;
    }
    if (s.ok() && (status == 200 || status == 206)) {
      return Status::IOError("GET " + url + ": the answer ended after " + std::to_string(a.got) +
                             " of " + std::to_string(a.want) + " bytes");
    }
    if (s.ok() && !RetryableStatus(status)) {
      return Status::IOError(
          "GET " + url + " (bytes " + std::to_string(start) + "-" +
          std::to_string(start + length - 1) + ") answered " + std::to_string(status) +
          (a.response.body.empty() ? "" : ": " + a.response.body.substr(0, 200)));
    }
    if (!s.ok() && !Retryable(a.code)) return s;
    if (++failures > options_.max_retries) {
      Status last =
          s.ok() ? Status::IOError("GET " + url + " answered " + std::to_string(status)) : s;
      return last.WithContext("giving up after " + std::to_string(failures) + " attempts");
    }
    Backoff(failures - 1, s.ok() ? &a.response : nullptr);
  }
}

}  // namespace layercache
