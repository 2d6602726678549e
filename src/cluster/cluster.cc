#include "cluster/cluster.h"

#include "cluster/membership.h"
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
  while (v == 0) v = rng();
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

}  // namespace

std::string NodeName(uint64_t id) {
  uint64_t b = id * 0x9E3779B97F4A7C15ULL;
  uint64_t c = (id ^ (id >> 29)) * 0xBF58476D1CE4E5B9ULL;
  return Hex(id) + Hex(b) + Hex(c).substr(0, 8);
}

Cluster::Cluster(ClusterOptions opts, storage::Engine* engine, node::Runtime* runtime,
                 node::Groups* groups, node::Transport* transport)
    : opts_(std::move(opts)), engine_(engine), runtime_(runtime), groups_(groups), transport_(transport) {
  std::atomic_store(&routing_, RoutingPtr(std::make_shared<RoutingTable>()));
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

void Cluster::StartRecounts(int worker) {
  for (kv::Shard* sh : LocalShards()) {
    if (groups_->WorkerOf(sh->id()) != worker || !sh->NeedsRecount()) continue;
    {
      std::lock_guard lock(recount_mu_);
      if (recount_stop_ || recounting_.contains(sh->id())) continue;
      recounting_.insert(sh->id());
    }
    std::optional<kv::Shard::RecountJob> job = sh->BeginRecount();
    std::lock_guard lock(recount_mu_);
    if (!job || recount_stop_) {
      recounting_.erase(sh->id());
      continue;
    }
    recount_queue_.push_back(Recount{sh->id(), std::move(*job)});
    if (!recount_thread_.joinable()) recount_thread_ = std::thread([this] { RecountLoop(); });
  }
  recount_cv_.notify_one();
}

void Cluster::RecountLoop() {
  std::unique_lock lock(recount_mu_);
  while (true) {
    recount_cv_.wait(lock, [this] { return recount_stop_ || !recount_queue_.empty(); });
    if (recount_stop_) return;
    Recount r = std::move(recount_queue_.front());
    recount_queue_.pop_front();
    lock.unlock();
    auto counted = r.job.count(recount_abort_);  // the scan, off every worker
    lock.lock();
    if (recount_stop_) return;
    asio::post(groups_->WorkerFor(r.shard).io(), [this, shard = r.shard, gen = r.job.generation,
                                                  counted = std::move(counted)] {
      kv::Shard* sh = LocalShard(shard);
      if (sh != nullptr && counted.ok()) {
        auto done = sh->FinishRecount(gen, *counted);
        if (!done.ok()) spdlog::error("shard {}: key recount not saved: {}", shard, done.status().ToString());
        if (done.ok() && *done) spdlog::info("shard {}: key counters recounted", shard);
      } else if (!counted.ok()) {
        spdlog::error("shard {}: key recount failed: {}", shard, counted.status().ToString());
      }
      std::lock_guard l(recount_mu_);
      recounting_.erase(shard);  // still pending (stale, failed): the next round starts another
    });
  }
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

Status Cluster::Open() {
  Status s = LoadIdentity();
  if (!s.ok()) return s;
  uint64_t cid = cluster_id();
  if (cid != 0) {
    s = OpenMeta(false, nullptr);
    if (!s.ok()) return s;
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
  if (bootstrap) {
    ro.bootstrap_voters = {node_id_};
    ro.bootstrap_image = initial->SerializeAsString();
  }
  auto r = replica::Replica::Open(engine_, ro, std::move(sm));
  if (!r.ok()) return r.status();
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
    if (!bootstrap && !storage::RaftStore::HasState(engine_, s.id())) {
      // A new, empty replica waits for a snapshot. Not while a replica here
      // still holds some of its slots (a split this node has not applied
      // yet: the split creates the child with its data in place), and not
      // for a split's child before the split is done.
      for (const auto& [id, shard] : shards_) {
        if (shard->slot_begin() < s.slot_end() && s.slot_begin() < shard->slot_end()) {
          spdlog::debug("shard {}: not created yet: shard {} here still holds slots {}-{}", s.id(), id,
                        shard->slot_begin(), shard->slot_end() - 1);
          return Status::Ok();
        }
      }
      if (MetaPtr m = meta()) {
        for (const auto& p : m->shards()) {
          if (p.split_child() == s.id()) return Status::Ok();
        }
      }
    }
    if (!ClaimLocked(s.id(), {0, 0})) return Status::Ok();  // opened, or being opened, elsewhere
  }
  auto r = OpenShardReplica(s.id(), static_cast<uint16_t>(s.slot_begin()), static_cast<uint16_t>(s.slot_end()),
                            bootstrap, s.recovery(), s.recovered_on());
  return r.ok() ? Status::Ok() : r.status();
}

Result<replica::Replica*> Cluster::OpenShardReplica(uint64_t id, uint16_t begin, uint16_t end, bool bootstrap,
                                                    uint64_t recovery, uint64_t recovered_on) {
  // The caller claimed `id` (ClaimLocked); the claim ends here, however this ends.
  struct Release {
    Cluster* c;
    uint64_t id;
    ~Release() {
      std::lock_guard lock(c->shards_mu_);
      c->opening_.erase(id);
    }
  } release{this, id};
  auto shard = std::make_unique<kv::Shard>(engine_, static_cast<uint32_t>(id), begin, end, opts_.meta_cache_entries);
  Status st = shard->Load();
  if (!st.ok()) return st;
  auto sm = std::make_unique<replica::KvStateMachine>(shard.get(), opts_.limits);
  replica::ReplicaOptions ro;
  ro.group = id;
  ro.node_id = node_id_;
  ro.tick_ms = groups_->options().tick_ms;
  ro.compact_bytes = opts_.log_bytes_per_replica;
  ro.courier = opts_.courier;
  ro.splitter = this;
  if (bootstrap) ro.bootstrap_voters = {node_id_};
  bool had_state = storage::RaftStore::HasState(engine_, id);
  auto r = replica::Replica::Open(engine_, ro, std::move(sm));
  if (!r.ok()) return r.status();
  if (recovery > (*r)->recovery() && recovered_on != node_id_) {
    if (had_state) {
      // From before an unsafe recovery of its shard: stale, and it must not
      // vote or answer again. Its state goes; a new replica comes next round
      // if the placement wants one here.
      auto batch = engine_->NewBatch();
      Status d = (*r)->StageDestroy(*batch);
      if (!d.ok()) return d;
      auto seq = engine_->Write(*batch);
      if (!seq.ok()) return seq.status();
      auto synced = engine_->Sync();
      if (!synced.ok()) return synced.status();
      spdlog::warn("shard {}: deleted this node's replica from before unsafe recovery {}", id, recovery);
      return static_cast<replica::Replica*>(nullptr);
    }
    Status rs = (*r)->SetRecovery(recovery);
    if (!rs.ok()) return rs;
  }
  {
    std::lock_guard lock(shards_mu_);
    shards_[id] = std::move(shard);
  }
  replica::Replica* added = groups_->Add(std::move(r).value());
  RebuildLocalSlots();
  return added;
}

bool Cluster::StageSplit(replica::Replica& parent, const replica::SplitCommand& split, const raft::ConfState& conf,
                         uint64_t index, storage::WriteBatch& batch) {
  auto* kv_sm = dynamic_cast<replica::KvStateMachine*>(&parent.state_machine());
  if (kv_sm == nullptr || split.child >= node::Groups::kMaxGroups) return false;
  {
    // Claimed here until FinishSplit has opened it: nothing else opens it.
    std::lock_guard lock(shards_mu_);
    if (!ClaimLocked(split.child, {split.slot, kv_sm->shard()->slot_end()})) {
      spdlog::error("shard {}: split child {} already exists here; only the parent's range shrinks", parent.group(),
                    split.child);
      return false;
    }
  }
  Status s = replica::StageSplitChild(engine_, *kv_sm->shard(), split, conf, index, batch);
  if (!s.ok()) {
    spdlog::error("shard {}: cannot create split child {} here: {}", parent.group(), split.child, s.ToString());
    std::lock_guard lock(shards_mu_);
    opening_.erase(split.child);
    return false;
  }
  return true;
}

void Cluster::FinishSplit(replica::Replica& parent, const replica::SplitCommand& split) {
  std::pair<uint16_t, uint16_t> range;
  {
    std::lock_guard lock(shards_mu_);
    auto it = opening_.find(split.child);
    if (it == opening_.end()) return;
    range = it->second;
  }
  auto r = OpenShardReplica(split.child, range.first, range.second, false, 0, 0);  // ends the claim
  if (!r.ok() || *r == nullptr) {
    spdlog::critical("shard {}: split child {} could not be opened: {}", parent.group(), split.child,
                     r.ok() ? "gone" : r.status().ToString());
    return;
  }
  spdlog::info("shard {}: split: shard {} takes slots {}-{} here", parent.group(), split.child, range.first,
               range.second - 1);
  // The node meant to lead the child (else the parent's leader's) elects
  // it at once: no election timeout without a leader for the moved slots.
  MetaPtr m = meta();
  const proto::ShardInfo* info = m ? FindShardById(*m, split.child) : nullptr;
  bool preferred_here = info != nullptr && info->preferred_leader() == node_id_;
  bool preferred_known = info != nullptr && info->preferred_leader() != 0;
  if (preferred_here || (!preferred_known && parent.is_leader())) {
    replica::Replica* child = *r;
    asio::post(groups_->WorkerFor(split.child).io(), [this, child] {
      if (child->retired()) return;
      child->Campaign();
      groups_->Notify(child);
    });
  }
}

bool Cluster::MayTakeImage(replica::Replica& r, uint16_t begin, uint16_t end) {
  std::lock_guard lock(shards_mu_);
  for (const auto& [id, shard] : shards_) {
    if (id != r.group() && shard->slot_begin() < end && begin < shard->slot_end()) return false;
  }
  for (const auto& [id, range] : opening_) {
    if (id != r.group() && range.second != 0 && range.first < end && begin < range.second) return false;
  }
  return true;
}

uint64_t Cluster::LocalRangesSig() {
  std::lock_guard lock(shards_mu_);
  uint64_t sig = 0;
  for (const auto& [id, shard] : shards_) {
    sig = sig * 0x9E3779B97F4A7C15ULL + (id << 32 | uint64_t{shard->slot_begin()} << 16 | shard->slot_end());
  }
  return sig;
}

void Cluster::MeasureLoad(int64_t now) {
  if (now - last_load_us_ < 1'000'000) return;
  const double secs = last_load_us_ == 0 ? 0.0 : static_cast<double>(now - last_load_us_) / 1e6;
  last_load_us_ = now;
  std::vector<uint32_t> cur(storage::kSlotCount);
  for (uint32_t slot = 0; slot < storage::kSlotCount; ++slot) cur[slot] = slot_ops_[slot].load(std::memory_order_relaxed);
  const bool first = last_slot_ops_.size() != cur.size();
  const bool size_due = now - last_size_us_ >= 5'000'000;
  if (size_due) last_size_us_ = now;
  std::map<uint64_t, ShardLoad> next;
  for (kv::Shard* sh : LocalShards()) {
    replica::Replica* r = groups_->Find(sh->id());
    if (r == nullptr || !r->published_is_leader()) continue;
    ShardLoad l = load_.contains(sh->id()) ? load_[sh->id()] : ShardLoad{};
    const uint16_t b = sh->slot_begin(), e = sh->slot_end();
    if (l.begin != b || l.end != e) l = ShardLoad{.begin = b, .end = e};  // new, or split: load is measured anew
    // This second's operations per slot (counters wrap: unsigned difference).
    uint64_t ops = 0;
    for (uint32_t slot = b; slot < e && !first; ++slot) ops += cur[slot] - last_slot_ops_[slot];
    if (secs > 0) {
      double alpha = 1.0 - std::exp(-secs / 10.0);  // about 10 s of memory: sustained load only
      l.ops_per_sec += alpha * (static_cast<double>(ops) / secs - l.ops_per_sec);
    }
    uint32_t load_slot = 0;
    if (ops >= 20 && e - b >= 2) {
      // Where the load halves: the child takes the upper half.
      uint64_t acc = 0;
      for (uint32_t slot = b; slot < e; ++slot) {
        acc += cur[slot] - last_slot_ops_[slot];
        if (acc * 2 >= ops) {
          load_slot = std::clamp<uint32_t>(slot, b + 1u, e - 1u);
          break;
        }
      }
    }
    if (size_due || l.bytes == 0) {
      auto size_of = [&](uint32_t lo, uint32_t hi) {
        return engine_->ApproximateSize(storage::Cf::kData, storage::DataSlotDbPrefix(static_cast<uint16_t>(lo), 0),
                                        storage::DataSlotDbPrefix(static_cast<uint16_t>(hi), 0));
      };
      l.bytes = size_of(b, e);
      // Where the size halves (a binary search over slots). Small ranges
      // are mostly in memtables, whose size estimates are too coarse to
      // find a median: those split in the middle.
      uint32_t lo = b + 1u, hi = e - 1u;
      while (e - b >= 2 && lo < hi && l.bytes >= (64ULL << 20)) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (size_of(b, mid) * 2 >= l.bytes) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      if (e - b >= 2) l.split_slot = l.bytes >= (64ULL << 20) ? lo : b + (e - b) / 2;
    }
    // A busy shard splits where its load halves (a split for load is what
    // the planner would make of it); else where its size does.
    bool busy = opts_.split_ops_per_sec > 0 && l.ops_per_sec * 2 >= static_cast<double>(opts_.split_ops_per_sec);
    if (load_slot != 0 && busy) l.split_slot = load_slot;
    if (l.split_slot <= b || l.split_slot >= e) l.split_slot = e - b >= 2 ? b + (e - b) / 2 : 0;
    next[sh->id()] = l;
  }
  load_ = std::move(next);
  last_slot_ops_ = std::move(cur);
}

void Cluster::FillLoad(node::LeaderReport* rep) const {
  if (rep->group == 0) return;
  if (kv::Shard* sh = LocalShard(rep->group)) {
    rep->slot_begin = sh->slot_begin();
    rep->slot_end = sh->slot_end();
  }
  auto it = load_.find(rep->group);
  if (it == load_.end()) return;
  rep->bytes = it->second.bytes;
  rep->ops_per_sec = static_cast<uint64_t>(it->second.ops_per_sec);
  rep->split_slot = it->second.split_slot;
}

void Cluster::ProposeSplitIfDue(replica::Replica* r, const proto::MetaState& meta, int64_t now) {
  const proto::ShardInfo* info = FindShardById(meta, r->group());
  if (info == nullptr || info->split_child() == 0) return;
  kv::Shard* sh = LocalShard(r->group());
  if (sh == nullptr || sh->slot_end() <= info->slot_end()) return;  // split here already
  {
    std::lock_guard lock(transfer_mu_);
    int64_t& last = last_split_us_[r->group()];
    if (now - last < 1'000'000) return;
    last = now;
  }
  const proto::ShardInfo* child = FindShardById(meta, info->split_child());
  if (child == nullptr || child->slot_begin() != info->slot_end() || child->slot_end() != sh->slot_end() ||
      sh->slot_begin() != info->slot_begin()) {
    spdlog::warn("shard {}: split into {} waits: this replica holds slots {}-{}, the metadata {}-{}", r->group(),
                 info->split_child(), sh->slot_begin(), sh->slot_end() - 1, info->slot_begin(), info->slot_end() - 1);
    return;
  }
  if (!r->raft().tracker().conf_state().voters_outgoing.empty()) return;  // joint: it would be ignored
  replica::SplitCommand split{child->id(), static_cast<uint16_t>(info->slot_end())};
  auto p = r->ProposeSplit(split, now);
  if (p.ok()) {
    spdlog::info("shard {}: proposed its split at slot {} into shard {}", r->group(), split.slot, split.child);
    groups_->Notify(r);
  }
}

void Cluster::RebuildLocalSlots() {
  std::lock_guard rebuild(local_slots_mu_);
  std::vector<uint32_t> owner(storage::kSlotCount, 0);
  {
    std::lock_guard lock(shards_mu_);
    uint64_t sig = 0;
    for (const auto& [id, shard] : shards_) {
      uint16_t b = shard->slot_begin(), e = shard->slot_end();
      sig = sig * 0x9E3779B97F4A7C15ULL + (id << 32 | uint64_t{b} << 16 | e);
      for (uint32_t slot = b; slot < e && slot < storage::kSlotCount; ++slot) owner[slot] = static_cast<uint32_t>(id);
    }
    local_ranges_sig_ = sig;
  }
  for (uint32_t slot = 0; slot < storage::kSlotCount; ++slot) {
    local_slot_group_[slot].store(owner[slot], std::memory_order_release);
  }
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

uint64_t Cluster::LeaderOf(uint64_t group) const {
  uint64_t leader = 0, term = 0;
  if (replica::Replica* r = groups_->Find(group)) {
    leader = r->published_leader();
    term = r->published_term();
  }
  std::lock_guard lock(gossip_mu_);
  auto it = gossip_.find(group);
  if (it != gossip_.end() && (leader == 0 || it->second.term > term)) leader = it->second.node;
  return leader;
}

bool Cluster::GossipOf(uint64_t group, int64_t now, LeaderGossip* out) const {
  std::lock_guard lock(gossip_mu_);
  auto it = gossip_.find(group);
  if (it == gossip_.end() || now - it->second.heard_us > kGossipFreshUs) return false;
  *out = it->second;
  return true;
}

bool Cluster::Healthy() const {
  RoutingPtr rt = routing();
  if (rt->shards.empty()) return false;
  MetaPtr m = meta();
  for (const auto& s : rt->shards) {
    if (LeaderOf(s.id) != 0) continue;
    // A split's child before its first election: its parent still serves.
    bool parent_serves = false;
    for (const auto& p : m->shards()) parent_serves |= p.split_child() == s.id && LeaderOf(p.id()) != 0;
    if (!parent_serves) return false;
  }
  return true;
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
    if (cur.node == 0 || cur.term <= l.term) {
      cur = LeaderGossip{from, l.term, l.voters, l.learners, l.joint, now, l};
    }
  }
}

void Cluster::OnTransfers(uint64_t from, node::TransferStats stats) {
  std::lock_guard lock(gossip_mu_);
  transfers_[from] = stats;
}

void Cluster::RebuildRouting(const MetaPtr& meta) {
  auto rt = std::make_shared<RoutingTable>();
  rt->meta_epoch = meta->epoch();
  rt->replication_factor = static_cast<int>(meta->replication_factor());
  rt->meta_voters.assign(meta->meta_voters().begin(), meta->meta_voters().end());
  for (const auto& n : meta->nodes()) {
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

namespace {

std::vector<uint64_t> SortedIds(std::vector<uint64_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

bool HasId(const std::vector<uint64_t>& v, uint64_t id) { return std::find(v.begin(), v.end(), id) != v.end(); }

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
  return rep;
}

}  // namespace

void Cluster::OnTick(int worker) {
  int64_t now = node::MonoUs();
  MetaPtr m = meta();
  if (!m || m->cluster_id() == 0) return;
  // Leaders bring their groups' membership to what the metadata wants.
  for (replica::Replica* r : groups_->All()) {
    if (groups_->WorkerOf(r->group()) != worker || !r->is_leader()) continue;
    Reconcile(r, *m, now);
    if (r->group() != 0) ProposeSplitIfDue(r, *m, now);
  }
  bool sync_due = false;
  {
    std::lock_guard lock(transfer_mu_);
    if (last_sync_us_.empty()) last_sync_us_.assign(static_cast<size_t>(runtime_->size()), 0);
    int64_t& last = last_sync_us_[static_cast<size_t>(worker)];
    sync_due = now - last >= kPlacementIntervalUs || (worker == 0 && m->epoch() != routed_epoch_);
    if (sync_due) last = now;
  }
  if (worker != 0) {
    if (sync_due) SyncLocalReplicas(worker, now);
    return;
  }
  if (m->epoch() != routed_epoch_) {
    routed_epoch_ = m->epoch();
    for (const auto& n : m->nodes()) {
      transport_->SetAddress(n.id(), n.host(), static_cast<uint16_t>(n.peer_port()));
    }
    RebuildRouting(m);
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
  if (opts_.local_transfers) transport_->SetLocalTransfers(opts_.local_transfers());
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

void Cluster::SyncLocalReplicas(int worker, int64_t now) {
  StartRecounts(worker);
  MetaPtr m = meta();  // read here, on the worker that creates and retires
  for (const auto& s : m->shards()) {
    if (groups_->WorkerOf(s.id()) != worker) continue;
    bool wanted = Contains(s.replicas(), node_id_) || Contains(s.learners(), node_id_);
    replica::Replica* r = groups_->Find(s.id());
    if (r != nullptr && s.recovery() > r->recovery() && s.recovered_on() != node_id_) {
      // A replica from before an unsafe recovery of its shard: stale.
      spdlog::warn("shard {}: removing this node's replica from before unsafe recovery {}", s.id(), s.recovery());
      Status st = Retire(r);
      if (!st.ok()) spdlog::error("cannot remove the replica of shard {}: {}", s.id(), st.ToString());
      continue;
    }
    if (r != nullptr && s.recovery() > 0 && s.recovered_on() == node_id_) {
      auto* kv_sm = dynamic_cast<replica::KvStateMachine*>(&r->state_machine());
      if (kv_sm != nullptr && r->recovery() < s.recovery() && (kv_sm->shard()->slot_begin() != s.slot_begin() ||
                               kv_sm->shard()->slot_end() != s.slot_end())) {
        // It missed a split (or holds a later one): as the only voter it
        // would serve slots another shard now holds.
        if (r->recovery() < s.recovery()) {
          spdlog::critical("shard {}: unsafe recovery {} refused here: this replica holds slots {}-{}, the "
                           "metadata {}-{} (it missed a split)", s.id(), s.recovery(), kv_sm->shard()->slot_begin(),
                           kv_sm->shard()->slot_end() - 1, s.slot_begin(), s.slot_end() - 1);
        }
        continue;
      }
      auto forced = r->ForceSoleVoter(s.recovery());
      if (!forced.ok()) spdlog::error("shard {}: unsafe recovery failed: {}", s.id(), forced.status().ToString());
      if (forced.ok() && *forced) groups_->Notify(r);
    }
    if (wanted && r == nullptr) {
      Status st = EnsureShardReplica(s, false);
      if (!st.ok()) spdlog::error("cannot create replica of shard {}: {}", s.id(), st.ToString());
      continue;
    }
    if (wanted || r == nullptr || r->is_leader()) continue;
    LeaderGossip g;
    if (!GossipOf(s.id(), now, &g) ||
        !MayRetire(node_id_, false, g.node, Membership{g.voters, g.learners}, g.joint,
                   r->HeardFromLeaderWithin(kRetireQuietTicks))) {
      continue;
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
    retired_shards_.push_back(std::move(it->second));
    shards_.erase(it);
  }
  lock.unlock();
  RebuildLocalSlots();
  spdlog::info("shard {}: replica removed from this node, its data deleted", group);
  return Status::Ok();
}

void Cluster::Reconcile(replica::Replica* r, const proto::MetaState& meta, int64_t now) {
  Membership want;
  uint64_t preferred = 0;
  if (!WantedMembership(meta, r->group(), &want, &preferred)) return;
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
    replica::Replica* local = groups_->Find(s.id());
    LeaderGossip g;
    node::LeaderReport rep;
    if (local != nullptr && local->published_is_leader()) {
      rep = ReportOf(*local);
      FillLoad(&rep);
      sv.reported = true;
      sv.actual = Membership{rep.voters, rep.learners};
      sv.joint = rep.joint;
    } else if (GossipOf(s.id(), now, &g)) {
      rep = g.report;
      sv.reported = true;
      sv.actual = Membership{SortedIds(g.voters), SortedIds(g.learners)};
      sv.joint = g.joint;
    }
    sv.slot_begin = rep.slot_begin;
    sv.slot_end = rep.slot_end;
    sv.bytes = rep.bytes;
    sv.ops_per_sec = rep.ops_per_sec;
    sv.split_slot = rep.split_slot;
    sv.splitting = s.split_child() != 0 || children.contains(s.id());
    view.shards.push_back(std::move(sv));
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

void Cluster::PlacementDriver(replica::Replica* meta_replica, const proto::MetaState& meta, int64_t now) {
  const raft::Raft& raft = meta_replica->raft();
  // Decide on the latest state only, once earlier changes are applied.
  if (raft.log().applied() < raft.log().last_index()) return;
  if (!raft.tracker().conf_state().voters_outgoing.empty()) return;
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
  for (const Move& mv : Plan(view, Policy(meta))) {
    proto::MetaCommand cmd;
    cmd.set_version(1);
    if (mv.kind == MoveKind::kSplit) {
      cmd.mutable_split_shard()->set_parent(mv.shard);
      cmd.mutable_split_shard()->set_slot(mv.slot);
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
    auto [cec] = co_await sock.async_connect(asio::ip::tcp::endpoint(addr, static_cast<uint16_t>(port)),
                                             as_tuple(asio::use_awaitable));
    if (cec) {
      spdlog::warn("join: cannot reach {}: {}", target, cec.message());
      target = opts_.join;
      continue;
    }
    std::vector<std::string> args = {"SHOAL.JOIN", std::to_string(node_id_), opts_.host,
                                     std::to_string(opts_.port), std::to_string(opts_.peer_port)};
    std::string req = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) req += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    auto [wec, wn] = co_await asio::async_write(sock, asio::buffer(req), as_tuple(asio::use_awaitable));
    if (wec) continue;
    asio::streambuf buf(4096);
    auto [rec, rn] = co_await asio::async_read_until(sock, buf, "\r\n", as_tuple(asio::use_awaitable));
    if (rec) continue;
    std::string line(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + static_cast<long>(rn) - 2);
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

namespace shoal::cluster {
namespace {

AdminReply AdminError(std::string e) {
  AdminReply r;
  r.kind = AdminReply::Kind::kError;
  r.error = std::move(e);
  return r;
}

std::string IdList(const std::vector<uint64_t>& ids) {
  std::string out;
  for (uint64_t id : ids) out += (out.empty() ? "" : ",") + Hex(id);
  return out.empty() ? "-" : out;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

static const proto::ShardInfo* FindShard(const proto::MetaState& meta, const std::string& id) {
  auto v = ParseInt64(id);
  if (!v || *v <= 0) return nullptr;
  return FindShardById(meta, static_cast<uint64_t>(*v));
}

const proto::NodeInfo* Cluster::FindNode(const proto::MetaState& meta, const std::string& who) const {
  uint64_t id = 0;
  if (who.size() >= 16 && who.find(':') == std::string::npos) {
    bool hex = std::all_of(who.begin(), who.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
    if (hex) id = std::strtoull(who.substr(0, 16).c_str(), nullptr, 16);
  }
  for (const auto& n : meta.nodes()) {
    if ((id != 0 && n.id() == id) || who == n.host() + ":" + std::to_string(n.port())) return &n;
  }
  return nullptr;
}

AdminReply Cluster::AdminStatus(int64_t now) const {
  AdminReply out;
  out.kind = AdminReply::Kind::kLines;
  MetaPtr m = meta();
  ClusterView view = View(now);
  std::map<uint64_t, int> replicas, leaders;
  int moving = 0;
  for (const ShardView& s : view.shards) {
    for (uint64_t v : s.want.voters) replicas[v]++;
    for (uint64_t l : s.want.learners) replicas[l]++;
    uint64_t leader = LeaderOf(s.id);
    if (leader != 0) leaders[leader]++;
    if (!s.reported || s.joint || s.want.voters != s.actual.voters || s.want.learners != s.actual.learners) ++moving;
  }
  out.lines.push_back("cluster " + Hex(m->cluster_id()) + " epoch " + std::to_string(m->epoch()) +
                      " replication-factor " + std::to_string(m->replication_factor()) + " balance " +
                      (m->balance_off() ? "off" : "on") + " down-after-ms " + std::to_string(opts_.down_after_ms));
  for (const NodeView& n : view.nodes) {
    const proto::NodeInfo* info = nullptr;
    for (const auto& i : m->nodes()) {
      if (i.id() == n.id) info = &i;
    }
    out.lines.push_back("node " + Hex(n.id) + " " + info->host() + ":" + std::to_string(info->port()) + " " +
                        NodeStateName(n.state) + " replicas " + std::to_string(replicas[n.id]) + " leaders " +
                        std::to_string(leaders[n.id]) +
                        (HasId(view.meta_voters, n.id) ? " meta-voter" : ""));
  }
  std::vector<const ShardView*> by_slot;
  for (const ShardView& s : view.shards) by_slot.push_back(&s);
  std::sort(by_slot.begin(), by_slot.end(), [&](const ShardView* a, const ShardView* b) {
    return FindShardById(*m, a->id)->slot_begin() < FindShardById(*m, b->id)->slot_begin();
  });
  for (const ShardView* sp : by_slot) {
    const ShardView& s = *sp;
    const proto::ShardInfo* info = FindShardById(*m, s.id);
    std::string line = "shard " + std::to_string(s.id) + " slots " + std::to_string(info->slot_begin()) + "-" +
                       std::to_string(info->slot_end() - 1) + " leader " + Hex(LeaderOf(s.id)) + " voters " +
                       IdList(s.actual.voters) + " learners " + IdList(s.actual.learners) + " bytes " +
                       std::to_string(s.bytes) + " ops-per-sec " + std::to_string(s.ops_per_sec);
    if (info->split_child() != 0) line += " splitting-into " + std::to_string(info->split_child());
    if (!s.reported) {
      line += " (no leader known)";
    } else if (s.joint || s.want.voters != s.actual.voters || s.want.learners != s.actual.learners) {
      line += " moving-to voters " + IdList(s.want.voters) + " learners " + IdList(s.want.learners);
    }
    out.lines.push_back(line);
  }
  // Snapshot transfers over the nodes that are up (counters since each started).
  node::TransferStats total;
  {
    std::lock_guard lock(gossip_mu_);
    for (const NodeView& n : view.nodes) {
      if (n.state == NodeState::kDown || n.state == NodeState::kRemoved) continue;
      node::TransferStats t = n.id == node_id_ && opts_.local_transfers ? opts_.local_transfers() : node::TransferStats{};
      if (auto it = transfers_.find(n.id); n.id != node_id_ && it != transfers_.end()) t = it->second;
      total.sending += t.sending;
      total.bytes_sent += t.bytes_sent;
      total.bytes_received += t.bytes_received;
    }
  }
  out.lines.push_back("transfers sending " + std::to_string(total.sending) + " bytes-sent " +
                      std::to_string(total.bytes_sent) + " bytes-received " + std::to_string(total.bytes_received));
  out.lines.push_back("moves-in-flight " + std::to_string(moving));
  return out;
}

void Cluster::HandleAdmin(std::vector<std::string> args, std::function<void(AdminReply)> done) {
  asio::post(runtime_->worker(0).io(), [this, args = std::move(args), done = std::move(done)]() mutable {
    replica::Replica* mr = groups_->Find(0);
    if (mr == nullptr || cluster_id() == 0) return done(AdminError("TRYAGAIN this node has not joined a cluster yet"));
    MetaPtr m = meta();
    if (!mr->is_leader()) {
      uint64_t leader = mr->published_leader();
      for (const auto& n : m->nodes()) {
        if (n.id() == leader && leader != 0) {
          AdminReply r;
          r.kind = AdminReply::Kind::kRedirect;
          r.host = n.host();
          r.port = static_cast<uint16_t>(n.port());
          return done(std::move(r));
        }
      }
      return done(AdminError("TRYAGAIN the meta shard has no leader yet"));
    }
    int64_t now = node::MonoUs();
    std::string sub = args.empty() ? "" : Lower(args[0]);
    auto propose = [&](const proto::MetaCommand& cmd, std::string what) {
      auto p = mr->Propose(
          cmd.SerializeAsString(),
          [done, what](bool applied, const std::string& reply) {
            if (applied && reply.rfind('+', 0) == 0) {
              AdminReply ok;
              ok.lines = {what};
              ok.kind = AdminReply::Kind::kLines;
              return done(std::move(ok));
            }
            done(AdminError("ERR the cluster did not accept the change: " + reply.substr(1, reply.size() - 3)));
          },
          now);
      if (!p.ok()) return done(AdminError("TRYAGAIN meta shard busy"));
      groups_->Notify(mr);
    };
    if (sub == "status" && args.size() == 1) return done(AdminStatus(now));
    if (sub == "plan" && args.size() == 1) {
      AdminReply r;
      r.kind = AdminReply::Kind::kLines;
      for (const Move& mv : Plan(View(now), Policy(*m))) r.lines.push_back(Describe(mv));
      return done(std::move(r));
    }
    if (sub == "split" && (args.size() == 2 || args.size() == 3)) {
      const proto::ShardInfo* info = FindShard(*m, args[1]);
      if (info == nullptr) return done(AdminError("ERR no such shard '" + args[1] + "' (SHOAL.ADMIN STATUS lists them)"));
      if (info->slot_end() - info->slot_begin() < 2) {
        return done(AdminError("ERR shard " + args[1] + " holds one slot: it cannot split"));
      }
      for (const auto& s : m->shards()) {
        if (s.split_child() != 0 && (s.id() == info->id() || s.split_child() == info->id())) {
          return done(AdminError("TRYAGAIN shard " + args[1] + " is in a split under way; retry when it is done"));
        }
      }
      for (const ShardView& sv : View(now).shards) {
        if (sv.id == info->id() && (!sv.reported || sv.joint || !(sv.actual == sv.want))) {
          return done(AdminError("TRYAGAIN shard " + args[1] +
                                 " has a move in flight (or no leader); retry when it is done"));
        }
      }
      uint64_t slot = 0;
      if (args.size() == 3) {
        auto v = ParseInt64(args[2]);
        if (!v || *v <= static_cast<int64_t>(info->slot_begin()) || *v >= static_cast<int64_t>(info->slot_end())) {
          return done(AdminError("ERR the split slot must be inside shard " + args[1] + "'s slots, above its first (" +
                                 std::to_string(info->slot_begin() + 1) + "-" + std::to_string(info->slot_end() - 1) +
                                 ")"));
        }
        slot = static_cast<uint64_t>(*v);
      } else {
        // Where its leader says the size (or the load) halves, else the middle.
        LeaderGossip g;
        node::LeaderReport rep;
        if (replica::Replica* r = groups_->Find(info->id()); r != nullptr && r->published_is_leader()) {
          rep = ReportOf(*r);
          FillLoad(&rep);
        } else if (GossipOf(info->id(), now, &g)) {
          rep = g.report;
        }
        slot = rep.split_slot > info->slot_begin() && rep.split_slot < info->slot_end()
                   ? rep.split_slot
                   : info->slot_begin() + (info->slot_end() - info->slot_begin()) / 2;
      }
      uint64_t next_id = 0;
      for (const auto& s : m->shards()) next_id = std::max(next_id, s.id() + 1);
      if (next_id >= kMaxShardId) return done(AdminError("ERR the cluster has as many shards as it can hold"));
      proto::MetaCommand cmd;
      cmd.set_version(1);
      cmd.mutable_split_shard()->set_parent(info->id());
      cmd.mutable_split_shard()->set_slot(static_cast<uint32_t>(slot));
      return propose(cmd, "shard " + args[1] + ": splitting at slot " + std::to_string(slot) + "; shard " +
                              std::to_string(next_id) + " takes slots " + std::to_string(slot) + "-" +
                              std::to_string(info->slot_end() - 1));
    }
    if (sub == "balance" && args.size() == 2 && (Lower(args[1]) == "on" || Lower(args[1]) == "off")) {
      proto::MetaCommand cmd;
      cmd.set_version(1);
      cmd.set_set_balance_off(Lower(args[1]) == "off");
      return propose(cmd, "balance " + Lower(args[1]));
    }
    if ((sub == "drain" || sub == "remove") && args.size() == 2) {
      // One node change at a time: each check below reads applied state.
      if (mr->raft().log().applied() < mr->raft().log().last_index()) {
        return done(AdminError("TRYAGAIN another cluster change is being applied; retry"));
      }
      const proto::NodeInfo* node = FindNode(*m, args[1]);
      if (node == nullptr) return done(AdminError("ERR no such node '" + args[1] + "' (give its id or host:port)"));
      if (node->state() == proto::NODE_REMOVED) return done(AdminError("ERR node " + Hex(node->id()) + " is already removed"));
      ClusterView view = View(now);
      std::map<uint64_t, NodeState> state;
      for (const NodeView& n : view.nodes) state[n.id] = n.state;
      auto alive = [&](uint64_t id) { return state[id] == NodeState::kUp || state[id] == NodeState::kDraining; };
      // Whether `voters` keeps a majority of live voters once the node is gone.
      auto majority_without = [&](const std::vector<uint64_t>& voters) {
        if (!HasId(voters, node->id())) return true;
        size_t left = 0, up = 0;
        for (uint64_t v : voters) {
          if (v == node->id()) continue;
          ++left;
          up += alive(v) ? 1 : 0;
        }
        return left > 0 && up * 2 > left;
      };
      if (sub == "drain") {
        int remaining = 0;
        for (const NodeView& n : view.nodes) remaining += n.state == NodeState::kUp && n.id != node->id() ? 1 : 0;
        if (remaining < static_cast<int>(m->replication_factor())) {
          return done(AdminError("ERR cannot drain: " + std::to_string(remaining) +
                                 " up nodes would remain for a replication factor of " +
                                 std::to_string(m->replication_factor())));
        }
      } else {
        bool holds = false;
        for (const ShardView& s : view.shards) {
          holds |= HasId(s.want.voters, node->id()) || HasId(s.actual.voters, node->id()) ||
                   HasId(s.want.learners, node->id()) || HasId(s.actual.learners, node->id());
          if (!majority_without(s.want.voters) || !majority_without(s.actual.voters)) {
            return done(AdminError("ERR removing node " + Hex(node->id()) + " would leave shard " +
                                   std::to_string(s.id) + " without a majority of live voters"));
          }
        }
        if (!majority_without(view.meta_voters) || !majority_without(view.meta_actual_voters)) {
          return done(AdminError("ERR removing node " + Hex(node->id()) +
                                 " would leave the meta shard without a majority of live voters"));
        }
        if (holds && state[node->id()] == NodeState::kUp) {
          return done(AdminError("ERR node " + Hex(node->id()) +
                                 " is up and holds replicas: drain it first (SHOAL.ADMIN DRAIN)"));
        }
      }
      proto::MetaCommand cmd;
      cmd.set_version(1);
      cmd.mutable_set_node_state()->set_node(node->id());
      cmd.mutable_set_node_state()->set_state(sub == "drain" ? proto::NODE_DRAINING : proto::NODE_REMOVED);
      return propose(cmd, (sub == "drain" ? "draining node " : "removed node ") + Hex(node->id()));
    }
    if ((sub == "move" && args.size() == 4) || (sub == "transfer" && args.size() == 3)) {
      if (mr->raft().log().applied() < mr->raft().log().last_index()) {
        return done(AdminError("TRYAGAIN another cluster change is being applied; retry"));
      }
      const proto::ShardInfo* info = FindShard(*m, args[1]);
      if (info == nullptr) return done(AdminError("ERR no such shard '" + args[1] + "' (SHOAL.ADMIN STATUS lists them)"));
      uint64_t shard_id = info->id();
      ClusterView view = View(now);
      const ShardView* sv = nullptr;
      for (const ShardView& s : view.shards) {
        if (s.id == shard_id) sv = &s;
      }
      std::map<uint64_t, NodeState> state;
      for (const NodeView& n : view.nodes) state[n.id] = n.state;
      if (sv == nullptr || !sv->reported || sv->joint || !(sv->actual == sv->want)) {
        return done(AdminError("TRYAGAIN shard " + args[1] + " has a move in flight (or no leader); retry when it is done"));
      }
      if (sub == "move" && sv->splitting) {
        return done(AdminError("TRYAGAIN shard " + args[1] + " is in a split under way; retry when it is done"));
      }
      size_t up = 0;
      for (uint64_t v : sv->want.voters) up += state[v] == NodeState::kUp || state[v] == NodeState::kDraining;
      if (up * 2 <= sv->want.voters.size()) {
        return done(AdminError("ERR shard " + args[1] + " has no majority of live voters"));
      }
      proto::ShardInfo next = *info;
      const proto::NodeInfo* target = FindNode(*m, args.back());
      if (target == nullptr) return done(AdminError("ERR no such node '" + args.back() + "' (give its id or host:port)"));
      if (sub == "transfer") {
        if (!HasId(sv->want.voters, target->id())) {
          return done(AdminError("ERR node " + Hex(target->id()) + " is not a voter of shard " + args[1]));
        }
        if (state[target->id()] != NodeState::kUp) {
          return done(AdminError("ERR node " + Hex(target->id()) + " is not up"));
        }
        next.set_preferred_leader(target->id());
        proto::MetaCommand cmd;
        cmd.set_version(1);
        *cmd.mutable_set_shard() = next;
        return propose(cmd, "shard " + args[1] + ": leadership moving to " + Hex(target->id()));
      }
      const proto::NodeInfo* from = FindNode(*m, args[2]);
      if (from == nullptr) return done(AdminError("ERR no such node '" + args[2] + "' (give its id or host:port)"));
      bool voter = HasId(sv->want.voters, from->id());
      if (!voter && !HasId(sv->want.learners, from->id())) {
        return done(AdminError("ERR node " + Hex(from->id()) + " holds no replica of shard " + args[1]));
      }
      if (HasId(sv->want.voters, target->id()) || HasId(sv->want.learners, target->id())) {
        return done(AdminError("ERR node " + Hex(target->id()) + " already holds a replica of shard " + args[1]));
      }
      if (state[target->id()] != NodeState::kUp) {
        return done(AdminError("ERR node " + Hex(target->id()) + " is not up (draining, down or removed)"));
      }
      // The same role on the new node; the group's leader carries it out
      // (learner, snapshot, catch-up, then one joint change).
      next.clear_replicas();
      next.clear_learners();
      for (uint64_t v : sv->want.voters) next.add_replicas(v == from->id() ? target->id() : v);
      for (uint64_t l : sv->want.learners) next.add_learners(l == from->id() ? target->id() : l);
      if (next.preferred_leader() == from->id()) next.set_preferred_leader(target->id());
      proto::MetaCommand cmd;
      cmd.set_version(1);
      *cmd.mutable_set_shard() = next;
      return propose(cmd, "shard " + args[1] + ": moving its replica from " + Hex(from->id()) + " to " + Hex(target->id()));
    }
    if (sub == "recover" && args.size() == 4 && Lower(args[3]) == "unsafe") {
      // UNSAFE: a shard whose majority of voters is lost for good takes the
      // replica on one surviving node as its only voter; the driver then
      // rebuilds the others from it. Writes only the lost voters held are gone.
      if (mr->raft().log().applied() < mr->raft().log().last_index()) {
        return done(AdminError("TRYAGAIN another cluster change is being applied; retry"));
      }
      const proto::ShardInfo* info = FindShard(*m, args[1]);
      if (info == nullptr) return done(AdminError("ERR no such shard '" + args[1] + "' (SHOAL.ADMIN STATUS lists them)"));
      const proto::NodeInfo* node = FindNode(*m, args[2]);
      if (node == nullptr) return done(AdminError("ERR no such node '" + args[2] + "' (give its id or host:port)"));
      for (const auto& s : m->shards()) {
        if (s.split_child() != 0 && (s.id() == info->id() || s.split_child() == info->id())) {
          // A survivor may or may not have applied the split: as the only
          // voter it could serve slots the other half holds.
          return done(AdminError("ERR shard " + args[1] + " is in a split under way (" + std::to_string(s.id()) + " into " +
                                 std::to_string(s.split_child()) + "): it cannot be recovered until the split is done"));
        }
      }
      ClusterView view = View(now);
      std::map<uint64_t, NodeState> state;
      for (const NodeView& n : view.nodes) state[n.id] = n.state;
      const ShardView* sv = nullptr;
      for (const ShardView& x : view.shards) {
        if (x.id == info->id()) sv = &x;
      }
      if (!Contains(info->replicas(), node->id())) {
        return done(AdminError("ERR node " + Hex(node->id()) + " holds no voter of shard " + args[1]));
      }
      if (state[node->id()] != NodeState::kUp && state[node->id()] != NodeState::kDraining) {
        return done(AdminError("ERR node " + Hex(node->id()) + " is not up"));
      }
      size_t live = 0;
      for (uint64_t v : info->replicas()) live += state[v] == NodeState::kUp || state[v] == NodeState::kDraining;
      // The group may still be on its old voters (a move under way when the
      // majority died): with no leader now, its last reported voters count.
      bool lost_actual = false;
      if (sv == nullptr || !sv->reported) {
        std::lock_guard lock(gossip_mu_);
        if (auto it = gossip_.find(info->id()); it != gossip_.end() && !it->second.voters.empty()) {
          size_t up = 0;
          for (uint64_t v : it->second.voters) up += state[v] == NodeState::kUp || state[v] == NodeState::kDraining;
          lost_actual = up * 2 <= it->second.voters.size();
        }
      }
      if (live * 2 > static_cast<size_t>(info->replicas_size()) && !lost_actual) {
        return done(AdminError("ERR shard " + args[1] + " still has a majority of live voters (" + std::to_string(live) +
                               " of " + std::to_string(info->replicas_size()) +
                               "); recovery is only for a majority lost for good"));
      }
      proto::ShardInfo next = *info;
      next.clear_replicas();
      next.clear_learners();
      next.add_replicas(node->id());
      next.set_preferred_leader(node->id());
      next.set_recovery(info->recovery() + 1);
      next.set_recovered_on(node->id());
      proto::MetaCommand cmd;
      cmd.set_version(1);
      *cmd.mutable_set_shard() = next;
      spdlog::critical("UNSAFE RECOVERY of shard {} requested: node {} becomes its only voter ({} of {} voters live)",
                       info->id(), Hex(node->id()), live, info->replicas_size());
      return propose(cmd, "shard " + args[1] + ": UNSAFE recovery " + std::to_string(next.recovery()) + " on " +
                              Hex(node->id()) + " (writes only the lost voters held are gone)");
    }
    if (sub == "recover") {
      return done(AdminError("ERR RECOVER is unsafe and must say so: SHOAL.ADMIN RECOVER shard node UNSAFE"));
    }
    done(AdminError("ERR unknown SHOAL.ADMIN subcommand or wrong arguments: STATUS, PLAN, DRAIN node, REMOVE node, "
                    "MOVE shard from-node to-node, TRANSFER shard node, SPLIT shard [slot], RECOVER shard node UNSAFE, "
                    "BALANCE on|off"));
  });
}

}  // namespace shoal::cluster
