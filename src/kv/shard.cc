#include "kv/shard.h"

#include <cstring>

#include "storage/keys.h"

namespace shoal::kv {
namespace {

std::string EncodeI64(int64_t v) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &v, 8);
  return out;
}

bool DecodeI64(std::string_view raw, int64_t* v) {
  if (raw.size() != 8) return false;
  std::memcpy(v, raw.data(), 8);
  return true;
}

int64_t ExpiryOf(const std::optional<std::string>& raw) {
  if (!raw) return 0;
  Value v;
  return DecodeValue(*raw, &v) ? v.expire_at_ms : 0;
}

}  // namespace

Result<std::optional<std::string>> ApplyTxn::GetRaw(const std::string& dkey) {
  auto it = staged_.find(dkey);
  if (it != staged_.end()) return it->second.raw;
  std::string raw;
  Status s = engine_->Get(storage::Cf::kData, dkey, &raw);
  if (s.code() == Code::kNotFound) {
    staged_.emplace(dkey, Staged{std::nullopt});  // remembered: a command reads, then writes
    shard_->meta_cache_.Set(dkey, {false, 0});
    return std::optional<std::string>();
  }
  if (!s.ok()) return s;
  staged_.emplace(dkey, Staged{raw});
  shard_->meta_cache_.Set(dkey, {true, ExpiryOf(raw)});
  return std::optional<std::string>(std::move(raw));
}

Result<std::optional<std::string>> ApplyTxn::GetLive(uint16_t db, std::string_view key) {
  std::string dkey = storage::DataKey(db, key);
  auto raw = GetRaw(dkey);
  if (!raw.ok() || !raw->has_value()) return raw;
  Value v;
  if (!DecodeValue(**raw, &v)) return Status::Corruption("bad value record");
  if (!v.ExpiredAt(now_ms_)) return raw;
  bool existed = false;
  Status s = Delete(db, key, &existed);
  if (!s.ok()) return s;
  return std::optional<std::string>();
}

Status ApplyTxn::Put(uint16_t db, std::string_view key, std::string encoded) {
  std::string dkey = storage::DataKey(db, key);
  bool old_exists = false;
  int64_t old_exp = 0;
  const KeyMetaCache::Meta* meta = nullptr;
  if (!staged_.contains(dkey) && (meta = shard_->meta_cache_.Find(dkey)) != nullptr) {
    old_exists = meta->exists;  // a blind write needs only this, not the value
    old_exp = meta->expire_at_ms;
  } else {
    auto old = GetRaw(dkey);
    if (!old.ok()) return old.status();
    old_exists = old->has_value();
    old_exp = ExpiryOf(*old);
  }
  Value nv;
  SHOAL_CHECK(DecodeValue(encoded, &nv));
  Counts& d = deltas_[db];
  if (!old_exists) d.keys += 1;
  d.expires += (nv.expire_at_ms != 0) - (old_exp != 0);
  if (old_exp != nv.expire_at_ms) {
    if (old_exp != 0) batch_->Delete(storage::Cf::kExpiry, storage::ExpiryKey(old_exp, db, key));
    if (nv.expire_at_ms != 0) {
      batch_->Put(storage::Cf::kExpiry, storage::ExpiryKey(nv.expire_at_ms, db, key), "");
    }
  }
  batch_->Put(storage::Cf::kData, dkey, encoded);
  staged_[dkey].raw = std::move(encoded);
  return Status::Ok();
}

Status ApplyTxn::Delete(uint16_t db, std::string_view key, bool* existed) {
  std::string dkey = storage::DataKey(db, key);
  auto old = GetRaw(dkey);
  if (!old.ok()) return old.status();
  *existed = false;
  if (!old->has_value()) return Status::Ok();
  Value ov;
  if (!DecodeValue(**old, &ov)) return Status::Corruption("bad value record");
  *existed = !ov.ExpiredAt(now_ms_);
  Counts& d = deltas_[db];
  d.keys -= 1;
  if (ov.expire_at_ms != 0) {
    d.expires -= 1;
    batch_->Delete(storage::Cf::kExpiry, storage::ExpiryKey(ov.expire_at_ms, db, key));
  }
  batch_->Delete(storage::Cf::kData, dkey);
  staged_[dkey].raw.reset();
  return Status::Ok();
}

void ApplyTxn::PublishTo(KeyMetaCache* cache) const {
  for (const auto& [dkey, staged] : staged_) {
    cache->Set(dkey, {staged.raw.has_value(), ExpiryOf(staged.raw)});
  }
}

void ApplyTxn::Flush(std::optional<uint16_t> db) {
  SHOAL_CHECK(batch_->Count() == 0);  // alone in its batch (kCmdNoBatch)
  staged_.clear();
  shard_->meta_cache_.Clear();
  uint16_t begin = shard_->slot_begin_, end = shard_->slot_end_;
  auto reset = [&](uint16_t d) {
    Counts& c = deltas_[d];
    c.keys = -shard_->KeyCount(d);
    c.expires = -shard_->ExpiresCount(d);
  };
  if (db) {
    // Point deletes, not a range tombstone per slot: thousands of range
    // tombstones in a memtable would slow every later read. O(keys), as in Redis.
    auto it = engine_->NewIterator(storage::Cf::kData);
    for (uint32_t slot = begin; slot < end; ++slot) {
      std::string prefix = storage::DataSlotDbPrefix(static_cast<uint16_t>(slot), *db);
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        Value v;
        if (DecodeValue(it->value(), &v) && v.expire_at_ms != 0) {
          batch_->Delete(storage::Cf::kExpiry,
                         storage::ExpiryKey(v.expire_at_ms, *db, it->key().substr(prefix.size())));
        }
        batch_->Delete(storage::Cf::kData, it->key());
      }
    }
    reset(*db);
    return;
  }
  batch_->DeleteRange(storage::Cf::kData, storage::DataSlotDbPrefix(begin, 0),
                      storage::DataSlotDbPrefix(static_cast<uint16_t>(end), 0));
  for (int d = 0; d < kDatabasesMax; ++d) {
    if (shard_->KeyCount(static_cast<uint16_t>(d)) != 0) reset(static_cast<uint16_t>(d));
  }
}

void ApplyTxn::DropExpiryIndex(uint16_t db, std::string_view key, int64_t expire_at_ms) {
  batch_->Delete(storage::Cf::kExpiry, storage::ExpiryKey(expire_at_ms, db, key));
}

std::vector<Shard::ExpiredKey> Shard::DueExpiries(int64_t now_ms, size_t max) const {
  std::vector<ExpiredKey> out;
  auto it = engine_->NewIterator(storage::Cf::kExpiry);
  for (it->SeekToFirst(); it->Valid() && out.size() < max; it->Next()) {
    storage::DecodedExpiryKey d;
    if (!storage::DecodeExpiryKey(it->key(), &d)) continue;
    if (d.expire_at_ms > now_ms) break;
    out.push_back({d.db, std::string(d.key), d.expire_at_ms});
  }
  return out;
}

Shard::Shard(storage::Engine* engine, uint32_t id, uint16_t slot_begin, uint16_t slot_end,
             size_t meta_cache_entries)
    : engine_(engine),
      id_(id),
      slot_begin_(slot_begin),
      slot_end_(slot_end),
      batch_(engine->NewBatch()),
      counts_(new AtomicCounts[kDatabasesMax]),
      meta_cache_(meta_cache_entries) {}

std::string Shard::MetaKey(std::string_view name) const {
  return "shard/" + std::to_string(id_) + "/" + std::string(name);
}

std::string Shard::CountKey(char kind, uint16_t db) const {
  return MetaKey(std::string(1, kind) + std::to_string(db));
}

Status Shard::Load() {
  std::string raw;
  Status s = engine_->Get(storage::Cf::kMeta, MetaKey("applied"), &raw);
  if (s.ok()) {
    int64_t v = 0;
    if (!DecodeI64(raw, &v)) return Status::Corruption("applied index record");
    applied_index_ = static_cast<uint64_t>(v);
  } else if (s.code() != Code::kNotFound) {
    return s;
  }
  auto it = engine_->NewIterator(storage::Cf::kMeta);
  std::string prefix = MetaKey("");
  for (it->Seek(prefix); it->Valid() && it->key().substr(0, prefix.size()) == prefix; it->Next()) {
    std::string_view name = it->key().substr(prefix.size());
    if (name.empty() || (name[0] != 'k' && name[0] != 'e')) continue;
    int db = std::atoi(std::string(name.substr(1)).c_str());
    int64_t v = 0;
    if (db < 0 || db >= kDatabasesMax || !DecodeI64(it->value(), &v)) {
      return Status::Corruption("counter record " + std::string(it->key()));
    }
    (name[0] == 'k' ? counts_[db].keys : counts_[db].expires).store(v);
  }
  return it->status();
}

Result<uint64_t> Shard::Commit(storage::WriteBatch& batch,
                               const std::map<uint16_t, ApplyTxn::Counts>& deltas, size_t entries) {
  applied_index_ += entries;
  if (batch.Count() == 0) return engine_->write_seq();
  batch.Put(storage::Cf::kMeta, MetaKey("applied"), EncodeI64(static_cast<int64_t>(applied_index_)));
  for (const auto& [db, d] : deltas) {
    if (d.keys != 0) {
      batch.Put(storage::Cf::kMeta, CountKey('k', db), EncodeI64(KeyCount(db) + d.keys));
    }
    if (d.expires != 0) {
      batch.Put(storage::Cf::kMeta, CountKey('e', db), EncodeI64(ExpiresCount(db) + d.expires));
    }
  }
  auto seq = engine_->Write(batch);
  if (!seq.ok()) {
    applied_index_ -= entries;
    return seq;
  }
  for (const auto& [db, d] : deltas) {
    counts_[db].keys.fetch_add(d.keys, std::memory_order_relaxed);
    counts_[db].expires.fetch_add(d.expires, std::memory_order_relaxed);
  }
  return seq;
}

Result<uint64_t> Shard::Apply(const Entry& entry, ApplyFn fn, const Limits& limits,
                              resp::Writer* reply) {
  return ApplyBatch(std::span<const Entry>(&entry, 1), std::span<const ApplyFn>(&fn, 1), limits,
                    reply);
}

Result<uint64_t> Shard::ApplyBatch(std::span<const Entry> entries, std::span<const ApplyFn> fns,
                                   const Limits& limits, resp::Writer* reply) {
  SHOAL_CHECK(entries.size() == fns.size() && !entries.empty());
  batch_->Clear();
  ApplyTxn txn(this, engine_, batch_.get(), entries[0].now_ms);
  std::string* out = reply->buffer();
  size_t mark = out->size();
  Status s;
  for (size_t i = 0; i < entries.size() && s.ok(); ++i) {
    txn.set_now_ms(entries[i].now_ms);
    s = fns[i](txn, entries[i], limits, reply);
  }
  if (s.ok()) {
    auto seq = Commit(*batch_, txn.count_deltas(), entries.size());
    if (seq.ok()) {
      txn.PublishTo(&meta_cache_);
      return seq;
    }
    s = seq.status();
  }
  meta_cache_.Clear();  // reads may have cached what this failed apply saw
  // A storage failure: nothing of these entries was written; say so instead.
  out->resize(mark);
  for (size_t i = 0; i < entries.size(); ++i) reply->Error("ERR storage error: " + s.ToString());
  return s;
}

}  // namespace shoal::kv
