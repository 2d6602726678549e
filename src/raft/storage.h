// Storage: the application's durable Raft log as Raft reads it. The
// application implements it (RocksDB in production); MemoryStorage is the
// in-memory implementation for tests and simulation.
#pragma once

#include <vector>

#include "common/status.h"
#include "raft/types.h"

namespace shoal::raft {

// What a restarting node recovers: its hard state and membership.
struct InitialState {
  HardState hard_state;
  ConfState conf_state;
};

// Status returned when the requested index has been compacted away.
Status compacted_error();
// True when `s` came from compacted_error().
bool is_compacted(const Status& s);
// Status returned for an index past the last one, or a snapshot not ready yet.
Status unavailable_error();

// The snapshot that bootstraps a new group: index 1, term 1, holding the
// initial membership. Every founding replica applies it (with hard state
// term 1, commit 1); replicas added later start empty and receive a
// snapshot from the leader, so every replica learns the configuration.
Snapshot bootstrap_snapshot(const ConfState& cs, std::string data);

// Read-only view of durable Raft state. Raft calls it from the thread that
// drives the RawNode; it holds only entries the application made durable.
class Storage {
 public:
  virtual ~Storage() = default;
  // Hard state and membership as of the last durable write.
  virtual Result<InitialState> initial_state() const = 0;
  // Entries [lo, hi), stopping once their total size passes max_bytes but
  // always returning at least one entry. compacted_error() if lo <= snapshot index.
  virtual Result<std::vector<Entry>> entries(Index lo, Index hi, uint64_t max_bytes) const = 0;
  // Term of entry i, for i in [first_index()-1, last_index()].
  virtual Result<Term> term(Index i) const = 0;
  // Index of the first entry still stored (snapshot index + 1).
  virtual Index first_index() const = 0;
  // Index of the last entry stored (snapshot index if the log is empty).
  virtual Index last_index() const = 0;
  // The most recent snapshot; unavailable_error() if none can be produced now.
  virtual Result<Snapshot> snapshot() const = 0;
};

// A Storage held in memory. Not thread-safe. Every write is "durable" the
// moment it returns, so a simulation decides what survives a crash by
// choosing when to write.
class MemoryStorage final : public Storage {
 public:
  MemoryStorage();
  Result<InitialState> initial_state() const override;
  Result<std::vector<Entry>> entries(Index lo, Index hi, uint64_t max_bytes) const override;
  Result<Term> term(Index i) const override;
  Index first_index() const override;
  Index last_index() const override;
  Result<Snapshot> snapshot() const override;

  // Replaces the hard state.
  void set_hard_state(const HardState& hs) { hard_state_ = hs; }
  const HardState& hard_state() const { return hard_state_; }
  // Sets the membership reported by initial_state() when there is no snapshot
  // (used to bootstrap a new group).
  void set_conf_state(const ConfState& cs) { snapshot_.meta.conf_state = cs; }
  // Replaces everything with `snap`; fails if it is older than the current one.
  Status apply_snapshot(Snapshot snap);
  // Records a snapshot of applied state at index i (<= last_index) with the
  // given membership and data, so it can be sent to lagging followers.
  Status create_snapshot(Index i, const ConfState& cs, std::string data);
  // Discards entries up to and including `compact_index` (<= last index).
  Status compact(Index compact_index);
  // Appends entries, truncating any stored suffix they conflict with.
  Status append(const std::vector<Entry>& ents);

 private:
  HardState hard_state_;
  Snapshot snapshot_;
  // ents_[0] is a dummy holding the snapshot's index and term.
  std::vector<Entry> ents_;
};

}  // namespace shoal::raft
