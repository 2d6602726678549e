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
#include <string>

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
