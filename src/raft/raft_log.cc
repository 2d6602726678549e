#include "raft/raft_log.h"

#include <algorithm>

namespace shoal::raft {

std::optional<Index> Unstable::maybe_first_index() const {
  if (snapshot_) return snapshot_->meta.index + 1;
  return std::nullopt;
}

std::optional<Index> Unstable::maybe_last_index() const {
  if (!entries_.empty()) return offset_ + entries_.size() - 1;
  if (snapshot_) return snapshot_->meta.index;
  return std::nullopt;
}

std::optional<Term> Unstable::maybe_term(Index i) const {
  if (i < offset_) {
    if (snapshot_ && snapshot_->meta.index == i) return snapshot_->meta.term;
    return std::nullopt;
  }
  const auto last = maybe_last_index();
  if (!last || i > *last) return std::nullopt;
  return entries_[i - offset_].term;
}

void Unstable::stable_to(Index i, Term t) {
  const auto term = maybe_term(i);
  if (!term || *term != t || i < offset_) return;  // overwritten since handed out
  entries_.erase(entries_.begin(), entries_.begin() + static_cast<std::ptrdiff_t>(i + 1 - offset_));
  offset_ = i + 1;
}

void Unstable::stable_snap_to(Index i) {
  if (snapshot_ && snapshot_->meta.index == i) snapshot_.reset();
}

void Unstable::restore(const Snapshot& s) {
  offset_ = s.meta.index + 1;
  entries_.clear();
  snapshot_ = s;
}

void Unstable::truncate_and_append(std::vector<Entry> ents) {
  if (ents.empty()) return;
  const Index after = ents.front().index;
  if (after == offset_ + entries_.size()) {
    entries_.insert(entries_.end(), std::make_move_iterator(ents.begin()), std::make_move_iterator(ents.end()));
  } else if (after <= offset_) {
    // Replaces the whole unstable part; storage entries >= after are now stale.
    offset_ = after;
    entries_ = std::move(ents);
  } else {
    entries_.resize(after - offset_);
    entries_.insert(entries_.end(), std::make_move_iterator(ents.begin()), std::make_move_iterator(ents.end()));
  }
}

std::span<const Entry> Unstable::slice(Index lo, Index hi) const {
  SHOAL_CHECK(lo >= offset_ && hi <= offset_ + entries_.size() && lo <= hi);
  return std::span<const Entry>(entries_).subspan(lo - offset_, hi - lo);
}

RaftLog::RaftLog(const Storage* storage, uint64_t max_applying_bytes)
    : storage_(storage), max_applying_bytes_(max_applying_bytes) {
  const Index first = storage_->first_index();
  const Index last = storage_->last_index();
  unstable_.set_offset(last + 1);
  committed_ = first - 1;
  applied_ = first - 1;
}

Index RaftLog::first_index() const {
  if (auto i = unstable_.maybe_first_index()) return *i;
  return storage_->first_index();
}

Index RaftLog::last_index() const {
  if (auto i = unstable_.maybe_last_index()) return *i;
  return storage_->last_index();
}

Term RaftLog::last_term() const {
  auto t = term(last_index());
  SHOAL_CHECK(t.ok());
  return *t;
}

Result<Term> RaftLog::term(Index i) const {
  const Index dummy = first_index() - 1;
  if (i < dummy) return compacted_error();
  if (i > last_index()) return unavailable_error();
  if (auto t = unstable_.maybe_term(i)) return *t;
  return storage_->term(i);
}

Term RaftLog::term_or_zero(Index i) const {
  auto t = term(i);
  return t.ok() ? *t : 0;
}

bool RaftLog::match_term(Index i, Term t) const {
  auto got = term(i);
  return got.ok() && *got == t;
}

std::optional<Index> RaftLog::stable_last_index() const {
  if (unstable_.snapshot()) return std::nullopt;
  return unstable_.offset() - 1;
}

std::optional<Index> RaftLog::maybe_append(Index index, Term log_term, Index committed,
                                           const std::vector<Entry>& ents) {
  if (!match_term(index, log_term)) return std::nullopt;
  const Index last_new = index + ents.size();
  const Index ci = find_conflict(ents);
  if (ci != 0) {
    SHOAL_CHECK(ci > committed_);  // never overwrite a committed entry
    const size_t from = ci - (index + 1);
    append(std::vector<Entry>(ents.begin() + static_cast<std::ptrdiff_t>(from), ents.end()));
  }
  commit_to(std::min(committed, last_new));
  return last_new;
}

Index RaftLog::append(std::vector<Entry> ents) {
  if (ents.empty()) return last_index();
  SHOAL_CHECK(ents.front().index - 1 >= committed_);
  unstable_.truncate_and_append(std::move(ents));
  return last_index();
}

Index RaftLog::find_conflict(const std::vector<Entry>& ents) const {
  for (const Entry& e : ents) {
    if (!match_term(e.index, e.term)) return e.index;
  }
  return 0;
}

std::pair<Index, Term> RaftLog::find_conflict_by_term(Index index, Term term) const {
  for (; index > 0; --index) {
    auto t = this->term(index);
    if (!t.ok()) return {index, 0};  // compacted or unknown: stop here
    if (*t <= term) return {index, *t};
  }
  return {0, 0};
}

bool RaftLog::is_up_to_date(Index lasti, Term term) const {
  return term > last_term() || (term == last_term() && lasti >= last_index());
}

Result<std::vector<Entry>> RaftLog::slice(Index lo, Index hi, uint64_t max_bytes) const {
  if (lo < first_index()) return compacted_error();
  SHOAL_CHECK(lo <= hi && hi <= last_index() + 1);
  std::vector<Entry> out;
  if (lo == hi) return out;
  const Index off = unstable_.offset();
  if (lo < off) {
    auto stored = storage_->entries(lo, std::min(hi, off), max_bytes);
    if (!stored.ok()) return stored.status();
    out = std::move(*stored);
    if (out.size() < std::min(hi, off) - lo) return out;  // hit the byte limit
  }
  if (hi > off) {
    uint64_t size = entries_size(out);
    const auto fresh = unstable_.slice(std::max(lo, off), hi);
    out.reserve(out.size() + fresh.size());
    for (const Entry& e : fresh) {
      size += entry_size(e);
      if (!out.empty() && size > max_bytes) break;
      out.push_back(e);
    }
  }
  return out;
}

Result<std::vector<Entry>> RaftLog::entries_from(Index i, uint64_t max_bytes) const {
  if (i > last_index()) return std::vector<Entry>{};
  return slice(i, last_index() + 1, max_bytes);
}

std::vector<Entry> RaftLog::next_committed_entries() const {
  const Index lo = std::max(applied_ + 1, first_index());
  if (committed_ + 1 <= lo) return {};
  auto ents = slice(lo, committed_ + 1, max_applying_bytes_);
  SHOAL_CHECK(ents.ok());
  return std::move(*ents);
}

bool RaftLog::has_next_committed_entries() const {
  return committed_ + 1 > std::max(applied_ + 1, first_index());
}

Result<Snapshot> RaftLog::snapshot() const {
  if (unstable_.snapshot()) return *unstable_.snapshot();
  return storage_->snapshot();
}

bool RaftLog::maybe_commit(Index max_index, Term term) {
  if (max_index > committed_ && term_or_zero(max_index) == term) {
    commit_to(max_index);
    return true;
  }
  return false;
}

void RaftLog::commit_to(Index i) {
  if (i <= committed_) return;
  SHOAL_CHECK(i <= last_index());
  committed_ = i;
}

void RaftLog::applied_to(Index i) {
  if (i == 0) return;
  SHOAL_CHECK(i <= committed_ && i >= applied_);
  applied_ = i;
}

void RaftLog::restore(const Snapshot& s) {
  committed_ = s.meta.index;
  unstable_.restore(s);
}

}  // namespace shoal::raft
