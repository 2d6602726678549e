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

#include "kv/commands.h"
#include "replica/replica.h"
#include "sim/linearizability.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace shoal::sim {
namespace {

constexpr uint64_t kGroup = 3;
constexpr int kNodes = 3;

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
  std::unique_ptr<replica::Replica> replica;
  bool up = false;
};

struct InFlight {
  uint64_t deliver_at;
  raft::Message msg;
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
    nodes_.resize(kNodes);
    for (int i = 0; i < kNodes; ++i) {
      SimNode& n = nodes_[static_cast<size_t>(i)];
      n.id = static_cast<raft::NodeId>(i + 1);
      n.dir = std::filesystem::temp_directory_path() /
              ("shoal_replica_sim_" + std::to_string(::getpid()) + "_" + std::to_string(seed_) + "_" +
               std::to_string(i));
      std::filesystem::remove_all(n.dir);
      Up(n, /*bootstrap=*/true);
    }
  }

  void Up(SimNode& n, bool bootstrap) {
    n.engine = std::move(storage::Engine::Open({.dir = n.dir.string(), .memory_budget_bytes = 32 << 20}).value());
    n.shard = std::make_unique<kv::Shard>(n.engine.get(), kGroup, 0, storage::kSlotCount, 1024);
    SHOAL_CHECK(n.shard->Load().ok());
    replica::ReplicaOptions ro;
    ro.group = kGroup;
    ro.node_id = n.id;
    ro.compact_entries = 16;  // snapshots happen often
    ro.seed = seed_ * 7919 + restarts_ + 1;
    if (bootstrap) ro.bootstrap_voters = {1, 2, 3};
    auto r = replica::Replica::Open(n.engine.get(), ro,
                                    std::make_unique<replica::KvStateMachine>(n.shard.get(), &n.limits));
    SHOAL_CHECK(r.ok());
    n.replica = std::move(r).value();
    n.up = true;
  }

  void Down(SimNode& n) {
    if (!n.up) return;
    n.up = false;
    n.replica.reset();  // pending callbacks are dropped: their outcome stays unknown
    n.shard.reset();
    n.engine.reset();
  }

  uint64_t Now() { return ++clock_; }

  void Run(int steps) {
    for (int step = 0; step < steps; ++step) {
      ++step_;
      Faults();
      if (clients_) Clients();
      Deliver();
      if (step_ % 5 == 0) {
        for (auto& n : nodes_) {
          if (n.up) n.replica->Tick(static_cast<int64_t>(step_) * 10'000);
        }
      }
      DriveAll();
      for (auto& n : nodes_) {
        if (!n.up || !n.replica->is_leader()) continue;
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
    if (partitioned_ == 0 && pct(rng_) < 3) {
      partitioned_ = 1 + rng_() % kNodes;
      heal_at_ = step_ + 100 + rng_() % 400;
    } else if (partitioned_ != 0 && step_ >= heal_at_) {
      partitioned_ = 0;
    }
    if (pct(rng_) < 2) {
      SimNode& n = nodes_[rng_() % kNodes];
      if (n.up) {
        Down(n);
        restarts_++;
        restart_at_[n.id] = step_ + 50 + rng_() % 300;
      }
    }
    for (auto& n : nodes_) {
      auto it = restart_at_.find(n.id);
      if (!n.up && it != restart_at_.end() && step_ >= it->second) {
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
      if (!n->up || !Connected(1000, n->id)) {
        believed_leader_[c] = 1 + rng_() % kNodes;
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
      if (busy_[c] && !Node(believed_leader_[c])->up) busy_[c] = false;
    }
  }

  void Reroute(int c, raft::NodeId hint) {
    raft::NodeId next = hint != raft::kNoNode ? hint : 1 + rng_() % kNodes;
    if (next != believed_leader_[c]) reroutes_++;
    believed_leader_[c] = next;
  }

  void Deliver() {
    std::vector<InFlight> now;
    for (auto it = net_.begin(); it != net_.end();) {
      if (it->deliver_at <= step_) {
        now.push_back(std::move(*it));
        it = net_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& f : now) {
      SimNode* to = Node(f.msg.to);
      if (!to->up || !Connected(f.msg.from, f.msg.to)) continue;
      to->replica->Step(std::move(f.msg));
    }
  }

  void Send(std::vector<raft::Message>& msgs) {
    for (auto& m : msgs) {
      if (m.to < 1 || m.to > kNodes) continue;
      if (rng_() % 100 < drop_pct_) continue;  // lost
      net_.push_back(InFlight{step_ + 1 + rng_() % 3, std::move(m)});
    }
    msgs.clear();
  }

  void DriveAll() {
    for (int round = 0; round < 4; ++round) {
      for (auto& n : nodes_) {
        if (!n.up) continue;
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
      if (!n.up) Up(n, false);
    }
    restart_at_.clear();
    Run(400);
    clients_ = false;
    Run(400);
  }

  SimNode& Leader() {
    for (auto& n : nodes_) {
      if (n.replica->is_leader()) return n;
    }
    return nodes_[0];
  }

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
  raft::NodeId partitioned_ = 0;
  uint64_t heal_at_ = 0;
  std::map<raft::NodeId, uint64_t> restart_at_;
  std::vector<Operation> history_;
  bool busy_[3] = {false, false, false};
  raft::NodeId believed_leader_[3] = {1, 2, 3};
  int restarts_ = 0, reroutes_ = 0, leader_changes_ = 0, reads_ok_ = 0;
};

TEST(ReplicaSim, SeedsAreLinearizableAndConverge) {
  int total_restarts = 0, total_reroutes = 0, total_changes = 0, acked = 0;
  uint64_t snapshots_seen = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    ReplicaSim sim(seed);
    sim.Start();
    sim.Run(3000);
    sim.Settle();
    // Converged: every replica has applied the same index and holds the same values.
    uint64_t applied = sim.nodes_[0].replica->state_machine().applied_index();
    for (auto& n : sim.nodes_) {
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
  }
  // The faults really happened: restarts, leader changes clients had to follow, compaction.
  EXPECT_GT(total_restarts, 5);
  EXPECT_GT(total_changes, 5);
  EXPECT_GT(total_reroutes, 5);
  EXPECT_GT(acked, 500);
  EXPECT_GT(snapshots_seen, 0u);
  std::printf("replica sim: %d acknowledged writes, %d restarts, %d leader changes, %d reroutes\n", acked,
              total_restarts, total_changes, total_reroutes);
}

}  // namespace
}  // namespace shoal::sim
