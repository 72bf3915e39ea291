// Helpers shared by the test suites.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "test_layers.h"

namespace layercache::testing {

// A fresh directory under $TMPDIR, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string FixturePath(const std::string& relative);
std::vector<std::byte> ReadBytes(const std::string& path);
void WriteBytes(const std::string& path, const std::vector<std::byte>& bytes);
void WriteText(const std::string& path, const std::string& text);

// Every regular file under `dir`, recursively (paths relative to dir).
std::vector<std::string> ListFilesRecursively(const std::string& dir);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};
// Runs `argv` (argv[0] is a path), capturing its output.
CommandResult RunCommand(const std::vector<std::string>& argv);

// A TCP port on 127.0.0.1 that was free a moment ago, and whether something
// accepts connections on one.
int FreeLoopbackPort();
bool CanConnectLoopback(int port);

// Paths of the built tools.
std::string CliPath();
std::string WorkerPath();

}  // namespace layercache::testing
