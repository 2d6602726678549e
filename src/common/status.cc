#include "common/status.h"

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

}  // namespace shoal
