// Streaming checksums: XXH3-128, MD5 and SHA-256 behind one interface.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "layercache/options.h"

namespace layercache {

class Hasher {
 public:
  virtual ~Hasher() = default;
  virtual void Update(std::span<const std::byte> data) = 0;
  void Update(std::string_view text) { Update(std::as_bytes(std::span<const char>(text))); }
  // Lower-case hex digest. Call once.
  virtual std::string FinalHex() = 0;
};

std::unique_ptr<Hasher> NewHasher(ChecksumAlgorithm algorithm);

// The git object id of a blob with this content: sha1("blob <len>\0" + content).
std::string GitBlobSha1Hex(std::string_view content);

// One-shot convenience.
std::string ChecksumHex(ChecksumAlgorithm algorithm, std::span<const std::byte> data);

}  // namespace layercache
