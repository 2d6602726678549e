// Cluster: this node's membership in a shoal cluster. It
//   - keeps the node's identity (node id, cluster id) in storage;
//   - bootstraps a one-node cluster, or joins one through any member;
//   - hosts the meta shard replica (every node holds one: a voter on up to
//     3 or 5 nodes, a learner elsewhere) and a replica of each data shard
//     the metadata places here;
//   - as the leader of a group, brings its membership to what the metadata
//     wants (learner, snapshot, catch-up, promotion) and hands leadership to
//     the preferred replica;
//   - as the meta leader, runs the placement driver: replicas up to the
//     replication factor, leaders spread evenly;
//   - publishes the routing table (slot -> shard -> leader -> address).
// See docs/design/cluster.md.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <set>
#include <thread>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cluster/meta.h"
#include "cluster/load_book.h"
#include "cluster/planner.h"
#include "kv/shard.h"
#include "node/groups.h"
#include "node/stream.h"
#include "node/transport.h"
#include "storage/slot.h"

namespace shoal::cluster {

struct ClusterOptions {
  std::string host = "127.0.0.1";  // advertised client/peer address (the bind address)
  uint16_t port = 6379;
  uint16_t peer_port = 16379;
  std::string join;  // "host:port" of any member; empty: bootstrap
  std::string secret;  // the cluster secret the join proves (empty: none)
  // tls-cluster: the join talks TLS to the member's tls-port (null: plain).
  std::shared_ptr<node::TlsContext> tls;
  int shards = 16;
  int replication_factor = 3;
  // What the key metadata caches of this node's shards hold together (null:
  // each shard has a budget of its own, kv::Shard's default).
  std::shared_ptr<kv::KeyMetaBudget> meta_budget;
  // Bytes of Raft log each replica keeps before compacting, and of its
  // applied entries held in memory besides the engine's copy.
  uint64_t log_bytes_per_replica = 4 << 20;
  uint64_t log_cache_bytes_per_replica = 256 << 10;
  const kv::Limits* limits = nullptr;
  // Told of the lists and sorted sets that data shards' applies change.
  kv::KeyWatcher* key_watcher = nullptr;
  // A node without a heartbeat for this long is down: the placement driver
  // rebuilds its replicas on other nodes.
  int64_t down_after_ms = 30'000;
  // Carries data shards' snapshots (null: inside Raft messages).
  replica::SnapshotCourier* courier = nullptr;
  // True once this node begins to shut down (ReplicaOptions::stopping).
  const std::atomic<bool>* stopping = nullptr;
  // This node's snapshot transfer counters (for SHOAL.ADMIN STATUS).
  std::function<node::NodeStats()> local_transfers;
  // A shard splits by itself past this size, or this sustained load
  // (operations per second); 0: never (SHOAL.ADMIN SPLIT still splits).
  uint64_t split_bytes = 512ULL << 20;
  uint64_t split_ops_per_sec = 0;
  // Called on worker 0 with every new metadata this node applies (and the
  // metadata it starts with): the ACL users live there.
  std::function<void(const proto::MetaState&)> on_meta;
};

// What the membership of a group is, as its leader gossips it.
struct LeaderGossip {
  uint64_t node = 0;
  uint64_t term = 0;
  std::vector<uint64_t> voters, learners;
  bool joint = false;
  int64_t heard_us = 0;  // when the report arrived (monotonic)
  node::LeaderReport report;  // the whole report (range, size, load)
};

// The answer to an admin command (SHOAL.ADMIN): text lines, an error, or
// "ask the meta leader at host:port".
struct AdminReply {
  enum class Kind { kOk, kLines, kError, kRedirect } kind = Kind::kOk;
  std::vector<std::string> lines;  // kLines
  std::string error;               // kError: "CODE message"
  std::string host;                // kRedirect
  uint16_t port = 0;
};

struct NodeAddr {
  uint64_t id = 0;
  std::string name;  // 40 hex characters, as Redis Cluster node ids
  std::string host;
  uint16_t port = 0;
};

struct ShardRoute {
  uint64_t id = 0;
  uint16_t begin = 0, end = 0;  // [begin, end)
  uint64_t epoch = 0;
  std::vector<uint64_t> replicas;
};

// An immutable view for routing; rebuilt when metadata or leaders change.
struct RoutingTable {
  uint64_t meta_epoch = 0;
  std::vector<ShardRoute> shards;
  std::map<uint64_t, NodeAddr> nodes;
  std::map<uint64_t, uint64_t> remote_leaders;  // group -> node, from gossip
  int replication_factor = 3;
  std::vector<uint64_t> meta_voters;
  const NodeAddr* Node(uint64_t id) const {
    auto it = nodes.find(id);
    return it == nodes.end() ? nullptr : &it->second;
  }
};
using RoutingPtr = std::shared_ptr<const RoutingTable>;

// 40-hex name of a node id.
std::string NodeName(uint64_t id);

class Cluster final : public replica::Splitter {
 public:
  Cluster(ClusterOptions opts, storage::Engine* engine, node::Runtime* runtime,
          node::Groups* groups, node::Transport* transport);
  ~Cluster();

  // Loads or creates the identity, opens local replicas, bootstraps or
  // starts joining. Call before the runtime starts.
  Status Open();
  // Starts the background work (join, reconcile); the runtime must run.
  void Start();

  uint64_t node_id() const { return node_id_; }
  uint64_t cluster_id() const { return cluster_id_.load(std::memory_order_acquire); }
  const ClusterOptions& options() const { return opts_; }
  RoutingPtr routing() const { return std::atomic_load(&routing_); }
  // The group that owns `slot`: lock-free, for the per-command path. A
  // local replica that holds the slot wins over the metadata: around a
  // split the two disagree for a moment, and the replicas here know.
  uint64_t GroupOfSlot(uint16_t slot) const {
    if (removed_elsewhere_.load(std::memory_order_relaxed)) return 0;
    uint32_t local = local_slot_group_[slot].load(std::memory_order_acquire);
    return local != 0 ? local : slot_group_[slot].load(std::memory_order_acquire);
  }
  // Whether peers say this node was removed from the cluster while its own
  // metadata (from before the removal: it was away) does not: it then owns
  // no slot here (GroupOfSlot) and reports cluster_state:fail.
  bool removed_elsewhere() const { return removed_elsewhere_.load(std::memory_order_relaxed); }
  // What a command for a slot no shard here owns is answered (GroupOfSlot 0).
  std::string NoShardMapError() const;
  // Changes whenever a local replica comes, goes or changes its range. Any thread.
  uint64_t LocalRangesSig();
  // Counts an operation on `slot` served here (load-based splits). On
  // worker `worker`'s thread only: each worker counts in an array of its
  // own, without a locked add or a cache line that the other workers write
  // (one shared array cost a pipelined GET about 2 % of its time).
  void NoteOp(int worker, uint16_t slot) {
    std::atomic<uint32_t>& c = slot_ops_[static_cast<size_t>(worker)]->ops[slot];
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  // replica::Splitter: creates a split's child replica here.
  bool StageSplit(replica::Replica& parent, const replica::SplitCommand& split, const raft::ConfState& conf,
                  uint64_t index, storage::WriteBatch& batch) override;
  void FinishSplit(replica::Replica& parent, const replica::SplitCommand& split) override;
  bool ClaimImage(replica::Replica& r, uint16_t begin, uint16_t end) override;
  void ReleaseImage(replica::Replica& r) override;
  MetaPtr meta() const { return meta_sm_ ? meta_sm_->state() : MetaPtr(); }
  // The leader of group as this node knows it (kNoNode if unknown). Routing
  // takes the last one heard of, however long ago; `heard_within_us` > 0
  // takes another node's leadership only if gossiped that recently (a shard
  // whose majority died has no leader, though its last one was heard of).
  uint64_t LeaderOf(uint64_t group, int64_t heard_within_us = 0) const;
  // How recently a leader must have been heard of for INFO and
  // cluster_state to count it (gossip comes every 100 ms; a failover takes
  // about half a second).
  static constexpr int64_t kLeaderHeardUs = 3'000'000;
  // An unsafe recovery waits for its survivors' reports for this long past
  // replica::Replica::kForceQuietTicks ticks (they report once they heard
  // no leader for that long) after the shard's last leader was heard of.
  static constexpr int64_t kSurvivorsReportMarginUs = 2'000'000;
  replica::Replica* Local(uint64_t group) const { return groups_->Find(group); }
  kv::Shard* LocalShard(uint64_t group) const;
  std::vector<kv::Shard*> LocalShards() const;

  // A node asks to join (SHOAL.JOIN). done(reply) runs on worker 0 with a
  // RESP reply: "+<cluster id hex>", "-REDIRECT host:port" or an error.
  void HandleJoin(const proto::NodeInfo& node, std::function<void(std::string)> done);
  // Whether a meta-shard (group 0) message from `from` may be delivered
  // (transport thread): only between nodes whose meta replicas belong to
  // the same unsafe recovery of the meta shard, as each gossips it.
  bool MetaPeerInLineage(uint64_t from) const;
  // Whether a data group's message from member `from` may be taken: false
  // while the cluster uses formats (MetaState.features) that the sender's
  // node has not reported reading (a build that cannot read them must not
  // vote, acknowledge or lead). Any thread; taken once per batch of messages.
  struct FormatCheck {
    uint64_t features = 0;  // the cluster's
    std::shared_ptr<const std::map<uint64_t, uint64_t>> peers;  // node key -> features reported
    bool Allows(uint64_t from) const;
  };
  FormatCheck DataPeerFormats() const;
  // Leadership gossip from a peer (transport thread); also its heartbeat.
  void OnLeaders(uint64_t from, std::vector<node::LeaderReport> leaders);
  // A peer's snapshot transfer counters (transport thread).
  void OnTransfers(uint64_t from, node::NodeStats stats);
  // SHOAL.ADMIN STATUS | DRAIN node | REMOVE node | BALANCE on|off | PLAN.
  // Runs on worker 0; only the meta leader answers (others: kRedirect).
  void HandleAdmin(std::vector<std::string> args, std::function<void(AdminReply)> done);
  // The planner's view of the cluster as this node sees it now (worker 0).
  ClusterView View(int64_t now_us) const;

  // Stops the background work that reads storage (call before the engine
  // closes).
  void Stop();

  // Whether every shard has a known leader (heard of lately).
  bool Healthy() const;
  // How many shards have every replica the metadata wants in place, as many
  // as the replication factor (one per node while there are fewer nodes),
  // with no move under way and every replica's node heard from lately
  // (INFO's shoal_shards_replicated).
  size_t ShardsReplicated(int64_t now_us) const;

 private:
  // What shard s's leader reports (this node's own leadership, else gossip
  // of the last second; `load`: with this node's load figures, worker 0
  // only): its leader, and its members as nodes; joint also when the group
  // still has an older incarnation of a member. false: no leader known, or
  // only one of a lineage an unsafe recovery of the shard replaced.
  bool ShardMembers(const proto::MetaState& m, const proto::ShardInfo& s, int64_t now, bool load,
                    node::LeaderReport* rep, uint64_t* leader, Membership* actual, bool* joint) const;
  // Proposes the split of a group that is led but not in the metadata
  // (meta.h LostSplit); true if it did.
  bool RecordLostSplit(replica::Replica* meta_replica, const proto::MetaState& meta, int64_t now);
  Status LoadIdentity();
  // A node whose --dir already belongs to cluster `cid` and that was given
  // --join: refuses (InvalidArgument) if the join target answers that it
  // belongs to another cluster; a target that cannot be asked is let be.
  Status CheckJoinTarget(uint64_t cid);
  Status OpenMeta(bool bootstrap, const proto::MetaState* initial);
  Status EnsureShardReplica(const proto::ShardInfo& s, bool bootstrap);
  // Opens the replica of data shard `id` (its range from storage, else
  // [begin, end)) and hosts it: the member whose state is here, else
  // incarnation `incarnation` (the metadata's for this node).
  Result<replica::Replica*> OpenShardReplica(uint64_t id, uint16_t begin, uint16_t end, bool bootstrap,
                                             uint64_t recovery, uint64_t recovered_on, uint64_t incarnation = 0);
  // Recomputes which local replica holds each slot (GroupOfSlot).
  void RebuildLocalSlots();
  // On `worker`: starts the key recounts its shards need (after a split),
  // counted on the recount thread and finished back on the worker.
  void StartRecounts(int worker);
  void RecountLoop();
  // Worker 0, about once a second: each led shard's load and size, and
  // where it would split (gossiped with the leadership).
  void MeasureLoad(int64_t now_us);
  void FillLoad(node::LeaderReport* rep) const;
  // As the leader of a shard the metadata splits: proposes the split.
  void ProposeSplitIfDue(replica::Replica* r, const proto::MetaState& meta, int64_t now_us);
  // The shard that this node's replica `local` of `s`, forced here by an
  // unsafe recovery after it missed splits recorded as done, splits off
  // next (RecoveredTail), if no shard over its tail has a replica here.
  const proto::ShardInfo* MissedSplitTail(const proto::MetaState& meta, const proto::ShardInfo& s,
                                          const kv::Shard& local) const;
  void OnTick(int worker);
  void Reconcile(replica::Replica* r, const proto::MetaState& meta, int64_t now_us);
  // Worker 0 (the meta replica's), every tick: gossips the unsafe recovery
  // this node's meta replica belongs to, starts it over when a peer's
  // belongs to a later one, and on a recovered meta leader records the
  // recovery in the metadata (docs/design/placement.md, "Unsafe recovery").
  void MetaRecoveryTick(const MetaPtr& m, int64_t now_us);
  // After an unsafe recovery of the meta shard: `want` keeps only nodes
  // whose meta replica was started over (or that are members already).
  void AdmitRecoveredMetaMembers(uint64_t recovery, const replica::Replica& r, Membership* want) const;
  // SHOAL.ADMIN RECOVER META UNSAFE, on the node that is to be the meta
  // shard's only voter (no meta leader is needed, or exists).
  AdminReply AdminRecoverMeta(replica::Replica* mr, int64_t now_us);
  // The reports of data groups led here or gossiped in the last second that
  // the metadata does not list (a split an unsafe meta recovery lost);
  // worker 0 (with this node's load figures).
  std::vector<node::LeaderReport> UnlistedLeaders(const proto::MetaState& meta, int64_t now_us) const;
  // The first of them; 0 if none. Splits wait while one exists: the next
  // shard id could be that group's.
  uint64_t UnlistedGroup(const proto::MetaState& meta) const;
  // The least id a split's child may take: above every group seen led
  // here or in gossip (SplitShard.min_child).
  uint64_t MinChildId();
  // The highest unsafe recovery number reported for `group` by any leader
  // (gossip, or a local replica), remembered after the report ends.
  uint64_t RecoverySeen(uint64_t group);
  // On `worker`, for the groups it drives: creates the replicas the
  // metadata places here, and retires those it no longer places here once
  // their group has let them go (MayRetire). Creating and retiring a group
  // on its own worker keeps the two from racing.
  void SyncLocalReplicas(int worker, int64_t now_us);
  // On `worker`: notes its data replicas that have heard from no leader for
  // a while (leaderless_), for the gossip.
  void NoteLeaderless(int worker);
  // The replicas of `group` that hear no leader, as live nodes (heard from
  // within kLeaderHeardUs; this node's own included) report them, by node.
  std::map<uint64_t, node::LeaderlessReplica> LeaderlessReplicas(uint64_t group, int64_t now_us) const;
  Status Retire(replica::Replica* r);
  // The latest report of group's leader, if one arrived recently.
  bool GossipOf(uint64_t group, int64_t now_us, LeaderGossip* out) const;
  // The report of shard s's leader: this node's replica if it leads, else
  // a recent one heard; false if none, or if that leader belongs to a
  // lineage an unsafe recovery of the shard replaced.
  bool ShardReport(const proto::ShardInfo& s, int64_t now_us, node::LeaderReport* out) const;
  AdminReply AdminStatus(int64_t now_us) const;
  const proto::NodeInfo* FindNode(const proto::MetaState& meta, const std::string& who) const;
  // A SHOAL.ADMIN verb's outcome: a reply now, or a metadata change to
  // propose and the line that reports it once applied.
  struct AdminStep {
    std::optional<AdminReply> reply;
    proto::MetaCommand cmd;
    std::string what;
    static AdminStep Reply(AdminReply r) {
      AdminStep s;
      s.reply = std::move(r);
      return s;
    }
    static AdminStep Propose(proto::MetaCommand c, std::string w) {
      AdminStep s;
      s.cmd = std::move(c);
      s.what = std::move(w);
      return s;
    }
  };
  // The verbs that change the metadata (admin_verbs.cc), on the meta leader.
  AdminStep AdminSplit(const std::string& sub, const std::vector<std::string>& args, const MetaPtr& m,
                       int64_t now);
  AdminStep AdminNodeState(const std::string& sub, const std::vector<std::string>& args, const MetaPtr& m,
                           int64_t now);
  AdminStep AdminPlace(const std::string& sub, const std::vector<std::string>& args, const MetaPtr& m,
                       int64_t now);
  AdminStep AdminRecover(const std::string& sub, const std::vector<std::string>& args, const MetaPtr& m,
                         int64_t now);
  // The meta leader switches on the formats every node's build reads
  // (MetaState.features); true when it proposed that.
  bool EnableFeatures(replica::Replica* meta_replica, const proto::MetaState& meta);
  void PlacementDriver(replica::Replica* meta_replica, const proto::MetaState& meta, int64_t now_us);
  PlannerPolicy Policy(const proto::MetaState& meta) const;
  void ProposeMeta(replica::Replica* meta_replica, const proto::MetaCommand& cmd);
  void RebuildRouting(const MetaPtr& meta);
  asio::awaitable<void> JoinLoop();

  ClusterOptions opts_;
  storage::Engine* engine_;
  node::Runtime* runtime_;
  node::Groups* groups_;
  node::Transport* transport_;
  uint64_t node_id_ = 0;
  std::atomic<uint64_t> cluster_id_{0};
  MetaStateMachine* meta_sm_ = nullptr;  // owned by the meta replica
  std::mutex shards_mu_;
  std::map<uint64_t, std::unique_ptr<kv::Shard>> shards_;  // local data shards
  RoutingPtr routing_;
  std::array<std::atomic<uint32_t>, storage::kSlotCount> slot_group_{};
  std::array<std::atomic<uint32_t>, storage::kSlotCount> local_slot_group_{};
  struct alignas(64) SlotOps {
    std::array<std::atomic<uint32_t>, storage::kSlotCount> ops{};
  };
  std::vector<std::unique_ptr<SlotOps>> slot_ops_;  // per worker (NoteOp)
  // Replicas being opened here (shards_mu_), so that no other thread opens
  // them too: id -> range (a split child's; else unused).
  std::map<uint64_t, std::pair<uint16_t, uint16_t>> opening_;
  // Slots claimed by a replica here for an image it is taking (ClaimImage),
  // until the import is written: id -> range. shards_mu_.
  std::map<uint64_t, std::pair<uint16_t, uint16_t>> image_claims_;
  // Claims `id` for opening (false: it is open or being opened). shards_mu_.
  bool ClaimLocked(uint64_t id, std::pair<uint16_t, uint16_t> range);
  // A replica here other than `self` that holds, is being opened with, or
  // has claimed for an image some of slots [begin, end); 0 if none. shards_mu_.
  uint64_t SlotHolderLocked(uint64_t self, uint16_t begin, uint16_t end) const;
  // Worker 0: load measurement.
  struct ShardLoad {
    uint64_t bytes = 0;
    uint32_t split_slot = 0;
    uint32_t begin = 0, end = 0;  // the range measured (a split starts the rate over)
    int64_t since_us = 0;         // measured since
    double ewma_ops = 0;          // moving average over about 10 s, from 0
    double ops_per_sec = 0;       // the same, corrected for its start at 0
    bool measured = false;
  };
  std::map<uint64_t, ShardLoad> load_;
  // The meta leader's memory of shards' sizes and loads (View).
  mutable std::mutex load_book_mu_;
  mutable LoadBook load_book_;
  std::vector<uint32_t> last_slot_ops_;
  int64_t last_load_us_ = 0;
  int64_t last_size_us_ = 0;
  std::mutex local_slots_mu_;  // one RebuildLocalSlots at a time
  uint64_t local_ranges_sig_ = 0;     // local_slots_mu_
  // Key recounts (kv::Shard::BeginRecount): one thread counts, in order.
  struct Recount {
    uint64_t shard;
    kv::Shard::RecountJob job;
  };
  std::mutex recount_mu_;
  std::condition_variable recount_cv_;
  std::deque<Recount> recount_queue_;
  std::set<uint64_t> recounting_;  // queued or counting (recount_mu_)
  bool recount_stop_ = false;
  std::atomic<bool> recount_abort_{false};
  std::thread recount_thread_;
  std::map<uint64_t, int64_t> last_split_us_;  // per group, on its worker (transfer_mu_)
  std::map<uint64_t, int64_t> last_refusal_log_us_;  // per shard: a recovery refused here (transfer_mu_)
  // Gossip (transport thread writes, worker 0 reads).
  mutable std::mutex gossip_mu_;
  std::map<uint64_t, LeaderGossip> gossip_;  // group -> its leader's report
  // Never forgotten (gossip_mu_): the highest unsafe recovery number any
  // leader reported per group, and the highest group id seen led.
  std::map<uint64_t, uint64_t> max_recovery_seen_;
  uint64_t max_group_seen_ = 0;
  std::map<uint64_t, int64_t> led_heard_us_;  // group -> when a leader of it was last heard of (gossip_mu_)
  std::atomic<bool> removed_elsewhere_{false};
  static constexpr int64_t kRemovedToldUs = 10'000'000;  // peers gossip removed nodes heard this lately
  std::map<uint64_t, int64_t> last_heard_us_;  // node -> last gossip from it
  std::map<uint64_t, node::NodeStats> transfers_;  // node -> its counters
  // Worker-0 state.
  MetaPtr routed_meta_;  // the metadata routing was last built from (worker 0)
  int64_t last_placement_us_ = 0;
  int64_t meta_leader_since_us_ = 0;  // 0: not the meta leader
  int64_t last_meta_recovered_us_ = 0;  // when MetaRecoveryTick last proposed the record
  // The unsafe recovery of the meta shard this node's meta replica belongs
  // to, set before the replica changes (MetaPeerInLineage reads it).
  std::atomic<uint64_t> meta_lineage_{0};
  // The metadata switched write hints on (kFeatureWriteHints): data shards'
  // leaders send them.
  std::atomic<bool> write_hints_on_{false};
  std::atomic<uint64_t> features_on_{0};  // MetaState.features, for DataPeerFormats
  mutable std::mutex peer_features_mu_;
  std::shared_ptr<const std::map<uint64_t, uint64_t>> peer_features_ =
      std::make_shared<const std::map<uint64_t, uint64_t>>();
  std::map<uint64_t, int64_t> last_transfer_us_;  // per group, on its worker only
  mutable std::mutex transfer_mu_;
  std::vector<int64_t> last_sync_us_;  // per worker: last SyncLocalReplicas
  // Per worker (transfer_mu_): its data replicas that hear no leader, as of
  // its last SyncLocalReplicas; gossiped with this node's figures.
  std::vector<std::vector<node::LeaderlessReplica>> leaderless_;
  std::vector<std::unique_ptr<kv::Shard>> retired_shards_;  // kept alive: readers may hold them
};

}  // namespace shoal::cluster
