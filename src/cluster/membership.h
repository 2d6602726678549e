// The executor's side of placement: given what the metadata wants a group's
// membership to be and what its leader has, the next safe Raft step. Pure
// (no I/O, no clock): cluster::Cluster calls it on every group leader each
// tick, and the replica simulation calls it the same way.
//
// Steps, one at a time, each waiting for the last to apply:
//   1. a leader that is to leave hands leadership to a wanted voter;
//   2. a wanted node that is not a member joins as a learner (it catches up
//      from a snapshot);
//   3. caught-up learners are promoted and unwanted voters removed in one
//      joint change; an unwanted voter stays while it is needed to keep the
//      voter count, and the count never rests at an even number short of
//      the wanted one (two voters of a growing group would wedge on one loss);
//   4. unwanted learners leave;
//   5. leadership moves to the preferred replica.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cluster/planner.h"
#include "raft/raft.h"
#include "raft/types.h"

namespace shoal::cluster {

// What the group's leader knows of its group.
struct GroupState {
  raft::NodeId self = raft::kNoNode;
  raft::ConfState conf;
  raft::Index committed = 0;
  raft::Index applied = 0;
  raft::Index last_index = 0;
  bool transferring = false;               // a leadership transfer is under way
  std::map<raft::NodeId, raft::Index> match;  // per member: highest index known replicated
  // Nodes that left the group too recently to join it again (RejoinGuard).
  std::vector<raft::NodeId> rejoin_wait;
};

// Raft member ids are node ids, so a replica deleted from a node and later
// added back reuses its id. A response of the deleted incarnation arriving
// after the new one was added would be taken for the new one's: a match
// index the empty newcomer does not have, which would count it towards a
// commit quorum. The transport delivers no message older than about
// Transport::kMaxMessageAgeUs + kMaxLatenessUs (7 s); a leader adds no node
// back to its group within kRejoinDelayUs of seeing it leave, so by then
// every message of the old incarnation is gone. (A later leader needs no
// record: Raft ignores responses from an older term, and a node removed in
// an older term was sent nothing by it.)
inline constexpr int64_t kRejoinDelayUs = 20'000'000;

// The leader's record of who left its group when (on the group's worker).
class RejoinGuard {
 public:
  explicit RejoinGuard(int64_t delay_us = kRejoinDelayUs) : delay_us_(delay_us) {}
  // The group's membership as its leader has it now.
  void Observe(const raft::ConfState& conf, int64_t now_us);
  // Nodes that left within the delay (kRejoinDelayUs).
  std::vector<raft::NodeId> Waiting(int64_t now_us) const;

 private:
  int64_t delay_us_;
  bool seen_ = false;
  std::set<raft::NodeId> members_;
  std::map<raft::NodeId, int64_t> left_at_;
};

// The GroupState of a leader's Raft (call on the group's worker).
GroupState GroupStateOf(const raft::Raft& raft);

struct MembershipStep {
  enum class Kind { kNone, kConfChange, kTransferLeader } kind = Kind::kNone;
  raft::ConfChange change;
  raft::NodeId transfer_to = raft::kNoNode;
  std::string what;  // for logs
};

MembershipStep NextMembershipStep(const Membership& want, raft::NodeId preferred_leader, const GroupState& g);

// Whether the replica on node `self`, which the metadata no longer places
// there (`wanted` false), may delete its state: only once the group's leader
// (another node) reports a settled membership without it, and the replica
// has heard nothing from a leader for a while (a leader sends heartbeats to
// every member, so a stale report cannot hide that it was added again). A
// voter that deleted its log while still counted could elect a leader
// lacking committed entries; a member that did so would look caught up to
// its leader while empty.
bool MayRetire(raft::NodeId self, bool wanted, raft::NodeId leader, const Membership& leader_conf, bool joint,
               bool leader_contact_recent);

}  // namespace shoal::cluster
