#include "raft/raw_node.h"

#include <gtest/gtest.h>

namespace shoal::raft {
namespace {

std::unique_ptr<MemoryStorage> bootstrapped(std::vector<NodeId> voters) {
  auto s = std::make_unique<MemoryStorage>();
  SHOAL_CHECK(s->apply_snapshot(bootstrap_snapshot(ConfState{voters, {}, {}}, "")).ok());
  s->set_hard_state(HardState{1, kNoNode, 1});
  return s;
}

Config config(NodeId id) {
  Config c;
  c.id = id;
  return c;
}

Config lone_config(NodeId id) {
  Config c = config(id);
  c.commit_lone_appends = true;
  return c;
}

TEST(RawNodeTest, RejectsBadConfigAndBadMessages) {
  auto s = bootstrapped({1});
  EXPECT_FALSE(RawNode::create(Config{}, s.get()).ok());
  auto n = RawNode::create(config(1), s.get());
  ASSERT_TRUE(n.ok());
  EXPECT_FALSE((*n)->step(Message{.type = MessageType::kHup}).ok());
  EXPECT_FALSE((*n)->step(Message{.type = MessageType::kAppResp, .from = 9, .term = 1}).ok());
}

// A single voter: campaign, persist, commit, apply: the whole Ready loop.
TEST(RawNodeTest, SingleNodeReadyLoop) {
  auto s = bootstrapped({1});
  auto created = RawNode::create(config(1), s.get());
  ASSERT_TRUE(created.ok());
  RawNode& n = **created;
  n.campaign();
  ASSERT_EQ(n.raft().role(), Role::kLeader);
  ASSERT_TRUE(n.propose("hello").ok());
  std::vector<std::string> applied;
  for (int round = 0; round < 5 && n.has_ready(); ++round) {
    Ready rd = n.ready();
    ASSERT_TRUE(s->append(rd.entries).ok());
    if (rd.hard_state) s->set_hard_state(*rd.hard_state);
    for (const Entry& e : rd.committed_entries) {
      // Never apply an entry before it is durable.
      ASSERT_LE(e.index, s->last_index());
      if (!e.data.empty()) applied.push_back(e.data);
    }
    n.advance();
  }
  EXPECT_EQ(applied, std::vector<std::string>{"hello"});
  EXPECT_EQ(s->hard_state().commit, 3U);
  EXPECT_FALSE(n.has_ready());
  // A read on a single voter is answered at once.
  n.read_index("ctx");
  Ready rd = n.ready();
  ASSERT_EQ(rd.read_states.size(), 1U);
  EXPECT_EQ(rd.read_states[0].index, 3U);
  n.advance();
}

TEST(RawNodeTest, LeaderDoesNotCountItselfBeforeItsEntriesAreDurable) {
  auto s = bootstrapped({1});
  auto created = RawNode::create(config(1), s.get());
  ASSERT_TRUE(created.ok());
  RawNode& n = **created;
  n.campaign();
  Ready rd = n.ready();
  ASSERT_EQ(rd.entries.size(), 1U);
  EXPECT_EQ(n.raft().log().committed(), 1U);  // not yet durable: not committed
  ASSERT_TRUE(s->append(rd.entries).ok());
  n.advance();
  EXPECT_EQ(n.raft().log().committed(), 2U);
}

// commit_lone_appends: a lone leader hands its entries out to be stored and
// applied in the same Ready, one Ready a proposal.
TEST(RawNodeTest, LoneLeaderCommitsItsAppendsInTheSameReady) {
  auto s = bootstrapped({1});
  auto created = RawNode::create(lone_config(1), s.get());
  ASSERT_TRUE(created.ok());
  RawNode& n = **created;
  n.campaign();
  ASSERT_EQ(n.raft().role(), Role::kLeader);
  EXPECT_EQ(n.raft().log().committed(), 2U);  // the leader's empty entry
  for (std::string v : {"a", "b"}) {
    ASSERT_TRUE(n.propose(v).ok());
    EXPECT_EQ(n.raft().log().committed(), n.raft().log().last_index());
  }
  Ready rd = n.ready();
  ASSERT_EQ(rd.entries.size(), 3U);
  ASSERT_EQ(rd.committed_entries.size(), 3U);
  EXPECT_EQ(rd.committed_entries.back().data, "b");
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->commit, 4U);
  EXPECT_TRUE(rd.messages.empty());
  ASSERT_TRUE(s->append(rd.entries).ok());
  s->set_hard_state(*rd.hard_state);
  n.advance();
  EXPECT_EQ(n.raft().log().applied(), 4U);
  EXPECT_FALSE(n.has_ready());  // no second round to apply them
}

// Not alone (a learner is being caught up): entries commit once persisted,
// as without the option; the learner is never told of an unstored entry.
TEST(RawNodeTest, LeaderWithALearnerWaitsForItsOwnPersistence) {
  auto s = std::make_unique<MemoryStorage>();
  ASSERT_TRUE(s->apply_snapshot(bootstrap_snapshot(ConfState{{1}, {}, {2}}, "")).ok());
  s->set_hard_state(HardState{1, kNoNode, 1});
  auto created = RawNode::create(lone_config(1), s.get());
  ASSERT_TRUE(created.ok());
  RawNode& n = **created;
  n.campaign();
  ASSERT_EQ(n.raft().role(), Role::kLeader);
  ASSERT_TRUE(n.propose("a").ok());
  EXPECT_EQ(n.raft().log().committed(), 1U);
  Ready rd = n.ready();
  EXPECT_TRUE(rd.committed_entries.empty());
  for (const Message& m : rd.messages) EXPECT_LE(m.commit, 1U);
  ASSERT_TRUE(s->append(rd.entries).ok());
  n.advance();
  EXPECT_EQ(n.raft().log().committed(), 3U);
}

// A lone leader gains a learner in the Ready whose entries it committed
// before storing them: while they are not stored, no message tells the
// learner they are committed (a crash of the leader could replace them).
TEST(RawNodeTest, LoneLeaderTellsANewMemberOnlyOfStoredCommits) {
  auto s = bootstrapped({1});
  auto created = RawNode::create(lone_config(1), s.get());
  ASSERT_TRUE(created.ok());
  RawNode& n = **created;
  n.campaign();
  Ready first = n.ready();
  ASSERT_TRUE(s->append(first.entries).ok());
  n.advance();
  const Index stored = s->last_index();
  ASSERT_TRUE(n.propose("a").ok());
  ConfChange cc{{ConfChangeSingle{ConfChangeType::kAddLearner, 2}}};
  ASSERT_TRUE(n.propose_conf_change(cc).ok());
  Ready rd = n.ready();
  ASSERT_EQ(rd.committed_entries.size(), 2U);
  ASSERT_EQ(rd.committed_entries.back().type, EntryType::kConfChange);
  n.apply_conf_change(cc);  // applied before the Ready's write is done
  // The learner answers a heartbeat: the leader sends it entries at once.
  ASSERT_TRUE(n.step(Message{.type = MessageType::kHeartbeatResp, .from = 2, .term = n.raft().term()}).ok());
  ASSERT_TRUE(n.step(Message{.type = MessageType::kAppResp, .from = 2, .term = n.raft().term(), .index = 0,
                             .reject = true, .reject_hint = 0})
                  .ok());
  int to_learner = 0;
  for (const Message& m : n.raft().msgs()) {
    if (m.to != 2) continue;
    ++to_learner;
    EXPECT_LE(m.commit, stored) << "message type " << static_cast<int>(m.type);
  }
  EXPECT_GT(to_learner, 0);
  ASSERT_TRUE(s->append(rd.entries).ok());
  n.advance();
  // Stored now: once the learner holds the entries, a heartbeat tells it.
  ASSERT_TRUE(n.step(Message{.type = MessageType::kAppResp, .from = 2, .term = n.raft().term(),
                             .index = n.raft().log().last_index()})
                  .ok());
  n.tick();
  Ready next = n.ready();
  Index told = 0;
  for (const Message& m : next.messages) {
    if (m.to == 2) told = std::max(told, m.commit);
  }
  EXPECT_EQ(told, n.raft().log().committed());
}

TEST(RawNodeTest, RestartRecoversDurableState) {
  auto s = bootstrapped({1});
  {
    auto n = RawNode::create(config(1), s.get()).value();
    n->campaign();
    for (int i = 0; i < 3 && n->has_ready(); ++i) {
      Ready rd = n->ready();
      ASSERT_TRUE(s->append(rd.entries).ok());
      if (rd.hard_state) s->set_hard_state(*rd.hard_state);
      n->advance();
    }
  }
  auto n = RawNode::create(config(1), s.get()).value();
  EXPECT_EQ(n->status().hard_state.term, 2U);
  EXPECT_EQ(n->status().hard_state.vote, 1U);
  EXPECT_EQ(n->raft().log().committed(), 2U);
  EXPECT_EQ(n->raft().role(), Role::kFollower);
}

}  // namespace
}  // namespace shoal::raft
