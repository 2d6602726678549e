// RaftStore: one Raft group's durable log, hard state and membership in the
// engine's raft column family, as raft::Storage reads them. The log since
// the last compaction is also kept in memory, so Raft never waits on disk
// to read it. Owned by the thread that drives the group's RawNode.
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

  // Whether `group` has a log or a membership here (was a member).
  static bool HasState(Engine* engine, uint64_t group);
  // raft::Storage
  Result<raft::InitialState> initial_state() const override;
  Result<std::vector<raft::Entry>> entries(raft::Index lo, raft::Index hi,
                                           uint64_t max_bytes) const override;
  Result<raft::Term> term(raft::Index i) const override;
  raft::Index first_index() const override { return start_index_ + 1; }
  raft::Index last_index() const override { return start_index_ + log_.size(); }
  Result<raft::Snapshot> snapshot() const override;

  void set_snapshot_fn(SnapshotFn fn) { snapshot_fn_ = std::move(fn); }

  // Appends entries, replacing any conflicting suffix.
  void Append(const std::vector<raft::Entry>& ents, WriteBatch& batch);
  void SetHardState(const raft::HardState& hs, WriteBatch& batch);
  // Records the membership the state machine has applied.
  void SetConfState(const raft::ConfState& cs, WriteBatch& batch);
  // Replaces the whole log by a snapshot's position and membership.
  void ApplySnapshot(const raft::SnapshotMeta& meta, WriteBatch& batch);
  // Deletes the group's log and membership (the replica leaves this node);
  // keeps the term and vote.
  void StageDestroy(WriteBatch& batch);
  // Drops entries up to and including `index` (which must be applied).
  void Compact(raft::Index index, WriteBatch& batch);

  const raft::HardState& hard_state() const { return hard_state_; }
  const raft::ConfState& conf_state() const { return conf_state_; }
  uint64_t group() const { return group_; }
  uint64_t log_bytes() const { return log_bytes_; }

 private:
  RaftStore(Engine* engine, uint64_t group) : engine_(engine), group_(group) {}
  Status Load();
  std::string Key(char kind) const;
  std::string EntryKey(raft::Index index) const;

  Engine* engine_;
  uint64_t group_;
  raft::HardState hard_state_;
  raft::ConfState conf_state_;
  raft::Index start_index_ = 0;  // index of the last compacted entry
  raft::Term start_term_ = 0;
  std::deque<raft::Entry> log_;  // entries start_index_+1 ...
  uint64_t log_bytes_ = 0;
  SnapshotFn snapshot_fn_;
};

// Binary encodings used by RaftStore (exposed for tests).
std::string EncodeRaftEntry(const raft::Entry& e);
bool DecodeRaftEntry(std::string_view raw, raft::Entry* e);
std::string EncodeConfState(const raft::ConfState& cs);
bool DecodeConfState(std::string_view raw, raft::ConfState* cs);

}  // namespace shoal::storage
