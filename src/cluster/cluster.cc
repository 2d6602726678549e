#include "cluster/cluster.h"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/read_until.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

#include <algorithm>
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

Cluster::~Cluster() = default;

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
    for (const auto& shard : meta()->shards()) {
      if (!Contains(shard.replicas(), node_id_)) continue;
      s = EnsureShardReplica(shard, false);
      if (!s.ok()) return s;
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

Status Cluster::EnsureShardReplica(const proto::ShardInfo& s, bool bootstrap) {
  if (groups_->Find(s.id()) != nullptr) return Status::Ok();
  if (s.id() == 0 || s.id() >= node::Groups::kMaxGroups || s.slot_end() > storage::kSlotCount ||
      s.slot_begin() >= s.slot_end()) {
    return Status::Corruption("shard map entry " + std::to_string(s.id()));
  }
  auto shard = std::make_unique<kv::Shard>(engine_, static_cast<uint32_t>(s.id()),
                                           static_cast<uint16_t>(s.slot_begin()),
                                           static_cast<uint16_t>(s.slot_end()), opts_.meta_cache_entries);
  Status st = shard->Load();
  if (!st.ok()) return st;
  auto sm = std::make_unique<replica::KvStateMachine>(shard.get(), opts_.limits);
  replica::ReplicaOptions ro;
  ro.group = s.id();
  ro.node_id = node_id_;
  ro.tick_ms = groups_->options().tick_ms;
  ro.compact_bytes = opts_.log_bytes_per_replica;
  if (bootstrap) ro.bootstrap_voters = {node_id_};
  auto r = replica::Replica::Open(engine_, ro, std::move(sm));
  if (!r.ok()) return r.status();
  {
    std::lock_guard lock(shards_mu_);
    shards_[s.id()] = std::move(shard);
  }
  groups_->Add(std::move(r).value());
  return Status::Ok();
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
  if (it != gossip_.end() && (leader == 0 || it->second.second > term)) leader = it->second.first;
  return leader;
}

bool Cluster::Healthy() const {
  RoutingPtr rt = routing();
  if (rt->shards.empty()) return false;
  for (const auto& s : rt->shards) {
    if (LeaderOf(s.id) == 0) return false;
  }
  return true;
}

void Cluster::OnLeaders(uint64_t from, std::vector<std::pair<uint64_t, uint64_t>> leaders) {
  std::lock_guard lock(gossip_mu_);
  for (auto it = gossip_.begin(); it != gossip_.end();) {
    bool still = false;
    for (auto [g, t] : leaders) still |= g == it->first;
    if (it->second.first == from && !still) {
      it = gossip_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto [g, t] : leaders) {
    auto& cur = gossip_[g];
    if (cur.first == 0 || cur.second <= t) cur = {from, t};
  }
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

void Cluster::OnTick(int worker) {
  int64_t now = node::MonoUs();
  MetaPtr m = meta();
  if (!m || m->cluster_id() == 0) return;
  // Leaders bring their groups' membership to what the metadata wants.
  for (replica::Replica* r : groups_->All()) {
    if (groups_->WorkerOf(r->group()) != worker || !r->is_leader()) continue;
    Reconcile(r, *m, now);
  }
  if (worker != 0) return;
  if (m->epoch() != routed_epoch_) {
    routed_epoch_ = m->epoch();
    for (const auto& n : m->nodes()) {
      transport_->SetAddress(n.id(), n.host(), static_cast<uint16_t>(n.peer_port()));
    }
    for (const auto& s : m->shards()) {
      if (!Contains(s.replicas(), node_id_)) continue;
      Status st = EnsureShardReplica(s, false);
      if (!st.ok()) spdlog::error("cannot create replica of shard {}: {}", s.id(), st.ToString());
    }
    RebuildRouting(m);
  }
  std::vector<std::pair<uint64_t, uint64_t>> leading;
  for (replica::Replica* r : groups_->All()) {
    if (r->published_is_leader()) leading.emplace_back(r->group(), r->published_term());
  }
  transport_->SetLocalLeaders(std::move(leading));
  replica::Replica* meta_replica = groups_->Find(0);
  if (meta_replica != nullptr && meta_replica->is_leader() &&
      now - last_placement_us_ >= kPlacementIntervalUs) {
    last_placement_us_ = now;
    PlacementDriver(meta_replica, *m, now);
  }
}

void Cluster::Reconcile(replica::Replica* r, const proto::MetaState& meta, int64_t now) {
  std::vector<uint64_t> members, voters;
  uint64_t preferred = 0;
  if (r->group() == 0) {
    for (const auto& n : meta.nodes()) members.push_back(n.id());
    voters.assign(meta.meta_voters().begin(), meta.meta_voters().end());
  } else {
    const proto::ShardInfo* info = nullptr;
    for (const auto& s : meta.shards()) {
      if (s.id() == r->group()) info = &s;
    }
    if (info == nullptr) return;
    members.assign(info->replicas().begin(), info->replicas().end());
    voters = members;
    preferred = info->preferred_leader();
  }
  const raft::Raft& raft = r->raft();
  const auto& tracker = raft.tracker();
  raft::ConfState cs = tracker.conf_state();
  if (!cs.voters_outgoing.empty()) return;  // the leader leaves the joint state by itself
  if (raft.log().applied() < raft.log().committed()) return;  // membership may be about to change
  for (uint64_t id : members) {
    if (tracker.is_member(id)) continue;
    raft::ConfChange cc{{raft::ConfChangeSingle{raft::ConfChangeType::kAddLearner, id}}};
    auto p = r->ProposeConfChange(cc);
    if (p.ok()) {
      spdlog::info("group {}: adding {} as a learner", r->group(), Hex(id));
      groups_->Notify(r);
    } else {
      spdlog::debug("group {}: cannot add {} yet: {}", r->group(), Hex(id), raft::to_string(p.error));
    }
    return;
  }
  raft::Index committed = raft.log().committed();
  for (uint64_t id : voters) {
    if (tracker.is_voter(id)) continue;
    auto it = tracker.progress().find(id);
    if (it == tracker.progress().end() || it->second.match < committed) continue;  // catching up
    raft::ConfChange cc{{raft::ConfChangeSingle{raft::ConfChangeType::kAddVoter, id}}};
    if (r->ProposeConfChange(cc).ok()) {
      spdlog::info("group {}: promoting {} to voter", r->group(), Hex(id));
      groups_->Notify(r);
    }
    return;
  }
  if (preferred != 0 && preferred != node_id_ && tracker.is_voter(preferred) &&
      raft.lead_transferee() == raft::kNoNode) {
    auto it = tracker.progress().find(preferred);
    if (it == tracker.progress().end() || it->second.match < raft.log().last_index()) return;
    std::lock_guard lock(transfer_mu_);
    int64_t& last = last_transfer_us_[r->group()];
    if (now - last < kTransferRetryUs) return;
    last = now;
    r->TransferLeader(preferred);
    groups_->Notify(r);
  }
}

void Cluster::ProposeMeta(replica::Replica* meta_replica, const proto::MetaCommand& cmd) {
  (void)meta_replica->Propose(cmd.SerializeAsString(), [](bool, std::string) {}, node::MonoUs());
  groups_->Notify(meta_replica);
}

void Cluster::PlacementDriver(replica::Replica* meta_replica, const proto::MetaState& meta, int64_t) {
  const raft::Raft& raft = meta_replica->raft();
  if (raft.log().applied() < raft.log().committed()) return;  // decide on the latest state only
  std::vector<uint64_t> nodes;
  for (const auto& n : meta.nodes()) nodes.push_back(n.id());
  if (nodes.empty()) return;
  size_t rf = std::min<size_t>(std::max<uint32_t>(meta.replication_factor(), 1), nodes.size());
  std::map<uint64_t, int> load;
  for (uint64_t n : nodes) load[n] = 0;
  for (const auto& s : meta.shards()) {
    for (uint64_t r : s.replicas()) load[r]++;
  }
  std::map<uint64_t, int> leads;
  for (uint64_t n : nodes) leads[n] = 0;
  size_t target = (static_cast<size_t>(meta.shards_size()) + nodes.size() - 1) / nodes.size();
  for (const auto& s : meta.shards()) {
    proto::ShardInfo next = s;
    while (static_cast<size_t>(next.replicas_size()) < rf) {
      uint64_t best = 0;
      for (uint64_t n : nodes) {
        if (Contains(next.replicas(), n)) continue;
        if (best == 0 || load[n] < load[best]) best = n;
      }
      if (best == 0) break;
      next.add_replicas(best);
      load[best]++;
    }
    uint64_t pref = next.preferred_leader();
    if (!Contains(next.replicas(), pref) || static_cast<size_t>(leads[pref]) >= target) {
      pref = 0;
      for (uint64_t r : next.replicas()) {
        if (pref == 0 || leads[r] < leads[pref]) pref = r;
      }
    }
    leads[pref]++;
    next.set_preferred_leader(pref);
    if (next.SerializeAsString() != s.SerializeAsString()) {
      proto::MetaCommand cmd;
      cmd.set_version(1);
      *cmd.mutable_set_shard() = next;
      ProposeMeta(meta_replica, cmd);
    }
  }
  size_t want_voters = std::min<size_t>(nodes.size() >= 5 ? 5 : 3, nodes.size());
  std::vector<uint64_t> voters(nodes.begin(), nodes.begin() + static_cast<long>(want_voters));
  std::vector<uint64_t> have(meta.meta_voters().begin(), meta.meta_voters().end());
  if (voters != have) {
    proto::MetaCommand cmd;
    cmd.set_version(1);
    for (uint64_t v : voters) cmd.mutable_set_meta_voters()->add_voters(v);
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
                        [done, ok](bool applied, std::string reply) {
                          done(applied && reply.starts_with("+") ? ok : reply);
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
