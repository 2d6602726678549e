// Deterministic simulation of the node runtime's replica logic: real
// replica::Replica objects (RawNode + RocksDB log + kv state machine) on
// three simulated nodes, driven the way node::Groups drives them (Ready ->
// one write -> apply -> persist -> advance), over a simulated network that
// delays, reorders, drops and partitions, with node restarts (reopening the
// store: log, hard state, applied index), log compaction small enough that
// lagging and restarted replicas catch up from snapshots, and clients that
// route by leader hints and retry after leader changes. Every seed is
// reproducible; the history is checked for linearizability and the
// replicas must converge.
#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <map>
#include <random>

#include "cluster/membership.h"
#include "cluster/planner.h"
#include "kv/commands.h"
#include "node/image_stream.h"
#include "replica/replica.h"
#include "sim/linearizability.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace shoal::sim {
namespace {

constexpr uint64_t kGroup = 3;
constexpr int kMaxNodes = 5;  // nodes 4 and 5 join later in the placement runs
constexpr int kFounders = 3;
// Steps without a node before the placement driver calls it down.
constexpr uint64_t kDownAfterSteps = 400;
constexpr uint64_t kRetireQuietTicks = 20;

const kv::CommandSpec& Spec(std::string_view name) {
  for (const auto& s : kv::DataCommands()) {
    if (s.name == name) return s;
  }
  return kv::DataCommands()[0];
}

std::string SetBatch(const std::string& key, const std::string& value) {
  const kv::CommandSpec& spec = Spec("set");
  kv::Entry e;
  e.op = spec.op;
  e.now_ms = 1000;
  static kv::Limits limits;
  std::vector<std::string_view> args = {"set", key, value};
  std::string err;
  resp::Writer w(&err, 2);
  kv::PrepareContext ctx{0, e.now_ms, &limits};
  SHOAL_CHECK(spec.prepare(ctx, args, &e, &w));
  return replica::EncodeKvBatch({e}, 2);
}

struct SimNode {
  raft::NodeId id = 0;
  std::filesystem::path dir;
  kv::Limits limits;
  std::unique_ptr<storage::Engine> engine;
  std::unique_ptr<kv::Shard> shard;
  std::unique_ptr<replica::Replica> replica;  // null: no replica of the group here
  bool up = false;        // the process runs (engine open)
  bool joined = false;    // a member of the cluster
  bool lost = false;      // gone for good, its disk with it
  bool draining = false;  // an operator asked to move everything off it
  bool removed = false;   // removed from the cluster
  uint64_t down_since = 0;
};

struct InFlight {
  uint64_t deliver_at;
  raft::Message msg;
};

struct ChunkInFlight {
  uint64_t deliver_at;
  node::SnapshotChunk chunk;
};

class ReplicaSim;

// The simulation's snapshot courier: an image is exported at once into the
// sender's folder, then carried chunk by chunk over the simulated network
// (delays, losses, partitions) to the receiver's folder, as
// node::SnapshotStreams carries it between processes.
struct SimCourier final : replica::SnapshotCourier {
  ReplicaSim* sim = nullptr;
  raft::NodeId node = 0;
  void Ship(uint64_t group, raft::Message msg, replica::ImageWriter write) override;
  std::string Received(uint64_t group, const replica::SnapshotTicket& t) override;
  void Consumed(uint64_t group, const replica::SnapshotTicket& t) override;
  void Discard(uint64_t group) override;
};

class ReplicaSim {
 public:
  explicit ReplicaSim(uint64_t seed) : rng_(seed), seed_(seed) {}
  ~ReplicaSim() {
    for (auto& n : nodes_) {
      Down(n);
      std::filesystem::remove_all(n.dir);
    }
  }

  void Start() {
    nodes_.resize(kMaxNodes);
    for (int i = 0; i < kMaxNodes; ++i) {
      couriers_[i].sim = this;
      couriers_[i].node = static_cast<raft::NodeId>(i + 1);
    }
    for (int i = 0; i < kMaxNodes; ++i) {
      SimNode& n = nodes_[static_cast<size_t>(i)];
      n.id = static_cast<raft::NodeId>(i + 1);
      n.dir = std::filesystem::temp_directory_path() /
              ("shoal_replica_sim_" + std::to_string(::getpid()) + "_" + std::to_string(seed_) + "_" +
               std::to_string(i));
      std::filesystem::remove_all(n.dir);
      if (i < kFounders) {
        n.joined = true;
        Up(n, /*bootstrap=*/true);
      }
    }
    want_.voters = {1, 2, 3};
  }

  // Starts the node's process; it opens its replica if it was bootstrapped,
  // has one on disk, or the placement wants one there (as Cluster::Open).
  void Up(SimNode& n, bool bootstrap) {
    n.engine = std::move(storage::Engine::Open({.dir = n.dir.string(), .memory_budget_bytes = 32 << 20}).value());
    n.up = true;
    // Unfinished incoming images stay on disk: transfers resume.
    receivers_[n.id - 1] = std::make_unique<node::ImageReceiver>((n.dir / "streams").string());
    receivers_[n.id - 1]->Recover();
    if (bootstrap || storage::RaftStore::HasState(n.engine.get(), kGroup) || Wanted(n.id)) OpenReplica(n, bootstrap);
  }

  void OpenReplica(SimNode& n, bool bootstrap) {
    n.shard = std::make_unique<kv::Shard>(n.engine.get(), kGroup, 0, storage::kSlotCount, 1024);
    SHOAL_CHECK(n.shard->Load().ok());
    replica::ReplicaOptions ro;
    ro.group = kGroup;
    ro.node_id = n.id;
    ro.compact_entries = 16;  // snapshots happen often
    ro.seed = seed_ * 7919 + restarts_ + 1;
    if (bootstrap) ro.bootstrap_voters = {1, 2, 3};
    if (streamed_) ro.courier = &couriers_[n.id - 1];
    auto r = replica::Replica::Open(n.engine.get(), ro,
                                    std::make_unique<replica::KvStateMachine>(n.shard.get(), &n.limits));
    SHOAL_CHECK(r.ok());
    n.replica = std::move(r).value();
  }

  void Down(SimNode& n) {
    if (!n.up) return;
    n.up = false;
    n.down_since = step_;
    n.replica.reset();  // pending callbacks are dropped: their outcome stays unknown
    receivers_[n.id - 1].reset();
    std::erase_if(images_, [&](const Image& im) { return im.from == n.id; });  // its sends die with it
    n.shard.reset();
    n.engine.reset();
  }

  bool Wanted(raft::NodeId id) const {
    return std::count(want_.voters.begin(), want_.voters.end(), id) + std::count(want_.learners.begin(), want_.learners.end(), id) > 0;
  }

  uint64_t Now() { return ++clock_; }

  void Run(int steps) {
    for (int step = 0; step < steps; ++step) {
      ++step_;
      Faults();
      if (clients_) Clients();
      Deliver();
      Stream();
      if (step_ % 5 == 0) {
        for (auto& n : nodes_) {
          if (n.replica) n.replica->Tick(static_cast<int64_t>(step_) * 10'000);
        }
      }
      DriveAll();
      if (placement_ && step_ % 10 == 0) Placement();
      for (auto& n : nodes_) {
        if (!n.replica || !n.replica->is_leader()) continue;
        uint64_t term = n.replica->raft().term();
        if (term > leader_term_) {
          if (leader_term_ != 0) leader_changes_++;
          leader_term_ = term;
        }
      }
    }
  }

  void Faults() {
    if (!faults_) return;
    std::uniform_int_distribution<int> pct(0, 999);
    if (placement_) PlacementEvents();
    if (partitioned_ == 0 && pct(rng_) < 3) {
      partitioned_ = 1 + rng_() % kMaxNodes;
      heal_at_ = step_ + 100 + rng_() % 400;
    } else if (partitioned_ != 0 && step_ >= heal_at_) {
      partitioned_ = 0;
    }
    if (pct(rng_) < 2) {
      SimNode& n = nodes_[rng_() % kMaxNodes];
      if (n.up && n.joined) {
        Down(n);
        restarts_++;
        restart_at_[n.id] = step_ + 50 + rng_() % 300;
      }
    }
    for (auto& n : nodes_) {
      auto it = restart_at_.find(n.id);
      if (!n.up && !n.lost && !n.removed && it != restart_at_.end() && step_ >= it->second) {
        restart_at_.erase(it);
        Up(n, false);
      }
    }
  }

  bool Connected(raft::NodeId a, raft::NodeId b) const {
    return partitioned_ == 0 || (a != partitioned_ && b != partitioned_);
  }

  SimNode* Node(raft::NodeId id) { return &nodes_[id - 1]; }

  // Each client has at most one operation in flight, sent to the node it
  // believes leads; a refusal's leader hint reroutes it.
  void Clients() {
    for (int c = 0; c < 3; ++c) {
      if (busy_[c]) continue;
      if (rng_() % 4 != 0) continue;
      SimNode* n = Node(believed_leader_[c]);
      if (!n->replica || !Connected(1000, n->id)) {
        believed_leader_[c] = 1 + rng_() % kMaxNodes;
        continue;
      }
      std::string key = "k" + std::to_string(rng_() % 3);
      size_t op = history_.size();
      bool write = rng_() % 2 == 0;
      history_.push_back(Operation{op, write, key, write ? "v" + std::to_string(op) : "", Now(), kNeverReturned});
      if (write) {
        int client = c;
        auto p = n->replica->Propose(SetBatch(key, history_[op].value),
                                     [this, op, client](bool applied, std::string reply) {
                                       if (applied && reply == "+OK\r\n") history_[op].response = Now();
                                       busy_[client] = false;
                                     },
                                     static_cast<int64_t>(step_) * 10'000);
        if (!p.ok()) {
          history_.pop_back();  // refused: never in the log
          Reroute(c, p.leader_hint);
          continue;
        }
        busy_[c] = true;
      } else {
        if (!n->replica->is_leader()) {  // reads go to the leader (routing)
          history_.pop_back();
          Reroute(c, n->replica->raft().lead());
          continue;
        }
        int client = c;
        SimNode* node = n;
        raft::NodeId at = n->id;
        n->replica->ReadIndex([this, op, client, node, at](bool ok) {
          busy_[client] = false;
          if (!ok || !node->up || node->id != at) return;
          std::string raw;
          Status s = node->engine->Get(storage::Cf::kData, storage::DataKey(0, history_[op].key), &raw);
          kv::Value v;
          history_[op].value = s.ok() && kv::DecodeValue(raw, &v) ? std::string(v.payload) : "";
          history_[op].response = Now();
          reads_ok_++;
        }, static_cast<int64_t>(step_) * 10'000);
        busy_[c] = true;
      }
    }
    // A client whose node went down gives up on its operation (unknown outcome).
    for (int c = 0; c < 3; ++c) {
      if (busy_[c] && !Node(believed_leader_[c])->replica) busy_[c] = false;
    }
  }

  void Reroute(int c, raft::NodeId hint) {
    raft::NodeId next = hint != raft::kNoNode ? hint : 1 + rng_() % kMaxNodes;
    if (next != believed_leader_[c]) reroutes_++;
    believed_leader_[c] = next;
  }

  // Takes out of `net` what is due by now.
  template <typename Net>
  auto TakeDue(Net& net) {
    using T = typename Net::value_type;
    std::vector<T> now;
    for (auto it = net.begin(); it != net.end();) {
      if (it->deliver_at <= step_) {
        now.push_back(std::move(*it));
        it = net.erase(it);
      } else {
        ++it;
      }
    }
    return now;
  }

  void Deliver() {
    for (auto& f : TakeDue(net_)) {
      SimNode* to = Node(f.msg.to);
      if (!to->replica || !Connected(f.msg.from, f.msg.to)) continue;
      to->replica->Step(std::move(f.msg));
    }
  }

  // --- streamed snapshots
  struct Image {
    raft::NodeId from;
    uint64_t group;
    raft::Message msg;
    std::unique_ptr<node::ImageSender> sender;
  };
  struct Report {
    raft::NodeId node, to;
    bool failed;
  };

  int64_t NowUs() const { return static_cast<int64_t>(step_) * 10'000; }

  void ShipImage(raft::NodeId from, uint64_t group, raft::Message msg, replica::ImageWriter write) {
    SimNode* n = Node(from);
    replica::SnapshotTicket t;
    replica::SnapshotTicket::Decode(msg.snapshot.data, &t);
    std::string dir = (n->dir / ("out-" + std::to_string(msg.to) + "-" + std::to_string(t.export_id))).string();
    std::filesystem::remove_all(dir);
    node::ImageSenderOptions o;
    o.chunk_bytes = 512;  // images span several chunks
    o.resend_us = 200'000;
    o.give_up_us = 5'000'000;
    auto sender = std::make_unique<node::ImageSender>(group, from, msg.to, t.export_id, dir, o);
    // A newer transfer to the same replica replaces the one under way.
    std::erase_if(images_, [&](const Image& im) { return im.from == from && im.group == group && im.msg.to == msg.to; });
    if (!write(dir).ok() || !sender->Open(NowUs()).ok()) {
      reports_.push_back(Report{from, msg.to, true});
      return;
    }
    images_.push_back(Image{from, group, std::move(msg), std::move(sender)});
  }

  node::ImageReceiver* ReceiverOf(raft::NodeId id) { return receivers_[id - 1].get(); }

  void SendChunk(raft::NodeId a, raft::NodeId b, node::SnapshotChunk c) {
    if (rng_() % 100 < drop_pct_ * 3) return;  // lost (chunks more often than messages)
    (void)a;
    (void)b;
    chunks_.push_back(ChunkInFlight{step_ + 1 + rng_() % 3, std::move(c)});
  }

  void Stream() {
    for (auto& r : reports_) {
      SimNode* n = Node(r.node);
      if (n->replica) n->replica->ReportSnapshot(r.to, r.failed);
    }
    reports_.clear();
    for (auto& f : TakeDue(chunks_)) {
      node::SnapshotChunk& c = f.chunk;
      if (!Connected(c.from, c.to)) continue;
      if (c.kind == node::SnapshotChunk::Kind::kAck) {
        for (auto& im : images_) im.sender->OnAck(c, NowUs());
        continue;
      }
      node::ImageReceiver* r = ReceiverOf(c.to);
      if (r == nullptr) continue;  // the receiver is down
      SendChunk(c.to, c.from, r->Handle(c));
    }
    for (auto it = images_.begin(); it != images_.end();) {
      auto& s = *it->sender;
      for (int k = 0; k < 2 && !s.done() && !s.failed(NowUs()); ++k) {
        auto c = s.Next(NowUs());
        SHOAL_CHECK(c.ok());
        if (!c->has_value()) break;
        SendChunk(it->from, it->msg.to, std::move(**c));
      }
      if (s.done() || s.failed(NowUs())) {
        if (s.done()) {
          images_streamed_++;
          std::vector<raft::Message> out{it->msg};
          Send(out);
        }
        reports_.push_back(Report{it->from, it->msg.to, !s.done()});
        std::filesystem::remove_all(s.dir());
        it = images_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void Send(std::vector<raft::Message>& msgs) {
    for (auto& m : msgs) {
      if (m.to < 1 || m.to > kMaxNodes) continue;
      if (rng_() % 100 < drop_pct_) continue;  // lost
      net_.push_back(InFlight{step_ + 1 + rng_() % 3, std::move(m)});
    }
    msgs.clear();
  }

  void DriveAll() {
    for (int round = 0; round < 4; ++round) {
      for (auto& n : nodes_) {
        if (!n.replica) continue;
        auto batch = n.engine->NewBatch();
        std::vector<raft::Message> out;
        bool needs_sync = false;
        if (!n.replica->BeginReady(*batch, &out, &needs_sync)) continue;
        Send(out);
        if (batch->Count() > 0) SHOAL_CHECK(n.engine->Write(*batch).ok());
        n.replica->ApplyReady(static_cast<int64_t>(step_) * 10'000);
        n.replica->FinishReady(&out, static_cast<int64_t>(step_) * 10'000);
        Send(out);
      }
    }
  }

  // Heals everything, lets the group settle, and reads every key on the leader.
  void Settle() {
    faults_ = false;
    drop_pct_ = 0;
    partitioned_ = 0;
    for (auto& n : nodes_) {
      if (!n.up && n.joined && !n.lost && !n.removed) Up(n, false);
    }
    restart_at_.clear();
    Run(placement_ ? 3000 : 400);
    clients_ = false;
    Run(placement_ ? 1500 : 400);
  }

  SimNode& Leader() {
    SimNode* best = nullptr;
    for (auto& n : nodes_) {
      if (n.replica && n.replica->is_leader() && (best == nullptr || n.replica->raft().term() > best->replica->raft().term())) {
        best = &n;
      }
    }
    return best != nullptr ? *best : nodes_[0];
  }

  // --- placement: the real planner and membership steps drive the group
  // while nodes join, drain, restart and die for good.

  void PlacementEvents() {
    if (step_ == join_at_[0] || step_ == join_at_[1]) {
      SimNode& n = nodes_[step_ == join_at_[0] ? 3 : 4];
      n.joined = true;
      Up(n, false);
      events_.push_back("join " + std::to_string(n.id));
    }
    if (step_ == loss_at_) {
      // A voter dies for good (only one, so a majority always survives).
      raft::NodeId victim = want_.voters[rng_() % want_.voters.size()];
      SimNode& n = *Node(victim);
      Down(n);
      n.lost = true;
      std::filesystem::remove_all(n.dir);
      events_.push_back("lose " + std::to_string(n.id));
    }
    if (step_ == outage_at_) {
      // A voter is down longer than down-after, then comes back with its
      // stale replica, which must retire itself.
      raft::NodeId victim = want_.voters[rng_() % want_.voters.size()];
      SimNode& n = *Node(victim);
      if (n.up && !n.lost) {
        Down(n);
        restart_at_[n.id] = step_ + kDownAfterSteps + 300;
        events_.push_back("outage " + std::to_string(n.id));
      }
    }
    if (step_ == drain_at_) {
      std::vector<raft::NodeId> candidates;
      for (auto& n : nodes_) {
        if (n.joined && !n.lost && !n.removed) candidates.push_back(n.id);
      }
      if (candidates.size() >= 4) {
        SimNode& n = *Node(candidates[rng_() % candidates.size()]);
        n.draining = true;
        events_.push_back("drain " + std::to_string(n.id));
      }
    }
  }

  cluster::ClusterView View() {
    cluster::ClusterView view;
    for (auto& n : nodes_) {
      if (!n.joined) continue;
      cluster::NodeState st = cluster::NodeState::kUp;
      if (n.removed) {
        st = cluster::NodeState::kRemoved;
      } else if (n.draining) {
        st = cluster::NodeState::kDraining;
      } else if (!n.up && step_ - n.down_since > kDownAfterSteps) {
        st = cluster::NodeState::kDown;
      }
      view.nodes.push_back({n.id, st});
    }
    cluster::ShardView sv;
    sv.id = kGroup;
    sv.want = want_;
    sv.preferred_leader = preferred_;
    SimNode& l = Leader();
    if (l.replica && l.replica->is_leader()) {
      raft::ConfState cs = l.replica->raft().tracker().conf_state();
      sv.reported = true;
      sv.actual.voters = cs.voters;
      sv.actual.voters.insert(sv.actual.voters.end(), cs.voters_outgoing.begin(), cs.voters_outgoing.end());
      std::sort(sv.actual.voters.begin(), sv.actual.voters.end());
      sv.actual.voters.erase(std::unique(sv.actual.voters.begin(), sv.actual.voters.end()), sv.actual.voters.end());
      sv.actual.learners = cs.learners;
      sv.joint = !cs.voters_outgoing.empty();
    }
    view.shards.push_back(sv);
    return view;
  }

  void Placement() {
    // The placement driver: plan, and record the plan as the metadata would.
    for (const cluster::Move& m : cluster::Plan(View(), {})) {
      if (m.kind == cluster::MoveKind::kRemoveNode) {
        SimNode& n = *Node(m.nodes[0]);
        n.removed = true;  // it runs on until its operator stops it; its replica retires itself
        events_.push_back("removed " + std::to_string(n.id));
        continue;
      }
      if (m.shard != kGroup) continue;
      if (m.target != want_) moves_++;
      want_ = m.target;
      preferred_ = m.leader;
    }
    // The group's leader carries it out.
    SimNode& l = Leader();
    if (l.replica && l.replica->is_leader()) {
      const raft::Raft& raft = l.replica->raft();
      cluster::MembershipStep step = cluster::NextMembershipStep(want_, preferred_, cluster::GroupStateOf(raft));
      if (step.kind == cluster::MembershipStep::Kind::kConfChange) {
        (void)l.replica->ProposeConfChange(step.change);
      } else if (step.kind == cluster::MembershipStep::Kind::kTransferLeader) {
        l.replica->TransferLeader(step.transfer_to);
      }
      // Replicas the metadata no longer wants, and the leader no longer
      // counts, delete themselves (Cluster::RetireRemoved).
      raft::ConfState cs = raft.tracker().conf_state();
      std::vector<raft::NodeId> voters = cs.voters;
      voters.insert(voters.end(), cs.voters_outgoing.begin(), cs.voters_outgoing.end());
      for (auto& n : nodes_) {
        if (!n.replica) continue;
        if (!cluster::MayRetire(n.id, Wanted(n.id), l.id, cluster::Membership{voters, cs.learners},
                                !cs.voters_outgoing.empty(), n.replica->HeardFromLeaderWithin(kRetireQuietTicks))) {
          continue;
        }
        auto batch = n.engine->NewBatch();
        SHOAL_CHECK(n.replica->StageDestroy(*batch).ok());
        SHOAL_CHECK(n.engine->Write(*batch).ok());
        n.replica.reset();
        n.shard.reset();
        retired_++;
      }
    }
    // Invariant: a voter the leader counts keeps its replica while its node
    // runs (it was never retired too early).
    if (l.replica && l.replica->is_leader()) {
      raft::ConfState cs = l.replica->raft().tracker().conf_state();
      for (auto& n : nodes_) {
        bool voter = std::count(cs.voters.begin(), cs.voters.end(), n.id) +
                         std::count(cs.voters_outgoing.begin(), cs.voters_outgoing.end(), n.id) > 0;
        if (voter && n.up && !n.replica) {
          early_retire_++;
          events_.push_back("voter " + std::to_string(n.id) + " without its replica at step " + std::to_string(step_));
        }
      }
    }
    // Nodes the metadata places the group on open an empty replica.
    for (auto& n : nodes_) {
      if (n.up && !n.replica && Wanted(n.id)) OpenReplica(n, false);
    }
  }

  bool placement_ = false;
  cluster::Membership want_;
  raft::NodeId preferred_ = 0;
  uint64_t join_at_[2] = {0, 0}, loss_at_ = 0, drain_at_ = 0, outage_at_ = 0;
  std::vector<std::string> events_;
  int moves_ = 0, retired_ = 0, early_retire_ = 0;

  std::string ValueOn(SimNode& n, const std::string& key) {
    std::string raw;
    Status s = n.engine->Get(storage::Cf::kData, storage::DataKey(0, key), &raw);
    kv::Value v;
    return s.ok() && kv::DecodeValue(raw, &v) ? std::string(v.payload) : "";
  }

  std::mt19937_64 rng_;
  uint64_t seed_;
  uint64_t step_ = 0, clock_ = 0;
  std::vector<SimNode> nodes_;
  std::deque<InFlight> net_;
  bool faults_ = true;
  bool clients_ = true;
  uint64_t leader_term_ = 0;
  uint64_t drop_pct_ = 3;
  bool streamed_ = false;  // snapshots travel through couriers in chunks
  SimCourier couriers_[kMaxNodes];
  std::unique_ptr<node::ImageReceiver> receivers_[kMaxNodes];
  std::vector<Image> images_;
  std::vector<ChunkInFlight> chunks_;
  std::vector<Report> reports_;
  int images_streamed_ = 0;
  raft::NodeId partitioned_ = 0;
  uint64_t heal_at_ = 0;
  std::map<raft::NodeId, uint64_t> restart_at_;
  std::vector<Operation> history_;
  bool busy_[3] = {false, false, false};
  raft::NodeId believed_leader_[3] = {1, 2, 3};
  int restarts_ = 0, reroutes_ = 0, leader_changes_ = 0, reads_ok_ = 0;
};

void SimCourier::Ship(uint64_t group, raft::Message msg, replica::ImageWriter write) {
  sim->ShipImage(node, group, std::move(msg), std::move(write));
}

std::string SimCourier::Received(uint64_t group, const replica::SnapshotTicket& t) {
  node::ImageReceiver* r = sim->ReceiverOf(node);
  return r == nullptr ? "" : r->Complete(group, t.from, t.export_id);
}

void SimCourier::Consumed(uint64_t group, const replica::SnapshotTicket& t) {
  if (node::ImageReceiver* r = sim->ReceiverOf(node)) r->Discard(group, t.from, t.export_id);
}

void SimCourier::Discard(uint64_t group) {
  if (node::ImageReceiver* r = sim->ReceiverOf(node)) r->Discard(group);
}

TEST(ReplicaSim, SeedsAreLinearizableAndConverge) {
  int total_restarts = 0, total_reroutes = 0, total_changes = 0, acked = 0, streamed = 0;
  uint64_t snapshots_seen = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    ReplicaSim sim(seed);
    sim.streamed_ = seed % 2 == 0;  // half the seeds stream their snapshots in chunks
    sim.Start();
    sim.Run(3000);
    sim.Settle();
    // Converged: every replica has applied the same index and holds the same values.
    uint64_t applied = sim.nodes_[0].replica->state_machine().applied_index();
    for (auto& n : sim.nodes_) {
      if (!n.joined) continue;
      EXPECT_EQ(n.replica->state_machine().applied_index(), applied) << "seed " << seed << " node " << n.id;
      for (int k = 0; k < 3; ++k) {
        std::string key = "k" + std::to_string(k);
        EXPECT_EQ(sim.ValueOn(n, key), sim.ValueOn(sim.nodes_[0], key)) << "seed " << seed << " " << key;
      }
      if (n.replica->store().first_index() > 2) snapshots_seen++;
    }
    // Final reads (after every acknowledged write) join the history.
    for (int k = 0; k < 3; ++k) {
      std::string key = "k" + std::to_string(k);
      uint64_t t = sim.Now();
      sim.history_.push_back(Operation{sim.history_.size(), false, key, sim.ValueOn(sim.Leader(), key), t, sim.Now()});
    }
    auto result = check_linearizable(sim.history_);
    EXPECT_TRUE(result.ok) << "seed " << seed << ": " << result.key << "\n" << result.explain;
    for (const auto& op : sim.history_) acked += op.is_write && op.response != kNeverReturned;
    total_restarts += sim.restarts_;
    total_reroutes += sim.reroutes_;
    total_changes += sim.leader_changes_;
    streamed += sim.images_streamed_;
  }
  EXPECT_GT(streamed, 0);  // snapshots went through the courier too
  // The faults really happened: restarts, leader changes clients had to follow, compaction.
  EXPECT_GT(total_restarts, 5);
  EXPECT_GT(total_changes, 5);
  EXPECT_GT(total_reroutes, 5);
  EXPECT_GT(acked, 500);
  EXPECT_GT(snapshots_seen, 0u);
  std::printf("replica sim: %d acknowledged writes, %d restarts, %d leader changes, %d reroutes, %d snapshots streamed\n",
              acked, total_restarts, total_changes, total_reroutes, streamed);
}

}  // namespace
}  // namespace shoal::sim

namespace shoal::sim {
namespace {

// The placement driver and the leaders' membership steps under the same
// faults, while nodes join, a voter dies for good and a node drains: no
// acknowledged write is lost, the history stays linearizable, and the group
// ends on three voters on live nodes, every member holding the same data and
// every removed replica's data deleted.
TEST(ReplicaSim, PlacementMovesUnderFaultsLoseNothing) {
  int moves = 0, retired = 0, acked = 0, streamed = 0;
  for (uint64_t seed = 101; seed <= 108; ++seed) {
    ReplicaSim sim(seed);
    sim.streamed_ = seed % 4 != 3;
    sim.placement_ = true;
    sim.join_at_[0] = 200 + seed * 37 % 600;
    sim.join_at_[1] = sim.join_at_[0] + 300 + seed * 53 % 600;
    if (seed % 2 == 0) sim.loss_at_ = 1800 + seed * 71 % 600;
    if (seed % 4 != 1) sim.drain_at_ = 2600 + seed * 13 % 400;
    if (seed % 2 == 1) sim.outage_at_ = 1200 + seed * 29 % 500;
    sim.Start();
    sim.Run(4000);
    sim.Settle();
    std::string events;
    for (const auto& e : sim.events_) events += e + "; ";
    SCOPED_TRACE("seed " + std::to_string(seed) + " events: " + events);
    SimNode& l = sim.Leader();
    ASSERT_TRUE(l.replica && l.replica->is_leader());
    raft::ConfState cs = l.replica->raft().tracker().conf_state();
    EXPECT_TRUE(cs.voters_outgoing.empty());
    EXPECT_EQ(cs.voters, sim.want_.voters);
    EXPECT_EQ(cs.learners, sim.want_.learners);
    EXPECT_EQ(cs.voters.size(), 3u);
    EXPECT_EQ(sim.early_retire_, 0);
    uint64_t applied = l.replica->state_machine().applied_index();
    for (auto& n : sim.nodes_) {
      bool member = std::count(cs.voters.begin(), cs.voters.end(), n.id) + std::count(cs.learners.begin(), cs.learners.end(), n.id) > 0;
      if (member) {
        EXPECT_TRUE(n.up && !n.lost && !n.removed && !n.draining) << "node " << n.id;
        ASSERT_TRUE(n.replica) << "node " << n.id;
        EXPECT_EQ(n.replica->state_machine().applied_index(), applied) << "node " << n.id;
        for (int k = 0; k < 3; ++k) {
          std::string key = "k" + std::to_string(k);
          EXPECT_EQ(sim.ValueOn(n, key), sim.ValueOn(l, key)) << "node " << n.id << " " << key;
        }
      } else if (n.up) {
        EXPECT_FALSE(n.replica) << "node " << n.id << " kept a replica it no longer has";
        for (int k = 0; k < 3; ++k) EXPECT_EQ(sim.ValueOn(n, "k" + std::to_string(k)), "") << "node " << n.id;
      }
    }
    for (int k = 0; k < 3; ++k) {
      std::string key = "k" + std::to_string(k);
      uint64_t t = sim.Now();
      sim.history_.push_back(Operation{sim.history_.size(), false, key, sim.ValueOn(l, key), t, sim.Now()});
    }
    auto result = check_linearizable(sim.history_);
    EXPECT_TRUE(result.ok) << result.key << "\n" << result.explain;
    for (const auto& op : sim.history_) acked += op.is_write && op.response != kNeverReturned;
    moves += sim.moves_;
    retired += sim.retired_;
    streamed += sim.images_streamed_;
  }
  EXPECT_GT(streamed, 4);  // new members got their data in chunks
  EXPECT_GT(moves, 8);
  EXPECT_GT(retired, 4);
  EXPECT_GT(acked, 300);
  std::printf("placement sim: %d membership moves, %d replicas retired, %d snapshots streamed, %d acknowledged writes\n",
              moves, retired, streamed, acked);
}

}  // namespace
}  // namespace shoal::sim
