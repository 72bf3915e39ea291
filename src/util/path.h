// Small path and naming helpers.
#pragma once

#include <string>

namespace layercache {

// "a/b/c" -> "a/b"; "c" -> "."; "/c" -> "/".
std::string DirName(const std::string& path);
// Joins with exactly one '/'.
std::string JoinPath(const std::string& a, const std::string& b);
// Expands a leading "~" or "~/" using $HOME (or the password database).
std::string ExpandUser(const std::string& path);
// `n` random bytes as 2n lower-case hex digits (from a per-thread generator
// seeded by std::random_device).
std::string RandomHex(size_t n);

}  // namespace layercache
