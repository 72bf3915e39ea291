// Checksums: the algorithms disk entries are checksummed with (see
// docs/FORMAT.md), and streaming hashers for them.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace layercache {

// How entries are checksummed on disk. XXH3-128 is the default (tens of GB/s,
// free next to disk bandwidth); MD5 is the seed's choice; SHA-256 for those
// who need a cryptographic hash.
enum class ChecksumAlgorithm { kXXH3_128, kMD5, kSHA256 };

// "xxh3-128", "md5", "sha256".
const char* ChecksumAlgorithmName(ChecksumAlgorithm algorithm);
// Accepts the names above, "xxh3", "xxh3_128" and "sha-256"; throws
// layercache::Error (kInvalidArgument), listing the valid names, otherwise.
ChecksumAlgorithm ParseChecksumAlgorithm(const std::string& name);

// A streaming hash: Update() any number of times, then FinalHex() once.
class Hasher {
 public:
  virtual ~Hasher() = default;
  virtual void Update(std::span<const std::byte> data) = 0;
  void Update(std::string_view text) { Update(std::as_bytes(std::span<const char>(text))); }
  // Lower-case hex digest. Call once.
  virtual std::string FinalHex() = 0;
};

std::unique_ptr<Hasher> NewHasher(ChecksumAlgorithm algorithm);

// One-shot: the lower-case hex digest of `data`.
std::string ChecksumHex(ChecksumAlgorithm algorithm, std::span<const std::byte> data);

// The git object id of a blob with this content: sha1("blob <len>\0" + content)
// (what the Hugging Face Hub reports as the oid of small files).
std::string GitBlobSha1Hex(std::string_view content);

}  // namespace layercache
