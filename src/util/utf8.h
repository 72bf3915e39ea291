#pragma once

#include <string_view>

namespace layercache {

// Strict UTF-8 validation (no overlongs, no surrogates, at most U+10FFFF).
bool IsValidUtf8(std::string_view s);

}  // namespace layercache
