#include "raft/storage.h"

namespace shoal::raft {

namespace {
constexpr std::string_view kCompacted = "raft: requested index is compacted";
}  // namespace

Status compacted_error() { return Status::NotFound(std::string(kCompacted)); }
bool is_compacted(const Status& s) { return s.code() == Code::kNotFound && s.message() == kCompacted; }
Status unavailable_error() { return Status::Busy("raft: requested entry or snapshot unavailable"); }

Snapshot bootstrap_snapshot(const ConfState& cs, std::string data) {
  Snapshot s;
  s.meta.index = 1;
  s.meta.term = 1;
  s.meta.conf_state = cs;
  s.data = std::move(data);
  return s;
}

MemoryStorage::MemoryStorage() : ents_(1) {}

Result<InitialState> MemoryStorage::initial_state() const {
  return InitialState{hard_state_, snapshot_.meta.conf_state};
}

Index MemoryStorage::first_index() const { return ents_[0].index + 1; }
Index MemoryStorage::last_index() const { return ents_[0].index + ents_.size() - 1; }

Result<std::vector<Entry>> MemoryStorage::entries(Index lo, Index hi, uint64_t max_bytes) const {
  const Index offset = ents_[0].index;
  if (lo <= offset) return compacted_error();
  if (hi > last_index() + 1 || lo > hi) return unavailable_error();
  std::vector<Entry> out;
  uint64_t size = 0;
  for (Index i = lo; i < hi; ++i) {
    const Entry& e = ents_[i - offset];
    size += entry_size(e);
    if (!out.empty() && size > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

Result<Term> MemoryStorage::term(Index i) const {
  const Index offset = ents_[0].index;
  if (i < offset) return compacted_error();
  if (i - offset >= ents_.size()) return unavailable_error();
  return ents_[i - offset].term;
}

Result<Snapshot> MemoryStorage::snapshot() const { return snapshot_; }

Status MemoryStorage::apply_snapshot(Snapshot snap) {
  if (snap.meta.index < snapshot_.meta.index) return Status::InvalidArgument("snapshot out of date");
  ents_.assign(1, Entry{snap.meta.term, snap.meta.index, EntryType::kNormal, {}});
  snapshot_ = std::move(snap);
  return Status::Ok();
}

Status MemoryStorage::create_snapshot(Index i, const ConfState& cs, std::string data) {
  if (i <= snapshot_.meta.index) return Status::InvalidArgument("snapshot out of date");
  if (i > last_index()) return Status::InvalidArgument("snapshot index past last index");
  snapshot_.meta.index = i;
  snapshot_.meta.term = ents_[i - ents_[0].index].term;
  snapshot_.meta.conf_state = cs;
  snapshot_.data = std::move(data);
  return Status::Ok();
}

Status MemoryStorage::compact(Index compact_index) {
  const Index offset = ents_[0].index;
  if (compact_index <= offset) return compacted_error();
  if (compact_index > last_index()) return Status::InvalidArgument("compact past last index");
  const size_t k = compact_index - offset;
  Entry dummy{ents_[k].term, ents_[k].index, EntryType::kNormal, {}};
  ents_.erase(ents_.begin(), ents_.begin() + static_cast<std::ptrdiff_t>(k));
  ents_[0] = std::move(dummy);
  return Status::Ok();
}

Status MemoryStorage::append(const std::vector<Entry>& ents) {
  if (ents.empty()) return Status::Ok();
  const Index first = first_index();
  const Index last_new = ents.front().index + ents.size() - 1;
  if (last_new < first) return Status::Ok();  // all already compacted
  size_t skip = 0;
  if (ents.front().index < first) skip = first - ents.front().index;
  const Index start = ents[skip].index;
  if (start > last_index() + 1) return Status::InvalidArgument("append leaves a gap");
  ents_.resize(start - ents_[0].index);
  for (size_t k = skip; k < ents.size(); ++k) {
    SHOAL_CHECK(ents[k].index == ents_[0].index + ents_.size());
    ents_.push_back(ents[k]);
  }
  return Status::Ok();
}

}  // namespace shoal::raft
