#include "storage/raft_store.h"

#include <algorithm>
#include <cstring>

namespace shoal::storage {
namespace {

void PutU64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out->append(b, 8);
}

bool GetU64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= static_cast<uint64_t>(static_cast<uint8_t>((*in)[i])) << (8 * i);
  in->remove_prefix(8);
  return true;
}

void PutBe64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>(v >> (8 * i)));
}

void PutIds(std::string* out, const std::vector<raft::NodeId>& ids) {
  PutU64(out, ids.size());
  for (auto id : ids) PutU64(out, id);
}

bool GetIds(std::string_view* in, std::vector<raft::NodeId>* ids) {
  uint64_t n = 0;
  if (!GetU64(in, &n) || n > in->size() / 8) return false;
  ids->resize(n);
  for (auto& id : *ids) GetU64(in, &id);
  return true;
}

constexpr char kVersion = 1;

}  // namespace

std::string EncodeRaftEntry(const raft::Entry& e) {
  std::string out;
  out.reserve(18 + e.data.size());
  out.push_back(kVersion);
  out.push_back(static_cast<char>(e.type));
  PutU64(&out, e.term);
  PutU64(&out, e.index);
  out += e.data;
  return out;
}

bool DecodeRaftEntry(std::string_view raw, raft::Entry* e) {
  if (raw.size() < 18 || raw[0] != kVersion) return false;
  auto type = static_cast<uint8_t>(raw[1]);
  if (type > static_cast<uint8_t>(raft::EntryType::kConfChange)) return false;
  e->type = static_cast<raft::EntryType>(type);
  raw.remove_prefix(2);
  GetU64(&raw, &e->term);
  GetU64(&raw, &e->index);
  e->data.assign(raw);
  return true;
}

std::string EncodeConfState(const raft::ConfState& cs) {
  std::string out(1, kVersion);
  PutIds(&out, cs.voters);
  PutIds(&out, cs.voters_outgoing);
  PutIds(&out, cs.learners);
  return out;
}

bool DecodeConfState(std::string_view raw, raft::ConfState* cs) {
  if (raw.empty() || raw[0] != kVersion) return false;
  raw.remove_prefix(1);
  return GetIds(&raw, &cs->voters) && GetIds(&raw, &cs->voters_outgoing) &&
         GetIds(&raw, &cs->learners) && raw.empty();
}

std::string RaftStore::Key(char kind) const {
  std::string k(1, kind);
  PutBe64(&k, group_);
  return k;
}

bool RaftStore::HasState(Engine* engine, uint64_t group) {
  RaftStore probe(engine, group);
  std::string raw;
  // 'P': a snapshot import a crash interrupted before the replica's first
  // state was written (the replica's Init finishes it).
  for (char kind : {'C', 'S', 'P'}) {
    Status s = engine->Get(Cf::kRaft, probe.Key(kind), &raw);
    if (s.ok()) return true;
    if (s.code() != Code::kNotFound) {
      // A read that failed is no answer: taken for "no state", it would
      // let a replica be created anew over this one's log and votes.
      const std::string why = "reading the Raft state of group " + std::to_string(group) + " failed: " + s.ToString();
      FailStop(why.c_str());
    }
  }
  return false;
}

void RaftStore::StageDestroy(WriteBatch& batch) {
  batch.DeleteRange(Cf::kRaft, EntryKey(0), EntryKey(UINT64_MAX));
  batch.Delete(Cf::kRaft, EntryKey(UINT64_MAX));
  for (char kind : {'S', 'C'}) batch.Delete(Cf::kRaft, Key(kind));
  // The term and vote stay: a replica of this group created here again
  // must not vote twice in a term this one voted in.
  SetHardState(raft::HardState{hard_state_.term, hard_state_.vote, 0}, batch);
  index_.clear();
  cache_.clear();
  log_bytes_ = 0;
  cached_bytes_ = 0;
  start_index_ = 0;
  start_term_ = 0;
  deferred_from_ = 0;
  logged_upto_ = 0;
  conf_state_ = raft::ConfState{};
}

std::string RaftStore::EntryKey(raft::Index index) const {
  std::string k = Key('L');
  PutBe64(&k, index);
  return k;
}

Result<std::unique_ptr<RaftStore>> RaftStore::Open(Engine* engine, uint64_t group) {
  std::unique_ptr<RaftStore> store(new RaftStore(engine, group));
  Status s = store->Load();
  if (!s.ok()) return s.WithContext("raft group " + std::to_string(group));
  return store;
}

Status RaftStore::Load() {
  std::string raw;
  Status s = engine_->Get(Cf::kRaft, Key('H'), &raw);
  if (s.ok()) {
    std::string_view in = raw;
    if (in.empty() || in[0] != kVersion) return Status::Corruption("hard state");
    in.remove_prefix(1);
    if (!GetU64(&in, &hard_state_.term) || !GetU64(&in, &hard_state_.vote) ||
        !GetU64(&in, &hard_state_.commit)) {
      return Status::Corruption("hard state");
    }
  } else if (s.code() != Code::kNotFound) {
    return s;
  }
  s = engine_->Get(Cf::kRaft, Key('S'), &raw);
  if (s.ok()) {
    std::string_view in = raw;
    if (!GetU64(&in, &start_index_) || !GetU64(&in, &start_term_)) {
      return Status::Corruption("log start");
    }
  } else if (s.code() != Code::kNotFound) {
    return s;
  }
  // The commit index is not written with every change (NoteHardState): what
  // the log has compacted is committed.
  written_ = hard_state_;
  if (!hard_state_.empty()) hard_state_.commit = std::max<raft::Index>(hard_state_.commit, start_index_);
  s = engine_->Get(Cf::kRaft, Key('C'), &raw);
  if (s.ok()) {
    if (!DecodeConfState(raw, &conf_state_)) return Status::Corruption("membership");
  } else if (s.code() != Code::kNotFound) {
    return s;
  }
  auto it = engine_->NewIterator(Cf::kRaft);
  std::string lo = EntryKey(start_index_ + 1);
  std::string prefix = Key('L');
  for (it->Seek(lo); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    raft::Entry e;
    if (!DecodeRaftEntry(it->value(), &e)) return Status::Corruption("log entry");
    if (e.index != last_index() + 1) {
      return Status::Corruption("log gap at " + std::to_string(last_index() + 1));
    }
    // All of it in memory for now: the replica drops what it has applied.
    PushCached(std::move(e));
  }
  logged_upto_ = last_index();
  return it->status();
}

void RaftStore::PushCached(raft::Entry e) {
  const uint64_t size = raft::entry_size(e);
  index_.push_back(EntryInfo{e.term, size});
  log_bytes_ += size;
  cached_bytes_ += size;
  cache_.push_back(std::move(e));
}

Status RaftStore::ReadStored(raft::Index lo, raft::Index hi, uint64_t max_bytes, std::vector<raft::Entry>* out,
                             uint64_t* size) const {
  // A lagging follower's catch-up reads old entries once: they do not
  // displace the data's blocks in the cache (a scan iterator does not fill it).
  auto it = engine_->NewScanIterator(Cf::kRaft);
  const std::string prefix = Key('L');
  it->Seek(EntryKey(lo));
  for (raft::Index i = lo; i < hi; ++i) {
    if (i > lo) it->Next();
    if (!it->Valid() || !it->key().starts_with(prefix)) {
      return it->status().ok() ? Status::Corruption("raft log entry " + std::to_string(i) + " is missing")
                               : it->status();
    }
    raft::Entry e;
    if (!DecodeRaftEntry(it->value(), &e) || e.index != i || e.term != index_[i - start_index_ - 1].term) {
      return Status::Corruption("raft log entry " + std::to_string(i) + " differs from the log's index");
    }
    *size += raft::entry_size(e);
    if (!out->empty() && *size > max_bytes) return Status::Ok();
    out->push_back(std::move(e));
    ++entries_read_;
  }
  return Status::Ok();
}

Result<raft::InitialState> RaftStore::initial_state() const {
  return raft::InitialState{hard_state_, conf_state_};
}

Result<std::vector<raft::Entry>> RaftStore::entries(raft::Index lo, raft::Index hi,
                                                    uint64_t max_bytes) const {
  if (lo <= start_index_) return raft::compacted_error();
  if (hi > last_index() + 1 || lo > hi) return raft::unavailable_error();
  std::vector<raft::Entry> out;
  uint64_t size = 0;
  const raft::Index cached = cache_start();
  if (lo < hi && lo < cached) {
    const raft::Index stored_hi = std::min(hi, cached);
    Status s = ReadStored(lo, stored_hi, max_bytes, &out, &size);
    if (!s.ok()) {
      ++read_errors_;
      last_read_error_ = s.WithContext("raft group " + std::to_string(group_));
      return last_read_error_;
    }
    if (out.size() < stored_hi - lo) return out;  // hit the byte limit
    lo = stored_hi;
  }
  for (raft::Index i = lo; i < hi; ++i) {
    const raft::Entry& e = cache_[i - cached];
    size += raft::entry_size(e);
    if (!out.empty() && size > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

Result<raft::Term> RaftStore::term(raft::Index i) const {
  if (i == start_index_) return start_term_;
  if (i < start_index_) return raft::compacted_error();
  if (i > last_index()) return raft::unavailable_error();
  return index_[i - start_index_ - 1].term;
}

Result<raft::Snapshot> RaftStore::snapshot() const {
  if (!snapshot_fn_) return raft::unavailable_error();
  return snapshot_fn_();
}

void RaftStore::Append(const std::vector<raft::Entry>& ents, WriteBatch& batch, bool defer) {
  if (ents.empty()) return;
  FinishDeferred(batch, 0);  // a pending append is logged first
  raft::Index first = ents.front().index;
  SHOAL_CHECK(first > start_index_ && first <= last_index() + 1);
  // Drop a conflicting suffix: in memory and on disk.
  if (first <= last_index()) {
    batch.DeleteRange(Cf::kRaft, EntryKey(first), EntryKey(last_index() + 1));
    logged_upto_ = std::min(logged_upto_, first - 1);
    while (!cache_.empty() && cache_.back().index >= first) {
      cached_bytes_ -= raft::entry_size(cache_.back());
      cache_.pop_back();
    }
    while (last_index() >= first) {
      log_bytes_ -= index_.back().size;
      index_.pop_back();
    }
    defer = false;
  }
  for (const auto& e : ents) {
    if (!defer) batch.Put(Cf::kRaft, EntryKey(e.index), EncodeRaftEntry(e));
    PushCached(e);
  }
  if (defer) {
    deferred_from_ = first;
  } else {
    logged_upto_ = last_index();
  }
}

bool RaftStore::FinishDeferred(WriteBatch& batch, raft::Index applied) {
  if (deferred_from_ == 0) return false;
  const raft::Index from = std::max(deferred_from_, start_index_ + 1);
  const raft::Index last = last_index();
  deferred_from_ = 0;
  if (from > last) return false;  // compacted meanwhile
  if (applied >= last && hard_state_.commit >= last) {
    // Applied in this write: the log starts after them instead, and what
    // it still held on disk goes.
    CompactTo(last, logged_upto_ > start_index_, batch);
    entries_unlogged_ += last - from + 1;
    return true;
  }
  SHOAL_CHECK(cache_start() <= from);
  for (const auto& e : cache_) {
    if (e.index >= from) batch.Put(Cf::kRaft, EntryKey(e.index), EncodeRaftEntry(e));
  }
  logged_upto_ = last;
  return false;
}

void RaftStore::NoteHardState(const raft::HardState& hs, WriteBatch& batch) {
  if (hs.term == written_.term && hs.vote == written_.vote) {
    hard_state_ = hs;
    return;
  }
  SetHardState(hs, batch);
}

void RaftStore::SetHardState(const raft::HardState& hs, WriteBatch& batch) {
  hard_state_ = hs;
  written_ = hs;
  std::string raw(1, kVersion);
  PutU64(&raw, hs.term);
  PutU64(&raw, hs.vote);
  PutU64(&raw, hs.commit);
  batch.Put(Cf::kRaft, Key('H'), raw);
}

void RaftStore::SetConfState(const raft::ConfState& cs, WriteBatch& batch) {
  conf_state_ = cs;
  batch.Put(Cf::kRaft, Key('C'), EncodeConfState(cs));
}

void RaftStore::ApplySnapshot(const raft::SnapshotMeta& meta, WriteBatch& batch) {
  batch.DeleteRange(Cf::kRaft, EntryKey(0), EntryKey(UINT64_MAX));
  index_.clear();
  cache_.clear();
  log_bytes_ = 0;
  cached_bytes_ = 0;
  start_index_ = meta.index;
  start_term_ = meta.term;
  deferred_from_ = 0;
  logged_upto_ = 0;
  StageStart(batch);
  SetConfState(meta.conf_state, batch);
  if (hard_state_.commit < meta.index) hard_state_.commit = meta.index;
}

void RaftStore::Compact(raft::Index index, WriteBatch& batch) {
  if (index <= start_index_) return;
  SHOAL_CHECK(index <= last_index());
  CompactTo(index, true, batch);
}

void RaftStore::CompactTo(raft::Index index, bool delete_records, WriteBatch& batch) {
  raft::Term t = index_[index - start_index_ - 1].term;
  if (delete_records) batch.DeleteRange(Cf::kRaft, EntryKey(0), EntryKey(index + 1));
  DropCached(index, 0);
  while (start_index_ < index) {
    log_bytes_ -= index_.front().size;
    index_.pop_front();
    ++start_index_;
  }
  start_term_ = t;
  StageStart(batch);
}

void RaftStore::StageStart(WriteBatch& batch) {
  std::string raw;
  PutU64(&raw, start_index_);
  PutU64(&raw, start_term_);
  batch.Put(Cf::kRaft, Key('S'), raw);
}

void RaftStore::Uncache(raft::Index upto, uint64_t keep_bytes) {
  if (deferred_from_ != 0) upto = std::min(upto, deferred_from_ - 1);  // not written yet
  DropCached(upto, keep_bytes);
}

void RaftStore::DropCached(raft::Index upto, uint64_t keep_bytes) {
  while (!cache_.empty() && cache_.front().index <= upto && cached_bytes_ > keep_bytes) {
    cached_bytes_ -= raft::entry_size(cache_.front());
    cache_.pop_front();
  }
}

}  // namespace shoal::storage
