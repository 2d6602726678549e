// A deterministic simulation of a Raft group: N replicas of the real
// library over a simulated network (delay, loss, duplication, reordering,
// partitions, asymmetric links), simulated storage that loses whatever the
// Ready contract has not declared durable, crashes and restarts, membership
// changes and leadership transfers, and a client workload of writes and
// linearizable reads. One seed fixes the whole run. Single-threaded.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include "raft/raw_node.h"
#include "raft/rng.h"
#include "sim/linearizability.h"

namespace shoal::sim {

using raft::Index;
using raft::NodeId;
using raft::Term;

// Knobs of one run. Everything random is drawn from `seed`.
struct SimOptions {
  uint64_t seed = 1;
  // Ticks of faults and load, then ticks allowed for recovery (liveness bound).
  int fault_ticks = 300;
  int liveness_ticks = 120;
  bool trace = false;  // print every event to stdout
  bool unsafe_commit_previous_term = false;  // mutation test knob
  // Mutation test knob: break the Ready contract by sending votes and
  // acknowledgements before the state they promise is durable.
  bool unsafe_send_before_persist = false;
};

// What a run found. `failure` is empty when every checker passed.
struct SimResult {
  std::string failure;
  uint64_t trace_hash = 0;
  uint64_t events = 0;
  uint64_t ops_checked = 0;
  uint64_t max_commit = 0;
  bool ok() const { return failure.empty(); }
};

// Runs one seed to completion.
SimResult run_simulation(const SimOptions& options);

// Internal: the simulated cluster. Exposed for the harness's own helpers.
class SimCluster {
 public:
  explicit SimCluster(const SimOptions& options);
  SimResult run();

 private:
  struct PendingWrite {
    uint64_t op = 0;
    Index index = 0;
    Term term = 0;
  };
  struct PendingRead {
    uint64_t op = 0;
    Index index = 0;
    bool have_index = false;
  };
  struct Node {
    NodeId id = 0;
    bool up = false;
    bool removed = false;
    bool was_member = false;  // appeared in the latest configuration once
    // Clock drift: this node's timer misses one tick in every skip_period
    // (0: never), so no two clocks differ by more than one tick per
    // election timeout, within Config::lease_drift_margin_ticks.
    uint64_t skip_period = 0;
    uint64_t skip_phase = 0;
    std::unique_ptr<raft::MemoryStorage> storage;  // the durable state
    std::unique_ptr<raft::RawNode> raft;
    raft::Config config;
    // The Ready being persisted, and when its write becomes durable.
    std::optional<raft::Ready> persisting;
    uint64_t persist_done_at = 0;
    // State machine.
    std::map<std::string, std::string> kv;
    Index applied = 0;
    uint64_t applied_hash = 0;
    raft::ConfState conf;
    uint64_t checked_commit = 0;
    std::map<uint64_t, PendingWrite> writes;  // by op id
    std::map<std::string, PendingRead> reads;  // by context
  };
  struct Flight {
    uint64_t at = 0;
    uint64_t seq = 0;
    raft::Message msg;
    bool operator>(const Flight& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  struct Client {
    std::optional<uint64_t> op;  // index into ops_ (== op id)
    NodeId target = 1;
    uint64_t deadline = 0;
    uint64_t next_try = 0;
    bool submitted = false;      // write accepted / read sent
    uint64_t submitted_at = 0;
    int attempt = 0;
  };

  // sim_cluster.cc: nodes, storage, network.
  void start_node(Node& n);
  void crash_node(Node& n);
  void send(const raft::Message& m);
  void deliver_due();
  void drop(const raft::Message& m, bool unreachable);
  void process_ready(Node& n);
  void finish_persist(Node& n);
  void apply_entry(Node& n, const raft::Entry& e);
  void apply_snapshot(Node& n, const raft::Snapshot& s);
  void maybe_compact(Node& n);
  void serve_reads(Node& n);
  void step_time();
  Node* leader();
  std::string describe_nodes() const;
  void record(const char* what, uint64_t a = 0, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0);
  void fail(const std::string& why);

  // sim_workload.cc: clients, faults, membership, liveness.
  void client_step(Client& c);
  void start_op(Client& c);
  void submit_op(Client& c);
  Client* client_of(uint64_t op);
  NodeId random_node();
  raft::ConfState latest_conf() const;
  void retire_removed_nodes();
  void note_conf(Index index, const raft::ConfState& cs);
  void complete_op(uint64_t op, const std::string& read_value);
  void abandon_op(uint64_t op, bool maybe_applied);
  void inject_fault();
  void partition();
  void change_network();
  void membership_fault();
  void heal_all();
  void isolate(NodeId id);
  void cut_off(NodeId id);
  void choose_swarm();
  void rejoin_due();
  void liveness_step();

  // sim_checks.cc: safety checkers.
  void check_step();
  void check_leaders(Node& n);
  void check_commits(Node& n);
  void check_persisted(Node& n, const std::vector<raft::Entry>& ents);
  void check_applied(Node& n, const raft::Entry& e);
  void check_final();
  Index acked_index() const;
  bool caught_up() const;

  SimOptions options_;
  raft::SplitMix64 rng_;
  uint64_t now_ = 0;  // time units; one tick = kUnitsPerTick units
  uint64_t seq_ = 0;
  uint64_t event_no_ = 0;
  uint64_t trace_hash_ = 0xcbf29ce484222325ULL;
  std::string failure_;
  std::vector<Node> nodes_;  // index = id - 1
  std::vector<NodeId> spare_ids_;
  std::priority_queue<Flight, std::vector<Flight>, std::greater<>> net_;
  std::set<std::pair<NodeId, NodeId>> blocked_;  // directed links that drop
  int loss_pct_ = 0;
  int dup_pct_ = 0;
  int slow_pct_ = 0;
  bool faults_on_ = true;
  NodeId isolate_next_ = 0;  // leader to cut off after this step's checks
  std::set<Term> first_commit_terms_;  // terms whose leader has committed
  std::multimap<uint64_t, NodeId> rejoins_;  // cut-off nodes and when they return
  // Swarm testing: each seed enables a random subset of faults at random
  // intensities, so that some seeds concentrate on one kind of trouble.
  struct Swarm {
    uint64_t fault_every_ticks = 6;     // mean ticks between random faults
    uint32_t fault_mask = ~0U;          // enabled kinds in inject_fault()
    uint64_t cut_on_election = 0;       // 1 in N new leaders is cut off (0: never)
    uint64_t cut_on_first_commit = 0;   // ... 1 in N first commits of a term
    uint64_t cut_on_commit = 0;         // ... 1 in N other leader commits
    bool cut_by_crash = false;          // cut off = crash (and restart later)
    int append_loss_pct = 0;            // extra loss of kApp only: logs diverge
  };
  Swarm swarm_;
  std::vector<Client> clients_;
  std::vector<Operation> ops_;
  std::set<uint64_t> dead_ops_;  // proposals known to have had no effect

  // Checker state.
  std::map<Term, NodeId> leader_of_term_;
  std::map<Index, Term> committed_terms_;
  std::map<Index, Term> committed_in_term_;  // the term each index was committed in
  Index global_commit_ = 0;
  std::map<std::pair<Index, Term>, std::pair<uint64_t, Term>> entry_registry_;
  std::vector<uint64_t> history_hash_{0, 0};  // index 1: the bootstrap snapshot  // rolling hash of the applied sequence
  std::map<Index, uint64_t> history_ops_;   // op id applied at each index
  std::set<uint64_t> applied_ops_;
  std::set<uint64_t> acked_ops_;

  raft::ConfState latest_conf_;
  Index latest_conf_index_ = 0;

  // Liveness.
  uint64_t heal_time_ = 0;
  std::set<std::pair<NodeId, Term>> marker_proposed_;
  bool live_ = false;
  uint64_t marker_seen_ = 0;
};

}  // namespace shoal::sim
