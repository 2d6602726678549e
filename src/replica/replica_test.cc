#include "replica/replica.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <set>

#include "common/member_id.h"
#include "kv/commands.h"
#include "replica/write_hints.h"
#include "storage/fault_engine.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace shoal::replica {
namespace {

const kv::CommandSpec& Spec(std::string_view name) {
  for (const auto& s : kv::DataCommands()) {
    if (s.name == name) return s;
  }
  ADD_FAILURE() << "no command " << name;
  return kv::DataCommands()[0];
}

// Any write command as a one-entry batch.
std::string WriteBatchOf(std::vector<std::string> words) {
  const kv::CommandSpec& spec = Spec(words[0]);
  kv::Entry e;
  e.op = spec.op;
  e.now_ms = 1000;
  static kv::Limits limits;
  std::vector<std::string_view> args(words.begin(), words.end());
  std::string err;
  resp::Writer w(&err, 2);
  kv::PrepareContext ctx{0, e.now_ms, &limits};
  if (spec.prepare) {
    EXPECT_TRUE(spec.prepare(ctx, args, &e, &w)) << err;
  } else {
    e.args.assign(words.begin() + 1, words.end());
  }
  return EncodeKvBatch({e}, 2);
}

// A SET as a one-entry write batch.
std::string SetBatch(const std::string& key, const std::string& value) { return WriteBatchOf({"set", key, value}); }

// One node: an engine, a shard and its replica; after a split (with a
// splitter), the child's shard and replica beside them.
struct TestNode {
  std::filesystem::path dir;
  std::unique_ptr<storage::Engine> disk;   // under `engine` when it is a FaultEngine
  storage::FaultEngine* faults = nullptr;
  std::unique_ptr<storage::Engine> engine;
  std::unique_ptr<kv::Shard> shard;
  std::unique_ptr<Replica> replica;
  kv::Limits limits;
  std::unique_ptr<Splitter> splitter;
  std::unique_ptr<kv::Shard> child_shard;
  std::unique_ptr<Replica> child;
  uint64_t split_index = 0;  // the parent's applied index when the child was made
  int splits_staged = 0;
};

// Makes a split's child on one test node as the cluster layer does: its
// Raft state and shard records staged with the parent's apply
// (StageSplitChild), then a replica of it opened on the same engine.
class TestSplitter final : public Splitter {
 public:
  explicit TestSplitter(TestNode* node) : node_(node) {}
  uint64_t child_recovery = 0;  // passed to StageSplitChild
  bool StageSplit(Replica& parent, const SplitCommand& split, const raft::ConfState& conf, uint64_t index,
                  storage::WriteBatch& batch) override {
    ++node_->splits_staged;
    kv::Shard* shard = static_cast<KvStateMachine&>(parent.state_machine()).shard();
    child_end_ = shard->slot_end();
    Status s = StageSplitChild(node_->engine.get(), *shard, split, conf, index, batch, child_recovery);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return s.ok();
  }
  void FinishSplit(Replica& parent, const SplitCommand& split) override {
    node_->split_index = parent.state_machine().applied_index();
    node_->child_shard = std::make_unique<kv::Shard>(node_->engine.get(), static_cast<uint32_t>(split.child),
                                                     split.slot, child_end_);
    ASSERT_TRUE(node_->child_shard->Load().ok());
    ReplicaOptions ro;
    ro.group = split.child;
    ro.node_id = parent.node_id();
    auto r = Replica::Open(node_->engine.get(), ro,
                           std::make_unique<KvStateMachine>(node_->child_shard.get(), &node_->limits));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    node_->child = std::move(r).value();
  }
  bool ClaimImage(Replica& r, uint16_t begin, uint16_t end) override {
    if (refuse_images) {
      ++images_refused;
      return false;
    }
    claims[r.group()] = {begin, end};
    return true;
  }
  void ReleaseImage(Replica& r) override { claims.erase(r.group()); }

  bool refuse_images = false;  // as a node whose other replica holds the image's slots
  int images_refused = 0;
  std::map<uint64_t, std::pair<uint16_t, uint16_t>> claims;  // group -> slots claimed for an image

 private:
  TestNode* node_;
  uint16_t child_end_ = 0;
};

// A key-value state machine that, like the metadata's, keeps its state when
// its replica is started over for a recovery (StageDestroy does nothing).
class KeepingStateMachine final : public StateMachine {
 public:
  KeepingStateMachine(kv::Shard* shard, const kv::Limits* limits) : kv_(shard, limits) {}
  uint64_t applied_index() const override { return kv_.applied_index(); }
  void Apply(const raft::Entry& e, std::string* reply) override { kv_.Apply(e, reply); }
  void StageApplied(uint64_t index, storage::WriteBatch& batch) override { kv_.StageApplied(index, batch); }
  Result<std::string> Export() override { return kv_.Export(); }
  Status StageImport(std::string_view image, uint64_t index, storage::WriteBatch& batch,
                     const kv::Shard::ImportMarker& marker) override {
    return kv_.StageImport(image, index, batch, marker);
  }
  Status ResumeImport(uint64_t index, storage::WriteBatch& batch) override { return kv_.ResumeImport(index, batch); }
  void FinishImport() override { kv_.FinishImport(); }
  Status StageDestroy(storage::WriteBatch&) override { return Status::Ok(); }

 private:
  KvStateMachine kv_;
};

// Three (or more) replicas of group 7, driven by hand: every Ready is
// written, then its messages delivered, until nothing moves.
class ReplicaCluster : public ::testing::Test {
 protected:
  void TearDown() override {
    for (auto& n : nodes_) {
      n->child.reset();
      n->child_shard.reset();
      n->replica.reset();
      n->shard.reset();
      n->engine.reset();
      n->disk.reset();
      std::filesystem::remove_all(n->dir);
    }
  }

  // with_splitter: the node makes split children (TestSplitter); faulty: its
  // store is seen through a storage::FaultEngine (TestNode::faults).
  TestNode& AddNode(raft::NodeId id, std::vector<raft::NodeId> founders, uint64_t compact = 4096,
                    bool with_splitter = false, bool faulty = false, bool keeps_state = false) {
    auto n = std::make_unique<TestNode>();
    n->dir = std::filesystem::temp_directory_path() /
             ("shoal_replica_test_" + std::to_string(::getpid()) + "_" + std::to_string(id));
    std::filesystem::remove_all(n->dir);
    n->engine = std::move(storage::Engine::Open({.dir = n->dir.string(), .memory_budget_bytes = 32 << 20}).value());
    if (faulty) {
      n->disk = std::move(n->engine);
      auto layer = std::make_unique<storage::FaultEngine>(n->disk.get());
      n->faults = layer.get();
      n->engine = std::move(layer);
    }
    n->shard = std::make_unique<kv::Shard>(n->engine.get(), 7, 0, storage::kSlotCount);
    EXPECT_TRUE(n->shard->Load().ok());
    ReplicaOptions ro;
    ro.group = 7;
    ro.node_id = id;
    ro.bootstrap_voters = std::move(founders);
    ro.compact_entries = compact;
    if (with_splitter) {
      n->splitter = std::make_unique<TestSplitter>(n.get());
      ro.splitter = n->splitter.get();
    }
    std::unique_ptr<StateMachine> sm;
    if (keeps_state) {
      sm = std::make_unique<KeepingStateMachine>(n->shard.get(), &n->limits);
    } else {
      sm = std::make_unique<KvStateMachine>(n->shard.get(), &n->limits);
    }
    auto r = Replica::Open(n->engine.get(), ro, std::move(sm));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    n->replica = std::move(r).value();
    ids_.push_back(id);
    nodes_.push_back(std::move(n));
    return *nodes_.back();
  }

  Replica& R(size_t i) {
    SHOAL_CHECK(i < nodes_.size());
    return *nodes_[i]->replica;
  }

  // Nodes 1-3 (compacting every 8 entries): k0 is written everywhere, then
  // node 3, cut off, misses k1..k40 and the leader (not node 3) compacts
  // its log past them: node 3 comes back to a snapshot.
  void LeaveNode3BehindACompactedLog() {
    TickAll(60);
    if (R(2).is_leader()) {
      R(2).TransferLeader(1);
      TickAll(20);
    }
    size_t leader = AwaitLeader();
    ASSERT_NE(leader, SIZE_MAX);
    ASSERT_NE(leader, 2u);
    ASSERT_EQ(Write(R(leader), SetBatch("k0", "0")), "+OK\r\n");
    TickAll(1);  // the followers learn k0 is committed (the next heartbeat) and apply it
    down_.insert(3);
    for (int i = 1; i <= 40; ++i) {
      ASSERT_EQ(Write(R(leader), SetBatch("k" + std::to_string(i), std::to_string(i))), "+OK\r\n");
    }
    ASSERT_GT(R(leader).store().first_index(), R(2).store().last_index() + 1);
  }

  // The replicas of node i: its parent's and, after a split, its child's.
  std::vector<Replica*> Replicas(size_t i) {
    std::vector<Replica*> out = {nodes_[i]->replica.get()};
    if (nodes_[i]->child) out.push_back(nodes_[i]->child.get());
    return out;
  }

  // Moves everything until quiet (bounded).
  void Pump(int rounds = 200) {
    for (int round = 0; round < rounds; ++round) {
      std::vector<std::pair<uint64_t, raft::Message>> inflight;  // by group
      bool any = false;
      for (size_t i = 0; i < nodes_.size(); ++i) {
        auto& n = nodes_[i];
        if (down_.contains(n->replica->node_id())) continue;
        for (Replica* r : Replicas(i)) {
          auto batch = n->engine->NewBatch();
          std::vector<raft::Message> out;
          bool needs_sync = false;
          if (!r->BeginReady(*batch, &out, &needs_sync)) continue;
          any = true;
          if (batch->Count() > 0) {
            ASSERT_TRUE(n->engine->Write(*batch).ok());
          }
          r->ApplyReady(now_);
          r->FinishReady(&out, now_);
          for (auto& m : out) inflight.emplace_back(r->group(), std::move(m));
        }
      }
      for (auto& [group, m] : inflight) {
        for (size_t i = 0; i < ids_.size(); ++i) {
          if (ids_[i] != m.to || down_.contains(m.to) || down_.contains(m.from)) continue;
          for (Replica* r : Replicas(i)) {
            if (r->group() == group) r->Step(m, now_);
          }
        }
      }
      if (!any && inflight.empty()) return;
    }
  }

  void TickAll(int ticks) {
    for (int t = 0; t < ticks; ++t) {
      now_ += 50'000;
      for (size_t i = 0; i < nodes_.size(); ++i) {
        if (down_.contains(ids_[i])) continue;
        for (Replica* r : Replicas(i)) r->Tick(now_);
      }
      Pump();
    }
  }

  std::string Get(size_t i, const std::string& key) {
    std::string raw;
    Status s = nodes_[i]->engine->Get(storage::Cf::kData, storage::DataKey(0, key), &raw);
    if (!s.ok()) return "<none>";
    kv::Value v;
    EXPECT_TRUE(kv::DecodeValue(raw, &v));
    return std::string(v.payload);
  }

  // Proposes a write to `r` and pumps until it is applied; its reply, or
  // why it was not.
  std::string Write(Replica& r, std::string data) {
    std::string reply = "<no answer>";
    auto done = [&](bool ok, std::string out) { reply = ok ? out : "refused " + out; };
    auto p = r.Propose(std::move(data), done, now_);
    if (!p.ok()) return std::string("not proposed: ") + raft::to_string(p.error);
    Pump();
    return reply;
  }

  size_t LeaderIndex() {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (R(i).is_leader()) return i;
    }
    return SIZE_MAX;
  }
  // The leader, ticking on (at most 200 ticks) while a split vote or an
  // unlucky election timeout has left none: elections are randomized.
  size_t AwaitLeader() {
    for (int t = 0; t < 200 && LeaderIndex() == SIZE_MAX; ++t) TickAll(1);
    return LeaderIndex();
  }
  // Nodes 1-3, founders of the group, with a leader: its index (SIZE_MAX
  // if none was elected).
  size_t ThreeNodesWithALeader() {
    for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
    TickAll(60);
    return AwaitLeader();
  }
  // Moves the leadership to node index 0 (at most 5 transfers; an election
  // may leave no leader for a moment, so each try awaits one first).
  void MakeNode0Lead() {
    for (int i = 0; i < 5 && !R(0).is_leader(); ++i) {
      size_t leader = AwaitLeader();
      if (leader == SIZE_MAX || leader == 0) continue;
      R(leader).TransferLeader(1);
      TickAll(10);
    }
  }

  // Nodes 2 and 3 die for good; node 1, forced to be the only voter
  // (unsafe recovery 1), leads alone.
  void LoseNodes2And3AndForceNode1() {
    down_ = {2, 3};
    TickAll(80);
    auto forced = R(0).ForceSoleVoter(1);
    ASSERT_TRUE(forced.ok() && *forced);
    TickAll(3);
    ASSERT_TRUE(R(0).is_leader());
  }

  int64_t now_ = 1'000'000;
  std::vector<raft::NodeId> ids_;
  std::set<raft::NodeId> down_;  // nodes whose process is "dead"
  std::vector<std::unique_ptr<TestNode>> nodes_;
};

TEST_F(ReplicaCluster, ReplicatesAndAnswersTheProposer) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(60);
  size_t leader = AwaitLeader();
  ASSERT_NE(leader, SIZE_MAX);
  std::string reply;
  bool applied = false;
  auto p = R(leader).Propose(SetBatch("k", "v1"), [&](bool ok, std::string r) {
    applied = ok;
    reply = std::move(r);
  }, now_);
  ASSERT_TRUE(p.ok());
  Pump();
  EXPECT_TRUE(applied);
  EXPECT_EQ(reply, "+OK\r\n");
  TickAll(2);  // followers learn the commit index with the next heartbeat
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(Get(i, "k"), "v1") << i;
  // A follower refuses proposals and names the leader.
  size_t follower = (leader + 1) % 3;
  auto refused = R(follower).Propose(SetBatch("k", "v2"), [](bool, std::string) {}, now_);
  EXPECT_EQ(refused.error, raft::ProposeError::kNotLeader);
  EXPECT_EQ(refused.leader_hint, ids_[leader]);
}

TEST_F(ReplicaCluster, EntriesAppliedTogetherKeepTheirOwnReplies) {
  AddNode(1, {1});
  TickAll(2);
  ASSERT_TRUE(R(0).is_leader());
  // Five proposals before any Ready: they commit and apply as one run.
  std::vector<std::string> replies(5);
  const std::vector<std::vector<std::string>> cmds = {
      {"incr", "n"}, {"incr", "n"}, {"set", "s", "x"}, {"incrby", "n", "10"}, {"incr", "s"}};
  for (size_t i = 0; i < cmds.size(); ++i) {
    ASSERT_TRUE(R(0).Propose(WriteBatchOf(cmds[i]), [&replies, i](bool ok, std::string r) {
      replies[i] = ok ? r : "refused " + r;
    }, now_).ok());
  }
  Pump();
  EXPECT_EQ(replies[0], ":1\r\n");
  EXPECT_EQ(replies[1], ":2\r\n");
  EXPECT_EQ(replies[2], "+OK\r\n");
  EXPECT_EQ(replies[3], ":12\r\n");
  EXPECT_EQ(replies[4], "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(Get(0, "n"), "12");
}

// Writes queued with ProposeJoined before a round share one log entry
// (those of one protocol), on every replica, and each gets its own replies.
TEST_F(ReplicaCluster, JoinedWritesShareAnEntryAndKeepTheirOwnReplies) {
  size_t leader = ThreeNodesWithALeader();
  ASSERT_NE(leader, SIZE_MAX);
  auto entry_of = [](std::vector<std::string> words) {
    std::vector<kv::Entry> out;
    int protocol = 0;
    EXPECT_TRUE(DecodeKvBatch(WriteBatchOf(std::move(words)), &out, &protocol));
    return out.at(0);
  };
  // Four clients' writes: two entries, one, one that fails, and one of RESP3.
  const std::vector<std::string> batches = {
      EncodeKvBatch({entry_of({"incr", "n"}), entry_of({"incr", "n"})}, 2), WriteBatchOf({"set", "s", "x"}),
      WriteBatchOf({"incr", "s"}), EncodeKvBatch({entry_of({"incrby", "n", "10"})}, 3)};
  std::vector<std::string> replies(batches.size(), "<no answer>");
  const raft::Index before = R(leader).raft().log().last_index();
  for (size_t i = 0; i < batches.size(); ++i) {
    R(leader).ProposeJoined(batches[i], [&replies, i](raft::Proposal refused, bool applied, std::string r) {
      replies[i] = !refused.ok() ? "refused" : applied ? r : "failed " + r;
    }, now_);
  }
  EXPECT_EQ(R(leader).joined_queued(), 4u);
  EXPECT_TRUE(R(leader).HasReady());
  Pump();
  EXPECT_EQ(replies[0], ":1\r\n:2\r\n");
  EXPECT_EQ(replies[1], "+OK\r\n");
  EXPECT_EQ(replies[2], "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(replies[3], ":12\r\n");
  // The RESP2 writes in one entry, the RESP3 one in the next.
  EXPECT_EQ(R(leader).raft().log().last_index(), before + 2);
  TickAll(2);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(Get(i, "n"), "12") << i;
    EXPECT_EQ(Get(i, "s"), "x") << i;
  }
  // A follower refuses at once, naming the leader.
  raft::Proposal refused;
  R((leader + 1) % 3).ProposeJoined(SetBatch("k", "v"), [&](raft::Proposal r, bool, std::string) { refused = r; }, now_);
  EXPECT_EQ(refused.error, raft::ProposeError::kNotLeader);
  EXPECT_EQ(refused.leader_hint, ids_[leader]);
  EXPECT_EQ(R((leader + 1) % 3).joined_queued(), 0u);
}

// What is queued when the round comes and the leader cannot propose (here:
// it is handing its leadership over) is refused, never proposed; so is what
// a replica leaving the node still holds.
TEST_F(ReplicaCluster, JoinedWritesTheLeaderCannotProposeAreRefused) {
  size_t leader = ThreeNodesWithALeader();
  ASSERT_NE(leader, SIZE_MAX);
  std::vector<raft::ProposeError> why;
  auto done = [&why](raft::Proposal refused, bool, std::string) { why.push_back(refused.error); };
  R(leader).ProposeJoined(SetBatch("a", "1"), done, now_);
  R(leader).ProposeJoined(SetBatch("b", "2"), done, now_);
  down_.insert(ids_[(leader + 1) % 3]);  // the transferee does not answer: the transfer stays under way
  R(leader).TransferLeader(ids_[(leader + 1) % 3]);
  const raft::Index before = R(leader).raft().log().last_index();
  Pump();
  EXPECT_EQ(why, (std::vector<raft::ProposeError>{raft::ProposeError::kTransferring, raft::ProposeError::kTransferring}));
  EXPECT_EQ(R(leader).raft().log().last_index(), before);
  down_.clear();

  why.clear();
  TickAll(60);
  leader = AwaitLeader();
  ASSERT_NE(leader, SIZE_MAX);
  R(leader).ProposeJoined(SetBatch("c", "3"), done, now_);
  auto batch = nodes_[leader]->engine->NewBatch();
  ASSERT_TRUE(R(leader).StageDestroy(*batch).ok());
  EXPECT_EQ(why, std::vector<raft::ProposeError>{raft::ProposeError::kRemoved});
  EXPECT_EQ(R(leader).joined_queued(), 0u);
}

// Queued writes are answered while the worker's rounds are held up (a
// stalled disk): refused once the replica no longer leads, and told after
// the write timeout that they were never logged.
TEST_F(ReplicaCluster, QueuedWritesAreAnsweredWhileRoundsAreHeldUp) {
  size_t leader = ThreeNodesWithALeader();
  ASSERT_NE(leader, SIZE_MAX);
  std::vector<std::string> got;
  auto done = [&got](raft::Proposal refused, bool applied, std::string reply) {
    got.push_back(!refused.ok() ? std::string("refused ") + raft::to_string(refused.error) : applied ? reply : "failed " + reply);
  };
  const raft::Index before = R(leader).raft().log().last_index();
  R(leader).ProposeJoined(SetBatch("a", "1"), done, now_);
  R(leader).ProposeJoined(SetBatch("b", "2"), done, now_ + 1'000'000);
  // No round runs (no Pump): ticks answer them.
  R(leader).Tick(now_ + 7'999'999);
  EXPECT_TRUE(got.empty());
  R(leader).Tick(now_ + 8'000'000);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].starts_with("failed -TRYAGAIN the write waited too long")) << got[0];
  EXPECT_EQ(R(leader).joined_queued(), 1u);
  // A newer term's heartbeat: a follower now, it refuses what is left.
  raft::Message hb;
  hb.type = raft::MessageType::kHeartbeat;
  hb.from = ids_[(leader + 1) % 3];
  hb.to = ids_[leader];
  hb.term = R(leader).raft().term() + 1;
  R(leader).Step(hb, now_ + 8'000'000);
  ASSERT_FALSE(R(leader).is_leader());
  R(leader).Tick(now_ + 8'050'000);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1], std::string("refused ") + raft::to_string(raft::ProposeError::kNotLeader));
  EXPECT_EQ(R(leader).joined_queued(), 0u);
  EXPECT_EQ(R(leader).raft().log().last_index(), before);
}

// A pending write whose entry a later leader's log replaced, still pending
// when this replica leads again and proposes at its index, is answered
// (dropped) and not forgotten: its connection would wait for good.
TEST_F(ReplicaCluster, WriteWhoseIndexIsProposedAgainIsAnswered) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(60);
  MakeNode0Lead();
  ASSERT_TRUE(R(0).is_leader());
  ASSERT_EQ(Write(R(0), SetBatch("k0", "0")), "+OK\r\n");
  // Node 1 logs three writes its followers never hear of.
  down_ = {2, 3};
  std::vector<std::string> replies(3, "<no answer>");
  const raft::Index first = R(0).raft().log().last_index() + 1;
  for (int i = 0; i < 3; ++i) {
    auto p = R(0).Propose(SetBatch("x" + std::to_string(i), "lost"), [&replies, i](bool ok, std::string r) {
      replies[i] = ok ? r : "refused " + r;
    }, now_);
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p.index, first + static_cast<raft::Index>(i));
  }
  Pump();
  // Nodes 2 and 3 elect a leader of their own, whose first entry replaces
  // node 1's at `first`; node 1 comes back, follows, then leads again.
  down_ = {1};
  TickAll(80);
  down_.clear();
  TickAll(5);
  ASSERT_FALSE(R(0).is_leader());
  EXPECT_TRUE(replies[0].starts_with("refused -TRYAGAIN")) << replies[0];
  MakeNode0Lead();
  ASSERT_TRUE(R(0).is_leader());
  ASSERT_EQ(Write(R(0), SetBatch("k1", "1")), "+OK\r\n");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(replies[i].starts_with("refused -TRYAGAIN")) << i << ": " << replies[i];
  for (size_t n = 0; n < 3; ++n) EXPECT_EQ(Get(n, "x2"), "<none>") << n;
}

TEST_F(ReplicaCluster, LinearizableReadOnAFollower) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(60);
  size_t leader = AwaitLeader();
  ASSERT_NE(leader, SIZE_MAX);
  (void)R(leader).Propose(SetBatch("k", "v"), [](bool, std::string) {}, now_);
  Pump();
  size_t follower = (leader + 1) % 3;
  bool served = false;
  R(follower).ReadIndex([&](bool ok) { served = ok; }, now_);
  Pump();
  EXPECT_TRUE(served);
  EXPECT_EQ(Get(follower, "k"), "v");  // applied before the read is served
}

// A read the leader has not confirmed when leadership moves may never be
// (its heartbeat round, or the leader it was sent to, is gone): it fails as
// soon as the replica sees the change, to be asked again, not when its 3 s
// are up. A follower that knows no leader refuses one at once.
TEST_F(ReplicaCluster, UnconfirmedReadFailsWhenLeadershipMoves) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(60);
  size_t l = AwaitLeader();
  ASSERT_NE(l, SIZE_MAX);
  size_t f = (l + 1) % 3;
  down_ = {ids_[l]};  // the leader's process is gone: the request it was sent is lost
  bool answered = false, ok = true;
  R(f).ReadIndex([&](bool r) { answered = true; ok = r; }, now_);
  Pump();
  EXPECT_FALSE(answered);
  const int64_t asked = now_;
  for (int t = 0; t < 60 && !answered; ++t) TickAll(1);  // the others elect a leader
  ASSERT_TRUE(answered);
  EXPECT_FALSE(ok);
  EXPECT_LT(now_ - asked, 2'000'000);  // well before the read's own timeout
  // The read fails as soon as f sees the change (f may only be campaigning
  // yet): let the election end, so that the follower below knows a leader.
  const size_t h = (l + 2) % 3;
  for (int t = 0; t < 60 && !((R(f).is_leader() && R(h).raft().lead() == ids_[f]) ||
                               (R(h).is_leader() && R(f).raft().lead() == ids_[h]));
       ++t) {
    TickAll(1);
  }
  // A follower that has just lost its leader and knows none refuses at once.
  size_t g = R(f).is_leader() ? h : f;
  ASSERT_FALSE(R(g).is_leader());
  ASSERT_NE(R(g).raft().lead(), raft::kNoNode);
  down_ = {ids_[0], ids_[1], ids_[2]};
  R(g).PeerGone(R(g).raft().lead(), now_);
  ASSERT_EQ(R(g).raft().lead(), raft::kNoNode);
  answered = false;
  ok = true;
  R(g).ReadIndex([&](bool r) { answered = true; ok = r; }, now_);
  EXPECT_TRUE(answered);
  EXPECT_FALSE(ok);
}

// One Ready round of node i by hand: begun and written; applied and
// finished only if `finish`. Returns the messages that left.
std::vector<raft::Message> RoundOf(TestNode& n, bool finish, int64_t now) {
  auto batch = n.engine->NewBatch();
  std::vector<raft::Message> out;
  bool needs_sync = false;
  if (!n.replica->BeginReady(*batch, &out, &needs_sync)) return out;
  if (batch->Count() > 0) {
    EXPECT_TRUE(n.engine->Write(*batch).ok());
  }
  if (finish) {
    n.replica->ApplyReady(now);
    n.replica->FinishReady(&out, now);
  }
  return out;
}

// The leader tells followers of a commit before it applies it itself (its
// messages leave first). A follower may apply the entry and serve it; the
// leader must not then serve a read from its lease that misses it.
TEST_F(ReplicaCluster, LeaseReadWaitsUntilTheLeaderAppliedWhatItCommitted) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(60);
  size_t l = AwaitLeader();
  ASSERT_NE(l, SIZE_MAX);
  ASSERT_TRUE(R(l).LeaseReadOk(now_));
  auto deliver = [&](std::vector<raft::Message> msgs) {
    for (auto& m : msgs) {
      for (size_t i = 0; i < ids_.size(); ++i) {
        if (ids_[i] == m.to) R(i).Step(m, now_);
      }
    }
  };
  ASSERT_TRUE(R(l).Propose(SetBatch("k", "new"), [](bool, std::string) {}, now_).ok());
  std::vector<raft::Message> appends = RoundOf(*nodes_[l], true, now_);
  deliver(appends);
  for (size_t i = 0; i < 3; ++i) {
    if (i != l) deliver(RoundOf(*nodes_[i], true, now_));  // their acknowledgements
  }
  // The leader's Raft has committed the write; its round leaves, unapplied,
  // with a heartbeat that carries the commit index (data groups send no
  // message of their own for it: skip_bcast_commit).
  now_ += 50'000;
  R(l).Tick(now_);
  std::vector<raft::Message> commit = RoundOf(*nodes_[l], false, now_);
  ASSERT_FALSE(commit.empty());
  deliver(commit);
  size_t f = (l + 1) % 3;
  (void)RoundOf(*nodes_[f], true, now_);
  ASSERT_EQ(Get(f, "k"), "new");      // served by a follower (READONLY) ...
  ASSERT_EQ(Get(l, "k"), "<none>");   // ... while the leader has not applied it
  EXPECT_FALSE(R(l).LeaseReadOk(now_));
  bool served = false;
  R(l).ReadIndex([&](bool ok) { served = ok; }, now_);
  EXPECT_FALSE(served);  // it waits for the apply
  R(l).ApplyReady(now_);
  std::vector<raft::Message> rest;
  R(l).FinishReady(&rest, now_);
  EXPECT_TRUE(served);
  EXPECT_EQ(Get(l, "k"), "new");
  EXPECT_TRUE(R(l).LeaseReadOk(now_));
}

// A leader whose process was stopped (SIGSTOP, a stall) resumes with its
// ticks behind real time: counted in ticks its lease still holds, but a new
// leader was elected meanwhile and took writes. It must not answer a read
// from that lease, nor from Raft's.
TEST_F(ReplicaCluster, StoppedLeaderAnswersNoReadFromItsLeaseWhenItResumes) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(60);
  size_t l = AwaitLeader();
  ASSERT_NE(l, SIZE_MAX);
  ASSERT_EQ(Write(R(l), SetBatch("k", "old")), "+OK\r\n");
  TickAll(2);
  ASSERT_TRUE(R(l).LeaseReadOk(now_));
  down_ = {ids_[l]};  // stopped: no ticks, nothing in or out
  TickAll(60);        // 3 s of real time
  size_t l2 = LeaderIndex() == l ? SIZE_MAX : LeaderIndex();
  for (size_t i = 0; i < 3; ++i) {
    if (i != l && R(i).is_leader()) l2 = i;
  }
  ASSERT_NE(l2, SIZE_MAX);
  ASSERT_EQ(Write(R(l2), SetBatch("k", "new")), "+OK\r\n");
  down_.clear();  // it resumes: what queued up runs before its timer catches up
  ASSERT_TRUE(R(l).is_leader());
  EXPECT_FALSE(R(l).LeaseReadOk(now_));
  bool answered = false, ok = false;
  R(l).ReadIndex([&](bool r) { answered = true; ok = r; }, now_);
  std::vector<raft::Message> out = RoundOf(*nodes_[l], true, now_);
  EXPECT_FALSE(ok && Get(l, "k") == "old") << "a stale read was confirmed";
  EXPECT_FALSE(answered && ok);
}

// Raft refuses votes for election_tick ticks after hearing from a leader,
// but ticks fire in a burst after a stall. The refusal also holds for an
// election timeout of real time, which the leader's lease counts on.
TEST_F(ReplicaCluster, FollowerRefusesVotesForAnElectionTimeoutOfRealTime) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(60);
  size_t l = AwaitLeader();
  ASSERT_NE(l, SIZE_MAX);
  size_t f = (l + 1) % 3, other = (l + 2) % 3;
  const raft::Term term = R(f).raft().term();
  for (int k = 0; k < 30; ++k) R(f).Tick(now_);  // a burst: no real time passed
  for (raft::MessageType t : {raft::MessageType::kPreVote, raft::MessageType::kVote}) {
    R(f).Step(raft::Message{.type = t, .to = ids_[f], .from = ids_[other], .term = term + 1,
                            .log_term = R(f).raft().log().last_term(), .index = R(f).raft().log().last_index()},
              now_ + 100'000);
  }
  std::vector<raft::Message> out = RoundOf(*nodes_[f], true, now_ + 100'000);
  for (const auto& m : out) {
    bool granted = (m.type == raft::MessageType::kPreVoteResp || m.type == raft::MessageType::kVoteResp) && !m.reject;
    EXPECT_FALSE(granted) << "a vote granted 100 ms after hearing from the leader";
  }
  EXPECT_EQ(R(f).raft().term(), term);
}

TEST_F(ReplicaCluster, NewMemberCatchesUpFromASnapshot) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3}, /*compact=*/8);
  TickAll(60);
  size_t leader = AwaitLeader();
  ASSERT_NE(leader, SIZE_MAX);
  for (int i = 0; i < 40; ++i) {
    (void)R(leader).Propose(SetBatch("k" + std::to_string(i), std::to_string(i)), [](bool, std::string) {}, now_);
    Pump();
  }
  EXPECT_GT(R(leader).store().first_index(), 2u);  // the log was compacted
  AddNode(4, {});  // empty: learns everything from the leader
  raft::ConfChange cc{{raft::ConfChangeSingle{raft::ConfChangeType::kAddLearner, 4}}};
  ASSERT_TRUE(R(leader).ProposeConfChange(cc).ok());
  TickAll(20);
  EXPECT_EQ(Get(3, "k0"), "0");
  EXPECT_EQ(Get(3, "k39"), "39");
  EXPECT_EQ(nodes_[3]->shard->KeyCount(0), 40);
  EXPECT_EQ(R(3).store().conf_state().learners, std::vector<raft::NodeId>{4});
}

// A replica installing a snapshot clears its range before the snapshot's
// file is in (#9, item 6). At that moment its import generation is odd, so a
// read that overlaps it (Connection::RunReadOn checks the generation before
// and after) is refused instead of served from the half state; once the
// import is done the generation is even again, two higher, and the data whole.
TEST_F(ReplicaCluster, ImportGenerationIsOddWhileASnapshotIsHalfIn) {
  for (raft::NodeId id : {1, 2}) AddNode(id, {1, 2, 3}, /*compact=*/8);
  TestNode& c = AddNode(3, {1, 2, 3}, /*compact=*/8, false, /*faulty=*/true);
  ASSERT_NO_FATAL_FAILURE(LeaveNode3BehindACompactedLog());
  EXPECT_EQ(Get(2, "k0"), "0");
  const uint64_t gen = R(2).import_generation();
  EXPECT_EQ(gen % 2, 0u);
  int half_states = 0;
  c.faults->BeforeIngest([&](storage::Cf cf) {
    if (cf != storage::Cf::kData) return;
    half_states++;
    EXPECT_EQ(Get(2, "k0"), "<none>");            // a read now would miss k0 ...
    EXPECT_EQ(R(2).import_generation(), gen + 1);  // ... and is refused
  });
  down_.erase(3);
  TickAll(20);
  EXPECT_EQ(half_states, 1);
  EXPECT_EQ(R(2).import_generation(), gen + 2);
  EXPECT_EQ(Get(2, "k0"), "0");
  EXPECT_EQ(Get(2, "k40"), "40");
}

// An image's slots stay claimed (Splitter::ClaimImage) from its arrival until
// its import is in, so that no other replica is created over them on another
// worker meanwhile; a refused claim drops the snapshot, and the leader sends
// it again.
TEST_F(ReplicaCluster, ImageClaimsItsSlotsUntilItsImportIsIn) {
  for (raft::NodeId id : {1, 2}) AddNode(id, {1, 2, 3}, /*compact=*/8);
  TestNode& c = AddNode(3, {1, 2, 3}, /*compact=*/8, /*with_splitter=*/true, /*faulty=*/true);
  auto& splitter = static_cast<TestSplitter&>(*c.splitter);
  ASSERT_NO_FATAL_FAILURE(LeaveNode3BehindACompactedLog());
  splitter.refuse_images = true;
  down_.erase(3);
  TickAll(20);
  EXPECT_GT(splitter.images_refused, 0);
  EXPECT_TRUE(splitter.claims.empty());
  EXPECT_EQ(Get(2, "k40"), "<none>");  // dropped, nothing imported
  int ingests = 0;
  c.faults->BeforeIngest([&](storage::Cf cf) {
    if (cf != storage::Cf::kData) return;
    ingests++;
    ASSERT_EQ(splitter.claims.count(7), 1u);
    EXPECT_EQ(splitter.claims.at(7), std::make_pair(uint16_t{0}, static_cast<uint16_t>(storage::kSlotCount)));
  });
  splitter.refuse_images = false;
  TickAll(40);
  EXPECT_EQ(ingests, 1);
  EXPECT_TRUE(splitter.claims.empty());  // released once the import is in
  EXPECT_EQ(Get(2, "k40"), "40");
}

TEST_F(ReplicaCluster, RestartRecoversLogAndState) {
  AddNode(1, {1});
  TickAll(2);
  ASSERT_TRUE(R(0).is_leader());
  (void)R(0).Propose(SetBatch("a", "1"), [](bool, std::string) {}, now_);
  Pump();
  uint64_t applied = R(0).state_machine().applied_index();
  // Reopen the same storage.
  auto& n = *nodes_[0];
  n.replica.reset();
  n.shard = std::make_unique<kv::Shard>(n.engine.get(), 7, 0, storage::kSlotCount);
  ASSERT_TRUE(n.shard->Load().ok());
  ReplicaOptions ro;
  ro.group = 7;
  ro.node_id = 1;
  n.replica = std::move(Replica::Open(n.engine.get(), ro, std::make_unique<KvStateMachine>(n.shard.get(), &n.limits)).value());
  EXPECT_EQ(n.replica->state_machine().applied_index(), applied);
  TickAll(2);
  ASSERT_TRUE(R(0).is_leader());
  std::string reply;
  (void)R(0).Propose(SetBatch("a", "2"), [&](bool, std::string r) { reply = r; }, now_);
  Pump();
  EXPECT_EQ(reply, "+OK\r\n");
  EXPECT_EQ(Get(0, "a"), "2");
}

// A commit index that moved alone is not written (RaftStore::NoteHardState):
// a follower restarted after writes has applied past the commit index its
// record holds. It opens, applies nothing twice (the entries between are
// handed to it again and skipped), and goes on with its group.
TEST_F(ReplicaCluster, FollowerRestartedPastItsWrittenCommitAppliesNothingTwice) {
  const size_t l = ThreeNodesWithALeader();
  ASSERT_NE(l, SIZE_MAX);
  const size_t f = (l + 1) % 3;
  for (int i = 1; i <= 6; ++i) {
    ASSERT_EQ(Write(R(l), WriteBatchOf({"incr", "n"})), ":" + std::to_string(i) + "\r\n");
  }
  TickAll(3);  // the followers learn the last commit index and apply
  ASSERT_EQ(Get(f, "n"), "6");
  const uint64_t applied = R(f).state_machine().applied_index();
  {
    auto stored = storage::RaftStore::Open(nodes_[f]->engine.get(), 7);
    ASSERT_TRUE(stored.ok());
    EXPECT_LT((*stored)->hard_state().commit, applied);
    EXPECT_EQ((*stored)->hard_state().term, R(f).raft().term());
  }
  auto& n = *nodes_[f];
  n.replica.reset();
  n.shard = std::make_unique<kv::Shard>(n.engine.get(), 7, 0, storage::kSlotCount);
  ASSERT_TRUE(n.shard->Load().ok());
  ReplicaOptions ro;
  ro.group = 7;
  ro.node_id = ids_[f];
  auto reopened = Replica::Open(n.engine.get(), ro, std::make_unique<KvStateMachine>(n.shard.get(), &n.limits));
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  n.replica = std::move(reopened).value();
  EXPECT_EQ(R(f).state_machine().applied_index(), applied);
  TickAll(3);
  EXPECT_EQ(Get(f, "n"), "6");
  const size_t leader = AwaitLeader();
  ASSERT_NE(leader, SIZE_MAX);
  ASSERT_EQ(Write(R(leader), WriteBatchOf({"incr", "n"})), ":7\r\n");
  TickAll(3);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(Get(i, "n"), "7") << "node " << ids_[i];
    EXPECT_EQ(R(i).state_machine().applied_index(), R(leader).state_machine().applied_index());
  }
}

// ... but where the entries to apply hold a membership change, the commit
// index that covers it is written with them: a replica that stops before
// their apply is written applies them at restart without a leader.
TEST_F(ReplicaCluster, CommitIndexCoveringAMembershipChangeIsWritten) {
  const size_t l = ThreeNodesWithALeader();
  ASSERT_NE(l, SIZE_MAX);
  ASSERT_EQ(Write(R(l), SetBatch("k", "v")), "+OK\r\n");
  raft::ConfChange cc;
  cc.changes = {{raft::ConfChangeType::kAddLearner, 4}};
  ASSERT_TRUE(R(l).ProposeConfChange(cc).ok());
  TickAll(3);
  const raft::Index at = R(l).store().last_index();
  ASSERT_EQ(R(l).raft().tracker().conf_state().learners, std::vector<raft::NodeId>{4});
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_GE(R(i).state_machine().applied_index(), at) << "node " << ids_[i];
    auto stored = storage::RaftStore::Open(nodes_[i]->engine.get(), 7);
    ASSERT_TRUE(stored.ok());
    EXPECT_GE((*stored)->hard_state().commit, at) << "node " << ids_[i];
  }
}

TEST_F(ReplicaCluster, SnapshotImportInterruptedByACrashIsFinishedAtRestart) {
  AddNode(1, {1});
  TickAll(2);
  ASSERT_TRUE(R(0).is_leader());
  for (int i = 0; i < 20; ++i) {
    (void)R(0).Propose(SetBatch("k" + std::to_string(i), "v" + std::to_string(i)), [](bool, std::string) {}, now_);
    Pump();
  }
  uint64_t index = nodes_[0]->shard->applied_index();
  auto image = nodes_[0]->shard->ExportImage();
  ASSERT_TRUE(image.ok());
  ASSERT_EQ((*image)[0], 2);  // the data travels as an SST file
  // Node 2 starts empty and imports the image, but "crashes" before the
  // replica's own batch (applied index, log position, marker removal) is written.
  TestNode& b = AddNode(2, {});
  b.replica.reset();
  auto batch = b.engine->NewBatch();
  std::string marker;
  marker.append(reinterpret_cast<const char*>(&index), 8);
  uint64_t term = R(0).raft().term();
  marker.append(reinterpret_cast<const char*>(&term), 8);
  raft::ConfState cs;
  cs.voters = {1};
  cs.learners = {2};
  marker += storage::EncodeConfState(cs);
  std::string key(1, 'P');
  for (int i = 7; i >= 0; --i) key.push_back(static_cast<char>(uint64_t{7} >> (8 * i)));
  kv::Shard::ImportMarker import_marker{key, marker};
  ASSERT_TRUE(b.shard->StageImage(*image, index, *batch, &import_marker).ok());
  // The batch is dropped: reopen everything from disk.
  batch.reset();
  b.shard.reset();
  b.engine.reset();
  b.engine = std::move(storage::Engine::Open({.dir = b.dir.string(), .memory_budget_bytes = 32 << 20}).value());
  // Only the marker says the group is here: the node must still open it.
  EXPECT_TRUE(storage::RaftStore::HasState(b.engine.get(), 7));
  b.shard = std::make_unique<kv::Shard>(b.engine.get(), 7, 0, storage::kSlotCount);
  ASSERT_TRUE(b.shard->Load().ok());
  ReplicaOptions ro;
  ro.group = 7;
  ro.node_id = 2;
  auto r = Replica::Open(b.engine.get(), ro, std::make_unique<KvStateMachine>(b.shard.get(), &b.limits));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  b.replica = std::move(r).value();
  EXPECT_EQ(b.shard->applied_index(), index);
  EXPECT_EQ(b.replica->store().first_index(), index + 1);
  EXPECT_EQ(b.replica->store().conf_state().learners, std::vector<raft::NodeId>{2});
  EXPECT_EQ(Get(1, "k0"), "v0");
  EXPECT_EQ(Get(1, "k19"), "v19");
  EXPECT_EQ(b.shard->KeyCount(0), 20);
  std::string raw;
  EXPECT_EQ(b.engine->Get(storage::Cf::kRaft, key, &raw).code(), Code::kNotFound);  // marker gone
}

// Two of three voters die for good: the survivor, forced to be the only
// voter, keeps what it had, takes writes again, does it once, and ignores a
// lost voter that comes back. A follower of a working group refuses.
TEST_F(ReplicaCluster, UnsafeRecoveryMakesASurvivorTheOnlyVoter) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(30);
  size_t l = AwaitLeader();
  ASSERT_NE(l, SIZE_MAX);
  std::string reply;
  (void)R(l).Propose(SetBatch("k", "before"), [&](bool, std::string r) { reply = r; }, now_);
  Pump();
  ASSERT_EQ(reply, "+OK\r\n");
  TickAll(3);
  // a follower of a working group refuses
  size_t f = (l + 1) % 3;
  auto refused = R(f).ForceSoleVoter(1);
  ASSERT_TRUE(refused.ok());
  EXPECT_FALSE(*refused);
  down_ = {2, 3};
  TickAll(80);
  EXPECT_FALSE(R(0).is_leader());  // alone, it cannot win
  auto forced = R(0).ForceSoleVoter(1);
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  EXPECT_TRUE(*forced);
  TickAll(3);
  ASSERT_TRUE(R(0).is_leader());
  EXPECT_EQ(R(0).raft().tracker().conf_state().voters, std::vector<raft::NodeId>{1});
  EXPECT_EQ(R(0).recovery(), 1u);
  EXPECT_EQ(Get(0, "k"), "before");
  reply.clear();
  (void)R(0).Propose(SetBatch("k", "after"), [&](bool, std::string r) { reply = r; }, now_);
  Pump();
  EXPECT_EQ(reply, "+OK\r\n");
  EXPECT_EQ(Get(0, "k"), "after");
  auto again = R(0).ForceSoleVoter(1);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);  // once per recovery number
  // a lost voter returns: its messages are not heard, the leader stays
  uint64_t term = R(0).raft().term();
  down_ = {3};
  TickAll(60);
  EXPECT_TRUE(R(0).is_leader());
  EXPECT_EQ(R(0).raft().term(), term);
  EXPECT_FALSE(R(1).is_leader());
  // ... even one that leads the old membership at a higher term
  R(0).Step(raft::Message{.type = raft::MessageType::kHeartbeat, .to = 1, .from = 2, .term = term + 5}, now_);
  Pump();
  EXPECT_TRUE(R(0).is_leader());
  EXPECT_EQ(R(0).raft().term(), term);
}

// The meta shard's fence (Cluster::MetaRecoveryTick): a replica that
// committed entries the forced survivor never had is started over before
// it joins the recovered group again. Appending the survivor's log to it
// would overwrite a committed entry (Raft stops the node for that); started
// over, it keeps its term and vote, holds nothing, and takes the recovered
// group's state.
TEST_F(ReplicaCluster, ReplicaStartedOverForARecoveryTakesTheRecoveredState) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(30);
  size_t l = AwaitLeader();
  ASSERT_NE(l, SIZE_MAX);
  ASSERT_EQ(Write(R(l), SetBatch("k", "before")), "+OK\r\n");
  TickAll(3);
  // Node 1 misses a write the other two commit ...
  down_ = {1};
  TickAll(40);
  for (int t = 0; t < 200 && !R(1).is_leader() && !R(2).is_leader(); ++t) TickAll(1);  // a split vote
  l = R(1).is_leader() ? 1 : 2;  // node 1, cut off, may still think it leads
  ASSERT_TRUE(R(l).is_leader());
  ASSERT_EQ(Write(R(l), SetBatch("k", "later")), "+OK\r\n");
  TickAll(3);
  ASSERT_EQ(Get(1, "k"), "later");
  // ... then they die, and node 1 carries on alone.
  ASSERT_NO_FATAL_FAILURE(LoseNodes2And3AndForceNode1());
  ASSERT_EQ(Write(R(0), SetBatch("k", "after")), "+OK\r\n");
  ASSERT_EQ(Write(R(0), SetBatch("k2", "after")), "+OK\r\n");
  // Node 2 comes back and is started over before it is added again.
  const uint64_t term = R(1).raft().term();
  auto reset = R(1).ResetForRecovery(1);
  ASSERT_TRUE(reset.ok()) << reset.status().ToString();
  ASSERT_TRUE(*reset);
  EXPECT_EQ(R(1).recovery(), 1u);
  EXPECT_EQ(R(1).store().last_index(), 0u);
  EXPECT_EQ(R(1).store().hard_state().term, term);
  EXPECT_TRUE(R(1).raft().tracker().conf_state().voters.empty());
  EXPECT_EQ(Get(1, "k"), "<none>");
  auto again = R(1).ResetForRecovery(1);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);  // once per recovery number
  down_ = {3};
  raft::ConfChange cc;
  cc.changes = {{raft::ConfChangeType::kAddLearner, 2}};
  ASSERT_TRUE(R(0).ProposeConfChange(cc).ok());
  TickAll(40);
  EXPECT_TRUE(R(0).is_leader());
  EXPECT_EQ(Get(1, "k"), "after");
  EXPECT_EQ(Get(1, "k2"), "after");
  EXPECT_EQ(R(1).state_machine().applied_index(), R(0).state_machine().applied_index());
}

// Started over, a replica whose state machine keeps its state (as the
// metadata's does) has applied far past its empty log: it compacts nothing
// (that stopped the node), takes the recovered group's snapshot, and, were
// the recovered leader lost before it passed anything on, can itself be
// forced to carry on from the state it kept.
TEST_F(ReplicaCluster, ReplicaStartedOverWithItsStateKeptCanCarryOn) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3}, /*compact=*/8, false, false, /*keeps_state=*/true);
  TickAll(30);
  size_t l = AwaitLeader();
  ASSERT_NE(l, SIZE_MAX);
  for (int i = 0; i < 30; ++i) ASSERT_EQ(Write(R(l), SetBatch("k" + std::to_string(i), "v")), "+OK\r\n");
  TickAll(3);
  ASSERT_GT(R(1).state_machine().applied_index(), 20u);
  auto reset = R(1).ResetForRecovery(uint64_t{1} << 32 | 1);
  ASSERT_TRUE(reset.ok() && *reset);
  EXPECT_EQ(R(1).store().last_index(), 0u);
  EXPECT_GT(R(1).state_machine().applied_index(), 20u);  // kept
  EXPECT_EQ(Get(1, "k0"), "v");
  TickAll(20);  // rounds on the started-over replica: nothing to compact, no stop
  // Its recovery's leader is lost before it passed its state on: the
  // replica is forced from what it kept, and takes writes.
  down_ = {1, 3};
  TickAll(80);
  auto forced = R(1).ForceSoleVoter(uint64_t{2} << 32 | 2);
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  ASSERT_TRUE(*forced);
  TickAll(5);
  ASSERT_TRUE(R(1).is_leader());
  EXPECT_EQ(R(1).raft().tracker().conf_state().voters, std::vector<raft::NodeId>{2});
  ASSERT_EQ(Write(R(1), SetBatch("k0", "after")), "+OK\r\n");
  EXPECT_EQ(Get(1, "k0"), "after");
  EXPECT_EQ(Get(1, "k29"), "v");
}

// The meta shard's learners hold the metadata: when every voter is lost, a
// learner may be forced (only when asked: data shards force voters only).
TEST_F(ReplicaCluster, LearnerWithStateIsForcedOnlyWhenAsked) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  AddNode(4, {});
  TickAll(30);
  size_t l = AwaitLeader();
  ASSERT_NE(l, SIZE_MAX);
  ASSERT_LT(l, 3u);
  raft::ConfChange cc;
  cc.changes = {{raft::ConfChangeType::kAddLearner, 4}};
  ASSERT_TRUE(R(l).ProposeConfChange(cc).ok());
  TickAll(20);
  ASSERT_EQ(Write(R(l), SetBatch("k", "v")), "+OK\r\n");
  TickAll(3);
  ASSERT_EQ(Get(3, "k"), "v");
  EXPECT_EQ(R(3).published_leader(), R(l).node_id());
  down_ = {1, 2, 3};
  TickAll(80);
  // It never campaigns, so its Raft still names the lost leader: not published.
  EXPECT_EQ(R(3).published_leader(), raft::kNoNode);
  std::string why;
  auto plain = R(3).ForceSoleVoter(1, &why);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(*plain);
  EXPECT_EQ(why, "it is not a voter of the group");
  auto forced = R(3).ForceSoleVoter(1, nullptr, /*learner_ok=*/true);
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  ASSERT_TRUE(*forced);
  TickAll(5);
  ASSERT_TRUE(R(3).is_leader());
  EXPECT_EQ(R(3).raft().tracker().conf_state().voters, std::vector<raft::NodeId>{4});
  ASSERT_EQ(Write(R(3), SetBatch("k", "after")), "+OK\r\n");
  EXPECT_EQ(Get(3, "k"), "after");
}

// A membership change proposed before the majority died (never committed)
// commits with the recovered replica's first entries; applying it would put
// the lost voters back and wedge the group again: it is ignored.
TEST_F(ReplicaCluster, MembershipChangesLeftFromBeforeARecoveryAreIgnored) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3});
  TickAll(30);
  MakeNode0Lead();
  ASSERT_TRUE(R(0).is_leader());
  down_ = {2, 3};
  raft::ConfChange cc;
  cc.changes = {{raft::ConfChangeType::kAddVoter, 4}, {raft::ConfChangeType::kRemoveNode, 3}};
  ASSERT_TRUE(R(0).ProposeConfChange(cc).ok());
  Pump();
  TickAll(80);  // it steps down (no quorum); the change stays uncommitted
  ASSERT_FALSE(R(0).is_leader());
  auto forced = R(0).ForceSoleVoter(1);
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  ASSERT_TRUE(*forced);
  TickAll(5);
  ASSERT_TRUE(R(0).is_leader());
  const raft::ConfState& cs = R(0).raft().tracker().conf_state();
  EXPECT_EQ(cs.voters, std::vector<raft::NodeId>{1});
  EXPECT_TRUE(cs.voters_outgoing.empty());
  std::string reply;
  (void)R(0).Propose(SetBatch("k", "v"), [&](bool, std::string r) { reply = r; }, now_);
  Pump();
  EXPECT_EQ(reply, "+OK\r\n");  // not wedged
}


constexpr uint64_t kChildGroup = 8;
constexpr uint16_t kSplitSlot = 8192;

// A key named prefix + number whose slot is below kSplitSlot (kept by the
// parent of a split there) or at or above it (moved to the child).
std::string KeyOnSide(const std::string& prefix, bool moved) {
  for (int i = 0;; ++i) {
    std::string key = prefix + std::to_string(i);
    if ((storage::KeySlot(key) >= kSplitSlot) == moved) return key;
  }
}

// Every replica applies the split at the same index: the parent keeps the
// lower slots, and each node gets a replica of the child group, which elects
// a leader and takes the moved slots' writes; the parent refuses them.
TEST_F(ReplicaCluster, SplitHandsTheUpperSlotsToAChildGroup) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3}, 4096, /*with_splitter=*/true);
  TickAll(60);
  size_t leader = AwaitLeader();
  ASSERT_NE(leader, SIZE_MAX);
  const std::string kept = KeyOnSide("kept", false), moved = KeyOnSide("moved", true);
  EXPECT_EQ(Write(R(leader), SetBatch(kept, "before")), "+OK\r\n");
  EXPECT_EQ(Write(R(leader), SetBatch(moved, "before")), "+OK\r\n");
  auto split = R(leader).ProposeSplit(SplitCommand{kChildGroup, kSplitSlot}, now_);
  ASSERT_TRUE(split.ok());
  Pump();
  TickAll(2);  // followers learn the commit with the next heartbeat
  for (size_t i = 0; i < nodes_.size(); ++i) {
    SCOPED_TRACE("node " + std::to_string(ids_[i]));
    TestNode& n = *nodes_[i];
    EXPECT_EQ(n.shard->slot_begin(), 0);
    EXPECT_EQ(n.shard->slot_end(), kSplitSlot);
    EXPECT_EQ(n.split_index, split.index);
    EXPECT_EQ(n.splits_staged, 1);
    // The counters are recounted later (off the worker): until then the
    // parent still counts both keys and the child none.
    EXPECT_EQ(n.shard->KeyCount(0), 2);
    EXPECT_TRUE(n.shard->NeedsRecount());
    ASSERT_NE(n.child, nullptr);
    EXPECT_EQ(n.child->group(), kChildGroup);
    EXPECT_EQ(n.child_shard->slot_begin(), kSplitSlot);
    EXPECT_EQ(n.child_shard->slot_end(), storage::kSlotCount);
    EXPECT_EQ(n.child_shard->KeyCount(0), 0);
    EXPECT_TRUE(n.child_shard->NeedsRecount());
    EXPECT_EQ(n.child->store().conf_state().voters, (std::vector<raft::NodeId>{1, 2, 3}));
  }
  TickAll(60);  // the child group elects its leader
  std::vector<size_t> child_leaders;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->child->is_leader()) child_leaders.push_back(i);
  }
  ASSERT_EQ(child_leaders.size(), 1u);
  Replica& child = *nodes_[child_leaders[0]]->child;
  EXPECT_EQ(Write(child, SetBatch(moved, "child")), "+OK\r\n");
  EXPECT_TRUE(Write(child, SetBatch(kept, "child")).starts_with("-TRYAGAIN"));
  leader = LeaderIndex();
  ASSERT_NE(leader, SIZE_MAX);
  EXPECT_TRUE(Write(R(leader), SetBatch(moved, "parent")).starts_with("-TRYAGAIN"));
  EXPECT_EQ(Write(R(leader), SetBatch(kept, "parent")), "+OK\r\n");
  TickAll(2);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    EXPECT_EQ(Get(i, moved), "child") << i;
    EXPECT_EQ(Get(i, kept), "parent") << i;
    // The recount (the cluster runs it off the worker) makes both exact.
    const std::atomic<bool> go{false};
    for (kv::Shard* sh : {nodes_[i]->shard.get(), nodes_[i]->child_shard.get()}) {
      auto job = sh->BeginRecount();
      ASSERT_TRUE(job.has_value()) << i;
      auto counted = job->count(go);
      ASSERT_TRUE(counted.ok()) << i;
      ASSERT_TRUE(*sh->FinishRecount(job->generation, *counted)) << i;
    }
    EXPECT_EQ(nodes_[i]->child_shard->KeyCount(0), 1) << i;
    EXPECT_EQ(nodes_[i]->shard->KeyCount(0), 1) << i;
  }
}

// The two voters that could commit a split die; the survivor, forced to
// be the only voter, applies the split alone. Its child is born with the
// membership of the forced parent (this node alone) and, told so by the
// cluster layer, the child's recovery: it ignores a lost voter of the old
// lineage that comes back leading at a higher term, as the forced parent does.
TEST_F(ReplicaCluster, ChildOfARecoveredParentIsFencedFromBirth) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3}, 4096, /*with_splitter=*/true);
  TickAll(60);
  const std::string moved = KeyOnSide("moved", true);
  size_t l = LeaderIndex();
  ASSERT_NE(l, SIZE_MAX);
  ASSERT_EQ(Write(R(l), SetBatch(moved, "before")), "+OK\r\n");
  TickAll(3);
  ASSERT_NO_FATAL_FAILURE(LoseNodes2And3AndForceNode1());
  static_cast<TestSplitter&>(*nodes_[0]->splitter).child_recovery = 5;
  auto split = R(0).ProposeSplit(SplitCommand{kChildGroup, kSplitSlot}, now_);
  ASSERT_TRUE(split.ok());
  Pump();
  TickAll(2);
  ASSERT_NE(nodes_[0]->child, nullptr);
  Replica& child = *nodes_[0]->child;
  EXPECT_EQ(child.store().conf_state().voters, std::vector<raft::NodeId>{1});
  EXPECT_EQ(child.recovery(), 5u);
  auto again = child.ForceSoleVoter(5);  // nothing left to force
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  child.Campaign();
  TickAll(20);
  ASSERT_TRUE(child.is_leader());
  EXPECT_EQ(Write(child, SetBatch(moved, "after")), "+OK\r\n");
  const uint64_t term = child.raft().term();
  child.Step(raft::Message{.type = raft::MessageType::kHeartbeat, .to = 1, .from = 2, .term = term + 5}, now_);
  Pump();
  EXPECT_TRUE(child.is_leader());
  EXPECT_EQ(child.raft().term(), term);
}

// Whether a group splits depends on its state at the split's index alone:
// a split applied while the membership is joint, or at a slot outside the
// range, is ignored by every replica (none makes a child); the same split
// once the membership settled goes through.
TEST_F(ReplicaCluster, SplitWhileJointOrOutsideTheRangeIsIgnoredEverywhere) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3}, 4096, /*with_splitter=*/true);
  TickAll(60);
  size_t leader = AwaitLeader();
  ASSERT_NE(leader, SIZE_MAX);
  AddNode(4, {}, 4096, /*with_splitter=*/true);
  auto joint = R(leader).ProposeConfChange(raft::ConfChange{{{raft::ConfChangeType::kAddVoter, 4}}});
  ASSERT_TRUE(joint.ok());
  auto split = R(leader).ProposeSplit(SplitCommand{kChildGroup, kSplitSlot}, now_);
  ASSERT_TRUE(split.ok());
  EXPECT_LT(joint.index, split.index);
  TickAll(20);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    SCOPED_TRACE("node " + std::to_string(ids_[i]));
    TestNode& n = *nodes_[i];
    EXPECT_GE(n.shard->applied_index(), split.index);
    EXPECT_EQ(n.shard->slot_end(), storage::kSlotCount);
    EXPECT_EQ(n.splits_staged, 0);
    EXPECT_EQ(n.child, nullptr);
    EXPECT_TRUE(n.replica->store().conf_state().voters_outgoing.empty());  // it left the joint state
    EXPECT_EQ(n.replica->store().conf_state().voters, (std::vector<raft::NodeId>{1, 2, 3, 4}));
  }
  leader = LeaderIndex();
  ASSERT_NE(leader, SIZE_MAX);
  raft::Index outside_index = 0;
  for (uint16_t slot : {uint16_t{0}, storage::kSlotCount}) {
    auto outside = R(leader).ProposeSplit(SplitCommand{kChildGroup, slot}, now_);
    ASSERT_TRUE(outside.ok());
    outside_index = outside.index;
  }
  TickAll(3);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    SCOPED_TRACE("node " + std::to_string(ids_[i]));
    EXPECT_GE(nodes_[i]->shard->applied_index(), outside_index);
    EXPECT_EQ(nodes_[i]->shard->slot_end(), storage::kSlotCount);
    EXPECT_EQ(nodes_[i]->splits_staged, 0);
  }
  auto again = R(leader).ProposeSplit(SplitCommand{kChildGroup, kSplitSlot}, now_);
  ASSERT_TRUE(again.ok());
  TickAll(3);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    SCOPED_TRACE("node " + std::to_string(ids_[i]));
    EXPECT_EQ(nodes_[i]->shard->slot_end(), kSplitSlot);
    EXPECT_EQ(nodes_[i]->split_index, again.index);
    ASSERT_NE(nodes_[i]->child, nullptr);
    EXPECT_EQ(nodes_[i]->child->store().conf_state().voters, (std::vector<raft::NodeId>{1, 2, 3, 4}));
  }
}

// A replica that was down through the split and is past the leader's log
// catches up from a snapshot of the smaller range: it drops the moved
// slots' keys and makes no child (the cluster gives it one separately).
TEST_F(ReplicaCluster, LaggingReplicaTakesTheSplitFromASnapshot) {
  for (raft::NodeId id : {1, 2, 3}) AddNode(id, {1, 2, 3}, /*compact=*/8, /*with_splitter=*/true);
  TickAll(60);
  MakeNode0Lead();
  ASSERT_TRUE(R(0).is_leader());
  const std::string kept = KeyOnSide("kept", false), moved = KeyOnSide("moved", true);
  EXPECT_EQ(Write(R(0), SetBatch(kept, "v")), "+OK\r\n");
  EXPECT_EQ(Write(R(0), SetBatch(moved, "v")), "+OK\r\n");
  TickAll(2);
  ASSERT_EQ(Get(2, moved), "v");
  down_ = {3};
  auto split = R(0).ProposeSplit(SplitCommand{kChildGroup, kSplitSlot}, now_);
  ASSERT_TRUE(split.ok());
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(Write(R(0), SetBatch(KeyOnSide("k" + std::to_string(i) + "_", false), "x")), "+OK\r\n");
  }
  ASSERT_GT(R(0).store().first_index(), split.index);  // the split entry is compacted away
  down_.clear();
  TickAll(20);
  TestNode& lagging = *nodes_[2];
  EXPECT_EQ(lagging.shard->applied_index(), nodes_[0]->shard->applied_index());
  EXPECT_EQ(lagging.shard->slot_end(), kSplitSlot);
  EXPECT_EQ(lagging.splits_staged, 0);
  EXPECT_EQ(lagging.child, nullptr);
  EXPECT_EQ(Get(2, moved), "<none>");
  EXPECT_EQ(Get(2, kept), "v");
  EXPECT_EQ(lagging.shard->KeyCount(0), nodes_[0]->shard->KeyCount(0));
  EXPECT_EQ(Get(0, moved), "v");  // the child's data on the nodes that split
}

// A committed entry whose apply cannot be written stops the node (a
// replica that skipped it would diverge silently, and could ship the
// divergence in its next snapshot). At restart the log applies it again.
// Applies staged into a worker round (ApplyRound) are invisible until the
// round is written: no answer, no published applied index, no stored value,
// and no image (Raft may ask for one from inside the round: applying a
// membership change sends appends) naming an index the store has not
// reached. Once written, all of them at once; the log append of the round
// and the applies go in one storage write.
TEST(ApplyRound, NothingOfAStagedApplyIsSeenBeforeItsWrite) {
  auto dir = std::filesystem::temp_directory_path() / ("shoal_apply_round_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    auto engine = std::move(storage::Engine::Open({.dir = dir.string(), .memory_budget_bytes = 32 << 20}).value());
    kv::Shard shard(engine.get(), 7, 0, storage::kSlotCount);
    ASSERT_TRUE(shard.Load().ok());
    kv::Limits limits;
    ReplicaOptions ro;
    ro.group = 7;
    ro.node_id = 1;
    ro.bootstrap_voters = {1};
    auto r = std::move(Replica::Open(engine.get(), ro, std::make_unique<KvStateMachine>(&shard, &limits)).value());
    int64_t now = 1'000'000;
    auto one_round = [&] {
      ApplyRound round(engine.get());
      std::vector<raft::Message> out;
      bool sync = false;
      ASSERT_TRUE(r->BeginReady(round.batch(), &out, &sync));
      r->ApplyReady(now, round);
      round.Flush();
      r->FinishReady(&out, now);
    };
    for (int i = 0; i < 20 && !r->is_leader(); ++i) {
      now += 50'000;
      r->Tick(now);
      while (r->HasReady()) one_round();
    }
    ASSERT_TRUE(r->is_leader());

    std::optional<std::string> reply;
    auto p = r->Propose(SetBatch("k", "v"), [&](bool ok, std::string text) { reply = ok ? text : "failed"; }, now);
    ASSERT_TRUE(p.ok());
    // Round 1 logs the entry; a single voter commits it once that is durable.
    one_round();
    ASSERT_FALSE(reply.has_value());
    // Round 2 applies it, staged behind the round's own log records.
    ASSERT_TRUE(r->HasReady());
    ApplyRound round(engine.get());
    std::vector<raft::Message> out;
    bool sync = false;
    ASSERT_TRUE(r->BeginReady(round.batch(), &out, &sync));
    r->ApplyReady(now, round);
    EXPECT_EQ(r->state_machine().applied_index(), p.index);  // in memory
    EXPECT_TRUE(shard.staged_unwritten());
    EXPECT_FALSE(reply.has_value());
    EXPECT_LT(r->published_applied(), p.index);
    std::string raw;
    EXPECT_EQ(engine->Get(storage::Cf::kData, storage::DataKey(0, "k"), &raw).code(), Code::kNotFound);
    auto refused = r->store().snapshot();
    EXPECT_FALSE(refused.ok());
    EXPECT_EQ(r->images_deferred(), 1u);

    const uint64_t seq_before = engine->write_seq();
    round.Flush();
    EXPECT_EQ(round.writes(), 1u);
    EXPECT_GT(engine->write_seq(), seq_before);
    EXPECT_EQ(reply, "+OK\r\n");
    EXPECT_EQ(r->published_applied(), p.index);
    EXPECT_FALSE(shard.staged_unwritten());
    EXPECT_TRUE(engine->Get(storage::Cf::kData, storage::DataKey(0, "k"), &raw).ok());
    auto image = r->store().snapshot();
    ASSERT_TRUE(image.ok());
    EXPECT_EQ(image->meta.index, p.index);
    r->FinishReady(&out, now);
  }
  std::filesystem::remove_all(dir);
}

// commit_lone_appends (durability none): a lone replica answers a write
// after one Ready round and one storage write, its log entry and its apply
// together; reopened from that write alone (a kill -9 right after it), it
// has the value, an applied index its log reaches, and goes on.
// One replica of group 7, alone, on an engine in a folder of its own,
// driven one ApplyRound at a time as node::Groups drives it; the engine is
// opened anew to model a kill -9 (nothing more is written).
struct LoneDisk {
  explicit LoneDisk(const std::string& name)
      : dir(std::filesystem::temp_directory_path() / (name + std::to_string(::getpid()))) {
    std::filesystem::remove_all(dir);
    ro.group = 7;
    ro.node_id = 1;
    ro.bootstrap_voters = {1};
  }
  ~LoneDisk() { std::filesystem::remove_all(dir); }
  std::unique_ptr<storage::Engine> OpenEngine() {
    return std::move(storage::Engine::Open({.dir = dir.string(), .memory_budget_bytes = 32 << 20}).value());
  }
  // One round; returns the storage writes it made. `alone`: the group has
  // no other member (nothing to send); else messages to them go nowhere.
  uint64_t Round(storage::Engine* engine, Replica& r, bool alone = true) {
    ApplyRound round(engine);
    std::vector<raft::Message> out;
    bool sync = false;
    if (!r.BeginReady(round, &out, &sync)) return 0;
    r.ApplyReady(now, round);
    round.Flush();
    r.FinishReady(&out, now);
    if (alone) {
      EXPECT_TRUE(out.empty());  // no one to send to
    }
    return round.writes();
  }
  void Lead(storage::Engine* engine, Replica& r) {
    for (int i = 0; i < 20 && !r.is_leader(); ++i) {
      now += 50'000;
      r.Tick(now);
      while (r.HasReady()) Round(engine, r);
    }
    ASSERT_TRUE(r.is_leader());
    while (r.HasReady()) Round(engine, r);
  }

  std::filesystem::path dir;
  kv::Limits limits;
  ReplicaOptions ro;
  int64_t now = 1'000'000;
};

TEST(ApplyRound, LoneReplicaLogsAndAppliesAWriteInOneStorageWrite) {
  LoneDisk d("shoal_lone_round_");
  d.ro.commit_lone_appends = true;
  raft::Index written = 0;
  {
    auto engine = d.OpenEngine();
    kv::Shard shard(engine.get(), 7, 0, storage::kSlotCount);
    ASSERT_TRUE(shard.Load().ok());
    auto r = std::move(Replica::Open(engine.get(), d.ro, std::make_unique<KvStateMachine>(&shard, &d.limits)).value());
    d.Lead(engine.get(), *r);
    for (int i = 0; i < 3; ++i) {
      std::optional<std::string> reply;
      auto p = r->Propose(SetBatch("k", "v" + std::to_string(i)), [&](bool ok, std::string text) { reply = ok ? text : "failed"; }, d.now);
      ASSERT_TRUE(p.ok());
      EXPECT_EQ(d.Round(engine.get(), *r), 1u);
      EXPECT_EQ(reply, "+OK\r\n");
      EXPECT_EQ(r->published_applied(), p.index);
      EXPECT_FALSE(r->HasReady());  // no second round to apply it
      // Applied in the write that would have logged it: the log starts
      // after it instead (RaftStore::FinishDeferred).
      EXPECT_EQ(r->store().first_index(), p.index + 1);
      written = p.index;
    }
    // A write that changes nothing leaves the stored applied index alone;
    // with the log starting past it, the round records it.
    std::optional<std::string> reply;
    auto p = r->Propose(WriteBatchOf({"del", "missing"}), [&](bool ok, std::string text) { reply = ok ? text : "failed"; }, d.now);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(d.Round(engine.get(), *r), 1u);
    EXPECT_EQ(reply, ":0\r\n");
    EXPECT_EQ(r->store().first_index(), p.index + 1);
    written = p.index;
    std::string prefix(1, 'L');
    for (int i = 7; i >= 0; --i) prefix.push_back(static_cast<char>(uint64_t{7} >> (8 * i)));
    auto it = engine->NewIterator(storage::Cf::kRaft);
    it->Seek(prefix);
    EXPECT_FALSE(it->Valid() && it->key().starts_with(prefix)) << "a log record is left";
    // Gone without a shutdown: nothing more is written.
  }
  {
    auto engine = d.OpenEngine();
    kv::Shard shard(engine.get(), 7, 0, storage::kSlotCount);
    ASSERT_TRUE(shard.Load().ok());
    d.ro.bootstrap_voters.clear();
    auto r = std::move(Replica::Open(engine.get(), d.ro, std::make_unique<KvStateMachine>(&shard, &d.limits)).value());
    EXPECT_EQ(r->state_machine().applied_index(), written);
    EXPECT_GE(r->store().last_index(), written);
    std::string raw;
    EXPECT_TRUE(engine->Get(storage::Cf::kData, storage::DataKey(0, "k"), &raw).ok());
    d.Lead(engine.get(), *r);
    std::optional<std::string> reply;
    auto p = r->Propose(SetBatch("k2", "after"), [&](bool ok, std::string text) { reply = ok ? text : "failed"; }, d.now);
    ASSERT_TRUE(p.ok());
    EXPECT_GT(p.index, written);
    EXPECT_EQ(d.Round(engine.get(), *r), 1u);
    EXPECT_EQ(reply, "+OK\r\n");
  }
}

// Write hints are for followers: a group of one proposes its writes without
// them (its second SET of a key would otherwise carry the key's state).
TEST(ApplyRound, LoneLeaderProposesNoWriteHints) {
  LoneDisk d("shoal_lone_hints_");
  auto engine = d.OpenEngine();
  kv::Shard shard(engine.get(), 7, 0, storage::kSlotCount);
  ASSERT_TRUE(shard.Load().ok());
  auto r = std::move(Replica::Open(engine.get(), d.ro, std::make_unique<KvStateMachine>(&shard, &d.limits)).value());
  d.Lead(engine.get(), *r);
  raft::Index last = 0;
  for (int i = 0; i < 2; ++i) {
    std::optional<std::string> reply;
    auto p = r->Propose(SetBatch("k", "v" + std::to_string(i)),
                        [&](bool ok, std::string text) { reply = ok ? text : "failed"; }, d.now);
    ASSERT_TRUE(p.ok());
    for (int k = 0; k < 4 && r->HasReady(); ++k) d.Round(engine.get(), *r);
    EXPECT_EQ(reply, "+OK\r\n");
    last = p.index;
  }
  // The hint trailer that follows the batch's one entry.
  auto trailer = [&](raft::Index i) {
    auto ents = r->store().entries(i, i + 1, UINT64_MAX);
    EXPECT_TRUE(ents.ok() && ents->size() == 1u);
    int protocol = 0;
    size_t n = 0;
    std::string_view rest;
    EXPECT_TRUE(WalkKvBatch((*ents)[0].data, &protocol, [&](std::string_view) { return ++n > 0; }, &rest));
    EXPECT_EQ(n, 1u);
    return std::string(rest);
  };
  EXPECT_EQ(trailer(last), "") << "a hint trailer in a group of one";
  EXPECT_EQ(shard.hinted_puts(), 0u);
  // With a learner (which never answers here), the group is no longer one:
  // the next SET of the key carries its state again.
  raft::ConfChange cc{{raft::ConfChangeSingle{raft::ConfChangeType::kAddLearner, 2}}};
  ASSERT_TRUE(r->ProposeConfChange(cc).ok());
  for (int k = 0; k < 8 && r->HasReady(); ++k) d.Round(engine.get(), *r, /*alone=*/false);
  ASSERT_EQ(r->published_conf()->learners, std::vector<raft::NodeId>{2});
  auto p = r->Propose(SetBatch("k", "v2"), [](bool, std::string) {}, d.now);
  ASSERT_TRUE(p.ok());
  for (int k = 0; k < 8 && r->HasReady(); ++k) d.Round(engine.get(), *r, /*alone=*/false);
  EXPECT_FALSE(trailer(p.index).empty()) << "no hint once the group has a learner";
  EXPECT_EQ(shard.hinted_puts(), 1u);  // the leader applies its own hint
}

// Log compaction never moves the log start past the stored applied index:
// writes that change nothing (DEL of a missing key) do not rewrite that
// record, so compaction records it. Reopened (a kill -9 after the last
// write), the replica finds every compacted entry applied.
TEST(ApplyRound, CompactionPastAppliesThatChangedNothingRecordsTheAppliedIndex) {
  LoneDisk d("shoal_compact_noop_");
  d.ro.compact_entries = 4;
  raft::Index first = 0;
  {
    auto engine = d.OpenEngine();
    kv::Shard shard(engine.get(), 7, 0, storage::kSlotCount);
    ASSERT_TRUE(shard.Load().ok());
    auto r = std::move(Replica::Open(engine.get(), d.ro, std::make_unique<KvStateMachine>(&shard, &d.limits)).value());
    d.Lead(engine.get(), *r);
    ASSERT_TRUE(r->Propose(SetBatch("k", "v"), [](bool, std::string) {}, d.now).ok());
    while (r->HasReady()) d.Round(engine.get(), *r);
    for (int i = 0; i < 12; ++i) {
      std::optional<std::string> reply;
      auto p = r->Propose(WriteBatchOf({"del", "missing"}), [&](bool ok, std::string text) { reply = ok ? text : "failed"; }, d.now);
      ASSERT_TRUE(p.ok());
      for (int k = 0; k < 4 && r->HasReady(); ++k) d.Round(engine.get(), *r);
      EXPECT_EQ(reply, ":0\r\n");
    }
    first = r->store().first_index();
    EXPECT_GT(first, 8u);  // compacted past the SET
  }
  {
    auto engine = d.OpenEngine();
    kv::Shard shard(engine.get(), 7, 0, storage::kSlotCount);
    ASSERT_TRUE(shard.Load().ok());
    EXPECT_GE(shard.applied_index() + 1, first);
    d.ro.bootstrap_voters.clear();
    auto r = std::move(Replica::Open(engine.get(), d.ro, std::make_unique<KvStateMachine>(&shard, &d.limits)).value());
    EXPECT_EQ(r->store().first_index(), first);
  }
}

// The directory of a death test's store: the dying child is this program
// run again, and takes it from the parent's environment, so that the
// parent removes what it wrote.
std::filesystem::path DeathDir(const char* name) {
  if (std::getenv(name) == nullptr) {
    auto mine = std::filesystem::temp_directory_path() / (std::string(name) + "_" + std::to_string(::getpid()));
    ::setenv(name, mine.c_str(), 1);
  }
  return std::getenv(name);
}

TEST(ReplicaDeathTest, FailedApplyWriteStopsTheNode) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::filesystem::path dir = DeathDir("SHOAL_REPLICA_DEATH_DIR");
  std::filesystem::remove_all(dir);
  auto run = [&] {
    auto real = std::move(storage::Engine::Open({.dir = dir.string(), .memory_budget_bytes = 32 << 20}).value());
    storage::FaultEngine engine(real.get());
    kv::Shard shard(&engine, 7, 0, storage::kSlotCount);
    SHOAL_CHECK(shard.Load().ok());
    kv::Limits limits;
    ReplicaOptions ro;
    ro.group = 7;
    ro.node_id = 1;
    ro.bootstrap_voters = {1};
    auto r = std::move(Replica::Open(&engine, ro, std::make_unique<KvStateMachine>(&shard, &limits)).value());
    auto round = [&] {
      auto batch = engine.NewBatch();
      std::vector<raft::Message> out;
      bool sync = false;
      if (!r->BeginReady(*batch, &out, &sync)) return false;
      if (batch->Count() > 0) SHOAL_CHECK(engine.Write(*batch).ok());
      engine.FailNextWrites(1);  // the apply's write, if this round applies anything
      r->ApplyReady(1'000'000);
      engine.FailNextWrites(0);
      r->FinishReady(&out, 1'000'000);
      return true;
    };
    for (int i = 0; i < 20 && !r->is_leader(); ++i) {
      r->Tick(1'000'000 + i * 50'000);
      while (round()) {
      }
    }
    SHOAL_CHECK(r->is_leader());
    SHOAL_CHECK(r->Propose(SetBatch("k", "v"), [](bool, std::string) {}, 2'000'000).ok());
    for (int i = 0; i < 10; ++i) {
      if (!round()) break;
    }
    SHOAL_CHECK(engine.writes_failed() > 0);  // the write did fail...
    std::fprintf(stderr, "went on after a failed apply\n");  // ... and the node went on
    std::exit(0);
  };
  EXPECT_DEATH(run(), "apply write failed");
  std::filesystem::remove_all(dir);
}

// Whether a group has state here is read from disk before a replica is
// created over it (a split's child, an empty replica waiting for an
// image): a read that fails is no answer, and taken for "none" it would
// let a new replica overwrite the old one's log and votes.
TEST(ReplicaDeathTest, AStateCheckThatCannotReadStopsTheNode) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::filesystem::path dir = DeathDir("SHOAL_STATE_CHECK_DEATH_DIR");
  std::filesystem::remove_all(dir);
  auto run = [&] {
    auto real = std::move(storage::Engine::Open({.dir = dir.string(), .memory_budget_bytes = 32 << 20}).value());
    storage::FaultEngine engine(real.get());
    SHOAL_CHECK(!storage::RaftStore::HasState(&engine, 7));  // none yet: a plain "no"
    engine.FailNextGets(1);
    const bool has = storage::RaftStore::HasState(&engine, 7);
    std::fprintf(stderr, "a failed read answered %d\n", has);
    std::exit(0);
  };
  EXPECT_DEATH(run(), "reading the Raft state of group 7 failed: IOError: injected read failure");
  std::filesystem::remove_all(dir);
}

// A split whose child's state cannot be read on this node stops the node
// (its log intact: at restart the split applies again) rather than only
// shrinking the parent: with one more member short of its child (down
// across the split, or failing alike) the child could elect no leader and
// its slots would have no owner (the simulation's split tests under
// storage faults found it).
TEST(ReplicaDeathTest, ASplitWhoseChildCannotBeReadStopsTheNode) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::filesystem::path dir = DeathDir("SHOAL_SPLIT_DEATH_DIR");
  std::filesystem::remove_all(dir);
  auto run = [&] {
    auto real = std::move(storage::Engine::Open({.dir = dir.string(), .memory_budget_bytes = 32 << 20}).value());
    storage::FaultEngine engine(real.get());
    kv::Shard parent(&engine, 3, 0, storage::kSlotCount);
    SHOAL_CHECK(parent.Load().ok());
    raft::ConfState conf;
    conf.voters = {1, 2, 3};
    SplitCommand split;
    split.child = 4;
    split.slot = 8000;
    auto batch = engine.NewBatch();
    engine.FailNextIterators(1);  // the child's Raft state, read as a store opens it
    Status s = StageSplitChild(&engine, parent, split, conf, 10, *batch);
    std::fprintf(stderr, "the split went on: %s\n", s.ToString().c_str());
    std::exit(0);
  };
  EXPECT_DEATH(run(), "stopping: apply failed");  // after "group 3: applying the log up to 10 failed" (its log)
  std::filesystem::remove_all(dir);
}

// A replica's incarnation (its Raft member id, common/member_id.h) is kept
// on disk with its state: a restart reopens the same member, no other
// member opens over that state, and deleting the replica leaves the record
// behind, marked deleted, as it leaves the term and vote.
TEST(ReplicaIncarnation, KeptWithTheStateAndAfterIt) {
  auto dir = std::filesystem::temp_directory_path() / ("shoal_replica_incarnation_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto engine = std::move(storage::Engine::Open({.dir = dir.string(), .memory_budget_bytes = 32 << 20}).value());
  kv::Limits limits;
  std::vector<std::unique_ptr<kv::Shard>> shards;
  auto open = [&](uint64_t group, uint64_t incarnation, bool founder) {
    shards.push_back(std::make_unique<kv::Shard>(engine.get(), static_cast<uint32_t>(group), 0, storage::kSlotCount));
    EXPECT_TRUE(shards.back()->Load().ok());
    ReplicaOptions ro;
    ro.group = group;
    ro.node_id = MemberIdOf(1, incarnation);
    ro.incarnation = incarnation;
    if (founder) ro.bootstrap_voters = {ro.node_id};
    return Replica::Open(engine.get(), ro, std::make_unique<KvStateMachine>(shards.back().get(), &limits));
  };
  auto destroy = [&](Replica& r) {
    auto batch = engine->NewBatch();
    ASSERT_TRUE(r.StageDestroy(*batch).ok());
    ASSERT_TRUE(engine->Write(*batch).ok());
  };
  {
    auto r = open(8, 0, true);  // incarnation 0 (the node id): no record needed, none written
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto stored = ReadIncarnation(engine.get(), 8);
    ASSERT_TRUE(stored.ok());
    EXPECT_FALSE(stored->found);
  }
  {
    auto r = open(7, 2, true);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ((*r)->node_id(), MemberIdOf(1, 2));
    EXPECT_NE((*r)->node_id(), 1u);
    EXPECT_EQ((*r)->store().conf_state().voters, std::vector<raft::NodeId>{MemberIdOf(1, 2)});
  }
  auto stored = ReadIncarnation(engine.get(), 7);
  ASSERT_TRUE(stored.ok() && stored->found);
  EXPECT_EQ(stored->member, MemberIdOf(1, 2));
  EXPECT_EQ(stored->incarnation, 2u);
  EXPECT_FALSE(stored->retired);
  // Incarnation 2 holds state here: no other member opens over it.
  for (uint64_t other : {0, 1, 3}) {
    auto over = open(7, other, false);
    ASSERT_FALSE(over.ok()) << other;
    EXPECT_NE(over.status().ToString().find("holds member"), std::string::npos) << over.status().ToString();
  }
  {
    auto r = open(7, 2, false);  // a restart of the same member
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_FALSE((*r)->store().conf_state().voters.empty());
    destroy(**r);
  }
  stored = ReadIncarnation(engine.get(), 7);
  ASSERT_TRUE(stored.ok() && stored->found);
  EXPECT_EQ(stored->member, MemberIdOf(1, 2));
  EXPECT_TRUE(stored->retired);
  {
    auto r = open(7, 3, false);  // the next incarnation starts empty, and is recorded
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE((*r)->store().conf_state().voters.empty());
  }
  stored = ReadIncarnation(engine.get(), 7);
  ASSERT_TRUE(stored.ok() && stored->found);
  EXPECT_EQ(stored->member, MemberIdOf(1, 3));
  EXPECT_FALSE(stored->retired);
  shards.clear();
  engine.reset();
  std::filesystem::remove_all(dir);
}

TEST(SplitCommand, RoundTripAndRejectsOtherData) {
  SplitCommand in{kChildGroup, 1234};
  std::string enc = in.Encode();
  SplitCommand out;
  ASSERT_TRUE(SplitCommand::Decode(enc, &out));
  EXPECT_EQ(out.child, kChildGroup);
  EXPECT_EQ(out.slot, 1234);
  for (size_t cut = 0; cut < enc.size(); ++cut) EXPECT_FALSE(SplitCommand::Decode(enc.substr(0, cut), &out));
  EXPECT_FALSE(SplitCommand::Decode(enc + "x", &out));
  EXPECT_FALSE(SplitCommand::Decode(SplitCommand{0, 5}.Encode(), &out));  // no group 0
  EXPECT_FALSE(SplitCommand::Decode(SetBatch("k", "v"), &out));
}

// A lone leader's joined writes: one entry, one storage write, their own
// replies; a batch with hints, or one past the entry's bytes, goes alone.
TEST(ApplyRound, LoneLeaderJoinsQueuedWritesIntoOneEntry) {
  LoneDisk d("shoal_lone_joined_");
  d.ro.commit_lone_appends = true;
  auto engine = d.OpenEngine();
  kv::Shard shard(engine.get(), 7, 0, storage::kSlotCount);
  ASSERT_TRUE(shard.Load().ok());
  auto r = std::move(Replica::Open(engine.get(), d.ro, std::make_unique<KvStateMachine>(&shard, &d.limits)).value());
  d.Lead(engine.get(), *r);
  std::vector<std::string> replies;
  auto queue = [&](std::string batch) {
    const size_t i = replies.size();
    replies.emplace_back("<no answer>");
    r->ProposeJoined(std::move(batch), [&replies, i](raft::Proposal refused, bool applied, std::string text) {
      replies[i] = !refused.ok() ? "refused" : applied ? text : "failed " + text;
    }, d.now);
  };
  for (int i = 0; i < 10; ++i) queue(SetBatch("k" + std::to_string(i), "v"));
  raft::Index before = r->raft().log().last_index();
  EXPECT_EQ(d.Round(engine.get(), *r), 1u);
  EXPECT_EQ(r->raft().log().last_index(), before + 1);
  EXPECT_EQ(replies, std::vector<std::string>(10, "+OK\r\n"));
  EXPECT_EQ(shard.KeyCount(0), 10);

  // With hints (a trailer naming entries by position), and past 1 MiB: alone.
  replies.clear();
  kv::Entry hinted;
  {
    std::vector<kv::Entry> out;
    int protocol = 0;
    ASSERT_TRUE(DecodeKvBatch(SetBatch("h", "v"), &out, &protocol));
    hinted = out[0];
  }
  hinted.hints.push_back(kv::KeyHint{0, false, 0});
  queue(SetBatch("a", "1"));
  queue(EncodeKvBatch({hinted}, 2));
  queue(SetBatch("b", "2"));
  queue(SetBatch("big1", std::string(600 << 10, 'x')));
  queue(SetBatch("big2", std::string(600 << 10, 'y')));
  before = r->raft().log().last_index();
  while (r->HasReady()) d.Round(engine.get(), *r);
  EXPECT_EQ(r->raft().log().last_index(), before + 4);  // a | hinted | b, big1 | big2
  EXPECT_EQ(replies, std::vector<std::string>(5, "+OK\r\n"));
  EXPECT_EQ(shard.KeyCount(0), 15);
}

TEST(KvBatch, JoinsBatchesWithoutHints) {
  kv::Entry a{5, 2, 99, {"x", "y"}}, b{6, 0, 100, {"z"}};
  const std::string one = EncodeKvBatch({a, b}, 2), two = EncodeKvBatch({b}, 2);
  uint32_t count = 0;
  char protocol = 0;
  ASSERT_TRUE(JoinableKvBatch(one, &count, &protocol));
  EXPECT_EQ(count, 2u);
  EXPECT_EQ(protocol, 2);
  const std::vector<std::string_view> parts = {one, two};
  const std::string joined = JoinKvBatches(parts);
  std::vector<kv::Entry> out;
  int p = 0;
  ASSERT_TRUE(DecodeKvBatch(joined, &out, &p));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].args, a.args);
  EXPECT_EQ(out[1].op, b.op);
  EXPECT_EQ(out[2].now_ms, b.now_ms);
  EXPECT_EQ(joined, EncodeKvBatch({a, b, b}, 2));
  // Not joinable: hints, a cut batch, no entries, garbage.
  kv::Entry h = a;
  h.hints.push_back(kv::KeyHint{0, true, 0});
  EXPECT_FALSE(JoinableKvBatch(EncodeKvBatch({h}, 2), &count, &protocol));
  for (size_t cut = 0; cut < one.size(); ++cut) EXPECT_FALSE(JoinableKvBatch(one.substr(0, cut), &count, &protocol)) << cut;
  EXPECT_FALSE(JoinableKvBatch(EncodeKvBatch(std::vector<kv::Entry>{}, 2), &count, &protocol));
  EXPECT_FALSE(JoinableKvBatch("garbage!", &count, &protocol));
}

TEST(KvBatch, RoundTripAndRejectsGarbage) {
  kv::Entry e{5, 2, 99, {"x", "y"}};
  std::string enc = EncodeKvBatch({e, e}, 3);
  std::vector<kv::Entry> out;
  int protocol = 0;
  ASSERT_TRUE(DecodeKvBatch(enc, &out, &protocol));
  EXPECT_EQ(protocol, 3);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].args, e.args);
  for (size_t cut = 0; cut < enc.size(); ++cut) EXPECT_FALSE(DecodeKvBatch(enc.substr(0, cut), &out, &protocol));
}

}  // namespace
}  // namespace shoal::replica
