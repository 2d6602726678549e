// The meta shard's state machine: cluster metadata (nodes, shard map,
// desired meta voters) as proto::MetaState. Each applied command rewrites
// the (small) state and the applied index in one storage write, so a
// restarted node has it at once. The current state is published as an
// immutable copy for every thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "meta.pb.h"
#include "replica/replica.h"

namespace shoal::cluster {

using MetaPtr = std::shared_ptr<const proto::MetaState>;

// The metadata of a new cluster: this node alone, `shards` shards of equal
// slot ranges, each with this node as its only replica.
// Formats that builds before them cannot read, switched on cluster-wide
// (MetaState.features) once every node reads them.
inline constexpr uint64_t kFeatureWriteHints = 1;  // kv batches carry write hints (replica::WriteHints)
// SplitShard.child and .child_last_incarnation: a split the meta shard lost
// recorded again (LostSplit); a build without them would give the child
// another id, and its metadata would part from the others'.
inline constexpr uint64_t kFeatureSplitChild = 2;
inline constexpr uint64_t kFeaturesKnown = kFeatureWriteHints | kFeatureSplitChild;  // what this build reads
// kFeaturesKnown, unless the environment's SHOAL_TEST_BUILD_FEATURES (a
// number) says otherwise: tests make a node act as a build that reads less
// (an upgrade in progress).
uint64_t BuildFeatures();
// "write-hints,split-child" ... for INFO and STATUS ("none" when there are none).
std::string FeatureNames(uint64_t features);

proto::MetaState InitialMeta(uint64_t cluster_id, const proto::NodeInfo& self, int shards,
                             int replication_factor);

// The Raft member id of `shard`'s replica on `node` (its incarnation there,
// src/common/member_id.h).
uint64_t MemberOn(const proto::ShardInfo& shard, uint64_t node);
// The node a Raft member id is on (the member id itself if no node is).
uint64_t NodeOfMember(const proto::MetaState& meta, uint64_t member);

// A survivor that an unsafe recovery forces may have missed splits that
// the metadata records as done (their entry committed on the voters that
// were lost): its replica of `shard` holds [local_begin, local_end), wider
// than the metadata's range. It may still be forced, and then split off
// what it holds beyond the metadata's end, when every shard recorded over
// that tail was recovered on this same `node`, as its only voter (the
// operator recovered those too; their data is only in this replica). The
// first of them, which the survivor's split creates, is returned; null
// when the tail is not exactly covered by such shards, or when the replica
// is not a wider one. (The caller also checks that no replica of theirs
// is on the node.)
const proto::ShardInfo* RecoveredTail(const proto::MetaState& meta, const proto::ShardInfo& shard,
                                      uint32_t local_begin, uint32_t local_end, uint64_t node);

// A group that is led but not in the metadata: an unsafe recovery of the
// meta shard lost the split that made it (its replicas applied it, so its
// parent's leader holds the lower part of the range the metadata still
// gives the parent). Its leader reports [begin, end). The split to record
// again: of the shard whose metadata range holds [begin, end) above its
// first slot, with no split under way, and whose leader reports exactly
// [its first slot, begin) (`reported(id, &b, &e)`: a shard's leader's
// range; false when none is known). A split at `begin` into `group`
// (SplitShard.child), which gives the child the rest of the parent's range;
// a child that split too and lost that as well is found the same way next
// (its range then ends where its own reported range does). Or nothing.
std::optional<proto::MetaCommand> LostSplit(const proto::MetaState& meta, uint64_t group, uint32_t begin,
                                            uint32_t end,
                                            const std::function<bool(uint64_t, uint32_t*, uint32_t*)>& reported);

// Shard ids are group ids: below node::Groups::kMaxGroups.
inline constexpr uint64_t kMaxShardId = 4096;

// Applies one command to `state`; false (state unchanged) if it is invalid.
bool ApplyMetaCommand(const proto::MetaCommand& cmd, proto::MetaState* state);

class MetaStateMachine final : public replica::StateMachine {
 public:
  explicit MetaStateMachine(storage::Engine* engine);
  // Loads the persisted state (if any).
  Status Load();

  uint64_t applied_index() const override { return applied_; }
  void Apply(const raft::Entry& e, std::string* reply) override;
  void StageApplied(uint64_t index, storage::WriteBatch& batch) override;
  Result<std::string> Export() override;
  Status StageImport(std::string_view image, uint64_t index, storage::WriteBatch& batch,
                     const kv::Shard::ImportMarker& marker) override;
  void FinishImport() override;
  // A meta replica from before an unsafe recovery of the meta shard
  // elsewhere is started over: its state stays, stored and published, until
  // the recovered group's snapshot replaces it (Raft restarts at index 0
  // and takes nothing but a snapshot). The node keeps routing by it, and
  // opens its replicas by it after a restart; and the last copy of the
  // metadata is not deleted before the recovered leader has passed it on.
  Status StageDestroy(storage::WriteBatch&) override { return Status::Ok(); }
  // The recovery an image of the metadata was taken in.
  std::optional<uint64_t> ImageRecovery(std::string_view image) const override;

  // The current state; any thread. Never null (empty before the first apply).
  MetaPtr state() const { return std::atomic_load(&published_); }

 private:
  void Stage(storage::WriteBatch& batch);
  storage::Engine* engine_;
  proto::MetaState state_;
  uint64_t applied_ = 0;
  MetaPtr published_;
};

}  // namespace shoal::cluster
