// RepoSnapshot: the files of one commit of a model repository as the Hub
// describes them (path, size, git blob id, LFS sha256 and pointer), with the
// git tree id of every directory, read from a plain directory or from a
// snapshot of the Hugging Face cache. Used by `layercache serve` (tools/hub_server).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "layercache/status.h"

namespace layercache {

struct RepoFile {
  std::string path;        // relative, '/'-separated
  std::string local_path;  // the file to read (snapshot symlinks are followed when opened)
  uint64_t size = 0;
  bool lfs = false;
  std::string sha256;   // LFS files: sha256 of the content
  std::string blob_id;  // git blob id: of the content, or for LFS files of the pointer
  std::string pointer;  // LFS files: the git-lfs pointer text stored in git
  // What the Hub sends as ETag / X-Linked-Etag for /resolve/.
  const std::string& etag() const { return lfs ? sha256 : blob_id; }
};

struct RepoSnapshot {
  std::string commit;
  std::map<std::string, RepoFile> files;        // by path
  std::map<std::string, std::string> tree_ids;  // directory ("" = root) -> git tree id
  int64_t mtime = 0;                            // newest file modification (unix seconds)

  // Every regular file under `dir` (symlinks followed; names starting with
  // ".git/" skipped). Content ids are computed (sha256 for LFS-size files):
  // `commit` empty derives a stable commit id from the tree.
  static Result<std::shared_ptr<RepoSnapshot>> FromDirectory(const std::string& dir,
                                                             const std::string& commit = "");
  // A snapshot directory of the Hugging Face cache: ids come from the blob
  // names the symlinks point to (hashed only when a file is not such a link).
  // Files that resolve outside the repository's folder of the cache are left out.
  static Result<std::shared_ptr<RepoSnapshot>> FromHfSnapshot(const std::string& dir,
                                                              const std::string& commit);
};

// Whether the Hub stores a file of this name and size with git-lfs (the
// default .gitattributes of a model repository, and everything over 10 MiB).
bool IsLfsFile(const std::string& path, uint64_t size);
// The git-lfs pointer of content with this sha256 and size.
std::string LfsPointer(const std::string& sha256, uint64_t size);

}  // namespace layercache
