// The meta leader's memory of each shard's size and load, between the
// leaders' reports and the planner (docs/design/placement.md, "Weights").
// Pure: no clock (the caller passes the time), no I/O.
//
// A leader measures its shard from when it became leader: for about a
// second it reports nothing, then its load (a moving average over
// kLoadMemorySecs) grows from 0 towards the real rate. Taken as they come,
// those reports make every shard look empty and idle just after a leader
// change or a split, and the planner would move replicas and leaders
// towards it and back. So:
//   - the size is the last one measured for the shard's range, whoever
//     measured it; a split's halves start with half the parent's (the
//     smallest remembered range holding them); a leader that has not
//     applied a split yet (it reports the range before it) is not taken;
//   - the load of a new leader (or term, or range) is its report plus the
//     previous figure fading at the same rate as the new one grows (their
//     sum is the steady rate), never more than the larger of the two;
//   - the figures handed on change only when they move by more than
//     kDeadBand (20%): measuring noise changes nothing, so the planner
//     sees the same weights round after round and moves nothing back;
//   - a shard not seen for kForgetUs is forgotten (a stale figure would be
//     carried onto a later leader), and one whose leader has measured
//     nothing for twice that is unknown (it weighs the mean).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>

namespace shoal::cluster {

class LoadBook {
 public:
  static constexpr double kLoadMemorySecs = 10.0;
  static constexpr int64_t kForgetUs = 5'000'000;
  static constexpr double kDeadBand = 0.20;

  struct Report {
    uint64_t leader = 0, term = 0;
    uint32_t slot_begin = 0, slot_end = 0;
    bool measured = false;  // bytes and ops_per_sec are the leader's figures
    uint64_t bytes = 0;
    uint64_t ops_per_sec = 0;
  };
  struct Estimate {
    bool known = false;  // false: nothing is known of this shard's size
    uint64_t bytes = 0;
    uint64_t ops_per_sec = 0;
  };

  // A shard's leader reported `r` (nullptr: no leader known now).
  Estimate Observe(uint64_t shard, const Report* r, int64_t now_us);
  // Drops what was not observed within kForgetUs.
  void Forget(int64_t now_us);
  size_t size() const { return book_.size(); }

 private:
  struct Entry {
    uint32_t begin = 0, end = 0;  // the range the figures are for
    bool bytes_known = false;
    uint64_t bytes = 0;
    uint64_t leader = 0, term = 0;  // whose measurement the load is
    double ops = 0;                 // the last estimate
    double carried = 0;             // the figure before the change, fading from since_us
    double bytes_in_use = 0, ops_in_use = 0;  // handed on (kDeadBand)
    int64_t since_us = 0, seen_us = 0, measured_at_us = 0;
    // Before the last range change (a split): what a child takes half of.
    uint32_t prev_begin = 0, prev_end = 0;
    bool prev_known = false;
    uint64_t prev_bytes = 0;
    double prev_ops = 0;
    int64_t prev_at_us = 0;
  };
  // Half the figures of the smallest remembered range (current, or before a
  // recent split) that strictly contains [begin, end).
  bool ParentHalf(uint64_t shard, uint32_t begin, uint32_t end, int64_t now_us, uint64_t* bytes, double* ops) const;
  Estimate Out(const Entry& e, int64_t now_us) const;

  std::map<uint64_t, Entry> book_;
};

}  // namespace shoal::cluster
