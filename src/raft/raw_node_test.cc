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


// A Ready handled by a plain host: written, synced, advanced.
void Persist(RawNode& n, MemoryStorage& s, const Ready& rd) {
  if (rd.snapshot) SHOAL_CHECK(s.apply_snapshot(*rd.snapshot).ok());
  SHOAL_CHECK(s.append(rd.entries).ok());
  if (rd.hard_state) s.set_hard_state(*rd.hard_state);
  (void)n;
}

// A leader whose Ready holds only its own entries to store may advance it
// once written; it counts those entries toward commitment only once
// synced() reports them, and a Ready with nothing to store advanced
// meanwhile does not count them either.
TEST(RawNodeTest, LoneLeaderCountsAnUnsyncedWriteOnlyOnceSynced) {
  auto s = bootstrapped({1});
  auto created = RawNode::create(config(1), s.get());
  ASSERT_TRUE(created.ok());
  RawNode& n = **created;
  n.campaign();
  ASSERT_EQ(n.raft().role(), Role::kLeader);
  Ready rd = n.ready();
  EXPECT_FALSE(n.may_advance_unsynced());  // a new term and vote: synced first
  Persist(n, *s, rd);
  n.advance();
  while (n.has_ready()) {
    rd = n.ready();
    Persist(n, *s, rd);
    n.advance();
  }
  ASSERT_EQ(n.raft().log().committed(), 2U);
  const Term term = n.raft().term();

  ASSERT_TRUE(n.propose("a").ok());
  rd = n.ready();
  ASSERT_EQ(rd.entries.size(), 1U);
  ASSERT_TRUE(n.may_advance_unsynced());
  Persist(n, *s, rd);
  n.advance_unsynced();
  EXPECT_EQ(n.raft().log().committed(), 2U);
  ASSERT_TRUE(n.propose("b").ok());
  rd = n.ready();
  ASSERT_EQ(rd.entries.size(), 1U);
  EXPECT_EQ(rd.entries[0].index, 4U);  // "a" is not handed again
  Persist(n, *s, rd);
  n.advance_unsynced();
  EXPECT_EQ(n.raft().log().committed(), 2U);

  n.synced(3, term);
  EXPECT_EQ(n.raft().log().committed(), 3U);
  rd = n.ready();
  EXPECT_TRUE(rd.entries.empty());
  ASSERT_EQ(rd.committed_entries.size(), 1U);
  EXPECT_EQ(rd.committed_entries[0].data, "a");
  Persist(n, *s, rd);
  n.advance();  // nothing synced: "b" still waits for its report
  EXPECT_EQ(n.raft().log().committed(), 3U);
  n.synced(4, term + 1);  // not the entry there: ignored
  EXPECT_EQ(n.raft().log().committed(), 3U);
  n.synced(4, term);
  EXPECT_EQ(n.raft().log().committed(), 4U);
}

// A follower's Ready (an acknowledgement to send after it) and a
// candidate's (a new term and vote) wait for the disk.
TEST(RawNodeTest, OnlyALeadersOwnEntriesMayBeAdvancedUnsynced) {
  auto s = bootstrapped({1, 2, 3});
  auto created = RawNode::create(config(2), s.get());
  ASSERT_TRUE(created.ok());
  RawNode& n = **created;
  ASSERT_TRUE(n.step(Message{.type = MessageType::kApp, .to = 2, .from = 1, .term = 2, .log_term = 1, .index = 1,
                             .entries = {Entry{2, 2, EntryType::kNormal, "x"}}, .commit = 1})
                  .ok());
  Ready rd = n.ready();
  ASSERT_EQ(rd.entries.size(), 1U);
  ASSERT_FALSE(rd.messages_after_persist.empty());
  EXPECT_FALSE(n.may_advance_unsynced());
  Persist(n, *s, rd);
  n.advance();
  n.campaign();
  rd = n.ready();
  EXPECT_FALSE(n.may_advance_unsynced());
  Persist(n, *s, rd);
  n.advance();
}

// Three voters: a leader that has not synced its entries commits them on
// its two followers' acknowledgements, not on one; and once it loses its
// term and wins another, it counts as its own only what was synced.
TEST(RawNodeTest, LeaderWritesInParallelWithItsFollowers) {
  std::map<NodeId, std::unique_ptr<MemoryStorage>> st;
  std::map<NodeId, std::unique_ptr<RawNode>> nodes;
  for (NodeId id : {1, 2, 3}) {
    st[id] = bootstrapped({1, 2, 3});
    Config c = config(id);
    c.pre_vote = false;
    c.check_quorum = false;
    auto created = RawNode::create(c, st[id].get());
    ASSERT_TRUE(created.ok());
    nodes[id] = std::move(*created);
  }
  RawNode& leader = *nodes[1];
  MemoryStorage& ls = *st[1];
  std::vector<Message> net;
  // Followers (and the leader, when `sync_leader`) store, sync and advance
  // every Ready; messages to `cut` are dropped.
  auto drive = [&](NodeId id) {
    RawNode& n = *nodes[id];
    while (n.has_ready()) {
      Ready rd = n.ready();
      Persist(n, *st[id], rd);
      for (auto& m : rd.messages) net.push_back(m);
      for (auto& m : rd.messages_after_persist) net.push_back(m);
      n.advance();
    }
  };
  auto deliver = [&](NodeId only_to) {
    std::vector<Message> now;
    now.swap(net);
    for (auto& m : now) {
      if (only_to != 0 && m.to != only_to) {
        net.push_back(m);
        continue;
      }
      ASSERT_TRUE(nodes[m.to]->step(m).ok());
    }
  };
  leader.campaign();
  for (int i = 0; i < 10; ++i) {
    for (NodeId id : {1, 2, 3}) drive(id);
    deliver(0);
  }
  ASSERT_EQ(leader.raft().role(), Role::kLeader);
  const Term term = leader.raft().term();
  const Index k = leader.raft().log().last_index() + 1;
  ASSERT_EQ(leader.raft().log().committed(), k - 1);

  // The leader's write of k is not synced; one follower stores it.
  ASSERT_TRUE(leader.propose("x").ok());
  Ready rd = leader.ready();
  ASSERT_TRUE(leader.may_advance_unsynced());
  Persist(leader, ls, rd);
  for (auto& m : rd.messages) net.push_back(m);
  leader.advance_unsynced();
  deliver(2);
  drive(2);
  deliver(1);
  EXPECT_EQ(leader.raft().log().committed(), k - 1);
  // The second follower stores it too: a majority has it on disk.
  deliver(3);
  drive(3);
  deliver(1);
  EXPECT_EQ(leader.raft().log().committed(), k);
  drive(1);
  deliver(0);
  for (NodeId id : {2, 3}) drive(id);
  deliver(0);

  // k + 1: one follower and the leader's own sync make the majority.
  ASSERT_TRUE(leader.propose("y").ok());
  rd = leader.ready();
  ASSERT_TRUE(leader.may_advance_unsynced());
  Persist(leader, ls, rd);
  for (auto& m : rd.messages) net.push_back(m);
  leader.advance_unsynced();
  deliver(2);
  drive(2);
  deliver(1);
  EXPECT_EQ(leader.raft().log().committed(), k);
  leader.synced(k + 1, term);
  EXPECT_EQ(leader.raft().log().committed(), k + 1);
  net.clear();

  // k + 2 is written, never synced, and reaches no follower; the leader
  // loses its term and wins the next one before any Ready of it is synced:
  // it counts only k + 1 as its own.
  ASSERT_TRUE(leader.propose("z").ok());
  rd = leader.ready();
  ASSERT_TRUE(leader.may_advance_unsynced());
  Persist(leader, ls, rd);
  leader.advance_unsynced();
  ASSERT_TRUE(leader.step(Message{.type = MessageType::kHeartbeat, .to = 1, .from = 2, .term = term + 1}).ok());
  ASSERT_EQ(leader.raft().role(), Role::kFollower);
  leader.campaign();
  for (NodeId from : {2, 3}) {
    ASSERT_TRUE(leader.step(Message{.type = MessageType::kVoteResp, .to = 1, .from = from, .term = term + 2}).ok());
  }
  ASSERT_EQ(leader.raft().role(), Role::kLeader);
  EXPECT_EQ(leader.raft().tracker().progress().at(1).match, k + 1);
  EXPECT_EQ(leader.raft().log().last_index(), k + 3);  // z, and the new term's empty entry
}

}  // namespace
}  // namespace shoal::raft
