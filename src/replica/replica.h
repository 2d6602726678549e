// Replica: one member of a shard's Raft group on this node: the RawNode, its
// durable log (storage::RaftStore) and the state machine it feeds. Owned and
// driven by one worker thread (node::RaftHost); the published_* accessors
// may be read from any thread.
//
// Driving a replica (docs/design/cluster.md):
//   Tick()/Step()/Propose()/ReadIndex() change Raft state;
//   while HasReady(): BeginReady(batch) stages the durable state into a
//   batch shared by every replica of the worker (an ApplyRound's);
//   ApplyReady(now, round) stages the committed entries' applies behind it;
//   the host writes the round once (ApplyRound::Flush: then proposals and
//   reads are answered) and syncs it; FinishReady sends what had to wait
//   and advances. A leader with nothing but its own entries waiting for the
//   disk may instead finish once written (MayFinishUnsynced,
//   FinishUnsynced) and hear of the sync later (Synced).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kv/shard.h"
#include "raft/raw_node.h"
#include "replica/write_hints.h"
#include "storage/engine.h"
#include "storage/raft_store.h"

namespace shoal::replica {

// Writes a state machine's image as files into a folder; runs off the
// worker, reading a consistent view taken when it was made.
using ImageWriter = std::function<Status(const std::string& dir)>;

// The applies of one worker round, over all its groups (and, where the host
// stages them into the same batch first, their log appends): staged into
// one batch and written once; what must wait for that write (answers to
// proposals, reads, the published applied index, the state machines'
// in-memory state) runs after it, in the order it was added.
class ApplyRound {
 public:
  explicit ApplyRound(storage::Engine* engine) : engine_(engine), batch_(engine->NewBatch()) {}
  ApplyRound(const ApplyRound&) = delete;
  ApplyRound& operator=(const ApplyRound&) = delete;

  storage::WriteBatch& batch() { return *batch_; }
  void After(std::function<void()> fn) { after_.push_back(std::move(fn)); }
  // Runs once, at the next Flush, just before the batch is written: it may
  // stage what depends on everything staged by then.
  void BeforeWrite(std::function<void(storage::WriteBatch&)> fn) { before_.push_back(std::move(fn)); }
  // Writes what is staged (no sync: the log it comes from is durable on a
  // majority already) and runs what waited for it. A failed write stops the
  // node: the applies are in memory already, and the log applies them
  // again at the next start.
  void Flush();
  // Storage writes made, and the sequence number of the last one.
  uint64_t writes() const { return writes_; }
  uint64_t last_seq() const { return last_seq_; }

 private:
  storage::Engine* engine_;
  std::unique_ptr<storage::WriteBatch> batch_;
  std::vector<std::function<void(storage::WriteBatch&)>> before_;
  std::vector<std::function<void()>> after_;
  std::vector<std::function<void()>> spare_after_;
  uint64_t writes_ = 0;
  uint64_t last_seq_ = 0;
};

// What a Raft group replicates into. Apply must be deterministic.
class StateMachine {
 public:
  virtual ~StateMachine() = default;
  virtual uint64_t applied_index() const = 0;
  // Applies the committed normal entry e (non-empty data) and writes it to
  // storage; appends its client reply to *reply when reply is not null.
  virtual void Apply(const raft::Entry& e, std::string* reply) = 0;
  // Applies consecutive committed normal entries, as if one by one
  // (replies[i] may be null); a state machine may write them together.
  virtual void ApplyMany(std::span<const raft::Entry* const> entries, std::span<std::string* const> replies) {
    for (size_t i = 0; i < entries.size(); ++i) Apply(*entries[i], replies[i]);
  }
  // Stages consecutive committed normal entries into round.batch(), with
  // what must run once it is written (round.After); replies are filled at
  // once. Returns false, staging nothing, where they must be written alone
  // (ApplyMany): the state machine does not stage, or an entry must apply
  // by itself.
  virtual bool StageMany(std::span<const raft::Entry* const>, std::span<std::string* const>, ApplyRound&) {
    return false;
  }
  // Whether applies staged by StageMany wait for their round's write: the
  // stored data is then behind applied_index(), and no image may be taken.
  // (Entries that change no data, staged by StageApplied, also move the
  // index ahead of its stored record; an image carries the index it is
  // given, so those need not wait.)
  virtual bool HasUnwritten() const { return false; }
  // Stages "applied up to index" for an entry that changes no state.
  virtual void StageApplied(uint64_t index, storage::WriteBatch& batch) = 0;
  // The applied index that storage holds once what is staged is written.
  virtual uint64_t recorded_applied_index() const { return applied_index(); }
  // The whole state as of applied_index(), for a snapshot.
  virtual Result<std::string> Export() = 0;
  // Stages replacing the state by an exported image taken at `index`;
  // FinishImport() runs once the batch is written. A state machine that must
  // change storage outside `batch` (ingesting a file) first writes `marker`
  // durably with those changes; the replica removes it in `batch`, and calls
  // ResumeImport at its next start if a crash came in between.
  virtual Status StageImport(std::string_view image, uint64_t index, storage::WriteBatch& batch,
                             const kv::Shard::ImportMarker& marker) = 0;
  virtual Status ResumeImport(uint64_t, storage::WriteBatch&) {
    return Status::Corruption("an interrupted snapshot import cannot be resumed");
  }
  virtual void FinishImport() = 0;
  // The state as of applied_index() as files written later, off the worker;
  // null when this state machine exports only in memory (Export).
  virtual ImageWriter BeginFileExport() { return nullptr; }
  // Like StageImport, from the files an ImageWriter wrote into `dir`.
  virtual Status StageImportFiles(const std::string&, uint64_t, storage::WriteBatch&,
                                  const kv::Shard::ImportMarker&) {
    return Status::InvalidArgument("this state machine imports no files");
  }
  // Stages deleting the whole state: the replica leaves this node.
  virtual Status StageDestroy(storage::WriteBatch&) {
    return Status::InvalidArgument("this state machine cannot be destroyed");
  }
  // A proposal this replica, the leader in `term`, is about to append at
  // `index`: the state machine may annotate it (write hints). Appended()
  // follows with whether it was appended.
  virtual std::string Annotate(std::string data, uint64_t /*term*/, uint64_t /*index*/) { return data; }
  virtual void Appended(uint64_t /*index*/, bool /*ok*/) {}
  // A proposal this leader appends without annotating it (a group of one:
  // no follower to read annotations): what it tracked for them starts over.
  virtual void NotAnnotated() {}
  // The replica became its group's leader, or stopped being it.
  virtual void LeadershipChanged(bool /*leader*/) {}
  // Whether the state machine holds `slot` now (a data shard's range). Any
  // thread.
  virtual bool OwnsSlot(uint16_t) const { return true; }
  // The slot range an image names (inline, or files in `dir`); false: none.
  virtual bool ImageRange(std::string_view, const std::string&, uint16_t*, uint16_t*) const { return false; }
  // The unsafe recovery an inline image was taken in, if it records one
  // (the metadata does): a replica of a later recovery refuses an older one.
  virtual std::optional<uint64_t> ImageRecovery(std::string_view) const { return std::nullopt; }
  // Whether an image received as files in `dir` is intact (its checksums).
  virtual Status CheckImageFiles(const std::string&) const { return Status::Ok(); }
};

// The key-value state machine of a data shard: log entries carry batches of
// kv::Entry (EncodeKvBatch).
class KvStateMachine final : public StateMachine {
 public:
  // While write hints are on (*hints_on; null: always), the leader
  // annotates blind writes with their keys' state (WriteHints) and followers
  // keep no key metadata cache (the hints replace it). Off: every replica
  // finds the state itself, as builds before write hints do; the cluster
  // turns them on once every node reads them (cluster::kFeatureWriteHints).
  KvStateMachine(kv::Shard* shard, const kv::Limits* limits, const std::atomic<bool>* hints_on = nullptr);
  ~KvStateMachine() override;
  std::string Annotate(std::string data, uint64_t term, uint64_t index) override {
    if (!HintsOn()) {
      hints_.Reset();  // when they come on, tracking starts over
      return data;
    }
    return hints_.Annotate(std::move(data), term, index);
  }
  void Appended(uint64_t index, bool ok) override { hints_.Appended(index, ok); }
  // Untracked entries in flight: no hint may be given until they apply,
  // which a new start of tracking waits for (WriteHints::Annotate).
  void NotAnnotated() override { hints_.Reset(); }
  void LeadershipChanged(bool leader) override {
    hints_.Reset();
    shard_->SetMetaCacheActive(leader || !HintsOn());
  }
  uint64_t applied_index() const override { return shard_->applied_index(); }
  void Apply(const raft::Entry& e, std::string* reply) override;
  // One storage write for all the entries (unless one must apply alone).
  void ApplyMany(std::span<const raft::Entry* const> entries, std::span<std::string* const> replies) override;
  bool StageMany(std::span<const raft::Entry* const> entries, std::span<std::string* const> replies,
                 ApplyRound& round) override;
  bool HasUnwritten() const override { return shard_->staged_unwritten(); }
  void StageApplied(uint64_t index, storage::WriteBatch& batch) override {
    shard_->StageApplied(index, batch);
  }
  uint64_t recorded_applied_index() const override { return shard_->recorded_applied(); }
  Result<std::string> Export() override { return shard_->ExportImage(); }
  Status StageImport(std::string_view image, uint64_t index, storage::WriteBatch& batch,
                     const kv::Shard::ImportMarker& marker) override;
  Status ResumeImport(uint64_t index, storage::WriteBatch& batch) override {
    return shard_->ResumeImage(index, batch);
  }
  void FinishImport() override { shard_->FinishImage(); }
  ImageWriter BeginFileExport() override {
    std::shared_ptr<kv::ShardExport> exp = shard_->BeginExport();
    return [exp](const std::string& dir) { return exp->Write(dir); };
  }
  Status StageImportFiles(const std::string& dir, uint64_t index, storage::WriteBatch& batch,
                          const kv::Shard::ImportMarker& marker) override {
    return shard_->StageImportFiles(dir, index, batch, marker);
  }
  Status StageDestroy(storage::WriteBatch& batch) override { return shard_->StageDestroy(batch); }
  bool OwnsSlot(uint16_t slot) const override { return shard_->OwnsSlot(slot); }
  Status CheckImageFiles(const std::string& dir) const override { return kv::Shard::CheckImageFiles(dir); }
  bool ImageRange(std::string_view image, const std::string& dir, uint16_t* b, uint16_t* e) const override {
    return dir.empty() ? kv::Shard::ImageRange(image, b, e) : kv::Shard::ImageFilesRange(dir, b, e);
  }
  kv::Shard* shard() { return shard_; }

 private:
  // ApplyMany and StageMany: decodes the entries into one batch of writes;
  // false where they cannot go together (malformed, mixed protocols, one
  // that must apply alone).
  struct Decoded;
  bool DecodeTogether(std::span<const raft::Entry* const> entries, Decoded* d) const;
  // Hands each log entry its own replies (one RESP value per command).
  static void SplitReplies(const Decoded& d, std::string_view out, std::span<std::string* const> replies);
  bool HintsOn() const { return hints_on_ == nullptr || hints_on_->load(std::memory_order_acquire); }
  kv::Shard* shard_;
  const kv::Limits* limits_;
  const std::atomic<bool>* hints_on_;
  WriteHints hints_;
  // StageMany's decoded entries, kept for the next round (their storage is
  // decoded into again, up to a bound: fewer allocations per write).
  std::unique_ptr<Decoded> staged_;
};

// A log entry's data for a batch of writes; `protocol` (2 or 3) is the RESP
// version the proposer's client speaks, for the replies.
std::string EncodeKvBatch(std::span<const kv::Entry> entries, int protocol);
inline std::string EncodeKvBatch(const std::vector<kv::Entry>& entries, int protocol) {
  return EncodeKvBatch(std::span<const kv::Entry>(entries), protocol);
}
bool DecodeKvBatch(std::string_view data, std::vector<kv::Entry>* entries, int* protocol);
// As DecodeKvBatch, into (*entries)[*used] on, advancing *used (how many:
// *added, at least one when true); entries from *used on are kept ones,
// decoded into again (their strings keep their storage), and the vector
// grows as needed. On false *used counts what it had plus some.
bool AppendKvBatch(std::string_view data, std::vector<kv::Entry>* entries, size_t* used, int* protocol,
                   size_t* added);
// Whether `batch` is a kv batch without hints: then *count is its number of
// kv entries and its protocol byte *protocol, and JoinKvBatches may join it.
bool JoinableKvBatch(std::string_view batch, uint32_t* count, char* protocol);
// One kv batch of the entries of `batches`, in order: all joinable, of one
// protocol.
std::string JoinKvBatches(std::span<const std::string_view> batches);

// A snapshot whose image travels beside the Raft messages: its kSnap
// message carries this ticket in place of the image.
struct SnapshotTicket {
  raft::NodeId from = raft::kNoNode;  // the node that exported it
  uint64_t export_id = 0;             // names one export's bytes
  std::string Encode() const;
  // False unless `data` is exactly an encoded ticket.
  static bool Decode(std::string_view data, SnapshotTicket* out);
};

// Carries snapshot images between nodes in chunks, beside the Raft messages
// (node::SnapshotStreams; the simulation has its own over its network).
class SnapshotCourier {
 public:
  virtual ~SnapshotCourier() = default;
  // On the group's worker: has `write` write the image off the worker,
  // carries it to msg.to and then sends msg (the ticket); the outcome
  // reaches Replica::ReportSnapshot on the group's worker.
  virtual void Ship(uint64_t group, raft::Message msg, ImageWriter write) = 0;
  // The folder holding the whole image `ticket` names, durably received,
  // or "" while it has not all arrived.
  virtual std::string Received(uint64_t group, const SnapshotTicket& ticket) = 0;
  // True when Received only ever names images whose files passed the state
  // machine's CheckImageFiles as they arrived (off the workers); false: the
  // replica checks each before Raft takes it.
  virtual bool ChecksImages() const { return false; }
  // The image `ticket` names was imported: delete it.
  virtual void Consumed(uint64_t group, const SnapshotTicket& ticket) = 0;
  // The replica left: delete every image of the group.
  virtual void Discard(uint64_t group) = 0;
  // On the group's worker: the index of the image of the group this node
  // is still carrying to `to` (shipped earlier, perhaps in an older term of
  // its leadership, neither done nor given up nor recalled), if any. Its
  // outcome reaches Replica::ReportSnapshot like any other.
  virtual std::optional<raft::Index> Carrying(uint64_t group, raft::NodeId to) = 0;
  // On the group's worker, after Carrying: that transfer now stands for the
  // snapshot Raft sends in `term`; its ticket (if it has one) leaves in it.
  virtual void Adopt(uint64_t group, raft::NodeId to, raft::Term term) = 0;
  // On the group's worker: abandon this group's transfers, shipped before
  // this call, to nodes not in `keep` (the replica starts over: `keep` is
  // empty; or their receivers left the group). Raft no longer
  // tracks those receivers from here, so no outcome is needed; one that had
  // finished just before may still be reported (Raft ignores or survives it).
  virtual void Recall(uint64_t group, const std::vector<raft::NodeId>& keep) = 0;
};

// A split (docs/design/splits.md): a log entry of the parent group that
// hands the slots from `slot` to the end of its range to the new group
// `child`. Every replica applies it at the same index: the parent's range
// shrinks, and the child starts beside it with the parent's membership, its
// data in place.
struct SplitCommand {
  uint64_t child = 0;
  uint16_t slot = 0;
  std::string Encode() const;
  // False unless `data` is exactly an encoded split.
  static bool Decode(std::string_view data, SplitCommand* out);
};

class Replica;

// Creates the child of a split on this node (the cluster layer; the
// simulation has its own). StageSplit runs on the parent's worker while the
// parent applies the split: it stages the parent's smaller range and the
// child's state into `batch` (StageSplitChild) and returns false if it
// created no child here (the parent's range still shrinks: the replica
// stages that itself then). FinishSplit runs once the batch is written.
class Splitter {
 public:
  virtual ~Splitter() = default;
  virtual bool StageSplit(Replica& parent, const SplitCommand& split, const raft::ConfState& conf,
                          uint64_t index, storage::WriteBatch& batch) = 0;
  virtual void FinishSplit(Replica& parent, const SplitCommand& split) = 0;
  // Claims slots [begin, end) for an image `r` is about to take: false
  // when another replica on this node holds, or is being opened with, some
  // of them (an image from before a split, reaching a node that has the
  // split's child already). Until ReleaseImage(r) no other replica here may
  // be created over those slots: the claim covers the time from the image's
  // arrival until its import is written, when the image is pending in Raft
  // and other workers run.
  virtual bool ClaimImage(Replica&, uint16_t, uint16_t) { return true; }
  virtual void ReleaseImage(Replica&) {}
};

struct StoredIncarnation {
  raft::NodeId member = raft::kNoNode;  // Raft member id (common/member_id.h)
  uint64_t incarnation = 0;
  bool retired = false;  // deleted (the placement mints a new one for this node)
  bool found = false;    // a record exists (none: a replica from before them)
};
// The incarnation of this node's replica of `group` recorded on disk.
Result<StoredIncarnation> ReadIncarnation(storage::Engine* engine, uint64_t group);

// Stages a split's child on this node into `batch`: the parent shard's
// smaller range (kv::Shard::StageSplit), and the child group's Raft state:
// log at index 1, term 1, membership `conf`, as a founding group's, and the
// parent replica's member id and incarnation (`member`). With
// `recovery` > 0 (the child of a parent forced by an unsafe recovery, its
// membership this node alone) the child belongs to that recovery of its
// own from the start, as a forced replica does. Fails (nothing staged) if
// the child already has Raft state here; a read that fails stops the node
// (the split applies again at restart).
Status StageSplitChild(storage::Engine* engine, kv::Shard& parent, const SplitCommand& split,
                       const raft::ConfState& conf, uint64_t index, storage::WriteBatch& batch,
                       uint64_t recovery = 0, const StoredIncarnation& member = {});

struct ReplicaOptions {
  uint64_t group = 0;
  // This replica's Raft member id: its node's id with its incarnation
  // (common/member_id.h). Refused: a member other than the one whose state
  // is here.
  raft::NodeId node_id = raft::kNoNode;
  uint64_t incarnation = 0;
  int tick_ms = 50;
  int election_tick = 10;
  int heartbeat_tick = 1;
  // Founding members of a new group; empty: join an existing group (the
  // leader sends a snapshot).
  std::vector<raft::NodeId> bootstrap_voters;
  // State machine image the founders start from (at index 1).
  std::string bootstrap_image;
  // Compact the log once this many applied entries are kept.
  uint64_t compact_entries = 4096;
  // ... or once the log passes this many bytes.
  uint64_t compact_bytes = 4 << 20;
  // Bytes of applied entries kept in memory besides the engine's copy (the
  // newest; a follower further behind is sent entries read from the engine).
  uint64_t log_cache_bytes = 256 << 10;
  // Seed of Raft's election timer; 0: random (simulations fix it).
  uint64_t seed = 0;
  // Carries snapshots of state machines that export files; null: snapshots
  // travel inside the Raft message.
  SnapshotCourier* courier = nullptr;
  // A follower being sent a snapshot keeps the leader from compacting the
  // log past that snapshot, for at most this many entries beyond it.
  uint64_t compact_hold_entries = 1 << 16;
  // Creates split children; null: split entries only shrink the range.
  Splitter* splitter = nullptr;
  // A replica that is its group's only member applies its entries in the
  // Ready round that logs them (raft::Config::commit_lone_appends): one
  // storage write a write, not two. Only where durability is none: a
  // reader may then see an apply before its log entry is synced. The host
  // stages a Ready's log records no later than its applies (ApplyRound).
  bool commit_lone_appends = false;
  // Set (true) when this node begins to shut down: from then on no read is
  // served from a lease, because peers take the refused connection to its
  // Raft port as proof that it ended and elect new leaders at once
  // (PeerGone). Null: never.
  const std::atomic<bool>* stopping = nullptr;
};

// Reply callbacks run on the replica's worker thread. applied: `reply` is
// the state machine's output for the entry; otherwise it is one error
// reply that stands for the whole entry (it was not applied, or its
// outcome is unknown).
using ReplyFn = std::function<void(bool applied, std::string reply)>;
using ReadFn = std::function<void(bool ok)>;
// The outcome of a write queued with Replica::ProposeJoined: `refused` says
// why it was never proposed (it is in no log) when !refused.ok(); otherwise
// applied and reply are as ReplyFn's, for this write's own kv entries.
using JoinedFn = std::function<void(raft::Proposal refused, bool applied, std::string reply)>;

class Replica {
 public:
  static Result<std::unique_ptr<Replica>> Open(storage::Engine* engine, const ReplicaOptions& opts,
                                               std::unique_ptr<StateMachine> sm);

  uint64_t group() const { return opts_.group; }
  raft::NodeId node_id() const { return opts_.node_id; }  // the Raft member id
  uint64_t incarnation() const { return opts_.incarnation; }
  StateMachine& state_machine() { return *sm_; }

  void Tick(int64_t now_mono_us);
  // A message from a peer, received at now_mono_us; malformed or foreign
  // messages are dropped, and so are vote requests while a leader was heard
  // within an election timeout of real time (the leader's lease counts on it).
  void Step(raft::Message m, int64_t now_mono_us);
  // Proposes `data`; done(reply) runs once the entry is applied here, or with
  // an error reply if it cannot be. Returns the refusal (not leader...).
  raft::Proposal Propose(std::string data, ReplyFn done, int64_t now_mono_us);
  // Queues `batch`, an encoded kv batch (EncodeKvBatch) of one client, for
  // the log entry that the next Ready round (BeginReady) proposes with the
  // others queued meanwhile: one entry a round for the writes of many
  // connections, each of which gets the replies of its own kv entries. An
  // entry costs a leader the same whatever it holds (its append, a pending
  // write, its decode at apply), and pipelined writes over 16 shards made
  // about two SETs an entry. A batch that cannot be joined (with hints, or
  // one entry's worth) goes alone, in its turn. Refused at once, or in that
  // round, when this replica does not lead or is retired. Write batches
  // whose kv entries must be applied alone (kv::MustApplyAlone) go through
  // Propose instead.
  void ProposeJoined(std::string batch, JoinedFn done, int64_t now_mono_us);
  // Writes queued by ProposeJoined, not yet proposed.
  size_t joined_queued() const { return joined_.size(); }
  // Calls done(true) once a linearizable read may be served from local state:
  // everything committed when it was called is applied here. On the leader
  // within its lease that needs no message; otherwise the leader confirms
  // with a heartbeat round (a follower's request is forwarded to it).
  void ReadIndex(ReadFn done, int64_t now_mono_us);
  raft::Proposal ProposeConfChange(const raft::ConfChange& cc) {
    return node_->propose_conf_change(cc);
  }
  // Starts handing leadership to `to`; the lease ends at once (the
  // transferee may win an election before this replica steps down).
  void TransferLeader(raft::NodeId to) {
    lease_until_us_.store(0, std::memory_order_release);
    node_->transfer_leader(to);
  }
  void ReportUnreachable(raft::NodeId to) { node_->report_unreachable(to); }
  // The courier finished carrying a snapshot to `to` (failed: it gave up).
  void ReportSnapshot(raft::NodeId to, bool failed) {
    if (retired_) return;
    if (failed) snapshot_holds_.erase(to);
    node_->report_snapshot(to, failed);
  }
  void Campaign() { node_->campaign(); }
  // The courier holds, durably, the whole image `ticket` names. It may come
  // from a leader that lost its leadership while sending it and went on: its
  // ticket, of an older term, will never be taken, but the image is of a
  // committed state all the same. A follower takes it then (install_snapshot)
  // if it is still ahead of its commit index; if it cannot now (campaigning),
  // it tries again each tick while the image is here. Replicas of a group
  // that went through an unsafe recovery only take tickets of their term.
  void ImageArrived(const SnapshotTicket& ticket);
  // Images taken on arrival, without their ticket (ImageArrived).
  uint64_t images_taken_on_arrival() const { return images_taken_.load(std::memory_order_relaxed); }
  // Node `node` has ended (its process is gone: the connection it had open
  // to this node closed and its Raft port refuses connections). If it led
  // this replica's group, the replica forgets it and its lease and stands
  // for election at once, or three ticks per voter ranked before it (by
  // id) if by then no leader is known and its term has not moved, so the
  // followers neither split the vote nor depose the winner. True if it did. The proof
  // must be of an ended process: a live leader may still serve reads from
  // its lease.
  bool PeerGone(raft::NodeId node, int64_t now_mono_us);
  // Campaigns started here: every one, and those for a leader known gone.
  uint64_t campaigns() const { return campaigns_.load(std::memory_order_relaxed); }
  uint64_t campaigns_for_gone_leader() const { return campaigns_gone_.load(std::memory_order_relaxed); }
  // Proposes splitting the group (a data shard's leader only): see
  // SplitCommand. The outcome shows in the shard's range once applied.
  raft::Proposal ProposeSplit(const SplitCommand& split, int64_t now_mono_us) {
    return Propose(split.Encode(), [](bool, std::string) {}, now_mono_us);
  }
  // Stages deleting this replica's log, hard state, membership and state
  // machine, and fails every waiter: the replica leaves this node.
  Status StageDestroy(storage::WriteBatch& batch);
  // UNSAFE: makes this replica the group's only voter (recovery of a group
  // whose majority is lost for good), once per `recovery` number (kept on
  // disk). Waiters fail; Raft restarts on the new membership and elects
  // this replica. False: nothing done (already done, in a Ready round, or
  // refused: then `refused`, if given, says why). `learner_ok`: a learner
  // with state may be forced too (the meta shard, whose learners hold the
  // metadata when every voter is lost).
  Result<bool> ForceSoleVoter(uint64_t recovery, std::string* refused = nullptr, bool learner_ok = false);
  // ForceSoleVoter refuses a replica that heard from a leader within this
  // many ticks (and nodes gossip theirs that did not: leaderless replicas).
  static constexpr uint64_t kForceQuietTicks = 60;
  // Starts this replica over as an empty one of a group recovered unsafely
  // elsewhere (`recovery`, kept on disk): log and membership go, and the
  // state machine's state as its StageDestroy says; term and vote stay. It
  // waits to be added and sent a snapshot of that recovery or a later one.
  // False: nothing done (not older than `recovery`, or in a Ready round).
  Result<bool> ResetForRecovery(uint64_t recovery);
  // The unsafe recovery this replica belongs to (0: none): a replica of an
  // older one is stale and must go. SetRecovery records it (new replicas).
  uint64_t recovery() const { return recovery_; }
  // recovery(), as last published; any thread.
  uint64_t published_recovery() const { return recovery_pub_.load(std::memory_order_acquire); }
  Status SetRecovery(uint64_t recovery);
  // Fails proposals and reads that waited past their deadline.
  void ExpireWaiters(int64_t now_mono_us);

  bool HasReady() const { return !ready_ && (node_->has_ready() || !joined_.empty()); }
  // Stages this Ready's durable state into batch; messages that may leave
  // now go to *send. Returns false if there was nothing to do.
  // *needs_sync is set when the staged state must be durable before the
  // Ready completes (entries, a snapshot, a new term or vote); a changed
  // commit index alone need not be.
  bool BeginReady(storage::WriteBatch& batch, std::vector<raft::Message>* send, bool* needs_sync);
  // The same, into round.batch(); the caller applies with ApplyReady(now,
  // round). A lone group's entries that this round commits as it logs them
  // (commit_lone_appends) are logged only if the round's batch is written
  // before they are applied in it: otherwise the log starts after them
  // (storage::RaftStore::FinishDeferred), one record fewer per write.
  bool BeginReady(ApplyRound& round, std::vector<raft::Message>* send, bool* needs_sync);
  // Once the batch is written (not yet durable): applies the committed
  // entries, which a majority already holds durably, and answers their
  // proposals (one storage write of their own).
  void ApplyReady(int64_t now_mono_us);
  // The same, staged into `round` behind the log records BeginReady staged
  // there and the other replicas' applies: the batch is atomic, so a crash
  // never keeps an apply without the log it came from. The answers, reads
  // and the published applied index wait for round.Flush(), which the
  // caller runs before FinishReady.
  void ApplyReady(int64_t now_mono_us, ApplyRound& round);
  // Once the batch is durable: *send gets the messages that had to wait, and
  // Raft learns that the Ready is handled.
  void FinishReady(std::vector<raft::Message>* send, int64_t now_mono_us);
  // Whether the outstanding Ready may finish before the round's write is
  // synced: a leader's whose new log entries are all that waits for the
  // disk (raft::RawNode::may_advance_unsynced). The host then calls
  // FinishUnsynced once the round is written, and Synced with what it
  // returned once that write is synced: meanwhile the leader goes on to its
  // next rounds, and counts the entries as its own toward their commitment
  // only once synced (its followers store them in parallel).
  bool MayFinishUnsynced() const;
  struct SyncReport {
    raft::Index index = 0;
    raft::Term term = 0;
  };
  SyncReport FinishUnsynced(int64_t now_mono_us);
  void Synced(const SyncReport& report);

  const raft::Raft& raft() const { return node_->raft(); }
  const storage::RaftStore& store() const { return *store_; }
  bool is_leader() const { return node_->raft().role() == raft::Role::kLeader; }

  // --- any thread
  raft::NodeId published_leader() const { return leader_.load(std::memory_order_acquire); }
  uint64_t published_term() const { return term_.load(std::memory_order_acquire); }
  bool published_is_leader() const { return published_leader() == opts_.node_id; }
  // True while the leader may answer a read alone from local state: its
  // lease holds and it has applied everything committed so far (a follower
  // may already have applied, and served, an entry the leader has not).
  bool LeaseReadOk(int64_t now_mono_us) const {
    const uint64_t commit = commit_.load(std::memory_order_acquire);
    return LeaseHolds(now_mono_us) && applied_.load(std::memory_order_acquire) >= commit;
  }
  // Odd while a snapshot is being imported (the range is cleared before its
  // files are ingested): a read that ran while it was odd, or saw it change,
  // may have seen a half state and must not be answered.
  uint64_t import_generation() const { return import_gen_.load(std::memory_order_acquire); }
  uint64_t published_applied() const { return applied_.load(std::memory_order_acquire); }
  // The group's membership as this replica has applied it (null before the
  // first round).
  std::shared_ptr<const raft::ConfState> published_conf() const { return std::atomic_load(&conf_); }

  // --- its worker
  // Whether a message from the group's leader (appends, heartbeats,
  // snapshots) arrived within the last `ticks` ticks.
  bool HeardFromLeaderWithin(uint64_t ticks) const { return ticks_ - leader_contact_tick_ <= ticks; }
  // Whether a message from a leader arrived since this replica opened.
  bool HeardFromLeaderSinceOpen() const { return leader_contacted_; }
  bool retired() const { return retired_; }
  // Images Raft asked for while this round's applies were not written yet
  // (refused: it asks again).
  uint64_t images_deferred() const { return images_deferred_; }

 private:
  Replica(storage::Engine* engine, const ReplicaOptions& opts, std::unique_ptr<StateMachine> sm)
      : engine_(engine), opts_(opts), sm_(std::move(sm)) {}
  Status Init();
  // Creates the RawNode from the store (Init, ForceSoleVoter).
  Status StartNode();
  // Fails every waiter, drops what was being sent, and starts Raft again
  // from the store (ForceSoleVoter, ResetForRecovery).
  Status Restart();
  Status LoadRecovery();
  // Writes `batch` and makes it durable.
  Status WriteSynced(storage::WriteBatch& batch);
  // Answers every waiting write with `reply` and fails every waiting read.
  void FailWaiters(const std::string& reply);
  // ImageArrived's work, again on each tick while it waits.
  void TakeArrivedImage();
  // Whether Raft holds the snapshot `t` names, not imported yet.
  bool ImageInUse(const SnapshotTicket& t) const;
  // The checks an image passes before Raft may take it: intact, and its
  // slots free here (Splitter::ClaimImage). A refused one is thrown away.
  bool AdmitImage(const SnapshotTicket& t, const std::string& dir, raft::Index index, raft::NodeId from);
  // Ends the Splitter::ClaimImage claim once no image is pending in Raft
  // but the one at `imported`, whose import was just written.
  void MaybeReleaseImage(raft::Index imported = 0);
  void WriteRecovery(uint64_t recovery, raft::Index void_upto, storage::WriteBatch& batch);
  bool BeginReady(storage::WriteBatch& batch, std::vector<raft::Message>* send, bool* needs_sync, ApplyRound* round);
  void FinishReady(std::vector<raft::Message>* send, int64_t now_mono_us, bool synced);
  void ApplyCommitted(const std::vector<raft::Entry>& ents, ApplyRound& round);
  // Stages the state machine's applied index where its stored record is
  // below `log_start` (entries up to it leave the log in `batch`).
  void RecordAppliedUpTo(raft::Index log_start, storage::WriteBatch& batch);
  // Applies a split entry (the earlier applies are written).
  void ApplySplit(const raft::Entry& e, const SplitCommand& split, storage::WriteBatch& batch);
  // Answers the proposal of the entry at (index, term), if it waits here.
  void Answer(raft::Index index, raft::Term term, std::string reply);
  void Publish(int64_t now_mono_us);
  // When the lease counted from leader tick `tick` runs out (0: unknown tick).
  int64_t LeaseEnd(uint64_t tick) const;
  bool Stopping() const { return opts_.stopping != nullptr && opts_.stopping->load(std::memory_order_acquire); }
  bool LeaseHolds(int64_t now_mono_us) const {
    return lease_until_us_.load(std::memory_order_acquire) > now_mono_us && !Stopping();
  }
  void ServeReads();
  // Hands an outgoing message to *send, or a snapshot's to the courier.
  void Route(raft::Message m, std::vector<raft::Message>* send);
  // The oldest index a follower sent a snapshot still needs, or 0.
  raft::Index SnapshotFloor();

  struct PendingWrite {
    raft::Term term;
    ReplyFn done;
    int64_t deadline_us;
  };
  struct PendingRead {
    ReadFn done;
    int64_t deadline_us;
    uint64_t index = 0;  // 0: waiting for the leader's answer
  };
  // The term and leader when reads_ was last checked (Publish).
  raft::Term reads_term_ = 0;
  raft::NodeId reads_leader_ = raft::kNoNode;

  storage::Engine* engine_;
  ReplicaOptions opts_;
  std::unique_ptr<StateMachine> sm_;
  std::unique_ptr<storage::RaftStore> store_;
  uint64_t read_errors_logged_ = 0;
  uint64_t images_deferred_ = 0;
  std::unique_ptr<raft::RawNode> node_;
  std::optional<raft::Ready> ready_;
  std::vector<raft::NodeId> snapshots_sent_;
  std::vector<raft::NodeId> snapshots_failed_;
  // Exports made for snapshots, by export id, until their message leaves.
  std::map<uint64_t, ImageWriter> exports_;
  uint64_t last_export_id_ = 0;
  struct Hold {
    raft::Index index;
    uint64_t since_tick;
  };
  // Followers sent a snapshot, until they have caught up past it: the log
  // after its index is kept for them (SnapshotFloor).
  std::map<raft::NodeId, Hold> snapshot_holds_;
  uint64_t recovery_ = 0;            // see recovery()
  std::atomic<uint64_t> recovery_pub_{0};
  raft::Index void_conf_upto_ = 0;   // membership changes at or below: void (recovered)
  uint64_t force_refused_ = 0;       // the recovery whose refusal was logged
  std::map<raft::Index, PendingWrite> writes_;
  // ProposeJoined's queue, proposed by the next BeginReady.
  struct JoinedWrite {
    std::string batch;
    JoinedFn done;
    int64_t queued_us;
    uint32_t count;  // its kv entries (each has one reply)
    bool alone;      // proposed as it is
  };
  std::vector<JoinedWrite> joined_;
  void ProposeQueued();
  // Refuses every queued write with `why`.
  void RefuseQueued(raft::ProposeError why);
  std::map<std::string, PendingRead> reads_;
  uint64_t next_read_ = 0;
  // Read contexts are <nonce>:<counter>, unique across replicas and their
  // restarts (a stale answer must never match a newer read).
  std::string read_prefix_;
  // When each recent Raft tick happened (monotonic), oldest first: the
  // lease counts from the time of the tick its quorum echoed.
  std::deque<std::pair<uint64_t, int64_t>> tick_times_;
  // Real time of the last message from a leader of the current term or a
  // newer one (INT64_MIN: not yet set; the first Tick or Step sets it, so a
  // restarted replica refuses votes for an election timeout first).
  int64_t leader_contact_us_ = INT64_MIN;
  raft::Index term_start_index_ = 0;
  // The last split entry in the log: until it applies, no lease (the
  // lease would vouch for slots the split hands to a group elected
  // elsewhere).
  raft::Index split_index_ = 0;
  std::atomic<raft::NodeId> leader_{raft::kNoNode};
  std::atomic<uint64_t> term_{0};
  std::atomic<int64_t> lease_until_us_{0};
  std::atomic<uint64_t> applied_{0};
  // The commit index, published before any message that carries it leaves.
  std::atomic<uint64_t> commit_{0};
  std::atomic<uint64_t> import_gen_{0};
  std::shared_ptr<const raft::ConfState> conf_;  // atomic_load/atomic_store only
  uint64_t ticks_ = 0;
  // Images may be on their way from this node (Recall has work): shipped
  // since the replica last started over, or left by an earlier run
  // (SnapshotStreams takes those up again).
  bool sending_images_ = true;
  uint64_t seen_commits_refused_ = 0, seen_credits_forgotten_ = 0;  // last logged (Tick)
  uint64_t leader_contact_tick_ = 0;
  bool leader_contacted_ = false;
  // A campaign due at this tick, for a leader known gone (0: none).
  uint64_t campaign_at_tick_ = 0;
  uint64_t campaign_term_ = 0;  // the term it was due in: a newer one cancels it
  std::atomic<uint64_t> campaigns_{0};
  std::atomic<uint64_t> campaigns_gone_{0};
  bool retired_ = false;  // its state is deleted: never driven again
  bool image_claimed_ = false;  // Splitter::ClaimImage holds slots for a pending image
  std::optional<SnapshotTicket> arrived_;  // an image ImageArrived could not take yet
  std::atomic<uint64_t> images_taken_{0};
};

}  // namespace shoal::replica
