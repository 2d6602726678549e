#include "raft/types.h"

namespace shoal::raft {

namespace {
// Fixed per-entry overhead counted in size limits (term, index, type).
constexpr uint64_t kEntryOverheadBytes = 17;
constexpr char kConfChangeVersion = 1;
constexpr size_t kConfChangeRecordBytes = 9;
constexpr size_t kMaxConfChanges = 64;
}  // namespace

uint64_t entry_size(const Entry& e) { return kEntryOverheadBytes + e.data.size(); }

uint64_t entries_size(const std::vector<Entry>& ents) {
  uint64_t n = 0;
  for (const Entry& e : ents) n += entry_size(e);
  return n;
}

const char* to_string(MessageType t) {
  switch (t) {
    case MessageType::kHup: return "Hup";
    case MessageType::kBeat: return "Beat";
    case MessageType::kProp: return "Prop";
    case MessageType::kApp: return "App";
    case MessageType::kAppResp: return "AppResp";
    case MessageType::kVote: return "Vote";
    case MessageType::kVoteResp: return "VoteResp";
    case MessageType::kPreVote: return "PreVote";
    case MessageType::kPreVoteResp: return "PreVoteResp";
    case MessageType::kSnap: return "Snap";
    case MessageType::kHeartbeat: return "Heartbeat";
    case MessageType::kHeartbeatResp: return "HeartbeatResp";
    case MessageType::kUnreachable: return "Unreachable";
    case MessageType::kSnapStatus: return "SnapStatus";
    case MessageType::kCheckQuorum: return "CheckQuorum";
    case MessageType::kTransferLeader: return "TransferLeader";
    case MessageType::kTimeoutNow: return "TimeoutNow";
    case MessageType::kReadIndex: return "ReadIndex";
    case MessageType::kReadIndexResp: return "ReadIndexResp";
  }
  return "?";
}

bool is_local_message(MessageType t) {
  return t == MessageType::kHup || t == MessageType::kBeat || t == MessageType::kUnreachable ||
         t == MessageType::kSnapStatus || t == MessageType::kCheckQuorum;
}

bool is_response_message(MessageType t) {
  return t == MessageType::kAppResp || t == MessageType::kVoteResp ||
         t == MessageType::kPreVoteResp || t == MessageType::kHeartbeatResp ||
         t == MessageType::kReadIndexResp;
}

std::string encode_conf_change(const ConfChange& cc) {
  SHOAL_CHECK(cc.changes.size() <= kMaxConfChanges);
  std::string out;
  out.push_back(kConfChangeVersion);
  out.push_back(static_cast<char>(cc.changes.size()));
  for (const ConfChangeSingle& c : cc.changes) {
    out.push_back(static_cast<char>(c.type));
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((c.node >> (8 * i)) & 0xff));
  }
  return out;
}

Result<ConfChange> decode_conf_change(std::string_view data) {
  if (data.size() < 2 || data[0] != kConfChangeVersion) {
    return Status::Corruption("conf change: bad header");
  }
  const size_t n = static_cast<unsigned char>(data[1]);
  if (n > kMaxConfChanges || data.size() != 2 + n * kConfChangeRecordBytes) {
    return Status::Corruption("conf change: bad length");
  }
  ConfChange cc;
  for (size_t k = 0; k < n; ++k) {
    const char* p = data.data() + 2 + k * kConfChangeRecordBytes;
    const auto type = static_cast<unsigned char>(p[0]);
    if (type > static_cast<unsigned char>(ConfChangeType::kRemoveNode)) {
      return Status::Corruption("conf change: bad type");
    }
    NodeId id = 0;
    for (int i = 0; i < 8; ++i) id |= static_cast<NodeId>(static_cast<unsigned char>(p[1 + i])) << (8 * i);
    if (id == kNoNode) return Status::Corruption("conf change: node id 0");
    cc.changes.push_back({static_cast<ConfChangeType>(type), id});
  }
  return cc;
}

}  // namespace shoal::raft
