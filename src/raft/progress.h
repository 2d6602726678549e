// Leader-side bookkeeping: per-follower replication Progress (probe /
// replicate / snapshot with a bounded in-flight window) and the
// ProgressTracker that holds the (possibly joint) configuration and answers
// quorum questions: commit index, election outcome, quorum activity.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "raft/types.h"

namespace shoal::raft {

// A ring of the last indexes of in-flight kApp messages to one follower,
// bounded by count and by bytes.
class Inflights {
 public:
  Inflights(size_t max_count, uint64_t max_bytes);
  // Records a message whose last entry is `index` carrying `bytes` bytes.
  void add(Index index, uint64_t bytes);
  // Frees all messages with last index <= index (they were acknowledged).
  void free_le(Index index);
  // Frees the oldest message (used when a heartbeat response proves contact).
  void free_first();
  // Whether no more messages may be sent until some are acknowledged.
  bool full() const { return count_ == max_count_ || bytes_ >= max_bytes_; }
  // Messages in flight.
  size_t count() const { return count_; }
  // Forgets every in-flight message.
  void reset();

 private:
  struct Slot {
    Index index = 0;
    uint64_t bytes = 0;
  };
  std::vector<Slot> ring_;
  size_t start_ = 0;
  size_t count_ = 0;
  uint64_t bytes_ = 0;
  size_t max_count_;
  uint64_t max_bytes_;
};

// Replication mode of one follower (see docs/design/raft.md).
enum class ProgressState : uint8_t { kProbe, kReplicate, kSnapshot };
// Short name for logs.
const char* to_string(ProgressState s);

// The leader's view of one peer. Invariant: match < next.
struct Progress {
  Progress(Index next_index, size_t max_inflight, uint64_t max_inflight_bytes, bool learner)
      : next(next_index), inflights(max_inflight, max_inflight_bytes), is_learner(learner) {}

  Index match = 0;
  Index next = 1;
  ProgressState state = ProgressState::kProbe;
  Index pending_snapshot = 0;   // index of the snapshot being sent (kSnapshot)
  bool recent_active = false;   // heard from since the last CheckQuorum
  bool probe_sent = false;      // kProbe: one message in flight, wait for an answer
  uint64_t lease_ack_tick = 0;  // highest leader tick this peer echoed back
  Inflights inflights;
  bool is_learner = false;

  // State transitions; each resets the in-flight window.
  void become_probe();
  void become_replicate();
  void become_snapshot(Index snapshot_index);
  // The follower says its log ends below `match`: what it was credited with
  // may have come from an earlier replica under the same id (deleted, and
  // created anew on that node), whose acknowledgement arrived late. Forget
  // it and probe again, first at the old match: a follower that has it (the
  // signal was a stale, reordered answer) is back at once, without a
  // snapshot; one that does not walks back as any probe does. Lowering
  // match is always safe (the commit index never goes back), and a credit
  // from an earlier incarnation is below the entry that added this one, so
  // no commit relied on it.
  void forget_match();
  // A successful append response for n: returns true if match advanced.
  bool maybe_update(Index n);
  // Optimistically advances next after sending entries up to n (kReplicate).
  void optimistic_update(Index n) { next = n + 1; }
  // A rejection of a probe at `rejected`: returns false if it is stale.
  bool maybe_decr_to(Index rejected, Index match_hint);
  // Whether the leader should hold back kApp messages to this peer.
  bool is_paused() const;
  // "state match=.. next=.." for logs.
  std::string to_string() const;
};

// Outcome of an election so far.
enum class VoteResult : uint8_t { kPending, kLost, kWon };

// The membership configuration in effect (as applied by this node).
struct TrackerConfig {
  std::set<NodeId> voters;           // incoming (or only) majority config
  std::set<NodeId> voters_outgoing;  // non-empty only while joint
  std::set<NodeId> learners;
  // Whether this is a joint configuration C_old,new.
  bool joint() const { return !voters_outgoing.empty(); }
};

// Configuration, per-peer Progress and votes, owned by one Raft.
class ProgressTracker {
 public:
  ProgressTracker(size_t max_inflight, uint64_t max_inflight_bytes);

  // Replaces the configuration (at startup or snapshot restore); every
  // member gets a fresh Progress with next = next_index.
  void reset_config(const ConfState& cs, Index next_index);
  // Applies a committed membership change. Fails (changing nothing) for an
  // invalid change; every replica fails identically, so it is safe to skip.
  Status apply_conf_change(const ConfChange& cc, Index next_index);
  // Checks cc against this configuration without applying it.
  Status validate_conf_change(const ConfChange& cc) const;

  const TrackerConfig& config() const { return config_; }
  // The configuration as a ConfState (sorted ids), kept with it: asked for
  // on every published round.
  const ConfState& conf_state() const { return conf_state_; }
  // Voter in either half of the configuration.
  bool is_voter(NodeId id) const;
  // Voter or learner (has a Progress).
  bool is_member(NodeId id) const { return progress_.count(id) != 0; }
  // Exactly one voter and not joint: decisions need nobody else.
  bool is_singleton() const { return config_.voters.size() == 1 && !config_.joint(); }
  // All voters of both halves of a joint configuration.
  std::set<NodeId> all_voters() const;

  // Every member's Progress, ordered by id (deterministic iteration).
  std::map<NodeId, Progress>& progress() { return progress_; }
  const std::map<NodeId, Progress>& progress() const { return progress_; }
  // The member's Progress, or nullptr.
  Progress* find(NodeId id);

  // Largest index acknowledged by a quorum (joint: both majorities).
  Index committed() const;
  // The largest value v such that a quorum of voters has value(id) >= v.
  uint64_t quorum_min(const std::function<uint64_t(NodeId)>& value) const;

  // Election bookkeeping: forget, record (first answer wins), and count
  // votes against both majorities of a joint configuration.
  void reset_votes() { votes_.clear(); }
  void record_vote(NodeId id, bool granted);
  VoteResult tally() const;
  // Whether the peers marked recent_active (plus self) form a quorum.
  bool quorum_active(NodeId self) const;

 private:
  void add_progress(NodeId id, Index next_index, bool learner);
  void prune_progress();
  void update_conf_state();

  TrackerConfig config_;
  ConfState conf_state_;  // config_ as a ConfState
  std::map<NodeId, Progress> progress_;
  std::map<NodeId, bool> votes_;
  size_t max_inflight_;
  uint64_t max_inflight_bytes_;
};

}  // namespace shoal::raft
