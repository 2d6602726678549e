#include "raft/raw_node.h"

namespace shoal::raft {

Result<std::unique_ptr<RawNode>> RawNode::create(const Config& config, const Storage* storage) {
  if (Status s = config.validate(); !s.ok()) return s;
  if (storage == nullptr) return Status::InvalidArgument("raft: storage is null");
  auto init = storage->initial_state();
  if (!init.ok()) return init.status().WithContext("raft: reading initial state");
  if (init->hard_state.commit > storage->last_index()) {
    return Status::Corruption("raft: hard state commit is past the last stored entry");
  }
  if (config.applied > init->hard_state.commit) {
    return Status::InvalidArgument("raft: applied index is past the commit index");
  }
  return std::unique_ptr<RawNode>(new RawNode(config, storage));
}

RawNode::RawNode(const Config& config, const Storage* storage) : raft_(config, storage) {
  prev_soft_state_ = raft_.soft_state();
  prev_hard_state_ = raft_.hard_state();
}

Status RawNode::step(Message m) {
  if (is_local_message(m.type)) return Status::InvalidArgument("raft: local message from the network");
  if (is_response_message(m.type) && m.type != MessageType::kReadIndexResp &&
      !raft_.tracker().is_member(m.from)) {
    return Status::NotFound("raft: response from a non-member");
  }
  raft_.step(std::move(m));
  return Status::Ok();
}

void RawNode::read_index(std::string context) {
  raft_.step(Message{.type = MessageType::kReadIndex, .from = raft_.id(), .context = std::move(context)});
}

void RawNode::transfer_leader(NodeId transferee) {
  raft_.step(Message{.type = MessageType::kTransferLeader, .from = transferee});
}

void RawNode::report_unreachable(NodeId id) {
  raft_.step(Message{.type = MessageType::kUnreachable, .from = id});
}

void RawNode::report_snapshot(NodeId id, bool failed) {
  raft_.step(Message{.type = MessageType::kSnapStatus, .from = id, .reject = failed});
}

bool RawNode::has_ready() const {
  const Raft& r = raft_;
  return raft_.soft_state() != prev_soft_state_ || raft_.hard_state() != prev_hard_state_ ||
         !raft_.log().unstable_entries().empty() || raft_.log().unstable_snapshot().has_value() ||
         !r.msgs().empty() || !r.msgs_after_persist().empty() || !r.read_states().empty() ||
         raft_.log().has_next_committed_entries();
}

Ready RawNode::ready() {
  SHOAL_CHECK(!ready_outstanding_);
  Raft& r = raft_;
  r.flush_proposals();
  Ready rd;
  if (r.soft_state() != prev_soft_state_) {
    rd.soft_state = r.soft_state();
    prev_soft_state_ = r.soft_state();
  }
  bool new_term_or_vote = false;
  if (r.hard_state() != prev_hard_state_) {
    rd.hard_state = r.hard_state();
    new_term_or_vote = rd.hard_state->term != prev_hard_state_.term || rd.hard_state->vote != prev_hard_state_.vote;
    prev_hard_state_ = r.hard_state();
  }
  rd.entries = r.log().unstable_entries();
  rd.snapshot = r.log().unstable_snapshot();
  rd.committed_entries = r.log().next_committed_entries();
  rd.messages = std::move(r.msgs());
  r.msgs().clear();
  rd.messages_after_persist = std::move(r.msgs_after_persist());
  r.msgs_after_persist().clear();
  rd.read_states = std::move(r.read_states());
  r.read_states().clear();

  handed_last_entry_.reset();
  if (!rd.entries.empty()) handed_last_entry_ = {{rd.entries.back().index, rd.entries.back().term}};
  handed_first_index_ = rd.entries.empty() ? 0 : rd.entries.front().index;
  handed_new_term_or_vote_ = new_term_or_vote;
  handed_waits_for_disk_ = new_term_or_vote || rd.snapshot || !rd.messages_after_persist.empty();
  handed_snapshot_index_ = rd.snapshot ? rd.snapshot->meta.index : 0;
  handed_applied_index_ = 0;
  handed_applied_bytes_ = entries_size(rd.committed_entries);
  if (!rd.committed_entries.empty()) handed_applied_index_ = rd.committed_entries.back().index;
  ready_outstanding_ = true;
  return rd;
}

void RawNode::advance() {
  SHOAL_CHECK(ready_outstanding_);
  ready_outstanding_ = false;
  raft_.on_persisted(handed_last_entry_, handed_snapshot_index_,
                     handed_last_entry_.has_value() || handed_snapshot_index_ > 0 || handed_new_term_or_vote_);
  if (handed_snapshot_index_ > 0 && handed_snapshot_index_ > raft_.log().applied()) {
    raft_.on_applied(handed_snapshot_index_, 0);
  }
  if (handed_applied_index_ > 0) raft_.on_applied(handed_applied_index_, handed_applied_bytes_);
}

bool RawNode::may_advance_unsynced() const {
  return ready_outstanding_ && !handed_waits_for_disk_ && raft_.role() == Role::kLeader;
}

void RawNode::advance_unsynced() {
  SHOAL_CHECK(may_advance_unsynced());
  ready_outstanding_ = false;
  if (handed_last_entry_) raft_.on_written(handed_first_index_, handed_last_entry_->first, handed_last_entry_->second);
  if (handed_applied_index_ > 0) raft_.on_applied(handed_applied_index_, handed_applied_bytes_);
}

void RawNode::synced(Index index, Term term) { raft_.on_synced(index, term); }

NodeStatus RawNode::status() const {
  return NodeStatus{raft_.id(),
                    raft_.hard_state(),
                    raft_.soft_state(),
                    raft_.log().applied(),
                    raft_.log().last_index(),
                    raft_.lead_transferee(),
                    raft_.tracker().conf_state()};
}

}  // namespace shoal::raft
