// Status and Result<T>: the return types of expected failures (bad input, I/O,
// not leader). Broken invariants are not Statuses: they are SHOAL_CHECK failures.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shoal {

enum class Code : unsigned char { kOk, kInvalidArgument, kNotFound, kIOError, kCorruption, kBusy, kAborted };

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return {}; }
  static Status InvalidArgument(std::string msg) { return {Code::kInvalidArgument, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status IOError(std::string msg) { return {Code::kIOError, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, std::move(msg)}; }
  static Status Busy(std::string msg) { return {Code::kBusy, std::move(msg)}; }
  static Status Aborted(std::string msg) { return {Code::kAborted, std::move(msg)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // Returns this status with `context: ` prepended to its message.
  Status WithContext(std::string_view context) const {
    if (ok()) return *this;
    return {code_, std::string(context) + ": " + message_};
  }
  std::string ToString() const;

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// Result<T> holds either a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  const T& value() const& { return std::get<0>(v_); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }
  Status status() const { return ok() ? Status::Ok() : std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

[[noreturn]] void CheckFailed(const char* file, int line, const char* expr);

// Stops the node on a failure it must not go on from: a write, fsync or
// snapshot import that failed, after which going on would let this replica
// diverge from the others. The caller logs why first. Aborts; the restart
// recovers from what is on disk. A test may install a handler that unwinds
// instead (a simulated node crash); a handler must not return.
[[noreturn]] void FailStop(const char* why);
using FailStopHandler = void (*)(const char* why);
void SetFailStopHandler(FailStopHandler handler);  // nullptr: abort again

}  // namespace shoal

// An invariant that must hold in every build; a failure is a bug and aborts.
#define SHOAL_CHECK(expr) \
  ((expr) ? static_cast<void>(0) : ::shoal::CheckFailed(__FILE__, __LINE__, #expr))
