// The simulated cluster: nodes and their storage, the network, the event
// loop and the Ready handling that models durability.
#include "sim/sim_cluster.h"

#include <cinttypes>
#include <cstdio>

#include "sim/sim_internal.h"

namespace shoal::sim {

SimResult run_simulation(const SimOptions& options) {
  SimCluster cluster(options);
  return cluster.run();
}

SimCluster::SimCluster(const SimOptions& options) : options_(options), rng_(options.seed) {
  const size_t voters = rng_.chance(1, 3) ? 5 : 3;
  const size_t total = voters + kSpareNodes;
  raft::Config base;
  base.election_tick = kElectionTicks;
  base.heartbeat_tick = 1 + static_cast<int>(rng_.uniform(2));
  base.pre_vote = rng_.chance(3, 4);
  base.check_quorum = rng_.chance(3, 4);
  if (base.check_quorum && rng_.chance(1, 2)) base.read_only_option = raft::ReadOnlyOption::kLeaseBased;
  // 1 byte: every kApp carries exactly one entry.
  const uint64_t msg_sizes[] = {1, 64, 512, 1 << 20};
  base.max_size_per_msg = msg_sizes[rng_.uniform(4)];
  base.max_inflight_msgs = 1 + rng_.uniform(8);
  const uint64_t uncommitted[] = {300, 4096, 64 << 20};
  base.max_uncommitted_entries_size = uncommitted[rng_.uniform(3)];
  base.unsafe_commit_previous_term_ForTest = options.unsafe_commit_previous_term;
  record("config", voters, base.heartbeat_tick, (base.pre_vote ? 1 : 0) | (base.check_quorum ? 2 : 0),
         static_cast<uint64_t>(base.read_only_option));

  nodes_.resize(total);
  raft::ConfState initial;
  for (NodeId id = 1; id <= voters; ++id) initial.voters.push_back(id);
  note_conf(1, initial);
  for (size_t i = 0; i < total; ++i) {
    Node& n = nodes_[i];
    n.id = i + 1;
    n.config = base;
    n.config.id = n.id;
    n.config.seed = rng_.next();
    const uint64_t periods[] = {0, 0, 8, 13};
    n.skip_period = periods[rng_.uniform(4)];
    n.skip_phase = n.skip_period == 0 ? 0 : rng_.uniform(n.skip_period);
    n.storage = std::make_unique<raft::MemoryStorage>();
    if (n.id <= voters) {
      SHOAL_CHECK(n.storage->apply_snapshot(raft::bootstrap_snapshot(initial, encode_state({}, 0))).ok());
      n.storage->set_hard_state(raft::HardState{1, raft::kNoNode, 1});
      start_node(n);
    } else {
      spare_ids_.push_back(n.id);
    }
  }
  for (size_t c = 0; c < kClients; ++c) clients_.emplace_back();
  choose_swarm();
}

void SimCluster::choose_swarm() {
  swarm_.fault_every_ticks = 3 + rng_.uniform(8);
  swarm_.fault_mask = static_cast<uint32_t>(rng_.next()) | kAlwaysOnFaults;
  const uint64_t election[] = {0, 2, 5};
  const uint64_t first_commit[] = {0, 1, 3};
  const uint64_t commit[] = {0, 30};
  swarm_.cut_on_election = election[rng_.uniform(3)];
  swarm_.cut_on_first_commit = first_commit[rng_.uniform(3)];
  swarm_.cut_on_commit = commit[rng_.uniform(2)];
  swarm_.cut_by_crash = rng_.chance(1, 2);
  const int append_loss[] = {0, 30, 60, 85};
  swarm_.append_loss_pct = append_loss[rng_.uniform(4)];
  record("swarm", swarm_.fault_every_ticks, swarm_.fault_mask,
         swarm_.cut_on_election * 100 + swarm_.cut_on_first_commit * 10 + swarm_.cut_on_commit,
         swarm_.cut_by_crash ? 1 : 0);
}

void SimCluster::record(const char* what, uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  for (const char* p = what; *p != '\0'; ++p) trace_hash_ = (trace_hash_ ^ static_cast<unsigned char>(*p)) * kFnvPrime;
  for (uint64_t v : {now_, a, b, c, d}) trace_hash_ = (trace_hash_ ^ v) * kFnvPrime;
  if (options_.trace) {
    std::printf("t=%" PRIu64 " %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", now_, what, a, b, c, d);
  }
}

void SimCluster::fail(const std::string& why) {
  if (!failure_.empty()) return;
  failure_ = "t=" + std::to_string(now_) + ": " + why;
  record("FAIL");
}

void SimCluster::start_node(Node& n) {
  auto created = raft::RawNode::create(n.config, n.storage.get());
  SHOAL_CHECK(created.ok());
  n.raft = std::move(*created);
  n.up = true;
  n.kv.clear();
  n.applied_hash = 0;
  auto snap = n.storage->snapshot();
  SHOAL_CHECK(snap.ok());
  n.applied = snap->meta.index;
  n.conf = n.storage->initial_state()->conf_state;
  if (!snap->data.empty()) decode_state(snap->data, &n.kv, &n.applied_hash);
  n.checked_commit = n.applied;
  record("start", n.id, n.applied, n.storage->last_index(), n.storage->hard_state().term);
}

void SimCluster::crash_node(Node& n) {
  if (!n.up) return;
  record("crash", n.id, n.persisting.has_value() ? 1 : 0);
  n.up = false;
  n.raft.reset();
  n.persisting.reset();  // not durable yet: lost
  n.kv.clear();
  for (const auto& [op, w] : n.writes) abandon_op(op, true);
  for (const auto& [ctx, r] : n.reads) abandon_op(r.op, false);
  n.writes.clear();
  n.reads.clear();
}

void SimCluster::send(const raft::Message& m) {
  record("send", m.from, m.to, static_cast<uint64_t>(m.type), m.index);
  if (m.to == 0 || m.to > nodes_.size()) return;
  if (blocked_.count({m.from, m.to}) != 0) {
    drop(m, true);
    return;
  }
  const int loss = loss_pct_ + (m.type == raft::MessageType::kApp && faults_on_ ? swarm_.append_loss_pct : 0);
  if (static_cast<int>(rng_.uniform(100)) < loss) {
    drop(m, false);
    return;
  }
  const int copies = static_cast<int>(rng_.uniform(100)) < dup_pct_ ? 2 : 1;
  for (int i = 0; i < copies; ++i) {
    uint64_t delay = 1 + rng_.uniform(kMaxDelayUnits);
    if (static_cast<int>(rng_.uniform(100)) < slow_pct_) delay += rng_.uniform(kSlowDelayUnits);
    net_.push(Flight{now_ + delay, ++seq_, m});
  }
}

void SimCluster::drop(const raft::Message& m, bool unreachable) {
  record("drop", m.from, m.to, static_cast<uint64_t>(m.type));
  Node& from = nodes_[m.from - 1];
  if (!from.up) return;
  if (m.type == raft::MessageType::kSnap) from.raft->report_snapshot(m.to, true);
  if (unreachable) from.raft->report_unreachable(m.to);
}

void SimCluster::deliver_due() {
  while (!net_.empty() && net_.top().at <= now_) {
    raft::Message m = net_.top().msg;
    net_.pop();
    Node& to = nodes_[m.to - 1];
    // A message still in flight when its link is cut is lost too.
    if (!to.up || blocked_.count({m.from, m.to}) != 0) {
      drop(m, true);
      continue;
    }
    record("recv", m.from, m.to, static_cast<uint64_t>(m.type), m.term);
    const bool snap = m.type == raft::MessageType::kSnap;
    const NodeId from_id = m.from;
    (void)to.raft->step(std::move(m));
    // The transport saw the snapshot arrive.
    Node& from = nodes_[from_id - 1];
    if (snap && from.up) from.raft->report_snapshot(to.id, false);
  }
}

void SimCluster::process_ready(Node& n) {
  if (!n.up || n.persisting || !n.raft->has_ready()) return;
  raft::Ready rd = n.raft->ready();
  for (const raft::Message& m : rd.messages) send(m);
  if (options_.unsafe_send_before_persist) {
    for (const raft::Message& m : rd.messages_after_persist) send(m);
    rd.messages_after_persist.clear();
  }
  record("ready", n.id, rd.entries.size(), rd.committed_entries.size(), rd.has_persistent_state() ? 1 : 0);
  n.persisting = std::move(rd);
  // Nothing to persist: the "write" completes at once.
  n.persist_done_at = n.persisting->has_persistent_state() ? now_ + 1 + rng_.uniform(kMaxDiskUnits) : now_;
  if (n.persist_done_at == now_) finish_persist(n);
}

void SimCluster::finish_persist(Node& n) {
  raft::Ready rd = std::move(*n.persisting);
  n.persisting.reset();
  record("durable", n.id, rd.entries.empty() ? 0 : rd.entries.back().index,
         rd.hard_state ? rd.hard_state->commit : 0);
  if (rd.snapshot) {
    if (!n.storage->apply_snapshot(*rd.snapshot).ok()) fail("storage rejected a snapshot");
  }
  if (!n.storage->append(rd.entries).ok()) fail("storage rejected entries (gap)");
  check_persisted(n, rd.entries);
  if (rd.hard_state) n.storage->set_hard_state(*rd.hard_state);
  // Now durable: acknowledgements and votes may leave.
  for (const raft::Message& m : rd.messages_after_persist) send(m);
  if (rd.snapshot) apply_snapshot(n, *rd.snapshot);
  for (const raft::Entry& e : rd.committed_entries) apply_entry(n, e);
  for (const raft::ReadState& rs : rd.read_states) {
    auto it = n.reads.find(rs.context);
    if (it == n.reads.end()) continue;
    it->second.index = rs.index;
    it->second.have_index = true;
  }
  n.raft->advance();
  serve_reads(n);
  maybe_compact(n);
}

void SimCluster::apply_snapshot(Node& n, const raft::Snapshot& s) {
  record("apply-snap", n.id, s.meta.index);
  if (s.meta.index <= n.applied) return;
  n.kv.clear();
  decode_state(s.data, &n.kv, &n.applied_hash);
  if (s.meta.index >= history_hash_.size() || history_hash_[s.meta.index] != n.applied_hash) {
    fail("snapshot at " + std::to_string(s.meta.index) + " on n" + std::to_string(n.id) +
         " does not match the applied history");
  }
  n.applied = s.meta.index;
  n.conf = s.meta.conf_state;
  note_conf(s.meta.index, n.conf);
  // Writes this node proposed inside the snapshot: outcome unknown here.
  for (auto it = n.writes.begin(); it != n.writes.end();) {
    if (it->second.index <= s.meta.index) {
      abandon_op(it->first, true);
      it = n.writes.erase(it);
    } else {
      ++it;
    }
  }
}

void SimCluster::apply_entry(Node& n, const raft::Entry& e) {
  if (e.index <= n.applied) return;
  if (e.index != n.applied + 1) {
    fail("n" + std::to_string(n.id) + " applies index " + std::to_string(e.index) + " after " +
         std::to_string(n.applied));
    return;
  }
  check_applied(n, e);
  n.applied = e.index;
  if (e.type == raft::EntryType::kConfChange) {
    auto cc = raft::decode_conf_change(e.data);
    if (!cc.ok()) {
      fail("undecodable conf change");
      return;
    }
    n.conf = n.raft->apply_conf_change(*cc);
    note_conf(e.index, n.conf);
    record("conf", n.id, e.index, n.conf.voters.size(), n.conf.voters_outgoing.size());
  } else if (auto w = decode_write(e.data)) {
    n.kv[w->key] = w->value;
  }
  for (auto it = n.writes.begin(); it != n.writes.end();) {
    const PendingWrite& pw = it->second;
    if (pw.index != e.index) {
      ++it;
      continue;
    }
    if (pw.term == e.term) {
      complete_op(pw.op, "");
    } else {
      abandon_op(pw.op, false);  // overwritten: it can never be applied
    }
    it = n.writes.erase(it);
  }
}

void SimCluster::serve_reads(Node& n) {
  for (auto it = n.reads.begin(); it != n.reads.end();) {
    if (it->second.have_index && n.applied >= it->second.index) {
      const Operation& op = ops_[it->second.op];
      auto kv = n.kv.find(op.key);
      complete_op(it->second.op, kv == n.kv.end() ? "" : kv->second);
      it = n.reads.erase(it);
    } else {
      ++it;
    }
  }
}

void SimCluster::maybe_compact(Node& n) {
  if (n.applied < n.storage->first_index() + kCompactEvery) return;
  if (!n.storage->create_snapshot(n.applied, n.conf, encode_state(n.kv, n.applied_hash)).ok()) {
    fail("create_snapshot failed");
    return;
  }
  if (!n.storage->compact(n.applied - kCompactKeep).ok()) fail("compact failed");
  record("compact", n.id, n.applied);
}

std::string SimCluster::describe_nodes() const {
  std::string out;
  for (const Node& n : nodes_) {
    out += "\n  n" + std::to_string(n.id) + (n.up ? " up" : " down") + (n.removed ? " removed" : "");
    if (!n.up) continue;
    const raft::Raft& r = n.raft->raft();
    out += std::string(" ") + raft::to_string(r.role()) + " term=" + std::to_string(r.term()) +
           " lead=" + std::to_string(r.lead()) + " commit=" + std::to_string(r.log().committed()) +
           " last=" + std::to_string(r.log().last_index()) + " applied=" + std::to_string(n.applied) +
           " persisting=" + (n.persisting ? "y" : "n");
    if (r.role() != raft::Role::kLeader) continue;
    for (const auto& [id, pr] : r.tracker().progress()) {
      out += "\n    -> n" + std::to_string(id) + " " + pr.to_string() +
             (pr.is_paused() ? " paused" : "") + " inflight=" + std::to_string(pr.inflights.count());
    }
  }
  return out;
}

SimCluster::Node* SimCluster::leader() {
  Node* best = nullptr;
  for (Node& n : nodes_) {
    if (!n.up || n.raft->raft().role() != raft::Role::kLeader) continue;
    if (best == nullptr || n.raft->raft().term() > best->raft->raft().term()) best = &n;
  }
  return best;
}

void SimCluster::step_time() {
  deliver_due();
  for (Node& n : nodes_) {
    if (n.up && n.persisting && n.persist_done_at <= now_) finish_persist(n);
  }
  if (now_ % kUnitsPerTick == 0) {
    const uint64_t tick_no = now_ / kUnitsPerTick;
    for (Node& n : nodes_) {
      const bool skip = n.skip_period != 0 && tick_no % n.skip_period == n.skip_phase;
      if (n.up && !skip) n.raft->tick();
    }
    if (faults_on_) {
      rejoin_due();
      if (rng_.chance(1, swarm_.fault_every_ticks)) inject_fault();
    } else {
      liveness_step();
    }
  }
  for (Client& c : clients_) client_step(c);
  for (Node& n : nodes_) process_ready(n);
  check_step();
  if (isolate_next_ != 0) {
    cut_off(isolate_next_);
    isolate_next_ = 0;
  }
  ++now_;
}

SimResult SimCluster::run() {
  const uint64_t fault_end = static_cast<uint64_t>(options_.fault_ticks) * kUnitsPerTick;
  while (now_ < fault_end && failure_.empty()) step_time();
  heal_all();
  const uint64_t live_deadline = now_ + static_cast<uint64_t>(options_.liveness_ticks) * kUnitsPerTick;
  while (!live_ && now_ < live_deadline && failure_.empty()) step_time();
  if (!live_ && failure_.empty()) {
    fail("liveness: no leader committed within " + std::to_string(options_.liveness_ticks) +
         " ticks after faults stopped" + describe_nodes());
  }
  const uint64_t settle_end = now_ + kSettleTicks * kUnitsPerTick;
  while (now_ < settle_end && failure_.empty() && !caught_up()) step_time();
  if (failure_.empty()) check_final();
  SimResult r;
  r.failure = failure_;
  r.trace_hash = trace_hash_;
  r.events = seq_;
  r.ops_checked = ops_.size();
  r.max_commit = global_commit_;
  return r;
}

}  // namespace shoal::sim
