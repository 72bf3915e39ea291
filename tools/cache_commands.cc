// `layercache ls`, `rm` and `prune`: the cache seen and managed as the
// Hugging Face `hf cache` / `scan-cache` / `delete-cache` commands do.
#include <fnmatch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli_args.h"
#include "commands.h"
#include "layercache/status.h"
#include "quant_cli.h"

namespace layercache::cli {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string IsoTime(int64_t ns) {
  std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string ShortRevision(const std::string& r) {
  if (r.empty()) return "-";
  return r.size() > 12 ? r.substr(0, 12) : r;
}

// One parsed --filter.
struct Filter {
  std::string field;
  char op = '=';
  std::string text;
  uint64_t size = 0;
  int64_t age_s = 0;
};

Filter ParseFilter(const std::string& f) {
  const size_t p = f.find_first_of("=<>");
  const std::string usage =
      "--filter \"" + f +
      "\": use model=GLOB, quant=Q, revision=R, size>N, size<N, accessed>AGE or accessed<AGE "
      "(e.g. size>1G, accessed>30d)";
  if (p == std::string::npos || p == 0) throw Error(Status::InvalidArgument(usage));
  Filter out;
  out.field = f.substr(0, p);
  out.op = f[p];
  out.text = f.substr(p + 1);
  if (out.field == "model" || out.field == "quant" || out.field == "revision") {
    if (out.op != '=') throw Error(Status::InvalidArgument(usage));
  } else if (out.field == "size") {
    if (out.op == '=') throw Error(Status::InvalidArgument(usage));
    out.size = ParseSize("--filter size", out.text);
  } else if (out.field == "accessed") {
    if (out.op == '=') throw Error(Status::InvalidArgument(usage));
    out.age_s = ParseAge("--filter accessed", out.text);
  } else {
    throw Error(Status::InvalidArgument(usage));
  }
  return out;
}

bool Matches(const Filter& f, const EntryInfo& e, int64_t now_ns) {
  if (f.field == "model") return ::fnmatch(f.text.c_str(), e.key.model_id.c_str(), 0) == 0;
  if (f.field == "quant") {
    return e.key.quantization_mode == f.text ||
           (f.text == "none" && e.key.quantization_mode.empty());
  }
  if (f.field == "revision") {
    return f.text.empty() ? e.key.revision.empty() : e.key.revision.rfind(f.text, 0) == 0;
  }
  if (f.field == "size") return f.op == '>' ? e.size_bytes > f.size : e.size_bytes < f.size;
  const int64_t age_s = (now_ns - e.last_access_ns) / 1'000'000'000;
  return f.op == '>' ? age_s > f.age_s : age_s < f.age_s;
}

void SortEntries(std::vector<EntryInfo>* entries, const std::string& spec) {
  std::string key = spec;
  bool desc = false;
  if (const size_t c = spec.find(':'); c != std::string::npos) {
    key = spec.substr(0, c);
    const std::string dir = spec.substr(c + 1);
    if (dir != "asc" && dir != "desc") {
      throw Error(Status::InvalidArgument("--sort \"" + spec + "\": the direction is asc or desc"));
    }
    desc = dir == "desc";
  } else if (key == "size" || key == "accessed" || key == "created") {
    desc = true;  // biggest and most recent first, as `hf cache ls` does
  }
  auto tie = [](const EntryInfo& a, const EntryInfo& b) {
    return std::tie(a.key.model_id, a.key.layer_index, a.key.quantization_mode, a.key.revision) <
           std::tie(b.key.model_id, b.key.layer_index, b.key.quantization_mode, b.key.revision);
  };
  std::function<bool(const EntryInfo&, const EntryInfo&)> less;
  if (key == "model" || key == "name") {
    less = tie;
  } else if (key == "layer") {
    less = [&](const EntryInfo& a, const EntryInfo& b) {
      return a.key.layer_index != b.key.layer_index ? a.key.layer_index < b.key.layer_index
                                                    : tie(a, b);
    };
  } else if (key == "size") {
    less = [&](const EntryInfo& a, const EntryInfo& b) {
      return a.size_bytes != b.size_bytes ? a.size_bytes < b.size_bytes : tie(a, b);
    };
  } else if (key == "accessed") {
    less = [&](const EntryInfo& a, const EntryInfo& b) {
      return a.last_access_ns != b.last_access_ns ? a.last_access_ns < b.last_access_ns : tie(a, b);
    };
  } else if (key == "created") {
    less = [&](const EntryInfo& a, const EntryInfo& b) {
      return a.created_ns != b.created_ns ? a.created_ns < b.created_ns : tie(a, b);
    };
  } else {
    throw Error(Status::InvalidArgument("--sort \"" + spec +
                                        "\": sort by model, layer, size, accessed or created "
                                        "(optionally :asc or :desc)"));
  }
  std::stable_sort(entries->begin(), entries->end(), [&](const EntryInfo& a, const EntryInfo& b) {
    return desc ? less(b, a) : less(a, b);
  });
}

// A table whose columns are as wide as their widest cell; when the terminal
// is narrower, the `shrinkable` columns are cut (with "...") to fit.
class Table {
 public:
  Table(std::vector<std::string> header, std::vector<bool> right, std::vector<bool> shrinkable)
      : header_(std::move(header)), right_(std::move(right)), shrink_(std::move(shrinkable)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& out, int columns) const {
    const size_t n = header_.size();
    std::vector<size_t> w(n);
    for (size_t i = 0; i < n; ++i) w[i] = header_[i].size();
    for (const auto& r : rows_) {
      for (size_t i = 0; i < n; ++i) w[i] = std::max(w[i], Width(r[i]));
    }
    if (columns > 0) {
      size_t total = 0;
      for (size_t x : w) total += x + 2;
      for (size_t i = 0; i < n && total > static_cast<size_t>(columns); ++i) {
        if (!shrink_[i]) continue;
        const size_t min_w = std::max<size_t>(header_[i].size(), 8);
        const size_t cut = std::min(w[i] - std::min(w[i], min_w), total - columns);
        w[i] -= cut;
        total -= cut;
      }
    }
    auto line = [&](const std::vector<std::string>& cells) {
      std::string s;
      for (size_t i = 0; i < n; ++i) {
        std::string c = Fit(cells[i], w[i]);
        const size_t pad = w[i] - Width(c);
        if (right_[i]) s.append(pad, ' ');
        s += c;
        if (i + 1 < n) {
          if (!right_[i]) s.append(pad, ' ');
          s += "  ";
        }
      }
      while (!s.empty() && s.back() == ' ') s.pop_back();
      out << s << "\n";
    };
    line(header_);
    for (const auto& r : rows_) line(r);
  }

 private:
  // Display width, counting UTF-8 code points.
  static size_t Width(const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  }
  static std::string Fit(const std::string& s, size_t w) {
    if (Width(s) <= w) return s;
    std::string out;
    size_t n = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if ((c & 0xC0) != 0x80) {
        if (n + 3 >= w) break;
        ++n;
      }
      out.push_back(s[i]);
    }
    return out + "...";
  }
  std::vector<std::string> header_;
  std::vector<bool> right_, shrink_;
  std::vector<std::vector<std::string>> rows_;
};

nlohmann::ordered_json EntryJson(const EntryInfo& e, int64_t now) {
  nlohmann::ordered_json j;
  j["id"] = e.key.Digest();
  j["model_id"] = e.key.model_id;
  j["layer_index"] = e.key.layer_index;
  j["quantization_mode"] = e.key.quantization_mode.empty()
                               ? nlohmann::ordered_json()
                               : nlohmann::ordered_json(e.key.quantization_mode);
  j["revision"] = e.key.revision;
  j["tier"] = e.in_memory ? "memory+disk" : "disk";
  j["size_bytes"] = e.size_bytes;
  j["data_bytes"] = e.data_bytes;
  j["last_access"] = IsoTime(e.last_access_ns);
  j["last_access_ns"] = e.last_access_ns;
  j["last_access_relative"] = RelativeTime(e.last_access_ns, now);
  j["created"] = IsoTime(e.created_ns);
  j["created_ns"] = e.created_ns;
  j["checksum_algorithm"] = e.checksum_algorithm;
  j["checksum"] = e.checksum;
  j["path"] = e.path;
  return j;
}

struct ModelSummary {
  uint64_t entries = 0, bytes = 0;
  std::set<std::string> revisions;
  int64_t last_access_ns = 0;
};

bool Confirm(const std::string& question) {
  if (!::isatty(STDIN_FILENO)) return true;  // no one to ask: -y is implied off a terminal
  std::cerr << question << " [y/N] " << std::flush;
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  return answer == "y" || answer == "Y" || answer == "yes";
}

bool IsEntryId(const std::string& s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(),
                                       [](char c) { return std::isxdigit(c) && !std::isupper(c); });
}

// Removes `victims` (or reports them with dry_run); the common end of rm and prune.
int RemoveEntries(const Global& g, LayerCache& cache, const std::vector<EntryInfo>& victims,
                  bool dry_run, bool yes, const char* verb) {
  uint64_t bytes = 0;
  for (const EntryInfo& e : victims) bytes += e.size_bytes;
  const int64_t now = NowNs();
  if (!g.json && (dry_run || (!yes && ::isatty(STDIN_FILENO)))) {
    for (const EntryInfo& e : victims) {
      std::cout << "  " << e.key.ToString() << "  " << HumanSize(e.size_bytes) << "  accessed "
                << RelativeTime(e.last_access_ns, now) << "\n";
    }
  }
  size_t removed = 0;
  bool aborted = false;
  if (!dry_run && !victims.empty()) {
    if (!yes && !Confirm(std::string(verb) + " " + std::to_string(victims.size()) +
                         " entries, freeing " + HumanSize(bytes) + "?")) {
      aborted = true;
    } else {
      for (const EntryInfo& e : victims) removed += cache.remove_entry(e.key) ? 1 : 0;
    }
  }
  if (g.json) {
    nlohmann::ordered_json j;
    j["dry_run"] = dry_run;
    j["aborted"] = aborted;
    j["entries"] = nlohmann::ordered_json::array();
    for (const EntryInfo& e : victims) j["entries"].push_back(EntryJson(e, now));
    j["removed"] = removed;
    j["freed_bytes"] = dry_run || aborted ? 0 : bytes;
    j["would_free_bytes"] = bytes;
    std::cout << j.dump(2) << "\n";
  } else if (dry_run) {
    std::cout << "would remove " << victims.size() << " entries, freeing " << HumanSize(bytes)
              << " (dry run: nothing removed)\n";
  } else if (aborted) {
    std::cout << "nothing removed\n";
  } else {
    std::cout << "removed " << removed << " entries, freed " << HumanSize(bytes) << "\n";
  }
  return kExitOk;
}

}  // namespace

int List(const Global& g, const ListOptions& o) {
  std::vector<Filter> filters;
  for (const std::string& f : o.filters) filters.push_back(ParseFilter(f));
  LayerCache cache(ResolveOptions(g));
  std::vector<EntryInfo> all = cache.list_entries();
  const int64_t now = NowNs();
  std::vector<EntryInfo> entries;
  for (EntryInfo& e : all) {
    if (std::all_of(filters.begin(), filters.end(),
                    [&](const Filter& f) { return Matches(f, e, now); })) {
      entries.push_back(std::move(e));
    }
  }
  SortEntries(&entries, o.sort);
  std::map<std::string, ModelSummary> models;
  uint64_t total_bytes = 0;
  for (const EntryInfo& e : entries) {
    ModelSummary& m = models[e.key.model_id];
    ++m.entries;
    m.bytes += e.size_bytes;
    m.revisions.insert(e.key.revision);
    m.last_access_ns = std::max(m.last_access_ns, e.last_access_ns);
    total_bytes += e.size_bytes;
  }
  if (o.quiet) {
    for (const EntryInfo& e : entries) std::cout << e.key.Digest() << "\n";
    return kExitOk;
  }
  if (g.json) {
    if (o.models) {
      nlohmann::ordered_json arr = nlohmann::ordered_json::array();
      for (const auto& [id, m] : models) {
        arr.push_back(
            {{"model_id", id},
             {"entries", m.entries},
             {"size_bytes", m.bytes},
             {"revisions", std::vector<std::string>(m.revisions.begin(), m.revisions.end())},
             {"last_access", IsoTime(m.last_access_ns)}});
      }
      std::cout << arr.dump(2) << "\n";
      return kExitOk;
    }
    nlohmann::ordered_json arr = nlohmann::ordered_json::array();
    for (const EntryInfo& e : entries) arr.push_back(EntryJson(e, now));
    std::cout << arr.dump(2) << "\n";
    return kExitOk;
  }
  const int columns = TerminalColumns();
  if (!o.models) {
    Table t({"MODEL", "LAYER", "QUANT", "REVISION", "SIZE", "TIER", "LAST ACCESS"},
            {false, true, false, false, true, false, false},
            {true, false, true, false, false, false, false});
    for (const EntryInfo& e : entries) {
      t.Add({e.key.model_id, std::to_string(e.key.layer_index),
             e.key.quantization_mode.empty() ? "-" : e.key.quantization_mode,
             ShortRevision(e.key.revision), HumanSize(e.size_bytes), e.in_memory ? "mem" : "disk",
             RelativeTime(e.last_access_ns, now)});
    }
    t.Print(std::cout, columns);
    std::cout << "\n";
  }
  Table m({"MODEL", "ENTRIES", "REVISIONS", "SIZE", "LAST ACCESS"},
          {false, true, true, true, false}, {true, false, false, false, false});
  for (const auto& [id, s] : models) {
    m.Add({id, std::to_string(s.entries), std::to_string(s.revisions.size()), HumanSize(s.bytes),
           RelativeTime(s.last_access_ns, now)});
  }
  m.Print(std::cout, columns);
  std::cout << "\n"
            << entries.size() << " entries, " << models.size() << " model"
            << (models.size() == 1 ? "" : "s") << ", " << HumanSize(total_bytes) << " on disk";
  if (entries.size() != all.size()) std::cout << " (" << all.size() << " in the cache)";
  std::cout << "\n";
  PrintModeSummary(entries, std::cout);
  return kExitOk;
}

int Remove(const Global& g, const RemoveOptions& o) {
  if (o.targets.empty())
    throw Error(Status::InvalidArgument("rm: give one or more models or entry ids"));
  if (o.revision && !o.revision->empty() && o.revision->size() < 7) {
    throw Error(
        Status::InvalidArgument("--revision: give at least 7 characters of the commit (or '' "
                                "for entries without a revision)"));
  }
  const std::vector<int64_t> layers = ParseLayers(o.layers);
  const std::set<int64_t> layer_set(layers.begin(), layers.end());
  LayerCache cache(ResolveOptions(g));
  std::vector<EntryInfo> victims;
  std::set<std::string> matched_targets;
  for (const EntryInfo& e : cache.list_entries()) {
    bool hit = false;
    for (const std::string& t : o.targets) {
      if (e.key.model_id == t || (IsEntryId(t) && e.key.Digest() == t)) {
        matched_targets.insert(t);
        hit = true;
      }
    }
    if (!hit) continue;
    if (!layer_set.empty() && layer_set.count(e.key.layer_index) == 0) continue;
    if (o.quant && e.key.quantization_mode != *o.quant &&
        !(*o.quant == "none" && e.key.quantization_mode.empty())) {
      continue;
    }
    if (o.revision && (o.revision->empty() ? !e.key.revision.empty()
                                           : e.key.revision.rfind(*o.revision, 0) != 0)) {
      continue;
    }
    victims.push_back(e);
  }
  for (const std::string& t : o.targets) {
    if (matched_targets.count(t) == 0) {
      std::cerr << "layercache rm: no cached model or entry id \"" << t << "\"\n";
    }
  }
  const int rc = RemoveEntries(g, cache, victims, o.dry_run, o.yes, "Remove");
  return matched_targets.size() == o.targets.size() ? rc : kExitNotFound;
}

int Prune(const Global& g, const PruneOptions& o) {
  const int64_t age_s = o.older_than.empty() ? -1 : ParseAge("--older-than", o.older_than);
  if (age_s < 0 && o.keep_revisions) {
    throw Error(
        Status::InvalidArgument("prune: --keep-revisions without --older-than removes nothing"));
  }
  LayerCache cache(ResolveOptions(g));
  // The commits that branches and tags were last seen to point to.
  const std::set<std::string> referenced = cache.referenced_revisions();
  const std::vector<EntryInfo> all = cache.list_entries();
  // The newest revision of each (model, quantization mode) is always kept.
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, std::string>> newest;
  for (const EntryInfo& e : all) {
    if (e.key.revision.empty()) continue;
    auto& n = newest[{e.key.model_id, e.key.quantization_mode}];
    if (e.created_ns >= n.first) n = {e.created_ns, e.key.revision};
  }
  const int64_t now = NowNs();
  std::vector<EntryInfo> victims;
  for (const EntryInfo& e : all) {
    if (!o.models.empty() &&
        std::find(o.models.begin(), o.models.end(), e.key.model_id) == o.models.end()) {
      continue;
    }
    bool old_revision = false;
    if (!o.keep_revisions && !e.key.revision.empty() && referenced.count(e.key.revision) == 0) {
      old_revision = newest[{e.key.model_id, e.key.quantization_mode}].second != e.key.revision;
    }
    const bool stale = age_s >= 0 && (now - e.last_access_ns) / 1'000'000'000 > age_s;
    if (old_revision || stale) victims.push_back(e);
  }
  return RemoveEntries(g, cache, victims, o.dry_run, o.yes, "Prune");
}

}  // namespace layercache::cli
