// The Hugging Face cache layout as a source of checkpoints:
//   <cache>/models--<org>--<name>/refs/<revision>     (a file holding a commit id)
//   <cache>/models--<org>--<name>/snapshots/<commit>/<path>  (symlinks into blobs/)
//   <cache>/models--<org>--<name>/blobs/<etag>         (sha256 for LFS files, git blob id else)
// as huggingface_hub writes it. A snapshot directory reads like a model
// directory (the symlinks are followed), and the blob names give the files'
// ids without hashing them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "layercache/status.h"

namespace layercache {

// The cache directory: `dir` when not empty, else $HF_HUB_CACHE, else
// $HF_HOME/hub, else ~/.cache/huggingface/hub (XDG_CACHE_HOME honoured).
std::string HfCacheDir(const std::string& dir = "");

// "org/name" -> "models--org--name" (and back: "" if not a model folder).
std::string HfCacheRepoFolder(const std::string& repo_id);
std::string HfCacheRepoId(const std::string& folder);

struct HfCacheRepo {
  std::string repo_id;
  std::string dir;                          // <cache>/models--org--name
  std::map<std::string, std::string> refs;  // revision name -> commit (refs/ files)
  std::vector<std::string> commits;         // snapshots/ present, sorted
};

// The model repositories in a cache (sorted by id). Fails when `cache_dir`
// is not a readable directory.
Result<std::vector<std::string>> ListHfCacheRepos(const std::string& cache_dir);
// One repository's refs and snapshots. NotFound when the cache has no such
// repository; InvalidArgument for an id that is not "name" or "org/name".
Result<HfCacheRepo> ReadHfCacheRepo(const std::string& cache_dir, const std::string& repo_id);

struct HfSnapshot {
  std::string commit;
  std::string dir;  // <repo>/snapshots/<commit>
};
// The snapshot of `revision` (a ref name, or a commit with a snapshot; "" is
// "main"). NotFound says what exists.
Result<HfSnapshot> ResolveHfCacheRevision(const HfCacheRepo& repo, const std::string& revision);

// True for a 40-hex-digit (git sha1) id.
bool IsCommitId(const std::string& s);

}  // namespace layercache
