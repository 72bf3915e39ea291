#include "serve_command.h"

#include <csignal>
#include <iostream>

#include "cli_args.h"
#include "hub_server.h"
#include "layercache/hf_cache.h"
#include "layercache/layer_cache.h"

namespace layercache::cli {

int Serve(const ServeOptions& o) {
  if (o.port < 0 || o.port > 65535) {
    std::cerr << "layercache serve: --port " << o.port
              << " is out of range (0-65535; 0 picks a free port)\n";
    return kExitUsage;
  }
  if (o.threads < 1 || o.threads > 1024) {
    std::cerr << "layercache serve: --threads must be 1-1024\n";
    return kExitUsage;
  }
  if (o.max_connections < 1 || o.max_connections > 65536) {
    std::cerr << "layercache serve: --max-connections must be 1-65536\n";
    return kExitUsage;
  }
  if (o.timeout_s < 1 || o.timeout_s > 3600) {
    std::cerr << "layercache serve: --timeout must be 1-3600 seconds\n";
    return kExitUsage;
  }
  HubServerOptions so;
  so.threads = o.threads;
  so.max_connections = o.max_connections;
  so.request_timeout_ms = o.timeout_s * 1000;
  so.write_timeout_ms = o.timeout_s * 2000;
  so.access_log = o.access_log;
  HubServer server(so);
  if (o.use_hf_cache) {
    const std::string cache = HfCacheDir(o.hf_cache);
    if (!o.repo_id.empty()) {
      if (Status s = server.AddHfCacheRepo(cache, o.repo_id); !s.ok()) throw Error(s);
    } else {
      auto n = server.AddHfCache(cache);
      if (!n.ok()) throw Error(n.status());
      if (*n == 0) {
        std::cerr << "layercache serve: the Hugging Face cache " << cache
                  << " holds no model snapshot\n";
        return kExitError;
      }
    }
  } else if (!o.dir.empty()) {
    if (o.repo_id.empty()) {
      std::cerr << "layercache serve: DIR needs --repo-id (the id clients ask for)\n";
      return kExitUsage;
    }
    server.AddRepo(o.repo_id, o.dir);
  }
  for (const std::string& pair : o.repos) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == pair.size()) {
      std::cerr << "layercache serve: --repo takes ID=DIR, not '" << pair << "'\n";
      return kExitUsage;
    }
    server.AddRepo(pair.substr(0, eq), pair.substr(eq + 1));
  }
  const auto revisions = server.revisions();
  if (revisions.empty()) {
    std::cerr << "layercache serve: nothing to serve (give DIR --repo-id ID, --repo ID=DIR or "
                 "--hf-cache)\n";
    return kExitUsage;
  }
  const int bound = server.Start(o.host, o.port);
  if (bound < 0) {
    std::cerr << "layercache serve: " << server.last_error() << "\n";
    return kExitError;
  }
  for (const auto& [id, refs] : revisions) {
    std::cout << "serving " << id;
    for (const auto& [name, commit] : refs) std::cout << " " << name << "=" << commit;
    std::cout << "\n";
  }
  const bool v6 = o.host.find(':') != std::string::npos;
  std::cout << "  HF_ENDPOINT=http://" << (v6 ? "[" : "") << o.host << (v6 ? "]" : "") << ":"
            << bound << "\n"
            << std::flush;
  server.Wait();
  return 0;
}

int ImportHfCache(const Global& g, const std::string& cache_dir, const std::string& repo_id,
                  const std::string& revision, const std::string& model_id,
                  const std::string& layers, const std::string& pattern) {
  const std::string cache = HfCacheDir(cache_dir);
  auto repo = ReadHfCacheRepo(cache, repo_id);
  if (!repo.ok()) throw Error(repo.status());
  auto snap = ResolveHfCacheRevision(*repo, revision);
  if (!snap.ok()) throw Error(snap.status());
  const std::string id = model_id.empty() ? repo_id : model_id;
  LayerCache c(ResolveOptions(g));  // the cache's stored settings (commands.h)
  EvictionReport ev(c);
  const size_t n =
      c.import_checkpoint(snap->dir, id, ParseLayers(layers), pattern, true, snap->commit);
  std::cout << "imported " << n << " entries of " << repo_id << " (commit " << snap->commit
            << ", from " << cache << ") as " << id << "\n";
  if (const std::string evicted = ev.Describe(c); !evicted.empty()) std::cout << evicted << "\n";
  return 0;
}

}  // namespace layercache::cli
