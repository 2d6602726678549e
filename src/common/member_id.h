// Raft member ids. A replica's id in its group's Raft names one incarnation
// of that replica: the node's id with the incarnation XORed into bits 40-63.
// Incarnation 0 is the node id itself (the meta shard, and the replicas a
// cluster starts with), so data written before incarnations existed reads
// the same. The low 40 bits name the node: two members are on the same node
// when those bits match, and no two nodes of a cluster share them (a join
// that would is refused). A replica removed from a node and placed there
// again comes back under a new id, so nothing addressed to or sent by the
// old one is taken for the new one's (docs/design/placement.md).
#pragma once

#include <cstdint>

namespace shoal {

inline constexpr int kIncarnationShift = 40;
inline constexpr uint64_t kNodeKeyMask = (uint64_t{1} << kIncarnationShift) - 1;
inline constexpr uint64_t kMaxIncarnation = (uint64_t{1} << (64 - kIncarnationShift)) - 1;

// The bits of a node or member id that name the node.
inline constexpr uint64_t NodeKey(uint64_t id) { return id & kNodeKeyMask; }
inline constexpr bool SameNode(uint64_t a, uint64_t b) { return NodeKey(a) == NodeKey(b); }
// The member id of incarnation `incarnation` of a replica on `node`.
inline constexpr uint64_t MemberIdOf(uint64_t node, uint64_t incarnation) {
  return node ^ (incarnation << kIncarnationShift);
}
// Which incarnation `member` is, given its node.
inline constexpr uint64_t IncarnationOf(uint64_t member, uint64_t node) {
  return (member ^ node) >> kIncarnationShift;
}

}  // namespace shoal
