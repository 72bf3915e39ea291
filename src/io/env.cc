#include "io/env.h"

#include <cerrno>
#include <cstring>
#include <random>

#include "util/path.h"

namespace layercache {

Status ErrnoStatus(const std::string& context, int err) {
  std::string msg = context + ": " + std::strerror(err);
  switch (err) {
    case ENOENT:
      return Status::NotFound(msg);
    case ENOSPC:
    case EDQUOT:
      return Status::NoSpace(msg);
    default:
      return Status::IOError(msg);
  }
}

Result<std::string> ReadFileToString(Env* env, const std::string& path) {
  auto file = env->OpenForRead(path);
  if (!file.ok()) return file.status();
  std::string out((*file)->size(), '\0');
  Status s = (*file)->Read(0, out.size(), reinterpret_cast<std::byte*>(out.data()));
  if (!s.ok()) return s;
  return out;
}

Status WriteFileAtomically(Env* env, const std::string& path,
                           const std::vector<std::span<const std::byte>>& pieces, int mode) {
  const std::string dir = DirName(path);
  const std::string tmp = path + ".tmp." + RandomHex(8);
  auto file = env->CreateNew(tmp);
  if (!file.ok()) return file.status();
  Status s;
  for (const auto& piece : pieces) {
    if (s.ok()) s = (*file)->Append(piece);
  }
  if (s.ok()) s = (*file)->Sync();
  Status c = (*file)->Close();
  if (s.ok()) s = c;
  if (s.ok() && mode >= 0) s = env->SetPermissions(tmp, static_cast<uint32_t>(mode) & 07777);
  if (s.ok()) s = env->Rename(tmp, path);
  if (!s.ok()) {
    (void)env->Remove(tmp);
    return s;
  }
  return env->SyncDir(dir);
}

}  // namespace layercache
