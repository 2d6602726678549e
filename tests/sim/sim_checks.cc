// The simulator's safety checkers, run after every step, and the final
// checks (acknowledged writes applied everywhere, linearizability).
#include <algorithm>

#include "sim/sim_cluster.h"
#include "sim/sim_internal.h"

namespace shoal::sim {

namespace {

uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * kFnvPrime;
  return h;
}

uint64_t chain(uint64_t prev, const raft::Entry& e) {
  uint64_t h = prev;
  for (uint64_t v : {e.index, e.term, static_cast<uint64_t>(e.type), hash_bytes(e.data)}) {
    h = (h ^ v) * kFnvPrime;
  }
  return h;
}

std::string n_str(NodeId id) { return "n" + std::to_string(id); }

}  // namespace

void SimCluster::check_step() {
  for (Node& n : nodes_) {
    if (!n.up || !failure_.empty()) continue;
    check_leaders(n);
    check_commits(n);
  }
}

// Election safety (one leader per term) and leader completeness.
void SimCluster::check_leaders(Node& n) {
  const raft::Raft& r = n.raft->raft();
  if (r.role() != raft::Role::kLeader) return;
  auto [it, inserted] = leader_of_term_.emplace(r.term(), n.id);
  if (!inserted) {
    if (it->second != n.id) {
      fail("election safety: " + n_str(it->second) + " and " + n_str(n.id) + " both lead term " +
           std::to_string(r.term()));
    }
    return;
  }
  record("leader", n.id, r.term());
  // A leader cut off right after winning leaves a divergent log tail behind.
  if (faults_on_ && swarm_.cut_on_election != 0 && rng_.chance(1, swarm_.cut_on_election)) {
    isolate_next_ = n.id;
  }
  // A new leader must hold every entry committed in an earlier term (Raft's
  // Leader Completeness). One elected in a term older than a commit need not:
  // a candidate may win a term with votes granted before a later term began,
  // and be deposed as soon as it speaks (seed 2033973).
  const raft::RaftLog& log = r.log();
  for (auto c = committed_terms_.lower_bound(log.first_index()); c != committed_terms_.end(); ++c) {
    if (committed_in_term_[c->first] >= r.term()) continue;
    auto t = log.term(c->first);
    if (!t.ok() || *t != c->second) {
      fail("leader completeness: " + n_str(n.id) + " leads term " + std::to_string(r.term()) +
           " without committed entry " + std::to_string(c->first) + " (term " + std::to_string(c->second) + ")");
      return;
    }
  }
}

// Committed entries never change: every node agrees on the term at each
// committed index.
void SimCluster::check_commits(Node& n) {
  const raft::RaftLog& log = n.raft->raft().log();
  const Index commit = log.committed();
  if (commit <= n.checked_commit) return;
  for (Index i = std::max(n.checked_commit + 1, log.first_index()); i <= commit; ++i) {
    auto t = log.term(i);
    if (!t.ok()) continue;
    auto [it, inserted] = committed_terms_.emplace(i, *t);
    // The term it was committed in: that of the first node seen with it
    // committed (its leader, which learns of a commit before anyone).
    if (inserted) committed_in_term_[i] = n.raft->raft().term();
    if (!inserted && it->second != *t) {
      fail("commit safety: index " + std::to_string(i) + " committed with term " + std::to_string(it->second) +
           " but " + n_str(n.id) + " committed term " + std::to_string(*t));
      return;
    }
  }
  n.checked_commit = commit;
  global_commit_ = std::max(global_commit_, commit);
  // Fault at an interesting moment: a leader that just committed is cut
  // off before its followers learn more (the Figure 8 window).
  // A new leader's first commit is where earlier terms' entries get decided.
  const raft::Raft& r = n.raft->raft();
  if (faults_on_ && r.role() == raft::Role::kLeader) {
    const bool first_in_term = first_commit_terms_.insert(r.term()).second;
    const uint64_t one_in = first_in_term ? swarm_.cut_on_first_commit : swarm_.cut_on_commit;
    if (one_in != 0 && rng_.chance(1, one_in)) isolate_next_ = n.id;
  }
}

// Log matching: an entry (index, term) always has the same content and the
// same predecessor term, wherever it is stored; by induction, two logs that
// share an (index, term) agree on every earlier entry.
void SimCluster::check_persisted(Node& n, const std::vector<raft::Entry>& ents) {
  for (const raft::Entry& e : ents) {
    auto prev = n.storage->term(e.index - 1);
    const Term prev_term = prev.ok() ? *prev : UINT64_MAX;
    const uint64_t h = hash_bytes(e.data) ^ static_cast<uint64_t>(e.type);
    auto [it, inserted] = entry_registry_.emplace(std::make_pair(e.index, e.term), std::make_pair(h, prev_term));
    if (inserted) continue;
    const bool prev_known = prev_term != UINT64_MAX && it->second.second != UINT64_MAX;
    if (it->second.first != h || (prev_known && it->second.second != prev_term)) {
      fail("log matching: entry " + std::to_string(e.index) + "/" + std::to_string(e.term) + " on " +
           n_str(n.id) + " differs from another copy");
      return;
    }
    if (it->second.second == UINT64_MAX) it->second.second = prev_term;
  }
}

// State machine safety: every replica applies a prefix of one history.
void SimCluster::check_applied(Node& n, const raft::Entry& e) {
  const uint64_t h = chain(n.applied_hash, e);
  n.applied_hash = h;
  if (e.index < history_hash_.size()) {
    if (history_hash_[e.index] != h) {
      fail("state machine safety: " + n_str(n.id) + " applied a different entry at " + std::to_string(e.index));
    }
    return;
  }
  if (e.index != history_hash_.size()) {
    fail("state machine safety: gap in the applied history at " + std::to_string(e.index));
    return;
  }
  history_hash_.push_back(h);
  if (auto w = decode_write(e.data)) {
    history_ops_[e.index] = w->op;
    applied_ops_.insert(w->op);
  }
  if (e.data.rfind("m|", 0) == 0) live_ = true;
}

Index SimCluster::acked_index() const {
  Index needed = 0;
  for (const auto& [index, op] : history_ops_) {
    if (acked_ops_.count(op) != 0) needed = std::max(needed, index);
  }
  return needed;
}

bool SimCluster::caught_up() const {
  const Index needed = acked_index();
  const raft::ConfState cs = latest_conf();
  for (NodeId id : cs.voters) {
    const Node& n = nodes_[id - 1];
    if (n.up && n.applied < needed) return false;
  }
  return true;
}

void SimCluster::check_final() {
  // Every acknowledged write is in the history, and every live voter has
  // applied at least up to it.
  const Index needed = acked_index();
  for (uint64_t op : acked_ops_) {
    if (applied_ops_.count(op) == 0) {
      fail("acknowledged write op " + std::to_string(op) + " was never applied");
      return;
    }
  }
  const raft::ConfState cs = latest_conf();
  for (NodeId id : cs.voters) {
    const Node& n = nodes_[id - 1];
    if (n.up && n.applied < needed) {
      fail("acknowledged writes up to " + std::to_string(needed) + " not applied on " + n_str(id) +
           " (applied " + std::to_string(n.applied) + ")" + describe_nodes());
      return;
    }
  }
  std::vector<Operation> history;
  for (const Operation& op : ops_) {
    if (dead_ops_.count(op.id) != 0) continue;
    if (!op.is_write && op.response == kNeverReturned) continue;
    history.push_back(op);
  }
  LinearizabilityResult lin = check_linearizable(history);
  if (!lin.ok) fail("linearizability: key " + lin.key + ": " + lin.explain);
}

}  // namespace shoal::sim
