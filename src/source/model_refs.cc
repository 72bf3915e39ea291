#include "source/model_refs.h"

#include <time.h>
#include <xxhash.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <span>
#include <vector>

#include "util/logging.h"
#include "util/path.h"

namespace layercache {
namespace {

// steady_clock's clock (CLOCK_MONOTONIC) read coarsely: Default() runs on
// every get_layer, memory hits included, and a precise reading costs 20 ns
// and more on a VM (a third of a hit, measured with micro_bench); the memo's
// ages are compared with kRecheck (a second), for which ticks of a few
// milliseconds are plenty.
std::chrono::steady_clock::time_point CoarseNow() {
  timespec ts{};
  if (::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) return std::chrono::steady_clock::now();
  return std::chrono::steady_clock::time_point(std::chrono::seconds(ts.tv_sec) +
                                               std::chrono::nanoseconds(ts.tv_nsec));
}

// A revision as part of a file name: commits and branch names, with anything
// outside [A-Za-z0-9._-] percent-encoded (refs/pr/1 -> refs%2Fpr%2F1).
std::string FileSafe(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '-') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

Status Write(Env* env, const std::string& dir, const std::string& path, std::string_view data) {
  if (Status s = env->CreateDirs(dir); !s.ok()) return s;
  std::vector<std::span<const std::byte>> pieces{
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(data.data()), data.size())};
  return WriteFileAtomically(env, path, pieces);
}

// Every get_layer asks Default(): each thread keeps its last answer, valid
// while no memo of any ModelRefs changed since (a counter, read-mostly, so
// that hits on several threads share no written cache line) and for
// kRecheck, like the shared memo.
std::atomic<uint64_t> g_generation{1};

struct ThreadMemo {
  const ModelRefs* owner = nullptr;
  uint64_t generation = 0;
  std::string model;
  std::string commit;
  std::chrono::steady_clock::time_point when;
};
thread_local ThreadMemo t_memo;

}  // namespace

void ModelRefs::Report(const std::string& what, const Status& s) {
  if (s.ok()) return;
  // Best effort (a read-only cache records nothing): said once as a
  // warning, then at debug level.
  const std::string msg = "cannot record " + what + ": " + s.message();
  if (!warned_.exchange(true)) {
    LogWarn(msg);
  } else {
    LogDebug(msg);
  }
}

ModelRefs::ModelRefs(Env* env, std::string dir) : env_(env), dir_(std::move(dir)) {
  // A thread's memo of an earlier object at this address is not this one's.
  g_generation.fetch_add(1, std::memory_order_acq_rel);
}

std::string ModelRefs::ModelDir(std::string_view model_id) const {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(model_id.data(), model_id.size())));
  return JoinPath(dir_, hex);
}

std::string ModelRefs::ConfigPath(std::string_view model_id, const std::string& revision) const {
  return JoinPath(ModelDir(model_id),
                  revision.empty() ? "config.json" : "config@" + FileSafe(revision) + ".json");
}

void ModelRefs::Record(std::string_view model_id, const std::string& commit) {
  {
    std::lock_guard lock(mu_);
    auto it = memo_.find(model_id);
    if (it != memo_.end() && it->second.commit == commit) {
      it->second.when = CoarseNow();
      return;
    }
  }
  const std::string dir = ModelDir(model_id);
  Status written = Write(env_, dir, JoinPath(dir, "ref"), commit);
  Report("the default revision of " + std::string(model_id), written);
  std::lock_guard lock(mu_);
  // Not remembered when unrecorded: the next call tries again.
  if (written.ok()) {
    memo_[std::string(model_id)] = Memo{commit, CoarseNow()};
    g_generation.fetch_add(1, std::memory_order_acq_rel);
  }
}

std::string ModelRefs::Default(std::string_view model_id) {
  const auto now = CoarseNow();
  ThreadMemo& tm = t_memo;
  const uint64_t generation = g_generation.load(std::memory_order_acquire);
  if (tm.owner == this && tm.generation == generation && tm.model == model_id &&
      now - tm.when < kRecheck) {
    return tm.commit;
  }
  {
    std::lock_guard lock(mu_);
    auto it = memo_.find(model_id);
    if (it != memo_.end() && now - it->second.when < kRecheck) {
      tm = ThreadMemo{this, generation, std::string(model_id), it->second.commit, it->second.when};
      return it->second.commit;
    }
  }
  auto text = ReadFileToString(env_, JoinPath(ModelDir(model_id), "ref"));
  std::string commit = text.ok() ? *text : std::string();
  // A commit or "etag:<hash>"; anything else (a damaged file) is no record.
  for (char c : commit) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == ':' || c == '-' || c == '_')) {
      commit.clear();
      break;
    }
  }
  std::lock_guard lock(mu_);
  memo_[std::string(model_id)] = Memo{commit, now};
  g_generation.fetch_add(1, std::memory_order_acq_rel);
  return commit;
}

void ModelRefs::SaveConfig(std::string_view model_id, const std::string& revision,
                           std::string_view json) {
  const std::string dir = ModelDir(model_id);
  Report("the config.json of " + std::string(model_id),
         Write(env_, dir, ConfigPath(model_id, revision), json));
}

std::string ModelRefs::Config(std::string_view model_id, const std::string& revision) {
  if (revision.empty()) {
    const std::string commit = Default(model_id);
    if (!commit.empty()) {
      auto text = ReadFileToString(env_, ConfigPath(model_id, commit));
      if (text.ok()) return *text;
    }
  }
  auto text = ReadFileToString(env_, ConfigPath(model_id, revision));
  return text.ok() ? *text : std::string();
}

bool ModelRefs::HasConfig(std::string_view model_id, const std::string& revision) {
  return env_->Stat(ConfigPath(model_id, revision)).ok();
}

}  // namespace layercache
