// SafetensorsStreamReader: builds a Layer from a safetensors file that
// arrives in order, in pieces of any size (chunks from the network). The
// header is parsed and checked as soon as it is whole; the data bytes are
// then copied straight into the layer's buffer, with no assembled copy of
// the file. Only files in the reference layout (as SerializeSafetensors and
// the reference writer produce them) are accepted: their data section is the
// layer's buffer as it is.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "layercache/layer.h"
#include "layercache/safetensors.h"
#include "layercache/status.h"

namespace layercache {

class SafetensorsStreamReader {
 public:
  // `file_size`: the whole file's size; `what` names it in errors.
  SafetensorsStreamReader(uint64_t file_size, std::string what);

  // The next bytes of the file. An error is final.
  Status Feed(std::string_view piece);
  // The layer, once exactly file_size bytes were fed.
  Result<LayerPtr> Finish();

  // For callers that receive data bytes straight into place: once the header
  // is parsed (header_parsed()), where the file's bytes [offset, offset + n)
  // go in the layer; Commit them, in file order, once they are there.
  bool header_parsed() const { return header_.has_value(); }
  Result<std::byte*> Destination(uint64_t file_offset, uint64_t n);
  Status Commit(uint64_t file_offset, uint64_t n);

 private:
  Status ParseHeader();

  uint64_t file_size_;
  std::string what_;
  std::string header_bytes_;
  uint64_t header_length_ = 0;
  std::optional<SafetensorsHeader> header_;
  std::vector<TensorInfo> plan_;
  AlignedBuffer buffer_;
  uint64_t filled_ = 0;
};

}  // namespace layercache
