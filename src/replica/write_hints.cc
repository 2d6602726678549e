#include "replica/write_hints.h"

#include <cstring>
#include <unordered_map>

#include "common/bytes.h"
#include "common/status.h"
#include "common/strings.h"
#include "kv/commands.h"
#include "kv/transaction.h"
#include "replica/replica.h"
#include "storage/slot.h"

namespace shoal::replica {
namespace {

constexpr char kKvBatchTag = 'B';
constexpr char kHintTag = 'H';
constexpr size_t kHintBytes = 4 + 4 + 1 + 8;
constexpr size_t kScanKeys = 32;

// How the leader reads a kv entry's keys.
enum class Keys {
  kOpaque,    // it may write keys its arguments do not name (other dbs, all keys)
  kFirst,     // args[0] only, a blind write (SET without options, SETEX, PSETEX)
  kFirstSet,  // args[0] only, not blind (SET NX/XX/GET/KEEPTTL: it reads first)
  kPairs,     // args[0], args[2]...: MSET (blind), MSETNX
  kAll,       // any argument may be a key (a superset: values count too)
};

struct Ops {
  uint16_t set = 0, setex = 0, psetex = 0, mset = 0, msetnx = 0, copy = 0, move = 0;
};

const Ops& KnownOps() {
  static const Ops ops = [] {
    Ops o;
    for (const kv::CommandSpec& s : kv::DataCommands()) {
      if (s.name == "set") o.set = s.op;
      if (s.name == "setex") o.setex = s.op;
      if (s.name == "psetex") o.psetex = s.op;
      if (s.name == "mset") o.mset = s.op;
      if (s.name == "msetnx") o.msetnx = s.op;
      if (s.name == "copy") o.copy = s.op;  // COPY ... DB n
      if (s.name == "move") o.move = s.op;
    }
    SHOAL_CHECK(o.set != 0 && o.setex != 0 && o.psetex != 0 && o.mset != 0 && o.msetnx != 0 && o.copy != 0 &&
                o.move != 0);
    return o;
  }();
  return ops;
}

Keys KeysOf(const kv::EntryView& e) {
  const Ops& o = KnownOps();
  if (e.op == o.set) {
    if (e.args.size() != 4) return Keys::kOpaque;
    return e.args[2].empty() ? Keys::kFirst : Keys::kFirstSet;
  }
  if (e.op == o.setex || e.op == o.psetex) return e.args.size() == 4 ? Keys::kFirst : Keys::kOpaque;
  if (e.op == o.mset || e.op == o.msetnx) return Keys::kPairs;
  if (e.op == o.copy || e.op == o.move || e.op == kv::kOpExec || kv::FindApply(e.op) == nullptr ||
      kv::MustApplyAlone(e.op)) {
    return Keys::kOpaque;
  }
  return Keys::kAll;
}

// The kv batch's entries, read in place; false if it is not one.
bool ViewBatch(std::string_view data, std::vector<kv::EntryView>* out) {
  int protocol = 0;
  std::string_view rest;
  out->clear();
  return WalkKvBatch(
             data, &protocol,
             [out](std::string_view raw) { return kv::DecodeEntryView(raw, &out->emplace_back()); }, &rest) &&
         rest.empty();  // a batch with hints already is not annotated again
}

}  // namespace

bool WalkKvBatch(std::string_view data, int* protocol, const std::function<bool(std::string_view)>& entry,
                 std::string_view* rest) {
  if (data.size() < 6 || data[0] != kKvBatchTag) return false;
  *protocol = data[1];
  if (*protocol != 2 && *protocol != 3) return false;
  data.remove_prefix(2);
  uint32_t n = 0;
  if (!GetFixed(&data, &n) || n > data.size() / 4) return false;
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len = 0;
    if (!GetFixed(&data, &len) || len > data.size()) return false;
    if (!entry(data.substr(0, len))) return false;
    data.remove_prefix(len);
  }
  *rest = data;
  return true;
}

std::string EncodeKvBatch(std::span<const kv::Entry> entries, int protocol) {
  size_t total = 2 + 4;
  for (const auto& e : entries) total += 4 + kv::EncodedEntrySize(e);
  std::string out;
  out.reserve(total);
  out.push_back(kKvBatchTag);
  out.push_back(static_cast<char>(protocol));
  PutFixed<uint32_t>(&out, static_cast<uint32_t>(entries.size()));
  for (const auto& e : entries) {
    const size_t at = out.size();
    PutFixed<uint32_t>(&out, 0);  // the length, once known
    kv::AppendEncodedEntry(e, &out);
    const auto len = static_cast<uint32_t>(out.size() - at - 4);
    std::memcpy(out.data() + at, &len, 4);  // PutFixed's byte order: the host's
  }
  AppendHintTrailer(entries, &out);
  return out;
}

bool JoinableKvBatch(std::string_view batch, uint32_t* count, char* protocol) {
  if (batch.size() < 6 || batch[0] != kKvBatchTag || (batch[1] != 2 && batch[1] != 3)) return false;
  *protocol = batch[1];
  std::string_view rest = batch.substr(2);
  uint32_t n = 0;
  if (!GetFixed(&rest, &n) || n == 0 || n > rest.size() / 4) return false;
  for (uint32_t i = 0; i < n; ++i) {  // lengths only: nothing is decoded
    uint32_t len = 0;
    if (!GetFixed(&rest, &len) || len > rest.size()) return false;
    rest.remove_prefix(len);
  }
  *count = n;
  return rest.empty();  // a hint trailer would name entries by position
}

std::string JoinKvBatches(std::span<const std::string_view> batches) {
  SHOAL_CHECK(!batches.empty());
  size_t bytes = 6;
  uint32_t n = 0;
  for (std::string_view b : batches) {
    bytes += b.size() - 6;
    uint32_t part = 0;
    std::memcpy(&part, b.data() + 2, 4);
    n += part;
  }
  std::string out;
  out.reserve(bytes);
  out.push_back(kKvBatchTag);
  out.push_back(batches[0][1]);
  PutFixed<uint32_t>(&out, n);
  for (std::string_view b : batches) out.append(b.substr(6));
  return out;
}

bool AppendKvBatch(std::string_view data, std::vector<kv::Entry>* entries, size_t* used, int* protocol,
                   size_t* added) {
  std::string_view rest;
  const size_t base = *used;
  auto decode = [entries, used](std::string_view raw) {
    if (*used == entries->size()) entries->emplace_back();
    return kv::DecodeEntry(raw, &(*entries)[(*used)++]);
  };
  const bool ok = WalkKvBatch(data, protocol, decode, &rest) &&
                  (rest.empty() || DecodeHintTrailer(rest, std::span<kv::Entry>(*entries).subspan(base, *used - base)));
  *added = *used - base;
  return ok;
}

bool DecodeKvBatch(std::string_view data, std::vector<kv::Entry>* entries, int* protocol) {
  size_t used = 0, added = 0;
  const bool ok = AppendKvBatch(data, entries, &used, protocol, &added);
  entries->resize(used);
  return ok;
}

void AppendHintTrailer(std::span<const kv::Entry> entries, std::string* out) {
  uint32_t n = 0;
  for (const auto& e : entries) n += static_cast<uint32_t>(e.hints.size());
  if (n == 0) return;
  out->push_back(kHintTag);
  PutFixed<uint32_t>(out, n);
  for (size_t i = 0; i < entries.size(); ++i) {
    for (const kv::KeyHint& h : entries[i].hints) {
      PutFixed<uint32_t>(out, static_cast<uint32_t>(i));
      PutFixed<uint32_t>(out, h.arg);
      PutFixed<uint8_t>(out, h.exists ? 1 : 0);
      PutFixed<int64_t>(out, h.expire_at_ms);
    }
  }
}

bool DecodeHintTrailer(std::string_view in, std::span<kv::Entry> entries) {
  uint32_t n = 0;
  if (in.empty() || in[0] != kHintTag) return false;
  in.remove_prefix(1);
  if (!GetFixed(&in, &n) || n == 0 || in.size() != static_cast<size_t>(n) * kHintBytes) return false;
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t entry = 0;
    kv::KeyHint h;
    uint8_t exists = 0;
    GetFixed(&in, &entry);
    GetFixed(&in, &h.arg);
    GetFixed(&in, &exists);
    GetFixed(&in, &h.expire_at_ms);
    if (entry >= entries.size() || h.arg >= entries[entry].args.size() || exists > 1) return false;
    h.exists = exists == 1;
    entries[entry].hints.push_back(h);
  }
  return true;
}

std::string WriteHints::TrackKey(uint16_t db, std::string_view key) {
  std::string k;
  TrackKeyInto(db, key, &k);
  return k;
}

void WriteHints::TrackKeyInto(uint16_t db, std::string_view key, std::string* out) {
  out->resize(2 + key.size());
  std::memcpy(out->data(), &db, 2);
  std::memcpy(out->data() + 2, key.data(), key.size());
}

void WriteHints::Reset() {
  // Called for every proposal of a group of one: nothing to clear is the
  // common case (clearing an emptied map still walks all its buckets).
  if (term_ == 0 && from_ == 0 && tracked_.empty() && keys_.empty() && opaque_ == 0 && !annotating_) return;
  term_ = 0;
  from_ = 0;
  tracked_.clear();
  keys_.clear();
  opaque_ = 0;
  annotating_.reset();
}

void WriteHints::Prune() {
  const uint64_t applied = shard_->applied_index();
  while (!tracked_.empty() && tracked_.front().index <= applied) {
    Tracked& t = tracked_.front();
    for (const auto& [k, after] : t.keys) {
      auto it = keys_.find(k);
      if (it != keys_.end() && --it->second.pending == 0) keys_.erase(it);
    }
    opaque_ -= t.opaque ? 1 : 0;
    tracked_.pop_front();
  }
}

std::string WriteHints::Annotate(std::string data, uint64_t term, uint64_t index) {
  if (term != term_) {
    // A new leadership: the entries of earlier terms (up to index - 1) were
    // not tracked; no hints until they are applied.
    Reset();
    term_ = term;
    from_ = index - 1;
  }
  Prune();
  annotating_ = Tracked{index, {}, false};
  Tracked& t = *annotating_;
  std::vector<kv::EntryView> views;
  if (!ViewBatch(data, &views)) {
    t.opaque = true;  // not a kv batch (a split): it may change any key
    return data;
  }
  bool eligible = shard_->applied_index() >= from_ && opaque_ == 0 && !shard_->staged_unwritten();
  std::vector<kv::Entry> hinted;  // only the hints are filled
  // Where a key written by this batch's earlier entries is in t.keys: a
  // scan while the batch is small, an index beyond.
  std::unordered_map<std::string, size_t> here;
  auto find_here = [&t, &here](const std::string& k) -> std::optional<size_t> {
    if (here.empty() && t.keys.size() <= kScanKeys) {
      for (size_t j = 0; j < t.keys.size(); ++j) {
        if (t.keys[j].first == k) return j;
      }
      return std::nullopt;
    }
    if (here.empty()) {
      for (size_t j = 0; j < t.keys.size(); ++j) here.emplace(t.keys[j].first, j);
    }
    auto it = here.find(k);
    return it == here.end() ? std::nullopt : std::optional<size_t>(it->second);
  };
  auto step_of = [](Keys keys) -> size_t { return keys == Keys::kPairs ? 2 : 1; };
  auto end_of = [](const kv::EntryView& e, Keys keys) -> size_t {
    return keys == Keys::kAll || keys == Keys::kPairs ? e.args.size() : std::min<size_t>(1, e.args.size());
  };
  // An entry whose (first) key's slot moved away (a split) is refused at
  // apply (Shard::StageBatch): it changes nothing, so nothing is known.
  auto blind_of = [this](const kv::EntryView& e, Keys keys) {
    return (keys == Keys::kFirst || (keys == Keys::kPairs && e.op == KnownOps().mset)) && !e.args.empty() &&
           shard_->OwnsSlot(storage::KeySlot(e.args[0]));
  };
  // The applied state of the keys the loop below may look up (blind writes'
  // keys not in flight, in its order; a few more, as it skips a key written
  // earlier in the batch), read together: what the key metadata cache
  // lacks in one MultiGet rather than a Get each (most of a bulk load's
  // keys are new).
  std::vector<kv::Shard::KeyRef> wanted;
  std::vector<std::pair<size_t, size_t>> wanted_at;  // (entry, argument) of each
  std::vector<std::optional<kv::KeyMetaCache::Meta>> known;
  if (eligible) {
    std::string k;
    for (size_t i = 0; i < views.size(); ++i) {
      const kv::EntryView& e = views[i];
      const Keys keys = KeysOf(e);
      if (keys == Keys::kOpaque) break;  // no hints after it
      if (!blind_of(e, keys)) continue;
      const size_t end = end_of(e, keys);
      size_t n = 0;
      for (size_t a = 0; a < end && n < kMaxHintsPerEntry; a += step_of(keys)) {
        TrackKeyInto(e.db, e.args[a], &k);
        if (keys_.count(k) != 0) continue;
        wanted.push_back(kv::Shard::KeyRef{e.db, e.args[a]});
        wanted_at.emplace_back(i, a);
        ++n;
      }
    }
    known.resize(wanted.size());
    if (!wanted.empty()) shard_->CommittedMetas(wanted, known);
  }
  size_t next_known = 0;
  auto committed_meta = [&](size_t i, size_t a) -> std::optional<kv::KeyMetaCache::Meta> {
    const std::pair<size_t, size_t> at(i, a);
    while (next_known < wanted_at.size() && wanted_at[next_known] < at) ++next_known;
    if (next_known < wanted_at.size() && wanted_at[next_known] == at) return known[next_known];
    return shard_->CommittedMeta(views[i].db, views[i].args[a]);
  };
  for (size_t i = 0; i < views.size(); ++i) {
    const kv::EntryView& e = views[i];
    const Keys keys = KeysOf(e);
    if (keys == Keys::kOpaque) {
      t.opaque = true;
      eligible = false;
      continue;
    }
    const size_t step = step_of(keys);
    const size_t end = end_of(e, keys);
    const bool blind = blind_of(e, keys);
    // A blind write's outcome (PutString): the key holds a string with that
    // expiry, or is gone if the expiry has passed at the entry's time.
    int64_t expire_at = 0;
    if (blind && keys == Keys::kFirst) {
      std::optional<int64_t> v = ParseInt64(e.args[3]);
      if (!v) {  // never prepared so: not annotated, and it may write anything
        t.opaque = true;
        return data;
      }
      expire_at = *v;
    }
    size_t given = 0;
    for (size_t a = 0; a < end; a += step) {
      std::string k = TrackKey(e.db, e.args[a]);
      const std::optional<size_t> at = find_here(k);
      std::optional<kv::KeyMetaCache::Meta> after;
      if (blind) {
        if (eligible && given < kMaxHintsPerEntry && !at) {
          // The state before it: what the last write in flight leaves (if
          // known), else what is applied.
          auto it = keys_.find(k);
          std::optional<kv::KeyMetaCache::Meta> meta = it != keys_.end() ? it->second.after : committed_meta(i, a);
          if (meta && !meta->collection) {
            if (hinted.size() <= i) hinted.resize(i + 1);
            hinted[i].hints.push_back(kv::KeyHint{static_cast<uint32_t>(a), meta->exists, meta->expire_at_ms});
            ++given;
          }
        }
        const bool gone = expire_at != 0 && expire_at <= e.now_ms;
        after = kv::KeyMetaCache::Meta{!gone, gone ? 0 : expire_at, false};
      }
      if (at) {
        t.keys[*at].second = after;  // the batch's last write of the key decides what it leaves
      } else {
        t.keys.emplace_back(std::move(k), after);
        if (!here.empty()) here.emplace(t.keys.back().first, t.keys.size() - 1);
      }
    }
  }
  AppendHintTrailer(hinted, &data);
  return data;
}

void WriteHints::Appended(uint64_t index, bool ok) {
  if (!annotating_ || annotating_->index != index) return;
  Tracked t = std::move(*annotating_);
  annotating_.reset();
  if (ok) Track(std::move(t));
}

void WriteHints::Track(Tracked t) {
  for (const auto& [k, after] : t.keys) {
    KeyState& st = keys_[k];
    ++st.pending;
    st.after = after;  // entries are tracked in log order: the last one's outcome
  }
  opaque_ += t.opaque ? 1 : 0;
  tracked_.push_back(std::move(t));
}

}  // namespace shoal::replica
