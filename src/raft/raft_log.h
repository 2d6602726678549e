// RaftLog: the log as Raft sees it, the durable part in Storage plus an
// unstable suffix (and possibly an incoming snapshot) that the application
// has not yet made durable. Owned by one Raft instance; not thread-safe.
#pragma once

#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "raft/storage.h"
#include "raft/types.h"

namespace shoal::raft {

// Entries (and a snapshot) not yet durable. Entries start at offset_.
class Unstable {
 public:
  // First index known only from the pending snapshot, if any.
  std::optional<Index> maybe_first_index() const;
  // Last index of the unstable part, if it has entries or a snapshot.
  std::optional<Index> maybe_last_index() const;
  // Term of i if the unstable part knows it.
  std::optional<Term> maybe_term(Index i) const;
  // Entries up to (i, t) are durable: drops them if they are still ours.
  void stable_to(Index i, Term t);
  // The pending snapshot at index i is durable.
  void stable_snap_to(Index i);
  // Replaces everything with an incoming snapshot.
  void restore(const Snapshot& s);
  // Appends ents, discarding any suffix they overwrite.
  void truncate_and_append(std::vector<Entry> ents);
  // Entries [lo, hi), which must lie inside the unstable part (a view,
  // valid until the unstable part changes).
  std::span<const Entry> slice(Index lo, Index hi) const;

  // Accessors; offset() is the index of entries()[0].
  const std::vector<Entry>& entries() const { return entries_; }
  const std::optional<Snapshot>& snapshot() const { return snapshot_; }
  Index offset() const { return offset_; }
  void set_offset(Index o) { offset_ = o; }

 private:
  std::optional<Snapshot> snapshot_;
  std::vector<Entry> entries_;
  Index offset_ = 0;
};

// The combined log; see the file comment.
class RaftLog {
 public:
  // `storage` must outlive the log. max_applying_bytes bounds the committed
  // entries handed out per Ready.
  RaftLog(const Storage* storage, uint64_t max_applying_bytes);

  // First index still available (after any snapshot).
  Index first_index() const;
  // Index of the last entry (the snapshot index if the log is empty).
  Index last_index() const;
  // Term of the last entry.
  Term last_term() const;
  // Term of entry i; compacted_error() below first_index()-1, unavailable past the end.
  Result<Term> term(Index i) const;
  // Term of entry i, or 0 if it is not available.
  Term term_or_zero(Index i) const;
  bool match_term(Index i, Term t) const;
  // Highest index whose entries (and everything before) are durable, or
  // nullopt while an incoming snapshot is not yet durable.
  std::optional<Index> stable_last_index() const;

  // Follower side of kApp: if (index, log_term) matches, appends ents
  // (truncating conflicts) and commits up to min(committed, last new index).
  // Returns the last new index, or nullopt on mismatch.
  std::optional<Index> maybe_append(Index index, Term log_term, Index committed,
                                    const std::vector<Entry>& ents);
  // Appends entries that follow the current log (leader side). Returns last index.
  Index append(std::vector<Entry> ents);
  // First index in ents whose term conflicts with ours, or 0 if none; an
  // index past our last index also counts as a "conflict" (new entry).
  Index find_conflict(const std::vector<Entry>& ents) const;
  // Largest (i, term) with i <= index and term <= `term` (fast backtracking).
  std::pair<Index, Term> find_conflict_by_term(Index index, Term term) const;
  // Whether a candidate with last entry (lasti, term) is at least as up to date.
  bool is_up_to_date(Index lasti, Term term) const;

  // Entries [lo, hi) bounded by max_bytes (at least one entry).
  Result<std::vector<Entry>> slice(Index lo, Index hi, uint64_t max_bytes) const;
  // Entries from i to the end, bounded by max_bytes.
  Result<std::vector<Entry>> entries_from(Index i, uint64_t max_bytes) const;

  // Entries and snapshot not yet durable (what the next Ready must persist).
  const std::vector<Entry>& unstable_entries() const { return unstable_.entries(); }
  const std::optional<Snapshot>& unstable_snapshot() const { return unstable_.snapshot(); }
  // Committed entries not yet handed to the application.
  std::vector<Entry> next_committed_entries() const;
  bool has_next_committed_entries() const;
  // The pending snapshot if any, else the storage snapshot.
  Result<Snapshot> snapshot() const;

  // Commits max_index if its entry has term `term`. Returns true if commit moved.
  bool maybe_commit(Index max_index, Term term);
  // Moves commit forward (never back); the index must exist.
  void commit_to(Index i);
  // The application has applied (or is applying) up to i.
  void applied_to(Index i);
  // The application made entries up to (i, t) / the snapshot at i durable.
  void stable_to(Index i, Term t) { unstable_.stable_to(i, t); }
  void stable_snap_to(Index i) { unstable_.stable_snap_to(i); }
  // Replaces the log with a snapshot (follower receiving kSnap).
  void restore(const Snapshot& s);

  // Highest committed index, and highest index handed out for applying.
  Index committed() const { return committed_; }
  Index applied() const { return applied_; }

 private:
  const Storage* storage_;
  Unstable unstable_;
  Index committed_ = 0;
  Index applied_ = 0;
  uint64_t max_applying_bytes_;
};

}  // namespace shoal::raft
