#include "common/status.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace shoal {

std::string Status::ToString() const {
  static constexpr const char* kNames[] = {"OK",   "InvalidArgument", "NotFound", "IOError",
                                           "Corruption", "Busy",     "Aborted"};
  std::string out = kNames[static_cast<int>(code_)];
  if (!message_.empty()) out += ": " + message_;
  return out;
}

void CheckFailed(const char* file, int line, const char* expr) {
  std::fprintf(stderr, "shoal: check failed at %s:%d: %s\n", file, line, expr);
  std::fflush(stderr);
  std::abort();
}

namespace {
std::atomic<FailStopHandler> fail_stop_handler{nullptr};
}  // namespace

void SetFailStopHandler(FailStopHandler handler) { fail_stop_handler.store(handler); }

void FailStop(const char* why) {
  if (FailStopHandler h = fail_stop_handler.load(); h != nullptr) h(why);
  std::fprintf(stderr, "shoal: stopping: %s\n", why);
  std::fflush(stderr);
  std::abort();
}

}  // namespace shoal
