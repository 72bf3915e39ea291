// libFuzzer target: what the cluster tier reads from Redis. Input: 1 byte
// choosing the piece size, then bytes that are fed both as a manifest (JSON
// text) and as a layer file arriving in pieces of that size.
// Properties: no crash; an accepted manifest's chunk sums match its sizes;
// a layer the stream reader accepts is exactly what ParseSafetensors reads
// from the same bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "format/safetensors_stream.h"
#include "layercache/safetensors.h"
#include "remote/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace layercache;
  if (size < 1) return 0;
  const size_t piece = 1 + data[0] % 64;
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);

  auto manifest = ParseRemoteManifest(bytes, "0123456789abcdef0123456789abcdef");
  if (manifest.ok() && (manifest->chunk_sums.size() != manifest->chunks() ||
                        manifest->chunk_bytes == 0 || manifest->size == 0)) {
    __builtin_trap();
  }

  SafetensorsStreamReader reader(bytes.size(), "fuzz");
  Status s;
  for (size_t at = 0; at < bytes.size() && s.ok(); at += piece)
    s = reader.Feed(bytes.substr(at, piece));
  if (!s.ok()) return 0;
  auto streamed = reader.Finish();
  if (!streamed.ok()) return 0;
  auto whole =
      ParseSafetensors(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())), "fuzz");
  if (!whole.ok() || !(*whole)->ContentEquals(**streamed)) __builtin_trap();
  return 0;
}
