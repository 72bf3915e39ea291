// `layercache bench`: in one run, on the user's cache directory (its disk),
// the machine's limits (bench_limits.h) and the cache's paths as ratios to
// them. Loads are timed in new processes (this executable, run with hidden
// options), so that "cold" means what a user meets after a reboot: a new
// process, the page cache dropped (as root; otherwise the files are dropped
// with fadvise, and the output says so), default options.
#include "bench_command.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "bench_limits.h"
#include "layercache/layer_cache.h"
#include "layercache/status.h"

namespace layercache::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
constexpr const char* kModel = "layercache-bench";

std::string JoinPath(const std::string& a, const std::string& b) {
  return (fs::path(a) / b).string();
}

std::string RandomHex(size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::random_device rd;
  std::string out;
  for (size_t i = 0; i < 2 * n; ++i) out.push_back(kHex[rd() & 15]);
  return out;
}

struct Shape {
  uint64_t hidden, kv, intermediate;
  std::string name;
};

Shape ParseShape(const std::string& s) {
  if (s == "7b") return {3584, 512, 18944, "7B-class (Qwen2-7B shapes)"};
  if (s == "small") return {1280, 256, 6912, "small"};
  if (s == "70b") return {8192, 1024, 28672, "70B-class (Llama-3-70B shapes)"};
  uint64_t h = 0, kv = 0, inter = 0;
  char c1 = 0, c2 = 0;
  std::istringstream in(s);
  if ((in >> h >> c1 >> kv >> c2 >> inter) && c1 == ',' && c2 == ',' && in.eof() && h > 0 &&
      kv > 0 && inter > 0 && h <= 65536 && kv <= 65536 && inter <= 262144) {
    return {h, kv, inter, "custom " + s};
  }
  throw Error(Status::InvalidArgument(
      "--layer must be 7b, small, 70b or HIDDEN,KV,INTERMEDIATE, got \"" + s + "\""));
}

uint64_t LayerBytes(const Shape& sh) {
  // q, o: h x h; k, v: kv x h; gate, up: inter x h; down: h x inter; bf16.
  return 2 * (2 * sh.hidden * sh.hidden + 2 * sh.kv * sh.hidden + 3 * sh.intermediate * sh.hidden);
}

// A decoder layer of bf16 weights of the size and spread of real ones
// (|w| around 2^-7..2^-4, random signs and mantissas), so that compression
// sees realistic bytes.
LayerPtr MakeLayer(const Shape& sh) {
  std::mt19937_64 rng(42);
  LayerBuilder b;
  auto add = [&](const std::string& name, uint64_t rows, uint64_t cols) {
    std::vector<uint16_t> v(rows * cols);
    for (size_t i = 0; i < v.size(); i += 4) {
      const uint64_t r = rng();
      for (size_t j = 0; j < 4 && i + j < v.size(); ++j) {
        const uint64_t x = r >> (16 * j);
        const uint16_t sign = static_cast<uint16_t>((x & 1) << 15);
        const uint16_t exponent = static_cast<uint16_t>(120 + ((x >> 1) & 3)) << 7;
        v[i + j] = static_cast<uint16_t>(sign | exponent | ((x >> 3) & 0x7f));
      }
    }
    b.add_tensor(name, DType::BF16, {rows, cols}, std::as_bytes(std::span<const uint16_t>(v)));
  };
  add("self_attn.q_proj.weight", sh.hidden, sh.hidden);
  add("self_attn.k_proj.weight", sh.kv, sh.hidden);
  add("self_attn.v_proj.weight", sh.kv, sh.hidden);
  add("self_attn.o_proj.weight", sh.hidden, sh.hidden);
  add("mlp.gate_proj.weight", sh.intermediate, sh.hidden);
  add("mlp.up_proj.weight", sh.intermediate, sh.hidden);
  add("mlp.down_proj.weight", sh.hidden, sh.intermediate);
  return b.build();
}

LayerCacheOptions BenchCacheOptions(const std::string& dir, DiskReadMode mode, bool compress) {
  LayerCacheOptions o;
  o.cache_dir = dir;
  o.max_cache_size_gb = 1024;
  o.max_memory_cache_size_gb = 0;  // every get_layer reads the disk tier
  o.disk_read_mode = mode;
  o.enable_compression = compress;
  o.compression_level = 1;
  return o;
}

// The hidden child: one get_layer in this new process, its seconds printed.
int ChildLoad(const BenchOptions& o) {
  LayerCacheOptions opts = BenchCacheOptions(o.child_dir, ParseDiskReadMode(o.child_mode), false);
  LayerCache cache(opts);
  const auto t0 = Clock::now();
  LayerPtr layer = cache.get_layer(kModel, 0);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!layer) {
    std::cerr << "layercache bench: the benchmark layer is missing from " << o.child_dir << "\n";
    return 1;
  }
  std::printf("%.9f %llu\n", s, static_cast<unsigned long long>(layer->nbytes()));
  return 0;
}

std::string SelfExe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

struct Row {
  std::string path;  // cold, warm, hit
  std::string mode;
  double seconds = 0;
  double gbps = 0;
  double ratio = 0;
  std::string limit;  // "device" or "memcpy"
};

// Removes the bench directory however the run ends.
struct Cleanup {
  std::string dir;
  bool keep = false;
  ~Cleanup() {
    if (keep || dir.empty()) return;
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

void ReadWhole(const std::string& path) {  // into the page cache
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return;
  std::vector<char> buf(8u << 20);
  while (std::fread(buf.data(), 1, buf.size(), f) > 0) {
  }
  std::fclose(f);
}

std::string Fmt(const char* fmt, double v) {
  char b[64];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}

}  // namespace

CLI::App* AddBenchCommand(CLI::App& app, BenchOptions* o) {
  auto* b = app.add_subcommand(
      "bench",
      "measure this machine's disk and memory limits and the cache against them, on the cache "
      "directory's disk (cleans up after itself)");
  b->add_option("--layer", o->shape, "layer shape: 7b (default), small, 70b or HIDDEN,KV,INTER");
  b->add_option("--reps", o->reps, "repetitions of each measurement (medians; default 3)");
  b->add_option("--modes", o->modes,
                "disk_read_mode values to time: all (default) or e.g. auto,direct");
  b->add_flag("--json", o->json, "print JSON");
  b->add_flag("--keep", o->keep, "keep the benchmark's directory afterwards");
  b->add_option("--child-load", o->child_dir)->group("");  // internal
  b->add_option("--child-mode", o->child_mode)->group("");
  return b;
}

int Bench(const Global& g, const BenchOptions& o) {
  if (!o.child_dir.empty()) return ChildLoad(o);
  if (o.reps < 1 || o.reps > 1000) throw Error(Status::InvalidArgument("--reps must be 1-1000"));
  const Shape shape = ParseShape(o.shape);
  std::vector<DiskReadMode> modes;
  if (o.modes == "all") {
    modes = {DiskReadMode::kAuto, DiskReadMode::kDirect, DiskReadMode::kBuffered,
             DiskReadMode::kMapped};
  } else {
    std::stringstream ss(o.modes);
    for (std::string m; std::getline(ss, m, ',');) modes.push_back(ParseDiskReadMode(m));
  }
  const bool compress = g.options.enable_compression;
  // The disk tier is what is measured: no cluster tier here or in the children.
  ::unsetenv("LAYERCACHE_REMOTE");
  const std::string self = SelfExe();
  if (self.empty()) throw Error(Status::IOError("cannot find this executable (/proc/self/exe)"));

  const std::string cache_dir = g.options.ResolvedCacheDir();
  fs::create_directories(cache_dir);
  const uint64_t bytes = LayerBytes(shape);
  const uint64_t need = (compress ? 2 : 1) * bytes + (256u << 20);
  auto free_bytes = benchkit::FreeBytes(cache_dir);
  if (!free_bytes.ok()) throw Error(free_bytes.status());
  if (*free_bytes < need) {
    std::cerr << "layercache bench: not enough room in " << cache_dir << ": it needs "
              << need / 1000000 << " MB for the benchmark's entries, " << *free_bytes / 1000000
              << " MB are free. Free some space, pick a smaller --layer, or point --cache-dir "
                 "elsewhere.\n";
    return 3;
  }
  Cleanup cleanup{JoinPath(cache_dir, ".bench-" + std::to_string(::getpid()) + "-" + RandomHex(4)),
                  o.keep};
  const std::string dir = cleanup.dir;
  const std::string plain_dir = JoinPath(dir, "plain");
  const std::string packed_dir = JoinPath(dir, "compressed");
  auto say = [&](const std::string& s) {
    if (!o.json) std::fprintf(stderr, "  %s\n", s.c_str());
  };

  say("building a " + shape.name + " layer of " + Fmt("%.1f", bytes / 1e6) + " MB");
  LayerPtr layer = MakeLayer(shape);
  double write_s = 0;
  {
    LayerCache w(BenchCacheOptions(plain_dir, DiskReadMode::kAuto, false));
    const auto t0 = Clock::now();
    if (Status s = w.cache_layer_status(LayerKey{kModel, 0, "", ""}, layer); !s.ok()) {
      throw Error(s.WithContext("cannot write the benchmark entry"));
    }
    write_s = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  if (compress) {
    LayerCache w(BenchCacheOptions(packed_dir, DiskReadMode::kAuto, true));
    if (Status s = w.cache_layer_status(LayerKey{kModel, 0, "", ""}, layer); !s.ok()) {
      throw Error(s.WithContext("cannot write the compressed benchmark entry"));
    }
  }
  std::string entry;
  for (const auto& e : fs::recursive_directory_iterator(JoinPath(plain_dir, "entries"))) {
    if (e.is_regular_file()) entry = e.path().string();
  }

  say("measuring the device limit on " + entry);
  auto device = benchkit::MeasureDeviceLimit(entry, o.reps);
  say("measuring memcpy on all cores");
  const double memcpy_gbps = benchkit::MeasureMemcpyGBps(bytes, o.reps);
  const double device_gbps = device.ok() ? device->best() : 0;

  std::string cold_method;
  auto load = [&](const std::string& d, DiskReadMode mode, bool cold) -> double {
    std::vector<double> secs;
    for (int r = 0; r < o.reps; ++r) {
      if (cold) {
        auto how = benchkit::DropCaches({d});
        if (!how.ok()) throw Error(how.status());
        cold_method = *how;
      } else {
        for (const auto& e : fs::recursive_directory_iterator(JoinPath(d, "entries"))) {
          if (e.is_regular_file()) ReadWhole(e.path().string());
        }
      }
      auto out = benchkit::RunCapture(
          {self, "bench", "--child-load", d, "--child-mode", DiskReadModeName(mode)});
      if (!out.ok()) throw Error(out.status());
      secs.push_back(std::stod(*out));
    }
    return benchkit::Median(secs);
  };
  std::vector<Row> rows;
  auto add = [&](const std::string& path, const std::string& mode, double s, bool vs_device) {
    Row r{path, mode, s, bytes / s / 1e9, 0, vs_device ? "device" : "memcpy"};
    const double lim = vs_device ? device_gbps : memcpy_gbps;
    r.ratio = lim > 0 ? r.gbps / lim : 0;
    rows.push_back(r);
  };
  for (DiskReadMode m : modes) {
    const std::string name = DiskReadModeName(m);
    say("timing cold and warm loads, disk_read_mode=" + name);
    add("cold", name, load(plain_dir, m, true), true);
    add("warm", name, load(plain_dir, m, false), false);
  }
  if (compress) {
    say("timing the compressed entry");
    add("cold", "auto, compressed", load(packed_dir, DiskReadMode::kAuto, true), true);
    add("warm", "auto, compressed", load(packed_dir, DiskReadMode::kAuto, false), false);
  }
  // Memory hits, in this process.
  double hit_ns = 0;
  {
    LayerCacheOptions mo = BenchCacheOptions(plain_dir, DiskReadMode::kAuto, false);
    mo.max_memory_cache_size_gb = 2.0 * static_cast<double>(bytes) / (1u << 30) + 0.01;
    LayerCache c(mo);
    if (!c.get_layer(kModel, 0)) throw Error(Status::NotFound("the benchmark layer went missing"));
    std::vector<double> ns;
    const int n = 200000;
    for (int r = 0; r < o.reps; ++r) {
      const auto t0 = Clock::now();
      for (int i = 0; i < n; ++i) {
        if (!c.get_layer(kModel, 0)) throw Error(Status::NotFound("memory hit missed"));
      }
      ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / n);
    }
    hit_ns = benchkit::Median(ns);
  }

  const Row* cold_default = nullptr;
  const Row* warm_default = nullptr;
  for (const Row& r : rows) {
    if (r.mode == "auto" && r.path == "cold") cold_default = &r;
    if (r.mode == "auto" && r.path == "warm") warm_default = &r;
  }
  std::string verdict;
  if (device.ok()) {
    verdict = "your disk gives " + Fmt("%.2f", device_gbps) + " GB/s";
    if (cold_default != nullptr) {
      verdict += "; a cold load with default options reaches " + Fmt("%.2f", cold_default->ratio) +
                 "x of it";
    }
  } else {
    verdict = "this file system has no O_DIRECT, so the device limit is unknown";
  }
  if (warm_default != nullptr) {
    verdict += "; a warm load (page cache) " + Fmt("%.2f", warm_default->ratio) +
               "x of memcpy on all cores (" + Fmt("%.1f", memcpy_gbps) + " GB/s)";
  }
  verdict += "; a memory hit takes " + Fmt("%.0f", hit_ns) + " ns.";
  const std::string cold_note =
      cold_method == "drop_caches"
          ? "cold: a new process after sync; echo 3 > /proc/sys/vm/drop_caches"
          : "cold: a new process after posix_fadvise(DONTNEED) of the entry (not root: the "
            "page cache could not be dropped as a whole)";

  if (o.json) {
    nlohmann::json j;
    j["layer"] = {{"shape", shape.name}, {"bytes", bytes}};
    j["cache_dir"] = cache_dir;
    j["reps"] = o.reps;
    j["cold_method"] = cold_method;
    j["write_seconds"] = write_s;
    j["limits"] = {{"memcpy_gbps", memcpy_gbps}, {"cores", std::thread::hardware_concurrency()}};
    if (device.ok()) {
      j["limits"]["device_gbps"] = device_gbps;
      j["limits"]["device_sequential_gbps"] = device->sequential_gbps;
      j["limits"]["device_qd16_gbps"] = device->qd16_gbps;
      j["limits"]["device_qd32_gbps"] = device->qd32_gbps;
    } else {
      j["limits"]["device_gbps"] = nullptr;
      j["limits"]["device_error"] = device.status().message();
    }
    j["results"] = nlohmann::json::array();
    for (const Row& r : rows) {
      j["results"].push_back({{"path", r.path},
                              {"disk_read_mode", r.mode},
                              {"seconds", r.seconds},
                              {"gbps", r.gbps},
                              {"ratio", r.ratio},
                              {"ratio_to", r.limit}});
    }
    j["memory_hit_ns"] = hit_ns;
    j["verdict"] = verdict;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("\nlayercache bench: one %s layer, %.1f MB bf16; medians of %d; cache dir %s\n",
              shape.name.c_str(), bytes / 1e6, o.reps, cache_dir.c_str());
  std::printf("%s\n\n", cold_note.c_str());
  std::printf("%-44s %9s %8s\n", "limit", "GB/s", "");
  if (device.ok()) {
    std::printf("%-44s %9.2f\n", "device: sequential O_DIRECT, 16 MiB requests",
                device->sequential_gbps);
    std::printf("%-44s %9.2f\n", "device: O_DIRECT, 16 x 1 MiB in flight", device->qd16_gbps);
    std::printf("%-44s %9.2f\n", "device: O_DIRECT, 32 x 512 KiB in flight", device->qd32_gbps);
  } else {
    std::printf("%-44s %9s  (%s)\n", "device", "n/a", device.status().message().c_str());
  }
  std::printf("%-44s %9.2f\n\n",
              ("memcpy, " + std::to_string(std::thread::hardware_concurrency()) + " cores").c_str(),
              memcpy_gbps);
  std::printf("%-44s %9s %8s  %s\n", "get_layer in a new process (checksum verified)", "GB/s",
              "ratio", "of");
  for (const Row& r : rows) {
    const std::string label =
        r.path + ", disk_read_mode=" + r.mode + (r.mode == "auto" ? " (default)" : "");
    std::printf("%-44s %9.2f %8.2f  %s\n", label.c_str(), r.gbps, r.ratio, r.limit.c_str());
  }
  std::printf("%-44s %9.0f ns\n", "memory hit (get_layer, this process)", hit_ns);
  std::printf("%-44s %9.2f\n", "write (cache_layer, fsynced)", bytes / write_s / 1e9);
  std::printf("\nverdict: %s\n", verdict.c_str());
  return 0;
}

}  // namespace layercache::cli
