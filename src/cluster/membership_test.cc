#include "cluster/membership.h"

#include <gtest/gtest.h>

#include "common/member_id.h"

namespace shoal::cluster {
namespace {

using Kind = MembershipStep::Kind;
using raft::ConfChangeType;

// A settled leader (node 1) at index 100 whose members are all caught up.
GroupState Group(std::vector<raft::NodeId> voters, std::vector<raft::NodeId> learners = {}) {
  GroupState g;
  g.self = 1;
  g.conf.voters = voters;
  g.conf.learners = learners;
  g.committed = g.applied = g.last_index = 100;
  for (auto v : voters) g.match[v] = 100;
  for (auto l : learners) g.match[l] = 100;
  return g;
}

std::string Show(const MembershipStep& s) {
  std::string out = s.what;
  for (const auto& c : s.change.changes) {
    out += c.type == ConfChangeType::kAddVoter ? " +v" : c.type == ConfChangeType::kAddLearner ? " +l" : " -";
    out += std::to_string(c.node);
  }
  if (s.kind == Kind::kTransferLeader) out += " ->" + std::to_string(s.transfer_to);
  return out;
}

struct Case {
  const char* name;
  Membership want;
  raft::NodeId preferred;
  GroupState g;
  std::string expect;  // Show() of the step, "" for none
};

constexpr raft::NodeId kOne1 = MemberIdOf(1, 1), kThree1 = MemberIdOf(3, 1);

TEST(MembershipStep, Table) {
  auto lagging = [](GroupState g, raft::NodeId id, raft::Index match) {
    g.match[id] = match;
    return g;
  };
  auto joint = [](GroupState g) {
    g.conf.voters_outgoing = {1, 2, 3};
    return g;
  };
  auto busy = [](GroupState g) {
    g.last_index = g.committed = 101;
    return g;
  };
  const Case cases[] = {
      {"settled", {{1, 2, 3}, {}}, 1, Group({1, 2, 3}), ""},
      {"new voter joins as a learner first", {{1, 2, 4}, {}}, 1, Group({1, 2, 3}), "adding learner +l4"},
      {"caught-up learner replaces a voter in one joint change", {{1, 2, 4}, {}}, 1, Group({1, 2, 3}, {4}),
       "changing voters +v4 -3"},
      {"lagging learner: the old voter stays", {{1, 2, 4}, {}}, 1, lagging(Group({1, 2, 3}, {4}), 4, 50), ""},
      {"1 -> 3 voters waits for both learners", {{1, 2, 3}, {}}, 1, lagging(Group({1}, {2, 3}), 3, 10), ""},
      {"1 -> 3 voters together", {{1, 2, 3}, {}}, 1, Group({1}, {2, 3}), "changing voters +v2 +v3"},
      {"removed node's voter dropped (target reached)", {{1, 2}, {}}, 1, Group({1, 2, 3}), "changing voters -3"},
      {"unwanted learner leaves", {{1, 2, 3}, {}}, 1, Group({1, 2, 3}, {4}), "removing learner -4"},
      {"wanted learner added", {{1}, {2}}, 1, Group({1}), "adding learner +l2"},
      {"leaving leader hands over first", {{2, 3, 4}, {}}, 2, Group({1, 2, 3}, {4}), "leader leaves ->2"},
      {"leaving leader skips a lagging preferred voter", {{2, 3, 4}, {}}, 2,
       lagging(Group({1, 2, 3}, {4}), 2, 90), "leader leaves ->3"},
      {"leaving leader waits for a caught-up successor", {{2, 3, 4}, {}}, 0,
       lagging(lagging(Group({1, 2, 3}, {4}), 2, 90), 3, 90), ""},
      {"nothing while joint", {{1, 2, 4}, {}}, 1, joint(Group({1, 2, 4})), ""},
      {"nothing while a committed change is unapplied", {{1, 2, 4}, {}}, 1, busy(Group({1, 2, 3})), ""},
      {"preferred leader", {{1, 2, 3}, {}}, 3, Group({1, 2, 3}), "preferred leader ->3"},
      {"preferred leader not caught up", {{1, 2, 3}, {}}, 3, lagging(Group({1, 2, 3}), 3, 99), ""},
      {"a single voter moves in one joint change", {{2}, {}}, 2, Group({1}, {2}), "changing voters +v2 -1"},
      {"a single voter's successor joins first", {{2}, {}}, 2, Group({1}), "adding learner +l2"},
      {"3 -> 5 voters waits for both", {{1, 2, 3, 4, 5}, {}}, 1, lagging(Group({1, 2, 3}, {4, 5}), 5, 1), ""},
      // Node 3 placed again (incarnation 1): its old member leaves first,
      // voter or learner, before the new one is added.
      {"an older incarnation's voter leaves first", {{1, 2, kThree1}, {}}, 1, Group({1, 2, 3}),
       "removing an older incarnation -3"},
      {"an older incarnation's learner leaves first", {{1, 2}, {kThree1}}, 1, Group({1, 2}, {3}),
       "removing an older incarnation -3"},
      {"then the new incarnation joins as a learner", {{1, 2, kThree1}, {}}, 1, Group({1, 2}),
       "adding learner +l" + std::to_string(kThree1)},
      {"a leader of an older incarnation hands over first", {{kOne1, 2, 3}, {}}, 1, Group({1, 2, 3}),
       "leader leaves ->2"},
  };
  for (const Case& c : cases) {
    MembershipStep s = NextMembershipStep(c.want, c.preferred, c.g);
    EXPECT_EQ(s.kind == Kind::kNone ? std::string() : Show(s), c.expect) << c.name;
  }
}

TEST(MembershipStep, RetireOnlyOnceTheLeaderHasLetGo) {
  Membership without{{1, 2, 3}, {}};
  Membership with{{1, 2, 3}, {4}};
  EXPECT_TRUE(MayRetire(4, false, 1, without, false, false));
  EXPECT_FALSE(MayRetire(4, true, 1, without, false, false));   // wanted again
  EXPECT_FALSE(MayRetire(4, false, 1, with, false, false));     // still a learner
  EXPECT_FALSE(MayRetire(4, false, 1, without, true, false));   // joint: may still count
  EXPECT_FALSE(MayRetire(4, false, 0, without, false, false));  // no leader known
  EXPECT_FALSE(MayRetire(4, false, 4, without, false, false));  // it leads
  EXPECT_FALSE(MayRetire(4, false, 1, without, false, true));   // a leader still talks to it
}

}  // namespace
}  // namespace shoal::cluster
