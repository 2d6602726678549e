// A linearizability checker for a key-value history (Wing & Gong's search
// with Lowe's memoisation of visited configurations). Keys are independent
// registers, so each key's sub-history is checked on its own (locality).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shoal::sim {

// Response time of an operation whose outcome is unknown (it may or may not
// have taken effect, at any time after its invocation).
inline constexpr uint64_t kNeverReturned = UINT64_MAX;

// One client operation. Times are positions in one global event order.
struct Operation {
  uint64_t id = 0;
  bool is_write = false;
  std::string key;
  std::string value;  // written value, or the value a read returned
  uint64_t invoke = 0;
  uint64_t response = kNeverReturned;
};

struct LinearizabilityResult {
  bool ok = true;
  std::string key;      // first key whose history is not linearizable
  std::string explain;  // that key's history, for the failure message
};

// Checks that some total order of the operations, respecting real time,
// is a legal register history per key (initial value ""). Operations with
// response == kNeverReturned may be placed anywhere after their invocation or
// left out. `max_states` bounds the search per key; exceeding it fails.
LinearizabilityResult check_linearizable(const std::vector<Operation>& history,
                                         size_t max_states = 2'000'000);

}  // namespace shoal::sim
