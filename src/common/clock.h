// Clock: the one way shoal code reads time, so that simulation can replace it.
#pragma once

#include <cstdint>

namespace shoal {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time in milliseconds since the Unix epoch (used for expiry).
  virtual int64_t NowUnixMs() const = 0;
  // Monotonic time in microseconds since an arbitrary origin (timers, latency).
  virtual int64_t NowMonoUs() const = 0;
};

// The process-wide real clock. Thread-safe.
Clock& RealClock();

// A clock that moves only when told; for tests and simulation. Not thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t unix_ms = 1'700'000'000'000) : unix_ms_(unix_ms) {}
  int64_t NowUnixMs() const override { return unix_ms_; }
  int64_t NowMonoUs() const override { return mono_us_; }
  void AdvanceMs(int64_t ms) {
    unix_ms_ += ms;
    mono_us_ += ms * 1000;
  }

 private:
  int64_t unix_ms_;
  int64_t mono_us_ = 0;
};

}  // namespace shoal
