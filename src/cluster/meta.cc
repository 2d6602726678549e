#include "cluster/meta.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include <spdlog/spdlog.h>

#include "common/member_id.h"
#include "common/status.h"
#include "storage/slot.h"

namespace shoal::cluster {
namespace {

constexpr std::string_view kStateKey = "cluster/meta/state";
constexpr std::string_view kAppliedKey = "cluster/meta/applied";

// How many incarnations of one shard an unsafe recovery of the meta shard
// can have lost (placements the survivor never had), at most.
constexpr uint64_t kIncarnationsLostAtMost = uint64_t{1} << 16;

std::string EncodeU64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

// Replaces shard s.id()'s placement (its range and split stay as they are).
bool SetShard(const proto::ShardInfo& s, proto::MetaState* state) {
  for (auto& existing : *state->mutable_shards()) {
    if (existing.id() != s.id()) continue;
    if (s.slot_begin() != existing.slot_begin() || s.slot_end() != existing.slot_end()) return false;
    if (s.replicas_size() == 0) return false;
    std::set<uint64_t> seen;
    for (uint64_t r : s.replicas()) seen.insert(r);
    for (uint64_t r : s.learners()) seen.insert(r);
    if (seen.size() != static_cast<size_t>(s.replicas_size() + s.learners_size())) return false;
    for (uint64_t r : seen) {
      bool known = false;
      for (const auto& n : state->nodes()) known |= n.id() == r;
      if (!known) return false;
    }
    // Neither the split nor the incarnations are the proposer's to set; it
    // may only name, for a node it places, the incarnation the group still
    // has there (common/member_id.h, docs/design/placement.md).
    std::set<uint64_t> placed(existing.replicas().begin(), existing.replicas().end());
    placed.insert(existing.learners().begin(), existing.learners().end());
    const uint64_t split_child = existing.split_child();
    const auto before = existing.incarnations();
    auto departed = existing.departed();
    uint64_t last = existing.last_incarnation();
    const uint64_t recovered_on = existing.recovery() > 0 ? existing.recovered_on() : 0;
    existing = s;
    existing.set_split_child(split_child);
    existing.clear_incarnations();
    for (uint64_t r : seen) {
      auto named = s.incarnations().find(r);
      const bool has_named = named != s.incarnations().end();
      uint64_t incarnation = 0;
      if (placed.contains(r)) {
        // It stays, as the member it is; a newer one the group has is taken
        // (its record lost with an unsafe recovery of the meta shard).
        if (auto it = before.find(r); it != before.end()) incarnation = it->second;
        if (has_named && named->second > incarnation && named->second <= last) incarnation = named->second;
        // An unsafe recovery forced this node's replica, an older
        // incarnation than recorded, as the group's only voter: while it is
        // still the only one placed, it is the member.
        if (has_named && named->second < incarnation && r == recovered_on && s.replicas_size() == 1 &&
            s.learners_size() == 0) {
          incarnation = named->second;
        }
      } else if (auto d = departed.find(r);
                 has_named && named->second <= last && (d == departed.end() || named->second >= d->second)) {
        // Placed again while the group still has it (the proposer names
        // only members the group's leader reports): the same member.
        incarnation = named->second;
      } else {
        incarnation = std::min(++last, kMaxIncarnation);  // a new member
      }
      if (incarnation != 0) (*existing.mutable_incarnations())[r] = incarnation;
      departed.erase(r);
    }
    for (uint64_t r : placed) {
      if (seen.contains(r)) continue;
      auto it = before.find(r);
      departed[r] = it == before.end() ? 0 : it->second;
    }
    existing.set_last_incarnation(last);
    *existing.mutable_departed() = departed;
    existing.set_epoch(existing.epoch() + 1);
    state->set_epoch(state->epoch() + 1);
    return true;
  }
  return false;
}

}  // namespace

uint64_t MemberOn(const proto::ShardInfo& shard, uint64_t node) {
  auto it = shard.incarnations().find(node);
  return MemberIdOf(node, it == shard.incarnations().end() ? 0 : it->second);
}

uint64_t NodeOfMember(const proto::MetaState& meta, uint64_t member) {
  for (const auto& n : meta.nodes()) {
    if (n.id() == member) return member;
  }
  for (const auto& n : meta.nodes()) {
    if (SameNode(n.id(), member)) return n.id();
  }
  return member;
}

const proto::ShardInfo* RecoveredTail(const proto::MetaState& meta, const proto::ShardInfo& shard,
                                      uint32_t local_begin, uint32_t local_end, uint64_t node) {
  if (local_begin != shard.slot_begin() || local_end <= shard.slot_end()) return nullptr;
  const proto::ShardInfo* first = nullptr;
  uint32_t covered = shard.slot_end();
  // Shards tile the slot space: walk the tail from its start, shard by shard.
  while (covered < local_end) {
    const proto::ShardInfo* next = nullptr;
    for (const auto& s : meta.shards()) {
      if (s.slot_begin() == covered && s.slot_end() > s.slot_begin()) next = &s;
    }
    if (next == nullptr || next->slot_end() > local_end || next->recovery() == 0 || next->recovered_on() != node ||
        next->replicas_size() != 1 || next->replicas(0) != node || next->learners_size() != 0 ||
        next->split_child() != 0) {
      return nullptr;
    }
    if (first == nullptr) first = next;
    covered = next->slot_end();
  }
  return first;
}

proto::MetaState InitialMeta(uint64_t cluster_id, const proto::NodeInfo& self, int shards,
                             int replication_factor) {
  proto::MetaState m;
  m.set_version(1);
  m.set_cluster_id(cluster_id);
  m.set_replication_factor(static_cast<uint32_t>(replication_factor));
  *m.add_nodes() = self;
  m.add_meta_voters(self.id());
  uint32_t per = storage::kSlotCount / static_cast<uint32_t>(shards);
  uint32_t extra = storage::kSlotCount % static_cast<uint32_t>(shards);
  uint32_t begin = 0;
  for (int i = 0; i < shards; ++i) {
    uint32_t size = per + (static_cast<uint32_t>(i) < extra ? 1 : 0);
    auto* s = m.add_shards();
    s->set_id(static_cast<uint64_t>(i) + 1);
    s->set_slot_begin(begin);
    s->set_slot_end(begin + size);
    s->set_epoch(1);
    s->add_replicas(self.id());
    s->set_preferred_leader(self.id());
    begin += size;
  }
  m.set_epoch(1);
  m.set_features(BuildFeatures());
  return m;
}

uint64_t BuildFeatures() {
  static const uint64_t features = [] {
    const char* v = std::getenv("SHOAL_TEST_BUILD_FEATURES");
    return v != nullptr ? std::strtoull(v, nullptr, 10) & kFeaturesKnown : kFeaturesKnown;
  }();
  return features;
}

std::string FeatureNames(uint64_t features) {
  std::string out;
  if (features & kFeatureWriteHints) out += "write-hints";
  if (features & kFeatureSplitChild) out += std::string(out.empty() ? "" : ",") + "split-child";
  if (features & ~kFeaturesKnown) out += std::string(out.empty() ? "" : ",") + "unknown";
  return out.empty() ? "none" : out;
}

std::optional<proto::MetaCommand> LostSplit(const proto::MetaState& meta, uint64_t group, uint32_t begin,
                                            uint32_t end,
                                            const std::function<bool(uint64_t, uint32_t*, uint32_t*)>& reported) {
  if (group == 0 || group >= kMaxShardId || begin >= end) return std::nullopt;
  for (const auto& s : meta.shards()) {
    if (s.id() == group) return std::nullopt;  // listed
  }
  for (const auto& p : meta.shards()) {
    if (begin <= p.slot_begin() || end > p.slot_end()) continue;
    bool splitting = p.split_child() != 0;
    for (const auto& s : meta.shards()) splitting |= s.split_child() == p.id();
    uint32_t b = 0, e = 0;
    if (splitting || !reported(p.id(), &b, &e) || b != p.slot_begin() || e != begin || b >= e) continue;
    proto::MetaCommand cmd;
    cmd.set_version(1);
    cmd.mutable_split_shard()->set_parent(p.id());
    cmd.mutable_split_shard()->set_slot(begin);
    cmd.mutable_split_shard()->set_child(group);
    return cmd;
  }
  return std::nullopt;
}

bool ApplyMetaCommand(const proto::MetaCommand& cmd, proto::MetaState* state) {
  switch (cmd.cmd_case()) {
    case proto::MetaCommand::kAddNode: {
      const auto& n = cmd.add_node();
      if (n.id() == 0 || n.port() == 0 || n.port() > 65535 || n.peer_port() == 0 || n.peer_port() > 65535) return false;
      for (auto& existing : *state->mutable_nodes()) {
        if (existing.id() == n.id()) {
          proto::NodeState kept = existing.state();
          existing = n;  // a restarted node may come back on a new address
          existing.set_state(kept);
          state->set_epoch(state->epoch() + 1);
          return true;
        }
      }
      // The low bits of an id name the node in Raft member ids.
      if (NodeKey(n.id()) == 0) return false;
      for (const auto& existing : state->nodes()) {
        if (SameNode(existing.id(), n.id())) return false;
      }
      *state->add_nodes() = n;
      state->set_epoch(state->epoch() + 1);
      return true;
    }
    case proto::MetaCommand::kSetShard:
      return SetShard(cmd.set_shard(), state);
    case proto::MetaCommand::kSetShards: {
      if (cmd.set_shards().shards_size() == 0) return false;
      proto::MetaState next = *state;
      for (const auto& s : cmd.set_shards().shards()) {
        if (!SetShard(s, &next)) return false;
      }
      *state = std::move(next);
      return true;
    }
    case proto::MetaCommand::kSetNodeState: {
      const auto& c = cmd.set_node_state();
      for (auto& n : *state->mutable_nodes()) {
        if (n.id() != c.node()) continue;
        if (n.state() == proto::NODE_REMOVED) return false;  // removed is for good
        n.set_state(c.state());
        state->set_epoch(state->epoch() + 1);
        return true;
      }
      return false;
    }
    case proto::MetaCommand::kAclSetUser: {
      const auto& u = cmd.acl_set_user();
      if (u.name().empty()) return false;
      for (const auto& rule : u.rules()) {
        if (rule.starts_with(">") || rule.starts_with("<")) return false;  // passwords travel hashed only
      }
      proto::AclUser* user = nullptr;
      for (auto& existing : *state->mutable_acl_users()) {
        if (existing.name() == u.name()) user = &existing;
      }
      state->set_epoch(state->epoch() + 1);
      if (user == nullptr) {
        user = state->add_acl_users();
        user->set_name(u.name());
        user->set_created(state->epoch());
      }
      for (const auto& rule : u.rules()) {
        // What came before a reset no longer counts (ACL SETUSER sends the
        // whole user after one, so the list stays short).
        if (rule.size() == 5 && (rule[0] | 0x20) == 'r' && (rule[1] | 0x20) == 'e' && (rule[2] | 0x20) == 's' &&
            (rule[3] | 0x20) == 'e' && (rule[4] | 0x20) == 't') {
          user->clear_rules();
        }
        user->add_rules(rule);
      }
      return true;
    }
    case proto::MetaCommand::kAclDelUser: {
      auto* users = state->mutable_acl_users();
      for (int i = 0; i < users->size(); ++i) {
        if (users->Get(i).name() != cmd.acl_del_user()) continue;
        users->DeleteSubrange(i, 1);
        state->set_epoch(state->epoch() + 1);
        return true;
      }
      return false;
    }
    case proto::MetaCommand::kEnableFeatures: {
      const uint64_t all = state->features() | cmd.enable_features();
      if (all == state->features()) return false;
      state->set_features(all);
      state->set_epoch(state->epoch() + 1);
      return true;
    }
    case proto::MetaCommand::kSetBalanceOff:
      state->set_balance_off(cmd.set_balance_off());
      state->set_epoch(state->epoch() + 1);
      return true;
    case proto::MetaCommand::kSetMetaVoters: {
      if (cmd.set_meta_voters().voters_size() == 0) return false;
      for (uint64_t v : cmd.set_meta_voters().voters()) {
        bool known = false;
        for (const auto& n : state->nodes()) known |= n.id() == v;
        if (!known) return false;
      }
      state->clear_meta_voters();
      for (uint64_t v : cmd.set_meta_voters().voters()) state->add_meta_voters(v);
      state->set_epoch(state->epoch() + 1);
      return true;
    }
    case proto::MetaCommand::kSplitShard: {
      const auto& c = cmd.split_shard();
      proto::ShardInfo* parent = nullptr;
      uint64_t max_id = 0;
      for (auto& sh : *state->mutable_shards()) {
        max_id = std::max(max_id, sh.id());
        if (sh.id() == c.parent()) parent = &sh;
        // One split at a time per shard: neither a parent nor a child of a
        // split still under way splits again.
        if (sh.split_child() != 0 && (sh.id() == c.parent() || sh.split_child() == c.parent())) return false;
      }
      if (parent == nullptr || c.slot() <= parent->slot_begin() || c.slot() >= parent->slot_end()) return false;
      const uint64_t child_id = c.child() != 0 ? c.child() : std::max(max_id + 1, c.min_child());
      if (child_id == 0 || child_id >= kMaxShardId) return false;
      for (const auto& sh : state->shards()) {
        if (sh.id() == child_id) return false;  // (a lost split's child: its id taken since)
      }
      proto::ShardInfo child = *parent;
      child.set_id(child_id);
      child.set_slot_begin(c.slot());
      child.set_epoch(1);
      child.set_split_child(0);
      child.set_recovery(0);  // a new group: no recovery of it happened
      child.set_recovered_on(0);
      // A lost split's child may have placed replicas since (their
      // incarnations above the parent's): none is given out twice.
      child.set_last_incarnation(std::max(parent->last_incarnation(), c.child_last_incarnation()));
      // The halves are led from different nodes: the child's preferred
      // leader is the parent's next voter (in id order).
      std::vector<uint64_t> voters(parent->replicas().begin(), parent->replicas().end());
      std::sort(voters.begin(), voters.end());
      auto at = std::find(voters.begin(), voters.end(), parent->preferred_leader());
      if (voters.size() > 1 && at != voters.end()) {
        child.set_preferred_leader(*(std::next(at) == voters.end() ? voters.begin() : std::next(at)));
      }
      parent->set_slot_end(c.slot());
      parent->set_split_child(child.id());
      parent->set_epoch(parent->epoch() + 1);
      *state->add_shards() = std::move(child);
      state->set_epoch(state->epoch() + 1);
      return true;
    }
    case proto::MetaCommand::kMetaRecovered: {
      const auto& c = cmd.meta_recovered();
      if (c.recovery() <= state->meta_recovery()) return false;
      bool known = false;
      for (const auto& n : state->nodes()) known |= n.id() == c.node() && n.state() != proto::NODE_REMOVED;
      if (!known) return false;
      state->clear_meta_voters();
      state->add_meta_voters(c.node());
      // Incarnations minted in the changes the recovery lost must not be
      // minted again: later ones start well above them.
      for (auto& sh : *state->mutable_shards()) {
        sh.set_last_incarnation(std::min(sh.last_incarnation() + kIncarnationsLostAtMost, kMaxIncarnation));
      }
      state->set_meta_recovery(c.recovery());
      state->set_meta_recovered_on(c.node());
      state->set_epoch(state->epoch() + 1);
      return true;
    }
    case proto::MetaCommand::kSplitDone:
      for (auto& sh : *state->mutable_shards()) {
        if (sh.id() != cmd.split_done() || sh.split_child() == 0) continue;
        sh.set_split_child(0);
        state->set_epoch(state->epoch() + 1);
        return true;
      }
      return false;
    default:
      return false;
  }
}

MetaStateMachine::MetaStateMachine(storage::Engine* engine)
    : engine_(engine), published_(std::make_shared<proto::MetaState>()) {}

Status MetaStateMachine::Load() {
  std::string raw;
  Status s = engine_->Get(storage::Cf::kMeta, kAppliedKey, &raw);
  if (s.code() == Code::kNotFound) return Status::Ok();
  if (!s.ok()) return s;
  if (raw.size() != 8) return Status::Corruption("meta applied index");
  std::memcpy(&applied_, raw.data(), 8);
  s = engine_->Get(storage::Cf::kMeta, kStateKey, &raw);
  if (!s.ok()) return s.WithContext("meta state");
  if (!state_.ParseFromString(raw)) return Status::Corruption("meta state");
  std::atomic_store(&published_, MetaPtr(std::make_shared<proto::MetaState>(state_)));
  return Status::Ok();
}

void MetaStateMachine::Stage(storage::WriteBatch& batch) {
  batch.Put(storage::Cf::kMeta, kStateKey, state_.SerializeAsString());
  batch.Put(storage::Cf::kMeta, kAppliedKey, EncodeU64(applied_));
}

void MetaStateMachine::Apply(const raft::Entry& e, std::string* reply) {
  proto::MetaCommand cmd;
  bool ok = cmd.ParseFromString(e.data) && cmd.version() == 1 && ApplyMetaCommand(cmd, &state_);
  if (!ok) spdlog::warn("meta entry {} refused (invalid command)", e.index);
  applied_ = e.index;
  auto batch = engine_->NewBatch();
  Stage(*batch);
  auto seq = engine_->Write(*batch);
  if (!seq.ok()) {
    // As a data shard's failed apply: the state in memory (and the reply)
    // would run ahead of the disk, and the log may be compacted past this
    // entry by the applied index. Stop; a restart applies the log again.
    spdlog::critical("meta: writing the state applied at {} failed: {}; stopping this node", e.index,
                     seq.status().ToString());
    spdlog::default_logger()->flush();
    FailStop("meta apply write failed");
  }
  if (ok) std::atomic_store(&published_, MetaPtr(std::make_shared<proto::MetaState>(state_)));
  if (reply != nullptr) reply->append(ok ? "+OK\r\n" : "-ERR invalid cluster change\r\n");
}

void MetaStateMachine::StageApplied(uint64_t index, storage::WriteBatch& batch) {
  applied_ = index;
  batch.Put(storage::Cf::kMeta, kAppliedKey, EncodeU64(applied_));
}

Result<std::string> MetaStateMachine::Export() { return state_.SerializeAsString(); }

Status MetaStateMachine::StageImport(std::string_view image, uint64_t index, storage::WriteBatch& batch,
                                     const kv::Shard::ImportMarker&) {
  // The whole state goes into `batch`: no marker is needed.
  proto::MetaState m;
  if (!m.ParseFromArray(image.data(), static_cast<int>(image.size()))) {
    return Status::Corruption("meta snapshot");
  }
  state_ = std::move(m);
  applied_ = index;
  Stage(batch);
  return Status::Ok();
}

void MetaStateMachine::FinishImport() {
  std::atomic_store(&published_, MetaPtr(std::make_shared<proto::MetaState>(state_)));
}

std::optional<uint64_t> MetaStateMachine::ImageRecovery(std::string_view image) const {
  proto::MetaState m;
  if (!m.ParseFromArray(image.data(), static_cast<int>(image.size()))) return std::nullopt;  // refused at import
  return m.meta_recovery();
}

}  // namespace shoal::cluster
