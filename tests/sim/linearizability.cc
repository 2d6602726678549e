#include "sim/linearizability.h"

#include <algorithm>
#include <map>
#include <unordered_set>

namespace shoal::sim {

namespace {

// Search state: which operations are linearized, plus the register value.
class KeyChecker {
 public:
  KeyChecker(std::vector<Operation> ops, size_t max_states)
      : ops_(std::move(ops)), done_((ops_.size() + 63) / 64, 0), max_states_(max_states) {
    for (const Operation& op : ops_) {
      if (op.response != kNeverReturned) ++completed_left_;
    }
  }

  // Returns true if the history is linearizable; false otherwise or if the
  // state budget ran out (exhausted() tells which).
  bool run() { return search(""); }
  bool exhausted() const { return exhausted_; }

 private:
  bool is_done(size_t i) const { return (done_[i / 64] >> (i % 64)) & 1U; }
  void flip(size_t i) { done_[i / 64] ^= uint64_t{1} << (i % 64); }

  uint64_t fingerprint(const std::string& state) const {
    uint64_t h = std::hash<std::string>{}(state);
    for (uint64_t w : done_) h = (h ^ w) * 0x100000001b3ULL + 0x9e3779b97f4a7c15ULL;
    return h;
  }

  bool search(const std::string& state) {
    if (completed_left_ == 0) return true;
    if (visited_.size() > max_states_) {
      exhausted_ = true;
      return false;
    }
    // Only an operation invoked before every pending response can go next.
    uint64_t min_response = kNeverReturned;
    for (size_t i = 0; i < ops_.size(); ++i) {
      if (!is_done(i)) min_response = std::min(min_response, ops_[i].response);
    }
    for (size_t i = 0; i < ops_.size(); ++i) {
      const Operation& op = ops_[i];
      if (is_done(i) || op.invoke > min_response) continue;
      if (!op.is_write && op.value != state) continue;
      const std::string& next = op.is_write ? op.value : state;
      flip(i);
      if (visited_.insert(fingerprint(next)).second) {
        const bool completed = op.response != kNeverReturned;
        completed_left_ -= completed ? 1 : 0;
        const bool ok = search(next);
        completed_left_ += completed ? 1 : 0;
        if (ok) return true;
      }
      flip(i);
      if (exhausted_) return false;
    }
    return false;
  }

  std::vector<Operation> ops_;
  std::vector<uint64_t> done_;
  size_t completed_left_ = 0;
  std::unordered_set<uint64_t> visited_;
  size_t max_states_;
  bool exhausted_ = false;
};

std::string describe(const std::vector<Operation>& ops) {
  std::string out;
  for (const Operation& op : ops) {
    out += "  op " + std::to_string(op.id) + (op.is_write ? " put " : " get ") + op.key + "=" +
           (op.value.empty() ? "<nil>" : op.value) + " [" + std::to_string(op.invoke) + ", " +
           (op.response == kNeverReturned ? std::string("?") : std::to_string(op.response)) + "]\n";
  }
  return out;
}

}  // namespace

LinearizabilityResult check_linearizable(const std::vector<Operation>& history, size_t max_states) {
  std::map<std::string, std::vector<Operation>> by_key;
  for (const Operation& op : history) by_key[op.key].push_back(op);
  for (auto& [key, ops] : by_key) {
    std::sort(ops.begin(), ops.end(),
              [](const Operation& a, const Operation& b) { return a.invoke < b.invoke; });
    KeyChecker checker(ops, max_states);
    if (!checker.run()) {
      std::string why = checker.exhausted() ? "search budget exhausted\n" : "no valid order\n";
      return {false, key, why + describe(ops)};
    }
  }
  return {};
}

}  // namespace shoal::sim
