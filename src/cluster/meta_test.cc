#include "cluster/meta.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "cluster/cluster_internal.h"
#include "common/member_id.h"
#include "storage/fault_engine.h"

namespace shoal::cluster {
namespace {

proto::NodeInfo Node(uint64_t id) {
  proto::NodeInfo n;
  n.set_id(id);
  n.set_host("127.0.0.1");
  n.set_port(static_cast<uint32_t>(7000 + id));
  n.set_peer_port(static_cast<uint32_t>(17000 + id));
  return n;
}

// Four nodes; shard 1 holds [0, 8192) and shard 5 [8192, 16384), each on
// voters 1-3 with learner 4, led by 2, after an unsafe recovery on 2.
proto::MetaState TwoShards() {
  proto::MetaState m = InitialMeta(42, Node(1), 2, 3);
  for (uint64_t id : {2, 3, 4}) *m.add_nodes() = Node(id);
  for (auto& s : *m.mutable_shards()) {
    s.clear_replicas();
    for (uint64_t r : {1, 2, 3}) s.add_replicas(r);
    s.add_learners(4);
    s.set_preferred_leader(2);
    s.set_recovery(3);
    s.set_recovered_on(2);
  }
  m.mutable_shards(1)->set_id(5);  // ids need not be dense: the child takes max + 1
  return m;
}

proto::MetaCommand Split(uint64_t parent, uint32_t slot) {
  proto::MetaCommand cmd;
  cmd.mutable_split_shard()->set_parent(parent);
  cmd.mutable_split_shard()->set_slot(slot);
  return cmd;
}

proto::MetaCommand SplitDone(uint64_t parent) {
  proto::MetaCommand cmd;
  cmd.set_split_done(parent);
  return cmd;
}

const proto::ShardInfo* Find(const proto::MetaState& m, uint64_t id) {
  for (const auto& s : m.shards()) {
    if (s.id() == id) return &s;
  }
  return nullptr;
}

std::vector<uint64_t> Ids(const google::protobuf::RepeatedField<uint64_t>& f) {
  return {f.begin(), f.end()};
}

TEST(MetaFeatures, ANewClusterUsesEveryFormatItsBuildReadsAndFeaturesOnlyGrow) {
  proto::MetaState m = InitialMeta(42, Node(1), 2, 3);
  EXPECT_EQ(m.features(), kFeaturesKnown);
  EXPECT_EQ(FeatureNames(m.features()), "write-hints,split-child");
  // Metadata from a build before features: none, until enabled.
  m.clear_features();
  EXPECT_EQ(FeatureNames(m.features()), "none");
  const uint64_t epoch = m.epoch();
  proto::MetaCommand cmd;
  cmd.set_enable_features(kFeatureWriteHints);
  EXPECT_TRUE(ApplyMetaCommand(cmd, &m));
  EXPECT_EQ(m.features(), kFeatureWriteHints);
  EXPECT_EQ(m.epoch(), epoch + 1);
  EXPECT_FALSE(ApplyMetaCommand(cmd, &m));  // already on: nothing changes
  EXPECT_EQ(m.epoch(), epoch + 1);
  cmd.set_enable_features(1ull << 40);  // a later build's: kept, shown as unknown
  EXPECT_TRUE(ApplyMetaCommand(cmd, &m));
  EXPECT_EQ(FeatureNames(m.features()), "write-hints,unknown");
}

TEST(MetaSplit, SplitShardCreatesTheChildAndShrinksTheParent) {
  proto::MetaState m = TwoShards();
  const uint64_t epoch = m.epoch(), parent_epoch = Find(m, 1)->epoch();
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 3000), &m));
  ASSERT_EQ(m.shards_size(), 3);
  EXPECT_EQ(m.epoch(), epoch + 1);
  const proto::ShardInfo* parent = Find(m, 1);
  ASSERT_NE(parent, nullptr);
  EXPECT_EQ(parent->slot_begin(), 0u);
  EXPECT_EQ(parent->slot_end(), 3000u);
  EXPECT_EQ(parent->split_child(), 6u);
  EXPECT_EQ(parent->epoch(), parent_epoch + 1);
  EXPECT_EQ(parent->recovery(), 3u);  // the parent's own history stays
  const proto::ShardInfo* child = Find(m, 6);
  ASSERT_NE(child, nullptr);
  EXPECT_EQ(child->slot_begin(), 3000u);
  EXPECT_EQ(child->slot_end(), 8192u);
  EXPECT_EQ(Ids(child->replicas()), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(Ids(child->learners()), (std::vector<uint64_t>{4}));
  EXPECT_EQ(child->preferred_leader(), 3u);  // the parent's next voter: the halves lead apart
  EXPECT_EQ(child->epoch(), 1u);
  EXPECT_EQ(child->split_child(), 0u);
  EXPECT_EQ(child->recovery(), 0u);  // a new group: no recovery of it happened
  EXPECT_EQ(child->recovered_on(), 0u);
  const proto::ShardInfo* other = Find(m, 5);
  EXPECT_EQ(other->slot_begin(), 8192u);
  EXPECT_EQ(other->split_child(), 0u);
}

TEST(MetaSplit, ChildIsLedFromTheParentsNextVoter) {
  // parent's preferred leader -> the child's (voters 1, 2, 3 in id order)
  const std::vector<std::pair<uint64_t, uint64_t>> cases = {{1, 2}, {2, 3}, {3, 1}};
  for (auto [parent_leader, child_leader] : cases) {
    proto::MetaState m = TwoShards();
    m.mutable_shards(0)->set_preferred_leader(parent_leader);
    ASSERT_TRUE(ApplyMetaCommand(Split(1, 3000), &m));
    EXPECT_EQ(Find(m, 1)->preferred_leader(), parent_leader);
    EXPECT_EQ(Find(m, 6)->preferred_leader(), child_leader) << parent_leader;
  }
  proto::MetaState alone = TwoShards();  // one voter: it leads both
  alone.mutable_shards(0)->clear_replicas();
  alone.mutable_shards(0)->add_replicas(2);
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 3000), &alone));
  EXPECT_EQ(Find(alone, 6)->preferred_leader(), 2u);
}

TEST(MetaSplit, InvalidSplitsChangeNothing) {
  proto::MetaState split_once = TwoShards();
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 3000), &split_once));  // 1: [0, 3000) -> 6: [3000, 8192)
  proto::MetaState near_max = TwoShards();
  near_max.mutable_shards(1)->set_id(kMaxShardId - 1);
  struct Case {
    const char* name;
    proto::MetaState state;
    proto::MetaCommand cmd;
  };
  const std::vector<Case> cases = {
      {"slot at the parent's begin", TwoShards(), Split(1, 0)},
      {"slot at the parent's end", TwoShards(), Split(1, 8192)},
      {"slot past the parent's end", TwoShards(), Split(1, 9000)},
      {"slot below the parent's begin", TwoShards(), Split(5, 100)},
      {"slot past every slot", TwoShards(), Split(5, 20000)},
      {"unknown parent", TwoShards(), Split(9, 100)},
      {"parent of a pending split", split_once, Split(1, 1000)},
      {"child of a pending split", split_once, Split(6, 5000)},
      {"no shard id left for the child", near_max, Split(1, 3000)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    proto::MetaState m = c.state;
    EXPECT_FALSE(ApplyMetaCommand(c.cmd, &m));
    EXPECT_EQ(m.SerializeAsString(), c.state.SerializeAsString());
  }
  // A shard beside a pending split may split.
  proto::MetaState m = split_once;
  ASSERT_TRUE(ApplyMetaCommand(Split(5, 10000), &m));
  EXPECT_EQ(Find(m, 7)->slot_begin(), 10000u);
  // The highest id a shard may have is still allowed for the child.
  proto::MetaState max = TwoShards();
  max.mutable_shards(1)->set_id(kMaxShardId - 2);
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 3000), &max));
  EXPECT_NE(Find(max, kMaxShardId - 1), nullptr);
}

TEST(MetaSplit, SplitDoneClearsThePendingSplit) {
  proto::MetaState m = TwoShards();
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 3000), &m));
  for (uint64_t id : {6, 5, 9}) {  // the child, a shard not splitting, an unknown one
    proto::MetaState before = m;
    EXPECT_FALSE(ApplyMetaCommand(SplitDone(id), &m)) << id;
    EXPECT_EQ(m.SerializeAsString(), before.SerializeAsString()) << id;
  }
  const uint64_t epoch = m.epoch();
  ASSERT_TRUE(ApplyMetaCommand(SplitDone(1), &m));
  EXPECT_EQ(Find(m, 1)->split_child(), 0u);
  EXPECT_EQ(Find(m, 1)->slot_end(), 3000u);
  EXPECT_EQ(m.epoch(), epoch + 1);
  EXPECT_FALSE(ApplyMetaCommand(SplitDone(1), &m));  // once
  // Parent and child may split again.
  ASSERT_TRUE(ApplyMetaCommand(Split(6, 5000), &m));
  EXPECT_EQ(Find(m, 6)->split_child(), 7u);
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 1000), &m));
  EXPECT_EQ(Find(m, 1)->split_child(), 8u);
}

// A placement change (set_shard) replaces the shard's membership but not
// the split under way, and must name the shard's current range.
TEST(MetaSplit, SetShardKeepsTheSplitChild) {
  proto::MetaState m = TwoShards();
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 3000), &m));
  proto::MetaCommand stale;
  *stale.mutable_set_shard() = *Find(TwoShards(), 1);  // the range before the split
  EXPECT_FALSE(ApplyMetaCommand(stale, &m));
  proto::MetaCommand set;
  proto::ShardInfo* s = set.mutable_set_shard();
  *s = *Find(m, 1);
  s->clear_replicas();
  for (uint64_t r : {1, 2, 4}) s->add_replicas(r);
  s->clear_learners();
  s->set_split_child(0);
  ASSERT_TRUE(ApplyMetaCommand(set, &m));
  EXPECT_EQ(Ids(Find(m, 1)->replicas()), (std::vector<uint64_t>{1, 2, 4}));
  EXPECT_EQ(Find(m, 1)->split_child(), 6u);
  s->set_split_child(99);  // nor can it name another child
  ASSERT_TRUE(ApplyMetaCommand(set, &m));
  EXPECT_EQ(Find(m, 1)->split_child(), 6u);
}

// set_shards (an unsafe recovery of both halves of a split under way)
// applies every shard or none.
TEST(MetaSplit, SetShardsIsAllOrNothing) {
  proto::MetaState m = TwoShards();
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 3000), &m));
  auto recovered = [&](uint64_t id) {
    proto::ShardInfo s = *Find(m, id);
    s.clear_replicas();
    s.clear_learners();
    s.add_replicas(3);
    s.set_preferred_leader(3);
    s.set_recovery(s.recovery() + 1);
    s.set_recovered_on(3);
    return s;
  };
  proto::MetaCommand both;
  *both.mutable_set_shards()->add_shards() = recovered(1);
  proto::ShardInfo bad = recovered(6);
  bad.set_slot_end(bad.slot_end() - 1);  // not the child's range
  *both.mutable_set_shards()->add_shards() = bad;
  const proto::MetaState before = m;
  EXPECT_FALSE(ApplyMetaCommand(both, &m));
  EXPECT_EQ(m.SerializeAsString(), before.SerializeAsString());
  *both.mutable_set_shards()->mutable_shards(1) = recovered(6);
  ASSERT_TRUE(ApplyMetaCommand(both, &m));
  for (uint64_t id : {1, 6}) {
    EXPECT_EQ(Ids(Find(m, id)->replicas()), (std::vector<uint64_t>{3})) << id;
    EXPECT_EQ(Find(m, id)->recovered_on(), 3u) << id;
    EXPECT_EQ(Find(m, id)->recovery(), Find(before, id)->recovery() + 1) << id;
  }
  EXPECT_EQ(Find(m, 1)->split_child(), 6u);  // the split is still under way
  EXPECT_FALSE(ApplyMetaCommand(proto::MetaCommand(), &m));
  proto::MetaCommand none;
  none.mutable_set_shards();
  EXPECT_FALSE(ApplyMetaCommand(none, &m));
}

proto::MetaCommand MetaRecovered(uint64_t recovery, uint64_t node) {
  proto::MetaCommand cmd;
  cmd.mutable_meta_recovered()->set_recovery(recovery);
  cmd.mutable_meta_recovered()->set_node(node);
  return cmd;
}

TEST(MetaRecovery, MakesTheSurvivorTheOnlyWantedMetaVoter) {
  proto::MetaState m = TwoShards();
  for (uint64_t v : {1, 2, 3}) m.add_meta_voters(v);
  const uint64_t epoch = m.epoch();
  ASSERT_TRUE(ApplyMetaCommand(MetaRecovered(1, 3), &m));
  EXPECT_EQ(Ids(m.meta_voters()), (std::vector<uint64_t>{3}));
  EXPECT_EQ(m.meta_recovery(), 1u);
  EXPECT_EQ(m.meta_recovered_on(), 3u);
  EXPECT_GT(m.epoch(), epoch);
  // Shards and nodes are left as they were: the planner and the operator
  // take it from there.
  EXPECT_EQ(m.nodes_size(), 4);
  EXPECT_EQ(Ids(Find(m, 1)->replicas()), (std::vector<uint64_t>{1, 2, 3}));
}

TEST(MetaRecovery, OnlyALaterRecoveryOnAKnownNodeApplies) {
  proto::MetaState m = TwoShards();
  for (uint64_t v : {1, 2, 3}) m.add_meta_voters(v);
  ASSERT_TRUE(ApplyMetaCommand(MetaRecovered(2, 1), &m));
  const std::string before = m.SerializeAsString();
  EXPECT_FALSE(ApplyMetaCommand(MetaRecovered(2, 3), &m));  // the same number again
  EXPECT_FALSE(ApplyMetaCommand(MetaRecovered(1, 3), &m));  // an older one
  EXPECT_FALSE(ApplyMetaCommand(MetaRecovered(3, 9), &m));  // no such node
  proto::MetaCommand removed;
  removed.mutable_set_node_state()->set_node(4);
  removed.mutable_set_node_state()->set_state(proto::NODE_REMOVED);
  ASSERT_TRUE(ApplyMetaCommand(removed, &m));
  const std::string after_removal = m.SerializeAsString();
  EXPECT_NE(before, after_removal);
  EXPECT_FALSE(ApplyMetaCommand(MetaRecovered(3, 4), &m));  // a removed node
  EXPECT_EQ(m.SerializeAsString(), after_removal);
  ASSERT_TRUE(ApplyMetaCommand(MetaRecovered(3, 2), &m));
  EXPECT_EQ(Ids(m.meta_voters()), (std::vector<uint64_t>{2}));
}

TEST(MetaSplit, ChildIdIsAboveTheProposersFloor) {
  proto::MetaState m = TwoShards();
  proto::MetaCommand cmd = Split(1, 100);
  cmd.mutable_split_shard()->set_min_child(9);  // group 9 is led somewhere, unknown to this metadata
  ASSERT_TRUE(ApplyMetaCommand(cmd, &m));
  EXPECT_EQ(Find(m, 1)->split_child(), 9u);
  ASSERT_NE(Find(m, 9), nullptr);
  proto::MetaCommand far = Split(5, 9000);
  far.mutable_split_shard()->set_min_child(kMaxShardId);  // none left
  const std::string before = m.SerializeAsString();
  EXPECT_FALSE(ApplyMetaCommand(far, &m));
  EXPECT_EQ(m.SerializeAsString(), before);
}

TEST(MetaSplit, AnExactChildIdIsRefusedWhenTaken) {
  proto::MetaState m = TwoShards();
  proto::MetaCommand taken = Split(1, 100);
  taken.mutable_split_shard()->set_child(5);  // shard 5 exists
  const std::string before = m.SerializeAsString();
  EXPECT_FALSE(ApplyMetaCommand(taken, &m));
  EXPECT_EQ(m.SerializeAsString(), before);
  proto::MetaCommand exact = Split(1, 100);
  exact.mutable_split_shard()->set_child(3);  // below the highest id: still exactly 3
  exact.mutable_split_shard()->set_min_child(9);
  ASSERT_TRUE(ApplyMetaCommand(exact, &m));
  EXPECT_EQ(Find(m, 1)->split_child(), 3u);
  ASSERT_NE(Find(m, 3), nullptr);
  EXPECT_EQ(Find(m, 3)->slot_begin(), 100u);
  EXPECT_EQ(Find(m, 3)->slot_end(), 8192u);
}

// A split the metadata lost (an unsafe recovery of the meta shard) is found
// from the leaders' reports: the parent's leader holds the lower part of
// the parent's range, the unlisted group the part above it.
TEST(MetaSplit, LostSplitIsFoundFromTheLeadersRanges) {
  const proto::MetaState m = TwoShards();  // 1: [0, 8192), 5: [8192, 16384)
  std::map<uint64_t, std::pair<uint32_t, uint32_t>> ranges;
  auto reported = [&](uint64_t id, uint32_t* b, uint32_t* e) {
    auto it = ranges.find(id);
    if (it == ranges.end()) return false;
    std::tie(*b, *e) = it->second;
    return true;
  };
  // group 9 holds [3000, 8192); shard 1's leader [0, 3000): shard 1 split at 3000 into 9
  ranges = {{1, {0, 3000}}, {5, {8192, 16384}}};
  auto cmd = LostSplit(m, 9, 3000, 8192, reported);
  ASSERT_TRUE(cmd.has_value());
  EXPECT_EQ(cmd->split_shard().parent(), 1u);
  EXPECT_EQ(cmd->split_shard().slot(), 3000u);
  EXPECT_EQ(cmd->split_shard().child(), 9u);
  proto::MetaState after = m;
  ASSERT_TRUE(ApplyMetaCommand(*cmd, &after));
  EXPECT_EQ(Find(after, 9)->slot_begin(), 3000u);
  EXPECT_EQ(Find(after, 9)->slot_end(), 8192u);
  EXPECT_EQ(Find(after, 1)->slot_end(), 3000u);
  EXPECT_FALSE(LostSplit(after, 9, 3000, 8192, reported).has_value());  // listed now

  // Two lost in a row (9 split again, into 12 at 6000): 9 first, then 12.
  EXPECT_FALSE(LostSplit(m, 12, 6000, 8192, reported).has_value());  // shard 1's leader ends at 3000
  ranges[9] = {3000, 6000};
  EXPECT_FALSE(LostSplit(after, 12, 6000, 8192, reported).has_value());  // 1's split into 9 not done yet
  proto::MetaCommand done;
  done.set_version(1);
  done.set_split_done(1);  // (shard 1's leader holds [0, 3000): placement marks it done)
  ASSERT_TRUE(ApplyMetaCommand(done, &after));
  auto second = LostSplit(after, 12, 6000, 8192, reported);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->split_shard().parent(), 9u);
  EXPECT_EQ(second->split_shard().slot(), 6000u);

  // Nothing to record: the parent's leader still holds its whole range (it
  // has not applied the split), no leader of the parent is known, the range
  // is not inside one shard above its first slot, or the parent is in a
  // split under way.
  ranges = {{1, {0, 8192}}};
  EXPECT_FALSE(LostSplit(m, 9, 3000, 8192, reported).has_value());
  ranges.clear();
  EXPECT_FALSE(LostSplit(m, 9, 3000, 8192, reported).has_value());
  ranges = {{1, {0, 3000}}, {5, {8192, 16384}}};
  EXPECT_FALSE(LostSplit(m, 9, 3000, 9000, reported).has_value());
  EXPECT_FALSE(LostSplit(m, 9, 0, 3000, reported).has_value());
  EXPECT_FALSE(LostSplit(m, 9, 3000, 3000, reported).has_value());
  EXPECT_FALSE(LostSplit(m, 5, 3000, 8192, reported).has_value());  // a listed group
  proto::MetaState busy = m;
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 1000), &busy));  // 1: [0, 1000), split into 6: [1000, 8192) under way
  ranges[6] = {1000, 3000};
  EXPECT_FALSE(LostSplit(busy, 9, 3000, 8192, reported).has_value());
  ASSERT_TRUE(ApplyMetaCommand(SplitDone(1), &busy));
  EXPECT_TRUE(LostSplit(busy, 9, 3000, 8192, reported).has_value());
}

proto::MetaCommand Place(const proto::ShardInfo& s, std::vector<uint64_t> voters, std::vector<uint64_t> learners) {
  proto::MetaCommand cmd;
  proto::ShardInfo* next = cmd.mutable_set_shard();
  *next = s;
  next->clear_replicas();
  next->clear_learners();
  for (uint64_t v : voters) next->add_replicas(v);
  for (uint64_t l : learners) next->add_learners(l);
  return cmd;
}

// A replica placed on a node is a new Raft member each time: the nodes a
// shard starts with are incarnation 0 (their member id is the node id), a
// node placed later takes the next incarnation, a node that stays (voter or
// learner) keeps its own, and one removed and placed again comes back as
// another member. Whatever a proposer says about incarnations is ignored.
TEST(MetaIncarnations, EachPlacementOnANodeIsANewMember) {
  proto::MetaState m = TwoShards();
  ASSERT_EQ(MemberOn(*Find(m, 1), 3), 3u);
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 4}, {3}), &m));  // 3 and 4 swap roles
  EXPECT_TRUE(Find(m, 1)->incarnations().empty());
  EXPECT_EQ(Find(m, 1)->last_incarnation(), 0u);
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 4}, {}), &m));  // 3 leaves
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 4}, {3}), &m));  // and comes back
  EXPECT_EQ(Find(m, 1)->incarnations().at(3), 1u);
  EXPECT_EQ(MemberOn(*Find(m, 1), 3), MemberIdOf(3, 1));
  EXPECT_NE(MemberOn(*Find(m, 1), 3), 3u);
  EXPECT_EQ(NodeOfMember(m, MemberOn(*Find(m, 1), 3)), 3u);
  EXPECT_EQ(MemberOn(*Find(m, 1), 1), 1u);
  // A proposer cannot set or reuse one.
  proto::MetaCommand forged = Place(*Find(m, 1), {1, 2, 4}, {3});
  (*forged.mutable_set_shard()->mutable_incarnations())[3] = 0;
  (*forged.mutable_set_shard()->mutable_incarnations())[1] = 7;
  forged.mutable_set_shard()->set_last_incarnation(0);
  ASSERT_TRUE(ApplyMetaCommand(forged, &m));
  EXPECT_EQ(Find(m, 1)->incarnations().at(3), 1u);
  EXPECT_FALSE(Find(m, 1)->incarnations().contains(1));
  EXPECT_EQ(Find(m, 1)->last_incarnation(), 1u);
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 4}, {}), &m));
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 3}, {}), &m));  // 4 leaves, 3 back as a voter
  EXPECT_EQ(Find(m, 1)->incarnations().at(3), 2u);
  EXPECT_FALSE(Find(m, 1)->incarnations().contains(4));
  // The other shard's count is its own; a split's child copies its parent's.
  EXPECT_EQ(Find(m, 5)->last_incarnation(), 0u);
  ASSERT_TRUE(ApplyMetaCommand(Split(1, 3000), &m));
  const proto::ShardInfo* child = Find(m, 6);
  ASSERT_NE(child, nullptr);
  EXPECT_EQ(MemberOn(*child, 3), MemberOn(*Find(m, 1), 3));
  EXPECT_EQ(child->last_incarnation(), 2u);
}

// A proposal may name, for a node it places again, the incarnation that
// node had when it left (the group still has that member: the placement
// gave up a move, say); any other name mints a new one. For a node that
// stays, a newer incarnation than recorded is taken (one an unsafe recovery
// of the meta shard lost), never an older one or one never minted; and an
// unsafe recovery of the meta shard mints later ones well above any it lost.
TEST(MetaIncarnations, APlacementKeepsAMemberTheGroupStillHas) {
  proto::MetaState m = TwoShards();
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 4}, {}), &m));  // 3 leaves as incarnation 0
  EXPECT_EQ(Find(m, 1)->departed().at(3), 0u);
  proto::MetaCommand back = Place(*Find(m, 1), {1, 2, 3}, {});  // 4 leaves, 3 back: the group still has 3
  (*back.mutable_set_shard()->mutable_incarnations())[3] = 0;
  ASSERT_TRUE(ApplyMetaCommand(back, &m));
  EXPECT_EQ(MemberOn(*Find(m, 1), 3), 3u);
  EXPECT_FALSE(Find(m, 1)->departed().contains(3));
  EXPECT_EQ(Find(m, 1)->departed().at(4), 0u);
  EXPECT_EQ(Find(m, 1)->last_incarnation(), 0u);
  proto::MetaCommand wrong = Place(*Find(m, 1), {1, 2, 3}, {4});  // 4 named with one never minted
  (*wrong.mutable_set_shard()->mutable_incarnations())[4] = 5;
  ASSERT_TRUE(ApplyMetaCommand(wrong, &m));
  EXPECT_EQ(Find(m, 1)->incarnations().at(4), 1u);
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 3}, {}), &m));
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 3}, {4}), &m));  // named nothing: new
  EXPECT_EQ(Find(m, 1)->incarnations().at(4), 2u);
  // A staying node: never an older or an unminted one...
  proto::MetaCommand older = Place(*Find(m, 1), {1, 2, 3}, {4});
  (*older.mutable_set_shard()->mutable_incarnations())[4] = 1;
  (*older.mutable_set_shard()->mutable_incarnations())[3] = 9;
  ASSERT_TRUE(ApplyMetaCommand(older, &m));
  EXPECT_EQ(Find(m, 1)->incarnations().at(4), 2u);
  EXPECT_FALSE(Find(m, 1)->incarnations().contains(3));
  // ... but after an unsafe recovery of the meta shard, a newer one the
  // group reports is taken, and new ones are minted above what was lost.
  proto::MetaCommand recovered;
  recovered.mutable_meta_recovered()->set_recovery(uint64_t{1} << 32);
  recovered.mutable_meta_recovered()->set_node(1);
  ASSERT_TRUE(ApplyMetaCommand(recovered, &m));
  const uint64_t floor = Find(m, 1)->last_incarnation();
  EXPECT_GE(floor, 2u + (1u << 16));
  EXPECT_GE(Find(m, 5)->last_incarnation(), 1u << 16);
  proto::MetaCommand newer = Place(*Find(m, 1), {1, 2, 3}, {4});
  (*newer.mutable_set_shard()->mutable_incarnations())[3] = 9;
  ASSERT_TRUE(ApplyMetaCommand(newer, &m));
  EXPECT_EQ(Find(m, 1)->incarnations().at(3), 9u);
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 4}, {}), &m));
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 4}, {3}), &m));
  EXPECT_EQ(Find(m, 1)->incarnations().at(3), floor + 1);
  // Never below the incarnation a node had when it left.
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 3}, {}), &m));
  EXPECT_EQ(Find(m, 1)->departed().at(4), 2u);
  proto::MetaCommand below = Place(*Find(m, 1), {1, 2, 3}, {4});
  (*below.mutable_set_shard()->mutable_incarnations())[4] = 1;
  ASSERT_TRUE(ApplyMetaCommand(below, &m));
  EXPECT_EQ(Find(m, 1)->incarnations().at(4), floor + 2);
}

// An unsafe recovery of a shard may force a replica that is an older
// incarnation than the metadata records on its node (it never learnt it was
// being replaced). While it is the only replica placed, a proposal naming
// it records it as the member; at no other time is an older one taken.
TEST(MetaIncarnations, AForcedOlderIncarnationIsRecorded) {
  proto::MetaState m = TwoShards();  // shard 1 recovered on node 2 (recovery 3)
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 3}, {}), &m));
  ASSERT_TRUE(ApplyMetaCommand(Place(*Find(m, 1), {1, 2, 3}, {}), &m));
  ASSERT_EQ(Find(m, 1)->incarnations().at(2), 1u);
  proto::MetaCommand named = Place(*Find(m, 1), {1, 2, 3}, {});
  (*named.mutable_set_shard()->mutable_incarnations())[2] = 0;
  ASSERT_TRUE(ApplyMetaCommand(named, &m));
  EXPECT_EQ(Find(m, 1)->incarnations().at(2), 1u);  // not the only replica placed
  proto::MetaCommand recover = Place(*Find(m, 1), {2}, {});
  recover.mutable_set_shard()->set_recovery(4);
  ASSERT_TRUE(ApplyMetaCommand(recover, &m));
  EXPECT_EQ(Find(m, 1)->incarnations().at(2), 1u);
  named = Place(*Find(m, 1), {2}, {});
  (*named.mutable_set_shard()->mutable_incarnations())[2] = 0;
  ASSERT_TRUE(ApplyMetaCommand(named, &m));
  EXPECT_EQ(MemberOn(*Find(m, 1), 2), 2u);
  EXPECT_FALSE(Find(m, 1)->incarnations().contains(2));
}

// The low 40 bits of a node id name the node in member ids: a node whose
// bits another node has already is not added.
TEST(MetaIncarnations, NodesDifferInTheirLow40Bits) {
  proto::MetaState m = TwoShards();
  proto::MetaCommand add;
  *add.mutable_add_node() = Node(9);
  add.mutable_add_node()->set_id(MemberIdOf(2, 5));  // node 2's low bits
  EXPECT_FALSE(ApplyMetaCommand(add, &m));
  add.mutable_add_node()->set_id(uint64_t{1} << 41);  // no low bits at all
  EXPECT_FALSE(ApplyMetaCommand(add, &m));
  add.mutable_add_node()->set_id(9);
  EXPECT_TRUE(ApplyMetaCommand(add, &m));
  EXPECT_TRUE(ApplyMetaCommand(add, &m));  // the same node again (a new address) is fine
}

// A survivor that missed splits recorded as done may split off its tail
// only where every shard over it was recovered on that survivor alone.
TEST(MetaRecovery, RecoveredTailOnlyOverShardsRecoveredOnTheSurvivor) {
  proto::MetaState m = InitialMeta(42, Node(1), 4, 3);  // 4 shards of 4096 slots
  for (uint64_t id : {2, 3}) *m.add_nodes() = Node(id);
  for (auto& s : *m.mutable_shards()) {
    s.clear_replicas();
    s.add_replicas(3);
    s.set_recovery(2);
    s.set_recovered_on(3);
  }
  const proto::ShardInfo& first = m.shards(0);
  ASSERT_EQ(first.slot_end(), 4096u);
  // Node 3 holds [0, 12288): it missed two splits. The tail's first shard
  // is the one its split creates.
  const proto::ShardInfo* tail = RecoveredTail(m, first, 0, 12288, 3);
  ASSERT_NE(tail, nullptr);
  EXPECT_EQ(tail->id(), m.shards(1).id());
  EXPECT_EQ(RecoveredTail(m, first, 0, 8192, 3), tail);
  // Not wider, or not starting where the metadata's range does.
  EXPECT_EQ(RecoveredTail(m, first, 0, 4096, 3), nullptr);
  EXPECT_EQ(RecoveredTail(m, first, 1, 8192, 3), nullptr);
  // Another node's survivor.
  EXPECT_EQ(RecoveredTail(m, first, 0, 8192, 2), nullptr);
  // A tail that ends inside a shard.
  EXPECT_EQ(RecoveredTail(m, first, 0, 6000, 3), nullptr);
  // A tail shard that still has other voters, a learner, no recovery, or a
  // split under way: its data may be elsewhere.
  auto with = [&](auto change) {
    proto::MetaState c = m;
    change(c.mutable_shards(2));
    return RecoveredTail(c, c.shards(0), 0, 12288, 3);
  };
  EXPECT_EQ(with([](proto::ShardInfo* s) { s->add_replicas(1); }), nullptr);
  EXPECT_EQ(with([](proto::ShardInfo* s) { s->add_learners(1); }), nullptr);
  EXPECT_EQ(with([](proto::ShardInfo* s) { s->set_recovery(0); }), nullptr);
  EXPECT_EQ(with([](proto::ShardInfo* s) { s->set_recovered_on(2); }), nullptr);
  EXPECT_EQ(with([](proto::ShardInfo* s) { s->set_split_child(99); }), nullptr);
  EXPECT_NE(with([](proto::ShardInfo* s) { s->set_preferred_leader(3); }), nullptr);
}

// Survivors of a shard whose majority died: C (node 3) was left behind by a
// change the lost voters committed (it still believes it is a voter), D
// (node 4) is the replica the group moved to; node 5 is dead.
node::LeaderlessReplica Survivor(uint64_t member, uint64_t term, uint64_t index, std::vector<uint64_t> voters) {
  return node::LeaderlessReplica{7, member, term, index, index, std::move(voters), {}, {}, 0};
}

TEST(RecoverySurvivor, OnlyTheFurthestAheadVoterOfALostMajority) {
  auto live = [](uint64_t m) { return m == 3 || m == 4; };
  std::map<uint64_t, node::LeaderlessReplica> reports{{3, Survivor(3, 2, 17, {1, 2, 3})},
                                                       {4, Survivor(4, 3, 58, {1, 2, 4})}};
  // Forcing C would lose every write from index 18 on, which D holds.
  const std::string behind = RefuseSurvivor("7", 3, reports, live);
  EXPECT_NE(behind.find("is behind node 0000000000000004's"), std::string::npos) << behind;
  EXPECT_NE(behind.find("recover on node 0000000000000004"), std::string::npos) << behind;
  EXPECT_EQ(RefuseSurvivor("7", 4, reports, live), "");
  // The same term, a longer log wins; a later term wins over a longer log.
  reports[3] = Survivor(3, 3, 60, {1, 2, 4, 3});
  EXPECT_NE(RefuseSurvivor("7", 4, reports, live).find("is behind node 0000000000000003's"), std::string::npos);
  reports[3] = Survivor(3, 2, 90, {1, 2, 3});
  EXPECT_EQ(RefuseSurvivor("7", 4, reports, live), "");
  // A node that reports nothing (no replica, or it still hears a leader).
  const std::string none = RefuseSurvivor("7", 5, reports, live);
  EXPECT_NE(none.find("reports no replica of shard 7"), std::string::npos) << none;
  EXPECT_NE(none.find("node 0000000000000004's is the furthest ahead"), std::string::npos) << none;
  // As far ahead, but not a member of the furthest replica's membership.
  reports = {{3, Survivor(3, 3, 58, {1, 2, 4})}, {4, Survivor(4, 3, 58, {1, 2, 4})}};
  EXPECT_NE(RefuseSurvivor("7", 3, reports, live).find("is not a member"), std::string::npos);
  // A learner of it, as far ahead (a move under way), may be chosen.
  reports = {{3, node::LeaderlessReplica{7, 3, 3, 58, 58, {1, 2, 4}, {}, {3}, 0}}, {4, Survivor(4, 3, 58, {1, 2, 4})}};
  EXPECT_EQ(RefuseSurvivor("7", 3, reports, live), "");
  // A majority of that membership still lives: no recovery.
  reports = {{3, Survivor(3, 3, 58, {1, 3, 4})}, {4, Survivor(4, 3, 58, {1, 3, 4})}};
  EXPECT_NE(RefuseSurvivor("7", 3, reports, live).find("still has a majority of live voters (2 of 3"),
            std::string::npos);
  // Joint: the outgoing voters lost their majority, so the group is stuck.
  reports = {{3, node::LeaderlessReplica{7, 3, 3, 58, 58, {3, 4, 1}, {1, 2, 5}, {}, 0}}};
  EXPECT_EQ(RefuseSurvivor("7", 3, reports, live), "");
  // A replica of a later recovery lineage is ahead whatever its log.
  reports = {{3, Survivor(3, 9, 900, {1, 2, 3})}, {4, node::LeaderlessReplica{7, 4, 1, 5, 5, {4, 1, 2}, {}, {}, 2}}};
  EXPECT_NE(RefuseSurvivor("7", 3, reports, live).find("is behind"), std::string::npos);
  EXPECT_EQ(RefuseSurvivor("7", 4, reports, live), "");
}

// A meta apply whose write fails stops the node, as a data shard's does: its
// state (and the reply) would otherwise run ahead of the disk, with the log
// free to be compacted past the entry.
TEST(MetaDeathTest, FailedApplyWriteStopsTheNode) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // The dying child is this program run again: it takes its directory from
  // the parent's environment, so that the parent removes what it wrote.
  if (std::getenv("SHOAL_META_DEATH_DIR") == nullptr) {
    auto mine = std::filesystem::temp_directory_path() / ("shoal_meta_death_" + std::to_string(::getpid()));
    ::setenv("SHOAL_META_DEATH_DIR", mine.c_str(), 1);
  }
  const std::filesystem::path dir = std::getenv("SHOAL_META_DEATH_DIR");
  std::filesystem::remove_all(dir);
  auto run = [&] {
    auto real = std::move(storage::Engine::Open({.dir = dir.string(), .memory_budget_bytes = 32 << 20}).value());
    storage::FaultEngine engine(real.get());
    MetaStateMachine sm(&engine);
    SHOAL_CHECK(sm.Load().ok());
    sm.Apply(raft::Entry{.term = 1, .index = 2, .type = raft::EntryType::kNormal, .data = "not a command"}, nullptr);
    SHOAL_CHECK(sm.applied_index() == 2);  // a refused entry is applied too, and written
    engine.FailNextWrites(1);
    std::string reply;
    sm.Apply(raft::Entry{.term = 1, .index = 3, .type = raft::EntryType::kNormal, .data = "not a command"}, &reply);
    SHOAL_CHECK(engine.writes_failed() > 0);  // the write did fail...
    std::fprintf(stderr, "went on after a failed apply, replying %s\n", reply.c_str());  // ... and the node went on
    std::exit(0);
  };
  EXPECT_DEATH(run(), "meta apply write failed");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace shoal::cluster
