// Raft: the consensus state machine of one replica (Ongaro's thesis, shaped
// after etcd-io/raft). It does no I/O: callers feed it ticks, messages and
// proposals and collect the messages, entries and state it produces through
// RawNode. Single-threaded; owned by one RawNode. See docs/design/raft.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "raft/progress.h"
#include "raft/raft_log.h"
#include "raft/read_only.h"
#include "raft/rng.h"
#include "raft/storage.h"
#include "raft/types.h"

namespace shoal::raft {

// How the leader serves linearizable reads.
enum class ReadOnlyOption : uint8_t {
  kSafe,        // every read waits for a heartbeat quorum (ReadIndex)
  kLeaseBased,  // the leader answers alone while its lease holds (needs check_quorum)
};

// A replica's role; kPreCandidate runs the pre-vote round.
enum class Role : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };
// Short name for logs.
const char* to_string(Role r);

// Tuning and identity of one replica. Defaults suit a LAN with a 100 ms tick.
struct Config {
  NodeId id = kNoNode;
  // Ticks without leader contact before a follower campaigns (randomised in
  // [election_tick, 2*election_tick)). Must exceed heartbeat_tick.
  int election_tick = 10;
  // Ticks between leader heartbeats.
  int heartbeat_tick = 1;
  // Last index the application applied before a restart; 0 = the snapshot index.
  Index applied = 0;
  // Byte budget of entries in one kApp message (at least one entry is sent).
  uint64_t max_size_per_msg = 1 << 20;
  // In-flight kApp messages per follower in the replicate state.
  size_t max_inflight_msgs = 256;
  // Bytes of in-flight entries per follower.
  uint64_t max_inflight_bytes = kNoLimit;
  // Bytes of proposed but uncommitted entries the leader accepts; beyond it
  // proposals are refused (one proposal is always accepted when none is pending).
  uint64_t max_uncommitted_entries_size = 64 << 20;
  // Bytes of committed entries handed out per Ready.
  uint64_t max_committed_size_per_ready = 64 << 20;
  // ReadIndex requests a new leader holds until it commits in its term.
  size_t max_pending_reads = 4096;
  // Run a pre-vote round so a partitioned node cannot disrupt on rejoin.
  bool pre_vote = true;
  // A leader that has not heard from a quorum within an election timeout
  // steps down; followers in contact with a leader ignore vote requests.
  bool check_quorum = true;
  ReadOnlyOption read_only_option = ReadOnlyOption::kSafe;
  // A leader whose commit index moves sends no empty append just to say so:
  // followers learn it with the next append (at once under load) or the
  // next heartbeat (within heartbeat_tick). Membership changes are still
  // announced at once, and a follower's ReadIndex is answered after an
  // append that carries the commit index (where its window allows one).
  // Halves the messages per write.
  bool skip_bcast_commit = false;
  // Lease safety margin in ticks for the worst clock drift between replicas
  // over one election timeout (docs/design/raft.md). Must be < election_tick.
  int lease_drift_margin_ticks = 2;
  // A leader that its configuration names alone (one voter, no learner, not
  // joint) counts its own entries committed as soon as it appends them, not
  // once they are persisted: the Ready that hands them out to be stored also
  // hands them out to be applied. Saves a round per write. The host must
  // then store a Ready's entries no later than its applies (the same write,
  // or an earlier one), and may set it only where a reader may see a write
  // that is not yet synced (durability none): a crash before the sync
  // loses the entries and their applies together. Nothing else changes: no
  // message carries such an entry (there is no one to send it to).
  bool commit_lone_appends = false;
  // Seed of this replica's PRNG (election timeouts). Differ it per replica.
  uint64_t seed = 0;
  // TEST ONLY. Breaks safety: commits entries of previous terms by counting
  // replicas (Raft paper Figure 8). Used to prove the simulator catches it.
  bool unsafe_commit_previous_term_ForTest = false;

  // Checks the values above; a bad config is an InvalidArgument.
  Status validate() const;
};

// Why a proposal was refused.
enum class ProposeError : uint8_t {
  kNone,
  kNotLeader,           // see leader_hint (kNoNode when no leader is known)
  kTransferring,        // leadership transfer in progress
  kTooManyUncommitted,  // max_uncommitted_entries_size reached; retry later
  kConfChangePending,   // a membership change is still being applied
  kInvalidConfChange,   // the change is invalid for the current configuration
  kRemoved,             // this leader is no longer a member
};
// Short description for logs and client errors.
const char* to_string(ProposeError e);

// Outcome of a proposal: on success the entry's index and term (it is
// committed when an entry with this index and term is applied).
struct [[nodiscard]] Proposal {
  ProposeError error = ProposeError::kNone;
  NodeId leader_hint = kNoNode;
  Index index = 0;
  Term term = 0;
  bool ok() const { return error == ProposeError::kNone; }
};

// Volatile state worth reporting when it changes.
struct SoftState {
  NodeId lead = kNoNode;
  Role role = Role::kFollower;
  bool operator==(const SoftState&) const = default;
};

// The consensus state machine of one replica; see the file comment.
class Raft {
 public:
  // Restores from storage. `config` must be valid; storage must outlive this.
  Raft(const Config& config, const Storage* storage);

  // Advances logical time by one tick.
  void tick();
  // Processes one message (from a peer or a local kHup/kBeat/...).
  void step(Message m);
  // Appends a normal entry if this node is leader.
  Proposal propose(std::string data);
  // The application learned that `lead`, this follower's leader, can no
  // longer act (its process ended). The follower forgets it and its lease:
  // it grants votes at once, and campaigns on its next kHup. Returns false,
  // changing nothing, unless this is a follower led by `lead`. Only for
  // proof of an ended process: a live leader's lease counts on followers
  // refusing votes for an election timeout after hearing from it.
  bool leader_gone(NodeId lead);
  // The application holds, durably, the image of a committed state `s`
  // names that reached it without a snapshot message of the current term
  // (its sender lost leadership while sending it). A follower takes it as
  // it would from its leader: only if it is ahead of its commit index and
  // lists this replica; its log after it goes unless it matches. Its
  // leader, if known, is told where the log now ends once the snapshot is
  // durable. Returns whether it was taken (it is then in the next Ready).
  // Safe because a committed state is the same whoever exported it; the
  // caller must know that `s` is of this group's history (not of a group
  // replaced by an unsafe recovery).
  bool install_snapshot(const Snapshot& s);
  // Campaigns this replica started (pre-vote rounds, or votes without
  // pre-vote), not counting those of a leadership transfer.
  uint64_t campaigns() const { return campaigns_; }
  // Appends a membership change entry if this node is leader.
  Proposal propose_conf_change(const ConfChange& cc);
  // Applies a committed membership change; returns the resulting ConfState.
  ConfState apply_conf_change(const ConfChange& cc);
  // Entries up to (last_index, last_term) and any snapshot are stored;
  // `synced`: their write was synced, and so every write before it (a Ready
  // with entries, a snapshot or a new term or vote; one with none of them
  // is not synced).
  void on_persisted(std::optional<std::pair<Index, Term>> last_entry, Index snapshot_index, bool synced);
  // A leader's entries [first, last] are written, not yet synced: they are
  // stored, but count for this node toward commitment only once on_synced()
  // reports them.
  void on_written(Index first, Index last, Term last_term);
  // The log up to (index, term) is on disk.
  void on_synced(Index index, Term term);
  // Committed entries up to `index` were handed to the application.
  void on_applied(Index index, uint64_t applied_bytes);

  // Read-only state, for RawNode, status reports, tests and the simulator.
  NodeId id() const { return id_; }
  Term term() const { return term_; }
  NodeId vote() const { return vote_; }
  NodeId lead() const { return lead_; }
  Role role() const { return role_; }
  HardState hard_state() const { return {term_, vote_, log_.committed()}; }
  SoftState soft_state() const { return {lead_, role_}; }
  RaftLog& log() { return log_; }
  const RaftLog& log() const { return log_; }
  const ProgressTracker& tracker() const { return prs_; }
  NodeId lead_transferee() const { return lead_transferee_; }
  // Times this replica, as a follower, was told to commit beyond its log
  // and refused; and, as leader, forgot a follower's credit because its log
  // ends below it (Progress::forget_match). Either means a replica created
  // anew under an old id, or a log lost: the replica layer logs them.
  uint64_t commits_refused() const { return commits_refused_; }
  uint64_t credits_forgotten() const { return credits_forgotten_; }
  // Whether the leader may serve a read from its lease right now, counted
  // in ticks (the replica layer also checks a monotonic clock).
  bool lease_valid() const;
  // The leader tick the lease counts from: the quorum-th most recent tick
  // stamped on a message that followers echoed back (each refuses votes for
  // an election timeout after receiving it); 0 when there is no lease (not
  // leader, a transfer under way or done, no quorum of echoes yet).
  uint64_t lease_start_tick() const;
  // Ticks since creation (stamped on leader messages as lease_tick).
  uint64_t tick_count() const { return tick_count_; }

  // Sends the appends that proposals since the last call deferred (one
  // message per follower for all of them); RawNode::ready() calls it.
  void flush_proposals();
  // Output queues drained by RawNode::ready(): messages that may be sent
  // now, messages that must wait for durability, and read results.
  std::vector<Message>& msgs() { return msgs_; }
  std::vector<Message>& msgs_after_persist() { return msgs_after_persist_; }
  std::vector<ReadState>& read_states() { return read_states_; }
  const std::vector<Message>& msgs() const { return msgs_; }
  const std::vector<Message>& msgs_after_persist() const { return msgs_after_persist_; }
  const std::vector<ReadState>& read_states() const { return read_states_; }

 private:
  // raft.cc: roles, elections, follower side.
  void reset(Term term);
  void become_follower(Term term, NodeId lead);
  void become_pre_candidate();
  void become_candidate();
  void become_leader();
  void tick_election();
  void tick_heartbeat();
  bool promotable() const;
  bool has_unapplied_conf_change() const;
  void hup(bool transfer);
  void campaign(bool pre_vote, bool transfer);
  bool step_term(const Message& m);
  void step_vote_request(const Message& m);
  void step_follower(Message& m);
  void step_candidate(Message& m);
  void handle_append(const Message& m);
  void handle_heartbeat(const Message& m);
  void handle_snapshot(const Message& m);
  bool restore(const Snapshot& s);
  void send(Message m);
  void reset_randomized_election_timeout();

  // raft_leader.cc: leader side.
  void step_leader(Message& m);
  void handle_append_response(const Message& m, Progress& pr);
  void handle_heartbeat_response(const Message& m, Progress& pr);
  void handle_read_index(const Message& m);
  void handle_transfer_leader(const Message& m);
  void respond_read(const ReadOnly::Pending& p);
  void release_pending_reads();
  bool append_entries(std::vector<Entry> ents);
  // commit_lone_appends: a lone leader's appended entries are committed.
  void maybe_commit_lone();
  // The commit index followers are told: never past our own stored entries.
  Index commit_for_peers() const;
  bool maybe_commit();
  // After the commit index moved: tells the followers (unless
  // skip_bcast_commit) and sends them what they lack.
  void bcast_commit(Index committed_before);
  // Sends every follower the entries it has not been sent (no empty append).
  void send_unsent_entries();
  bool maybe_send_append(NodeId to, bool send_if_empty);
  bool send_snapshot(NodeId to, Progress& pr);
  void bcast_append();
  void bcast_heartbeat(const std::string& context);
  void send_timeout_now(NodeId to);
  void abort_leader_transfer() { lead_transferee_ = kNoNode; }
  bool committed_in_current_term() const;
  void after_conf_change();
  void step_down_if_removed();
  void maybe_auto_leave_joint();
  Proposal refuse(ProposeError e) const;
  // The last index this node may count as its own on disk.
  Index synced_last_index() const;

  Config config_;
  NodeId id_;
  Term term_ = 0;
  NodeId vote_ = kNoNode;
  NodeId lead_ = kNoNode;
  Role role_ = Role::kFollower;
  RaftLog log_;
  ProgressTracker prs_;
  SplitMix64 rng_;

  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;
  // Ticks since a leader last contacted us (or since start, in lease mode).
  int leader_contact_elapsed_ = 0;
  // Monotonic local ticks; stamped on leader messages for the lease.
  uint64_t tick_count_ = 1;
  // Once a TimeoutNow is sent, the lease is void for the rest of the term.
  bool lease_void_ = false;

  NodeId lead_transferee_ = kNoNode;
  uint64_t commits_refused_ = 0;
  uint64_t credits_forgotten_ = 0;
  uint64_t campaigns_ = 0;
  Index pending_conf_index_ = 0;
  uint64_t uncommitted_size_ = 0;
  ReadOnly read_only_;
  std::vector<Message> pending_read_msgs_;

  std::vector<Message> msgs_;
  std::vector<Message> msgs_after_persist_;
  std::vector<ReadState> read_states_;
  bool proposals_unsent_ = false;  // entries proposed since the last flush_proposals()
  // The first stored entry not known to be on disk (on_written), 0 if none:
  // the entries before it, up to the stable last index, are.
  Index unsynced_from_ = 0;
};

}  // namespace shoal::raft
