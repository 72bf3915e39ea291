// Helpers shared by the test suites.
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "layercache/status.h"
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

// The third-party fixtures (safetensors files written by other projects,
// Hub index files): $LAYERCACHE_FIXTURES, else ../shared/fixtures beside
// the source tree. FixturesDir() is empty when neither exists.
std::string FixturesDir();
std::string FixturePath(const std::string& relative);

// Whether the CI variable is set (to anything but "", "0" or "false"): a
// missing server, module or fixture is then a failure, not a skip.
bool InCI();

}  // namespace layercache::testing

// Skips the test with one line saying why when `available` is false, or
// fails it when running in CI (a CI that lost an install step must not stay
// green). Use at the top of a test body.
#define LAYERCACHE_REQUIRE(available, why)                        \
  do {                                                            \
    if (!(available)) {                                           \
      if (::layercache::testing::InCI()) FAIL() << "CI: " << why; \
      GTEST_SKIP() << why;                                        \
    }                                                             \
  } while (0)
#define LAYERCACHE_REQUIRE_FIXTURES()                                                      \
  LAYERCACHE_REQUIRE(!::layercache::testing::FixturesDir().empty(),                        \
                     "third-party fixtures not found: set LAYERCACHE_FIXTURES or provide " \
                     "../shared/fixtures beside the source tree")

// Expects `statement` to throw layercache::Error (the library's one exception
// type, include/layercache/status.h) whose status has code `expected_code`;
// another exception type, or none, fails the test.
#define EXPECT_ERROR_CODE(statement, expected_code)                                     \
  do {                                                                                  \
    try {                                                                               \
      static_cast<void>(statement);                                                     \
      ADD_FAILURE() << #statement << " threw nothing; expected layercache::Error ("     \
                    << ::layercache::StatusCodeName(expected_code) << ")";              \
    } catch (const ::layercache::Error& error_) {                                       \
      EXPECT_EQ(::layercache::StatusCodeName(error_.code()),                            \
                std::string(::layercache::StatusCodeName(expected_code)))               \
          << #statement << ": " << error_.what();                                       \
    } catch (const std::exception& other_) {                                            \
      ADD_FAILURE() << #statement                                                       \
                    << " threw another type than layercache::Error: " << other_.what(); \
    }                                                                                   \
  } while (0)
// A bad argument: layercache::Error with kInvalidArgument.
#define EXPECT_INVALID_ARGUMENT(statement) \
  EXPECT_ERROR_CODE(statement, ::layercache::StatusCode::kInvalidArgument)

namespace layercache::testing {
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
