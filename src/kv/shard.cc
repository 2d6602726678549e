#include "kv/shard.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/crc32c.h"
#include "kv/commands.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace shoal::kv {

size_t KeyMetaCache::Probe(std::string_view dkey, uint64_t stored) const {
  const size_t mask = slots_.size() - 1;
  for (size_t i = stored & mask;; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (slot.hash == 0) return i;
    if (slot.hash == stored && std::string_view(keys_).substr(slot.key_at, slot.key_len) == dkey) return i;
  }
}

std::optional<KeyMetaCache::Meta> KeyMetaCache::Find(std::string_view dkey, uint64_t hash) const {
  if (size_ == 0) return std::nullopt;
  const Slot& slot = slots_[Probe(dkey, Stored(hash))];
  if (slot.hash == 0) return std::nullopt;
  return Meta{(slot.flags & 1) != 0, slot.expire_at_ms, (slot.flags & 2) != 0};
}

uint64_t KeyMetaCache::DataKeyHash(uint16_t db, std::string_view key) {
  char dkey[64];
  if (key.size() > sizeof(dkey) - storage::kDataKeyPrefixBytes) return Hash(storage::DataKey(db, key));
  // storage::DataKey's bytes, without an allocation.
  static_assert(storage::kDataKeyPrefixBytes == 4);
  const uint16_t key_slot = storage::KeySlot(key);
  dkey[0] = static_cast<char>(key_slot >> 8);
  dkey[1] = static_cast<char>(key_slot & 0xff);
  dkey[2] = static_cast<char>(db >> 8);
  dkey[3] = static_cast<char>(db & 0xff);
  std::memcpy(dkey + 4, key.data(), key.size());
  return Hash(std::string_view(dkey, 4 + key.size()));
}

void KeyMetaCache::PrefetchSlot(uint64_t hash) const {
  if (!slots_.empty()) __builtin_prefetch(&slots_[Stored(hash) & (slots_.size() - 1)]);
}

void KeyMetaCache::PrefetchKey(uint64_t hash) const {
  if (slots_.empty()) return;
  const uint64_t stored = Stored(hash);
  const Slot& slot = slots_[stored & (slots_.size() - 1)];
  if (slot.hash == stored) __builtin_prefetch(keys_.data() + slot.key_at);
}

KeyMetaCache::KeyMetaCache(size_t max_bytes) : KeyMetaCache(std::make_shared<KeyMetaBudget>(max_bytes)) {}

KeyMetaCache::KeyMetaCache(std::shared_ptr<KeyMetaBudget> budget) : budget_(std::move(budget)) {
  budget_->caches_.fetch_add(1, std::memory_order_relaxed);
}

KeyMetaCache::~KeyMetaCache() { Detach(); }

void KeyMetaCache::Detach() {
  retired_ = true;
  Leave();
}

void KeyMetaCache::Leave() {
  Clear();
  if (!attached_) return;
  attached_ = false;
  budget_->caches_.fetch_sub(1, std::memory_order_relaxed);
}

void KeyMetaCache::SetActive(bool active) {
  if (!active) return Leave();
  if (retired_ || attached_) return;
  attached_ = true;
  budget_->caches_.fetch_add(1, std::memory_order_relaxed);
}

bool KeyMetaCache::MakeRoom(size_t charge) {
  const auto max = static_cast<int64_t>(budget_->max_bytes_);
  if (!attached_ || static_cast<int64_t>(charge) > max) return false;  // detached, disabled, or too long
  if (budget_->used_bytes_.load(std::memory_order_relaxed) + static_cast<int64_t>(charge) <= max) return true;
  // Spent. A cache under its even share may still grow to it (so a shard
  // written now is never starved by idle ones that hold the budget: all
  // together hold at most about twice the budget); one at or over it starts
  // over.
  const int64_t caches = std::max<int64_t>(1, budget_->caches_.load(std::memory_order_relaxed));
  if (static_cast<int64_t>(bytes_ + charge) * caches <= max) return true;
  Clear();
  return true;
}

void KeyMetaCache::Set(std::string_view dkey, uint64_t key_hash, Meta meta) {
  if (dkey.size() > UINT16_MAX) return;  // such a key is never cached
  const uint64_t hash = Stored(key_hash);
  size_t i = slots_.empty() ? 0 : Probe(dkey, hash);
  if (slots_.empty() || slots_[i].hash == 0) {  // a new key
    if (keys_.size() + dkey.size() > UINT32_MAX) Clear();
    const size_t charge = dkey.size() + KeyMetaBudget::kEntryBytes;
    if (!MakeRoom(charge)) return;
    if ((size_ + 1) * 4 > slots_.size() * 3) Grow();
    i = Probe(dkey, hash);
    slots_[i].hash = hash;
    slots_[i].key_at = static_cast<uint32_t>(keys_.size());
    slots_[i].key_len = static_cast<uint16_t>(dkey.size());
    keys_.append(dkey);
    ++size_;
    bytes_ += charge;
    budget_->used_bytes_.fetch_add(static_cast<int64_t>(charge), std::memory_order_relaxed);
    budget_->entries_.fetch_add(1, std::memory_order_relaxed);
  }
  slots_[i].expire_at_ms = meta.expire_at_ms;
  slots_[i].flags = static_cast<uint8_t>((meta.exists ? 1 : 0) | (meta.collection ? 2 : 0));
}

void KeyMetaCache::Grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(std::max<size_t>(16, old.size() * 2), Slot{});
  const size_t mask = slots_.size() - 1;
  for (const Slot& slot : old) {
    if (slot.hash == 0) continue;
    size_t i = slot.hash & mask;
    while (slots_[i].hash != 0) i = (i + 1) & mask;
    slots_[i] = slot;
  }
}

void KeyMetaCache::Clear() {
  // The memory goes too: a shard that was written once may stay idle while
  // others use the budget.
  budget_->used_bytes_.fetch_sub(static_cast<int64_t>(bytes_), std::memory_order_relaxed);
  budget_->entries_.fetch_sub(static_cast<int64_t>(size_), std::memory_order_relaxed);
  bytes_ = 0;
  std::vector<Slot>().swap(slots_);
  std::string().swap(keys_);
  size_ = 0;
}

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

// A stored value's metadata (one that does not decode still exists).
KeyMetaCache::Meta MetaOfStored(std::string_view raw) {
  Value v;
  if (!DecodeValue(raw, &v)) return {true, 0, false};
  return {true, v.expire_at_ms, IsCollection(v.type)};
}

KeyMetaCache::Meta MetaOf(const std::optional<std::string>& raw) {
  return raw ? MetaOfStored(*raw) : KeyMetaCache::Meta{false, 0, false};
}

}  // namespace

std::optional<KeyMetaCache::Meta> Shard::CommittedMeta(uint16_t db, std::string_view key) {
  const KeyRef k{db, key};
  std::optional<KeyMetaCache::Meta> meta;
  CommittedMetas(std::span<const KeyRef>(&k, 1), std::span<std::optional<KeyMetaCache::Meta>>(&meta, 1));
  return meta;
}

void Shard::CommittedMetas(std::span<const KeyRef> keys, std::span<std::optional<KeyMetaCache::Meta>> out) {
  SHOAL_CHECK(!staged_unwritten_ && out.size() == keys.size());
  // Kept for the thread's next call (no allocation a key once warm), up to
  // a bound.
  thread_local std::vector<std::string> dkeys;
  thread_local std::vector<size_t> missed;
  thread_local std::vector<std::string_view> reads;
  thread_local std::vector<std::string> values;
  thread_local std::vector<Status> statuses;
  if (dkeys.size() < keys.size()) dkeys.resize(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    dkeys[i].clear();
    storage::AppendDataKeyInSlot(&dkeys[i], storage::KeySlot(keys[i].key), keys[i].db, keys[i].key);
    if (keys.size() > 1) meta_cache_.PrefetchSlot(dkeys[i]);  // its cache misses overlap the others'
  }
  missed.clear();
  for (size_t i = 0; i < keys.size(); ++i) {
    out[i] = meta_cache_.Find(dkeys[i]);
    if (!out[i]) missed.push_back(i);
  }
  size_t read = 0;  // values filled by this call
  if (!missed.empty()) {
    // Each missing key read once (a batch may name one twice), in one
    // MultiGet.
    std::sort(missed.begin(), missed.end(), [](size_t a, size_t b) { return dkeys[a] < dkeys[b]; });
    reads.clear();
    for (size_t j = 0; j < missed.size(); ++j) {
      if (j == 0 || dkeys[missed[j]] != dkeys[missed[j - 1]]) reads.push_back(dkeys[missed[j]]);
    }
    read = reads.size();
    values.resize(read);
    statuses.resize(read);
    engine_->MultiGet(storage::Cf::kData, reads, std::span<std::string>(values.data(), reads.size()),
                      std::span<Status>(statuses.data(), reads.size()));
    size_t r = 0;
    for (size_t j = 0; j < missed.size(); ++j) {
      if (j > 0 && dkeys[missed[j]] != dkeys[missed[j - 1]]) ++r;
      std::optional<KeyMetaCache::Meta>& meta = out[missed[j]];
      if (statuses[r].code() == Code::kNotFound) {
        meta = KeyMetaCache::Meta{false, 0, false};
      } else if (statuses[r].ok()) {
        meta = MetaOfStored(values[r]);
      } else {
        continue;  // a storage error: unknown, and not cached
      }
      meta_cache_.Set(dkeys[missed[j]], *meta);
    }
  }
  if (keys.size() > 256) {  // a huge batch (an MSET of many keys): its buffers go
    std::vector<std::string>().swap(dkeys);
    std::vector<size_t>().swap(missed);
    std::vector<std::string_view>().swap(reads);
    std::vector<std::string>().swap(values);
    std::vector<Status>().swap(statuses);
  }
  // Nor is a long key or a large value (only this call's can be one).
  for (size_t i = 0; i < std::min(keys.size(), dkeys.size()); ++i) {
    if (dkeys[i].capacity() > 4096) std::string().swap(dkeys[i]);
  }
  for (size_t i = 0; i < std::min(read, values.size()); ++i) {
    if (values[i].capacity() > 4096) std::string().swap(values[i]);
  }
}

Result<std::optional<std::string>> ApplyTxn::GetRaw(std::string_view dkey) {
  const uint64_t hash = StagedValues::Hash(dkey);
  if (const StagedValues::Item* item = staged_.Find(dkey, hash)) return item->raw;
  std::string raw;
  Status s = engine_->Get(storage::Cf::kData, dkey, &raw);
  if (s.code() == Code::kNotFound) {
    staged_.Emplace(dkey, hash);  // remembered (as absent): a command reads, then writes
    shard_->meta_cache_.Set(dkey, hash, {false, 0, false});
    return std::optional<std::string>();
  }
  if (!s.ok()) return s;
  shard_->meta_cache_.Set(dkey, hash, MetaOfStored(raw));
  staged_.Emplace(dkey, hash)->raw = raw;
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

const KeyHint* ApplyTxn::HintFor(uint16_t db, std::string_view key) const {
  if (entry_ == nullptr || entry_->hints.empty() || db != entry_->db) return nullptr;
  for (const KeyHint& h : entry_->hints) {
    if (h.arg < entry_->args.size() && entry_->args[h.arg] == key) return &h;
  }
  return nullptr;
}

Status ApplyTxn::Put(uint16_t db, std::string_view key, std::string encoded) {
  std::string dkey = storage::DataKey(db, key);
  bool old_exists = false;
  int64_t old_exp = 0;
  std::optional<KeyMetaCache::Meta> meta;
  Value nv;
  SHOAL_CHECK(DecodeValue(encoded, &nv));
  if (IsCollection(nv.type)) touched_.emplace(db, std::string(key));  // its version goes with it
  const uint64_t hash = StagedValues::Hash(dkey);
  const bool staged = staged_.Find(dkey, hash) != nullptr;
  const KeyHint* hint = staged ? nullptr : HintFor(db, key);
  if (hint != nullptr) {
    old_exists = hint->exists;  // the leader's word: the same on every replica
    old_exp = hint->expire_at_ms;
    shard_->hinted_puts_.store(shard_->hinted_puts_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  } else if (!staged && (meta = shard_->meta_cache_.Find(dkey, hash)) && !meta->collection) {
    old_exists = meta->exists;  // a blind write needs only this, not the value
    old_exp = meta->expire_at_ms;
  } else {
    auto old = GetRaw(dkey);
    if (!old.ok()) return old.status();
    old_exists = old->has_value();
    old_exp = ExpiryOf(*old);
    Value ov;
    if (old_exists && DecodeValue(**old, &ov) && ov.type != nv.type) {
      Status s = DropElementsOf(db, key, **old);  // a value of another type replaces a collection
      if (!s.ok()) return s;
    }
  }
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
  // GetRaw above may have staged dkey since: then the hint is only a hint.
  staged_.Emplace(dkey, hash)->raw = std::move(encoded);
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
  Status dropped = DropElementsOf(db, key, **old);
  if (!dropped.ok()) return dropped;
  Counts& d = deltas_[db];
  d.keys -= 1;
  if (ov.expire_at_ms != 0) {
    d.expires -= 1;
    batch_->Delete(storage::Cf::kExpiry, storage::ExpiryKey(ov.expire_at_ms, db, key));
  }
  batch_->Delete(storage::Cf::kData, dkey);
  staged_.Emplace(dkey)->raw.reset();
  return Status::Ok();
}

void ApplyTxn::PublishTo(KeyMetaCache* cache) const {
  // After the round's storage write (its memtable inserts) the table's
  // slots are out of the CPU's cache again: they are fetched ahead, as in
  // StageBatch. Items keep their keys' hashes (the same hash).
  constexpr size_t kAhead = 4;
  const size_t n = staged_.size();
  const bool prefetching = n > 1 && !cache->empty();
  if (prefetching) {
    for (size_t j = 0; j < std::min(n, kAhead); ++j) cache->PrefetchSlot(staged_.Nth(j).hash);
  }
  for (size_t i = 0; i < n; ++i) {
    if (prefetching) {
      if (i + kAhead < n) cache->PrefetchSlot(staged_.Nth(i + kAhead).hash);
      if (i + kAhead / 2 < n) cache->PrefetchKey(staged_.Nth(i + kAhead / 2).hash);
    }
    const StagedValues::Item& item = staged_.Nth(i);
    cache->Set(item.key, item.hash, MetaOf(item.raw));
  }
}

Status ApplyTxn::DropElementsOf(uint16_t db, std::string_view key, const std::string& old) {
  Value v;
  if (!DecodeValue(old, &v) || !IsCollection(v.type)) return Status::Ok();
  return DeleteElementRange(db, key, {}, {}, CollectionCount(v.payload));
}

Status ApplyTxn::DeleteElementRange(uint16_t db, std::string_view key, std::string_view from, std::string_view to,
                                    uint64_t n) {
  touched_.emplace(db, std::string(key));
  const std::string prefix = storage::ElementPrefix(db, key);
  const std::string begin = prefix + std::string(from);
  const std::string end = to.empty() ? storage::PrefixEnd(prefix) : prefix + std::string(to);
  if (n <= kPointDeleteMax) {
    std::vector<std::string> names;
    Status s = ForEachElement(
        db, key,
        [&](std::string_view element, std::string_view) {
          if (!to.empty() && element >= to) return false;
          names.emplace_back(element);
          return true;
        },
        from);
    if (!s.ok()) return s;
    for (const auto& name : names) DeleteElement(db, key, name);
    return Status::Ok();
  }
  batch_->DeleteRange(storage::Cf::kData, begin, end);
  for (auto it = elements_.lower_bound(begin); it != elements_.end() && it->first < end; ++it) it->second.reset();
  cleared_.emplace_back(begin, end);
  return Status::Ok();
}

const std::pair<std::string, std::string>* ApplyTxn::ClearedRangeOf(std::string_view ekey) const {
  for (const auto& r : cleared_) {
    if (ekey >= r.first && ekey < r.second) return &r;
  }
  return nullptr;
}

Result<std::optional<std::string>> ApplyTxn::GetElement(uint16_t db, std::string_view key,
                                                        std::string_view element) {
  std::string ekey = storage::ElementKey(db, key, element);
  if (auto it = elements_.find(ekey); it != elements_.end()) return it->second;
  if (ClearedRangeOf(ekey) != nullptr) return std::optional<std::string>();
  std::string raw;
  Status s = engine_->Get(storage::Cf::kData, ekey, &raw);
  if (s.code() == Code::kNotFound) return std::optional<std::string>();
  if (!s.ok()) return s;
  return std::optional<std::string>(std::move(raw));
}

void ApplyTxn::set_version(uint64_t log_index, uint64_t place) {
  version_.clear();
  storage::PutU64BE(&version_, shard_->id());
  storage::PutU64BE(&version_, log_index << 20 | (place & 0xfffff));
}

Status ApplyTxn::SealElementWrites() {
  auto touched = std::move(touched_);
  touched_.clear();
  for (const auto& [db, key] : touched) {
    auto raw = GetLive(db, key);
    if (!raw.ok()) return raw.status();
    Value v;
    if (!*raw || !DecodeValue(**raw, &v) || !IsCollection(v.type)) continue;  // gone with its elements
    if (collect_changed_ && (v.type == ValueType::kList || v.type == ValueType::kZSet)) changed_.push_back({db, key, v.type});
    if (CollectionVersion(v.type, v.payload) == version_) continue;
    Status s = Put(db, key, EncodeValue(v.type, v.expire_at_ms, WithCollectionVersion(v.type, v.payload, version_)));
    if (!s.ok()) return s;
  }
  touched_.clear();  // the Puts above
  return Status::Ok();
}

void ApplyTxn::PutElement(uint16_t db, std::string_view key, std::string_view element, std::string_view value) {
  touched_.emplace(db, std::string(key));
  std::string ekey = storage::ElementKey(db, key, element);
  batch_->Put(storage::Cf::kData, ekey, value);
  elements_[std::move(ekey)] = std::string(value);
}

void ApplyTxn::DeleteElement(uint16_t db, std::string_view key, std::string_view element) {
  touched_.emplace(db, std::string(key));
  std::string ekey = storage::ElementKey(db, key, element);
  batch_->Delete(storage::Cf::kData, ekey);
  elements_[std::move(ekey)].reset();
}

Status ApplyTxn::ForEachElement(uint16_t db, std::string_view key,
                                const std::function<bool(std::string_view, std::string_view)>& fn,
                                std::string_view from) {
  const std::string prefix = storage::ElementPrefix(db, key);
  const std::string end = storage::PrefixEnd(prefix);
  const std::string start = prefix + std::string(from);
  // This apply's writes over what storage holds, merged in key order.
  auto staged = elements_.lower_bound(start);
  auto it = engine_->NewIterator(storage::Cf::kData);
  it->Seek(start);
  // What storage holds inside a range deleted in this apply is gone.
  auto stored_valid = [&] {
    while (it->Valid() && it->key().starts_with(prefix)) {
      const auto* cleared = ClearedRangeOf(it->key());
      if (cleared == nullptr) return true;
      it->Seek(cleared->second);
    }
    return false;
  };
  while (true) {
    bool have_staged = staged != elements_.end() && staged->first < end;
    bool have_stored = stored_valid();
    if (!have_staged && !have_stored) break;
    if (have_staged && (!have_stored || std::string_view(staged->first) <= it->key())) {
      if (have_stored && std::string_view(staged->first) == it->key()) it->Next();
      const auto& [ekey, value] = *staged;
      ++staged;
      // Stopped on a staged element: what storage held before it must have
      // been read (a stored read that failed may have left it out).
      if (value && !fn(std::string_view(ekey).substr(prefix.size()), *value)) return it->status();
    } else {
      if (!fn(it->key().substr(prefix.size()), it->value())) return Status::Ok();
      it->Next();
    }
  }
  return it->status();
}

Status ApplyTxn::ForEachElementReverse(uint16_t db, std::string_view key,
                                       const std::function<bool(std::string_view, std::string_view)>& fn,
                                       std::string_view before) {
  const std::string prefix = storage::ElementPrefix(db, key);
  const std::string end = before.empty() ? storage::PrefixEnd(prefix) : prefix + std::string(before);
  auto staged = std::make_reverse_iterator(elements_.lower_bound(end));  // the last staged before end
  auto it = engine_->NewIterator(storage::Cf::kData);
  // The last stored key before `bound`.
  auto seek_before = [&](const std::string& bound) {
    it->SeekForPrev(bound);
    if (it->Valid() && it->key() >= std::string_view(bound)) it->Prev();
  };
  seek_before(end);
  auto stored_valid = [&] {
    while (it->Valid() && it->key().starts_with(prefix)) {
      const auto* cleared = ClearedRangeOf(it->key());
      if (cleared == nullptr) return true;
      seek_before(cleared->first);
    }
    return false;
  };
  while (true) {
    bool have_staged = staged != elements_.rend() && std::string_view(staged->first).starts_with(prefix);
    bool have_stored = stored_valid();
    if (!have_staged && !have_stored) break;
    if (have_staged && (!have_stored || std::string_view(staged->first) >= it->key())) {
      if (have_stored && std::string_view(staged->first) == it->key()) it->Prev();
      const auto& [ekey, value] = *staged;
      ++staged;
      // Stopped on a staged element: what storage held before it must have
      // been read (a stored read that failed may have left it out).
      if (value && !fn(std::string_view(ekey).substr(prefix.size()), *value)) return it->status();
    } else {
      if (!fn(it->key().substr(prefix.size()), it->value())) return Status::Ok();
      it->Prev();
    }
  }
  return it->status();
}

// ---- the read view of an apply (reads inside MULTI ... EXEC)

namespace {

using Ranges = std::vector<std::pair<std::string, std::string>>;

const std::pair<std::string, std::string>* RangeOf(const Ranges& ranges, std::string_view key) {
  for (const auto& r : ranges) {
    if (key >= r.first && key < r.second) return &r;
  }
  return nullptr;
}

// An apply's staged writes, read in place: its data values and its element
// writes (disjoint key spaces), in key order.
class Staging {
 public:
  using Data = StagedValues;
  using Elements = std::map<std::string, std::optional<std::string>>;
  struct Ref {
    std::string_view key;
    const std::optional<std::string>* value;  // nullopt inside: deleted
  };
  Staging(const Data* data, const Elements* elements) : data_(data), elements_(elements) {}

  // The staged value of key (nullptr: not staged).
  const std::optional<std::string>* Find(std::string_view key) const {
    if (auto it = elements_->find(std::string(key)); it != elements_->end()) return &it->second;
    if (const StagedValues::Item* item = data_->Find(key)) return &item->raw;
    return nullptr;
  }
  // The first staged key at (strict: after) target.
  std::optional<Ref> After(const std::string& target, bool strict) const {
    const StagedValues::Item* d = data_->After(target, strict);
    auto e = strict ? elements_->upper_bound(target) : elements_->lower_bound(target);
    const bool has_e = e != elements_->end();
    if (d == nullptr && !has_e) return std::nullopt;
    if (d != nullptr && (!has_e || d->key < e->first)) return Ref{d->key, &d->raw};
    return Ref{e->first, &e->second};
  }
  // The last staged key at (strict: before) target.
  std::optional<Ref> Before(const std::string& target, bool strict) const {
    const StagedValues::Item* d = data_->Before(target, strict);
    auto e = strict ? elements_->lower_bound(target) : elements_->upper_bound(target);
    const bool has_e = e != elements_->begin();
    if (d == nullptr && !has_e) return std::nullopt;
    if (has_e) --e;
    if (d != nullptr && (!has_e || d->key > std::string_view(e->first))) return Ref{d->key, &d->raw};
    return Ref{e->first, &e->second};
  }

 private:
  const Data* data_;
  const Elements* elements_;
};

// Stored keys merged with the staged ones: each move seeks the store again
// (transactions read little; correctness over speed).
class OverlayIterator final : public storage::Iterator {
 public:
  OverlayIterator(std::unique_ptr<storage::Iterator> base, Staging staging, const Ranges* cleared, Status* failure)
      : base_(std::move(base)), staging_(staging), cleared_(cleared), failure_(failure) {}

  void Seek(std::string_view target) override { SeekAfter(target, false); }
  void SeekToFirst() override { Seek({}); }
  void SeekForPrev(std::string_view target) override { SeekBefore(target, false); }
  bool Valid() const override { return valid_; }
  void Next() override { SeekAfter(key_, true); }
  void Prev() override { SeekBefore(key_, true); }
  std::string_view key() const override { return key_; }
  std::string_view value() const override { return value_; }
  Status status() const override { return failed_; }

 private:
  // The first key at (or, if strict, after) t.
  void SeekAfter(std::string_view t, bool strict) {
    const std::string target(t);
    base_->Seek(target);
    while (base_->Valid()) {
      std::string_view k = base_->key();
      if (strict && k == target) {
        base_->Next();
      } else if (const auto* r = RangeOf(*cleared_, k)) {
        base_->Seek(r->second);
      } else if (staging_.Find(k) != nullptr) {
        base_->Next();  // the staged write stands for it
      } else {
        break;
      }
    }
    auto o = staging_.After(target, strict);
    while (o && !o->value->has_value()) o = staging_.After(std::string(o->key), true);
    Take(o, base_->Valid() && (!o || base_->key() < o->key));
  }

  // The last key at (or, if strict, before) t.
  void SeekBefore(std::string_view t, bool strict) {
    const std::string target(t);
    auto before = [&](const std::string& bound, bool excl) {
      base_->SeekForPrev(bound);
      if (excl && base_->Valid() && base_->key() >= std::string_view(bound)) base_->Prev();
    };
    before(target, strict);
    while (base_->Valid()) {
      std::string_view k = base_->key();
      if (const auto* r = RangeOf(*cleared_, k)) {
        before(r->first, true);
      } else if (staging_.Find(k) != nullptr) {
        base_->Prev();
      } else {
        break;
      }
    }
    auto o = staging_.Before(target, strict);
    while (o && !o->value->has_value()) o = staging_.Before(std::string(o->key), true);
    Take(o, base_->Valid() && (!o || base_->key() > o->key));
  }

  void Take(const std::optional<Staging::Ref>& o, bool base_wins) {
    // Every move seeks the store again, and a seek clears its error: one
    // that failed ends the walk here, or the stored keys between it and
    // the next staged one would be skipped with nothing reported.
    if (failed_.ok()) {
      failed_ = base_->status();
      if (!failed_.ok() && failure_ != nullptr && failure_->ok()) *failure_ = failed_;
    }
    valid_ = failed_.ok() && (base_wins || o.has_value());
    if (!valid_) return;
    if (base_wins) {
      key_.assign(base_->key());
      value_.assign(base_->value());
    } else {
      key_.assign(o->key);
      value_.assign(**o->value);
    }
  }

  std::unique_ptr<storage::Iterator> base_;
  Staging staging_;
  const Ranges* cleared_;
  Status* failure_;  // where the view keeps its first failed read (or null)
  bool valid_ = false;
  Status failed_;  // the first error of the store under it
  std::string key_, value_;
};

class NoSnapshot final : public storage::Snapshot {};

}  // namespace

// The store as an apply sees it: its staged values and elements over what
// storage holds, without what its range deletions removed. Reads the apply's
// maps in place: valid until the apply writes again.
class TxnView final : public storage::Engine {
 public:
  TxnView(ApplyTxn* txn, Status* failure)
      : base_(txn->engine_), staging_(&txn->staged_, &txn->elements_), cleared_(&txn->cleared_), failure_(failure) {}

  Status Get(storage::Cf cf, std::string_view key, std::string* value, const storage::Snapshot*,
             storage::ReadVia) override {
    if (cf == storage::Cf::kData) {
      if (const auto* staged = staging_.Find(key)) {
        if (!*staged) return Status::NotFound("deleted in this transaction");
        *value = **staged;
        return Status::Ok();
      }
      if (RangeOf(*cleared_, key) != nullptr) return Status::NotFound("deleted in this transaction");
    }
    Status s = base_->Get(cf, key, value);
    if (!s.ok() && s.code() != Code::kNotFound && failure_ != nullptr && failure_->ok()) *failure_ = s;
    return s;
  }
  std::unique_ptr<storage::Iterator> NewIterator(storage::Cf cf, const storage::Snapshot*) override {
    auto base = base_->NewIterator(cf);
    if (cf != storage::Cf::kData) return base;
    return std::make_unique<OverlayIterator>(std::move(base), staging_, cleared_, failure_);
  }
  std::unique_ptr<storage::Iterator> NewScanIterator(storage::Cf cf, const storage::Snapshot*) override {
    auto base = base_->NewScanIterator(cf);
    if (cf != storage::Cf::kData) return base;
    return std::make_unique<OverlayIterator>(std::move(base), staging_, cleared_, failure_);
  }
  std::unique_ptr<storage::Snapshot> NewSnapshot() override { return std::make_unique<NoSnapshot>(); }
  // A read view: nothing writes through it.
  Result<uint64_t> Write(storage::WriteBatch&) override { return Status::Aborted("read view"); }
  std::unique_ptr<storage::WriteBatch> NewBatch() override { return base_->NewBatch(); }
  Result<uint64_t> Sync() override { return Status::Aborted("read view"); }
  std::unique_ptr<storage::SstWriter> NewSstWriter(storage::Cf, const std::string&) override { return nullptr; }
  Status IngestSst(storage::Cf, const std::string&, bool) override { return Status::Aborted("read view"); }
  const std::string& dir() const override { return base_->dir(); }
  storage::MemoryUsage Memory() override { return base_->Memory(); }
  int64_t DiskBytes() override { return base_->DiskBytes(); }
  uint64_t VisibleSeq() override { return base_->VisibleSeq(); }
  uint64_t ApproximateSize(storage::Cf cf, std::string_view b, std::string_view e) override {
    return base_->ApproximateSize(cf, b, e);
  }

 private:
  storage::Engine* base_;
  Staging staging_;
  const Ranges* cleared_;
  Status* failure_;
};

std::unique_ptr<storage::Engine> ApplyTxn::NewReadView(Status* failure) {
  return std::make_unique<TxnView>(this, failure);
}

Status ApplyTxn::Flush(std::optional<uint16_t> db) {
  SHOAL_CHECK(batch_->Count() == 0);  // alone in its batch (kCmdNoBatch)
  ++shard_->recount_generation_;  // a recount under way counted keys this removes
  staged_.Clear();
  elements_.clear();
  cleared_.clear();
  shard_->meta_cache_.Clear();
  uint16_t begin = shard_->slot_begin(), end = shard_->slot_end();
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
      // Each slot's seek clears the last one's error: a read that failed
      // would leave keys this replica alone keeps.
      if (!it->status().ok()) return it->status();
      // The elements of its collections: their own prefix in the slot.
      prefix = storage::DataSlotDbPrefix(static_cast<uint16_t>(slot), static_cast<uint16_t>(*db | storage::kElementDbFlag));
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        batch_->Delete(storage::Cf::kData, it->key());
      }
      if (!it->status().ok()) return it->status();
    }
    reset(*db);
    return Status::Ok();
  }
  batch_->DeleteRange(storage::Cf::kData, storage::DataSlotDbPrefix(begin, 0),
                      storage::DataSlotDbPrefix(static_cast<uint16_t>(end), 0));
  for (int d = 0; d < kDatabasesMax; ++d) {
    if (shard_->KeyCount(static_cast<uint16_t>(d)) != 0) reset(static_cast<uint16_t>(d));
  }
  return Status::Ok();
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
    if (!OwnsSlot(storage::KeySlot(d.key))) continue;  // another shard's key
    out.push_back({d.db, std::string(d.key), d.expire_at_ms});
  }
  return out;
}

Shard::Shard(storage::Engine* engine, uint32_t id, uint16_t slot_begin, uint16_t slot_end,
             size_t meta_cache_bytes)
    : Shard(engine, id, slot_begin, slot_end, std::make_shared<KeyMetaBudget>(meta_cache_bytes)) {}

Shard::Shard(storage::Engine* engine, uint32_t id, uint16_t slot_begin, uint16_t slot_end,
             std::shared_ptr<KeyMetaBudget> meta_budget)
    : engine_(engine),
      id_(id),
      slot_begin_(slot_begin),
      slot_end_(slot_end),
      batch_(engine->NewBatch()),
      counts_(new AtomicCounts[kDatabasesMax]),
      meta_cache_(std::move(meta_budget)) {}

std::string Shard::MetaKeyOf(uint32_t id, std::string_view name) {
  return "shard/" + std::to_string(id) + "/" + std::string(name);
}

std::string Shard::CountKeyOf(uint32_t id, char kind, uint16_t db) {
  return MetaKeyOf(id, std::string(1, kind) + std::to_string(db));
}

std::string Shard::CountKey(char kind, uint16_t db) const { return CountKeyOf(id_, kind, db); }

std::string Shard::EncodeRange(uint16_t begin, uint16_t end) {
  std::string v;
  storage::PutU16BE(&v, begin);
  storage::PutU16BE(&v, end);
  return v;
}

namespace {
// The data keys of the slots [begin, end) are those in [lo, hi): a slot's
// number as it starts every data key (end may be 16384: past every slot).
struct SlotKeys {
  std::string lo, hi;
};
SlotKeys SlotRangeKeys(uint16_t begin, uint16_t end) {
  SlotKeys k;
  storage::PutU16BE(&k.lo, begin);
  storage::PutU16BE(&k.hi, end);
  return k;
}

bool DecodeRange(std::string_view v, uint16_t* begin, uint16_t* end) {
  if (v.size() != 4) return false;
  *begin = storage::GetU16BE(v.data());
  *end = storage::GetU16BE(v.data() + 2);
  return *begin < *end && *end <= storage::kSlotCount;
}
}  // namespace

void Shard::StageRange(uint16_t begin, uint16_t end, storage::WriteBatch& batch) const {
  batch.Put(storage::Cf::kMeta, MetaKey("range"), EncodeRange(begin, end));
}

Status Shard::Load() {
  std::string raw;
  // The range this replica holds (it outlives the metadata's view of it:
  // after a split the metadata may run ahead of, or behind, this replica).
  Status s = engine_->Get(storage::Cf::kMeta, MetaKey("range"), &raw);
  if (s.ok()) {
    uint16_t b = 0, e = 0;
    if (!DecodeRange(raw, &b, &e)) return Status::Corruption("range record of shard " + std::to_string(id_));
    slot_begin_.store(b);
    slot_end_.store(e);
  } else if (s.code() == Code::kNotFound) {
    auto batch = engine_->NewBatch();
    StageRange(slot_begin(), slot_end(), *batch);
    auto seq = engine_->Write(*batch);
    if (!seq.ok()) return seq.status();
  } else {
    return s;
  }
  s = engine_->Get(storage::Cf::kMeta, MetaKey("recount"), &raw);
  if (!s.ok() && s.code() != Code::kNotFound) return s;
  recount_pending_ = s.ok();
  s = engine_->Get(storage::Cf::kMeta, MetaKey("applied"), &raw);
  if (s.ok()) {
    int64_t v = 0;
    if (!DecodeI64(raw, &v)) return Status::Corruption("applied index record");
    applied_index_ = static_cast<uint64_t>(v);
    recorded_applied_ = applied_index_;
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

void Shard::StageApplied(uint64_t index, storage::WriteBatch& batch) {
  applied_index_ = index;
  recorded_applied_ = index;
  batch.Put(storage::Cf::kMeta, MetaKey("applied"), EncodeI64(static_cast<int64_t>(index)));
}

void Shard::StageCommit(storage::WriteBatch& batch, const std::map<uint16_t, ApplyTxn::Counts>& deltas,
                        size_t entries, uint64_t applied_to, bool wrote) {
  applied_index_ = applied_to != 0 ? applied_to : applied_index_.load() + entries;
  if (!wrote) return;  // nothing changed: the applied index need not be written either
  recorded_applied_ = applied_index_;
  batch.Put(storage::Cf::kMeta, MetaKey("applied"), EncodeI64(static_cast<int64_t>(applied_index_.load())));
  for (const auto& [db, d] : deltas) {
    if (d.keys != 0) {
      batch.Put(storage::Cf::kMeta, CountKey('k', db), EncodeI64(KeyCount(db) + d.keys));
    }
    if (d.expires != 0) {
      batch.Put(storage::Cf::kMeta, CountKey('e', db), EncodeI64(ExpiresCount(db) + d.expires));
    }
  }
}

void Shard::PublishCounts(const std::map<uint16_t, ApplyTxn::Counts>& deltas) {
  for (const auto& [db, d] : deltas) {
    counts_[db].keys.fetch_add(d.keys, std::memory_order_relaxed);
    counts_[db].expires.fetch_add(d.expires, std::memory_order_relaxed);
    if (recount_running_ != 0) {
      recount_deltas_[db].first += d.keys;
      recount_deltas_[db].second += d.expires;
    }
  }
}

Result<uint64_t> Shard::Apply(const Entry& entry, ApplyFn fn, const Limits& limits,
                              resp::Writer* reply) {
  return ApplyBatch(std::span<const Entry>(&entry, 1), std::span<const ApplyFn>(&fn, 1), limits,
                    reply);
}

void Shard::FailApply(resp::Writer* reply, size_t mark, size_t entries, const Status& s) {
  meta_cache_.Clear();  // reads may have cached what the failed apply saw
  // A storage failure: nothing of the entries counts; every reply says so.
  reply->buffer()->resize(mark);
  for (size_t i = 0; i < entries; ++i) reply->Error("ERR storage error: " + s.ToString());
}

Status Shard::StageBatch(std::span<const Entry> entries, std::span<const ApplyFn> fns, const Limits& limits,
                         resp::Writer* reply, uint64_t applied_to, std::span<const uint64_t> raft_indices,
                         storage::WriteBatch& batch, std::function<void()>* written) {
  SHOAL_CHECK(entries.size() == fns.size() && !entries.empty());
  SHOAL_CHECK(raft_indices.empty() || raft_indices.size() == entries.size());
  // Its reads (and the key counts it writes) would miss what is staged.
  SHOAL_CHECK(!staged_unwritten_);
  const size_t count_before = batch.Count();
  auto txn = std::make_shared<ApplyTxn>(this, engine_, &batch, entries[0].now_ms);
  const size_t mark = reply->buffer()->size();
  txn->set_collect_changed(watcher_ != nullptr && watcher_->Watching());
  Status s;
  uint64_t last_index = 0, place = 0;
  // A write's apply looks its key up in the key metadata cache, a cache
  // miss or two each (its slot, then its bytes): they are fetched ahead,
  // each key hashed once for both.
  constexpr size_t kAhead = 4;
  uint64_t ahead[kAhead] = {};  // entry j's key hash at j % kAhead (0: none)
  auto prefetch_slot = [&](size_t j) {
    if (j >= entries.size()) return;
    std::optional<std::string_view> key = EntryKey(entries[j]);
    ahead[j % kAhead] = key ? KeyMetaCache::DataKeyHash(entries[j].db, *key) : 0;
    if (key) meta_cache_.PrefetchSlot(ahead[j % kAhead]);
  };
  const bool prefetching = entries.size() > 1 && !meta_cache_.empty();
  if (prefetching) {
    for (size_t j = 0; j < kAhead; ++j) prefetch_slot(j);
  }
  for (size_t i = 0; i < entries.size() && s.ok(); ++i) {
    if (prefetching) {
      if (i + kAhead / 2 < entries.size() && ahead[(i + kAhead / 2) % kAhead] != 0) {
        meta_cache_.PrefetchKey(ahead[(i + kAhead / 2) % kAhead]);
      }
      prefetch_slot(i + kAhead);  // after its ring place was read (i % kAhead)
    }
    txn->set_now_ms(entries[i].now_ms);
    // The log entry that carries it (without one: as if one each), and its
    // place there.
    const uint64_t log_index =
        !raft_indices.empty() ? raft_indices[i] : (applied_to != 0 ? applied_to : applied_index_.load() + 1 + i);
    place = i > 0 && log_index == last_index ? place + 1 : 0;
    last_index = log_index;
    txn->set_version(log_index, place);
    std::optional<std::string_view> key = EntryKey(entries[i]);
    if (key && !OwnsSlot(storage::KeySlot(*key))) {
      // Proposed before this shard split and ordered after the split: the
      // slot is another shard's now. Every replica refuses it alike.
      reply->Error("TRYAGAIN the key's slot moved to another shard (a split); retry");
      continue;
    }
    txn->set_entry(&entries[i]);
    s = fns[i](*txn, entries[i], limits, reply);
    txn->set_entry(nullptr);
    if (s.ok()) s = txn->SealElementWrites();
  }
  if (!s.ok()) {
    // Part of these entries may be staged, and must not be written
    // (ApplyBatch clears its batch; a round stops the node).
    FailApply(reply, mark, entries.size(), s);
    return s;
  }
  StageCommit(batch, txn->count_deltas(), entries.size(), applied_to, batch.Count() > count_before);
  staged_unwritten_ = true;
  *written = [this, txn = std::move(txn)] {
    staged_unwritten_ = false;
    PublishCounts(txn->count_deltas());
    txn->PublishTo(&meta_cache_);
    if (!txn->changed().empty()) watcher_->KeysChanged(txn->changed());
  };
  return Status::Ok();
}

Result<uint64_t> Shard::ApplyBatch(std::span<const Entry> entries, std::span<const ApplyFn> fns,
                                   const Limits& limits, resp::Writer* reply, uint64_t applied_to,
                                   std::span<const uint64_t> raft_indices) {
  batch_->Clear();
  const uint64_t applied_before = applied_index_;
  const uint64_t recorded_before = recorded_applied_;
  const size_t mark = reply->buffer()->size();
  std::function<void()> written;
  Status s = StageBatch(entries, fns, limits, reply, applied_to, raft_indices, *batch_, &written);
  if (!s.ok()) return s;
  if (batch_->Count() == 0) {
    written();
    return engine_->write_seq();
  }
  auto seq = engine_->Write(*batch_);
  if (seq.ok()) {
    written();
    return seq;
  }
  applied_index_ = applied_before;
  recorded_applied_ = recorded_before;
  staged_unwritten_ = false;
  FailApply(reply, mark, entries.size(), seq.status());
  return seq.status();
}

namespace {
constexpr char kImageV1 = 1;  // records only (data included); still read
constexpr char kImageV2 = 2;  // an SST file of the data, then records

void PutU32(std::string* out, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  out->append(b, 4);
}

bool GetBytes(std::string_view* in, std::string_view* out) {
  if (in->size() < 4) return false;
  uint32_t n = 0;
  std::memcpy(&n, in->data(), 4);
  if (in->size() - 4 < n) return false;
  *out = in->substr(4, n);
  in->remove_prefix(4 + n);
  return true;
}

Status ReadWholeFile(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return Status::IOError("open " + path + ": " + std::strerror(errno));
  char buf[1 << 16];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out->append(buf, static_cast<size_t>(n));
  int err = n < 0 ? errno : 0;
  ::close(fd);
  if (err != 0) return Status::IOError("read " + path + ": " + std::strerror(err));
  return Status::Ok();
}

// The CRC-32C of a file's bytes, read in pieces.
Status FileCrc32c(const std::string& path, uint32_t* crc) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::IOError("open " + path);
  std::string buf(1 << 20, '\0');
  uint32_t c = 0;
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    c = Crc32c(std::string_view(buf.data(), static_cast<size_t>(f.gcount())), c);
  }
  if (f.bad()) return Status::IOError("read " + path);
  *crc = c;
  return Status::Ok();
}


Status WriteFileDurably(const std::string& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Status::IOError("create " + path + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      return Status::IOError("write " + path + ": " + std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::IOError("fsync " + path);
  return Status::Ok();
}
}  // namespace

std::string Shard::SnapshotDir() const { return engine_->dir() + "/snapshots"; }

std::string Shard::IncomingSstPath(uint64_t index) const {
  return SnapshotDir() + "/in-" + std::to_string(id_) + "-" + std::to_string(index) + ".sst";
}

std::string Shard::IncomingExpiryPath(uint64_t index) const {
  return SnapshotDir() + "/in-" + std::to_string(id_) + "-" + std::to_string(index) + ".expiry.sst";
}

std::string Shard::SentinelKey(uint32_t id, uint16_t slot_end) {
  std::string k = storage::DataSlotDbPrefix(static_cast<uint16_t>(slot_end - 1), 0xffff);
  k += "snap";
  storage::PutU64BE(&k, id);
  return k;
}

std::string Shard::LegacySentinelKey(uint32_t id) {
  std::string k("\xff\xff\xff\xffsnap", 8);
  storage::PutU64BE(&k, id);
  return k;
}

namespace {

void PutRecord(std::string* out, char kind, std::string_view k, std::string_view v) {
  out->push_back(kind);
  PutU32(out, static_cast<uint32_t>(k.size()));
  out->append(k);
  PutU32(out, static_cast<uint32_t>(v.size()));
  out->append(v);
}

struct Record {
  char kind;
  std::string_view k, v;
};

// Parses image records; `allowed` lists the kinds that may appear.
Status ParseRecords(std::string_view in, std::string_view allowed, std::vector<Record>* recs) {
  while (!in.empty()) {
    Record r{in[0], {}, {}};
    in.remove_prefix(1);
    if (!GetBytes(&in, &r.k) || !GetBytes(&in, &r.v)) return Status::Corruption("shard image record");
    if (allowed.find(r.kind) == std::string_view::npos) return Status::Corruption("shard image record kind");
    if (r.kind == 'k' || r.kind == 'e') {
      int db = std::atoi(std::string(r.k).c_str());
      int64_t v = 0;
      if (db < 0 || db >= kDatabasesMax || !DecodeI64(r.v, &v)) return Status::Corruption("image counter");
    }
    uint16_t b = 0, e = 0;
    if (r.kind == 'r' && !DecodeRange(r.v, &b, &e)) return Status::Corruption("image range");
    // A data key starts with its [slot][db] prefix (a shorter one would
    // abort the write that stores it).
    if (r.kind == 'd' && r.k.size() < storage::kDataKeyPrefixBytes) return Status::Corruption("image data key");
    recs->push_back(r);
  }
  return Status::Ok();
}

// Checks the 's' (checksum) record named `name` against the bytes or file:
// SST files are only handed to RocksDB once they are known intact (RocksDB
// may abort on some corrupt files rather than refuse them).
Status CheckSum(const std::vector<Record>& recs, std::string_view name, uint32_t actual) {
  for (const auto& r : recs) {
    if (r.kind != 's' || r.k != name) continue;
    uint32_t want = 0;
    if (r.v.size() != 4) return Status::Corruption("image checksum record");
    std::memcpy(&want, r.v.data(), 4);
    if (want != actual) return Status::Corruption(std::string("image ") + std::string(name) + " checksum mismatch");
    return Status::Ok();
  }
  return Status::Corruption(std::string("image without a checksum of ") + std::string(name));
}

// Whether the data SST at `path` (checked intact already) holds only keys of
// the slots [begin, end), besides its sentinel: its keys supersede whatever
// the node holds, so a file that strays past its range would overwrite
// another shard's data. Images of older versions end with a sentinel past
// every slot, which is allowed.
Status CheckSstSlots(const std::string& path, uint16_t begin, uint16_t end) {
  auto bounds = storage::ReadSstBounds(path);
  if (!bounds.ok()) return Status::Corruption("image data.sst: " + bounds.status().ToString());
  const auto [lo, hi] = SlotRangeKeys(begin, end);
  const std::string legacy_prefix = Shard::LegacySentinelKey(0).substr(0, 8);
  auto legacy = [&](const std::string& k) { return k.starts_with(legacy_prefix); };
  const std::string& last = legacy(bounds->last) ? bounds->before_last : bounds->last;
  const std::string* ends[] = {&bounds->first, &last};
  for (const std::string* k : ends) {
    if (k->empty() || legacy(*k)) continue;
    if (*k < lo || *k >= hi) {
      return Status::Corruption("image data.sst holds keys outside its slots " + std::to_string(begin) + "-" +
                                std::to_string(end - 1));
    }
  }
  return Status::Ok();
}

std::string EncodeCrc(uint32_t crc) {
  std::string v(4, '\0');
  std::memcpy(v.data(), &crc, 4);
  return v;
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return Status::IOError("open " + dir + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? Status::Ok() : Status::IOError("fsync " + dir);
}

}  // namespace

Status ShardExport::WriteDataSst(const std::string& path) const {
  auto writer = engine_->NewSstWriter(storage::Cf::kData, path);
  // A scan iterator: the export reads the whole shard once, and must not fill
  // the block cache with it (that evicted the node's working set, and the
  // allocation of every block cost more than reading it).
  auto it = engine_->NewScanIterator(storage::Cf::kData, view_.get());
  // One pass over the range, in key order: slot, then db (the dbs' elements
  // after every db: their db number has its top bit set), then key. Only
  // keys of real databases go; the sentinel sorts last, in the last slot.
  const auto [lo, hi] = SlotRangeKeys(slot_begin_, slot_end_);
  for (it->Seek(lo); it->Valid() && it->key() < hi; it->Next()) {
    storage::DecodedDataKey d;
    if (!storage::DecodeDataKey(it->key(), &d) || (d.db & ~storage::kElementDbFlag) >= kDatabasesMax) continue;
    Status s = writer->Put(it->key(), it->value());
    if (!s.ok()) return s;
  }
  if (!it->status().ok()) return it->status();
  Status s = writer->Put(Shard::SentinelKey(id_, slot_end_), EncodeI64(static_cast<int64_t>(index_)));
  if (s.ok()) s = writer->Finish();
  if (!s.ok()) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  return s;
}

std::string ShardExport::CounterRecords() const {
  std::string out;
  if (recount_) PutRecord(&out, 'c', "recount", "");  // the counters are estimates
  PutRecord(&out, 'r', "range", Shard::EncodeRange(slot_begin_, slot_end_));
  for (size_t db = 0; db < counts_.size(); ++db) {
    if (counts_[db].first == 0) continue;
    PutRecord(&out, 'k', std::to_string(db), EncodeI64(counts_[db].first));
    PutRecord(&out, 'e', std::to_string(db), EncodeI64(counts_[db].second));
  }
  return out;
}

Status ShardExport::ForEachExpiry(const std::function<Status(std::string_view)>& fn) const {
  auto ex = engine_->NewScanIterator(storage::Cf::kExpiry, view_.get());
  for (ex->SeekToFirst(); ex->Valid(); ex->Next()) {
    storage::DecodedExpiryKey d;
    if (!storage::DecodeExpiryKey(ex->key(), &d)) continue;
    uint16_t slot = storage::KeySlot(d.key);
    if (slot < slot_begin_ || slot >= slot_end_) continue;
    Status s = fn(ex->key());
    if (!s.ok()) return s;
  }
  return ex->status();
}

Status ShardExport::Write(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("create " + dir + ": " + ec.message());
  Status s = WriteDataSst(dir + "/data.sst");
  if (!s.ok()) return s;
  std::unique_ptr<storage::SstWriter> expiry;
  s = ForEachExpiry([&](std::string_view key) {
    if (!expiry) expiry = engine_->NewSstWriter(storage::Cf::kExpiry, dir + "/expiry.sst");
    return expiry->Put(key, "");
  });
  if (s.ok() && expiry) s = expiry->Finish();
  // The files' checksums in a file of their own (a receiver that predates
  // it ignores it; one that reads it checks the files before using them).
  std::string sums;
  for (const char* name : {"data.sst", "expiry.sst"}) {
    if (!s.ok() || (!expiry && std::string_view(name) == "expiry.sst")) continue;
    uint32_t crc = 0;
    s = FileCrc32c(dir + "/" + name, &crc);
    if (s.ok()) PutRecord(&sums, 's', name, EncodeCrc(crc));
  }
  if (s.ok()) s = WriteFileDurably(dir + "/checksums", sums);
  if (s.ok()) s = WriteFileDurably(dir + "/counters", CounterRecords());
  if (s.ok()) s = SyncDir(dir);
  return s;
}

std::unique_ptr<ShardExport> Shard::BeginExport() const {
  std::vector<std::pair<int64_t, int64_t>> counts(kDatabasesMax);
  for (int db = 0; db < kDatabasesMax; ++db) {
    counts[static_cast<size_t>(db)] = {KeyCount(static_cast<uint16_t>(db)), ExpiresCount(static_cast<uint16_t>(db))};
  }
  auto exp = std::make_unique<ShardExport>(engine_, engine_->NewSnapshot(), id_, slot_begin(), slot_end(),
                                           applied_index_.load(), std::move(counts));
  exp->set_recount(recount_pending_);
  return exp;
}

// Image layout (version 2): [2][len u32][an SST file of the slot range's data
// keys, then a sentinel key naming the shard and the applied index], then
// records, each [kind u8: 'x' expiry index, 'k'/'e' counter, 'r' range,
// 'c' recount, 's' CRC-32C of the SST (key "data.sst"), required][len u32
// key][len u32 value]. Version 1 had no SST and carried data as 'd' records.
// Exported files carry 's' records for data.sst and expiry.sst in a file
// `checksums` of their own.
Result<std::string> Shard::ExportImage() const {
  auto exp = BeginExport();
  std::error_code ec;
  std::filesystem::create_directories(SnapshotDir(), ec);
  std::string path = SnapshotDir() + "/out-" + std::to_string(id_) + "-" + std::to_string(applied_index_.load()) + ".sst";
  Status s = exp->WriteDataSst(path);
  if (!s.ok()) return s;
  std::string sst;
  Status rs = ReadWholeFile(path, &sst);
  std::filesystem::remove(path, ec);
  if (!rs.ok()) return rs;
  std::string out(1, kImageV2);
  PutU32(&out, static_cast<uint32_t>(sst.size()));
  out += sst;
  out += exp->CounterRecords();
  PutRecord(&out, 's', "data.sst", EncodeCrc(Crc32c(sst)));
  s = exp->ForEachExpiry([&out](std::string_view key) {
    PutRecord(&out, 'x', key, "");
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

Status Shard::StageImage(std::string_view image, uint64_t index, storage::WriteBatch& batch,
                         const ImportMarker* marker) {
  if (image.empty() || (image[0] != kImageV1 && image[0] != kImageV2)) {
    return Status::Corruption("shard image version");
  }
  bool v2 = image[0] == kImageV2;
  // Validate everything before changing anything.
  std::string_view in = image.substr(1);
  std::string_view sst;
  if (v2 && !GetBytes(&in, &sst)) return Status::Corruption("shard image sst");
  std::vector<Record> recs;
  Status parsed = ParseRecords(in, v2 ? "xkercs" : "dxkerc", &recs);
  if (!parsed.ok()) return parsed;
  if (v2) {
    parsed = CheckSum(recs, "data.sst", Crc32c(sst));
    if (!parsed.ok()) return parsed;
  }
  // With an SST, the clearing and the small records go first, in one durable
  // write that also records the import in progress (marker); then the file
  // is ingested; `batch` finishes it. A crash in between is finished by
  // ResumeImage at the next start.
  std::unique_ptr<storage::WriteBatch> pre;
  storage::WriteBatch* first = &batch;
  if (v2) {
    std::error_code ec;
    std::filesystem::create_directories(SnapshotDir(), ec);
    std::filesystem::remove(IncomingExpiryPath(index), ec);
    Status s = WriteFileDurably(IncomingSstPath(index), sst);
    uint16_t begin = 0, end = 0;
    if (s.ok() && ImageRange(image, &begin, &end)) s = CheckSstSlots(IncomingSstPath(index), begin, end);
    if (!s.ok()) {
      std::filesystem::remove(IncomingSstPath(index), ec);
      return s;
    }
    pre = engine_->NewBatch();
    first = pre.get();
    if (marker != nullptr) first->Put(storage::Cf::kRaft, marker->key, marker->value);
  }
  Status cleared = StageClear(*first);
  if (!cleared.ok()) return cleared;
  pending_counts_.clear();
  pending_begin_ = pending_end_ = 0;
  pending_image_recount_ = false;
  for (const auto& r : recs) {
    switch (r.kind) {
      case 'c':
        pending_image_recount_ = true;
        first->Put(storage::Cf::kMeta, MetaKey("recount"), "");
        break;
      case 'd': first->Put(storage::Cf::kData, r.k, r.v); break;
      case 'x': first->Put(storage::Cf::kExpiry, r.k, ""); break;
      case 's': break;  // checked above
      case 'r':
        DecodeRange(r.v, &pending_begin_, &pending_end_);
        first->Put(storage::Cf::kMeta, MetaKey("range"), r.v);
        break;
      default: {
        int db = std::atoi(std::string(r.k).c_str());
        int64_t v = 0;
        DecodeI64(r.v, &v);
        first->Put(storage::Cf::kMeta, CountKey(r.kind, static_cast<uint16_t>(db)), r.v);
        pending_counts_.push_back({r.kind, static_cast<uint16_t>(db), v});
      }
    }
  }
  if (v2) return IngestStaged(*pre, index, batch, /*verify=*/false);  // its CRC-32C was checked above
  return Status::Ok();
}

bool Shard::ImageRange(std::string_view image, uint16_t* begin, uint16_t* end) {
  if (image.empty() || (image[0] != kImageV1 && image[0] != kImageV2)) return false;
  std::string_view in = image.substr(1), sst;
  if (image[0] == kImageV2 && !GetBytes(&in, &sst)) return false;
  std::vector<Record> recs;
  if (!ParseRecords(in, image[0] == kImageV2 ? "xkercs" : "dxkerc", &recs).ok()) return false;
  for (const auto& r : recs) {
    if (r.kind == 'r') return DecodeRange(r.v, begin, end);
  }
  return false;
}

bool Shard::ImageFilesRange(const std::string& dir, uint16_t* begin, uint16_t* end) {
  std::string counters;
  std::vector<Record> recs;
  if (!ReadWholeFile(dir + "/counters", &counters).ok() || !ParseRecords(counters, "kerc", &recs).ok()) return false;
  for (const auto& r : recs) {
    if (r.kind == 'r') return DecodeRange(r.v, begin, end);
  }
  return false;
}

Status Shard::CheckImageFiles(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir + "/checksums", ec)) return Status::Ok();  // from a node that predates them
  std::string sums;
  Status s = ReadWholeFile(dir + "/checksums", &sums);
  std::vector<Record> recs;
  if (s.ok()) s = ParseRecords(sums, "s", &recs);
  if (s.ok() && recs.empty()) s = Status::Corruption("image checksums file is empty");
  for (const auto& r : recs) {
    if (!s.ok()) break;
    if (r.k != "data.sst" && r.k != "expiry.sst") {
      s = Status::Corruption("image checksum of an unknown file");
      break;
    }
    uint32_t crc = 0;
    s = FileCrc32c(dir + "/" + std::string(r.k), &crc);  // a listed file that is missing fails here
    if (s.ok()) s = CheckSum(recs, r.k, crc);
  }
  if (s.ok() && std::none_of(recs.begin(), recs.end(), [](const Record& r) { return r.k == "data.sst"; })) {
    s = Status::Corruption("image without a checksum of data.sst");
  }
  uint16_t begin = 0, end = 0;
  if (s.ok() && ImageFilesRange(dir, &begin, &end)) s = CheckSstSlots(dir + "/data.sst", begin, end);
  return s;
}

Status Shard::StageImportFiles(const std::string& dir, uint64_t index, storage::WriteBatch& batch,
                               const ImportMarker& marker) {
  std::string counters;
  Status s = ReadWholeFile(dir + "/counters", &counters);
  if (!s.ok()) return s;
  std::vector<Record> recs;
  s = ParseRecords(counters, "kerc", &recs);
  if (!s.ok()) return s;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(dir + "/data.sst", ec)) return Status::Corruption("snapshot without data.sst in " + dir);
  const bool has_checksums = std::filesystem::exists(dir + "/checksums", ec);
  // The files came over the network: the replica checked them against their
  // checksums (CheckImageFiles) before Raft took the snapshot.
  std::filesystem::create_directories(SnapshotDir(), ec);
  std::filesystem::remove(IncomingExpiryPath(index), ec);
  std::filesystem::rename(dir + "/data.sst", IncomingSstPath(index), ec);
  if (ec) return Status::IOError("move " + dir + "/data.sst: " + ec.message());
  if (std::filesystem::exists(dir + "/expiry.sst", ec)) {
    std::filesystem::rename(dir + "/expiry.sst", IncomingExpiryPath(index), ec);
    if (ec) return Status::IOError("move " + dir + "/expiry.sst: " + ec.message());
  }
  s = SyncDir(SnapshotDir());
  if (!s.ok()) return s;
  auto pre = engine_->NewBatch();
  pre->Put(storage::Cf::kRaft, marker.key, marker.value);
  s = StageClear(*pre);
  if (!s.ok()) return s;
  pending_counts_.clear();
  pending_begin_ = pending_end_ = 0;
  pending_image_recount_ = false;
  for (const auto& r : recs) {
    if (r.kind == 'c') {
      pending_image_recount_ = true;
      pre->Put(storage::Cf::kMeta, MetaKey("recount"), "");
      continue;
    }
    if (r.kind == 'r') {
      DecodeRange(r.v, &pending_begin_, &pending_end_);
      pre->Put(storage::Cf::kMeta, MetaKey("range"), r.v);
      continue;
    }
    int db = std::atoi(std::string(r.k).c_str());
    int64_t v = 0;
    DecodeI64(r.v, &v);
    pre->Put(storage::Cf::kMeta, CountKey(r.kind, static_cast<uint16_t>(db)), r.v);
    pending_counts_.push_back({r.kind, static_cast<uint16_t>(db), v});
  }
  // Checked whole against its checksums before Raft took it (on arrival,
  // off the workers, or by the replica): not read through again here.
  return IngestStaged(*pre, index, batch, /*verify=*/!has_checksums);
}

Status Shard::IngestStaged(storage::WriteBatch& pre, uint64_t index, storage::WriteBatch& batch, bool verify) {
  auto seq = engine_->Write(pre);
  if (!seq.ok()) return seq.status();
  auto synced = engine_->Sync();
  if (!synced.ok()) return synced.status();
  return ResumeImage(index, batch, verify);
}

Status Shard::StageClear(storage::WriteBatch& batch) {
  // Data by slot range, expiry index by key, counters.
  const auto [lo, hi] = SlotRangeKeys(slot_begin_, slot_end_);
  // Only where the range holds something: a range tombstone in the memtable
  // makes the SST ingested next flush it first and land in level 0, from
  // where compactions rewrite it (a new replica's range is empty).
  auto any = engine_->NewScanIterator(storage::Cf::kData);
  any->Seek(lo);
  if (!any->status().ok()) return any->status();
  if (any->Valid() && any->key() < hi) batch.DeleteRange(storage::Cf::kData, lo, hi);
  auto ex = engine_->NewIterator(storage::Cf::kExpiry);
  for (ex->SeekToFirst(); ex->Valid(); ex->Next()) {
    storage::DecodedExpiryKey d;
    if (storage::DecodeExpiryKey(ex->key(), &d) && OwnsSlot(storage::KeySlot(d.key))) {
      batch.Delete(storage::Cf::kExpiry, ex->key());
    }
  }
  if (!ex->status().ok()) return ex->status();
  batch.Delete(storage::Cf::kMeta, MetaKey("recount"));
  for (int db = 0; db < kDatabasesMax; ++db) {
    if (KeyCount(static_cast<uint16_t>(db)) != 0) batch.Delete(storage::Cf::kMeta, CountKey('k', static_cast<uint16_t>(db)));
    if (ExpiresCount(static_cast<uint16_t>(db)) != 0) batch.Delete(storage::Cf::kMeta, CountKey('e', static_cast<uint16_t>(db)));
  }
  return Status::Ok();
}

Status Shard::StageDestroy(storage::WriteBatch& batch) {
  Status s = StageClear(batch);
  if (!s.ok()) return s;
  batch.Delete(storage::Cf::kMeta, MetaKey("applied"));
  recorded_applied_ = 0;
  batch.Delete(storage::Cf::kMeta, MetaKey("range"));
  // The range's sentinel went with the range; an older version's may remain.
  std::string raw;
  if (engine_->Get(storage::Cf::kData, LegacySentinelKey(id_), &raw).ok()) {
    batch.Delete(storage::Cf::kData, LegacySentinelKey(id_));
  }
  return Status::Ok();
}

Status Shard::ResumeImage(uint64_t index, storage::WriteBatch& batch, bool verify) {
  // The file's sentinel says whether it was ingested before a crash (the
  // file itself is gone then). Files from an older version carry it past
  // every slot.
  const std::string sentinel = ImportSentinelKey(), legacy = LegacySentinelKey(id_);
  bool ingested = false;
  for (const std::string* key : {&sentinel, &legacy}) {
    std::string raw;
    int64_t at = -1;
    if (engine_->Get(storage::Cf::kData, *key, &raw).ok() && DecodeI64(raw, &at) && static_cast<uint64_t>(at) == index) {
      ingested = true;
    }
  }
  Status s;
  if (!ingested) {
    std::string path = IncomingSstPath(index);
    s = engine_->IngestSst(storage::Cf::kData, path, verify);
    if (!s.ok()) return s.WithContext("snapshot of shard " + std::to_string(id_));
    std::error_code ec;
    std::filesystem::remove(path, ec);  // moved into the store (a link may remain)
  }
  // The expiry index file, when the image had one: ingesting it again after
  // a crash writes the same keys.
  std::string expiry = IncomingExpiryPath(index);
  std::error_code ec;
  if (std::filesystem::exists(expiry, ec)) {
    s = engine_->IngestSst(storage::Cf::kExpiry, expiry, verify);
    if (!s.ok()) return s.WithContext("snapshot of shard " + std::to_string(id_));
    std::filesystem::remove(expiry, ec);
  }
  batch.Delete(storage::Cf::kData, sentinel);
  std::string raw;
  if (engine_->Get(storage::Cf::kData, legacy, &raw).ok()) batch.Delete(storage::Cf::kData, legacy);
  StageApplied(index, batch);
  return Status::Ok();
}

void Shard::FinishImage() {
  for (int db = 0; db < kDatabasesMax; ++db) {
    counts_[db].keys.store(0, std::memory_order_relaxed);
    counts_[db].expires.store(0, std::memory_order_relaxed);
  }
  for (const auto& c : pending_counts_) {
    (c.kind == 'k' ? counts_[c.db].keys : counts_[c.db].expires).store(c.value, std::memory_order_relaxed);
  }
  pending_counts_.clear();
  recount_pending_ = pending_image_recount_;
  pending_image_recount_ = false;
  ++recount_generation_;
  if (pending_end_ != 0) {
    // The image's range (a later state may hold fewer slots: it split).
    slot_begin_.store(pending_begin_, std::memory_order_release);
    slot_end_.store(pending_end_, std::memory_order_release);
    pending_begin_ = pending_end_ = 0;
  }
  meta_cache_.Clear();
}

Status Shard::StageSplit(uint32_t child, uint16_t slot, uint64_t index, storage::WriteBatch& batch,
                         bool write_child) {
  const uint16_t begin = slot_begin(), end = slot_end();
  if (slot <= begin || slot >= end) {
    return Status::InvalidArgument("split slot " + std::to_string(slot) + " is not inside the range [" +
                                   std::to_string(begin) + ", " + std::to_string(end) + ")");
  }
  StageRange(begin, slot, batch);
  batch.Put(storage::Cf::kMeta, MetaKey("recount"), "");
  if (write_child) {
    batch.Put(storage::Cf::kMeta, MetaKeyOf(child, "range"), EncodeRange(slot, end));
    batch.Put(storage::Cf::kMeta, MetaKeyOf(child, "applied"), EncodeI64(1));
    batch.Put(storage::Cf::kMeta, MetaKeyOf(child, "recount"), "");
  }
  StageApplied(index, batch);
  pending_split_ = slot;
  return Status::Ok();
}

void Shard::FinishSplit() {
  if (!pending_split_) return;
  slot_end_.store(*pending_split_, std::memory_order_release);
  pending_split_.reset();
  recount_pending_ = true;
  ++recount_generation_;  // a recount of the wider range is stale
  meta_cache_.Clear();
}

std::optional<Shard::RecountJob> Shard::BeginRecount() {
  if (!recount_pending_) return std::nullopt;
  RecountJob job;
  job.generation = ++recount_generation_;
  recount_running_ = job.generation;
  recount_deltas_.assign(kDatabasesMax, {0, 0});
  std::shared_ptr<storage::Snapshot> view = engine_->NewSnapshot();
  storage::Engine* engine = engine_;
  // Captured as a struct: clang 14 cannot capture structured bindings.
  SlotKeys range = SlotRangeKeys(slot_begin(), slot_end());
  job.count = [engine, view, range](const std::atomic<bool>& stop) -> Result<Counts> {
    Counts counts(kDatabasesMax, {0, 0});
    auto it = engine->NewScanIterator(storage::Cf::kData, view.get());
    uint64_t n = 0;
    for (it->Seek(range.lo); it->Valid() && it->key() < range.hi; it->Next()) {
      if (++n % 4096 == 0 && stop.load(std::memory_order_relaxed)) return Status::Aborted("stopping");
      storage::DecodedDataKey d;
      if (!storage::DecodeDataKey(it->key(), &d) || d.db >= kDatabasesMax) continue;
      Value v;
      counts[d.db].first += 1;
      if (DecodeValue(it->value(), &v) && v.expire_at_ms != 0) counts[d.db].second += 1;
    }
    if (!it->status().ok()) return it->status();
    return counts;
  };
  return job;
}

Result<bool> Shard::FinishRecount(uint64_t generation, const Counts& counted) {
  if (generation != recount_generation_ || generation != recount_running_ || !recount_pending_ ||
      counted.size() != static_cast<size_t>(kDatabasesMax)) {
    return false;
  }
  auto batch = engine_->NewBatch();
  Counts exact(kDatabasesMax, {0, 0});
  for (int db = 0; db < kDatabasesMax; ++db) {
    auto d = static_cast<uint16_t>(db);
    exact[d] = {counted[d].first + recount_deltas_[d].first, counted[d].second + recount_deltas_[d].second};
    if (exact[d].first != 0 || KeyCount(d) != 0) batch->Put(storage::Cf::kMeta, CountKey('k', d), EncodeI64(exact[d].first));
    if (exact[d].second != 0 || ExpiresCount(d) != 0) {
      batch->Put(storage::Cf::kMeta, CountKey('e', d), EncodeI64(exact[d].second));
    }
  }
  batch->Delete(storage::Cf::kMeta, MetaKey("recount"));
  auto seq = engine_->Write(*batch);
  if (!seq.ok()) return seq.status();
  for (int db = 0; db < kDatabasesMax; ++db) {
    counts_[db].keys.store(exact[static_cast<size_t>(db)].first, std::memory_order_relaxed);
    counts_[db].expires.store(exact[static_cast<size_t>(db)].second, std::memory_order_relaxed);
  }
  recount_pending_ = false;
  recount_running_ = 0;
  return true;
}

}  // namespace shoal::kv
