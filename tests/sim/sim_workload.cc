// The simulator's client workload, fault injection, membership changes and
// the liveness phase.
#include <algorithm>

#include "sim/sim_cluster.h"
#include "sim/sim_internal.h"

namespace shoal::sim {

NodeId SimCluster::random_node() {
  return static_cast<NodeId>(1 + rng_.uniform(nodes_.size()));
}

SimCluster::Client* SimCluster::client_of(uint64_t op) {
  for (Client& c : clients_) {
    if (c.op == op) return &c;
  }
  return nullptr;
}

void SimCluster::start_op(Client& c) {
  const uint64_t id = ops_.size();
  Operation op;
  op.id = id;
  op.is_write = rng_.chance(1, 2);
  op.key = kKeys[rng_.uniform(std::size(kKeys))];
  if (op.is_write) op.value = "v" + std::to_string(id);
  op.invoke = ++event_no_;
  ops_.push_back(op);
  c.op = id;
  c.deadline = now_ + kOpTimeoutTicks * kUnitsPerTick;
  c.next_try = now_;
  c.submitted = false;
  c.attempt = 0;
  record("invoke", id, op.is_write ? 1 : 0);
}

void SimCluster::complete_op(uint64_t id, const std::string& read_value) {
  Operation& op = ops_[id];
  if (op.response != kNeverReturned || dead_ops_.count(id) != 0) return;
  Client* c = client_of(id);
  if (c == nullptr) return;  // the client already gave up
  if (!op.is_write) op.value = read_value;
  op.response = ++event_no_;
  if (op.is_write) acked_ops_.insert(id);
  c->op.reset();
  record("respond", id, op.is_write ? 1 : 0);
}

void SimCluster::abandon_op(uint64_t id, bool maybe_applied) {
  const Operation& op = ops_[id];
  if (op.response != kNeverReturned) return;
  record("abandon", id, maybe_applied ? 1 : 0);
  Client* c = client_of(id);
  if (c == nullptr) return;
  if (op.is_write && maybe_applied) {
    c->op.reset();  // outcome unknown: it stays in the history as such
    return;
  }
  c->submitted = false;  // had no effect (or is a read): the client retries
}

void SimCluster::submit_op(Client& c) {
  Operation& op = ops_[*c.op];
  Node& n = nodes_[c.target - 1];
  c.next_try = now_ + (2 + rng_.uniform(6)) * kUnitsPerTick / 2;
  if (!n.up) {
    c.target = random_node();
    return;
  }
  if (op.is_write) {
    raft::Proposal p = n.raft->propose(encode_write({op.id, op.key, op.value}));
    if (!p.ok()) {
      c.target = p.leader_hint != raft::kNoNode ? p.leader_hint : random_node();
      return;
    }
    n.writes[op.id] = PendingWrite{op.id, p.index, p.term};
  } else {
    // Reads go to any replica: followers ask the leader for a read index.
    const std::string ctx = "r" + std::to_string(op.id) + "." + std::to_string(++c.attempt);
    n.reads[ctx] = PendingRead{op.id, 0, false};
    n.raft->read_index(ctx);
  }
  c.submitted = true;
  c.submitted_at = now_;
  record("submit", op.id, c.target);
}

void SimCluster::client_step(Client& c) {
  if (!c.op) {
    // Once liveness is shown the load stops so that the group quiesces.
    if (!live_ && ops_.size() < kMaxOps && rng_.chance(1, 25)) start_op(c);
    return;
  }
  Operation& op = ops_[*c.op];
  if (now_ >= c.deadline) {
    const uint64_t id = *c.op;
    c.op.reset();
    if (op.is_write && c.submitted) {
      record("timeout", id, 1);  // outcome unknown: stays in the history
    } else {
      dead_ops_.insert(id);
      record("timeout", id, 0);
    }
    return;
  }
  if (c.submitted && !op.is_write && now_ >= c.submitted_at + kReadRetryTicks * kUnitsPerTick) {
    c.submitted = false;  // the read index never came back: ask someone else
    c.target = random_node();
  }
  if (!c.submitted && now_ >= c.next_try) submit_op(c);
}

raft::ConfState SimCluster::latest_conf() const { return latest_conf_; }

void SimCluster::note_conf(Index index, const raft::ConfState& cs) {
  // The configuration at an index is the same everywhere (state machine
  // safety), so the one at the highest applied index is the newest.
  if (index < latest_conf_index_) return;
  latest_conf_index_ = index;
  latest_conf_ = cs;
}

void SimCluster::retire_removed_nodes() {
  const raft::ConfState cs = latest_conf();
  if (cs.voters.empty()) return;
  auto in = [](const std::vector<NodeId>& v, NodeId id) {
    return std::find(v.begin(), v.end(), id) != v.end();
  };
  for (Node& n : nodes_) {
    if (n.removed) continue;
    const bool member = in(cs.voters, n.id) || in(cs.voters_outgoing, n.id) || in(cs.learners, n.id);
    if (member) n.was_member = true;
    if (n.was_member && !member) {
      // An operator shuts a removed replica down once its removal applied.
      crash_node(n);
      n.removed = true;
      record("retire", n.id);
    }
  }
}

void SimCluster::membership_fault() {
  Node* l = leader();
  if (l == nullptr) return;
  const raft::ConfState cs = l->raft->status().conf_state;
  raft::ConfChange cc;
  const uint64_t kind = rng_.uniform(4);
  if (kind == 0 && !spare_ids_.empty()) {
    cc.changes.push_back({raft::ConfChangeType::kAddLearner, spare_ids_.back()});
  } else if (kind == 1 && !cs.learners.empty()) {
    cc.changes.push_back({raft::ConfChangeType::kAddVoter, cs.learners[rng_.uniform(cs.learners.size())]});
  } else if (kind == 2 && cs.voters.size() > 2) {
    cc.changes.push_back({raft::ConfChangeType::kRemoveNode, cs.voters[rng_.uniform(cs.voters.size())]});
  } else if (kind == 3 && !cs.learners.empty() && cs.voters.size() > 2) {
    // Two changes at once: promote a learner and remove a voter (joint).
    cc.changes.push_back({raft::ConfChangeType::kAddVoter, cs.learners[0]});
    cc.changes.push_back({raft::ConfChangeType::kRemoveNode, cs.voters[rng_.uniform(cs.voters.size())]});
  } else {
    return;
  }
  raft::Proposal p = l->raft->propose_conf_change(cc);
  record("conf-propose", l->id, cc.changes[0].node, static_cast<uint64_t>(cc.changes[0].type), p.ok() ? 1 : 0);
  if (p.ok() && kind == 0) {
    Node& fresh = nodes_[spare_ids_.back() - 1];
    spare_ids_.pop_back();
    start_node(fresh);
  }
}

void SimCluster::inject_fault() {
  const uint64_t r = rng_.uniform(100);
  const NodeId id = random_node();
  Node& n = nodes_[id - 1];
  auto on = [this](uint32_t kind) { return (swarm_.fault_mask & kind) != 0; };
  if (r < 10) {
    if (on(kFaultCrash)) crash_node(n);
  } else if (r < 30) {
    std::vector<Node*> down;
    for (Node& d : nodes_) {
      const bool unused = std::find(spare_ids_.begin(), spare_ids_.end(), d.id) != spare_ids_.end();
      if (!d.up && !d.removed && !unused) down.push_back(&d);
    }
    if (!down.empty()) start_node(*down[rng_.uniform(down.size())]);
  } else if (r < 42) {
    if (on(kFaultPartition)) partition();
  } else if (r < 50) {
    if (on(kFaultBlockLink)) {
      blocked_.insert({id, random_node()});  // asymmetric: one direction only
      record("block", id);
    }
  } else if (r < 62) {
    blocked_.clear();
    record("heal-links");
  } else if (r < 70) {
    if (on(kFaultNetwork)) change_network();
  } else if (r < 84) {
    if (on(kFaultMembership)) membership_fault();
  } else if (r < 90) {
    Node* l = leader();
    if (on(kFaultTransfer) && l != nullptr) {
      l->raft->transfer_leader(id);
      record("transfer", l->id, id);
    }
  } else if (r < 95) {
    Node* l = leader();
    if (on(kFaultCrashLeader) && l != nullptr) crash_node(*l);  // leaders fail mid-replication
  } else {
    Node* l = leader();
    if (on(kFaultIsolateLeader) && l != nullptr) isolate(l->id);
  }
  retire_removed_nodes();
}

void SimCluster::partition() {
  for (NodeId a = 1; a <= nodes_.size(); ++a) {  // split into two sides
    const bool side = rng_.chance(1, 2);
    for (NodeId b = 1; b < a; ++b) {
      if (side != ((a + b + rng_.uniform(2)) % 2 == 0)) {
        blocked_.insert({a, b});
        blocked_.insert({b, a});
      }
    }
  }
  record("partition", blocked_.size());
}

void SimCluster::change_network() {
  const int losses[] = {0, 2, 10, 30};
  const int dups[] = {0, 5, 20};
  const int slows[] = {0, 10, 30};
  loss_pct_ = losses[rng_.uniform(4)];
  dup_pct_ = dups[rng_.uniform(3)];
  slow_pct_ = slows[rng_.uniform(3)];
  record("net", static_cast<uint64_t>(loss_pct_), static_cast<uint64_t>(dup_pct_),
         static_cast<uint64_t>(slow_pct_));
}

void SimCluster::cut_off(NodeId id) {
  if (!swarm_.cut_by_crash) {
    isolate(id);
    return;
  }
  crash_node(nodes_[id - 1]);
  const uint64_t until = now_ + (1 + rng_.uniform(kIsolateMaxTicks)) * kUnitsPerTick;
  rejoins_.emplace(until, id);
}

void SimCluster::isolate(NodeId id) {
  for (NodeId b = 1; b <= nodes_.size(); ++b) {
    blocked_.insert({id, b});
    blocked_.insert({b, id});
  }
  // The node rejoins after a while (unless a heal comes first).
  const uint64_t until = now_ + (1 + rng_.uniform(kIsolateMaxTicks)) * kUnitsPerTick;
  rejoins_.emplace(until, id);
  record("isolate", id, until);
}

void SimCluster::rejoin_due() {
  while (!rejoins_.empty() && rejoins_.begin()->first <= now_) {
    const NodeId id = rejoins_.begin()->second;
    rejoins_.erase(rejoins_.begin());
    Node& n = nodes_[id - 1];
    if (!n.up && !n.removed) start_node(n);  // it was cut off by a crash
    for (auto it = blocked_.begin(); it != blocked_.end();) {
      it = (it->first == id || it->second == id) ? blocked_.erase(it) : std::next(it);
    }
    record("rejoin", id);
  }
}

void SimCluster::heal_all() {
  faults_on_ = false;
  heal_time_ = now_;
  blocked_.clear();
  rejoins_.clear();
  loss_pct_ = 0;
  dup_pct_ = 0;
  slow_pct_ = 0;
  retire_removed_nodes();
  for (Node& n : nodes_) {
    const bool spare = std::find(spare_ids_.begin(), spare_ids_.end(), n.id) != spare_ids_.end();
    if (!n.up && !n.removed && !spare) start_node(n);
  }
  record("heal");
}

void SimCluster::liveness_step() {
  retire_removed_nodes();
  if (live_) return;
  Node* l = leader();
  if (l == nullptr) return;
  const Term term = l->raft->raft().term();
  if (marker_proposed_.count({l->id, term}) != 0) return;
  raft::Proposal p = l->raft->propose("m|" + std::to_string(l->id) + "|" + std::to_string(term));
  if (p.ok()) {
    marker_proposed_.insert({l->id, term});
    record("marker", l->id, p.index);
  }
}

}  // namespace shoal::sim
