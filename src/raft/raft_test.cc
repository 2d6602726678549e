// Scenario tests of the Raft core: the classic situations from the paper
// and thesis, run over the synchronous TestCluster.
#include "raft/raft.h"

#include <gtest/gtest.h>

#include <map>

#include "raft/raft_test_util.h"

namespace shoal::raft {
namespace {

using testing::TestCluster;

TEST(RaftTest, ElectsALeaderAndReplicates) {
  TestCluster c(3);
  c.campaign(1);
  EXPECT_EQ(c.raft(1).role(), Role::kLeader);
  EXPECT_EQ(c.raft(2).lead(), 1U);
  EXPECT_EQ(c.raft(3).lead(), 1U);
  ASSERT_TRUE(c.propose(1, "x").ok());
  for (NodeId id : {1, 2, 3}) EXPECT_EQ(c.applied(id), std::vector<std::string>{"x"});
}

TEST(RaftTest, ElectionTimeoutElectsALeaderWithoutHelp) {
  TestCluster c(3, [](Config& cfg) { cfg.pre_vote = true; cfg.check_quorum = true; });
  c.tick_all(2 * 10 + 1);
  int leaders = 0;
  for (NodeId id : {1, 2, 3}) leaders += c.raft(id).role() == Role::kLeader ? 1 : 0;
  EXPECT_EQ(leaders, 1);
}

TEST(RaftTest, FollowerRefusesProposalWithLeaderHint) {
  TestCluster c(3);
  c.campaign(2);
  Proposal p = c.node(1).propose("x");
  EXPECT_EQ(p.error, ProposeError::kNotLeader);
  EXPECT_EQ(p.leader_hint, 2U);
}

// Figure 8 of the Raft paper, in three nodes. n1 (term 2) holds an entry
// only it has; n2 (term 3) an entry only it has; n1 wins term 4 and brings n3
// up to its term-2 entry (one entry per message) but not to its term-4
// entry. Counting replicas would now "commit" the term-2 entry, yet n2 can
// still win term 5 and overwrite it. Returns n1's commit index after term 4.
Index run_figure8(bool unsafe) {
  TestCluster c(3, [&](Config& cfg) {
    cfg.max_size_per_msg = 1;
    cfg.unsafe_commit_previous_term_ForTest = unsafe;
  });
  c.campaign(1);  // term 2; its empty entry (index 2) commits everywhere
  c.isolate(1);
  EXPECT_TRUE(c.propose(1, "old").ok());  // index 3, term 2: only on n1
  // n2 wins term 3 with n3's vote, but its empty entry reaches nobody.
  c.set_filter([](const Message& m) { return m.from == 2 && m.type == MessageType::kApp; });
  c.campaign(2);
  EXPECT_EQ(c.raft(2).role(), Role::kLeader);
  c.heal();
  c.isolate(2);
  c.restart(1);  // n1 crashed meanwhile; its durable log keeps index 3
  // n1 wins term 4 with n3's vote; n3 receives index 3 but never index 4.
  // The first probe (after index 3) reaches n3 and is rejected; after
  // that, anything carrying index 4 is lost.
  int probes_after_3 = 0;
  c.set_filter([&probes_after_3](const Message& m) {
    if (m.from != 1 || m.type != MessageType::kApp || m.index < 3) return false;
    return ++probes_after_3 > 1;
  });
  c.campaign(1);  // term 3: n3 already voted for n2
  c.campaign(1);  // term 4
  EXPECT_EQ(c.raft(1).role(), Role::kLeader);
  EXPECT_EQ(c.raft(1).term(), 4U);
  EXPECT_EQ(c.raft(3).log().last_index(), 3U);
  const Index n1_commit = c.raft(1).log().committed();
  // n1 fails; n2 returns and wins term 5+ with n3's vote (its last term 3 > 2).
  c.heal();
  c.isolate(1);
  c.restart(2);   // n2 crashed while isolated (so it is no longer leader)
  c.campaign(2);  // term 4: n3 already voted for n1
  c.campaign(2);  // term 5
  EXPECT_EQ(c.raft(2).role(), Role::kLeader);
  EXPECT_EQ(c.raft(3).log().term_or_zero(3), 3U);  // the term-2 entry is gone
  return n1_commit;
}

TEST(RaftTest, Figure8OldTermEntryIsNotCommittedByCounting) {
  EXPECT_EQ(run_figure8(false), 2U);
}

TEST(RaftTest, Figure8MutationCommitsAnEntryThatIsLaterLost) {
  // With the injected bug n1 commits index 3, which n2 then overwrites.
  EXPECT_EQ(run_figure8(true), 3U);
}

TEST(RaftTest, PartitionedLeaderStepsDownAndLosesUncommittedWrites) {
  TestCluster c(5, [](Config& cfg) { cfg.check_quorum = true; cfg.pre_vote = true; });
  c.campaign(1);
  ASSERT_TRUE(c.propose(1, "a").ok());
  c.isolate(1);
  ASSERT_TRUE(c.propose(1, "lost").ok());
  c.tick(1, 20);  // within two election timeouts without a quorum
  EXPECT_EQ(c.raft(1).role(), Role::kFollower);
  // The majority elects a new leader and moves on.
  for (int i = 0; i < 3 && c.raft(2).role() != Role::kLeader; ++i) {
    for (NodeId id : {2, 3, 4, 5}) c.tick(id, 10);
    c.campaign(2);
  }
  ASSERT_EQ(c.raft(2).role(), Role::kLeader);
  ASSERT_TRUE(c.propose(2, "b").ok());
  c.heal();
  c.tick_all(3);
  EXPECT_EQ(c.raft(1).lead(), 2U);
  for (NodeId id : {1, 2, 3, 4, 5}) EXPECT_EQ(c.applied(id), (std::vector<std::string>{"a", "b"})) << id;
}

TEST(RaftTest, DisruptiveRejoiningNodeIsHarmlessWithPreVote) {
  TestCluster c(3, [](Config& cfg) { cfg.check_quorum = true; cfg.pre_vote = true; });
  c.campaign(1);
  const Term term = c.raft(1).term();
  c.isolate(3);
  for (int i = 0; i < 10; ++i) {
    c.tick(3, 20);  // n3 times out again and again
    c.tick(1, 1);
    c.tick(2, 1);
  }
  EXPECT_EQ(c.raft(3).term(), term);  // pre-vote never succeeded: no term inflation
  c.heal();
  c.tick_all(5);
  EXPECT_EQ(c.raft(1).role(), Role::kLeader);
  EXPECT_EQ(c.raft(1).term(), term);
  EXPECT_EQ(c.raft(3).lead(), 1U);
}

TEST(RaftTest, FollowersOfAGoneLeaderElectAnotherWithoutWaitingForTheTimeout) {
  TestCluster c(3, [](Config& cfg) { cfg.check_quorum = true; cfg.pre_vote = true; });
  c.campaign(1);
  ASSERT_TRUE(c.propose(1, "a").ok());
  c.isolate(1);  // its process ended
  // n3 learns it; n2 not yet: n2 heard its leader moments ago and refuses
  // to elect anyone (the leader's lease). No tick has passed.
  ASSERT_TRUE(c.node(3).leader_gone(1));
  EXPECT_EQ(c.raft(3).lead(), kNoNode);
  EXPECT_FALSE(c.node(3).leader_gone(1));  // once
  c.campaign(3);
  EXPECT_NE(c.raft(3).role(), Role::kLeader);
  // Told of a node that does not lead it, n2 changes nothing.
  EXPECT_FALSE(c.node(2).leader_gone(3));
  EXPECT_EQ(c.raft(2).lead(), 1U);
  // Once n2 learns it too, its campaign wins at once: n3 no longer counts
  // on a lease either.
  ASSERT_TRUE(c.node(2).leader_gone(1));
  const uint64_t campaigns = c.raft(2).campaigns();
  c.campaign(2);
  EXPECT_EQ(c.raft(2).role(), Role::kLeader);
  EXPECT_EQ(c.raft(2).campaigns(), campaigns + 1);
  ASSERT_TRUE(c.propose(2, "b").ok());
  EXPECT_EQ(c.applied(3), (std::vector<std::string>{"a", "b"}));
  // A leader is never told its own leader is gone.
  EXPECT_FALSE(c.node(2).leader_gone(2));
  EXPECT_EQ(c.raft(2).role(), Role::kLeader);
}

TEST(RaftTest, DisruptiveRejoiningNodeDeposesLeaderWithoutPreVote) {
  TestCluster c(3);  // neither pre-vote nor check-quorum
  c.campaign(1);
  const Term term = c.raft(1).term();
  c.isolate(3);
  c.tick(3, 40);
  EXPECT_GT(c.raft(3).term(), term + 1);
  c.heal();
  c.tick_all(30);
  EXPECT_GT(c.raft(1).term(), term);  // the rejoin forced a new election
}

TEST(RaftTest, RemovingTheLeaderHandsOverLeadership) {
  TestCluster c(3);
  c.campaign(1);
  ASSERT_TRUE(c.propose(1, "a").ok());
  ASSERT_TRUE(c.node(1).propose_conf_change({{{ConfChangeType::kRemoveNode, 1}}}).ok());
  c.deliver();
  c.tick_all(3);
  // n1 applied its removal (through a joint configuration), stepped down and
  // told the most caught-up voter to campaign at once.
  EXPECT_NE(c.raft(1).role(), Role::kLeader);
  const NodeId lead = c.raft(2).lead();
  ASSERT_TRUE(lead == 2 || lead == 3);
  EXPECT_EQ(c.raft(lead).tracker().conf_state().voters, (std::vector<NodeId>{2, 3}));
  EXPECT_TRUE(c.raft(lead).tracker().conf_state().voters_outgoing.empty());
  ASSERT_TRUE(c.propose(lead, "b").ok());
  EXPECT_EQ(c.applied(2), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c.applied(3), (std::vector<std::string>{"a", "b"}));
  c.tick(1, 50);
  EXPECT_NE(c.raft(1).role(), Role::kLeader);  // a removed node never campaigns
}

TEST(RaftTest, LearnerCatchesUpByteSnapshotAndIsPromoted) {
  TestCluster c(3);
  c.campaign(1);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.propose(1, "w" + std::to_string(i)).ok());
  // The leader compacts its log, so a new replica needs a snapshot.
  const Index applied = c.raft(1).log().applied();
  ASSERT_TRUE(c.storage(1).create_snapshot(applied, c.raft(1).tracker().conf_state(), "snap").ok());
  ASSERT_TRUE(c.storage(1).compact(applied).ok());
  c.add(4, ConfState{});
  ASSERT_TRUE(c.node(1).propose_conf_change({{{ConfChangeType::kAddLearner, 4}}}).ok());
  c.deliver();
  c.tick_all(3);
  EXPECT_EQ(c.raft(4).log().committed(), c.raft(1).log().committed());
  EXPECT_FALSE(c.raft(1).tracker().is_voter(4));
  EXPECT_TRUE(c.raft(1).tracker().progress().at(4).is_learner);
  ASSERT_TRUE(c.node(1).propose_conf_change({{{ConfChangeType::kAddVoter, 4}}}).ok());
  c.deliver();
  c.tick_all(3);
  EXPECT_TRUE(c.raft(1).tracker().is_voter(4));
  EXPECT_FALSE(c.raft(1).tracker().config().joint());
  ASSERT_TRUE(c.propose(1, "after").ok());
  EXPECT_EQ(c.applied(4).back(), "after");
}

// A new replica may be sent a snapshot from before its own addition (by a
// leader that compacted before it proposed it, or a former one) and takes
// it: it has no configuration yet. If the leader has since compacted past
// that snapshot again, but still before the addition, all it can send is a
// newer snapshot that also leaves the replica out. The replica must take it
// too (its own configuration does not name it either), or it never catches
// up: it ignored each one and the leader sent it again forever (found by the
// simulation soak, seeds 1073556 and 1129535).
TEST(RaftTest, NewReplicaTakesEverySnapshotUntilItsAdditionArrives) {
  TestCluster c(3);
  c.campaign(1);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.propose(1, "a" + std::to_string(i)).ok());
  const Index first = c.raft(1).log().applied();
  ASSERT_TRUE(c.storage(1).create_snapshot(first, c.raft(1).tracker().conf_state(), "first").ok());
  ASSERT_TRUE(c.storage(1).compact(first).ok());
  // n4, created empty, is handed the first snapshot: it leaves n4 out.
  c.add(4, ConfState{});
  ASSERT_TRUE(c.node(4)
                  .step(Message{.type = MessageType::kSnap, .to = 4, .from = 1, .term = c.raft(1).term(),
                                .snapshot = *c.storage(1).snapshot()})
                  .ok());
  c.deliver();
  ASSERT_EQ(c.raft(4).log().committed(), first);
  ASSERT_FALSE(c.raft(4).tracker().is_member(4));
  // The leader moves on and compacts again before it adds n4.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.propose(1, "b" + std::to_string(i)).ok());
  const Index second = c.raft(1).log().applied();
  ASSERT_TRUE(c.storage(1).create_snapshot(second, c.raft(1).tracker().conf_state(), "second").ok());
  ASSERT_TRUE(c.storage(1).compact(second).ok());
  ASSERT_TRUE(c.node(1).propose_conf_change({{{ConfChangeType::kAddLearner, 4}}}).ok());
  c.deliver();
  c.tick_all(5);
  EXPECT_EQ(c.storage(4).snapshot()->data, "second");
  EXPECT_TRUE(c.raft(4).tracker().is_member(4));  // it replayed its own addition
  EXPECT_EQ(c.raft(4).log().committed(), c.raft(1).log().committed());
  ASSERT_TRUE(c.propose(1, "after").ok());
  EXPECT_EQ(c.applied(4).back(), "after");
}

// Raft ids are node ids: a replica deleted from a node and created anew
// there has its predecessor's id, and an acknowledgement of the deleted one
// that arrives late is credited to the new, empty one (here: the leader's
// progress simply keeps the old credit). The newcomer must neither commit
// what it does not have (a heartbeat's commit beyond its log used to stop
// the process) nor stay stuck: the leader forgets the credit and catches it
// up, by heartbeat (first case) or by a rejected append (second).
TEST(RaftTest, ReplicaCreatedAnewUnderItsIdIsCaughtUpNotTrusted) {
  for (bool by_append : {false, true}) {
    SCOPED_TRACE(by_append ? "append" : "heartbeat");
    TestCluster c(3);
    c.campaign(1);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.propose(1, "w" + std::to_string(i)).ok());
    const Index credited = c.raft(1).tracker().progress().at(3).match;
    ASSERT_EQ(credited, c.raft(1).log().last_index());
    c.add(3, ConfState{});  // deleted and created anew: an empty log
    if (by_append) {
      ASSERT_TRUE(c.propose(1, "x").ok());
    } else {
      c.tick_all(3);
    }
    c.tick_all(3);
    ASSERT_TRUE(c.propose(1, "after").ok());
    c.tick_all(2);
    EXPECT_EQ(c.raft(3).log().committed(), c.raft(1).log().committed());
    EXPECT_EQ(c.raft(1).tracker().progress().at(3).match, c.raft(1).log().last_index());
    ASSERT_FALSE(c.applied(3).empty());
    EXPECT_EQ(c.applied(3).back(), "after");
    EXPECT_GE(c.raft(1).credits_forgotten(), 1u);
  }
}

// The same signal from a follower that does have what it was credited
// with (a rejection sent before it caught up, delivered late): the leader
// probes at the credit first, so the follower is back at once, with no
// snapshot, even though the log before the credit is compacted.
TEST(RaftTest, LateRejectionFromACaughtUpFollowerCostsOneProbe) {
  TestCluster c(3);
  c.campaign(1);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.propose(1, "w" + std::to_string(i)).ok());
  const Index applied = c.raft(1).log().applied();
  ASSERT_TRUE(c.storage(1).create_snapshot(applied, c.raft(1).tracker().conf_state(), "image").ok());
  ASSERT_TRUE(c.storage(1).compact(applied).ok());
  const Index credited = c.raft(1).tracker().progress().at(3).match;
  ASSERT_EQ(credited, c.raft(1).log().last_index());
  Message late{.type = MessageType::kAppResp, .to = 1, .from = 3, .term = c.raft(1).term(), .index = credited,
               .reject = true, .reject_hint = 2};
  int snapshots = 0;
  c.set_filter([&](const Message& m) {
    snapshots += m.type == MessageType::kSnap ? 1 : 0;
    return false;
  });
  ASSERT_TRUE(c.node(1).step(late).ok());
  EXPECT_EQ(c.raft(1).credits_forgotten(), 1u);
  c.deliver();
  EXPECT_EQ(snapshots, 0);
  EXPECT_EQ(c.raft(1).tracker().progress().at(3).match, credited);
  EXPECT_EQ(c.raft(1).tracker().progress().at(3).state, ProgressState::kReplicate);
  EXPECT_EQ(c.raft(3).commits_refused(), 0u);
}

// n1 leads and commits ten entries without n3, then snapshots them
// ("image"); returns the snapshot's index.
Index SnapshotWhileNode3IsCutOff(TestCluster& c) {
  c.campaign(1);
  c.isolate(3);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(c.propose(1, "w" + std::to_string(i)).ok());
  const Index applied = c.raft(1).log().applied();
  EXPECT_TRUE(c.storage(1).create_snapshot(applied, c.raft(1).tracker().conf_state(), "image").ok());
  return applied;
}

TEST(RaftTest, LaggingFollowerIsCaughtUpWithASnapshot) {
  TestCluster c(3);
  const Index applied = SnapshotWhileNode3IsCutOff(c);
  ASSERT_TRUE(c.storage(1).compact(applied).ok());
  ASSERT_TRUE(c.propose(1, "after").ok());
  c.heal();
  c.tick_all(3);
  EXPECT_EQ(c.storage(3).snapshot()->data, "image");
  EXPECT_EQ(c.raft(3).log().committed(), c.raft(1).log().committed());
  EXPECT_EQ(c.applied(3), std::vector<std::string>{"after"});  // the rest came in the snapshot
  EXPECT_EQ(c.raft(1).tracker().progress().at(3).state, ProgressState::kReplicate);
}

// A follower that holds the image of a committed state from a leader that
// has since lost leadership takes it by itself (Raft::install_snapshot),
// tells its new leader, and catches up from the new leader's log after it.
TEST(RaftTest, FollowerInstallsACommittedSnapshotFromAnEarlierLeader) {
  TestCluster c(3);
  const Index applied = SnapshotWhileNode3IsCutOff(c);
  const Snapshot image = *c.storage(1).snapshot();
  // n1 is cut off; n2 wins with n3's vote, and nothing n2 replicates
  // reaches n3 yet.
  c.recover(3);
  c.isolate(1);
  c.set_filter([](const Message& m) {
    return m.to == 3 && (m.type == MessageType::kApp || m.type == MessageType::kHeartbeat);
  });
  c.campaign(2);
  ASSERT_EQ(c.raft(2).role(), Role::kLeader);
  ASSERT_TRUE(c.propose(2, "after").ok());
  EXPECT_FALSE(c.node(2).install_snapshot(image));  // a leader never does
  EXPECT_FALSE(c.node(1).install_snapshot(image));  // nor a replica that has it all
  ASSERT_EQ(c.raft(3).role(), Role::kFollower);
  ASSERT_LT(c.raft(3).log().committed(), applied);
  EXPECT_TRUE(c.node(3).install_snapshot(image));
  EXPECT_FALSE(c.node(3).install_snapshot(image));  // taken: no longer ahead of the commit index
  c.deliver();
  EXPECT_EQ(c.storage(3).snapshot()->data, "image");
  EXPECT_EQ(c.raft(3).log().committed(), applied);
  // n2's log has what follows the image: n3 catches up from it.
  c.heal();
  c.isolate(1);
  c.tick_all(3);
  EXPECT_EQ(c.raft(3).log().committed(), c.raft(2).log().committed());
  EXPECT_EQ(c.applied(3), std::vector<std::string>{"after"});  // the rest came in the image
  EXPECT_EQ(c.raft(2).tracker().progress().at(3).state, ProgressState::kReplicate);
}

TEST(RaftTest, NewLeaderHoldsReadsUntilItCommitsInItsTerm) {
  TestCluster c(3);
  c.campaign(1);
  c.set_filter([](const Message& m) { return m.type == MessageType::kAppResp; });
  c.campaign(2);  // term 3: n2 leads, but nothing it sends is acknowledged
  ASSERT_EQ(c.raft(2).role(), Role::kLeader);
  c.node(2).read_index("early");
  c.deliver();
  EXPECT_TRUE(c.read_states(2).empty());
  c.heal();
  c.tick_all(2);
  ASSERT_EQ(c.read_states(2).size(), 1U);
  EXPECT_EQ(c.read_states(2)[0].index, c.raft(2).log().committed());
}

// A lone voter's commit index is not made durable with its entries (a
// commit alone is not synced): after a crash it may lag entries it had
// acknowledged. Its reads wait until an entry of its new term commits.
TEST(RaftTest, LoneVoterAnswersReadsOnlyOnceItsTermCommitted) {
  TestCluster c(1);
  c.campaign(1);
  ASSERT_TRUE(c.propose(1, "a").ok());
  const Index acked = c.raft(1).log().last_index();
  ASSERT_EQ(c.raft(1).log().committed(), acked);
  HardState hs = c.storage(1).hard_state();
  hs.commit = 1;  // the crash lost the commit index, not the entry
  c.storage(1).set_hard_state(hs);
  c.restart(1);
  c.node(1).campaign();
  ASSERT_EQ(c.raft(1).role(), Role::kLeader);
  c.node(1).read_index("after-restart");
  c.deliver();
  ASSERT_EQ(c.read_states(1).size(), 1U);
  EXPECT_GE(c.read_states(1)[0].index, acked);
}

// A ReadIndex that reaches the leader through another follower is answered
// to the replica that asked: its context means nothing anywhere else.
TEST(RaftTest, ForwardedReadIndexIsAnsweredToItsOrigin) {
  TestCluster c(3);
  c.campaign(1);
  ASSERT_TRUE(c.propose(1, "a").ok());
  ASSERT_TRUE(c.node(2).step(Message{.type = MessageType::kReadIndex, .to = 2, .from = 3, .context = "of-3"}).ok());
  c.deliver();
  EXPECT_TRUE(c.read_states(2).empty());
  ASSERT_EQ(c.read_states(3).size(), 1U);
  EXPECT_EQ(c.read_states(3)[0].context, "of-3");
  EXPECT_EQ(c.read_states(3)[0].index, c.raft(1).log().committed());
}

TEST(RaftTest, FollowerReadWithoutLeaderIsDropped) {
  TestCluster c(3);
  c.node(2).read_index("nobody");
  c.deliver();
  EXPECT_TRUE(c.read_states(2).empty());
}

TEST(RaftTest, ConfChangesAreOneAtATime) {
  TestCluster c(3);
  c.campaign(1);
  c.add(4, ConfState{});
  c.isolate(2);
  c.isolate(3);  // nothing commits
  ASSERT_TRUE(c.node(1).propose_conf_change({{{ConfChangeType::kAddLearner, 4}}}).ok());
  EXPECT_EQ(c.node(1).propose_conf_change({{{ConfChangeType::kAddLearner, 5}}}).error,
            ProposeError::kConfChangePending);
}

TEST(RaftTest, LeadershipTransfer) {
  TestCluster c(3);
  c.campaign(1);
  ASSERT_TRUE(c.propose(1, "a").ok());
  c.node(1).transfer_leader(3);
  c.deliver();
  EXPECT_EQ(c.raft(3).role(), Role::kLeader);
  EXPECT_EQ(c.raft(1).lead(), 3U);
}

TEST(RaftTest, ReadIndexOnLeaderAndFollower) {
  TestCluster c(3);
  c.campaign(1);
  ASSERT_TRUE(c.propose(1, "a").ok());
  c.node(1).read_index("r1");
  c.deliver();
  ASSERT_EQ(c.read_states(1).size(), 1U);
  EXPECT_EQ(c.read_states(1)[0].context, "r1");
  EXPECT_EQ(c.read_states(1)[0].index, c.raft(1).log().committed());
  c.node(2).read_index("r2");
  c.deliver();
  ASSERT_EQ(c.read_states(2).size(), 1U);
  EXPECT_EQ(c.read_states(2)[0].index, c.raft(1).log().committed());
  // An isolated leader cannot confirm its leadership: no read state.
  c.isolate(1);
  c.node(1).read_index("r3");
  c.deliver();
  EXPECT_EQ(c.read_states(1).size(), 1U);
}

// Proposals of one round leave as one append per follower, not one each.
TEST(RaftTest, ProposalsOfOneRoundShareOneAppendPerFollower) {
  TestCluster c(3);
  c.campaign(1);
  std::vector<Message> apps;
  c.set_filter([&](const Message& m) {
    if (m.type == MessageType::kApp && m.from == 1) apps.push_back(m);
    return false;
  });
  for (const char* d : {"a", "b", "c"}) ASSERT_TRUE(c.node(1).propose(d).ok());
  c.deliver();
  std::map<NodeId, std::vector<size_t>> sizes;  // entries per append, per follower
  for (const Message& m : apps) sizes[m.to].push_back(m.entries.size());
  EXPECT_EQ(sizes[2].front(), 3U);
  EXPECT_EQ(sizes[3].front(), 3U);
  for (NodeId id : {1, 2, 3}) EXPECT_EQ(c.applied(id), (std::vector<std::string>{"a", "b", "c"}));
}

// skip_bcast_commit: a leader whose commit index moves sends no empty append
// for it; followers learn it from the next append or heartbeat. Membership
// changes are announced at once, and a follower's read waits for nothing.
TEST(RaftTest, SkipBcastCommitTellsFollowersWithTheNextMessage) {
  TestCluster c(3, [](Config& cfg) { cfg.skip_bcast_commit = true; });
  c.campaign(1);
  c.tick_all(1);  // the new term's entry is known committed everywhere
  std::vector<Message> apps;
  c.set_filter([&](const Message& m) {
    if (m.type == MessageType::kApp && m.from == 1) apps.push_back(m);
    return false;
  });
  ASSERT_TRUE(c.propose(1, "x").ok());
  const Index committed = c.raft(1).log().committed();
  EXPECT_EQ(c.applied(1), std::vector<std::string>{"x"});
  for (const Message& m : apps) EXPECT_FALSE(m.entries.empty()) << "an append only to say the commit index";
  for (NodeId id : {2, 3}) {
    EXPECT_LT(c.raft(id).log().committed(), committed);
    EXPECT_TRUE(c.applied(id).empty());
  }
  // The next proposal's append carries the first one's commit.
  ASSERT_TRUE(c.propose(1, "y").ok());
  for (NodeId id : {2, 3}) EXPECT_EQ(c.applied(id), std::vector<std::string>{"x"});
  // A heartbeat carries the rest.
  c.tick(1);
  for (NodeId id : {2, 3}) EXPECT_EQ(c.applied(id), (std::vector<std::string>{"x", "y"}));
  // A follower's ReadIndex: the follower knows the index it is given as
  // committed by the time the answer arrives.
  ASSERT_TRUE(c.propose(1, "z").ok());
  c.node(2).read_index("r");
  c.deliver();
  ASSERT_EQ(c.read_states(2).size(), 1U);
  EXPECT_EQ(c.read_states(2)[0].index, c.raft(1).log().committed());
  EXPECT_GE(c.raft(2).log().committed(), c.read_states(2)[0].index);
  // A membership change is announced as soon as it commits.
  c.add(4, ConfState{});
  ASSERT_TRUE(c.node(1).propose_conf_change({{{ConfChangeType::kAddLearner, 4}}}).ok());
  c.deliver();
  for (NodeId id : {2, 3}) EXPECT_EQ(c.raft(id).log().committed(), c.raft(1).log().committed());
}

// Without it (the default), the commit is told at once.
TEST(RaftTest, CommitIsBroadcastByDefault) {
  TestCluster c(3);
  c.campaign(1);
  ASSERT_TRUE(c.propose(1, "x").ok());
  for (NodeId id : {2, 3}) EXPECT_EQ(c.applied(id), std::vector<std::string>{"x"});
}

TEST(RaftTest, LeaseReadAnswersWithoutARoundTripAndExpires) {
  TestCluster c(3, [](Config& cfg) {
    cfg.check_quorum = true;
    cfg.read_only_option = ReadOnlyOption::kLeaseBased;
  });
  c.tick_all(10);  // the start-up guard ends
  c.campaign(1);
  ASSERT_EQ(c.raft(1).role(), Role::kLeader);
  c.tick_all(1);  // heartbeats acknowledged: the lease starts
  EXPECT_TRUE(c.raft(1).lease_valid());
  c.isolate(1);
  c.node(1).read_index("lease");
  c.deliver();
  EXPECT_EQ(c.read_states(1).size(), 1U);  // served from the lease
  c.tick(1, 9);
  EXPECT_FALSE(c.raft(1).lease_valid());  // expired before anyone may elect
  c.node(1).read_index("late");
  c.deliver();
  EXPECT_EQ(c.read_states(1).size(), 1U);
}

TEST(RaftTest, UncommittedBytesAreBounded) {
  TestCluster c(3, [](Config& cfg) { cfg.max_uncommitted_entries_size = 100; });
  c.campaign(1);
  c.isolate(2);
  c.isolate(3);
  ASSERT_TRUE(c.propose(1, std::string(60, 'x')).ok());
  EXPECT_EQ(c.propose(1, std::string(60, 'y')).error, ProposeError::kTooManyUncommitted);
  c.heal();
  c.tick_all(2);
  EXPECT_TRUE(c.propose(1, std::string(60, 'z')).ok());  // room again once committed
}

TEST(RaftTest, CheckQuorumLeaderStepsDown) {
  TestCluster c(3, [](Config& cfg) { cfg.check_quorum = true; });
  c.campaign(1);
  c.isolate(1);
  c.tick(1, 10);
  EXPECT_EQ(c.raft(1).role(), Role::kLeader);  // peers were active in the last period
  c.tick(1, 10);
  EXPECT_EQ(c.raft(1).role(), Role::kFollower);
}

TEST(RaftTest, FlowControlBoundsInflightMessages) {
  TestCluster c(3, [](Config& cfg) {
    cfg.max_inflight_msgs = 2;
    cfg.max_size_per_msg = 1;
  });
  c.campaign(1);
  c.isolate(2);
  c.isolate(3);
  int apps = 0;
  for (int i = 0; i < 10; ++i) (void)c.node(1).propose("e" + std::to_string(i));
  while (c.node(1).has_ready()) {
    Ready rd = c.node(1).ready();
    for (const Message& m : rd.messages) apps += (m.type == MessageType::kApp && m.to == 2) ? 1 : 0;
    c.node(1).advance();
  }
  EXPECT_LE(apps, 2);
}

TEST(RaftTest, ReadyDefersVotesAndAcksUntilDurable) {
  TestCluster c(3);
  c.node(1).campaign();
  Ready rd = c.node(1).ready();
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_TRUE(rd.messages.empty());
  ASSERT_EQ(rd.messages_after_persist.size(), 2U);
  EXPECT_EQ(rd.messages_after_persist[0].type, MessageType::kVote);
  c.node(1).advance();
}

TEST(RaftTest, ConfigValidation) {
  Config cfg;
  EXPECT_FALSE(cfg.validate().ok());  // id 0
  cfg.id = 1;
  EXPECT_TRUE(cfg.validate().ok());
  cfg.read_only_option = ReadOnlyOption::kLeaseBased;
  cfg.check_quorum = false;
  EXPECT_FALSE(cfg.validate().ok());
  cfg.check_quorum = true;
  cfg.heartbeat_tick = 10;
  EXPECT_FALSE(cfg.validate().ok());
}

}  // namespace
}  // namespace shoal::raft
