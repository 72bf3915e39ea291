#include "layercache/checksum.h"

#include <openssl/evp.h>
#include <xxhash.h>

#include "layercache/status.h"
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>  // XXH3 with run-time AVX2 / AVX-512 selection
#endif

#include <stdexcept>

namespace layercache {
namespace {

std::string Hex(const unsigned char* bytes, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 15]);
  }
  return out;
}

class Xxh3Hasher final : public Hasher {
 public:
  Xxh3Hasher() : state_(XXH3_createState()) {
    if (state_ == nullptr) throw std::bad_alloc();
    XXH3_128bits_reset(state_);
  }
  ~Xxh3Hasher() override { XXH3_freeState(state_); }
  using Hasher::Update;
  void Update(std::span<const std::byte> data) override {
    XXH3_128bits_update(state_, data.data(), data.size());
  }
  std::string FinalHex() override {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(state_));
    return Hex(c.digest, sizeof c.digest);
  }

 private:
  XXH3_state_t* state_;
};

class EvpHasher final : public Hasher {
 public:
  explicit EvpHasher(const EVP_MD* md) : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, md, nullptr) != 1) {
      throw Error(Status::Unsupported(
          "OpenSSL cannot initialise this digest (is it disabled, e.g. MD5 in FIPS mode?); "
          "use checksum_algorithm=\"xxh3-128\" or \"sha256\""));
    }
  }
  ~EvpHasher() override { EVP_MD_CTX_free(ctx_); }
  using Hasher::Update;
  void Update(std::span<const std::byte> data) override {
    EVP_DigestUpdate(ctx_, data.data(), data.size());
  }
  std::string FinalHex() override {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, out, &n);
    return Hex(out, n);
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace

std::unique_ptr<Hasher> NewHasher(ChecksumAlgorithm algorithm) {
  switch (algorithm) {
    case ChecksumAlgorithm::kXXH3_128:
      return std::make_unique<Xxh3Hasher>();
    case ChecksumAlgorithm::kMD5:
      return std::make_unique<EvpHasher>(EVP_md5());
    case ChecksumAlgorithm::kSHA256:
      return std::make_unique<EvpHasher>(EVP_sha256());
  }
  throw Error(Status::InvalidArgument("unknown checksum algorithm"));
}

std::string GitBlobSha1Hex(std::string_view content) {
  EvpHasher h(EVP_sha1());
  const std::string prefix = "blob " + std::to_string(content.size()) + std::string(1, '\0');
  h.Update(std::string_view(prefix));
  h.Update(content);
  return h.FinalHex();
}

std::string ChecksumHex(ChecksumAlgorithm algorithm, std::span<const std::byte> data) {
  auto h = NewHasher(algorithm);
  h->Update(data);
  return h->FinalHex();
}

}  // namespace layercache
