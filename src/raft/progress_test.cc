#include "raft/progress.h"

#include <gtest/gtest.h>

namespace shoal::raft {
namespace {

TEST(InflightsTest, BoundedByCountAndBytes) {
  Inflights in(3, 100);
  in.add(1, 10);
  in.add(2, 10);
  EXPECT_FALSE(in.full());
  in.add(3, 10);
  EXPECT_TRUE(in.full());
  in.free_le(2);
  EXPECT_EQ(in.count(), 1U);
  EXPECT_FALSE(in.full());
  in.add(4, 95);
  EXPECT_TRUE(in.full());  // bytes
  in.free_first();
  in.free_first();
  EXPECT_EQ(in.count(), 0U);
}

TEST(ProgressTest, ProbeReplicateSnapshotTransitions) {
  Progress pr(5, 4, kNoLimit, false);
  EXPECT_EQ(pr.state, ProgressState::kProbe);
  pr.probe_sent = true;
  EXPECT_TRUE(pr.is_paused());
  EXPECT_TRUE(pr.maybe_update(4));
  EXPECT_FALSE(pr.is_paused());
  pr.become_replicate();
  EXPECT_EQ(pr.next, 5U);
  pr.optimistic_update(9);
  EXPECT_EQ(pr.next, 10U);
  // A rejection in replicate falls back to just after match.
  EXPECT_TRUE(pr.maybe_decr_to(9, 4));
  EXPECT_EQ(pr.next, 5U);
  EXPECT_FALSE(pr.maybe_decr_to(3, 3));  // stale
  pr.become_snapshot(20);
  EXPECT_TRUE(pr.is_paused());
  pr.become_probe();
  EXPECT_EQ(pr.next, 21U);
}

TEST(ProgressTest, ProbeRejectionUsesHint) {
  Progress pr(11, 4, kNoLimit, false);
  EXPECT_FALSE(pr.maybe_decr_to(5, 2));  // not the probe we sent (next-1 == 10)
  EXPECT_TRUE(pr.maybe_decr_to(10, 3));
  EXPECT_EQ(pr.next, 4U);
}

ProgressTracker tracker(std::vector<NodeId> voters) {
  ProgressTracker t(8, kNoLimit);
  t.reset_config(ConfState{voters, {}, {}}, 1);
  return t;
}

TEST(ProgressTrackerTest, CommittedIsTheQuorumMatch) {
  ProgressTracker t = tracker({1, 2, 3, 4, 5});
  const Index matches[] = {0, 9, 7, 5, 3, 1};
  for (NodeId id = 1; id <= 5; ++id) t.find(id)->match = matches[id];
  EXPECT_EQ(t.committed(), 5U);
}

TEST(ProgressTrackerTest, CommittedForEvenAndLargeGroups) {
  // Four voters: three of them must hold an entry.
  ProgressTracker four = tracker({1, 2, 3, 4});
  const Index four_matches[] = {0, 8, 2, 6, 4};
  for (NodeId id = 1; id <= 4; ++id) four.find(id)->match = four_matches[id];
  EXPECT_EQ(four.committed(), 4U);
  // Seventeen voters (more than fit on the stack): nine must hold it.
  std::vector<NodeId> ids;
  for (NodeId id = 1; id <= 17; ++id) ids.push_back(id);
  ProgressTracker many = tracker(ids);
  for (NodeId id = 1; id <= 17; ++id) many.find(id)->match = 100 - id;  // 99 ... 83
  EXPECT_EQ(many.committed(), 91U);  // voters 1..9 hold 91 or more
}

TEST(ProgressTrackerTest, JointConfigNeedsBothMajorities) {
  ProgressTracker t = tracker({1, 2, 3});
  ASSERT_TRUE(t.apply_conf_change({{{ConfChangeType::kAddVoter, 4},
                                    {ConfChangeType::kAddVoter, 5},
                                    {ConfChangeType::kRemoveNode, 1}}}, 1).ok());
  EXPECT_TRUE(t.config().joint());
  EXPECT_FALSE(t.apply_conf_change({{{ConfChangeType::kAddVoter, 6}}}, 1).ok());  // leave first
  // New majority {2,4,5}: 4 and 5; old majority {1,2,3}: only 1 -> not committed.
  t.find(1)->match = 10;
  t.find(4)->match = 10;
  t.find(5)->match = 10;
  EXPECT_EQ(t.committed(), 0U);
  t.find(2)->match = 10;
  EXPECT_EQ(t.committed(), 10U);
  // Votes too.
  t.record_vote(4, true);
  t.record_vote(5, true);
  EXPECT_EQ(t.tally(), VoteResult::kPending);
  t.record_vote(1, false);
  t.record_vote(3, false);
  EXPECT_EQ(t.tally(), VoteResult::kLost);
  ASSERT_TRUE(t.apply_conf_change(ConfChange{}, 1).ok());
  EXPECT_FALSE(t.config().joint());
  EXPECT_FALSE(t.is_member(1));
  EXPECT_EQ(t.conf_state().voters, (std::vector<NodeId>{2, 3, 4, 5}));
}

TEST(ProgressTrackerTest, ConfStateFollowsEveryChange) {
  ProgressTracker t = tracker({1, 2, 3});
  EXPECT_EQ(t.conf_state(), (ConfState{{1, 2, 3}, {}, {}}));
  // Entering a joint configuration.
  ASSERT_TRUE(t.apply_conf_change({{{ConfChangeType::kAddVoter, 4}, {ConfChangeType::kRemoveNode, 1}}}, 1).ok());
  EXPECT_EQ(t.conf_state(), (ConfState{{2, 3, 4}, {1, 2, 3}, {}}));
  // A rejected change leaves it as it was.
  EXPECT_FALSE(t.apply_conf_change({{{ConfChangeType::kAddVoter, 5}}}, 1).ok());
  EXPECT_EQ(t.conf_state(), (ConfState{{2, 3, 4}, {1, 2, 3}, {}}));
  // Leaving it.
  ASSERT_TRUE(t.apply_conf_change(ConfChange{}, 1).ok());
  EXPECT_EQ(t.conf_state(), (ConfState{{2, 3, 4}, {}, {}}));
  // A learner, then a reset (a snapshot's membership).
  ASSERT_TRUE(t.apply_conf_change({{{ConfChangeType::kAddLearner, 7}}}, 1).ok());
  EXPECT_EQ(t.conf_state(), (ConfState{{2, 3, 4}, {}, {7}}));
  t.reset_config(ConfState{{9}, {}, {8}}, 5);
  EXPECT_EQ(t.conf_state(), (ConfState{{9}, {}, {8}}));
}

TEST(ProgressTrackerTest, LearnersDoNotCountAndChangesAreValidated) {
  ProgressTracker t = tracker({1, 2, 3});
  ASSERT_TRUE(t.apply_conf_change({{{ConfChangeType::kAddLearner, 4}}}, 1).ok());
  EXPECT_FALSE(t.config().joint());  // voters unchanged: applied directly
  EXPECT_TRUE(t.find(4)->is_learner);
  t.find(4)->match = 10;
  t.find(1)->match = 10;
  EXPECT_EQ(t.committed(), 0U);
  EXPECT_FALSE(t.validate_conf_change({{{ConfChangeType::kAddLearner, 1}}}).ok());  // demotion
  EXPECT_FALSE(t.validate_conf_change({{{ConfChangeType::kRemoveNode, 1},
                                        {ConfChangeType::kRemoveNode, 2},
                                        {ConfChangeType::kRemoveNode, 3}}}).ok());
  EXPECT_FALSE(t.validate_conf_change(ConfChange{}).ok());  // not joint
  ProgressTracker empty(8, kNoLimit);
  EXPECT_FALSE(empty.validate_conf_change({{{ConfChangeType::kAddVoter, 1}}}).ok());
}

TEST(ProgressTrackerTest, QuorumActive) {
  ProgressTracker t = tracker({1, 2, 3});
  for (auto& [id, pr] : t.progress()) pr.recent_active = false;
  EXPECT_FALSE(t.quorum_active(1));
  t.find(3)->recent_active = true;
  EXPECT_TRUE(t.quorum_active(1));
}

}  // namespace
}  // namespace shoal::raft
