// Reading and writing safetensors files (https://github.com/huggingface/safetensors).
//
// The reader makes every check the reference implementation makes, and a few
// more: the 8-byte little-endian header length is at most 100,000,000 and lies
// inside the file; the header is a UTF-8 JSON object; every dtype is known;
// shape products and byte sizes do not overflow; each tensor's byte size is its
// dtype size times its element count; offsets, sorted, start at 0 and are
// contiguous (no holes, no overlaps); the data ends exactly at the end of the
// file; `__metadata__` maps strings to strings; tensor names are unique. It
// never assumes that data in the file is aligned. Each error names the file (or
// what was parsed) and the rule that was broken.
//
// The writer produces the same bytes as the reference writer: compact JSON,
// `__metadata__` first (keys sorted), tensors by descending dtype then name,
// header padded with spaces to a multiple of 8.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "layercache/env.h"
#include "layercache/layer.h"
#include "layercache/status.h"

namespace layercache {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// A parsed, validated header. Tensor offsets are relative to the start of the
// data section, which begins at file offset `data_offset` (= 8 + header length).
struct SafetensorsHeader {
  uint64_t header_length = 0;
  uint64_t data_offset = 0;
  uint64_t data_bytes = 0;
  std::vector<TensorInfo> tensors;  // in file order (ascending offsets)
  Metadata metadata;
  bool has_metadata = false;  // whether `__metadata__` was present

  const TensorInfo* find(std::string_view name) const;
};

// Checks the 8-byte length prefix against the file size. `what` names the file
// in errors. Recognises Git LFS pointer files and says so.
Result<uint64_t> ParseSafetensorsHeaderLength(std::span<const std::byte> prefix, uint64_t file_size,
                                              std::string_view what);

// Parses and validates the header JSON (the bytes after the length prefix)
// of a file of `file_size` bytes.
Result<SafetensorsHeader> ParseSafetensorsHeader(std::string_view json, uint64_t file_size,
                                                 std::string_view what);

// Parses a whole safetensors file held in memory into a Layer.
Result<LayerPtr> ParseSafetensors(std::span<const std::byte> file_bytes, std::string_view what);

// Reads only the header of a file on disk, through `env` (null: Env::Default()).
Result<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path, Env* env = nullptr);

// Reads a whole safetensors file into a Layer (tensors in canonical order; the
// file's `__metadata__` becomes the layer's metadata), through `env` (null:
// Env::Default()).
Result<LayerPtr> ReadSafetensorsFile(const std::string& path, Env* env = nullptr);

// The header bytes (JSON padded with spaces) for `layer` with `metadata` in
// place of the layer's own, such that 8 + header length is a multiple of
// `align_data_to` (8 gives the reference writer's bytes).
std::string SerializeSafetensorsHeader(const Layer& layer, const Metadata& metadata,
                                       size_t align_data_to = 8);

// The whole file, byte-identical to the reference writer's output.
std::vector<std::byte> SerializeSafetensors(const Layer& layer);

// Writes the reference-identical file to `path`. A new or regular file is
// written through a temp file in its directory and a rename (a reader never
// sees half a file); a character device or FIFO is written in place, never
// replaced; a symbolic link is written through; a directory, block device or
// socket is refused (kInvalidArgument).
Status WriteSafetensorsFile(const Layer& layer, const std::string& path);
// Writes the same bytes to an open descriptor (e.g. 1 for standard output).
Status WriteSafetensorsToFd(const Layer& layer, int fd);

}  // namespace layercache
