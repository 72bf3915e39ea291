// Writing a file whose path a user gave (`layercache get -o PATH`,
// WriteSafetensorsFile): what is there already decides how.
//  - nothing there, or a regular file: written to a temp file in the target's
//    directory, fsynced and renamed over it (readers never see half a file;
//    an existing file keeps its permission bits);
//  - a character device (/dev/null, a terminal) or a FIFO: opened and written
//    in place, never replaced;
//  - a symbolic link: written through - the rules above apply to the file it
//    points to, and the link stays; a link to nothing is refused;
//  - a directory, a block device or a socket: refused (kInvalidArgument).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "io/env.h"
#include "layercache/status.h"

namespace layercache {

Status WriteUserFile(Env* env, const std::string& path,
                     const std::vector<std::span<const std::byte>>& pieces);

// Writes the pieces to an open descriptor (stdout for "-"), retrying short
// writes and EINTR. `what` names it in errors.
Status WriteAllToFd(int fd, const std::vector<std::span<const std::byte>>& pieces,
                    const std::string& what);

}  // namespace layercache
