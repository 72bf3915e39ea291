// The settings a cache directory keeps (settings.json), applied to a Python
// LayerCache's options as the `layercache` CLI applies them (tools/commands.cc
// ResolveOptions): each stored setting the caller did not pass explicitly.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <filesystem>
#include <set>
#include <string>

#include "layercache/cache_settings.h"
#include "layercache/options.h"
#include "layercache/status.h"

namespace py = pybind11;

namespace layercache {
namespace {

// No budget: what a cache made before settings existed gets when nobody
// names one (as in the CLI; 1 PiB).
constexpr double kNoBudgetGb = 1048576.0;

LayerCacheOptions ApplyStored(LayerCacheOptions o, const std::set<std::string>& given) {
  for (const std::string& k : given)
    if (k != "max_cache_size_gb" && k != "enable_compression" && k != "compression_level" &&
        k != "checksum_algorithm" && k != "eviction_policy")
      throw Error(Status::InvalidArgument("not a stored setting: " + k));
  auto stored = ReadCacheSettings(o.cache_dir);
  if (!stored.ok()) throw Error(stored.status());
  auto free = [&](const char* k) { return given.count(k) == 0; };
  if (stored->has_value()) {
    const CacheSettings& s = **stored;
    if (free("max_cache_size_gb")) o.max_cache_size_gb = s.max_cache_size_gb;
    if (free("enable_compression")) o.enable_compression = s.enable_compression;
    if (free("compression_level")) o.compression_level = s.compression_level;
    if (free("checksum_algorithm")) o.checksum_algorithm = s.checksum_algorithm;
    if (free("eviction_policy")) o.eviction_policy = s.eviction_policy;
  } else if (free("max_cache_size_gb") &&
             std::filesystem::exists(std::filesystem::path(o.ResolvedCacheDir()) /
                                     "index.sqlite")) {
    o.max_cache_size_gb = kNoBudgetGb;
  }
  return o;
}

}  // namespace

void RegisterSettingsBindings(py::module_& m) {
  m.def("apply_stored_settings", &ApplyStored, py::arg("options"), py::arg("given"),
        "options with the cache directory's stored settings (settings.json) applied to each "
        "setting not named in `given`; a cache without settings but with entries gets no budget "
        "unless one is given.");
  m.def(
      "read_cache_settings",
      [](const std::string& cache_dir) -> py::object {
        auto stored = ReadCacheSettings(cache_dir);
        if (!stored.ok()) throw Error(stored.status());
        if (!stored->has_value()) return py::none();
        py::dict d;
        for (const std::string& k : CacheSettings::Keys()) d[py::str(k)] = (*stored)->Get(k);
        return d;
      },
      py::arg("cache_dir"),
      "the stored settings as text (as `layercache config` shows them), or None");
}

}  // namespace layercache
