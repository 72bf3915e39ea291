#include "cli_args.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "layercache/status.h"

namespace layercache::cli {

int64_t ParseIntInRange(const std::string& name, const std::string& text, int64_t lo, int64_t hi) {
  int64_t v = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (!text.empty() && text[0] == '+') ++begin;
  auto [ptr, ec] = std::from_chars(begin, end, v);
  if (text.empty() || ec != std::errc() || ptr != end || v < lo || v > hi) {
    throw Error(Status::InvalidArgument(name + " must be an integer in " + std::to_string(lo) +
                                        ".." + std::to_string(hi) + " (got \"" + text + "\")"));
  }
  return v;
}

double ParseDoubleInRange(const std::string& name, const std::string& text, double lo, double hi,
                          bool lo_open) {
  char range[96];
  std::snprintf(range, sizeof range, "%s%.10g, %.10g]", lo_open ? "(" : "[", lo, hi);
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || !std::isfinite(v) || v > hi || v < lo ||
      (lo_open && v == lo)) {
    throw Error(Status::InvalidArgument(name + " must be a number in " + range + " (got \"" + text +
                                        "\")"));
  }
  return v;
}

namespace {
std::string FirstLongName(const std::string& flags) {
  size_t p = flags.find("--");
  if (p == std::string::npos) return flags;
  size_t e = flags.find(',', p);
  return flags.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

template <class Fn>
CLI::Option* AddChecked(CLI::App* app, const std::string& flags, const std::string& help, Fn fn,
                        const char* type) {
  const std::string name = FirstLongName(flags);
  return app
      ->add_option_function<std::string>(
          flags,
          [name, fn](const std::string& s) {
            try {
              fn(name, s);
            } catch (const Error& e) {
              throw CLI::ValidationError(e.status().message());
            }
          },
          help)
      ->type_name(type);
}
}  // namespace

CLI::Option* AddInt(CLI::App* app, const std::string& flags, int64_t* target, int64_t lo,
                    int64_t hi, const std::string& help) {
  return AddChecked(
      app, flags, help,
      [=](const std::string& n, const std::string& s) { *target = ParseIntInRange(n, s, lo, hi); },
      "INT");
}

CLI::Option* AddInt(CLI::App* app, const std::string& flags, int* target, int lo, int hi,
                    const std::string& help) {
  return AddChecked(
      app, flags, help,
      [=](const std::string& n, const std::string& s) {
        *target = static_cast<int>(ParseIntInRange(n, s, lo, hi));
      },
      "INT");
}

CLI::Option* AddDouble(CLI::App* app, const std::string& flags, double* target, double lo,
                       double hi, bool lo_open, const std::string& help) {
  return AddChecked(
      app, flags, help,
      [=](const std::string& n, const std::string& s) {
        *target = ParseDoubleInRange(n, s, lo, hi, lo_open);
      },
      "NUMBER");
}

std::string HumanSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, v < 10 ? "%.2f %s" : (v < 100 ? "%.1f %s" : "%.0f %s"), v,
                  kUnits[u]);
  }
  return buf;
}

uint64_t ParseSize(const std::string& name, const std::string& text) {
  size_t used = 0;
  double v = -1;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && unit.back() == 'B') unit.pop_back();
  if (unit.size() > 1 && unit.back() == 'I') unit.pop_back();
  double mult = -1;
  if (unit.empty() || unit == "B") mult = 1;
  if (unit == "K") mult = 1024.0;
  if (unit == "M") mult = 1024.0 * 1024;
  if (unit == "G") mult = 1024.0 * 1024 * 1024;
  if (unit == "T") mult = 1024.0 * 1024 * 1024 * 1024;
  if (used == 0 || mult < 0 || !std::isfinite(v) || v < 0 || v * mult > 9.0e18) {
    throw Error(Status::InvalidArgument(
        name + " must be a size such as 500M, 2G or 1.5GiB (got \"" + text + "\")"));
  }
  return static_cast<uint64_t>(v * mult);
}

int64_t ParseAge(const std::string& name, const std::string& text) {
  size_t used = 0;
  double v = -1;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = text.substr(used);
  double mult = -1;
  if (unit == "s") mult = 1;
  if (unit == "m") mult = 60;
  if (unit == "h") mult = 3600;
  if (unit == "d") mult = 86400;
  if (unit == "w") mult = 7 * 86400;
  if (used == 0 || mult < 0 || !std::isfinite(v) || v < 0 || v * mult > 1e12) {
    throw Error(Status::InvalidArgument(
        name + " must be an age such as 45s, 90m, 12h, 30d or 2w (got \"" + text + "\")"));
  }
  return static_cast<int64_t>(v * mult);
}

std::string RelativeTime(int64_t then_ns, int64_t now_ns) {
  const int64_t s = (now_ns - then_ns) / 1'000'000'000;
  if (s < 0) return "in the future";
  if (s < 10) return "just now";
  struct Unit {
    int64_t secs;
    const char* name;
  };
  static const Unit kUnits[] = {{365 * 86400, "year"}, {30 * 86400, "month"}, {7 * 86400, "week"},
                                {86400, "day"},        {3600, "hour"},        {60, "minute"},
                                {1, "second"}};
  for (const Unit& u : kUnits) {
    if (s >= u.secs) {
      const int64_t n = s / u.secs;
      return std::to_string(n) + " " + u.name + (n == 1 ? "" : "s") + " ago";
    }
  }
  return "just now";
}

}  // namespace layercache::cli
