// The leader side of Raft: replication with flow control, commitment,
// heartbeats, ReadIndex and lease reads, leadership transfer, and
// membership changes.
#include <algorithm>

#include "raft/raft.h"

namespace shoal::raft {
namespace {

// A vector of one entry, moved in (a braced list would copy its data).
std::vector<Entry> One(Entry e) {
  std::vector<Entry> v;
  v.push_back(std::move(e));
  return v;
}

}  // namespace

Proposal Raft::refuse(ProposeError e) const {
  return Proposal{.error = e, .leader_hint = lead_ == id_ ? kNoNode : lead_};
}

Proposal Raft::propose(std::string data) {
  if (role_ != Role::kLeader) return refuse(ProposeError::kNotLeader);
  if (lead_transferee_ != kNoNode) return refuse(ProposeError::kTransferring);
  if (!prs_.is_member(id_)) return refuse(ProposeError::kRemoved);
  Entry e{term_, log_.last_index() + 1, EntryType::kNormal, std::move(data)};
  const Index index = e.index;
  if (!append_entries(One(std::move(e)))) return refuse(ProposeError::kTooManyUncommitted);
  proposals_unsent_ = true;  // sent with the others of this round (flush_proposals)
  return Proposal{.index = index, .term = term_};
}

void Raft::flush_proposals() {
  if (!proposals_unsent_) return;
  proposals_unsent_ = false;
  if (role_ == Role::kLeader) send_unsent_entries();
}

void Raft::send_unsent_entries() {
  // Each append holds at most max_size_per_msg: send them all (as many as
  // each follower's window takes).
  for (auto& [id, pr] : prs_.progress()) {
    if (id == id_) continue;
    while (maybe_send_append(id, false)) {
    }
  }
}

Proposal Raft::propose_conf_change(const ConfChange& cc) {
  if (role_ != Role::kLeader) return refuse(ProposeError::kNotLeader);
  if (lead_transferee_ != kNoNode) return refuse(ProposeError::kTransferring);
  if (!prs_.is_member(id_)) return refuse(ProposeError::kRemoved);
  // One change at a time: the previous one (and this term's empty entry)
  // must be applied, so the configuration we validate against is current.
  if (pending_conf_index_ > log_.applied()) return refuse(ProposeError::kConfChangePending);
  if (!prs_.validate_conf_change(cc).ok()) return refuse(ProposeError::kInvalidConfChange);
  Entry e{term_, log_.last_index() + 1, EntryType::kConfChange, encode_conf_change(cc)};
  const Index index = e.index;
  if (!append_entries(One(std::move(e)))) return refuse(ProposeError::kTooManyUncommitted);
  pending_conf_index_ = index;
  bcast_append();
  return Proposal{.index = index, .term = term_};
}

bool Raft::append_entries(std::vector<Entry> ents) {
  const uint64_t size = entries_size(ents);
  if (uncommitted_size_ > 0 && uncommitted_size_ + size > config_.max_uncommitted_entries_size) {
    return false;
  }
  uncommitted_size_ += size;
  log_.append(std::move(ents));
  // Our own progress advances only in on_persisted(), once the entries are
  // durable, unless we are alone and may count them at once.
  maybe_commit_lone();
  return true;
}

Index Raft::commit_for_peers() const {
  // A lone leader may have counted entries it has not stored yet; if a
  // member joined since, it must not apply one that a crash of ours could
  // still take back and replace.
  const Index committed = log_.committed();
  if (!config_.commit_lone_appends) return committed;
  return std::min(committed, log_.stable_last_index().value_or(committed));
}

void Raft::maybe_commit_lone() {
  if (!config_.commit_lone_appends || role_ != Role::kLeader) return;
  if (!prs_.is_singleton() || !prs_.is_voter(id_) || prs_.progress().size() != 1) return;
  Progress* self = prs_.find(id_);
  if (self != nullptr && self->maybe_update(log_.last_index())) maybe_commit();
}

void Raft::on_applied(Index index, uint64_t applied_bytes) {
  log_.applied_to(index);
  uncommitted_size_ = applied_bytes >= uncommitted_size_ ? 0 : uncommitted_size_ - applied_bytes;
  maybe_auto_leave_joint();
}

Index Raft::synced_last_index() const {
  const Index stable = log_.stable_last_index().value_or(0);
  return unsynced_from_ == 0 ? stable : std::min(stable, unsynced_from_ - 1);
}

void Raft::on_written(Index first, Index last, Term last_term) {
  SHOAL_CHECK(role_ == Role::kLeader && first > 0 && first <= last);
  log_.stable_to(last, last_term);
  unsynced_from_ = unsynced_from_ == 0 ? first : std::min(unsynced_from_, first);
}

void Raft::on_synced(Index index, Term term) {
  if (unsynced_from_ == 0) return;  // a persisted Ready since covered it
  // A report of entries replaced since (this node lost its term and took
  // another leader's log) says nothing of what is there now. Compacted
  // entries were committed, so they are the same in every log.
  if (index >= log_.first_index() && !log_.match_term(index, term)) return;
  // (While a snapshot waits to be stored, its own synced Ready decides.)
  const auto stable = log_.stable_last_index();
  if (!stable) return;
  unsynced_from_ = index >= *stable ? 0 : std::max(unsynced_from_, index + 1);
  if (role_ != Role::kLeader) return;
  Progress* self = prs_.find(id_);
  if (self == nullptr) return;
  const Index before = log_.committed();
  if (self->maybe_update(synced_last_index()) && maybe_commit()) bcast_commit(before);
}

void Raft::on_persisted(std::optional<std::pair<Index, Term>> last_entry, Index snapshot_index, bool synced) {
  if (snapshot_index > 0) log_.stable_snap_to(snapshot_index);
  if (last_entry) log_.stable_to(last_entry->first, last_entry->second);
  // Its write was synced, and with it every write before it.
  if (synced) unsynced_from_ = 0;
  if (role_ != Role::kLeader) return;
  Progress* self = prs_.find(id_);
  auto stable = log_.stable_last_index();
  if (self == nullptr || !stable) return;
  const Index before = log_.committed();
  if (self->maybe_update(synced_last_index()) && maybe_commit()) bcast_commit(before);
}

void Raft::bcast_commit(Index committed_before) {
  // A membership change that just committed is announced at once: followers
  // act on it when they apply it (leaving a joint configuration, retiring).
  const bool conf = pending_conf_index_ > committed_before && pending_conf_index_ <= log_.committed();
  if (!config_.skip_bcast_commit || conf) {
    bcast_append();
  } else {
    send_unsent_entries();
  }
}

bool Raft::committed_in_current_term() const { return log_.term_or_zero(log_.committed()) == term_; }

bool Raft::maybe_commit() {
  const Index mci = prs_.committed();
  bool moved = false;
  if (config_.unsafe_commit_previous_term_ForTest) {
    // Deliberately wrong (Figure 8): ignores the term of the entry.
    if (mci > log_.committed() && mci <= log_.last_index()) {
      log_.commit_to(mci);
      moved = true;
    }
  } else {
    moved = log_.maybe_commit(mci, term_);
  }
  if (moved && committed_in_current_term()) release_pending_reads();
  return moved;
}

bool Raft::maybe_send_append(NodeId to, bool send_if_empty) {
  Progress* pr = prs_.find(to);
  if (pr == nullptr || pr->is_paused()) return false;
  const Index prev_index = pr->next - 1;
  auto prev_term = log_.term(prev_index);
  auto ents = log_.entries_from(pr->next, config_.max_size_per_msg);
  if (!prev_term.ok() || !ents.ok()) return send_snapshot(to, *pr);
  if (ents->empty() && !send_if_empty) return false;
  Message m{.type = MessageType::kApp, .to = to, .log_term = *prev_term, .index = prev_index,
            .entries = std::move(*ents), .commit = commit_for_peers(), .lease_tick = tick_count_};
  if (!m.entries.empty()) {
    const Index last = m.entries.back().index;
    if (pr->state == ProgressState::kReplicate) {
      pr->optimistic_update(last);
      pr->inflights.add(last, entries_size(m.entries));
    }
  }
  if (pr->state == ProgressState::kProbe) pr->probe_sent = true;
  send(std::move(m));
  return true;
}

bool Raft::send_snapshot(NodeId to, Progress& pr) {
  if (!pr.recent_active) return false;  // do not ship a snapshot to a silent peer
  auto snap = log_.snapshot();
  if (!snap.ok() || snap->empty()) return false;  // not ready yet: retry later
  pr.become_snapshot(snap->meta.index);
  send(Message{.type = MessageType::kSnap, .to = to, .snapshot = std::move(*snap)});
  return true;
}

void Raft::bcast_append() {
  for (auto& [id, pr] : prs_.progress()) {
    if (id != id_) maybe_send_append(id, true);
  }
}

void Raft::bcast_heartbeat(const std::string& context) {
  for (auto& [id, pr] : prs_.progress()) {
    if (id == id_) continue;
    // Never claim more than the follower is known to hold.
    const Index commit = std::min(pr.match, commit_for_peers());
    send(Message{.type = MessageType::kHeartbeat, .to = id, .commit = commit,
                 .lease_tick = tick_count_, .context = context});
  }
}

void Raft::send_timeout_now(NodeId to) {
  lease_void_ = true;  // the transferee may now win without waiting out our lease
  send(Message{.type = MessageType::kTimeoutNow, .to = to});
}

uint64_t Raft::lease_start_tick() const {
  if (role_ != Role::kLeader || lease_void_ || lead_transferee_ != kNoNode) return 0;
  return prs_.quorum_min([this](NodeId id) -> uint64_t {
    if (id == id_) return tick_count_;
    auto it = prs_.progress().find(id);
    return it == prs_.progress().end() ? 0 : it->second.lease_ack_tick;
  });
}

bool Raft::lease_valid() const {
  const uint64_t start = lease_start_tick();
  if (start == 0) return false;
  return tick_count_ < start + static_cast<uint64_t>(config_.election_tick - config_.lease_drift_margin_ticks);
}

void Raft::step_leader(Message& m) {
  switch (m.type) {
    case MessageType::kBeat:
      bcast_heartbeat(read_only_.last_pending_context());
      return;
    case MessageType::kCheckQuorum:
      if (!prs_.quorum_active(id_)) {
        become_follower(term_, kNoNode);  // cannot reach a quorum: step down
        return;
      }
      for (auto& [id, pr] : prs_.progress()) pr.recent_active = id == id_;
      return;
    case MessageType::kReadIndex:
      handle_read_index(m);
      return;
    case MessageType::kTransferLeader:
      handle_transfer_leader(m);
      return;
    default:
      break;
  }
  Progress* pr = prs_.find(m.from);
  if (pr == nullptr) return;
  switch (m.type) {
    case MessageType::kAppResp: handle_append_response(m, *pr); return;
    case MessageType::kHeartbeatResp: handle_heartbeat_response(m, *pr); return;
    case MessageType::kSnapStatus:
      if (pr->state != ProgressState::kSnapshot) return;
      // On failure resume probing from match; either way wait for a
      // heartbeat response before sending again.
      if (m.reject) pr->pending_snapshot = 0;
      pr->become_probe();
      pr->probe_sent = true;
      return;
    case MessageType::kUnreachable:
      if (pr->state == ProgressState::kReplicate) pr->become_probe();
      return;
    default: return;
  }
}

void Raft::handle_append_response(const Message& m, Progress& pr) {
  pr.recent_active = true;
  pr.lease_ack_tick = std::max(pr.lease_ack_tick, m.lease_tick);
  if (m.reject && m.index <= pr.match && m.reject_hint < pr.match) {
    // A rejection at or below what it was credited with, from a log that
    // ends below it: the credit may not be this replica's.
    pr.forget_match();
    ++credits_forgotten_;
    maybe_send_append(m.from, true);
    return;
  }
  if (m.reject) {
    Index next_probe = m.reject_hint;
    if (m.hint_term > 0) next_probe = log_.find_conflict_by_term(m.reject_hint, m.hint_term).first;
    if (pr.maybe_decr_to(m.index, next_probe)) {
      if (pr.state == ProgressState::kReplicate) pr.become_probe();
      maybe_send_append(m.from, true);
    }
    return;
  }
  const bool was_paused = pr.is_paused();
  if (!pr.maybe_update(m.index)) return;
  if (pr.state == ProgressState::kProbe) {
    pr.become_replicate();
  } else if (pr.state == ProgressState::kSnapshot && pr.match + 1 >= log_.first_index()) {
    pr.become_probe();
    pr.become_replicate();
  } else if (pr.state == ProgressState::kReplicate) {
    pr.inflights.free_le(m.index);
  }
  const Index before = log_.committed();
  if (maybe_commit()) {
    bcast_commit(before);
  } else if (was_paused) {
    maybe_send_append(m.from, false);
  }
  while (maybe_send_append(m.from, false)) {
  }
  if (m.from == lead_transferee_ && pr.match == log_.last_index()) send_timeout_now(m.from);
}

void Raft::handle_heartbeat_response(const Message& m, Progress& pr) {
  pr.recent_active = true;
  if (m.reject && m.reject_hint < pr.match) {
    pr.forget_match();
    ++credits_forgotten_;
  }
  pr.probe_sent = false;
  pr.lease_ack_tick = std::max(pr.lease_ack_tick, m.lease_tick);
  if (pr.state == ProgressState::kReplicate && pr.inflights.full()) pr.inflights.free_first();
  if (pr.match < log_.last_index()) maybe_send_append(m.from, true);
  if (m.context.empty()) return;
  const std::set<NodeId>* acks = read_only_.ack(m.from, m.context);
  if (acks == nullptr) return;
  const bool quorum = prs_.quorum_min([acks](NodeId id) -> uint64_t { return acks->count(id); }) >= 1;
  if (!quorum) return;
  for (const ReadOnly::Pending& p : read_only_.advance(m.context)) respond_read(p);
}

void Raft::respond_read(const ReadOnly::Pending& p) {
  if (p.from == kNoNode || p.from == id_) {
    read_states_.push_back({p.index, p.context});
  } else {
    // The follower waits to apply up to p.index: tell it the commit index
    // first, which skip_bcast_commit may not have (messages to it keep
    // their order).
    if (config_.skip_bcast_commit) maybe_send_append(p.from, true);
    send(Message{.type = MessageType::kReadIndexResp, .to = p.from, .index = p.index,
                 .context = p.context});
  }
}

void Raft::handle_read_index(const Message& m) {
  const NodeId from = m.from == id_ ? kNoNode : m.from;
  // Until an entry of this term commits, our commit index may be stale (a
  // lone voter too: its commit index is not made durable on its own, so
  // after a restart it may lag entries it acknowledged).
  if (!committed_in_current_term()) {
    if (pending_read_msgs_.size() < config_.max_pending_reads) pending_read_msgs_.push_back(m);
    return;
  }
  if (prs_.is_singleton() && prs_.is_voter(id_)) {
    respond_read({log_.committed(), from, m.context, {}});
    return;
  }
  if (config_.read_only_option == ReadOnlyOption::kLeaseBased && lease_valid()) {
    respond_read({log_.committed(), from, m.context, {}});
    return;
  }
  read_only_.add(log_.committed(), from, m.context, id_);
  bcast_heartbeat(m.context);
}

void Raft::release_pending_reads() {
  std::vector<Message> reads = std::move(pending_read_msgs_);
  pending_read_msgs_.clear();
  for (const Message& m : reads) handle_read_index(m);
}

void Raft::handle_transfer_leader(const Message& m) {
  const NodeId to = m.from;
  Progress* pr = prs_.find(to);
  if (pr == nullptr || pr->is_learner || to == id_ || !prs_.is_voter(to)) return;
  if (lead_transferee_ == to) return;  // already in progress
  abort_leader_transfer();
  // The transfer must finish within one election timeout or it is aborted.
  election_elapsed_ = 0;
  lead_transferee_ = to;
  if (pr->match == log_.last_index()) {
    send_timeout_now(to);
  } else {
    maybe_send_append(to, true);
  }
}

ConfState Raft::apply_conf_change(const ConfChange& cc) {
  // An invalid change fails identically on every replica: skipping it is safe.
  (void)prs_.apply_conf_change(cc, log_.last_index() + 1);
  after_conf_change();
  return prs_.conf_state();
}

void Raft::after_conf_change() {
  if (lead_transferee_ != kNoNode && !prs_.is_voter(lead_transferee_)) abort_leader_transfer();
  if (role_ != Role::kLeader) return;
  if (!prs_.is_voter(id_)) {
    step_down_if_removed();
    return;
  }
  const Index before = log_.committed();
  if (maybe_commit()) {
    bcast_commit(before);
  } else {
    for (auto& [id, pr] : prs_.progress()) {
      if (id != id_) maybe_send_append(id, false);
    }
  }
}

void Raft::step_down_if_removed() {
  // Hand leadership to the most caught-up voter so the group does not wait
  // for an election timeout, then stop leading.
  NodeId best = kNoNode;
  Index best_match = 0;
  for (const auto& [id, pr] : prs_.progress()) {
    if (id != id_ && prs_.is_voter(id) && pr.match >= best_match) {
      best = id;
      best_match = pr.match;
    }
  }
  if (best != kNoNode && best_match == log_.last_index()) send_timeout_now(best);
  become_follower(term_, kNoNode);
}

void Raft::maybe_auto_leave_joint() {
  if (role_ != Role::kLeader || !prs_.config().joint()) return;
  if (pending_conf_index_ > log_.applied() || lead_transferee_ != kNoNode) return;
  Entry e{term_, log_.last_index() + 1, EntryType::kConfChange, encode_conf_change(ConfChange{})};
  const Index index = e.index;
  // The leave entry bypasses the uncommitted limit: the joint state must end.
  uncommitted_size_ += entry_size(e);
  log_.append(One(std::move(e)));
  pending_conf_index_ = index;
  bcast_append();
}

}  // namespace shoal::raft
