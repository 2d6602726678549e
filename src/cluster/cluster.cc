#include "cluster/cluster.h"

#include "cluster/cluster_internal.h"
#include "cluster/membership.h"
#include "node/deadline.h"
#include "common/member_id.h"
#include "common/secret.h"
#include "common/strings.h"
#include "storage/keys.h"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/read_until.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include <spdlog/spdlog.h>

namespace shoal::cluster {

namespace {

using asio::experimental::as_tuple;

constexpr std::string_view kNodeIdKey = "node/id";
constexpr std::string_view kClusterIdKey = "node/cluster";
constexpr int64_t kPlacementIntervalUs = 300'000;
constexpr int64_t kTransferRetryUs = 3'000'000;
// A leader's gossip older than this no longer counts as its group's state.
constexpr int64_t kGossipFreshUs = 1'000'000;
// A replica that heard from a leader within this many ticks is still a member.
constexpr uint64_t kRetireQuietTicks = 20;

uint64_t RandomId() {
  std::random_device rd;
  std::mt19937_64 rng((uint64_t{rd()} << 32) ^ rd());
  uint64_t v = 0;
  while (NodeKey(v) == 0) v = rng();  // nonzero, and so is every member id made from it
  return v;
}

std::string EncodeU64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

Result<uint64_t> GetU64(storage::Engine* engine, std::string_view key) {
  std::string raw;
  Status s = engine->Get(storage::Cf::kMeta, key, &raw);
  if (s.code() == Code::kNotFound) return uint64_t{0};
  if (!s.ok()) return s;
  if (raw.size() != 8) return Status::Corruption(std::string(key));
  uint64_t v = 0;
  std::memcpy(&v, raw.data(), 8);
  return v;
}

Status PutU64Durable(storage::Engine* engine, std::string_view key, uint64_t v) {
  auto batch = engine->NewBatch();
  batch->Put(storage::Cf::kMeta, key, EncodeU64(v));
  auto seq = engine->Write(*batch);
  if (!seq.ok()) return seq.status();
  auto synced = engine->Sync();
  return synced.ok() ? Status::Ok() : synced.status();
}

}  // namespace

// Shared with the other files of Cluster (cluster_internal.h).

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool Contains(const google::protobuf::RepeatedField<uint64_t>& ids, uint64_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

const proto::ShardInfo* FindShardById(const proto::MetaState& meta, uint64_t id) {
  for (const auto& s : meta.shards()) {
    if (s.id() == id) return &s;
  }
  return nullptr;
}


std::string NodeName(uint64_t id) {
  uint64_t b = id * 0x9E3779B97F4A7C15ULL;
  uint64_t c = (id ^ (id >> 29)) * 0xBF58476D1CE4E5B9ULL;
  return Hex(id) + Hex(b) + Hex(c).substr(0, 8);
}

Cluster::Cluster(ClusterOptions opts, storage::Engine* engine, node::Runtime* runtime,
                 node::Groups* groups, node::Transport* transport)
    : opts_(std::move(opts)), engine_(engine), runtime_(runtime), groups_(groups), transport_(transport) {
  std::atomic_store(&routing_, RoutingPtr(std::make_shared<RoutingTable>()));
  for (int w = 0; w < runtime_->size(); ++w) slot_ops_.push_back(std::make_unique<SlotOps>());
}

Cluster::~Cluster() { Stop(); }

void Cluster::Stop() {
  std::thread thread;
  {
    std::lock_guard lock(recount_mu_);
    recount_stop_ = true;
    recount_abort_.store(true);
    thread = std::move(recount_thread_);
  }
  recount_cv_.notify_all();
  if (thread.joinable()) thread.join();
}

Status Cluster::LoadIdentity() {
  auto id = GetU64(engine_, kNodeIdKey);
  if (!id.ok()) return id.status();
  node_id_ = *id;
  if (node_id_ == 0) {
    node_id_ = RandomId();
    Status s = PutU64Durable(engine_, kNodeIdKey, node_id_);
    if (!s.ok()) return s;
  }
  auto cid = GetU64(engine_, kClusterIdKey);
  if (!cid.ok()) return cid.status();
  cluster_id_.store(*cid);
  return Status::Ok();
}

Status Cluster::CheckJoinTarget(uint64_t cid) {
  std::string answer;
  asio::io_context io;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    auto colon = opts_.join.rfind(':');
    asio::error_code ec;
    auto addr = asio::ip::make_address(opts_.join.substr(0, colon == std::string::npos ? 0 : colon), ec);
    int port = colon == std::string::npos ? 0 : std::atoi(opts_.join.c_str() + colon + 1);
    if (ec || port <= 0 || port > 65535) co_return;
    node::Stream stream(asio::ip::tcp::socket(io), opts_.tls);
    node::Deadline deadline(stream.socket(), std::chrono::seconds(3));
    auto [cec] = co_await stream.socket().async_connect(asio::ip::tcp::endpoint(addr, static_cast<uint16_t>(port)),
                                                        as_tuple(asio::use_awaitable));
    if (cec) co_return;
    if (co_await stream.Handshake(/*accepting=*/false)) co_return;
    static const std::string kAsk = "*1\r\n$15\r\nSHOAL.CLUSTERID\r\n";
    auto [wec, wn] = co_await stream.Write(asio::buffer(kAsk));
    if (wec) co_return;
    std::string pending;
    if (!co_await stream.ReadLine(&pending, &answer)) answer.clear();
  }, asio::detached);
  io.run();
  if (answer.size() == 17 && answer[0] == '+') {
    uint64_t theirs = std::strtoull(answer.c_str() + 1, nullptr, 16);
    if (theirs != cid) {
      return Status::InvalidArgument(
          "--dir " + engine_->dir() + " belongs to cluster " + Hex(cid) + ", but the --join target " + opts_.join +
          " belongs to cluster " + Hex(theirs) +
          ": a node cannot move between clusters with its data. Start it without --join to rejoin its own "
          "cluster, or give it an empty --dir to join the other");
    }
    spdlog::info("node {} is already in cluster {}: --join {} changes nothing", Hex(node_id_), Hex(cid), opts_.join);
    return Status::Ok();
  }
  spdlog::warn("node {} belongs to cluster {}; could not ask the --join target {} which cluster it is in ({}); "
               "starting in its own cluster", Hex(node_id_), Hex(cid), opts_.join,
               answer.empty() ? "no answer" : answer);
  return Status::Ok();
}

Status Cluster::Open() {
  Status s = LoadIdentity();
  if (!s.ok()) return s;
  uint64_t cid = cluster_id();
  if (cid != 0 && !opts_.join.empty()) {
    s = CheckJoinTarget(cid);
    if (!s.ok()) return s;
  }
  if (cid != 0) {
    s = OpenMeta(false, nullptr);
    if (!s.ok()) return s;
    if (ListsRemoved(*meta(), node_id_)) {
      return Status::Aborted("node " + Hex(node_id_) + " was removed from cluster " + Hex(cid) +
                             ": the data in its --dir is no member's any more. To add this machine "
                             "to the cluster again, start it with an empty --dir and --join a member");
    }
    // Replicas with state first: their ranges (after splits) decide which
    // empty replicas may be created beside them.
    for (bool with_state : {true, false}) {
      for (const auto& shard : meta()->shards()) {
        // Also a replica the metadata no longer places here but whose state
        // is still on disk: its group may still count it as a voter.
        bool has_state = storage::RaftStore::HasState(engine_, shard.id());
        bool listed = Contains(shard.replicas(), node_id_) || Contains(shard.learners(), node_id_);
        if (has_state != with_state || (!listed && !has_state)) continue;
        s = EnsureShardReplica(shard, false);
        if (!s.ok() && !listed) {
          // Left from a replica the placement no longer wants here (an
          // import a crash cut short, say): not a reason to stay down.
          spdlog::error("shard {}: the state left here of a replica no longer placed on this node cannot be "
                        "opened: {}; left on disk", shard.id(), s.ToString());
          continue;
        }
        if (s.code() == Code::kAborted) {  // OpenShardReplica's overlap check, or a member id refused
          // Its range on disk overlaps another replica's here: left closed
          // (and its data untouched) rather than keep the node down.
          spdlog::critical("shard {}: {}", shard.id(), s.ToString());
          continue;
        }
        if (!s.ok()) return s;
      }
    }
    spdlog::info("node {} restarted in cluster {}", Hex(node_id_), Hex(cid));
  } else if (opts_.join.empty()) {
    cid = RandomId();
    proto::NodeInfo self;
    self.set_id(node_id_);
    self.set_host(opts_.host);
    self.set_port(opts_.port);
    self.set_peer_port(opts_.peer_port);
    proto::MetaState initial = InitialMeta(cid, self, opts_.shards, opts_.replication_factor);
    s = OpenMeta(true, &initial);
    if (!s.ok()) return s;
    for (const auto& shard : initial.shards()) {
      s = EnsureShardReplica(shard, true);
      if (!s.ok()) return s;
    }
    s = PutU64Durable(engine_, kClusterIdKey, cid);
    if (!s.ok()) return s;
    cluster_id_.store(cid);
    spdlog::info("node {} bootstrapped cluster {} with {} shards", Hex(node_id_), Hex(cid), opts_.shards);
  } else {
    s = OpenMeta(false, nullptr);
    if (!s.ok()) return s;
    spdlog::info("node {} will join through {}", Hex(node_id_), opts_.join);
  }
  transport_->set_cluster_id(cluster_id());
  RebuildRouting(meta());
  if (opts_.on_meta && meta()) opts_.on_meta(*meta());
  return Status::Ok();
}

void Cluster::Start() {
  groups_->SetTickHook([this](int w) { OnTick(w); });
  if (cluster_id() == 0) asio::co_spawn(runtime_->worker(0).io(), JoinLoop(), asio::detached);
}

Status Cluster::OpenMeta(bool bootstrap, const proto::MetaState* initial) {
  auto sm = std::make_unique<MetaStateMachine>(engine_);
  Status s = sm->Load();
  if (!s.ok()) return s;
  meta_sm_ = sm.get();
  replica::ReplicaOptions ro;
  ro.group = 0;
  ro.node_id = node_id_;
  ro.tick_ms = groups_->options().tick_ms;
  ro.commit_lone_appends = !groups_->options().fsync;
  ro.stopping = opts_.stopping;
  if (bootstrap) {
    ro.bootstrap_voters = {node_id_};
    ro.bootstrap_image = initial->SerializeAsString();
  }
  auto r = replica::Replica::Open(engine_, ro, std::move(sm));
  if (!r.ok()) return r.status();
  meta_lineage_.store((*r)->recovery(), std::memory_order_release);
  groups_->Add(std::move(r).value());
  return Status::Ok();
}

bool Cluster::ClaimLocked(uint64_t id, std::pair<uint16_t, uint16_t> range) {
  if (shards_.contains(id) || opening_.contains(id) || groups_->Find(id) != nullptr) return false;
  opening_[id] = range;
  return true;
}

Status Cluster::EnsureShardReplica(const proto::ShardInfo& s, bool bootstrap) {
  if (groups_->Find(s.id()) != nullptr) return Status::Ok();
  if (s.id() == 0 || s.id() >= node::Groups::kMaxGroups || s.slot_end() > storage::kSlotCount ||
      s.slot_begin() >= s.slot_end()) {
    return Status::Corruption("shard map entry " + std::to_string(s.id()));
  }
  {
    std::lock_guard lock(shards_mu_);
    const bool fresh = !bootstrap && !storage::RaftStore::HasState(engine_, s.id());
    if (fresh) {
      // A new, empty replica waits for a snapshot. Not while a replica here
      // still holds some of its slots (a split this node has not applied
      // yet: the split creates the child with its data in place, or an
      // image from before the split is being taken), and not for a split's
      // child before the split is done.
      const auto b = static_cast<uint16_t>(s.slot_begin()), e = static_cast<uint16_t>(s.slot_end());
      if (uint64_t holder = SlotHolderLocked(s.id(), b, e); holder != 0) {
        spdlog::debug("shard {}: not created yet: shard {} here still holds some of slots {}-{}", s.id(), holder, b,
                      e - 1);
        return Status::Ok();
      }
      if (MetaPtr m = meta()) {
        for (const auto& p : m->shards()) {
          if (p.split_child() == s.id()) return Status::Ok();
        }
      }
    }
    // A new replica's slots are claimed with it; one with state reads its
    // range from disk (OpenShardReplica checks that one).
    std::pair<uint16_t, uint16_t> claim{0, 0};
    if (fresh) claim = {static_cast<uint16_t>(s.slot_begin()), static_cast<uint16_t>(s.slot_end())};
    if (!ClaimLocked(s.id(), claim)) return Status::Ok();  // opened, or being opened, elsewhere
  }
  auto it = s.incarnations().find(node_id_);
  const uint64_t incarnation = it == s.incarnations().end() ? 0 : it->second;
  auto r = OpenShardReplica(s.id(), static_cast<uint16_t>(s.slot_begin()), static_cast<uint16_t>(s.slot_end()),
                            bootstrap, s.recovery(), s.recovered_on(), incarnation);
  return r.ok() ? Status::Ok() : r.status();
}

Result<replica::Replica*> Cluster::OpenShardReplica(uint64_t id, uint16_t begin, uint16_t end, bool bootstrap,
                                                    uint64_t recovery, uint64_t recovered_on, uint64_t incarnation) {
  // The caller claimed `id` (ClaimLocked); the claim ends here, however this ends.
  struct Release {
    Cluster* c;
    uint64_t id;
    ~Release() {
      std::lock_guard lock(c->shards_mu_);
      c->opening_.erase(id);
    }
  } release{this, id};
  auto shard = opts_.meta_budget != nullptr
                   ? std::make_unique<kv::Shard>(engine_, static_cast<uint32_t>(id), begin, end, opts_.meta_budget)
                   : std::make_unique<kv::Shard>(engine_, static_cast<uint32_t>(id), begin, end);
  shard->set_key_watcher(opts_.key_watcher);
  Status st = shard->Load();
  if (!st.ok()) return st;
  {
    // The range on disk (an import a crash cut short names its image's) must
    // not cover another replica's slots here: importing or serving them would
    // overwrite that replica's data. Never expected (images are claimed,
    // ClaimImage); refused loudly rather than risked.
    std::lock_guard lock(shards_mu_);
    if (uint64_t holder = SlotHolderLocked(id, shard->slot_begin(), shard->slot_end()); holder != 0) {
      return Status::Aborted("shard " + std::to_string(id) + " here holds slots " +
                                std::to_string(shard->slot_begin()) + "-" + std::to_string(shard->slot_end() - 1) +
                                ", some of which shard " + std::to_string(holder) + " here holds; not opened");
    }
    opening_[id] = {shard->slot_begin(), shard->slot_end()};  // held from here until it is open
  }
  auto sm = std::make_unique<replica::KvStateMachine>(shard.get(), opts_.limits, &write_hints_on_);
  replica::ReplicaOptions ro;
  ro.group = id;
  // A replica with state here is the member it was (a split's child: its
  // parent's); a new one is the incarnation the metadata names.
  bool had_state = storage::RaftStore::HasState(engine_, id);
  auto stored = replica::ReadIncarnation(engine_, id);
  if (!stored.ok()) return stored.status();
  if (had_state && stored->found && !stored->retired) incarnation = stored->incarnation;
  if (had_state && !stored->found) incarnation = 0;  // from before incarnations
  ro.node_id = MemberIdOf(node_id_, incarnation);
  ro.incarnation = incarnation;
  ro.tick_ms = groups_->options().tick_ms;
  ro.compact_bytes = opts_.log_bytes_per_replica;
  ro.log_cache_bytes = opts_.log_cache_bytes_per_replica;
  ro.courier = opts_.courier;
  ro.commit_lone_appends = !groups_->options().fsync;
  ro.stopping = opts_.stopping;
  ro.splitter = this;
  if (bootstrap) ro.bootstrap_voters = {ro.node_id};
  auto r = replica::Replica::Open(engine_, ro, std::move(sm));
  if (!r.ok()) return r.status();
  // A new replica belongs to the shard's latest recovery, on the recovered
  // node too: only the replica that was there with state is the one the
  // recovery forces (SyncLocalReplicas). A new one left at an older number
  // would be forced as well, once it had state and missed its leader for a
  // while, beside the group it had joined.
  if (recovery > (*r)->recovery() && (recovered_on != node_id_ || !had_state)) {
    if (had_state) {
      // From before an unsafe recovery of its shard: it opens as it was
      // (the recovered group ignores it), and SyncLocalReplicas deletes it
      // once the recovered group has been seen led; until then it may be
      // the copy a refused recovery has to fall back on.
      spdlog::warn("shard {}: this node's replica is from before unsafe recovery {}: kept until the recovered group "
                   "is seen led", id, recovery);
    } else {
      Status rs = (*r)->SetRecovery(recovery);
      if (!rs.ok()) return rs;
    }
  }
  {
    std::lock_guard lock(shards_mu_);
    shards_[id] = std::move(shard);
  }
  replica::Replica* added = groups_->Add(std::move(r).value());
  RebuildLocalSlots();
  return added;
}

kv::Shard* Cluster::LocalShard(uint64_t group) const {
  auto* self = const_cast<Cluster*>(this);
  std::lock_guard lock(self->shards_mu_);
  auto it = shards_.find(group);
  return it == shards_.end() ? nullptr : it->second.get();
}

std::vector<kv::Shard*> Cluster::LocalShards() const {
  auto* self = const_cast<Cluster*>(this);
  std::lock_guard lock(self->shards_mu_);
  std::vector<kv::Shard*> out;
  for (const auto& [id, s] : shards_) out.push_back(s.get());
  return out;
}

uint64_t Cluster::LeaderOf(uint64_t group, int64_t heard_within_us) const {
  uint64_t leader = 0, term = 0;
  if (replica::Replica* r = groups_->Find(group)) {
    leader = r->published_leader();  // a Raft member id; its node is the answer
    term = r->published_term();
    if (leader != 0 && leader != node_id_) {
      if (MetaPtr m = meta()) leader = NodeOfMember(*m, leader);
    }
  }
  std::lock_guard lock(gossip_mu_);
  auto it = gossip_.find(group);
  if (it != gossip_.end() && (leader == 0 || it->second.term > term) &&
      (heard_within_us <= 0 || node::MonoUs() - it->second.heard_us <= heard_within_us)) {
    leader = it->second.node;
  }
  return leader;
}

bool Cluster::ShardReport(const proto::ShardInfo& s, int64_t now, node::LeaderReport* out) const {
  LeaderGossip g;
  if (replica::Replica* r = groups_->Find(s.id()); r != nullptr && r->published_is_leader()) {
    *out = ReportOf(*r);
  } else if (GossipOf(s.id(), now, &g)) {
    *out = g.report;
  } else {
    return false;
  }
  return out->recovery >= s.recovery();  // not a leader of a lineage a recovery replaced
}

bool Cluster::GossipOf(uint64_t group, int64_t now, LeaderGossip* out) const {
  std::lock_guard lock(gossip_mu_);
  auto it = gossip_.find(group);
  if (it == gossip_.end() || now - it->second.heard_us > kGossipFreshUs) return false;
  *out = it->second;
  return true;
}

std::string Cluster::NoShardMapError() const {
  if (removed_elsewhere()) {
    return "CLUSTERDOWN this node was removed from the cluster while it was away: it serves no data (stop it; to "
           "add this machine again, start it with an empty --dir and --join a member)";
  }
  return "CLUSTERDOWN The cluster is down: this node has no shard map yet";
}

bool Cluster::Healthy() const {
  if (removed_elsewhere()) return false;
  RoutingPtr rt = routing();
  if (rt->shards.empty()) return false;
  MetaPtr m = meta();
  for (const auto& s : rt->shards) {
    if (LeaderOf(s.id, kLeaderHeardUs) != 0) continue;
    // A split's child before its first election: its parent still serves.
    bool parent_serves = false;
    for (const auto& p : m->shards()) parent_serves |= p.split_child() == s.id && LeaderOf(p.id(), kLeaderHeardUs) != 0;
    if (!parent_serves) return false;
  }
  return true;
}

size_t Cluster::ShardsReplicated(int64_t now) const {
  MetaPtr m = meta();
  if (!m) return 0;
  size_t members = 0;  // nodes that hold replicas (not removed)
  for (const auto& n : m->nodes()) members += n.state() != proto::NODE_REMOVED;
  const size_t rf = std::min<size_t>(std::max<uint32_t>(m->replication_factor(), 1), members);
  std::set<uint64_t> heard{node_id_};
  {
    std::lock_guard lock(gossip_mu_);
    for (const auto& [id, at] : last_heard_us_) {
      if (now - at <= kLeaderHeardUs) heard.insert(id);
    }
  }
  size_t n = 0;
  for (const auto& s : m->shards()) {
    Membership want, actual;
    uint64_t preferred = 0, leader = 0;
    node::LeaderReport rep;
    bool joint = false;
    if (!WantedMembership(*m, s.id(), &want, &preferred) ||
        !ShardMembers(*m, s, now, /*load=*/false, &rep, &leader, &actual, &joint) || joint || !(actual == want) ||
        !want.learners.empty() || actual.voters.size() < rf) {  // (a learner: a move under way)
      continue;
    }
    bool live = true;
    for (const auto* ids : {&actual.voters, &actual.learners}) {
      for (uint64_t id : *ids) live &= heard.contains(id);
    }
    n += live;
  }
  return n;
}

void Cluster::OnLeaders(uint64_t from, std::vector<node::LeaderReport> leaders) {
  std::lock_guard lock(gossip_mu_);
  const int64_t now = node::MonoUs();
  last_heard_us_[from] = now;
  for (auto it = gossip_.begin(); it != gossip_.end();) {
    bool still = false;
    for (const auto& l : leaders) still |= l.group == it->first;
    if (it->second.node == from && !still) {
      it = gossip_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& l : leaders) {
    auto& cur = gossip_[l.group];
    max_group_seen_ = std::max(max_group_seen_, l.group);
    led_heard_us_[l.group] = now;
    uint64_t& seen = max_recovery_seen_[l.group];
    seen = std::max(seen, l.recovery);
    // A leader of a later unsafe recovery wins over one from before it
    // whatever their terms (the earlier one is fenced once the metadata
    // has the recovery); a stale report gives way to any fresh one.
    const bool stale = now - cur.heard_us > kGossipFreshUs;
    if (cur.node == 0 || stale || std::pair{cur.report.recovery, cur.term} <= std::pair{l.recovery, l.term}) {
      cur = LeaderGossip{from, l.term, l.voters, l.learners, l.joint, now, l};
    }
  }
}

uint64_t Cluster::MinChildId() {
  uint64_t floor = 0;
  for (replica::Replica* r : groups_->All()) floor = std::max(floor, r->group());
  std::lock_guard lock(gossip_mu_);
  return std::max(floor, max_group_seen_) + 1;
}

uint64_t Cluster::RecoverySeen(uint64_t group) {
  uint64_t seen = 0;
  if (replica::Replica* r = groups_->Find(group)) seen = r->published_recovery();
  std::lock_guard lock(gossip_mu_);
  auto it = max_recovery_seen_.find(group);
  return it == max_recovery_seen_.end() ? seen : std::max(seen, it->second);
}

void Cluster::OnTransfers(uint64_t from, node::NodeStats stats) {
  {
    std::lock_guard lock(gossip_mu_);
    transfers_[from] = stats;
  }
  std::lock_guard lock(peer_features_mu_);
  auto it = peer_features_->find(NodeKey(from));
  if (it != peer_features_->end() && it->second == stats.features) return;
  auto next = std::make_shared<std::map<uint64_t, uint64_t>>(*peer_features_);
  (*next)[NodeKey(from)] = stats.features;
  peer_features_ = std::move(next);
}

Cluster::FormatCheck Cluster::DataPeerFormats() const {
  FormatCheck c;
  c.features = features_on_.load(std::memory_order_acquire);
  if (c.features == 0) return c;
  std::lock_guard lock(peer_features_mu_);
  c.peers = peer_features_;
  return c;
}

bool Cluster::FormatCheck::Allows(uint64_t from) const {
  if (features == 0) return true;
  auto it = peers->find(NodeKey(from));
  // Not reported yet (its first gossip follows within 100 ms; a build from
  // before features never reports any): not taken.
  return it != peers->end() && (it->second & features) == features;
}

void Cluster::RebuildRouting(const MetaPtr& meta) {
  features_on_.store(meta->features(), std::memory_order_release);
  write_hints_on_.store((meta->features() & kFeatureWriteHints) != 0, std::memory_order_release);
  auto rt = std::make_shared<RoutingTable>();
  rt->meta_epoch = meta->epoch();
  rt->replication_factor = static_cast<int>(meta->replication_factor());
  rt->meta_voters.assign(meta->meta_voters().begin(), meta->meta_voters().end());
  for (const auto& n : meta->nodes()) {
    // A removed node is no member: clients are not shown it (CLUSTER NODES,
    // SHARDS, SLOTS), and nothing is sent to it (FLUSHALL's fan-out).
    if (n.state() == proto::NODE_REMOVED && n.id() != node_id_) continue;
    rt->nodes[n.id()] = NodeAddr{n.id(), NodeName(n.id()), n.host(), static_cast<uint16_t>(n.port())};
  }
  std::vector<proto::ShardInfo> shards(meta->shards().begin(), meta->shards().end());
  std::sort(shards.begin(), shards.end(),
            [](const auto& a, const auto& b) { return a.slot_begin() < b.slot_begin(); });
  for (const auto& s : shards) {
    ShardRoute route;
    route.id = s.id();
    route.begin = static_cast<uint16_t>(s.slot_begin());
    route.end = static_cast<uint16_t>(std::min<uint32_t>(s.slot_end(), storage::kSlotCount));
    route.epoch = s.epoch();
    route.replicas.assign(s.replicas().begin(), s.replicas().end());
    for (uint32_t slot = route.begin; slot < s.slot_end() && slot < storage::kSlotCount; ++slot) {
      slot_group_[slot].store(static_cast<uint32_t>(route.id), std::memory_order_release);
    }
    rt->shards.push_back(std::move(route));
  }
  std::atomic_store(&routing_, RoutingPtr(std::move(rt)));
}

// Shared with the other files of Cluster (cluster_internal.h).

std::vector<uint64_t> SortedIds(std::vector<uint64_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

bool HasId(const std::vector<uint64_t>& v, uint64_t id) { return std::find(v.begin(), v.end(), id) != v.end(); }

bool ListsRemoved(const proto::MetaState& meta, uint64_t node) {
  for (const auto& n : meta.nodes()) {
    if (n.id() == node) return n.state() == proto::NODE_REMOVED;
  }
  return false;
}

// What the metadata wants group `group`'s membership to be.
bool WantedMembership(const proto::MetaState& meta, uint64_t group, Membership* want, uint64_t* preferred) {
  *preferred = 0;
  if (group == 0) {
    want->voters.assign(meta.meta_voters().begin(), meta.meta_voters().end());
    want->learners.clear();
    for (const auto& n : meta.nodes()) {
      if (n.state() != proto::NODE_REMOVED && !HasId(want->voters, n.id())) want->learners.push_back(n.id());
    }
  } else {
    const proto::ShardInfo* info = nullptr;
    for (const auto& s : meta.shards()) {
      if (s.id() == group) info = &s;
    }
    if (info == nullptr) return false;
    want->voters.assign(info->replicas().begin(), info->replicas().end());
    want->learners.assign(info->learners().begin(), info->learners().end());
    *preferred = info->preferred_leader();
  }
  want->voters = SortedIds(want->voters);
  want->learners = SortedIds(want->learners);
  return true;
}

std::vector<uint64_t> NodesOfMembers(const proto::MetaState& meta, const proto::ShardInfo* shard,
                                     const std::vector<uint64_t>& members, bool* stale) {
  std::vector<uint64_t> out;
  out.reserve(members.size());
  if (stale != nullptr) *stale = false;
  for (uint64_t m : members) {
    const uint64_t node = NodeOfMember(meta, m);
    out.push_back(node);
    const bool placed = shard != nullptr && (Contains(shard->replicas(), node) || Contains(shard->learners(), node));
    if (stale != nullptr && placed && IncarnationOf(m, node) < IncarnationOf(MemberOn(*shard, node), node)) {
      *stale = true;
    }
  }
  return SortedIds(std::move(out));
}

void NameReportedIncarnations(const proto::MetaState& meta, const node::LeaderReport& rep, proto::ShardInfo* next) {
  for (const auto* ids : {&rep.voters, &rep.learners}) {
    for (uint64_t m : *ids) {
      const uint64_t node = NodeOfMember(meta, m);
      if (!Contains(next->replicas(), node) && !Contains(next->learners(), node)) continue;
      (*next->mutable_incarnations())[node] = IncarnationOf(m, node);
    }
  }
}

// Any thread: reads only what the replica publishes.
node::LeaderReport ReportOf(const replica::Replica& r) {
  auto published = r.published_conf();
  const raft::ConfState cs = published ? *published : raft::ConfState{};
  node::LeaderReport rep;
  rep.group = r.group();
  rep.term = r.published_term();
  rep.voters = cs.voters;
  rep.voters.insert(rep.voters.end(), cs.voters_outgoing.begin(), cs.voters_outgoing.end());
  rep.voters = SortedIds(rep.voters);
  rep.learners = cs.learners;
  rep.joint = !cs.voters_outgoing.empty();
  rep.recovery = r.published_recovery();
  return rep;
}


void Cluster::OnTick(int worker) {
  int64_t now = node::MonoUs();
  MetaPtr m = meta();
  if (worker == groups_->WorkerOf(0)) MetaRecoveryTick(m, now);  // also with no metadata yet
  if (!m || m->cluster_id() == 0) return;
  // Leaders bring their groups' membership to what the metadata wants; not
  // by metadata from before a recovery of the meta shard this node belongs
  // to (kept until the recovered leader's replaces it: routing only).
  const bool meta_replaced = meta_lineage_.load(std::memory_order_acquire) > m->meta_recovery();
  for (replica::Replica* r : groups_->All()) {
    if (groups_->WorkerOf(r->group()) != worker || !r->is_leader()) continue;
    if (removed_elsewhere()) {
      // Removed while it was away, yet still leading (its followers hear
      // it): leadership goes to another voter, whose node acts on the
      // current metadata (and removes this one).
      for (raft::NodeId v : r->raft().tracker().conf_state().voters) {
        if (v != r->node_id()) {
          r->TransferLeader(v);
          groups_->Notify(r);
          break;
        }
      }
      continue;
    }
    if (meta_replaced && r->group() != 0) continue;
    Reconcile(r, *m, now);
    if (r->group() != 0) ProposeSplitIfDue(r, *m, now);
  }
  bool sync_due = false;
  {
    std::lock_guard lock(transfer_mu_);
    if (last_sync_us_.empty()) last_sync_us_.assign(static_cast<size_t>(runtime_->size()), 0);
    int64_t& last = last_sync_us_[static_cast<size_t>(worker)];
    sync_due = now - last >= kPlacementIntervalUs || (worker == 0 && m != routed_meta_);
    if (sync_due) last = now;
  }
  if (worker != 0) {
    if (sync_due) SyncLocalReplicas(worker, now);
    return;
  }
  if (m != routed_meta_) {
    // Any new metadata, not only a new epoch: an image from a recovered meta
    // shard may carry the epoch the replaced metadata had.
    routed_meta_ = m;
    for (const auto& n : m->nodes()) {
      transport_->SetAddress(n.id(), n.host(), static_cast<uint16_t>(n.peer_port()));
    }
    RebuildRouting(m);
    if (opts_.on_meta) opts_.on_meta(*m);
  }
  if (sync_due) SyncLocalReplicas(worker, now);
  // A snapshot may have shrunk a local replica's range (it split elsewhere).
  uint64_t sig = LocalRangesSig();
  bool ranges_changed;
  {
    std::lock_guard lock(local_slots_mu_);
    ranges_changed = sig != local_ranges_sig_;
  }
  if (ranges_changed) RebuildLocalSlots();
  MeasureLoad(now);
  std::vector<node::LeaderReport> leading;
  for (replica::Replica* r : groups_->All()) {
    if (!r->published_is_leader()) continue;
    leading.push_back(ReportOf(*r));
    FillLoad(&leading.back());
  }
  transport_->SetLocalLeaders(std::move(leading));
  replica::Replica* meta_replica = groups_->Find(0);
  bool meta_leader = meta_replica != nullptr && meta_replica->is_leader();
  if (!meta_leader) {
    meta_leader_since_us_ = 0;
    return;
  }
  if (meta_leader_since_us_ == 0) meta_leader_since_us_ = now;  // every node gets down-after from now
  if (now - last_placement_us_ >= kPlacementIntervalUs) {
    last_placement_us_ = now;
    PlacementDriver(meta_replica, *m, now);
  }
}

void Cluster::NoteLeaderless(int worker) {
  std::vector<node::LeaderlessReplica> quiet;
  for (replica::Replica* r : groups_->All()) {
    // Also one that heard no leader since it opened (a node restarted after
    // its group's majority died): its log is what it is at once.
    if (r->group() == 0 || groups_->WorkerOf(r->group()) != worker || r->retired() || r->is_leader() ||
        (r->HeardFromLeaderWithin(replica::Replica::kForceQuietTicks) && r->HeardFromLeaderSinceOpen())) {
      continue;
    }
    const storage::RaftStore& store = r->store();
    // A replica with nothing (created for a recovery, not sent its state
    // yet) is no survivor: ranked by its recovery number, it would stand
    // in front of those that hold the data.
    if (store.last_index() == 0 && r->published_applied() == 0) continue;
    const raft::ConfState& cs = store.conf_state();
    auto last_term = store.term(store.last_index());
    quiet.push_back(node::LeaderlessReplica{r->group(), r->node_id(), last_term.ok() ? *last_term : 0,
                                            store.last_index(), r->published_applied(), cs.voters,
                                            cs.voters_outgoing, cs.learners, r->recovery()});
  }
  std::lock_guard lock(transfer_mu_);
  if (leaderless_.size() < static_cast<size_t>(runtime_->size())) leaderless_.resize(static_cast<size_t>(runtime_->size()));
  leaderless_[static_cast<size_t>(worker)] = std::move(quiet);
}

std::map<uint64_t, node::LeaderlessReplica> Cluster::LeaderlessReplicas(uint64_t group, int64_t now) const {
  std::map<uint64_t, node::LeaderlessReplica> out;
  {
    std::lock_guard lock(transfer_mu_);
    for (const auto& per_worker : leaderless_) {
      for (const auto& l : per_worker) {
        if (l.group == group) out[node_id_] = l;
      }
    }
  }
  std::lock_guard lock(gossip_mu_);
  for (const auto& [id, stats] : transfers_) {
    auto heard = last_heard_us_.find(id);
    if (id == node_id_ || heard == last_heard_us_.end() || now - heard->second > kLeaderHeardUs) continue;
    for (const auto& l : stats.leaderless) {
      if (l.group == group) out[id] = l;
    }
  }
  return out;
}

void Cluster::SyncLocalReplicas(int worker, int64_t now) {
  StartRecounts(worker);
  NoteLeaderless(worker);
  MetaPtr m = meta();  // read here, on the worker that creates and retires
  // Metadata from before a recovery of the meta shard this node belongs to
  // opens replicas, but retires and forces none.
  const bool meta_replaced = meta_lineage_.load(std::memory_order_acquire) > m->meta_recovery();
  for (const auto& s : m->shards()) {
    if (groups_->WorkerOf(s.id()) != worker) continue;
    bool wanted = Contains(s.replicas(), node_id_) || Contains(s.learners(), node_id_);
    replica::Replica* r = groups_->Find(s.id());
    // A replica here of another incarnation than the metadata places here
    // (removed, then placed again; or one whose record an unsafe recovery
    // of the meta shard lost, never added): it goes once its group has let
    // it go (a group that has it keeps it, and the placement driver
    // records it), and the metadata's comes next round.
    const bool old_incarnation = wanted && r != nullptr && r->incarnation() != IncarnationOf(MemberOn(s, node_id_), node_id_);
    if (meta_replaced) {
      if (wanted && r == nullptr) {
        Status st = EnsureShardReplica(s, false);
        if (!st.ok()) spdlog::error("cannot create replica of shard {}: {}", s.id(), st.ToString());
      }
      continue;
    }
    if (r != nullptr && s.recovery() > r->recovery() && s.recovered_on() != node_id_ &&
        RecoverySeen(s.id()) >= s.recovery()) {
      // A replica from before an unsafe recovery of its shard: stale, once
      // the recovered group has been seen led (until then it is kept: the
      // survivor chosen may have refused, and this may be the best left).
      spdlog::warn("shard {}: removing this node's replica from before unsafe recovery {}", s.id(), s.recovery());
      Status st = Retire(r);
      if (!st.ok()) spdlog::error("cannot remove the replica of shard {}: {}", s.id(), st.ToString());
      continue;
    }
    if (r != nullptr && s.recovery() > 0 && s.recovered_on() == node_id_) {
      auto* kv_sm = dynamic_cast<replica::KvStateMachine*>(&r->state_machine());
      // A parent that has not applied its split under way holds the child's
      // slots too: as the only voter it applies the split itself
      // (ProposeSplitIfDue), and the child is recovered with it.
      const proto::ShardInfo* child = s.split_child() != 0 ? FindShardById(*m, s.split_child()) : nullptr;
      const bool split_pending_here = kv_sm != nullptr && child != nullptr && child->slot_begin() == s.slot_end() &&
                                      kv_sm->shard()->slot_begin() == s.slot_begin() &&
                                      kv_sm->shard()->slot_end() == child->slot_end();
      if (kv_sm != nullptr && r->recovery() < s.recovery() && !split_pending_here &&
          (kv_sm->shard()->slot_begin() != s.slot_begin() || kv_sm->shard()->slot_end() != s.slot_end())) {
        // It missed a split (or holds a later one): as the only voter it
        // would serve slots another shard now holds. Unless it missed splits
        // recorded as done and the shards over its extra slots were
        // recovered here too: forced, it splits them off (ProposeSplitIfDue).
        const kv::Shard& local = *kv_sm->shard();
        if (child != nullptr || MissedSplitTail(*m, s, local) == nullptr) {
          bool log = false;
          {
            std::lock_guard lock(transfer_mu_);
            int64_t& last = last_refusal_log_us_[s.id()];
            log = last == 0 || now - last >= 10'000'000;
            if (log) last = now;
          }
          std::string tail;
          size_t tails = 0;
          for (const auto& t : m->shards()) {
            if (child == nullptr && local.slot_begin() == s.slot_begin() && t.slot_begin() >= s.slot_end() &&
                t.slot_end() <= local.slot_end()) {
              tail += (tails++ == 0 ? "" : ", ") + std::to_string(t.id());
            }
          }
          std::string hint;
          if (tails == 1) {
            hint = "; if shard " + tail + " lost its majority for good too, recover it on this node as well, and "
                   "this replica splits it off";
          } else if (tails > 1) {
            hint = "; if shards " + tail + " lost their majority for good too, recover each of them on this node as "
                   "well, and this replica splits them off";
          }
          if (log) {
            spdlog::critical("shard {}: unsafe recovery {} refused here: this replica holds slots {}-{}, the "
                             "metadata {}-{} (it missed a split){}", s.id(), s.recovery(), local.slot_begin(),
                             local.slot_end() - 1, s.slot_begin(), s.slot_end() - 1, hint);
          }
          continue;
        }
      }
      // A learner too: RECOVER chose it as the survivor furthest ahead (a
      // move under way when the majority died), which holds every entry any
      // other survivor does.
      auto forced = r->ForceSoleVoter(s.recovery(), nullptr, /*learner_ok=*/r->node_id() == MemberOn(s, node_id_));
      if (!forced.ok()) spdlog::error("shard {}: unsafe recovery failed: {}", s.id(), forced.status().ToString());
      if (forced.ok() && *forced) groups_->Notify(r);
    }
    if (wanted && r == nullptr) {
      Status st = EnsureShardReplica(s, false);
      if (!st.ok()) spdlog::error("cannot create replica of shard {}: {}", s.id(), st.ToString());
      continue;
    }
    if ((wanted && !old_incarnation) || r == nullptr || r->is_leader()) continue;
    LeaderGossip g;
    if (!GossipOf(s.id(), now, &g) ||
        !MayRetire(r->node_id(), false, g.node, Membership{g.voters, g.learners}, g.joint,
                   r->HeardFromLeaderWithin(kRetireQuietTicks))) {
      continue;
    }
    if (old_incarnation) {
      spdlog::info("shard {}: this node's replica {} is another incarnation than the metadata's ({}): removing it",
                   s.id(), Hex(r->node_id()), Hex(MemberOn(s, node_id_)));
    }
    Status st = Retire(r);
    if (!st.ok()) spdlog::error("cannot remove the replica of shard {}: {}", s.id(), st.ToString());
  }
}

Status Cluster::Retire(replica::Replica* r) {
  uint64_t group = r->group();
  Status st = groups_->Retire(group);
  if (!st.ok()) return st;
  if (opts_.courier != nullptr) opts_.courier->Discard(group);
  auto* kv_sm = dynamic_cast<replica::KvStateMachine*>(&r->state_machine());
  std::unique_lock lock(shards_mu_);
  auto it = shards_.find(group);
  if (it != shards_.end() && kv_sm != nullptr && it->second.get() == kv_sm->shard()) {
    // No apply runs on it again (its group is retired on this, its worker).
    it->second->DetachMetaCache();
    retired_shards_.push_back(std::move(it->second));
    shards_.erase(it);
  }
  lock.unlock();
  RebuildLocalSlots();
  spdlog::info("shard {}: replica removed from this node, its data deleted", group);
  return Status::Ok();
}

void Cluster::MetaRecoveryTick(const MetaPtr& m, int64_t now) {
  replica::Replica* mr = groups_->Find(0);
  if (mr == nullptr) return;
  uint64_t latest = 0, from = 0;
  {
    std::lock_guard lock(gossip_mu_);
    for (const auto& [id, stats] : transfers_) {
      if (stats.meta_recovery > latest) std::tie(latest, from) = std::pair{stats.meta_recovery, id};
    }
  }
  if (latest > mr->recovery()) {
    // Its log may hold entries the recovered leader never had: it must not
    // be appended to, and its state must not be taken for the cluster's.
    // Messages of its old group are refused from here on (MetaPeerInLineage).
    meta_lineage_.store(latest, std::memory_order_release);
    auto reset = mr->ResetForRecovery(latest);
    if (!reset.ok()) {
      spdlog::error("meta shard: cannot start this node's replica over for unsafe recovery {}: {}", latest >> 32,
                    reset.status().ToString());
    } else if (*reset) {
      spdlog::critical("meta shard: node {} belongs to unsafe recovery {} of the meta shard: this node's meta "
                       "replica, from before it, was started over and waits for the recovered leader's state",
                       Hex(from), latest >> 32);
      groups_->Notify(mr);
    }
  }
  meta_lineage_.store(std::max(meta_lineage_.load(std::memory_order_relaxed), mr->recovery()),
                      std::memory_order_release);
  node::NodeStats stats = opts_.local_transfers ? opts_.local_transfers() : node::NodeStats{};
  stats.meta_recovery = mr->recovery();
  stats.features = BuildFeatures();
  {
    std::lock_guard lock(transfer_mu_);
    for (const auto& per_worker : leaderless_) {
      stats.leaderless.insert(stats.leaderless.end(), per_worker.begin(), per_worker.end());
    }
  }
  if (m) {
    // Removed nodes that still talk (restarted with their old data): told so.
    std::lock_guard lock(gossip_mu_);
    for (const auto& n : m->nodes()) {
      auto it = last_heard_us_.find(n.id());
      if (n.state() == proto::NODE_REMOVED && it != last_heard_us_.end() && now - it->second < kRemovedToldUs) {
        stats.removed.push_back(n.id());
      }
    }
  }
  // Whether this node was removed while it was away (its own metadata, from
  // before, does not say so): a peer heard lately says so, and that peer's
  // metadata is of the latest lineage of the meta shard heard of (a
  // recovery of the meta shard may have dropped the removal).
  const bool listed_removed = m && ListsRemoved(*m, node_id_);
  bool told = false;
  uint64_t teller = 0;
  if (!listed_removed) {
    std::lock_guard lock(gossip_mu_);
    uint64_t top = mr->recovery();
    for (const auto& [id, st] : transfers_) top = std::max(top, st.meta_recovery);
    for (const auto& [id, st] : transfers_) {
      auto heard = last_heard_us_.find(id);
      if (st.meta_recovery >= top && HasId(st.removed, node_id_) && heard != last_heard_us_.end() &&
          now - heard->second < kRemovedToldUs) {
        told = true;
        teller = id;
      }
    }
  }
  if (told != removed_elsewhere_.exchange(told, std::memory_order_relaxed) && told) {
    spdlog::critical("node {} says this node ({}) was removed from the cluster while it was away: it serves no data "
                     "and leads nothing from now on. Stop it; to add this machine again, start it with an empty "
                     "--dir and --join a member", Hex(teller), Hex(node_id_));
  }
  transport_->SetLocalTransfers(stats);
  if (!m || !mr->is_leader() || mr->recovery() <= m->meta_recovery() || now - last_meta_recovered_us_ < 1'000'000) {
    return;
  }
  last_meta_recovered_us_ = now;
  bool listed = false;
  for (const auto& n : m->nodes()) listed |= n.id() == node_id_ && n.state() != proto::NODE_REMOVED;
  if (!listed) {
    spdlog::error("meta shard: unsafe recovery {} cannot be recorded: this node is not an active member in the "
                  "metadata it kept", mr->recovery() >> 32);
    return;
  }
  proto::MetaCommand cmd;
  cmd.set_version(1);
  cmd.mutable_meta_recovered()->set_recovery(mr->recovery());
  cmd.mutable_meta_recovered()->set_node(node_id_);
  spdlog::warn("meta shard: recording unsafe recovery {} (this node the only wanted meta voter)", mr->recovery() >> 32);
  ProposeMeta(mr, cmd);
}

bool Cluster::MetaPeerInLineage(uint64_t from) const {
  const uint64_t mine = meta_lineage_.load(std::memory_order_acquire);
  std::lock_guard lock(gossip_mu_);
  auto it = transfers_.find(from);
  if (it == transfers_.end()) return mine == 0;  // not heard yet: only where no recovery ever happened
  return it->second.meta_recovery == mine;
}

std::vector<node::LeaderReport> Cluster::UnlistedLeaders(const proto::MetaState& meta, int64_t now) const {
  std::vector<node::LeaderReport> out;
  for (replica::Replica* r : groups_->All()) {  // (a node hears no gossip of its own leaderships)
    if (r->group() != 0 && r->published_is_leader() && FindShardById(meta, r->group()) == nullptr) {
      out.push_back(ReportOf(*r));
      FillLoad(&out.back());
    }
  }
  std::lock_guard lock(gossip_mu_);
  for (const auto& [group, g] : gossip_) {
    if (group != 0 && g.node != node_id_ && now - g.heard_us <= kGossipFreshUs &&
        FindShardById(meta, group) == nullptr) {
      out.push_back(g.report);
    }
  }
  return out;
}

uint64_t Cluster::UnlistedGroup(const proto::MetaState& meta) const {
  std::vector<node::LeaderReport> unlisted = UnlistedLeaders(meta, node::MonoUs());
  return unlisted.empty() ? 0 : unlisted.front().group;
}

void Cluster::AdmitRecoveredMetaMembers(uint64_t recovery, const replica::Replica& r, Membership* want) const {
  const raft::ConfState& cs = r.raft().tracker().conf_state();
  auto member = [&](uint64_t id) {
    return HasId(cs.voters, id) || HasId(cs.voters_outgoing, id) || HasId(cs.learners, id);
  };
  std::lock_guard lock(gossip_mu_);
  auto admitted = [&](uint64_t id) {
    if (id == node_id_ || member(id)) return true;
    auto it = transfers_.find(id);
    return it != transfers_.end() && it->second.meta_recovery == recovery;
  };
  std::vector<uint64_t> learners;
  for (uint64_t id : want->learners) {
    if (admitted(id)) learners.push_back(id);
  }
  if (!std::all_of(want->voters.begin(), want->voters.end(), admitted)) {
    // The voters change only all at once: until then those admitted catch
    // up as learners.
    for (uint64_t id : want->voters) {
      if (admitted(id) && !HasId(cs.voters, id)) learners.push_back(id);
    }
    want->voters = SortedIds(cs.voters);
  }
  want->learners = SortedIds(learners);
}

void Cluster::Reconcile(replica::Replica* r, const proto::MetaState& meta, int64_t now) {
  Membership want;
  uint64_t preferred = 0;
  if (!WantedMembership(meta, r->group(), &want, &preferred)) return;
  const proto::ShardInfo* info = r->group() != 0 ? FindShardById(meta, r->group()) : nullptr;
  if (info != nullptr) {
    // Raft speaks member ids: each wanted node's incarnation of the replica,
    // or a newer one the group has there (recorded by the placement driver:
    // an unsafe recovery of the meta shard lost it).
    const raft::ConfState& cs = r->raft().tracker().conf_state();
    // A leader that is its group's only voter stays the member it is, even
    // an older incarnation than the metadata names on its node (an unsafe
    // recovery forced it): it can be replaced there only once another
    // voter can take over.
    const bool sole = cs.voters == std::vector<raft::NodeId>{r->node_id()} && cs.voters_outgoing.empty();
    auto member_on = [&](uint64_t node) {
      if (sole && SameNode(node, r->node_id())) return r->node_id();
      uint64_t want_member = MemberOn(*info, node);
      for (const auto* ids : {&cs.voters, &cs.voters_outgoing, &cs.learners}) {
        for (uint64_t m : *ids) {
          if (SameNode(m, node) && IncarnationOf(m, node) > IncarnationOf(want_member, node)) want_member = m;
        }
      }
      return want_member;
    };
    for (auto* ids : {&want.voters, &want.learners}) {
      for (uint64_t& id : *ids) id = member_on(id);
      *ids = SortedIds(*ids);
    }
    if (preferred != 0) preferred = member_on(preferred);
  }
  if (info != nullptr && r->recovery() != info->recovery()) {
    // Above: the metadata lost this shard's unsafe recovery (a recovery of
    // the meta shard): until it has it again (PlacementDriver), its fence is
    // gone, and a replica from before the recovery could be added back.
    // Below: a replica from before a recovery the metadata has, waiting to
    // be forced (on the recovered node) or deleted (anywhere else). Moving
    // its membership or leadership now would act for the lineage the
    // recovery replaced, e.g. a lost voter that came back handing the
    // leadership to the survivor, which then could no longer be forced.
    return;
  }
  // Also before the metadata records a recovery this replica was forced in.
  if (const uint64_t recovery = std::max(meta.meta_recovery(), r->recovery()); r->group() == 0 && recovery > 0) {
    AdmitRecoveredMetaMembers(recovery, *r, &want);
  }
  MembershipStep step = NextMembershipStep(want, preferred, GroupStateOf(r->raft()));
  if (step.kind == MembershipStep::Kind::kTransferLeader) {
    std::lock_guard lock(transfer_mu_);
    int64_t& last = last_transfer_us_[r->group()];
    if (now - last < kTransferRetryUs) return;
    last = now;
    r->TransferLeader(step.transfer_to);
    groups_->Notify(r);
  } else if (step.kind == MembershipStep::Kind::kConfChange) {
    auto p = r->ProposeConfChange(step.change);
    std::string ids;
    for (const auto& c : step.change.changes) ids += " " + Hex(c.node);
    if (p.ok()) {
      spdlog::info("group {}: {}{}", r->group(), step.what, ids);
      groups_->Notify(r);
    } else {
      spdlog::debug("group {}: cannot {} yet:{} {}", r->group(), step.what, ids, raft::to_string(p.error));
    }
  }
}

PlannerPolicy Cluster::Policy(const proto::MetaState& meta) const {
  PlannerPolicy policy;
  policy.balance = !meta.balance_off();
  policy.split_bytes = opts_.split_bytes;
  policy.split_ops_per_sec = opts_.split_ops_per_sec;
  return policy;
}

void Cluster::ProposeMeta(replica::Replica* meta_replica, const proto::MetaCommand& cmd) {
  (void)meta_replica->Propose(cmd.SerializeAsString(), [](bool, std::string) {}, node::MonoUs());
  groups_->Notify(meta_replica);
}

bool Cluster::ShardMembers(const proto::MetaState& m, const proto::ShardInfo& s, int64_t now, bool load,
                           node::LeaderReport* rep, uint64_t* leader, Membership* actual, bool* joint) const {
  LeaderGossip g;
  if (replica::Replica* local = groups_->Find(s.id()); local != nullptr && local->published_is_leader()) {
    *rep = ReportOf(*local);
    if (load) FillLoad(rep);
    *leader = node_id_;
  } else if (GossipOf(s.id(), now, &g)) {
    *rep = g.report;
    *leader = g.node;
  } else {
    return false;
  }
  if (rep->recovery < s.recovery()) {
    // A leader of the lineage an unsafe recovery replaced (a lost voter
    // that came back before it heard of the recovery): not the shard's.
    // Nothing is planned from its membership, nor a split done on its word.
    *rep = node::LeaderReport{};
    *leader = 0;
    return false;
  }
  // An older incarnation of a replica that the group still has (its node
  // placed again) counts as a change under way, as a joint state does.
  bool stale_voters = false, stale_learners = false;
  *actual = Membership{NodesOfMembers(m, &s, rep->voters, &stale_voters),
                       NodesOfMembers(m, &s, rep->learners, &stale_learners)};
  // (Not a sole voter: it stays until others join; Reconcile.)
  *joint = rep->joint || (stale_voters && rep->voters.size() > 1) || stale_learners;
  return true;
}

ClusterView Cluster::View(int64_t now) const {
  ClusterView view;
  MetaPtr m = meta();
  if (!m) return view;
  view.replication_factor = static_cast<int>(std::max<uint32_t>(m->replication_factor(), 1));
  const int64_t down_after_us = opts_.down_after_ms * 1000;
  {
    std::lock_guard lock(gossip_mu_);
    for (const auto& n : m->nodes()) {
      NodeView nv{n.id(), NodeState::kUp};
      if (n.state() == proto::NODE_REMOVED) {
        nv.state = NodeState::kRemoved;
      } else if (n.state() == proto::NODE_DRAINING) {
        nv.state = NodeState::kDraining;
      } else if (n.id() != node_id_) {
        auto it = last_heard_us_.find(n.id());
        int64_t heard = std::max(it == last_heard_us_.end() ? 0 : it->second, meta_leader_since_us_);
        if (meta_leader_since_us_ == 0) heard = it == last_heard_us_.end() ? 0 : it->second;
        if (now - heard > down_after_us) nv.state = NodeState::kDown;
        // A build that cannot read what the cluster writes (a node that was
        // never upgraded, or went back to an older build) holds nothing: its
        // replicas are rebuilt elsewhere, none are placed on it.
        auto t = transfers_.find(n.id());
        if (t != transfers_.end() && (t->second.features & m->features()) != m->features()) {
          nv.state = NodeState::kDown;
        }
      }
      view.nodes.push_back(nv);
    }
  }
  std::set<uint64_t> children;  // of splits under way
  for (const auto& s : m->shards()) {
    if (s.split_child() != 0) children.insert(s.split_child());
  }
  for (const auto& s : m->shards()) {
    ShardView sv;
    sv.id = s.id();
    uint64_t preferred = 0;
    (void)WantedMembership(*m, s.id(), &sv.want, &preferred);
    sv.preferred_leader = preferred;
    node::LeaderReport rep;
    uint64_t leader = 0;
    sv.reported = ShardMembers(*m, s, now, /*load=*/true, &rep, &leader, &sv.actual, &sv.joint);
    sv.leader = leader;
    sv.slot_begin = rep.slot_begin;
    sv.slot_end = rep.slot_end;
    {
      LoadBook::Report lr{leader, rep.term, rep.slot_begin, rep.slot_end, rep.load_measured, rep.bytes, rep.ops_per_sec};
      std::lock_guard lock(load_book_mu_);
      LoadBook::Estimate est = load_book_.Observe(s.id(), sv.reported ? &lr : nullptr, now);
      sv.load_known = est.known;
      sv.bytes = est.bytes;
      sv.ops_per_sec = est.ops_per_sec;
    }
    sv.split_slot = rep.split_slot;
    // (Or its leader holds more slots than the metadata says: a replica an
    // unsafe recovery forced that has splits it missed to make.)
    sv.splitting = s.split_child() != 0 || children.contains(s.id()) ||
                   (sv.reported && s.recovery() > 0 && sv.slot_begin == s.slot_begin() && sv.slot_end > s.slot_end());
    view.shards.push_back(std::move(sv));
  }
  {
    std::lock_guard lock(load_book_mu_);
    load_book_.Forget(now);
  }
  view.meta_voters.assign(m->meta_voters().begin(), m->meta_voters().end());
  LeaderGossip mg;
  if (replica::Replica* mr = groups_->Find(0); mr != nullptr && mr->published_is_leader()) {
    view.meta_actual_voters = ReportOf(*mr).voters;
  } else if (GossipOf(0, now, &mg)) {
    view.meta_actual_voters = SortedIds(mg.voters);
  }
  return view;
}

bool Cluster::EnableFeatures(replica::Replica* meta_replica, const proto::MetaState& meta) {
  const uint64_t wanted = BuildFeatures() & ~meta.features();
  if (wanted == 0) return false;
  {
    // Every node that is not removed reads it, by what it gossiped in the
    // last second while this node led the meta shard (a report from before
    // may be of a node that went back to an older build since).
    const int64_t now = node::MonoUs();
    std::lock_guard lock(gossip_mu_);
    for (const auto& n : meta.nodes()) {
      if (n.state() == proto::NODE_REMOVED || n.id() == node_id_) continue;
      auto t = transfers_.find(n.id());
      auto heard = last_heard_us_.find(n.id());
      if (t == transfers_.end() || (t->second.features & wanted) != wanted || heard == last_heard_us_.end() ||
          now - heard->second > 1'000'000 || meta_leader_since_us_ == 0 || heard->second < meta_leader_since_us_) {
        return false;
      }
    }
  }
  spdlog::warn("every node runs a build that reads {}: switching it on for the cluster (builds without it can no "
               "longer run here)", FeatureNames(wanted));
  proto::MetaCommand cmd;
  cmd.set_version(1);
  cmd.set_enable_features(wanted);
  ProposeMeta(meta_replica, cmd);
  return true;
}

bool Cluster::RecordLostSplit(replica::Replica* meta_replica, const proto::MetaState& meta, int64_t now) {
  if ((meta.features() & kFeatureSplitChild) == 0) return false;  // a node would not read SplitShard.child
  for (const node::LeaderReport& rep : UnlistedLeaders(meta, now)) {
    const uint64_t group = rep.group;
    auto reported = [&](uint64_t id, uint32_t* b, uint32_t* e) {
      const proto::ShardInfo* s = FindShardById(meta, id);
      node::LeaderReport r;
      uint64_t leader = 0;
      Membership actual;
      bool joint = false;
      if (s == nullptr || !ShardMembers(meta, *s, now, /*load=*/true, &r, &leader, &actual, &joint)) return false;
      *b = r.slot_begin;
      *e = r.slot_end;
      return r.slot_end != 0;
    };
    std::optional<proto::MetaCommand> cmd = LostSplit(meta, group, rep.slot_begin, rep.slot_end, reported);
    if (!cmd) continue;
    cmd->mutable_split_shard()->set_min_child(MinChildId());
    uint64_t last = 0;
    for (const auto* ids : {&rep.voters, &rep.learners}) {
      for (uint64_t m : *ids) {
        if (const uint64_t node = NodeOfMember(meta, m); node != 0) last = std::max(last, IncarnationOf(m, node));
      }
    }
    cmd->mutable_split_shard()->set_child_last_incarnation(last);
    spdlog::warn("placement: group {} is led, holding slots {}-{}, but the metadata lost it (an unsafe recovery of "
                 "the meta shard): recording its split from shard {} again", group, rep.slot_begin,
                 rep.slot_end - 1, cmd->split_shard().parent());
    ProposeMeta(meta_replica, *cmd);
    return true;
  }
  return false;
}

void Cluster::PlacementDriver(replica::Replica* meta_replica, const proto::MetaState& meta, int64_t now) {
  const raft::Raft& raft = meta_replica->raft();
  // Decide on the latest state only, once earlier changes are applied.
  if (raft.log().applied() < raft.log().last_index()) return;
  if (!raft.tracker().conf_state().voters_outgoing.empty()) return;
  if (EnableFeatures(meta_replica, meta)) return;
  ClusterView view = View(now);
  // A split the parent's leader reports applied (its range is the
  // metadata's) is done: the shards may move again, and split again.
  for (const ShardView& sv : view.shards) {
    const proto::ShardInfo* info = FindShardById(meta, sv.id);
    if (info == nullptr || info->split_child() == 0 || !sv.reported || sv.slot_end == 0) continue;
    if (sv.slot_end != info->slot_end()) continue;
    proto::MetaCommand cmd;
    cmd.set_version(1);
    cmd.set_split_done(sv.id);
    spdlog::info("placement: shard {} has split; shard {} holds slots {}+", sv.id, info->split_child(), info->slot_end());
    ProposeMeta(meta_replica, cmd);
  }
  // A group led but not in the metadata: a split that an unsafe recovery
  // of the meta shard lost, recorded again (meta.h LostSplit), one a round.
  if (RecordLostSplit(meta_replica, meta, now)) return;
  // A shard whose leader belongs to a later unsafe recovery than the
  // metadata records (lost with a recovery of the meta shard): recorded
  // again, with the membership that leader has, so that replicas from
  // before it are fenced and numbers go on.
  std::vector<proto::MetaCommand> raise;
  for (const auto& s : meta.shards()) {
    LeaderGossip g;
    if (replica::Replica* r = groups_->Find(s.id()); r != nullptr && r->published_is_leader()) {
      g.node = node_id_;
      g.report = ReportOf(*r);  // a node hears no gossip of its own
    } else if (!GossipOf(s.id(), now, &g)) {
      continue;
    }
    if (g.report.recovery <= s.recovery() || g.report.joint) continue;
    auto known = [&](uint64_t id) {
      for (const auto& n : meta.nodes()) {
        if (n.id() == id) return n.state() != proto::NODE_REMOVED;
      }
      return false;
    };
    proto::MetaCommand cmd;
    cmd.set_version(1);
    proto::ShardInfo* next = cmd.mutable_set_shard();
    *next = s;
    next->clear_replicas();
    next->clear_learners();
    next->clear_incarnations();  // only what the report names (NameReportedIncarnations)
    for (uint64_t v : NodesOfMembers(meta, &s, g.report.voters)) {
      if (known(v)) next->add_replicas(v);
    }
    for (uint64_t l : NodesOfMembers(meta, &s, g.report.learners)) {
      if (known(l)) next->add_learners(l);
    }
    if (next->replicas_size() == 0) next->add_replicas(g.node);
    next->set_preferred_leader(g.node);
    NameReportedIncarnations(meta, g.report, next);
    next->set_recovery(g.report.recovery);
    next->set_recovered_on(g.node);
    spdlog::warn("placement: shard {}: its leader {} belongs to unsafe recovery {}, the metadata says {}: recorded",
                 s.id(), Hex(g.node), g.report.recovery, s.recovery());
    raise.push_back(std::move(cmd));
  }
  // A member the group has whose node the metadata records with another
  // incarnation: a newer one (its record lost with an unsafe recovery of
  // the meta shard), or the older one an unsafe recovery of the shard
  // forced as its only voter. Recorded as the member it is, so that
  // nothing replaces it (meta.cc SetShard takes it).
  for (const auto& s : meta.shards()) {
    node::LeaderReport rep;
    if (!ShardReport(s, now, &rep) || rep.joint) continue;
    bool differs = false;
    for (const auto* ids : {&rep.voters, &rep.learners}) {
      for (uint64_t m : *ids) {
        const uint64_t node = NodeOfMember(meta, m);
        if (!Contains(s.replicas(), node) && !Contains(s.learners(), node)) continue;
        // Only what SetShard takes (else this would be proposed every round).
        const uint64_t have = IncarnationOf(m, node), recorded = IncarnationOf(MemberOn(s, node), node);
        const bool forced = node == s.recovered_on() && s.recovery() > 0 && rep.voters == std::vector<uint64_t>{m} &&
                            s.replicas_size() == 1 && s.learners_size() == 0;
        differs |= (have > recorded && have <= s.last_incarnation()) || (have < recorded && forced);
      }
    }
    if (!differs) continue;
    proto::MetaCommand cmd;
    cmd.set_version(1);
    proto::ShardInfo* next = cmd.mutable_set_shard();
    *next = s;
    next->clear_incarnations();
    NameReportedIncarnations(meta, rep, next);
    spdlog::warn("placement: shard {}: its group has other incarnations than the metadata records: recorded", s.id());
    raise.push_back(std::move(cmd));
  }
  if (!raise.empty()) {
    for (const auto& cmd : raise) ProposeMeta(meta_replica, cmd);
    return;  // placement goes on with the records in
  }
  for (const Move& mv : Plan(view, Policy(meta))) {
    proto::MetaCommand cmd;
    cmd.set_version(1);
    if (mv.kind == MoveKind::kSplit) {
      if (uint64_t unlisted = UnlistedGroup(meta); unlisted != 0) {
        spdlog::warn("placement: no split while group {} is led but not in the metadata", unlisted);
        continue;
      }
      cmd.mutable_split_shard()->set_parent(mv.shard);
      cmd.mutable_split_shard()->set_slot(mv.slot);
      cmd.mutable_split_shard()->set_min_child(MinChildId());
    } else if (mv.kind == MoveKind::kSetMetaVoters) {
      for (uint64_t v : mv.target.voters) cmd.mutable_set_meta_voters()->add_voters(v);
    } else if (mv.kind == MoveKind::kRemoveNode) {
      cmd.mutable_set_node_state()->set_node(mv.nodes[0]);
      cmd.mutable_set_node_state()->set_state(proto::NODE_REMOVED);
    } else {
      const proto::ShardInfo* cur = nullptr;
      for (const auto& s : meta.shards()) {
        if (s.id() == mv.shard) cur = &s;
      }
      if (cur == nullptr) continue;
      proto::ShardInfo next = *cur;
      next.clear_replicas();
      next.clear_learners();
      for (uint64_t v : mv.target.voters) next.add_replicas(v);
      for (uint64_t l : mv.target.learners) next.add_learners(l);
      next.set_preferred_leader(mv.leader);
      next.clear_incarnations();  // only what the group's leader reports
      if (node::LeaderReport rep; ShardReport(*cur, now, &rep)) NameReportedIncarnations(meta, rep, &next);
      *cmd.mutable_set_shard() = next;
    }
    if (mv.kind == MoveKind::kTransferLeader) {
      spdlog::debug("placement: {}", Describe(mv));
    } else {
      spdlog::info("placement: {}", Describe(mv));
    }
    ProposeMeta(meta_replica, cmd);
  }
}

void Cluster::HandleJoin(const proto::NodeInfo& node, std::function<void(std::string)> done) {
  asio::post(runtime_->worker(0).io(), [this, node, done = std::move(done)]() mutable {
    replica::Replica* r = groups_->Find(0);
    if (r == nullptr || cluster_id() == 0) return done("-TRYAGAIN this node has not joined a cluster yet\r\n");
    if (!r->is_leader()) {
      uint64_t leader = r->published_leader();
      MetaPtr m = meta();
      for (const auto& n : m->nodes()) {
        if (n.id() == leader && leader != 0) {
          return done("-REDIRECT " + n.host() + ":" + std::to_string(n.port()) + "\r\n");
        }
      }
      return done("-TRYAGAIN the meta shard has no leader yet\r\n");
    }
    std::string ok = "+" + Hex(cluster_id()) + "\r\n";
    for (const auto& n : meta()->nodes()) {
      if (n.id() == node.id() && n.host() == node.host() && n.port() == node.port() &&
          n.peer_port() == node.peer_port()) {
        return done(ok);
      }
    }
    for (const auto& n : meta()->nodes()) {
      if (n.id() != node.id() && SameNode(n.id(), node.id())) {
        // Raft member ids tell nodes apart by these bits (common/member_id.h).
        return done("-ERR node id " + Hex(node.id()) + " shares its low 40 bits with node " + Hex(n.id()) +
                    ": restart the joining node with an empty --dir (a new id)\r\n");
      }
    }
    proto::MetaCommand cmd;
    cmd.set_version(1);
    *cmd.mutable_add_node() = node;
    auto p = r->Propose(cmd.SerializeAsString(),
                        [done, ok](bool applied, const std::string& reply) {
                          if (applied && reply.rfind('+', 0) == 0) return done(ok);
                          done(reply);
                        },
                        node::MonoUs());
    if (!p.ok()) return done("-TRYAGAIN meta shard busy\r\n");
    groups_->Notify(r);
  });
}

asio::awaitable<void> Cluster::JoinLoop() {
  asio::io_context& io = runtime_->worker(0).io();
  asio::steady_timer timer(io);
  std::string target = opts_.join;
  auto backoff = std::chrono::milliseconds(100);
  for (int attempt = 0; cluster_id() == 0; ++attempt) {
    if (attempt > 0) {
      timer.expires_after(backoff);
      auto [ec] = co_await timer.async_wait(as_tuple(asio::use_awaitable));
      if (ec) co_return;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    }
    auto colon = target.rfind(':');
    if (colon == std::string::npos) {
      spdlog::error("--join wants host:port, got '{}'", target);
      co_return;
    }
    asio::error_code ec;
    auto addr = asio::ip::make_address(target.substr(0, colon), ec);
    int port = std::atoi(target.substr(colon + 1).c_str());
    if (ec || port <= 0 || port > 65535) {
      spdlog::error("--join: bad address '{}'", target);
      co_return;
    }
    asio::ip::tcp::socket sock(io);
    auto local = asio::ip::make_address(opts_.host, ec);
    sock.open(addr.is_v4() ? asio::ip::tcp::v4() : asio::ip::tcp::v6(), ec);
    if (!ec && !local.is_unspecified() && local.is_v4() == addr.is_v4()) {
      sock.bind(asio::ip::tcp::endpoint(local, 0), ec);
    }
    asio::error_code cec;
    {
      node::Deadline deadline(sock, std::chrono::seconds(2));
      std::tie(cec) = co_await sock.async_connect(asio::ip::tcp::endpoint(addr, static_cast<uint16_t>(port)),
                                                  as_tuple(asio::use_awaitable));
    }
    if (cec) {
      spdlog::warn("join: cannot reach {}: {}", target, cec.message());
      target = opts_.join;
      continue;
    }
    std::vector<std::string> args = {"SHOAL.JOIN", std::to_string(node_id_), opts_.host,
                                     std::to_string(opts_.port), std::to_string(opts_.peer_port)};
    node::Stream stream(std::move(sock), opts_.tls);
    node::Deadline deadline(stream.socket(), std::chrono::seconds(5));  // a target that accepts but never answers
    const asio::error_code hec = co_await stream.Handshake(/*accepting=*/false);
    if (hec) {
      spdlog::warn("join through {}: TLS handshake failed: {} (with tls-cluster, --join names a member's "
                   "tls-port)", target, hec.message());
      target = opts_.join;
      continue;
    }
    std::string pending, line;
    auto read_line = [&]() -> asio::awaitable<bool> { co_return co_await stream.ReadLine(&pending, &line); };
    std::string challenge, nonce;
    if (!opts_.secret.empty()) {
      // Prove the cluster secret: answer the member's challenge.
      static constexpr std::string_view kAsk = "*1\r\n$15\r\nSHOAL.CHALLENGE\r\n";
      auto [cwec, cwn] = co_await stream.Write(asio::buffer(kAsk));
      if (cwec) continue;
      bool got = co_await read_line();
      if (!got) continue;
      if (line.starts_with("$")) {
        got = co_await read_line();  // (no co_await inside a condition: GCC 12 miscompiles some)
        if (!got) continue;
        if (!FromHex(line, &challenge)) challenge.clear();
      }
      if (challenge.empty()) {
        spdlog::error("join through {}: it gave no challenge for the cluster secret ({}); does it run without one?",
                      target, line);
        continue;
      }
      nonce = RandomNonce();
      const std::string join_args = args[1] + " " + args[2] + " " + args[3] + " " + args[4];
      args.insert(args.end(), {"PROOF", ToHex(nonce), ToHex(JoinProof(opts_.secret, challenge, nonce, join_args))});
    }
    std::string req = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) req += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    auto [wec, wn] = co_await stream.Write(asio::buffer(req));
    if (wec) continue;
    const bool answered = co_await read_line();
    if (!answered) {
      // TLS 1.3: a member that refuses this node's certificate says so
      // after the handshake, by closing.
      if (stream.tls()) {
        spdlog::warn("join through {}: no answer over TLS (does the member's CA sign this node's certificate?)",
                     target);
      }
      continue;
    }
    if (!opts_.secret.empty() && line.starts_with("+") && line.size() == 17 + 1 + 2 * kProofBytes) {
      // The member's proof over the cluster id it gives.
      std::string proof;
      if (!FromHex(std::string_view(line).substr(18), &proof) ||
          !ProofsEqual(proof, JoinReplyProof(opts_.secret, challenge, nonce, std::string_view(line).substr(1, 16)))) {
        spdlog::error("join through {}: its answer does not prove the cluster secret; not joining", target);
        continue;
      }
      line.resize(17);
    } else if (!opts_.secret.empty() && line.starts_with("+")) {
      spdlog::error("join through {}: it answered without proving the cluster secret ({}); not joining", target, line);
      continue;
    }
    if (line.starts_with("+") && line.size() == 17) {
      uint64_t cid = std::strtoull(line.c_str() + 1, nullptr, 16);
      Status s = PutU64Durable(engine_, kClusterIdKey, cid);
      if (!s.ok()) {
        spdlog::error("join: cannot persist the cluster id: {}", s.ToString());
        continue;
      }
      cluster_id_.store(cid);
      transport_->set_cluster_id(cid);
      spdlog::info("node {} joined cluster {}", Hex(node_id_), Hex(cid));
      co_return;
    }
    if (line.starts_with("-REDIRECT ")) {
      target = line.substr(10);
      backoff = std::chrono::milliseconds(50);
      continue;
    }
    spdlog::warn("join through {}: {}", target, line);
  }
}

}  // namespace shoal::cluster
