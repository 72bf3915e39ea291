// Progress of long work. The library reports it through a ProgressCallback
// (DownloadOptions::progress, import_checkpoint's `progress`) and draws
// nothing itself; the CLI and the Python module draw a bar.
//
// Progress is that bar (downloads, imports, the demo's passes): on a
// terminal it redraws one line (count, bytes, rate, ETA) that fits the
// terminal's width ($COLUMNS when the terminal does not say, else 80);
// elsewhere, or when quiet, it stays silent and Finish() prints one summary
// line unless quiet. ShowOffTerminal() asks for progress off a terminal too
// (a log file): one plain line at most every second, and the last one.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace layercache {

// One report, from the thread that runs the work.
struct ProgressUpdate {
  std::string label;      // what runs: "import", "fetch <model> layer 5", ...
  uint64_t done = 0;      // units done (layers for an import, bytes for a fetch)
  uint64_t total = 0;     // units in all
  uint64_t bytes = 0;     // bytes so far
  bool finished = false;  // the last report of this work (done == total)
};
using ProgressCallback = std::function<void(const ProgressUpdate&)>;

// A callback that draws each piece of work (one label) as a Progress bar on
// `out`, on a terminal only. Not thread-safe: give each thread its own.
ProgressCallback ProgressBarCallback(std::FILE* out = stderr);

class Progress {
 public:
  Progress(std::string label, uint64_t total_units, bool quiet = false, std::FILE* out = stderr);
  // `done` units so far, `bytes` so far.
  void Update(uint64_t done, uint64_t bytes);
  // Off a terminal, print plain progress lines (unless quiet).
  void ShowOffTerminal() { off_terminal_ = true; }
  // Final line: label, units, bytes, seconds, rate. Returns elapsed seconds.
  double Finish();

  // "1.5 GiB", "12.0 MiB", "512 B": binary units, one decimal.
  static std::string HumanBytes(double bytes);

 private:
  std::string label_;
  uint64_t total_;
  bool quiet_;
  bool tty_;
  bool off_terminal_ = false;
  std::FILE* out_;
  uint64_t done_ = 0;
  uint64_t bytes_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace layercache
