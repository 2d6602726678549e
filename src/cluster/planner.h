// Placement planner: a pure function from a view of the cluster (nodes and
// their state, each shard's wanted and actual membership) and a policy to
// the moves that bring placement toward its goal: every shard at its
// replication factor on live nodes, replicas and leaders spread evenly, the
// meta shard's voters on live nodes. No I/O, no clock, no randomness: the
// placement driver (cluster::Cluster, on the meta leader) and `shoal admin`
// call it, and tests drive it from tables. See docs/design/placement.md.
//
// A move changes what the metadata *wants*; each group's leader then walks
// its Raft membership there in safe steps (learner, snapshot, catch-up,
// promotion through a joint configuration, removal). The planner
//   - never plans a membership change for a shard whose majority of voters
//     is not up, nor one whose new voter set lacks an up majority;
//   - never asks for an even number of voters below the target (2 voters of
//     a growing shard would wedge it on one loss): a shard grows its voters
//     1 -> 3 -> 5 in one move, extra replicas on too few nodes are learners;
//   - keeps a dead voter while nothing can replace it (fewer acknowledgers
//     would weaken durability), and lowers the voter count only when an
//     operator removes a node for good;
//   - bounds membership moves in flight per node and per cluster;
//   - converges: every balancing move lowers the sum of squared node loads
//     by a margin (half a typical shard), so nothing moves back and forth,
//     and a balanced view plans nothing.
//
// Balance is weighted. A replica weighs what its shard holds, a leadership
// what its shard serves, each relative to the mean shard, with a floor for
// the fixed cost of a shard (its Raft group): shards alike weigh about 1
// each and balance is by counts (per node they differ by at most one); a
// shard ten times the mean weighs about ten. The figures come through
// cluster::LoadBook, which holds them steady against measuring noise.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shoal::cluster {

enum class NodeState : uint8_t {
  kUp,        // heartbeats arrive
  kDown,      // no heartbeat for down-after: its replicas are rebuilt elsewhere
  kDraining,  // an operator asked to move everything off it, then remove it
  kRemoved,   // no longer a member of the cluster
};
const char* NodeStateName(NodeState s);

struct NodeView {
  uint64_t id = 0;
  NodeState state = NodeState::kUp;
};

// Membership of one group: voters and learners (ids sorted ascending).
struct Membership {
  std::vector<uint64_t> voters;
  std::vector<uint64_t> learners;
  bool operator==(const Membership&) const = default;
};

struct ShardView {
  uint64_t id = 0;
  Membership want;            // what the metadata wants
  uint64_t preferred_leader = 0;
  // What the group's leader last reported; `reported` false: no leader known.
  bool reported = false;
  uint64_t leader = 0;        // the node that reported (0 when none did)
  Membership actual;          // voters include the outgoing ones while joint
  bool joint = false;
  // A split of this shard, or into it, is under way: no membership move.
  bool splitting = false;
  // From the leader's report (0: unknown): its range, approximate bytes,
  // recent load, and the slot a split would start the upper half at.
  uint32_t slot_begin = 0, slot_end = 0;
  uint64_t bytes = 0;
  uint64_t ops_per_sec = 0;
  uint32_t split_slot = 0;
  // false: nothing is known of its size and load; it weighs the mean shard.
  bool load_known = true;
};

struct ClusterView {
  std::vector<NodeView> nodes;
  std::vector<ShardView> shards;
  // The meta shard: every node not removed is a member; these vote.
  std::vector<uint64_t> meta_voters;         // wanted
  std::vector<uint64_t> meta_actual_voters;  // as its leader (the planner's node) has them
  int replication_factor = 3;
};

struct PlannerPolicy {
  // Membership moves in flight (planned or not yet carried out) that may
  // involve one node, and the whole cluster.
  int max_moves_per_node = 2;
  int max_moves_total = 8;
  // false: repair only (replication factor, dead and draining nodes), no
  // spreading of replicas or leaders.
  bool balance = true;
  // A shard splits once its leader reports more bytes, or more operations
  // per second (sustained), than these; 0: never. One split at a time.
  uint64_t split_bytes = 0;
  uint64_t split_ops_per_sec = 0;
  // Balance weights: a replica weighs (bytes + weight_floor_bytes) /
  // (mean bytes + weight_floor_bytes), a leadership (ops/s +
  // weight_floor_ops) / (mean ops/s + weight_floor_ops). The floors keep
  // small or idle shards (and measuring noise) from moving anything.
  uint64_t weight_floor_bytes = 64ULL << 20;
  uint64_t weight_floor_ops = 1000;
};

enum class MoveKind : uint8_t {
  kAddReplicas,    // `nodes` join the shard (voters or learners as `target` says)
  kRemoveReplica,  // nodes[0] leaves the shard
  kReplaceReplica, // nodes[0] leaves, nodes[1] takes its place
  kTransferLeader, // nodes[0] should lead the shard
  kSetMetaVoters,  // the meta shard's voters become target.voters
  kRemoveNode,     // a drained node holds nothing any more: remove it
  kSplit,          // the shard splits at `slot` (too big, or too busy)
};
const char* MoveKindName(MoveKind k);

struct Move {
  MoveKind kind = MoveKind::kAddReplicas;
  uint64_t shard = 0;           // 0 for meta and node moves
  std::vector<uint64_t> nodes;  // see MoveKind
  Membership target;            // the shard's (or meta's) wanted membership after the move
  uint64_t leader = 0;          // the shard's preferred leader after the move
  uint32_t slot = 0;            // kSplit: the child's first slot
  std::string reason;
};

std::vector<Move> Plan(const ClusterView& view, const PlannerPolicy& policy);

// One line describing a move, for logs and `shoal admin`.
std::string Describe(const Move& m);

// The largest odd number <= n (0 for 0).
int OddAtMost(int n);

}  // namespace shoal::cluster
