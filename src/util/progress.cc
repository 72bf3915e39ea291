#include "layercache/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

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
  if (quiet_ || (!tty_ && !off_terminal_)) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(tty_ ? 100 : 1000) && done != total_) return;
  last_draw_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double rate = secs > 0 ? static_cast<double>(bytes) / secs : 0;
  const double eta = (done == 0 || total_ == 0)
                         ? 0
                         : secs * static_cast<double>(total_ - done) / static_cast<double>(done);
  char eta_text[32];
  if (done == 0) {
    std::snprintf(eta_text, sizeof eta_text, "--");
  } else if (eta < 60) {
    std::snprintf(eta_text, sizeof eta_text, "%.0fs", eta);
  } else if (eta < 3600) {
    std::snprintf(eta_text, sizeof eta_text, "%dm%02ds", static_cast<int>(eta) / 60,
                  static_cast<int>(eta) % 60);
  } else {
    std::snprintf(eta_text, sizeof eta_text, "%dh%02dm", static_cast<int>(eta) / 3600,
                  static_cast<int>(eta) / 60 % 60);
  }
  char tail[160];
  std::snprintf(tail, sizeof tail, " %llu/%llu %s %s/s ETA %s",
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
                HumanBytes(static_cast<double>(bytes)).c_str(), HumanBytes(rate).c_str(), eta_text);
  // Fit the terminal: the label is cut, then the bar shrinks (down to none),
  // so that the line never wraps.
  int cols = 80;
  struct winsize ws {};
  if (tty_ && ::ioctl(::fileno(out_), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    cols = ws.ws_col;
  } else if (const char* c = std::getenv("COLUMNS"); c != nullptr) {
    const long v = std::strtol(c, nullptr, 10);
    if (v >= 20 && v <= 1000) cols = static_cast<int>(v);
  }
  const int room = cols - 1;  // the cursor's column
  std::string label = label_;
  const int tail_len = static_cast<int>(std::strlen(tail));
  const int max_label = std::max(0, room - tail_len - 13);
  if (static_cast<int>(label.size()) > max_label) label.resize(static_cast<size_t>(max_label));
  const int width =
      std::min(30, room - tail_len - static_cast<int>(label.size()) - 3);  // " [" and "]"
  std::string line = label;
  if (width >= 5) {
    const int filled = total_ == 0 ? width : static_cast<int>(width * done / total_);
    line += " [" + std::string(static_cast<size_t>(filled), '#') +
            std::string(static_cast<size_t>(width - filled), '.') + "]";
  }
  line += tail;
  if (static_cast<int>(line.size()) > room) line.resize(static_cast<size_t>(std::max(0, room)));
  if (!tty_) {
    std::fprintf(out_, "%s\n", line.c_str());  // a log: plain lines
    std::fflush(out_);
    return;
  }
  // "\r" then the line, then clear to the end of the line (no stale characters).
  std::fprintf(out_, "\r%s\033[K", line.c_str());
  std::fflush(out_);
}

double Progress::Finish() {
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!quiet_) {
    const double rate = secs > 0 ? static_cast<double>(bytes_) / secs : 0;
    std::fprintf(out_, "%s%s %llu/%llu  %s in %.3f s  (%s/s)\n", tty_ ? "\r\033[K" : "",
                 label_.c_str(), static_cast<unsigned long long>(done_),
                 static_cast<unsigned long long>(total_),
                 HumanBytes(static_cast<double>(bytes_)).c_str(), secs, HumanBytes(rate).c_str());
    std::fflush(out_);
  }
  return secs;
}

ProgressCallback ProgressBarCallback(std::FILE* out) {
  auto bar = std::make_shared<std::unique_ptr<Progress>>();
  return [bar, out](const ProgressUpdate& u) {
    if (::isatty(::fileno(out)) == 0) return;
    if (!*bar) *bar = std::make_unique<Progress>(u.label, u.total, /*quiet=*/false, out);
    (*bar)->Update(u.done, u.bytes);
    if (u.finished) {
      (*bar)->Finish();
      bar->reset();
    }
  };
}

}  // namespace layercache
