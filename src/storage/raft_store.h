// RaftStore: one Raft group's durable log, hard state and membership in the
// engine's raft column family, as raft::Storage reads them. The newest
// entries are also kept in memory (the ones Raft sends and applies next);
// older ones, down to the last compaction, are read back from the engine
// when a lagging follower needs them. Every entry's term and size stay in
// memory (16 bytes each), so term() never reads the disk. Owned by the
// thread that drives the group's RawNode.
//
// Keys (group = u64 big endian):
//   'L' group index -> entry      'H' group -> hard state
//   'S' group       -> log start (index, term of the last compacted entry)
//   'C' group       -> membership as of the state machine's applied index
// Writes are staged into a caller's WriteBatch (so that every group on a
// worker commits with one write and one fsync) and take effect in memory at
// once; the caller must write the batch before it tells Raft they are durable.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "raft/storage.h"
#include "storage/engine.h"

namespace shoal::storage {

class RaftStore final : public raft::Storage {
 public:
  // Produces a snapshot of the state machine's current state (for lagging
  // or new followers): meta.index is the applied index.
  using SnapshotFn = std::function<Result<raft::Snapshot>()>;

  // Loads group's state; an unknown group starts empty (no members).
  static Result<std::unique_ptr<RaftStore>> Open(Engine* engine, uint64_t group);

  // Whether `group` has a log or a membership here (was a member). A read
  // that fails stops the node (FailStop): no answer is safe to act on.
  static bool HasState(Engine* engine, uint64_t group);
  // raft::Storage
  Result<raft::InitialState> initial_state() const override;
  Result<std::vector<raft::Entry>> entries(raft::Index lo, raft::Index hi,
                                           uint64_t max_bytes) const override;
  Result<raft::Term> term(raft::Index i) const override;
  raft::Index first_index() const override { return start_index_ + 1; }
  raft::Index last_index() const override { return start_index_ + index_.size(); }
  Result<raft::Snapshot> snapshot() const override;

  void set_snapshot_fn(SnapshotFn fn) { snapshot_fn_ = std::move(fn); }

  // Appends entries, replacing any conflicting suffix. With `defer`, their
  // records are not staged yet: FinishDeferred must be called before
  // `batch` is written (a later Append stages them itself).
  void Append(const std::vector<raft::Entry>& ents, WriteBatch& batch, bool defer = false);
  // Settles a deferred Append into `batch`, which is about to be written:
  // where the state machine's applies of every deferred entry are in it or
  // were written before (applied >= last_index()) and they are committed,
  // their records are never needed (a lone group: no follower reads them,
  // and a restart starts after them): the log is compacted past them
  // instead of holding them. Otherwise their records are staged.
  // Returns whether it compacted.
  bool FinishDeferred(WriteBatch& batch, raft::Index applied);
  bool has_deferred() const { return deferred_from_ != 0; }
  // Entries whose records FinishDeferred left out, since the store opened.
  uint64_t entries_unlogged() const { return entries_unlogged_; }
  // Writes the whole hard state.
  void SetHardState(const raft::HardState& hs, WriteBatch& batch);
  // Takes a Ready's hard state: written where its term or vote differs from
  // the last one written, and otherwise (a new commit index alone) kept in
  // memory. Raft needs the term and vote on disk before this node speaks in
  // that term; the commit index need not be durable (a restarted replica
  // learns it again from its leader, and Load puts it at least at the log's
  // start, which is committed). Written, it cost a record per group a round.
  void NoteHardState(const raft::HardState& hs, WriteBatch& batch);
  // Records the membership the state machine has applied.
  void SetConfState(const raft::ConfState& cs, WriteBatch& batch);
  // Replaces the whole log by a snapshot's position and membership.
  void ApplySnapshot(const raft::SnapshotMeta& meta, WriteBatch& batch);
  // Deletes the group's log and membership (the replica leaves this node);
  // keeps the term and vote.
  void StageDestroy(WriteBatch& batch);
  // Drops entries up to and including `index` (which must be applied).
  void Compact(raft::Index index, WriteBatch& batch);
  // Drops the in-memory copies of the oldest entries up to `upto` while
  // more than `keep_bytes` are held; they stay in the log, read back from
  // the engine. Entries up to `upto` must be written to the engine already
  // (not only staged in a batch).
  void Uncache(raft::Index upto, uint64_t keep_bytes);

  const raft::HardState& hard_state() const { return hard_state_; }
  const raft::ConfState& conf_state() const { return conf_state_; }
  uint64_t group() const { return group_; }
  // Bytes of the whole log (raft::entry_size), and of the part in memory.
  uint64_t log_bytes() const { return log_bytes_; }
  uint64_t cached_bytes() const { return cached_bytes_; }
  // raft::entry_size of entry i (first_index() <= i <= last_index()).
  uint64_t entry_bytes(raft::Index i) const {
    SHOAL_CHECK(i > start_index_ && i <= last_index());
    return index_[i - start_index_ - 1].size;
  }
  // The first entry held in memory (last_index() + 1 if none).
  raft::Index cache_start() const { return cache_.empty() ? last_index() + 1 : cache_.front().index; }
  // Entries read back from the engine since the store was opened, and the
  // reads that failed (Raft answers those as if the entries were compacted:
  // the follower is sent a snapshot), with the last failure.
  uint64_t entries_read() const { return entries_read_; }
  uint64_t read_errors() const { return read_errors_; }
  const Status& last_read_error() const { return last_read_error_; }

 private:
  RaftStore(Engine* engine, uint64_t group) : engine_(engine), group_(group) {}
  Status Load();
  std::string Key(char kind) const;
  std::string EntryKey(raft::Index index) const;
  Status ReadStored(raft::Index lo, raft::Index hi, uint64_t max_bytes, std::vector<raft::Entry>* out,
                    uint64_t* size) const;
  void PushCached(raft::Entry e);
  // Drops entries up to `index` (> start_index_), and their records on
  // disk where delete_records; stages the new log start.
  void CompactTo(raft::Index index, bool delete_records, WriteBatch& batch);
  void StageStart(WriteBatch& batch);
  void DropCached(raft::Index upto, uint64_t keep_bytes);

  Engine* engine_;
  uint64_t group_;
  raft::HardState hard_state_;
  raft::HardState written_;  // the hard state record on disk (or staged)
  raft::ConfState conf_state_;
  raft::Index start_index_ = 0;  // index of the last compacted entry
  raft::Term start_term_ = 0;
  // Entries from here on are in memory only, their records not staged yet
  // (0: none; Append's defer).
  raft::Index deferred_from_ = 0;
  // Records on disk (or staged) run up to here; none above start_index_
  // where it is not above it.
  raft::Index logged_upto_ = 0;
  uint64_t entries_unlogged_ = 0;
  struct EntryInfo {
    raft::Term term;
    uint64_t size;
  };
  std::deque<EntryInfo> index_;    // entries start_index_+1 ... last_index()
  std::deque<raft::Entry> cache_;  // entries cache_start() ... last_index()
  uint64_t log_bytes_ = 0;
  uint64_t cached_bytes_ = 0;
  mutable uint64_t entries_read_ = 0;
  mutable uint64_t read_errors_ = 0;
  mutable Status last_read_error_;
  SnapshotFn snapshot_fn_;
};

// Binary encodings used by RaftStore (exposed for tests).
std::string EncodeRaftEntry(const raft::Entry& e);
bool DecodeRaftEntry(std::string_view raw, raft::Entry* e);
std::string EncodeConfState(const raft::ConfState& cs);
bool DecodeConfState(std::string_view raw, raft::ConfState* cs);

}  // namespace shoal::storage
