// Helpers shared by the files that make up cluster::Cluster (cluster.cc,
// admin_verbs.cc, splits.cc). Not for other layers.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "cluster/planner.h"
#include "meta.pb.h"
#include "node/transport.h"
#include "replica/replica.h"

namespace shoal::cluster {

// 16 hex digits.
std::string Hex(uint64_t v);
bool Contains(const google::protobuf::RepeatedField<uint64_t>& ids, uint64_t id);
const proto::ShardInfo* FindShardById(const proto::MetaState& meta, uint64_t id);
// Sorted, without duplicates.
std::vector<uint64_t> SortedIds(std::vector<uint64_t> v);
bool HasId(const std::vector<uint64_t>& v, uint64_t id);
// Whether the metadata records `node` as removed (for good).
bool ListsRemoved(const proto::MetaState& meta, uint64_t node);
// What the metadata wants group `group`'s membership to be.
bool WantedMembership(const proto::MetaState& meta, uint64_t group, Membership* want, uint64_t* preferred);
// The nodes of the Raft member ids a leader of `shard` (null: the meta
// shard) reported: Raft speaks member ids, placement node ids. `stale` (if
// given) says whether one of them is another incarnation than the metadata
// places on its node (the group is still replacing it).
std::vector<uint64_t> NodesOfMembers(const proto::MetaState& meta, const proto::ShardInfo* shard,
                                     const std::vector<uint64_t>& members, bool* stale = nullptr);
// Names in `next` (a proposed placement of a shard), for each node it
// places, the incarnation of the member the shard's leader reports there:
// the metadata keeps a node placed again as that member, and takes a newer
// one than it has (meta.cc SetShard).
void NameReportedIncarnations(const proto::MetaState& meta, const node::LeaderReport& rep, proto::ShardInfo* next);
// Whether an unsafe recovery of shard `shard` may force the replica on
// `node` as the group's only voter, judged by the replicas that live nodes
// report leaderless (`reports`, by node; not empty): "" if it may, else the
// error to answer. The chosen one must have reported, be as far ahead as
// any other (its recovery lineage, then its last log term, then its last
// index: Raft's order, so no write another survivor holds is lost), be a
// voter of the membership that furthest replica's log has, and that
// membership must have lost its majority (`live`: whether a member's node
// is up).
// A survivor's place in Raft's order (larger: further ahead): its recovery
// lineage, then its last log term, then its last index.
inline std::tuple<uint64_t, uint64_t, uint64_t> SurvivorRank(const node::LeaderlessReplica& r) {
  return {r.recovery, r.last_term, r.last_index};
}
std::string RefuseSurvivor(const std::string& shard, uint64_t node,
                           const std::map<uint64_t, node::LeaderlessReplica>& reports,
                           const std::function<bool(uint64_t member)>& live);
// A replica's leadership report. Any thread: reads only what it publishes.
node::LeaderReport ReportOf(const replica::Replica& r);

}  // namespace shoal::cluster
