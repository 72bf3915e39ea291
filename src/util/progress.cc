#include "layercache/progress.h"

#include <unistd.h>

namespace layercache {

Progress::Progress(std::string label, uint64_t total_units, bool quiet, std::FILE* out)
    : label_(std::move(label)),
      total_(total_units),
      quiet_(quiet),
      tty_(::isatty(::fileno(out)) != 0),
      out_(out),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - std::chrono::seconds(1)) {}

std::string Progress::HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

void Progress::Update(uint64_t done, uint64_t bytes) {
  done_ = done;
  bytes_ = bytes;
  if (quiet_ || !tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100) && done != total_) return;
  last_draw_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double rate = secs > 0 ? static_cast<double>(bytes) / secs : 0;
  const int width = 30;
  const int filled = total_ == 0 ? width : static_cast<int>(width * done / total_);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(width - filled), '.');
  const double eta = (done == 0 || total_ == 0)
                         ? 0
                         : secs * static_cast<double>(total_ - done) / static_cast<double>(done);
  std::fprintf(out_, "\r%-14s [%s] %llu/%llu  %s  %s/s  ETA %.1fs   ", label_.c_str(), bar.c_str(),
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
               HumanBytes(static_cast<double>(bytes)).c_str(), HumanBytes(rate).c_str(), eta);
  std::fflush(out_);
}

double Progress::Finish() {
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!quiet_) {
    const double rate = secs > 0 ? static_cast<double>(bytes_) / secs : 0;
    std::fprintf(out_, "%s%-14s %llu/%llu  %s in %.3f s  (%s/s)%s\n", tty_ ? "\r" : "",
                 label_.c_str(), static_cast<unsigned long long>(done_),
                 static_cast<unsigned long long>(total_),
                 HumanBytes(static_cast<double>(bytes_)).c_str(), secs, HumanBytes(rate).c_str(),
                 tty_ ? "                    " : "");
    std::fflush(out_);
  }
  return secs;
}

}  // namespace layercache
