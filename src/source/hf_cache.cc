#include "layercache/hf_cache.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace layercache {
namespace {
namespace fs = std::filesystem;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

bool ValidRepoPart(const std::string& s) {
  if (s.empty() || s.size() > 96 || s == "." || s == ".." || s.find("--") != std::string::npos)
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

}  // namespace

bool IsCommitId(const std::string& s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string HfCacheDir(const std::string& dir) {
  if (!dir.empty()) return dir;
  if (std::string v = Env("HF_HUB_CACHE"); !v.empty()) return v;
  if (std::string v = Env("HUGGINGFACE_HUB_CACHE"); !v.empty()) return v;
  if (std::string v = Env("HF_HOME"); !v.empty()) return v + "/hub";
  if (std::string v = Env("XDG_CACHE_HOME"); !v.empty()) return v + "/huggingface/hub";
  return Env("HOME") + "/.cache/huggingface/hub";
}

std::string HfCacheRepoFolder(const std::string& repo_id) {
  std::string out = "models--";
  for (char c : repo_id) {
    if (c == '/') {
      out += "--";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string HfCacheRepoId(const std::string& folder) {
  if (folder.rfind("models--", 0) != 0) return "";
  std::string rest = folder.substr(8);
  const size_t sep = rest.find("--");
  if (sep == std::string::npos) return ValidRepoPart(rest) ? rest : "";
  const std::string org = rest.substr(0, sep), name = rest.substr(sep + 2);
  return ValidRepoPart(org) && ValidRepoPart(name) ? org + "/" + name : "";
}

Result<std::vector<std::string>> ListHfCacheRepos(const std::string& cache_dir) {
  std::error_code ec;
  fs::directory_iterator it(cache_dir, ec);
  if (ec)
    return Status::NotFound("cannot read the Hugging Face cache " + cache_dir + ": " +
                            ec.message());
  std::vector<std::string> ids;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return Status::IOError("cannot read " + cache_dir + ": " + ec.message());
    if (!it->is_directory(ec)) continue;
    const std::string id = HfCacheRepoId(it->path().filename().string());
    if (!id.empty() && fs::is_directory(it->path() / "snapshots", ec)) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

Result<HfCacheRepo> ReadHfCacheRepo(const std::string& cache_dir, const std::string& repo_id) {
  const size_t slash = repo_id.find('/');
  const bool ok = slash == std::string::npos ? ValidRepoPart(repo_id)
                                             : repo_id.find('/', slash + 1) == std::string::npos &&
                                                   ValidRepoPart(repo_id.substr(0, slash)) &&
                                                   ValidRepoPart(repo_id.substr(slash + 1));
  if (!ok)
    return Status::InvalidArgument("'" + repo_id +
                                   "' is not a repository id (name or org/name: letters, digits, "
                                   "'-', '_', '.'; no '--')");
  HfCacheRepo repo;
  repo.repo_id = repo_id;
  repo.dir = cache_dir + "/" + HfCacheRepoFolder(repo_id);
  std::error_code ec;
  if (!fs::is_directory(repo.dir + "/snapshots", ec))
    return Status::NotFound("the Hugging Face cache " + cache_dir + " has no model " + repo_id +
                            " (no " + repo.dir + "/snapshots)");
  for (fs::directory_iterator it(repo.dir + "/snapshots", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (IsCommitId(name) && it->is_directory(ec)) repo.commits.push_back(name);
  }
  std::sort(repo.commits.begin(), repo.commits.end());
  if (fs::is_directory(repo.dir + "/refs", ec)) {
    for (fs::recursive_directory_iterator it(repo.dir + "/refs", ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      std::ifstream in(it->path());
      std::string commit;
      std::getline(in, commit);
      while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back())))
        commit.pop_back();
      if (!IsCommitId(commit)) continue;  // not a ref huggingface_hub wrote
      repo.refs[fs::relative(it->path(), repo.dir + "/refs", ec).generic_string()] = commit;
    }
  }
  return repo;
}

Result<HfSnapshot> ResolveHfCacheRevision(const HfCacheRepo& repo, const std::string& revision) {
  const std::string rev = revision.empty() ? "main" : revision;
  std::string commit;
  if (auto r = repo.refs.find(rev); r != repo.refs.end()) {
    commit = r->second;
  } else if (IsCommitId(rev)) {
    commit = rev;
  }
  if (commit.empty() || !std::binary_search(repo.commits.begin(), repo.commits.end(), commit)) {
    std::string known;
    for (const auto& [name, c] : repo.refs) known += (known.empty() ? "" : ", ") + name;
    for (const auto& c : repo.commits) known += (known.empty() ? "" : ", ") + c;
    if (!commit.empty() && commit != rev)
      return Status::NotFound("revision '" + rev + "' of " + repo.repo_id + " points to commit " +
                              commit + ", which has no snapshot in " + repo.dir);
    return Status::NotFound(
        "revision '" + rev + "' of " + repo.repo_id +
        " is not in the Hugging Face cache (it has: " + (known.empty() ? "nothing" : known) + ")");
  }
  return HfSnapshot{commit, repo.dir + "/snapshots/" + commit};
}

}  // namespace layercache
