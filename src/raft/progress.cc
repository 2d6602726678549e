#include "raft/progress.h"

#include <algorithm>
#include <array>
#include <span>

namespace shoal::raft {

Inflights::Inflights(size_t max_count, uint64_t max_bytes)
    : ring_(max_count), max_count_(max_count), max_bytes_(max_bytes) {
  SHOAL_CHECK(max_count > 0);
}

void Inflights::add(Index index, uint64_t bytes) {
  SHOAL_CHECK(count_ < max_count_);
  ring_[(start_ + count_) % max_count_] = {index, bytes};
  ++count_;
  bytes_ += bytes;
}

void Inflights::free_le(Index index) {
  while (count_ > 0 && ring_[start_].index <= index) free_first();
}

void Inflights::free_first() {
  if (count_ == 0) return;
  bytes_ -= ring_[start_].bytes;
  start_ = (start_ + 1) % max_count_;
  --count_;
}

void Inflights::reset() {
  start_ = 0;
  count_ = 0;
  bytes_ = 0;
}

const char* to_string(ProgressState s) {
  switch (s) {
    case ProgressState::kProbe: return "probe";
    case ProgressState::kReplicate: return "replicate";
    case ProgressState::kSnapshot: return "snapshot";
  }
  return "?";
}

void Progress::become_probe() {
  // After a snapshot, resume right after it; otherwise just after match.
  if (state == ProgressState::kSnapshot) {
    next = std::max(match + 1, pending_snapshot + 1);
  } else {
    next = match + 1;
  }
  state = ProgressState::kProbe;
  pending_snapshot = 0;
  probe_sent = false;
  inflights.reset();
}

void Progress::become_replicate() {
  state = ProgressState::kReplicate;
  next = match + 1;
  pending_snapshot = 0;
  probe_sent = false;
  inflights.reset();
}

void Progress::forget_match() {
  const Index credited = match;
  match = 0;
  become_probe();
  next = credited + 1;
}

void Progress::become_snapshot(Index snapshot_index) {
  state = ProgressState::kSnapshot;
  pending_snapshot = snapshot_index;
  probe_sent = false;
  inflights.reset();
}

bool Progress::maybe_update(Index n) {
  bool updated = false;
  if (match < n) {
    match = n;
    updated = true;
    probe_sent = false;
  }
  next = std::max(next, n + 1);
  return updated;
}

bool Progress::maybe_decr_to(Index rejected, Index match_hint) {
  if (state == ProgressState::kReplicate) {
    if (rejected <= match) return false;  // stale
    next = match + 1;
    return true;
  }
  if (next - 1 != rejected) return false;  // stale: not the probe we sent
  next = std::max(std::min(rejected, match_hint + 1), match + 1);
  probe_sent = false;
  return true;
}

bool Progress::is_paused() const {
  switch (state) {
    case ProgressState::kProbe: return probe_sent;
    case ProgressState::kReplicate: return inflights.full();
    case ProgressState::kSnapshot: return true;
  }
  return true;
}

std::string Progress::to_string() const {
  return std::string(raft::to_string(state)) + " match=" + std::to_string(match) +
         " next=" + std::to_string(next) + (is_learner ? " learner" : "");
}

namespace {

std::vector<NodeId> to_vector(const std::set<NodeId>& s) { return {s.begin(), s.end()}; }

// Largest v such that a majority of `ids` has value >= v; max for an empty set.
uint64_t majority_min(const std::set<NodeId>& ids, const std::function<uint64_t(NodeId)>& value) {
  if (ids.empty()) return UINT64_MAX;
  // Asked on every proposal and every published round (commit, lease):
  // groups have a handful of voters, so the values stay on the stack.
  constexpr size_t kInline = 16;
  std::array<uint64_t, kInline> inline_vals;
  std::vector<uint64_t> heap_vals;
  std::span<uint64_t> vals;
  if (ids.size() <= kInline) {
    vals = std::span<uint64_t>(inline_vals.data(), ids.size());
  } else {
    heap_vals.resize(ids.size());
    vals = heap_vals;
  }
  size_t n = 0;
  for (NodeId id : ids) vals[n++] = value(id);
  // The median from the top: the value a majority has reached.
  auto mid = vals.begin() + static_cast<std::ptrdiff_t>(ids.size() / 2);
  std::nth_element(vals.begin(), mid, vals.end(), std::greater<>());
  return *mid;
}

VoteResult majority_tally(const std::set<NodeId>& ids, const std::map<NodeId, bool>& votes) {
  if (ids.empty()) return VoteResult::kWon;
  size_t granted = 0;
  size_t missing = 0;
  for (NodeId id : ids) {
    auto it = votes.find(id);
    if (it == votes.end()) {
      ++missing;
    } else if (it->second) {
      ++granted;
    }
  }
  const size_t q = ids.size() / 2 + 1;
  if (granted >= q) return VoteResult::kWon;
  if (granted + missing >= q) return VoteResult::kPending;
  return VoteResult::kLost;
}

}  // namespace

ProgressTracker::ProgressTracker(size_t max_inflight, uint64_t max_inflight_bytes)
    : max_inflight_(max_inflight), max_inflight_bytes_(max_inflight_bytes) {}

void ProgressTracker::reset_config(const ConfState& cs, Index next_index) {
  config_ = TrackerConfig{};
  config_.voters.insert(cs.voters.begin(), cs.voters.end());
  config_.voters_outgoing.insert(cs.voters_outgoing.begin(), cs.voters_outgoing.end());
  config_.learners.insert(cs.learners.begin(), cs.learners.end());
  progress_.clear();
  for (NodeId id : all_voters()) add_progress(id, next_index, false);
  for (NodeId id : config_.learners) add_progress(id, next_index, true);
  update_conf_state();
}

void ProgressTracker::update_conf_state() {
  conf_state_ = ConfState{to_vector(config_.voters), to_vector(config_.voters_outgoing),
                          to_vector(config_.learners)};
}

bool ProgressTracker::is_voter(NodeId id) const {
  return config_.voters.count(id) != 0 || config_.voters_outgoing.count(id) != 0;
}

std::set<NodeId> ProgressTracker::all_voters() const {
  std::set<NodeId> all = config_.voters;
  all.insert(config_.voters_outgoing.begin(), config_.voters_outgoing.end());
  return all;
}

Progress* ProgressTracker::find(NodeId id) {
  auto it = progress_.find(id);
  return it == progress_.end() ? nullptr : &it->second;
}

void ProgressTracker::add_progress(NodeId id, Index next_index, bool learner) {
  auto it = progress_.find(id);
  if (it != progress_.end()) {
    it->second.is_learner = learner;
    return;
  }
  Progress pr(next_index, max_inflight_, max_inflight_bytes_, learner);
  pr.recent_active = true;  // a new member gets one CheckQuorum period of grace
  progress_.emplace(id, std::move(pr));
}

void ProgressTracker::prune_progress() {
  for (auto it = progress_.begin(); it != progress_.end();) {
    if (!is_voter(it->first) && config_.learners.count(it->first) == 0) {
      it = progress_.erase(it);
    } else {
      ++it;
    }
  }
}

Status ProgressTracker::validate_conf_change(const ConfChange& cc) const {
  if (cc.changes.empty()) {
    return config_.joint() ? Status::Ok() : Status::InvalidArgument("not in a joint config");
  }
  if (config_.joint()) return Status::InvalidArgument("already in a joint config");
  // A replica with no configuration yet must first receive a snapshot.
  if (config_.voters.empty()) return Status::InvalidArgument("no configuration yet");
  std::set<NodeId> voters = config_.voters;
  std::set<NodeId> learners = config_.learners;
  for (const ConfChangeSingle& c : cc.changes) {
    if (c.node == kNoNode) return Status::InvalidArgument("node id 0");
    switch (c.type) {
      case ConfChangeType::kAddVoter:
        learners.erase(c.node);
        voters.insert(c.node);
        break;
      case ConfChangeType::kAddLearner:
        if (voters.count(c.node) != 0) return Status::InvalidArgument("demoting a voter is not supported");
        learners.insert(c.node);
        break;
      case ConfChangeType::kRemoveNode:
        voters.erase(c.node);
        learners.erase(c.node);
        break;
    }
  }
  if (voters.empty()) return Status::InvalidArgument("change removes every voter");
  return Status::Ok();
}

Status ProgressTracker::apply_conf_change(const ConfChange& cc, Index next_index) {
  if (Status s = validate_conf_change(cc); !s.ok()) return s;
  if (cc.changes.empty()) {
    config_.voters_outgoing.clear();
    prune_progress();
    update_conf_state();
    return Status::Ok();
  }
  const std::set<NodeId> old_voters = config_.voters;
  for (const ConfChangeSingle& c : cc.changes) {
    switch (c.type) {
      case ConfChangeType::kAddVoter:
        config_.learners.erase(c.node);
        config_.voters.insert(c.node);
        add_progress(c.node, next_index, false);
        break;
      case ConfChangeType::kAddLearner:
        config_.learners.insert(c.node);
        add_progress(c.node, next_index, true);
        break;
      case ConfChangeType::kRemoveNode:
        config_.voters.erase(c.node);
        config_.learners.erase(c.node);
        break;
    }
  }
  // A change of the voter set goes through a joint configuration.
  if (config_.voters != old_voters) config_.voters_outgoing = old_voters;
  prune_progress();
  update_conf_state();
  return Status::Ok();
}

uint64_t ProgressTracker::quorum_min(const std::function<uint64_t(NodeId)>& value) const {
  return std::min(majority_min(config_.voters, value), majority_min(config_.voters_outgoing, value));
}

Index ProgressTracker::committed() const {
  return quorum_min([this](NodeId id) {
    auto it = progress_.find(id);
    return it == progress_.end() ? Index{0} : it->second.match;
  });
}

void ProgressTracker::record_vote(NodeId id, bool granted) { votes_.emplace(id, granted); }

VoteResult ProgressTracker::tally() const {
  const VoteResult a = majority_tally(config_.voters, votes_);
  const VoteResult b = majority_tally(config_.voters_outgoing, votes_);
  if (a == VoteResult::kLost || b == VoteResult::kLost) return VoteResult::kLost;
  if (a == VoteResult::kWon && b == VoteResult::kWon) return VoteResult::kWon;
  return VoteResult::kPending;
}

bool ProgressTracker::quorum_active(NodeId self) const {
  return quorum_min([&](NodeId id) -> uint64_t {
           if (id == self) return 1;
           auto it = progress_.find(id);
           return it != progress_.end() && it->second.recent_active ? 1 : 0;
         }) >= 1;
}

}  // namespace shoal::raft
