// Plain value types of the Raft core: entries, hard state, configuration,
// snapshots and messages. The node layer maps messages to the wire format.
// See docs/design/raft.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal::raft {

using NodeId = uint64_t;
using Term = uint64_t;
using Index = uint64_t;

// NodeId 0 means "nobody" (no vote, no known leader).
inline constexpr NodeId kNoNode = 0;
// Limit meaning "no byte limit" for entry batches.
inline constexpr uint64_t kNoLimit = UINT64_MAX;

// Kind of a log entry.
enum class EntryType : uint8_t { kNormal, kConfChange };

// One log entry. `data` is opaque to Raft except for kConfChange entries,
// whose data is an encoded ConfChange.
struct Entry {
  Term term = 0;
  Index index = 0;
  EntryType type = EntryType::kNormal;
  std::string data{};
  bool operator==(const Entry&) const = default;
};

// Bytes an entry counts for in size limits (payload plus a fixed overhead).
uint64_t entry_size(const Entry& e);
// Sum of entry_size over `ents`.
uint64_t entries_size(const std::vector<Entry>& ents);

// What must be durable before votes or acknowledgements are sent.
struct HardState {
  Term term = 0;
  NodeId vote = kNoNode;
  Index commit = 0;
  bool empty() const { return term == 0 && vote == kNoNode && commit == 0; }
  bool operator==(const HardState&) const = default;
};

// A membership configuration. `voters_outgoing` is non-empty only while in a
// joint configuration (Raft thesis section 4.3). Ids are sorted ascending.
struct ConfState {
  std::vector<NodeId> voters;
  std::vector<NodeId> voters_outgoing;
  std::vector<NodeId> learners;
  bool operator==(const ConfState&) const = default;
};

// Where a snapshot sits in the log and the membership at that point.
struct SnapshotMeta {
  Index index = 0;
  Term term = 0;
  ConfState conf_state;
  bool operator==(const SnapshotMeta&) const = default;
};

// A state machine image at meta.index; `data` is opaque application bytes.
struct Snapshot {
  SnapshotMeta meta;
  std::string data{};
  bool empty() const { return meta.index == 0; }
  bool operator==(const Snapshot&) const = default;
};

// Raft message kinds (as in etcd-io/raft).
enum class MessageType : uint8_t {
  kHup,             // local: start an election
  kBeat,            // local: leader broadcasts heartbeats
  kProp,            // local or forwarded proposal
  kApp,             // append entries
  kAppResp,         // append response
  kVote,            // request vote
  kVoteResp,        // vote response
  kPreVote,         // pre-vote request (term is the prospective term)
  kPreVoteResp,     // pre-vote response
  kSnap,            // install snapshot
  kHeartbeat,       // leader heartbeat
  kHeartbeatResp,   // heartbeat response
  kUnreachable,     // local: transport reports a peer unreachable
  kSnapStatus,      // local: transport reports a snapshot send result
  kCheckQuorum,     // local: leader checks it still reaches a quorum
  kTransferLeader,  // ask the leader to hand leadership to `from`
  kTimeoutNow,      // leader tells the transferee to campaign now
  kReadIndex,       // linearizable read request (context identifies it)
  kReadIndexResp,   // leader's answer to a follower's read request
};

// Short name for traces and logs.
const char* to_string(MessageType t);
// True for message types that only ever come from the local node.
bool is_local_message(MessageType t);
// True for responses (they are sent only after this Ready is durable).
bool is_response_message(MessageType t);

// One Raft message. Fields not used by a type stay at their defaults.
struct Message {
  MessageType type = MessageType::kHup;
  NodeId to = kNoNode;
  NodeId from = kNoNode;
  Term term = 0;
  Term log_term = 0;   // term of entry `index` (kApp) or of the last entry (votes)
  Index index = 0;     // entry index preceding `entries`, or last index (votes)
  std::vector<Entry> entries{};
  Index commit = 0;
  bool reject = false;
  Index reject_hint = 0;    // follower's hint for the next probe on rejection
  Term hint_term = 0;       // term at reject_hint on the follower (fast backtracking)
  uint64_t lease_tick = 0;  // leader tick stamped on heartbeats/appends, echoed back
  Snapshot snapshot{};      // kSnap only
  std::string context{};    // read-index context, or "transfer" on votes
  bool operator==(const Message&) const = default;
};

// Message.context of a vote caused by leadership transfer: it bypasses the lease.
inline constexpr std::string_view kTransferContext = "transfer";

// A membership step: add (or promote to) voter, add learner, remove.
enum class ConfChangeType : uint8_t { kAddVoter, kAddLearner, kRemoveNode };

// One membership step for one node.
struct ConfChangeSingle {
  ConfChangeType type = ConfChangeType::kAddVoter;
  NodeId node = kNoNode;
  bool operator==(const ConfChangeSingle&) const = default;
};

// A membership change. If it changes the voter set it enters a joint
// configuration, which the leader leaves automatically once it is applied.
// An empty `changes` list means "leave the joint configuration".
struct ConfChange {
  std::vector<ConfChangeSingle> changes;
  bool operator==(const ConfChange&) const = default;
};

// Encodes a ConfChange as the data of a kConfChange entry.
std::string encode_conf_change(const ConfChange& cc);
// Decodes entry data written by encode_conf_change; fails on malformed bytes.
Result<ConfChange> decode_conf_change(std::string_view data);

}  // namespace shoal::raft
