// download_and_cache against a real nginx (Debian's nginx-light) serving a
// sharded model with real Range semantics, started by the test on loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "layercache/layer_cache.h"
#include "layercache/synthetic_model.h"
#include "source/checkpoint.h"
#include "test_support.h"

namespace layercache {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr const char* kNginx = "/usr/sbin/nginx";

class Nginx {
 public:
  // Serves `www` over HTTPS when `cert` and `key` (PEM files) are given.
  Nginx(const std::string& dir, const std::string& www, const std::string& cert = "",
        const std::string& key = "")
      : dir_(dir) {
    port_ = testing::FreeLoopbackPort();
    std::ofstream conf(dir + "/nginx.conf");
    conf << (::geteuid() == 0 ? "user root;\n" : "") << "daemon off;\nworker_processes 1;\n"
         << "error_log " << dir << "/error.log;\npid " << dir << "/nginx.pid;\n"
         << "events { worker_connections 64; }\n"
         << "http {\n  log_format bytes '$body_bytes_sent $request_uri';\n  access_log " << dir
         << "/access.log bytes;\n"
         << "  client_body_temp_path " << dir << "/t1;\n  proxy_temp_path " << dir << "/t2;\n"
         << "  fastcgi_temp_path " << dir << "/t3;\n  uwsgi_temp_path " << dir << "/t4;\n"
         << "  scgi_temp_path " << dir << "/t5;\n"
         << "  server { listen 127.0.0.1:" << port_ << (cert.empty() ? "" : " ssl") << "; root "
         << www << ";";
    if (!cert.empty())
      conf << " ssl_certificate " << cert << "; ssl_certificate_key " << key << ";";
    conf << " }\n}\n";
    conf.close();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(kNginx, kNginx, "-p", dir.c_str(), "-c", (dir + "/nginx.conf").c_str(), nullptr);
      ::_exit(127);
    }
    // Wait (bounded) until it accepts connections.
    for (int i = 0; i < 500 && !testing::CanConnectLoopback(port_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~Nginx() {
    ::kill(pid_, SIGQUIT);
    ::waitpid(pid_, nullptr, 0);
  }
  int port() const { return port_; }
  // The body bytes nginx sent for every request answered so far. nginx writes
  // a request's log line after sending its response, so a client can have
  // its bytes before the line exists: this sends a marker request on a new
  // connection and waits (up to a minute) for its line. With one worker
  // process, requests are logged in the order they complete, so once the
  // marker is logged so is every request answered before it.
  uint64_t BodyBytesSent() const {
    static int marks = 0;
    const std::string mark = "/layercache-log-mark-" + std::to_string(++marks);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const std::string request = "GET " + mark + " HTTP/1.0\r\n\r\n";
    EXPECT_EQ(::write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    char buf[4096];
    while (::read(fd, buf, sizeof(buf)) > 0) {
    }
    ::close(fd);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (true) {
      std::ifstream log(dir_ + "/access.log");
      uint64_t total = 0, n = 0;
      std::string uri;
      bool marked = false;
      while (log >> n >> uri) {
        if (uri == mark)
          marked = true;
        else if (uri.rfind("/layercache-log-mark-", 0) != 0)
          total += n;
      }
      if (marked) return total;
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "nginx did not log " << mark << " within 60 s";
        return total;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

 private:
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

TEST(Nginx, StreamsLayersFromARealServerWithRangeRequests) {
  LAYERCACHE_REQUIRE(fs::exists(kNginx),
                     "nginx is not installed (scripts/install-deps.sh installs nginx-light)");
  TempDir dir;
  const std::string model = dir / "www/acme/llama/resolve/main";
  fs::create_directories(model);
  SyntheticModelSpec spec;
  spec.num_layers = 6;
  spec.layers_per_shard = 2;
  spec.hidden_size = 512;
  spec.intermediate_size = 1376;
  ASSERT_TRUE(WriteSyntheticModel(model, spec).ok());
  Nginx nginx(dir.path(), dir / "www");
  ASSERT_TRUE(testing::CanConnectLoopback(nginx.port()))
      << "nginx did not start; see " << dir / "error.log";
  auto local = Checkpoint::Open(model);
  ASSERT_TRUE(local.ok());

  LayerCacheOptions o;
  o.cache_dir = dir / "cache";
  LayerCache cache(o);
  DownloadOptions d;
  d.endpoint = "http://127.0.0.1:" + std::to_string(nginx.port());
  d.quiet = true;
  d.connections = 4;
  uint64_t layer_bytes = 0;
  for (int i = 0; i < 6; ++i) {
    LayerPtr layer = cache.download_and_cache("llama", i, "acme/llama", "", d);
    ASSERT_NE(layer, nullptr);
    EXPECT_TRUE(layer->ContentEquals(**(*local)->ReadLayer(i))) << "layer " << i;
    layer_bytes += layer->nbytes();
  }
  const uint64_t index = fs::file_size(model + "/model.safetensors.index.json");
  const uint64_t sent = nginx.BodyBytesSent();
  EXPECT_LE(sent, layer_bytes + layer_bytes / 100 + 3 * 100'000 + index) << "bytes on the wire";
  EXPECT_GE(sent, layer_bytes);
  // nginx sends no X-Repo-Commit: the key records the content's ETag instead.
  for (const auto& e : cache.list_entries())
    EXPECT_EQ(e.key.revision.rfind("etag:", 0), 0u) << e.key.revision;
}

// A self-signed certificate for `san` (e.g. "IP:127.0.0.1"), made by openssl.
bool MakeCertificate(const std::string& dir, const std::string& san) {
  auto r =
      testing::RunCommand({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem", "-days", "1",
                           "-subj", "/CN=layercache-test", "-addext", "subjectAltName=" + san});
  return r.exit_code == 0;
}

// TLS is verified by default: a server whose certificate no trusted CA
// signed gets a clear error and not one byte cached; trusting its CA (the
// ca_bundle option or CURL_CA_BUNDLE) works; a trusted certificate for
// another host is still refused.
TEST(Nginx, AnUntrustedCertificateIsRefusedWithAClearError) {
  LAYERCACHE_REQUIRE(fs::exists(kNginx) && fs::exists("/usr/bin/openssl"),
                     "nginx or openssl is not installed (scripts/install-deps.sh installs both)");
  TempDir dir;
  const std::string model = dir / "www/acme/tiny/resolve/main";
  fs::create_directories(model);
  SyntheticModelSpec spec;
  spec.num_layers = 2;
  spec.layers_per_shard = 2;
  spec.hidden_size = 64;
  spec.intermediate_size = 128;
  ASSERT_TRUE(WriteSyntheticModel(model, spec).ok());
  for (const char* host : {"right", "wrong"}) fs::create_directories(dir / host);
  ASSERT_TRUE(MakeCertificate(dir / "right", "IP:127.0.0.1"));
  ASSERT_TRUE(MakeCertificate(dir / "wrong", "DNS:example.com"));

  ::unsetenv("CURL_CA_BUNDLE");
  ::unsetenv("REQUESTS_CA_BUNDLE");
  ::unsetenv("SSL_CERT_FILE");
  LayerCacheOptions o;
  o.cache_dir = dir / "cache";
  LayerCache cache(o);
  DownloadOptions d;
  d.quiet = true;
  d.max_retries = 0;
  {
    Nginx nginx(dir / "right", dir / "www", dir / "right/cert.pem", dir / "right/key.pem");
    ASSERT_TRUE(testing::CanConnectLoopback(nginx.port()));
    d.endpoint = "https://127.0.0.1:" + std::to_string(nginx.port());
    auto refused = cache.download_and_cache_status("tiny", 0, "acme/tiny", "", d);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("certificate"), std::string::npos)
        << refused.status().ToString();
    EXPECT_NE(refused.status().message().find("ca_bundle"), std::string::npos);
    EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);
    EXPECT_EQ(nginx.BodyBytesSent(), 0u) << "no byte may be read from an unverified server";

    d.ca_bundle = dir / "right/cert.pem";
    auto trusted = cache.download_and_cache_status("tiny", 0, "acme/tiny", "", d);
    ASSERT_TRUE(trusted.ok()) << trusted.status().ToString();
    d.ca_bundle.clear();
    ::setenv("CURL_CA_BUNDLE", (dir / "right/cert.pem").c_str(), 1);
    auto by_env = cache.download_and_cache_status("tiny", 1, "acme/tiny", "", d);
    ::unsetenv("CURL_CA_BUNDLE");
    ASSERT_TRUE(by_env.ok()) << by_env.status().ToString();
  }
  {
    Nginx nginx(dir / "wrong", dir / "www", dir / "wrong/cert.pem", dir / "wrong/key.pem");
    ASSERT_TRUE(testing::CanConnectLoopback(nginx.port()));
    d.endpoint = "https://127.0.0.1:" + std::to_string(nginx.port());
    d.ca_bundle = dir / "wrong/cert.pem";
    cache.clear_cache();
    auto other_host = cache.download_and_cache_status("tiny", 0, "acme/tiny", "", d);
    ASSERT_FALSE(other_host.ok()) << "a certificate for another host must be refused";
    EXPECT_EQ(nginx.BodyBytesSent(), 0u);
  }
}

}  // namespace
}  // namespace layercache
