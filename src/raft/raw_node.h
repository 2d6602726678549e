// RawNode: the API the embedding code drives. It wraps Raft and packages
// its output into Ready batches. Single-threaded: one caller owns it.
//
// The loop (docs/design/raft.md):
//   tick() on a timer; step() each message received; propose()/read_index()
//   for clients; then while has_ready():
//     Ready rd = ready();
//     send rd.messages now (they depend on nothing unpersisted);
//     persist rd.snapshot, rd.entries and rd.hard_state (one durable write);
//     only then send rd.messages_after_persist;
//     apply rd.snapshot and rd.committed_entries (in order), serve rd.read_states;
//     advance(rd).
// A leader's Ready that holds nothing but its own log to wait for the disk
// (may_advance_unsynced()) may instead be advanced once written, before its
// sync (advance_unsynced()); the leader counts those entries as its own
// toward their commitment only once synced() reports them on disk, while
// its followers store them meanwhile (the Raft thesis, 10.2.1).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "raft/raft.h"

namespace shoal::raft {

// One batch of work for the application. See the class comment of RawNode
// for the order in which it must be handled.
struct Ready {
  // Leader and role, when they changed since the previous Ready.
  std::optional<SoftState> soft_state;
  // Term, vote and commit to persist, when they changed.
  std::optional<HardState> hard_state;
  // Entries to append to durable storage (they may overwrite a suffix).
  std::vector<Entry> entries;
  // A snapshot to persist and then apply to the state machine.
  std::optional<Snapshot> snapshot;
  // Committed entries to apply, in order, after persisting this Ready.
  std::vector<Entry> committed_entries;
  // Messages that may be sent at once, even before this Ready is durable.
  std::vector<Message> messages;
  // Messages that must not leave before hard_state, entries and snapshot
  // of this Ready are durable (votes, acknowledgements, ...).
  std::vector<Message> messages_after_persist;
  // Linearizable reads that may be served once applied >= index.
  std::vector<ReadState> read_states;

  // Whether there is anything to make durable (if not, every message may
  // be sent at once).
  bool has_persistent_state() const { return hard_state || !entries.empty() || snapshot; }
};

// What status() reports.
struct NodeStatus {
  NodeId id = kNoNode;
  HardState hard_state;
  SoftState soft_state;
  Index applied = 0;
  Index last_index = 0;
  NodeId lead_transferee = kNoNode;
  ConfState conf_state;
};

// The Raft driver; see the file comment for the loop.
class RawNode {
 public:
  // Validates `config` and restores state from `storage`, which must outlive
  // the node. A new group's storage holds its initial ConfState.
  static Result<std::unique_ptr<RawNode>> create(const Config& config, const Storage* storage);

  // Advances logical time by one tick; the caller ticks at a fixed interval.
  void tick() { raft_.tick(); }
  // Starts an election now (tests, bootstrap, a leader known gone).
  void campaign() { raft_.step(Message{.type = MessageType::kHup, .from = raft_.id()}); }
  // See Raft::leader_gone.
  bool leader_gone(NodeId lead) { return raft_.leader_gone(lead); }
  // See Raft::install_snapshot.
  bool install_snapshot(const Snapshot& s) { return raft_.install_snapshot(s); }
  // Delivers a message from a peer. Local-only types are rejected, and so
  // are responses from peers that are not members.
  Status step(Message m);
  // Proposes a normal entry. A follower refuses with kNotLeader and the
  // leader's id as hint, so the server can redirect or forward.
  Proposal propose(std::string data) { return raft_.propose(std::move(data)); }
  // Proposes a membership change (see ConfChange).
  Proposal propose_conf_change(const ConfChange& cc) { return raft_.propose_conf_change(cc); }
  // Applies a committed kConfChange entry; call it while applying that entry.
  ConfState apply_conf_change(const ConfChange& cc) { return raft_.apply_conf_change(cc); }
  // Requests a linearizable read; a ReadState with this context comes back
  // in a later Ready, or never (leader lost): the caller times out and retries.
  void read_index(std::string context);
  // Asks the leader to hand leadership to `transferee`.
  void transfer_leader(NodeId transferee);
  // The transport could not reach `id`: replication to it falls back to probing.
  void report_unreachable(NodeId id);
  // The transport finished sending a snapshot to `id` (failed: it was lost).
  void report_snapshot(NodeId id, bool failed);

  // Whether ready() would return any work.
  bool has_ready() const;
  // Returns the next batch. Must not be called again before advance().
  Ready ready();
  // Declares everything in the last Ready handled: its state durable, its
  // committed entries and snapshot applied. A Ready with entries, a snapshot
  // or a new term or vote counts as synced, and with it every write before
  // it (entries advanced unsynced included); one with none of them does not.
  void advance();
  // Whether the outstanding Ready may be advanced before its writes are
  // synced: this node leads, and the Ready holds no message to send after
  // them (a vote, an acknowledgement), no snapshot and no new term or vote.
  bool may_advance_unsynced() const;
  // As advance(), for a Ready that may_advance_unsynced(), written but not
  // yet synced: its entries count toward commitment for this node once
  // synced() reports them.
  void advance_unsynced();
  // This node's log up to (index, term) is on disk (after advance_unsynced()).
  void synced(Index index, Term term);

  // A snapshot of this replica's state for status pages and tests.
  NodeStatus status() const;
  // Read access for tests, the simulator's checkers and metrics.
  const Raft& raft() const { return raft_; }

 private:
  RawNode(const Config& config, const Storage* storage);

  Raft raft_;
  SoftState prev_soft_state_;
  HardState prev_hard_state_;
  bool ready_outstanding_ = false;
  // What the outstanding Ready handed out, for advance().
  std::optional<std::pair<Index, Term>> handed_last_entry_;
  Index handed_first_index_ = 0;
  bool handed_new_term_or_vote_ = false;
  bool handed_waits_for_disk_ = false;  // anything besides the log waits for the write
  Index handed_snapshot_index_ = 0;
  Index handed_applied_index_ = 0;
  uint64_t handed_applied_bytes_ = 0;
};

}  // namespace shoal::raft
