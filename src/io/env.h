// The Env interface is public (include/layercache/env.h); this header adds
// the helpers the library builds on it. PosixEnv (posix_env.cc) is
// Env::Default().
#pragma once

#include <span>
#include <string>
#include <vector>

#include "layercache/env.h"
#include "layercache/status.h"

namespace layercache {

// Reads a whole (small) file into a string.
Result<std::string> ReadFileToString(Env* env, const std::string& path);

// Writes `data` to `path` atomically: a unique temp file beside it, fsync,
// rename, fsync of the directory.
// The pieces are written back to back. `mode` >= 0: the file gets these
// permission bits (e.g. those of the file it replaces) before the rename.
Status WriteFileAtomically(Env* env, const std::string& path,
                           const std::vector<std::span<const std::byte>>& pieces, int mode = -1);

// "message: strerror(errno)" for an errno value, mapping ENOSPC/EDQUOT to
// kNoSpace and ENOENT to kNotFound.
Status ErrnoStatus(const std::string& context, int err);

}  // namespace layercache
