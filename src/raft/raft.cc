// Raft roles, elections and the follower side. The leader side is in
// raft_leader.cc.
#include "raft/raft.h"

#include <algorithm>

namespace shoal::raft {

const char* to_string(Role r) {
  switch (r) {
    case Role::kFollower: return "follower";
    case Role::kPreCandidate: return "pre-candidate";
    case Role::kCandidate: return "candidate";
    case Role::kLeader: return "leader";
  }
  return "?";
}

const char* to_string(ProposeError e) {
  switch (e) {
    case ProposeError::kNone: return "ok";
    case ProposeError::kNotLeader: return "not leader";
    case ProposeError::kTransferring: return "leadership transfer in progress";
    case ProposeError::kTooManyUncommitted: return "too many uncommitted bytes";
    case ProposeError::kConfChangePending: return "membership change pending";
    case ProposeError::kInvalidConfChange: return "invalid membership change";
    case ProposeError::kRemoved: return "leader removed from the group";
  }
  return "?";
}

Status Config::validate() const {
  if (id == kNoNode) return Status::InvalidArgument("raft: id must be non-zero");
  if (heartbeat_tick <= 0) return Status::InvalidArgument("raft: heartbeat_tick must be > 0");
  if (election_tick <= heartbeat_tick) {
    return Status::InvalidArgument("raft: election_tick must exceed heartbeat_tick");
  }
  if (max_inflight_msgs == 0) return Status::InvalidArgument("raft: max_inflight_msgs must be > 0");
  if (max_size_per_msg == 0 || max_committed_size_per_ready == 0 ||
      max_uncommitted_entries_size == 0 || max_inflight_bytes == 0) {
    return Status::InvalidArgument("raft: byte limits must be > 0");
  }
  if (read_only_option == ReadOnlyOption::kLeaseBased && !check_quorum) {
    return Status::InvalidArgument("raft: lease-based reads require check_quorum");
  }
  if (lease_drift_margin_ticks < 0 || lease_drift_margin_ticks >= election_tick) {
    return Status::InvalidArgument("raft: lease_drift_margin_ticks must be in [0, election_tick)");
  }
  return Status::Ok();
}

Raft::Raft(const Config& config, const Storage* storage)
    : config_(config),
      id_(config.id),
      log_(storage, config.max_committed_size_per_ready),
      prs_(config.max_inflight_msgs, config.max_inflight_bytes),
      rng_(config.seed ^ (config.id * 0x9e3779b97f4a7c15ULL)) {
  SHOAL_CHECK(config.validate().ok());
  auto init = storage->initial_state();
  SHOAL_CHECK(init.ok());
  const HardState& hs = init->hard_state;
  prs_.reset_config(init->conf_state, log_.last_index() + 1);
  if (!hs.empty()) {
    SHOAL_CHECK(hs.commit >= log_.committed() && hs.commit <= log_.last_index());
    log_.commit_to(hs.commit);
    term_ = hs.term;
    vote_ = hs.vote;
  }
  if (config.applied > 0) log_.applied_to(config.applied);
  // In lease mode a restarted node may have acknowledged a leader just
  // before it crashed, so it keeps refusing votes for one election timeout.
  leader_contact_elapsed_ =
      config_.read_only_option == ReadOnlyOption::kLeaseBased ? 0 : config_.election_tick;
  become_follower(term_, kNoNode);
}

void Raft::reset_randomized_election_timeout() {
  randomized_election_timeout_ =
      config_.election_tick + static_cast<int>(rng_.uniform(static_cast<uint64_t>(config_.election_tick)));
}

void Raft::reset(Term term) {
  if (term_ != term) {
    term_ = term;
    vote_ = kNoNode;
  }
  lead_ = kNoNode;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  reset_randomized_election_timeout();
  abort_leader_transfer();
  prs_.reset_votes();
  const Index next = log_.last_index() + 1;
  for (auto& [id, pr] : prs_.progress()) {
    Progress fresh(next, config_.max_inflight_msgs, config_.max_inflight_bytes, pr.is_learner);
    if (id == id_) fresh.match = synced_last_index();
    pr = std::move(fresh);
  }
  pending_conf_index_ = 0;
  uncommitted_size_ = 0;
  lease_void_ = false;
  read_only_.clear();
  pending_read_msgs_.clear();
}

void Raft::become_follower(Term term, NodeId lead) {
  reset(term);
  lead_ = lead;
  role_ = Role::kFollower;
}

void Raft::become_pre_candidate() {
  SHOAL_CHECK(role_ != Role::kLeader);
  // A pre-candidate changes neither term nor vote.
  prs_.reset_votes();
  lead_ = kNoNode;
  role_ = Role::kPreCandidate;
}

void Raft::become_candidate() {
  SHOAL_CHECK(role_ != Role::kLeader);
  reset(term_ + 1);
  vote_ = id_;
  role_ = Role::kCandidate;
}

void Raft::become_leader() {
  SHOAL_CHECK(role_ != Role::kFollower);
  reset(term_);
  lead_ = id_;
  role_ = Role::kLeader;
  if (Progress* self = prs_.find(id_)) {
    self->become_replicate();
    self->match = synced_last_index();
    self->next = log_.last_index() + 1;
  }
  for (auto& [id, pr] : prs_.progress()) pr.lease_ack_tick = 0;
  // The empty entry commits earlier terms' entries (only current-term entries
  // are committed by counting replicas). Conf changes wait until it applies.
  Entry empty{term_, log_.last_index() + 1, EntryType::kNormal, {}};
  log_.append({empty});
  pending_conf_index_ = log_.last_index();
  maybe_commit_lone();
}

void Raft::tick() {
  ++tick_count_;
  if (leader_contact_elapsed_ < config_.election_tick) ++leader_contact_elapsed_;
  if (role_ == Role::kLeader) {
    tick_heartbeat();
  } else {
    tick_election();
  }
}

void Raft::tick_election() {
  ++election_elapsed_;
  if (promotable() && election_elapsed_ >= randomized_election_timeout_) {
    election_elapsed_ = 0;
    step(Message{.type = MessageType::kHup, .from = id_});
  }
}

void Raft::tick_heartbeat() {
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= config_.election_tick) {
    election_elapsed_ = 0;
    if (config_.check_quorum) step(Message{.type = MessageType::kCheckQuorum, .from = id_});
    if (role_ == Role::kLeader && lead_transferee_ != kNoNode) abort_leader_transfer();
  }
  if (role_ != Role::kLeader) return;
  if (heartbeat_elapsed_ >= config_.heartbeat_tick) {
    heartbeat_elapsed_ = 0;
    bcast_heartbeat(read_only_.last_pending_context());
  }
}

bool Raft::promotable() const { return prs_.is_voter(id_) && !log_.unstable_snapshot(); }

bool Raft::has_unapplied_conf_change() const {
  if (log_.applied() >= log_.committed()) return false;
  auto ents = log_.slice(std::max(log_.applied() + 1, log_.first_index()), log_.committed() + 1, kNoLimit);
  if (!ents.ok()) return false;
  return std::any_of(ents->begin(), ents->end(),
                     [](const Entry& e) { return e.type == EntryType::kConfChange; });
}

void Raft::hup(bool transfer) {
  if (role_ == Role::kLeader || !promotable()) return;
  // The configuration may be stale until committed conf changes are applied.
  if (has_unapplied_conf_change()) return;
  if (!transfer) ++campaigns_;
  campaign(config_.pre_vote && !transfer, transfer);
}

bool Raft::leader_gone(NodeId lead) {
  if (role_ != Role::kFollower || lead == kNoNode || lead_ != lead) return false;
  lead_ = kNoNode;
  leader_contact_elapsed_ = config_.election_tick;  // no lease left to respect
  return true;
}

void Raft::campaign(bool pre_vote, bool transfer) {
  MessageType type = MessageType::kVote;
  Term term = 0;
  if (pre_vote) {
    become_pre_candidate();
    type = MessageType::kPreVote;
    term = term_ + 1;
  } else {
    become_candidate();
    term = term_;
  }
  prs_.record_vote(id_, true);
  if (prs_.tally() == VoteResult::kWon) {
    // Single voter: won outright.
    if (pre_vote) {
      campaign(false, transfer);
    } else {
      become_leader();
    }
    return;
  }
  for (NodeId id : prs_.all_voters()) {
    if (id == id_) continue;
    Message m{.type = type, .to = id, .term = term, .log_term = log_.last_term(),
              .index = log_.last_index(), .commit = log_.committed()};
    if (transfer) m.context = std::string(kTransferContext);
    send(std::move(m));
  }
}

void Raft::send(Message m) {
  // A forwarded ReadIndex keeps its origin: the leader answers the replica
  // that asked, whose context it is (etcd does the same).
  if (m.type != MessageType::kReadIndex || m.from == kNoNode) m.from = id_;
  const bool explicit_term = m.type == MessageType::kVote || m.type == MessageType::kPreVote ||
                             m.type == MessageType::kVoteResp || m.type == MessageType::kPreVoteResp;
  if (!explicit_term && m.type != MessageType::kReadIndex) m.term = term_;
  // Only a leader's outbound replication traffic may leave before this
  // node's pending state is durable; everything else (votes, responses,
  // forwarded requests) reflects state that must be persisted first.
  const bool immediate =
      role_ == Role::kLeader &&
      (m.type == MessageType::kApp || m.type == MessageType::kHeartbeat ||
       m.type == MessageType::kSnap || m.type == MessageType::kTimeoutNow ||
       m.type == MessageType::kReadIndexResp);
  (immediate ? msgs_ : msgs_after_persist_).push_back(std::move(m));
}

// Handles the term of an incoming message; returns false if it is dropped.
bool Raft::step_term(const Message& m) {
  if (m.term == 0 || m.term == term_) return true;
  if (m.term > term_) {
    if (m.type == MessageType::kVote || m.type == MessageType::kPreVote) {
      const bool force = m.context == kTransferContext;
      const bool in_lease =
          config_.check_quorum && leader_contact_elapsed_ < config_.election_tick;
      if (!force && in_lease) return false;  // a leader is alive: ignore
    }
    if (m.type == MessageType::kPreVote) return true;  // never changes our term
    if (m.type == MessageType::kPreVoteResp && !m.reject) return true;
    const bool from_leader = m.type == MessageType::kApp || m.type == MessageType::kHeartbeat ||
                             m.type == MessageType::kSnap;
    // As in the Raft paper, only a granted vote or a leader resets the
    // election timer: a stream of hopeless candidates (stale logs) must not
    // keep an up-to-date follower from ever campaigning.
    const int elapsed = election_elapsed_;
    become_follower(m.term, from_leader ? m.from : kNoNode);
    if (m.type == MessageType::kVote) election_elapsed_ = elapsed;
    return true;
  }
  // Lower term. Tell a stale leader about the new term so it steps down
  // (it could not learn it otherwise when pre-vote or check-quorum are on).
  if ((config_.check_quorum || config_.pre_vote) &&
      (m.type == MessageType::kHeartbeat || m.type == MessageType::kApp)) {
    send(Message{.type = MessageType::kAppResp, .to = m.from});
  } else if (m.type == MessageType::kPreVote) {
    send(Message{.type = MessageType::kPreVoteResp, .to = m.from, .term = term_, .reject = true});
  }
  return false;
}

void Raft::step(Message m) {
  if (!step_term(m)) return;
  switch (m.type) {
    case MessageType::kHup:
      hup(false);
      return;
    case MessageType::kVote:
    case MessageType::kPreVote:
      step_vote_request(m);
      return;
    default:
      break;
  }
  switch (role_) {
    case Role::kFollower: step_follower(m); break;
    case Role::kPreCandidate:
    case Role::kCandidate: step_candidate(m); break;
    case Role::kLeader: step_leader(m); break;
  }
}

void Raft::step_vote_request(const Message& m) {
  const bool is_pre = m.type == MessageType::kPreVote;
  const MessageType resp = is_pre ? MessageType::kPreVoteResp : MessageType::kVoteResp;
  const bool in_lease = config_.check_quorum && leader_contact_elapsed_ < config_.election_tick &&
                        m.context != kTransferContext;
  const bool can_vote = vote_ == m.from || (vote_ == kNoNode && lead_ == kNoNode && !in_lease) ||
                        (is_pre && m.term > term_);
  if (can_vote && log_.is_up_to_date(m.index, m.log_term)) {
    // A granted vote carries the request's term so the candidate counts it.
    send(Message{.type = resp, .to = m.from, .term = m.term});
    if (!is_pre) {
      election_elapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    send(Message{.type = resp, .to = m.from, .term = term_, .reject = true});
  }
}

void Raft::step_follower(Message& m) {
  switch (m.type) {
    case MessageType::kApp:
    case MessageType::kHeartbeat:
    case MessageType::kSnap:
      election_elapsed_ = 0;
      leader_contact_elapsed_ = 0;
      lead_ = m.from;
      if (m.type == MessageType::kApp) handle_append(m);
      if (m.type == MessageType::kHeartbeat) handle_heartbeat(m);
      if (m.type == MessageType::kSnap) handle_snapshot(m);
      return;
    case MessageType::kTransferLeader:
    case MessageType::kReadIndex:
      if (lead_ == kNoNode) return;  // dropped: the caller retries
      m.to = lead_;
      send(std::move(m));
      return;
    case MessageType::kTimeoutNow:
      hup(true);
      return;
    case MessageType::kReadIndexResp:
      read_states_.push_back({m.index, m.context});
      return;
    default:
      return;
  }
}

void Raft::step_candidate(Message& m) {
  const MessageType my_resp =
      role_ == Role::kPreCandidate ? MessageType::kPreVoteResp : MessageType::kVoteResp;
  switch (m.type) {
    case MessageType::kApp:
    case MessageType::kHeartbeat:
    case MessageType::kSnap:
      become_follower(m.term, m.from);
      step_follower(m);
      return;
    default:
      break;
  }
  if (m.type != my_resp) return;
  prs_.record_vote(m.from, !m.reject);
  switch (prs_.tally()) {
    case VoteResult::kWon:
      if (role_ == Role::kPreCandidate) {
        campaign(false, false);
      } else {
        become_leader();
        bcast_append();
      }
      return;
    case VoteResult::kLost:
      become_follower(term_, kNoNode);
      return;
    case VoteResult::kPending:
      return;
  }
}

void Raft::handle_append(const Message& m) {
  Message resp{.type = MessageType::kAppResp, .to = m.from, .lease_tick = m.lease_tick};
  if (m.index < log_.committed()) {
    resp.index = log_.committed();
    send(std::move(resp));
    return;
  }
  if (auto last = log_.maybe_append(m.index, m.log_term, m.commit, m.entries)) {
    resp.index = *last;
    send(std::move(resp));
    return;
  }
  // Reject with a hint: the largest index whose term is <= the leader's
  // term at m.index, so the leader can skip a whole term per round trip.
  const Index hint = std::min(m.index, log_.last_index());
  auto [hint_index, hint_term] = log_.find_conflict_by_term(hint, m.log_term);
  resp.index = m.index;
  resp.reject = true;
  resp.reject_hint = hint_index;
  resp.hint_term = hint_term;
  send(std::move(resp));
}

void Raft::handle_heartbeat(const Message& m) {
  Message resp{.type = MessageType::kHeartbeatResp, .to = m.from, .lease_tick = m.lease_tick, .context = m.context};
  if (m.commit > log_.last_index()) {
    // The leader credits us with entries we do not have (Progress::
    // forget_match): tell it where our log ends rather than commit them.
    resp.reject = true;
    resp.reject_hint = log_.last_index();
    ++commits_refused_;
  } else {
    log_.commit_to(m.commit);
  }
  send(std::move(resp));
}

void Raft::handle_snapshot(const Message& m) {
  Message resp{.type = MessageType::kAppResp, .to = m.from};
  resp.index = restore(m.snapshot) ? log_.last_index() : log_.committed();
  send(std::move(resp));
}

bool Raft::install_snapshot(const Snapshot& s) {
  if (role_ != Role::kFollower || !restore(s)) return false;
  if (lead_ != kNoNode) send(Message{.type = MessageType::kAppResp, .to = lead_, .index = log_.last_index()});
  return true;
}

bool Raft::restore(const Snapshot& s) {
  if (s.meta.index <= log_.committed()) return false;
  const ConfState& cs = s.meta.conf_state;
  const bool member =
      std::count(cs.voters.begin(), cs.voters.end(), id_) +
          std::count(cs.voters_outgoing.begin(), cs.voters_outgoing.end(), id_) +
          std::count(cs.learners.begin(), cs.learners.end(), id_) > 0;
  // A snapshot that excludes us is ignored while our own configuration names
  // us (we were removed since, or it is stale). A new replica, with no
  // configuration yet or one from an earlier snapshot that left it out too,
  // takes it: it learns the group and replays its own addition from the
  // entries after it. (Ignoring a second such snapshot left a replica whose
  // leader had compacted past both forever behind.)
  if (!member && prs_.is_member(id_)) return false;
  if (log_.match_term(s.meta.index, s.meta.term)) {
    log_.commit_to(s.meta.index);  // we already have it: fast-forward commit
    return false;
  }
  log_.restore(s);
  prs_.reset_config(cs, log_.last_index() + 1);
  return true;
}

}  // namespace shoal::raft
