// Hash commands: HSET HGET and the rest of Redis's H* family. A hash is a
// value of type hash holding its field count, and one element key per field
// (storage::ElementKey), so a one-field change reads and writes one field.
// Fields come back in byte order (Redis gives a small hash's fields in
// insertion order; no order is promised by either).
#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "common/strings.h"
#include "kv/command_util.h"
#include "kv/string_commands.h"
#include "storage/keys.h"

namespace shoal::kv {
namespace {

constexpr std::string_view kErrHashNotInteger = "ERR hash value is not an integer";
constexpr std::string_view kErrHashNotFloat = "ERR hash value is not a float";

// ---- reads

// A hash as a read sees it, from one storage view.
class HashRead {
 public:
  explicit HashRead(ReadContext& ctx) : ctx_(ctx), snap_(ctx.engine->NewSnapshot()) {}

  // Reads the key: false if the command is answered (WRONGTYPE, storage
  // error); otherwise found() says whether a live hash is there.
  bool Open(std::string_view key, resp::Writer* reply) {
    key_ = key;
    if (!ReadLive(ctx_, key, &raw_, &value_, &found_, reply, snap_.get())) return false;
    if (found_ && value_.type != ValueType::kHash) {
      reply->Error(kErrWrongType);
      return false;
    }
    return true;
  }
  bool found() const { return found_; }
  uint64_t count() const { return found_ ? CollectionCount(value_.payload) : 0; }

  // One field's value: false on a storage error (replied).
  bool Get(std::string_view field, std::optional<std::string>* out, resp::Writer* reply) {
    out->reset();
    if (!found_) return true;
    std::string v;
    Status s = ctx_.engine->Get(storage::Cf::kData, storage::ElementKey(ctx_.db, key_, field), &v, snap_.get());
    if (s.code() == Code::kNotFound) return true;
    if (!s.ok()) {
      reply->Error("ERR storage error: " + s.ToString());
      return false;
    }
    *out = std::move(v);
    return true;
  }

  // Calls fn(field, value) in field order from the `skip`th field on, until
  // fn returns false: false on a storage error (replied).
  template <typename Fn>
  bool ForEach(uint64_t skip, Fn&& fn, resp::Writer* reply) {
    if (!found_) return true;
    std::string prefix = storage::ElementPrefix(ctx_.db, key_);
    auto it = ctx_.engine->NewIterator(storage::Cf::kData, snap_.get());
    uint64_t index = 0;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next(), ++index) {
      if (index < skip) continue;
      if (!fn(it->key().substr(prefix.size()), it->value())) break;
    }
    if (!it->status().ok()) {
      reply->Error("ERR storage error: " + it->status().ToString());
      return false;
    }
    return true;
  }

 private:
  ReadContext& ctx_;
  std::unique_ptr<storage::Snapshot> snap_;
  std::string_view key_;
  std::string raw_;
  Value value_;
  bool found_ = false;
};

void HgetRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  HashRead h(ctx);
  std::optional<std::string> v;
  if (!h.Open(args[1], reply) || !h.Get(args[2], &v, reply)) return;
  v ? reply->Bulk(*v) : reply->NullBulk();
}

void HmgetRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  HashRead h(ctx);
  if (!h.Open(args[1], reply)) return;
  std::string out;
  resp::Writer items(&out, reply->protocol());
  for (size_t i = 2; i < args.size(); ++i) {
    std::optional<std::string> v;
    if (!h.Get(args[i], &v, reply)) return;
    v ? items.Bulk(*v) : items.NullBulk();
  }
  reply->ArrayHeader(args.size() - 2);
  reply->Raw(out);
}

void HexistsRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  HashRead h(ctx);
  std::optional<std::string> v;
  if (!h.Open(args[1], reply) || !h.Get(args[2], &v, reply)) return;
  reply->Integer(v ? 1 : 0);
}

void HstrlenRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  HashRead h(ctx);
  std::optional<std::string> v;
  if (!h.Open(args[1], reply) || !h.Get(args[2], &v, reply)) return;
  reply->Integer(v ? static_cast<int64_t>(v->size()) : 0);
}

void HlenRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  HashRead h(ctx);
  if (!h.Open(args[1], reply)) return;
  reply->Integer(static_cast<int64_t>(h.count()));
}

// HKEYS, HVALS, HGETALL.
void HashAll(ReadContext& ctx, Args args, resp::Writer* reply, bool fields, bool values) {
  HashRead h(ctx);
  if (!h.Open(args[1], reply)) return;
  std::string out;
  resp::Writer items(&out, reply->protocol());
  uint64_t n = 0;
  bool ok = h.ForEach(
      0,
      [&](std::string_view field, std::string_view value) {
        if (fields) items.Bulk(field);
        if (values) items.Bulk(value);
        ++n;
        return true;
      },
      reply);
  if (!ok) return;
  fields && values ? reply->MapHeader(n) : reply->ArrayHeader(n);
  reply->Raw(out);
}
void HkeysRead(ReadContext& c, Args a, resp::Writer* r) { HashAll(c, a, r, true, false); }
void HvalsRead(ReadContext& c, Args a, resp::Writer* r) { HashAll(c, a, r, false, true); }
void HgetallRead(ReadContext& c, Args a, resp::Writer* r) { HashAll(c, a, r, true, true); }

// splitmix64: the replies of HRANDFIELD from one seed.
uint64_t NextRandom(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

void HrandfieldRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  bool with_count = args.size() >= 3, with_values = false;
  int64_t count = 1;
  if (with_count) {
    auto c = ParseInt64(args[2]);
    if (!c) return reply->Error(kErrNotInteger);
    if (*c == LLONG_MIN) {
      return reply->Error("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807");
    }
    count = *c;
    if (args.size() > 4 || (args.size() == 4 && !EqualsIgnoreCase(args[3], "withvalues"))) {
      return reply->Error(kErrSyntax);
    }
    with_values = args.size() == 4;
    if (with_values && (count < -LLONG_MAX / 2 || count > LLONG_MAX / 2)) {
      return reply->Error("ERR value is out of range");
    }
  }
  HashRead h(ctx);
  if (!h.Open(args[1], reply)) return;
  if (!with_count) {
    if (!h.found() || h.count() == 0) return reply->NullBulk();
    uint64_t state = ctx.random;
    uint64_t pick = NextRandom(&state) % h.count();
    std::string field;
    if (!h.ForEach(pick, [&](std::string_view f, std::string_view) { return field.assign(f), false; }, reply)) return;
    return reply->Bulk(field);
  }
  const uint64_t size = h.count();
  const bool distinct = count >= 0;
  const uint64_t want = distinct ? static_cast<uint64_t>(count) : static_cast<uint64_t>(-count);
  if (want == 0 || size == 0) return reply->ArrayHeader(0);
  // The chosen positions (with repeats when count < 0), then one pass.
  std::vector<uint64_t> picks;
  uint64_t state = ctx.random;
  if (distinct && want >= size) {
    for (uint64_t i = 0; i < size; ++i) picks.push_back(i);
  } else if (distinct) {
    // Floyd's algorithm: `want` distinct positions out of `size`.
    std::set<uint64_t> chosen;
    for (uint64_t j = size - want; j < size; ++j) {
      uint64_t t = NextRandom(&state) % (j + 1);
      chosen.insert(chosen.contains(t) ? j : t);
    }
    picks.assign(chosen.begin(), chosen.end());
  } else {
    for (uint64_t i = 0; i < want; ++i) picks.push_back(NextRandom(&state) % size);
  }
  // Each position's field and value, in position order.
  std::vector<uint64_t> order = picks;
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  std::map<uint64_t, std::pair<std::string, std::string>> at;
  size_t next = 0;
  uint64_t index = 0;
  bool ok = h.ForEach(
      0,
      [&](std::string_view f, std::string_view v) {
        if (next < order.size() && order[next] == index) {
          at[index] = {std::string(f), std::string(v)};
          ++next;
        }
        ++index;
        return next < order.size();
      },
      reply);
  if (!ok) return;
  size_t n = 0;
  std::string out;
  resp::Writer items(&out, reply->protocol());
  for (uint64_t p : picks) {
    auto it = at.find(p);
    if (it == at.end()) continue;  // the count was stale (cannot happen within one view)
    ++n;
    if (with_values && reply->protocol() >= 3) items.ArrayHeader(2);
    items.Bulk(it->second.first);
    if (with_values) items.Bulk(it->second.second);
  }
  reply->ArrayHeader(with_values && reply->protocol() < 3 ? 2 * n : n);
  reply->Raw(out);
}

// HSCAN key cursor [MATCH pattern] [COUNT count]. The cursor is a position
// in field order. A hash of up to kHscanWhole fields comes back whole with
// cursor 0, as Redis answers for its small (listpack) hashes; beyond that, a
// field removed during a scan may make one that follows it be missed.
constexpr uint64_t kHscanWhole = 128;

void HscanRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  ScanArgs scan;
  if (!ParseScanArgs(args, 2, false, &scan, reply)) return;
  HashRead h(ctx);
  if (!h.Open(args[1], reply)) return;
  const bool whole = h.count() <= kHscanWhole;
  uint64_t position = whole ? 0 : scan.cursor, taken = 0, next = 0;
  std::vector<std::pair<std::string, std::string>> found;
  bool ok = h.ForEach(
      position,
      [&](std::string_view f, std::string_view v) {
        if (!whole && taken >= static_cast<uint64_t>(scan.count)) {
          next = position + taken;
          return false;
        }
        ++taken;
        if (scan.use_pattern && !GlobMatch(scan.pattern, f)) return true;
        found.emplace_back(f, v);
        return true;
      },
      reply);
  if (!ok) return;
  reply->ArrayHeader(2);
  reply->Bulk(std::to_string(next));
  reply->ArrayHeader(2 * found.size());
  for (const auto& [f, v] : found) {
    reply->Bulk(f);
    reply->Bulk(v);
  }
}

// ---- writes

// The live hash at key for a write. nullopt: the command is done (WRONGTYPE
// replied, *status ok) or storage failed (*status).
struct HashAt {
  bool found = false;
  uint64_t count = 0;
  int64_t expire_at_ms = 0;
};

std::optional<HashAt> GetHashForWrite(ApplyTxn& txn, uint16_t db, std::string_view key, resp::Writer* reply,
                                      Status* status) {
  auto raw = txn.GetLive(db, key);
  if (!raw.ok()) {
    *status = raw.status();
    return std::nullopt;
  }
  HashAt out;
  if (!*raw) return out;
  Value v = DecodeOrDie(**raw);
  if (v.type != ValueType::kHash) {
    reply->Error(kErrWrongType);
    return std::nullopt;
  }
  out.found = true;
  out.count = CollectionCount(v.payload);
  out.expire_at_ms = v.expire_at_ms;
  return out;
}

// Stores the hash's value with its new count, or deletes the key when no
// field is left.
Status PutHash(ApplyTxn& txn, uint16_t db, std::string_view key, const HashAt& h) {
  if (h.count == 0) {
    bool existed = false;
    return h.found ? txn.Delete(db, key, &existed) : Status::Ok();
  }
  return txn.Put(db, key, EncodeValue(ValueType::kHash, h.expire_at_ms, CollectionPayload(h.count)));
}

bool HsetPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  if (args.size() % 2 == 1) {
    reply->Error(ArityError(ToLower(args[0])));
    return false;
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

// args: key field value [field value ...]
Status HsetImpl(ApplyTxn& txn, const Entry& e, resp::Writer* reply, bool hmset) {
  const std::string& key = e.args[0];
  Status s;
  auto h = GetHashForWrite(txn, e.db, key, reply, &s);
  if (!h) return s;
  int64_t added = 0;
  for (size_t i = 1; i + 1 < e.args.size(); i += 2) {
    auto old = txn.GetElement(e.db, key, e.args[i]);
    if (!old.ok()) return old.status();
    added += !old->has_value();
    txn.PutElement(e.db, key, e.args[i], e.args[i + 1]);
  }
  h->count += static_cast<uint64_t>(added);
  s = PutHash(txn, e.db, key, *h);
  if (!s.ok()) return s;
  hmset ? reply->Simple("OK") : reply->Integer(added);
  return Status::Ok();
}
Status HsetApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return HsetImpl(t, e, r, false); }
Status HmsetApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return HsetImpl(t, e, r, true); }

// args: key field value
Status HsetnxApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  Status s;
  auto h = GetHashForWrite(txn, e.db, key, reply, &s);
  if (!h) return s;
  auto old = txn.GetElement(e.db, key, e.args[1]);
  if (!old.ok()) return old.status();
  if (old->has_value()) {
    reply->Integer(0);
    return Status::Ok();
  }
  txn.PutElement(e.db, key, e.args[1], e.args[2]);
  h->count += 1;
  s = PutHash(txn, e.db, key, *h);
  if (s.ok()) reply->Integer(1);
  return s;
}

// args: key field [field ...]
Status HdelApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  Status s;
  auto h = GetHashForWrite(txn, e.db, key, reply, &s);
  if (!h) return s;
  int64_t removed = 0;
  for (size_t i = 1; i < e.args.size() && h->found; ++i) {
    auto old = txn.GetElement(e.db, key, e.args[i]);
    if (!old.ok()) return old.status();
    if (!old->has_value()) continue;
    txn.DeleteElement(e.db, key, e.args[i]);
    ++removed;
  }
  if (removed > 0) {
    h->count = h->count > static_cast<uint64_t>(removed) ? h->count - static_cast<uint64_t>(removed) : 0;
    s = PutHash(txn, e.db, key, *h);
    if (!s.ok()) return s;
  }
  reply->Integer(removed);
  return Status::Ok();
}

bool HincrbyPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  if (!ParseInt64(args[3])) {
    reply->Error(kErrNotInteger);
    return false;
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

// args: key field increment
Status HincrbyApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  int64_t by = *ParseInt64(e.args[2]);
  Status s;
  auto h = GetHashForWrite(txn, e.db, key, reply, &s);
  if (!h) return s;
  auto old = txn.GetElement(e.db, key, e.args[1]);
  if (!old.ok()) return old.status();
  int64_t value = 0;
  if (old->has_value()) {
    auto parsed = ParseInt64(**old);
    if (!parsed) {
      reply->Error(kErrHashNotInteger);
      return Status::Ok();
    }
    value = *parsed;
  }
  if ((by < 0 && value < 0 && by < (LLONG_MIN - value)) || (by > 0 && value > 0 && by > (LLONG_MAX - value))) {
    reply->Error("ERR increment or decrement would overflow");
    return Status::Ok();
  }
  value += by;
  txn.PutElement(e.db, key, e.args[1], Int64ToString(value));
  if (!old->has_value()) {
    h->count += 1;
    s = PutHash(txn, e.db, key, *h);
    if (!s.ok()) return s;
  }
  reply->Integer(value);
  return Status::Ok();
}

bool HincrbyfloatPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  auto by = ParseLongDouble(args[3]);
  if (!by) {
    reply->Error(kErrNotFloat);
    return false;
  }
  if (std::isnan(*by) || std::isinf(*by)) {
    reply->Error("ERR value is NaN or Infinity");
    return false;
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

// args: key field increment
Status HincrbyfloatApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  long double by = *ParseLongDouble(e.args[2]);
  Status s;
  auto h = GetHashForWrite(txn, e.db, key, reply, &s);
  if (!h) return s;
  auto old = txn.GetElement(e.db, key, e.args[1]);
  if (!old.ok()) return old.status();
  long double value = 0;
  if (old->has_value()) {
    auto parsed = ParseLongDouble(**old);
    if (!parsed) {
      reply->Error(kErrHashNotFloat);
      return Status::Ok();
    }
    value = *parsed;
  }
  value += by;
  if (std::isnan(value) || std::isinf(value)) {
    reply->Error("ERR increment would produce NaN or Infinity");
    return Status::Ok();
  }
  std::string text = FormatLongDoubleHuman(value);
  txn.PutElement(e.db, key, e.args[1], text);
  if (!old->has_value()) {
    h->count += 1;
    s = PutHash(txn, e.db, key, *h);
    if (!s.ok()) return s;
  }
  reply->Bulk(text);
  return Status::Ok();
}

}  // namespace

void AppendHashCommands(std::vector<CommandSpec>* out) {
  constexpr uint32_t kR = kCmdReadonly | kCmdFast;
  constexpr uint32_t kWF = kCmdWrite | kCmdDenyOom | kCmdFast;
  // name, arity, flags, first, last, step, group, op, read, prepare, apply
  out->insert(out->end(), {
      {"hget", 3, kR, 1, 1, 1, "hash", 0, HgetRead},
      {"hmget", -3, kR, 1, 1, 1, "hash", 0, HmgetRead},
      {"hexists", 3, kR, 1, 1, 1, "hash", 0, HexistsRead},
      {"hstrlen", 3, kR, 1, 1, 1, "hash", 0, HstrlenRead},
      {"hlen", 2, kR, 1, 1, 1, "hash", 0, HlenRead},
      {"hkeys", 2, kCmdReadonly, 1, 1, 1, "hash", 0, HkeysRead},
      {"hvals", 2, kCmdReadonly, 1, 1, 1, "hash", 0, HvalsRead},
      {"hgetall", 2, kCmdReadonly, 1, 1, 1, "hash", 0, HgetallRead},
      {"hrandfield", -2, kCmdReadonly, 1, 1, 1, "hash", 0, HrandfieldRead},
      {"hscan", -3, kCmdReadonly, 1, 1, 1, "hash", 0, HscanRead},
      {"hset", -4, kWF, 1, 1, 1, "hash", 40, nullptr, HsetPrepare, HsetApply},
      {"hmset", -4, kWF, 1, 1, 1, "hash", 41, nullptr, HsetPrepare, HmsetApply},
      {"hsetnx", 4, kWF, 1, 1, 1, "hash", 42, nullptr, nullptr, HsetnxApply},
      {"hdel", -3, kCmdWrite | kCmdFast, 1, 1, 1, "hash", 43, nullptr, nullptr, HdelApply},
      {"hincrby", 4, kWF, 1, 1, 1, "hash", 44, nullptr, HincrbyPrepare, HincrbyApply},
      {"hincrbyfloat", 4, kWF, 1, 1, 1, "hash", 45, nullptr, HincrbyfloatPrepare, HincrbyfloatApply},
  });
}

}  // namespace shoal::kv
