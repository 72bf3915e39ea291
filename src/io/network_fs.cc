#include "io/network_fs.h"

#include <sys/vfs.h>

#include <cstdlib>

namespace layercache {

std::string NetworkFileSystemName(uint64_t f_type) {
  switch (f_type) {
    case 0x6969:
      return "nfs";
    case 0x517B:
      return "smb";
    case 0xFF534D42:
      return "cifs";
    case 0xFE534D42:
      return "smb2";
    case 0x65735546:
      return "fuse";
    case 0x01021997:
      return "9p";
    case 0x00C36400:
      return "ceph";
    case 0x0BD00BD0:
      return "lustre";
    case 0x47504653:
      return "gpfs";
    case 0x5346414F:
      return "afs";
    case 0x6B414653:
      return "afs";  // kAFS
    case 0x73757245:
      return "coda";
    case 0x564C:
      return "ncp";
    case 0x013111A8:
      return "ibrix";
    case 0x19830326:
      return "fhgfs";  // BeeGFS
    case 0x7461636F:
      return "ocfs2";
    case 0x01161970:
      return "gfs2";
    case 0xAAD7AAEA:
      return "panfs";
    default:
      return "";
  }
}

FileSystemInfo DescribeFileSystem(const std::string& path) {
  FileSystemInfo info;
  if (const char* forced = std::getenv("LAYERCACHE_NETWORK_FS");
      forced != nullptr && *forced != '\0') {
    info.forced = true;
    info.network = std::string(forced) != "0";
    info.name = info.network ? "forced by LAYERCACHE_NETWORK_FS" : "";
    return info;
  }
  struct statfs st {};
  if (::statfs(path.c_str(), &st) != 0) return info;
  info.name = NetworkFileSystemName(static_cast<uint64_t>(st.f_type));
  info.network = !info.name.empty();
  return info;
}

}  // namespace layercache
