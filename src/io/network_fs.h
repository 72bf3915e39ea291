// Which file system holds a directory, to know whether SQLite's WAL mode can
// be used there: WAL needs shared memory between the processes that open the
// database, which a network file system (NFS, CIFS/SMB, FUSE, 9p, ...) does
// not give across hosts (https://www.sqlite.org/wal.html). On those the
// index runs in rollback-journal mode (journal_mode=DELETE, synchronous=FULL),
// whose locks are POSIX byte-range locks, like the cache's own: on NFS (v4,
// or v3 with lockd) the client forwards them to the server, so they hold
// across hosts.
#pragma once

#include <cstdint>
#include <string>

namespace layercache {

struct FileSystemInfo {
  bool network = false;
  std::string name;     // "nfs", "cifs", "fuse", ... (empty when local)
  bool forced = false;  // decided by LAYERCACHE_NETWORK_FS, not statfs
};

// statfs(2) of `path`; LAYERCACHE_NETWORK_FS=1 (or 0) forces the answer
// (for tests, or a file system this list does not know).
FileSystemInfo DescribeFileSystem(const std::string& path);

// The name of a network (or user-space) file system's statfs magic number,
// or "" for one taken as local.
std::string NetworkFileSystemName(uint64_t f_type);

}  // namespace layercache
