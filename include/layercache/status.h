// Status and Result<T>: how the library reports failures internally and to
// callers that want the reason, not just a bool.
//
// The seed-compatible surface of LayerCache keeps the seed's returns (nullptr
// on a miss, bool from cache_layer); the *_status twins return these types so
// that a caller can see exactly what failed, on which key or file, and why.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace layercache {

enum class StatusCode {
  kOk = 0,
  kNotFound,         // the key or file does not exist (a miss)
  kInvalidArgument,  // the caller passed something unusable
  kCorruption,       // bytes on disk do not match their checksum or format
  kIOError,          // the operating system reported an error
  kNoSpace,          // ENOSPC / EDQUOT, or the entry exceeds the budget
  kUnsupported,      // a feature that is not available (yet)
};

// Returns a stable lower-case name for `code` ("not_found", "io_error", ...).
const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status IOError(std::string m) { return {StatusCode::kIOError, std::move(m)}; }
  static Status NoSpace(std::string m) { return {StatusCode::kNoSpace, std::move(m)}; }
  static Status Unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsNotFound() const { return code_ == StatusCode::kNotFound; }
  bool IsCorruption() const { return code_ == StatusCode::kCorruption; }

  // "io_error: cannot open /x: No such file or directory"; "ok" when ok().
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context` + ": ".
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// The one exception type of the library. Every throwing call of the public
// API (LayerCache, LayerCacheOptions, LayerKey, LayerBuilder, the parsers of
// option names, quantization, logging) reports a failure by throwing Error,
// which carries the Status that says what failed:
//
//   kInvalidArgument  the caller passed something unusable (a bad option, key,
//                     device, tensor or name); the message says how to fix it
//   kNotFound         what was asked for does not exist (a repository, file,
//                     or tensor of a layer)
//   kCorruption       stored bytes do not match their checksum or format
//                     (an entry, the index, a malformed settings.json)
//   kIOError          the operating system, the network or a device failed
//   kNoSpace          the disk or a budget is full
//   kUnsupported      this build or machine lacks the feature (e.g. CUDA)
//
// The *_status variants return the same Status instead of throwing, so one
// fault has one code on both paths. what() is status().ToString()
// ("invalid_argument: layer_index is -1; ..."); status().message() is the
// message alone. Error derives from std::runtime_error, so catch
// (const std::exception&) still catches it. The one other exception that can
// leave the library is std::bad_alloc when memory runs out. Python raises
// ValueError for kInvalidArgument and OSError for every other code.
class Error : public std::runtime_error {
 public:
  explicit Error(Status status)
      : std::runtime_error(status.ToString()), status_(std::move(status)) {}
  const Status& status() const { return status_; }
  StatusCode code() const { return status_.code(); }

 private:
  Status status_;
};

// A value or the Status that explains why there is none.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) {
      v_ = Status(StatusCode::kInvalidArgument, "Result built from an OK status without a value");
    }
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  // The value; throws Error carrying status() when there is none (as do
  // operator* and operator->).
  T& value() & { return checked(); }
  const T& value() const& { return const_cast<Result*>(this)->checked(); }
  T&& value() && { return std::move(checked()); }
  T* operator->() { return &checked(); }
  const T* operator->() const { return &const_cast<Result*>(this)->checked(); }
  T& operator*() & { return checked(); }
  const T& operator*() const& { return const_cast<Result*>(this)->checked(); }

 private:
  T& checked() {
    if (!ok()) throw Error(std::get<Status>(v_));
    return std::get<T>(v_);
  }
  std::variant<T, Status> v_;
};

}  // namespace layercache
