#include "cluster/membership.h"

#include <algorithm>
#include <vector>

#include "common/member_id.h"

namespace shoal::cluster {
namespace {

using Ids = std::vector<raft::NodeId>;

bool Has(const Ids& ids, raft::NodeId id) { return std::find(ids.begin(), ids.end(), id) != ids.end(); }

MembershipStep Change(raft::ConfChangeType type, raft::NodeId id, const char* what) {
  MembershipStep s;
  s.kind = MembershipStep::Kind::kConfChange;
  s.change.changes.push_back({type, id});
  s.what = what;
  return s;
}

}  // namespace

GroupState GroupStateOf(const raft::Raft& raft) {
  GroupState g;
  g.self = raft.id();
  g.conf = raft.tracker().conf_state();
  g.committed = raft.log().committed();
  g.applied = raft.log().applied();
  g.last_index = raft.log().last_index();
  g.transferring = raft.lead_transferee() != raft::kNoNode;
  for (const auto& [id, pr] : raft.tracker().progress()) g.match[id] = pr.match;
  return g;
}

MembershipStep NextMembershipStep(const Membership& want, raft::NodeId preferred, const GroupState& g) {
  MembershipStep none;
  if (want.voters.empty()) return none;
  if (!g.conf.voters_outgoing.empty()) return none;  // the leader leaves the joint state by itself
  // A committed change may be about to apply (Raft refuses a second
  // proposal while one is pending, so uncommitted ones need no wait).
  if (g.applied < g.committed) return none;
  auto member = [&](raft::NodeId id) { return Has(g.conf.voters, id) || Has(g.conf.learners, id); };
  auto caught_up_to = [&](raft::NodeId id, raft::Index index) {
    auto it = g.match.find(id);
    return it != g.match.end() && it->second >= index;
  };
  auto transfer = [&](raft::NodeId to, const char* what) {
    MembershipStep s;
    // Raft's transfer catches the transferee up itself; committed is enough
    // (last_index would stall under steady writes).
    if (to == raft::kNoNode || to == g.self || g.transferring || !caught_up_to(to, g.committed)) return s;
    s.kind = MembershipStep::Kind::kTransferLeader;
    s.transfer_to = to;
    s.what = what;
    return s;
  };
  // 1. A leader that is to leave hands leadership to a wanted voter first.
  //    With none among the voters yet (a single voter moving), it carries
  //    on: the joint change below replaces it, and Raft steps it down.
  if (!Has(want.voters, g.self)) {
    raft::NodeId to = Has(want.voters, preferred) && Has(g.conf.voters, preferred) &&
                              caught_up_to(preferred, g.committed)
                          ? preferred
                          : raft::kNoNode;
    bool any = false;
    for (raft::NodeId v : want.voters) {
      any |= Has(g.conf.voters, v);
      if (to == raft::kNoNode && Has(g.conf.voters, v) && caught_up_to(v, g.committed)) to = v;
    }
    if (any) return transfer(to, "leader leaves");
  }
  // 2. A member on a node that is wanted under another id (an older
  //    incarnation of the replica there, common/member_id.h) leaves first:
  //    its node holds the new one only once the old one is let go.
  for (const Ids* ids : {&g.conf.voters, &g.conf.learners}) {
    for (raft::NodeId id : *ids) {
      if (id == g.self || Has(want.voters, id) || Has(want.learners, id)) continue;
      bool replaced = false;
      for (const Ids* w : {&want.voters, &want.learners}) {
        for (raft::NodeId n : *w) replaced |= SameNode(n, id);
      }
      if (replaced) return Change(raft::ConfChangeType::kRemoveNode, id, "removing an older incarnation");
    }
  }
  // 3. New members join as learners, one at a time.
  for (const Ids* ids : {&want.voters, &want.learners}) {
    for (raft::NodeId id : *ids) {
      if (!member(id)) return Change(raft::ConfChangeType::kAddLearner, id, "adding learner");
    }
  }
  // 4. Voters: promote caught-up learners, drop unwanted voters, in one change.
  Ids next, extra;
  for (raft::NodeId v : g.conf.voters) (Has(want.voters, v) ? next : extra).push_back(v);
  for (raft::NodeId v : want.voters) {
    if (!Has(g.conf.voters, v) && caught_up_to(v, g.committed)) next.push_back(v);
  }
  const size_t keep_at_least = std::min(want.voters.size(), g.conf.voters.size());
  for (raft::NodeId e : extra) {
    if (next.size() >= keep_at_least) break;
    next.push_back(e);
  }
  std::sort(next.begin(), next.end());
  if (next != g.conf.voters && (next.size() >= want.voters.size() || next.size() % 2 == 1)) {
    MembershipStep s;
    s.kind = MembershipStep::Kind::kConfChange;
    s.what = "changing voters";
    for (raft::NodeId v : next) {
      if (!Has(g.conf.voters, v)) s.change.changes.push_back({raft::ConfChangeType::kAddVoter, v});
    }
    for (raft::NodeId v : g.conf.voters) {
      if (!Has(next, v)) s.change.changes.push_back({raft::ConfChangeType::kRemoveNode, v});
    }
    return s;
  }
  // 5. Learners that are not wanted leave.
  for (raft::NodeId l : g.conf.learners) {
    if (!Has(want.voters, l) && !Has(want.learners, l)) {
      return Change(raft::ConfChangeType::kRemoveNode, l, "removing learner");
    }
  }
  // 6. Leadership goes where the placement driver prefers.
  if (Has(g.conf.voters, preferred)) return transfer(preferred, "preferred leader");
  return none;
}

bool MayRetire(raft::NodeId self, bool wanted, raft::NodeId leader, const Membership& leader_conf, bool joint,
               bool leader_contact_recent) {
  if (wanted || leader == raft::kNoNode || SameNode(leader, self) || joint || leader_contact_recent) return false;
  return !Has(leader_conf.voters, self) && !Has(leader_conf.learners, self);
}

}  // namespace shoal::cluster
